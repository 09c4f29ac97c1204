//! Integration tests of the label-attention classifier and its artifact: save -> load ->
//! predict round-trips exactly, ensembles average, corrupt artifacts are clear errors, and the
//! committed format-1 fixture keeps loading.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ttpmap_core::TechniqueId;
use ttpmap_ml::artifact::{self, write_artifact, Artifact, Manifest, TrainingResults};
use ttpmap_ml::classifier::{predict_encoded, TrainableClassifier};
use ttpmap_ml::encoder::bert::{Config, Mode};
use ttpmap_ml::head::{HeadConfig, HeadInit};
use ttpmap_ml::tokenize::TextTokenizer;
use ttpmap_ml::Error;

const WORDS: &[&str] = &[
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "attacker",
    "used",
    "powershell",
    "to",
    "download",
    "payload",
    "scheduled",
    "task",
    "credential",
    "dump",
    "registry",
    "run",
    "key",
    "phishing",
    "email",
    ".",
];

const SENTENCES: &[&str] = &[
    "The attacker used PowerShell to download the payload.",
    "A scheduled task ran the payload.",
    "credential dump",
    "",
    "Phishing email with an unknown attachment.",
];

/// 2 layers, hidden 32 (the encoder tests' tiny model), dropout 0.
fn tiny_config(vocab: usize) -> Config {
    Config {
        vocab_size: vocab,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 24,
        type_vocab_size: 2,
        ..Config::default()
    }
    .with_dropout(0.0)
}

/// Smallest model for the committed fixture: 1 layer, hidden 8.
fn fixture_config(vocab: usize) -> Config {
    Config {
        vocab_size: vocab,
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 16,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        ..Config::default()
    }
    .with_dropout(0.0)
}

fn tokenizer(dir: &Path, max_length: usize) -> TextTokenizer {
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, WORDS.join("\n")).unwrap();
    TextTokenizer::from_vocab(&vocab, true, max_length).unwrap()
}

fn labels() -> Vec<TechniqueId> {
    ["T1059.001", "T1053.005", "T1003", "T1566"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

fn trained(cfg: &Config, seed: u64) -> TrainableClassifier {
    let mut head = HeadConfig::new(labels().len(), cfg.hidden_size);
    head.dropout = 0.0;
    let t = TrainableClassifier::new(
        cfg,
        &head,
        None,
        seed,
        &HeadInit {
            seed: seed + 1,
            queries: None,
        },
    )
    .unwrap();
    // Random init gives near-identical logits; spread the head so probabilities differ.
    let named = t.named_vars().unwrap();
    for (name, var) in &named {
        if name == "head.score.weight" || name == "head.queries" {
            var.set(&(var.as_tensor() * 40.0).unwrap()).unwrap();
        }
    }
    t
}

fn manifest(cfg: &Config, max_length: usize) -> Manifest {
    let mut m = Manifest::new(labels(), cfg.clone(), max_length);
    m.head_dropout = 0.0;
    m.attack_version = Some("18.1".into());
    m.base_model = "tiny (generated)".into();
    m.thresholds.tuned = 0.37;
    m.training = serde_json::json!({"epochs": 0});
    m.data.insert("train".into(), "sha256:test".into());
    m
}

fn write_tiny(dir: &Path, cfg: &Config, seeds: &[u64]) -> Vec<Vec<Vec<f32>>> {
    let work = tempfile::tempdir().unwrap();
    let tok = tokenizer(work.path(), 16);
    let mut weights = Vec::new();
    let mut expected = Vec::new();
    for &seed in seeds {
        let t = trained(cfg, seed);
        let enc = tok.encode_all(SENTENCES).unwrap();
        expected.push(predict_encoded(t.network(), &tok, &enc, 2, &Device::Cpu).unwrap());
        weights.push((seed, "base".to_string(), t.tensors().unwrap()));
    }
    write_artifact(
        dir,
        &manifest(cfg, 16),
        &tok,
        &weights,
        &serde_json::json!({"note": "test"}),
    )
    .unwrap();
    expected
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn save_load_predict_round_trips() {
    let cfg = tiny_config(WORDS.len());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let expected = write_tiny(&dir, &cfg, &[42, 123]);
    let art = Artifact::open(&dir, &Device::Cpu).unwrap();
    assert_eq!(art.labels(), labels().as_slice());
    assert_eq!(art.manifest().thresholds.tuned, 0.37);
    assert_eq!(
        art.manifest()
            .seeds
            .iter()
            .map(|s| (s.seed, s.weights.as_str()))
            .collect::<Vec<_>>(),
        [
            (42, "seeds/seed-42/model.safetensors"),
            (123, "seeds/seed-123/model.safetensors")
        ]
    );
    let per_seed = art.predict_per_seed(SENTENCES).unwrap();
    // The trainable net (unfused projections) and the loaded one (fused) agree to rounding:
    // f32 rounding, or bf16's where the loaded model runs its linear layers in bf16.
    let tol = match ttpmap_ml::encoder::Precision::detect() {
        ttpmap_ml::encoder::Precision::Fp32 => 1e-5,
        ttpmap_ml::encoder::Precision::Bf16 => 1e-2,
        ttpmap_ml::encoder::Precision::Int8 => 3e-2,
    };
    for (p, e) in per_seed.iter().zip(&expected) {
        assert!(max_diff(p, e) < tol, "{}", max_diff(p, e));
        assert_eq!(p[0].len(), 4);
    }
    // The two seeds differ, so averaging is observable.
    assert!(max_diff(&per_seed[0], &per_seed[1]) > 1e-3);
    // Reloading gives bit-identical predictions.
    let again = Artifact::open(&dir, &Device::Cpu)
        .unwrap()
        .predict_per_seed(SENTENCES)
        .unwrap();
    assert_eq!(again, per_seed);
    // Ensemble = mean of the seeds.
    let ens = art.predict_proba(SENTENCES).unwrap();
    for (s, row) in ens.iter().enumerate() {
        for (l, p) in row.iter().enumerate() {
            let mean = (per_seed[0][s][l] + per_seed[1][s][l]) / 2.0;
            assert!((p - mean).abs() < 1e-7);
        }
    }
    // Order is preserved whatever the length sorting did.
    let single = art.models()[0].predict_proba(&[SENTENCES[2]]).unwrap();
    assert!(max_diff(&single, &per_seed[0][2..3]) < 1e-6);
    // Thresholding picks the labels at or above the threshold.
    let picked = artifact::threshold_labels(&ens, 0.5);
    for (row, idx) in ens.iter().zip(&picked) {
        let want: Vec<usize> = (0..row.len()).filter(|&l| row[l] >= 0.5).collect();
        assert_eq!(idx, &want);
    }
    assert!(artifact::is_artifact(&dir));
    assert!(!artifact::is_artifact(tmp.path()));
}

#[test]
fn an_ensemble_sharing_its_lower_layers_runs_them_once_with_the_same_result() {
    let cfg = tiny_config(WORDS.len());
    let work = tempfile::tempdir().unwrap();
    let tok = tokenizer(work.path(), 16);
    // Seed 123 takes seed 42's embeddings and layer 0: what fine-tuning with one frozen layer
    // over one base gives.
    let a = trained(&cfg, 42);
    let b = trained(&cfg, 123);
    let lower = |n: &str| n.contains(".embeddings.") || n.contains(".layer.0.");
    let from_a: std::collections::HashMap<String, candle_core::Tensor> =
        a.tensors().unwrap().into_iter().collect();
    for (name, var) in b.named_vars().unwrap() {
        if lower(&name) {
            var.set(&from_a[&name]).unwrap();
        }
    }
    let dir = work.path().join("model");
    let weights: Vec<_> = [(42, &a), (123, &b)]
        .into_iter()
        .map(|(s, t)| (s, "base".to_string(), t.tensors().unwrap()))
        .collect();
    write_artifact(
        &dir,
        &manifest(&cfg, 16),
        &tok,
        &weights,
        &serde_json::json!({}),
    )
    .unwrap();
    let whole = Artifact::open(&dir, &Device::Cpu).unwrap();
    assert_eq!(whole.shared_layers(), 0);
    let shared = whole.clone().with_shared_layers(1);
    assert_eq!(shared.shared_layers(), 1);
    assert_eq!(whole.clone().with_shared_layers(9).shared_layers(), 2);
    let want = whole.predict_per_seed(SENTENCES).unwrap();
    let got = shared.predict_per_seed(SENTENCES).unwrap();
    assert_eq!(got.len(), 2);
    for (g, w) in got.iter().zip(&want) {
        assert!(max_diff(g, w) < 1e-5, "{}", max_diff(g, w));
    }
    // The seeds still differ above the shared layer, so the check is not vacuous.
    assert!(max_diff(&got[0], &got[1]) > 1e-3);
}

#[test]
fn rewriting_replaces_the_artifact_and_leaves_no_temp_folder() {
    let cfg = fixture_config(WORDS.len());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write_tiny(&dir, &cfg, &[1, 2]);
    write_tiny(&dir, &cfg, &[3]);
    let art = Artifact::open(&dir, &Device::Cpu).unwrap();
    assert_eq!(art.manifest().seeds.len(), 1);
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["model"]);
}

/// A mistaken output folder holding other data is refused and left untouched.
#[test]
fn an_unrelated_folder_is_never_replaced() {
    let cfg = fixture_config(WORDS.len());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models");
    std::fs::create_dir_all(dir.join("other-model")).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let t = trained(&cfg, 1);
    let work = tempfile::tempdir().unwrap();
    let err = write_artifact(
        &dir,
        &manifest(&cfg, 16),
        &tokenizer(work.path(), 16),
        &[(1, "base".to_string(), t.tensors().unwrap())],
        &serde_json::json!({}),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not a ttpmap classifier folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert!(dir.join("other-model").is_dir());
    // An empty folder is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    write_tiny(&empty, &cfg, &[1]);
    assert!(artifact::is_artifact(&empty));
}

fn expect_artifact_error(dir: &Path, file: &str) -> String {
    let err = Artifact::open(dir, &Device::Cpu).expect_err("corrupt artifact must not load");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Artifact { .. } | Error::Json { .. } | Error::Tokenizer { .. }
        ),
        "{err:?}"
    );
    assert!(msg.contains(file), "error {msg:?} should name {file}");
    msg
}

#[test]
fn corrupt_or_mismatched_artifacts_are_clear_errors() {
    let cfg = fixture_config(WORDS.len());
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| -> PathBuf {
        let d = tmp.path().join(name);
        write_tiny(&d, &cfg, &[7]);
        d
    };
    let weights = "seeds/seed-7/model.safetensors";

    let d = fresh("truncated");
    let w = d.join(weights);
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    expect_artifact_error(&d, "model.safetensors");

    let d = fresh("missing-weights");
    std::fs::remove_file(d.join(weights)).unwrap();
    expect_artifact_error(&d, "model.safetensors");

    let d = fresh("bad-json");
    std::fs::write(d.join("manifest.json"), "{not json").unwrap();
    expect_artifact_error(&d, "manifest.json");

    let d = fresh("no-manifest");
    std::fs::remove_file(d.join("manifest.json")).unwrap();
    expect_artifact_error(&d, "manifest.json");

    let edit = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = d.join("manifest.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    };

    let d = fresh("future-version");
    edit(&d, &|v| v["format_version"] = 99.into());
    let msg = expect_artifact_error(&d, "manifest.json");
    assert!(msg.contains("format_version"));

    let d = fresh("more-labels");
    edit(&d, &|v| {
        v["labels"].as_array_mut().unwrap().push("T1105".into())
    });
    expect_artifact_error(&d, "model.safetensors");

    let d = fresh("bad-label");
    edit(&d, &|v| v["labels"][0] = "X1".into());
    expect_artifact_error(&d, "manifest.json");

    let d = fresh("wider");
    edit(&d, &|v| {
        v["encoder"]["hidden_size"] = 16.into();
        v["encoder"]["intermediate_size"] = 32.into();
    });
    expect_artifact_error(&d, "model.safetensors");

    let d = fresh("escape");
    edit(&d, &|v| {
        v["seeds"][0]["weights"] = "../x.safetensors".into()
    });
    expect_artifact_error(&d, "manifest.json");

    let d = fresh("no-tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    expect_artifact_error(&d, "tokenizer.json");
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classifier-v1")
}

/// The committed artifact of format version 1 keeps loading and predicting the probabilities
/// recorded when it was written (expected.json, computed by this crate at that time).
#[test]
fn committed_format_1_fixture_keeps_loading() {
    let dir = fixture_dir();
    let art = Artifact::open(&dir, &Device::Cpu).expect("fixture loads");
    assert_eq!(art.manifest().format_version, 1);
    let expected: Vec<Vec<f32>> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .unwrap();
    let got = art.predict_proba(SENTENCES).unwrap();
    // int8 linear layers (the default on AVX512_VNNI without AMX) move these by ~1.4e-5.
    let tol = match ttpmap_ml::encoder::Precision::detect() {
        ttpmap_ml::encoder::Precision::Int8 => 1e-4,
        _ => 1e-5,
    };
    assert!(max_diff(&got, &expected) < tol, "{got:?} vs {expected:?}");
}

/// results.json as `ttpmap train classifier` wrote it before it was typed (built with
/// `json!`, no `format_version`; generated by that build: 1 seed, 1 epoch of a 1-layer slice
/// of all-MiniLM-L6-v2 on TRAM2).
fn old_results_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classifier-results-v1.json")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn committed_results_of_format_1_keep_parsing() {
    let text = std::fs::read_to_string(old_results_path()).unwrap();
    let r: TrainingResults = serde_json::from_str(&text).unwrap();
    assert_eq!(r.format_version, 1);
    assert!(!r.seeds.is_empty());
    assert!(r.validation.sentences > 0);
    // Written again, it is the old JSON plus its format_version.
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    old["format_version"] = 1.into();
    assert_eq!(serde_json::to_value(&r).unwrap(), old);
    // An artifact with it reads it typed; the fixture's free-form results.json does not parse.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    copy_dir(&fixture_dir(), &dir);
    let art = Artifact::open(&dir, &Device::Cpu).unwrap();
    assert!(matches!(art.training_results(), Err(Error::Json { .. })));
    std::fs::write(dir.join(artifact::RESULTS), &text).unwrap();
    assert_eq!(art.training_results().unwrap(), Some(r));
    let newer = text.replacen('{', "{\"format_version\": 2,", 1);
    std::fs::write(dir.join(artifact::RESULTS), newer).unwrap();
    let err = art.training_results().unwrap_err().to_string();
    assert!(err.contains("format_version 2"), "{err}");
}

/// `seed_infos` reads results.json typed: a free-form file gives no per-seed figures (and no
/// error), a typed one gives each recorded seed its training time and own threshold.
#[test]
fn seed_infos_come_from_the_typed_results() {
    use ttpmap_ml::ClassifierScorer;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    copy_dir(&fixture_dir(), &dir);
    let scorer = ClassifierScorer::new(Artifact::open(&dir, &Device::Cpu).unwrap());
    let infos = scorer.seed_infos().unwrap();
    assert_eq!(infos.iter().map(|i| i.seed).collect::<Vec<_>>(), [42, 123]);
    assert!(infos
        .iter()
        .all(|i| i.own_threshold.is_none() && i.train_seconds.is_none()));
    let mut r: TrainingResults =
        serde_json::from_str(&std::fs::read_to_string(old_results_path()).unwrap()).unwrap();
    r.seeds.truncate(1);
    r.seeds[0].seed = 123;
    r.seeds[0].seconds = 7.5;
    r.seeds[0].validation.tuned_threshold = 0.37;
    std::fs::write(
        dir.join(artifact::RESULTS),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
    let infos = scorer.seed_infos().unwrap();
    assert_eq!(
        (infos[0].own_threshold, infos[0].train_seconds),
        (None, None)
    );
    assert_eq!(
        (
            infos[1].seed,
            infos[1].own_threshold,
            infos[1].train_seconds
        ),
        (123, Some(0.37), Some(7.5))
    );
}

/// Regenerates the fixture: `TTPMAP_WRITE_FIXTURE=1 cargo test -p ttpmap-ml --test it
/// classifier::write_fixture -- --ignored`. Only when the format changes (bump the version and keep the old
/// fixture as well).
#[test]
#[ignore]
fn write_fixture() {
    if std::env::var_os("TTPMAP_WRITE_FIXTURE").is_none() {
        return;
    }
    let cfg = fixture_config(WORDS.len());
    let dir = fixture_dir();
    write_tiny(&dir, &cfg, &[42, 123]);
    let art = Artifact::open(&dir, &Device::Cpu).unwrap();
    let probs = art.predict_proba(SENTENCES).unwrap();
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string(&probs).unwrap(),
    )
    .unwrap();
}

mod fit {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use ttpmap_ml::train::classifier::{
        fit, ClassifierTrainConfig, Example, FitSetup, TrainData, TrainEvent,
    };
    use ttpmap_ml::train::{LlrdConfig, LoopEvent, LossConfig};

    /// Keyword sentences: each label has its own words, so a tiny model can learn them.
    fn data() -> TrainData {
        let words = [
            ("T1059.001", "powershell download"),
            ("T1053.005", "scheduled task"),
            ("T1003", "credential dump"),
            ("T1566", "phishing email"),
        ];
        let mut train = Vec::new();
        let mut validation = Vec::new();
        for i in 0..12 {
            for (j, (t, w)) in words.iter().enumerate() {
                let ex = Example::new(
                    format!("d{}", i % 3),
                    format!("the attacker used {w} ."),
                    vec![t.parse().unwrap()],
                );
                if (i + j) % 4 == 0 {
                    validation.push(ex);
                } else {
                    train.push(ex);
                }
            }
            train.push(Example::new(
                format!("d{}", i % 3),
                "the the run key .",
                vec![],
            ));
        }
        TrainData {
            labels: labels(),
            label_texts: Vec::new(),
            train,
            validation,
        }
    }

    fn config() -> ClassifierTrainConfig {
        ClassifierTrainConfig {
            loss: LossConfig::Bce { pos_weight: None },
            llrd: LlrdConfig {
                encoder_lr: 3e-3,
                head_lr: 3e-2,
                ..Default::default()
            },
            epochs: 20,
            batch_size: 8,
            max_length: 16,
            seeds: vec![5],
            init_queries_from_text: false,
            head_dropout: 0.0,
            unlabelled_ratio: None,
            ..Default::default()
        }
    }

    #[test]
    fn tiny_model_loss_falls_and_interrupt_resumes() {
        let work = tempfile::tempdir().unwrap();
        let tok = tokenizer(work.path(), 16);
        let cfg = config();
        let stop = AtomicBool::new(false);
        let setup = FitSetup {
            model: None,
            encoder_config: tiny_config(WORDS.len()),
            tokenizer: &tok,
            checkpoint_dir: work.path().join("ckpt"),
            resume: false,
            interrupt: &stop,
        };
        let mut epoch_losses = Vec::new();
        let out = fit(&setup, &data(), &cfg, &mut |e| {
            if let TrainEvent::Seed {
                event: LoopEvent::Epoch { mean_loss, .. },
                ..
            } = e
            {
                epoch_losses.push(*mean_loss)
            }
        })
        .unwrap();
        assert_eq!(epoch_losses.len(), 20);
        assert!(
            epoch_losses[19] < 0.5 * epoch_losses[0],
            "loss did not fall: {epoch_losses:?}"
        );
        let (res, weights) = &out.seeds[0];
        assert!(["base", "ema", "swa"].contains(&res.selected.as_str()));
        assert!(weights.iter().any(|(n, _)| n == "head.queries"));
        assert!((0.05..=0.95).contains(&out.tuned_threshold));
        // One seed: its own validation figures are the ensemble's, and it learnt the keywords.
        assert_eq!(res.validation, out.validation);
        assert_eq!(out.validation.tuned_threshold, out.tuned_threshold);
        assert!(
            out.validation.per_document_f1_in_vocabulary_tuned > 0.5,
            "{:?}",
            out.validation
        );

        // Interrupt at the first step: a checkpoint and an Interrupted error; resume finishes.
        let dir2 = work.path().join("ckpt2");
        let stop = AtomicBool::new(true);
        let mut setup2 = FitSetup {
            checkpoint_dir: dir2.clone(),
            interrupt: &stop,
            ..setup
        };
        let err = fit(&setup2, &data(), &cfg, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        assert!(dir2.join("seed-5.ckpt.safetensors").is_file());
        let go = AtomicBool::new(false);
        setup2.interrupt = &go;
        setup2.resume = true;
        let resumed = fit(&setup2, &data(), &cfg, &mut |_| {}).unwrap();
        // Interrupted before any step, so the resumed run is the uninterrupted one.
        assert_eq!(resumed.seeds[0].0.selected, res.selected);
        assert!(!dir2.join("seed-5.ckpt.safetensors").exists());
        // A finished seed is reused on resume.
        let again = fit(&setup2, &data(), &cfg, &mut |_| {}).unwrap();
        assert_eq!(again.validation_probs, resumed.validation_probs);
        assert_eq!(again.seeds[0].0.validation, resumed.seeds[0].0.validation);
    }

    /// Validation figures by hand: three sentences of two documents, two labels.
    #[test]
    fn validation_metrics_score_both_thresholds() {
        use ttpmap_ml::train::classifier::validation_metrics;
        let labels: Vec<TechniqueId> = vec!["T1059".parse().unwrap(), "T1566".parse().unwrap()];
        let ex = |doc: &str, l: &[&str]| {
            Example::new(doc, "", l.iter().map(|t| t.parse().unwrap()).collect())
        };
        let data = vec![ex("a", &["T1059"]), ex("a", &[]), ex("b", &["T1566"])];
        // Every gold label at 0.3, everything else at 0.1: nothing reaches 0.5.
        let probs = vec![vec![0.3, 0.1], vec![0.1, 0.1], vec![0.1, 0.3]];
        let m = validation_metrics(&probs, &data, &labels).unwrap();
        assert_eq!(m.per_document_f1_in_vocabulary_at_0_5, 0.0);
        assert_eq!(m.micro_f1_at_0_5, 0.0);
        assert!(m.tuned_threshold > 0.1 && m.tuned_threshold <= 0.3, "{m:?}");
        assert_eq!(m.per_document_f1_in_vocabulary_tuned, 1.0);
        assert_eq!(m.micro_f1_tuned, 1.0);
        assert_eq!(m.macro_f1_tuned, 1.0);
    }

    /// A sentence annotated for a fixed label set (TRAM2's) is not wrong about labels outside
    /// it: a high score there is neither a false positive nor a true one.
    #[test]
    fn validation_ignores_labels_outside_a_sentences_label_space() {
        use std::sync::Arc;
        use ttpmap_ml::train::classifier::validation_metrics;
        let labels: Vec<TechniqueId> = vec!["T1059".parse().unwrap(), "T1566".parse().unwrap()];
        let mut fixed = Example::new("a", "", vec!["T1059".parse().unwrap()]);
        let plain = fixed.clone();
        fixed.label_space = Some(Arc::new([labels[0].clone()].into()));
        // The gold label and the other one both at 0.9.
        let probs = vec![vec![0.9, 0.9]];
        let m = validation_metrics(&probs, &[fixed], &labels).unwrap();
        assert_eq!(m.per_document_f1_in_vocabulary_at_0_5, 1.0);
        assert_eq!(m.micro_f1_at_0_5, 1.0);
        let m = validation_metrics(&probs, &[plain], &labels).unwrap();
        assert!(
            (m.per_document_f1_in_vocabulary_at_0_5 - 2.0 / 3.0).abs() < 1e-9,
            "{m:?}"
        );
    }

    /// `frozen_layers`: the embeddings and the lowest layers keep their initial values exactly
    /// (their states are cached, no gradient reaches them), the layers above and the head
    /// train, and the loss still falls.
    #[test]
    fn frozen_layers_keep_their_weights_and_the_rest_learns() {
        let work = tempfile::tempdir().unwrap();
        let tok = tokenizer(work.path(), 16);
        let mut cfg = config();
        cfg.frozen_layers = 1;
        cfg.epochs = 12;
        let stop = AtomicBool::new(false);
        let enc_cfg = tiny_config(WORDS.len());
        let setup = FitSetup {
            model: None,
            encoder_config: enc_cfg.clone(),
            tokenizer: &tok,
            checkpoint_dir: work.path().join("ckpt"),
            resume: false,
            interrupt: &stop,
        };
        let mut losses = Vec::new();
        let mut cached = 0;
        let out = fit(&setup, &data(), &cfg, &mut |e| match e {
            TrainEvent::Seed {
                event: LoopEvent::Epoch { mean_loss, .. },
                ..
            } => losses.push(*mean_loss),
            TrainEvent::Cache { done, .. } => cached = cached.max(*done),
            _ => {}
        })
        .unwrap();
        let d = data();
        assert_eq!(cached, d.train.len() + d.validation.len());
        assert!(
            losses[losses.len() - 1] < 0.6 * losses[0],
            "loss did not fall: {losses:?}"
        );
        // The same seed gives the same initial encoder.
        let head = HeadConfig {
            dropout: 0.0,
            ..HeadConfig::new(labels().len(), enc_cfg.hidden_size)
        };
        let init = TrainableClassifier::new(
            &enc_cfg,
            &head,
            None,
            5,
            &HeadInit {
                seed: 5,
                queries: None,
            },
        )
        .unwrap()
        .tensors()
        .unwrap();
        let trained: std::collections::HashMap<_, _> = out.seeds[0].1.iter().cloned().collect();
        let (mut same, mut moved) = (0, 0);
        for (name, t0) in &init {
            let diff = (trained[name].clone() - t0)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let frozen = name.starts_with("encoder.embeddings.")
                || name.starts_with("encoder.encoder.layer.0.");
            if frozen {
                assert_eq!(diff, 0.0, "{name} moved");
                same += 1;
            } else if name.starts_with("encoder.encoder.layer.1.") && name.ends_with("weight") {
                assert!(diff > 0.0, "{name} did not train");
                moved += 1;
            }
        }
        assert!(same > 0 && moved > 0);
    }

    #[test]
    fn frozen_layers_beyond_the_encoder_are_rejected() {
        let work = tempfile::tempdir().unwrap();
        let tok = tokenizer(work.path(), 16);
        let mut cfg = config();
        cfg.frozen_layers = 3;
        let stop = AtomicBool::new(false);
        let setup = FitSetup {
            model: None,
            encoder_config: tiny_config(WORDS.len()),
            tokenizer: &tok,
            checkpoint_dir: work.path().join("ckpt"),
            resume: false,
            interrupt: &stop,
        };
        let err = fit(&setup, &data(), &cfg, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("frozen_layers 3"), "{err}");
    }

    /// The cached path computes what the full network computes: forward_from(lower_states(k), k)
    /// equals forward for every k in eval mode.
    #[test]
    fn cached_lower_states_reproduce_the_full_forward() {
        let work = tempfile::tempdir().unwrap();
        let tok = tokenizer(work.path(), 16);
        let cfg = tiny_config(WORDS.len());
        let t = trained(&cfg, 9);
        let net = t.network();
        let batch = tok
            .batch(
                &["the attacker used powershell download .", "scheduled task"],
                &Device::Cpu,
            )
            .unwrap();
        let full = net.forward(&batch, Mode::Eval).unwrap();
        for k in 0..=cfg.num_hidden_layers {
            let states = net.lower_states(&batch, k).unwrap();
            let part = net
                .forward_from(&states, &batch.attention_mask, k, Mode::Eval)
                .unwrap();
            let diff = (part - &full)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "k={k}: {diff}");
        }
    }

    /// A checkpoint written for one config is not resumed under another.
    #[test]
    fn resume_refuses_a_checkpoint_of_another_config() {
        let work = tempfile::tempdir().unwrap();
        let tok = tokenizer(work.path(), 16);
        let cfg = config();
        let stop = AtomicBool::new(true);
        let mut setup = FitSetup {
            model: None,
            encoder_config: tiny_config(WORDS.len()),
            tokenizer: &tok,
            checkpoint_dir: work.path().join("ckpt"),
            resume: false,
            interrupt: &stop,
        };
        let err = fit(&setup, &data(), &cfg, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        let go = AtomicBool::new(false);
        setup.interrupt = &go;
        setup.resume = true;
        let other = ClassifierTrainConfig {
            epochs: 3,
            ..config()
        };
        let err = fit(&setup, &data(), &other, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("different training config or data"),
            "{err}"
        );
    }
}

/// A passage over the classifier's `max_length` (16 tokens in the fixture) is read sentence by
/// sentence: each technique gets its best sentence score (the classifier's rule is any
/// sentence); a passage that fits is read whole.
#[test]
fn a_long_passage_is_read_sentence_by_sentence() {
    use ttpmap_core::pipeline::{score_passages, SentenceScorer};
    use ttpmap_ml::ClassifierScorer;
    let mut scorer = ClassifierScorer::new(Artifact::open(fixture_dir(), &Device::Cpu).unwrap());
    scorer.top_k = 1000;
    let (a, b) = (SENTENCES[0], SENTENCES[1]);
    assert!(scorer.reads_whole(a) && scorer.reads_whole(b));
    let passage = format!("{a} {b}");
    assert!(!scorer.reads_whole(&passage));
    let got = score_passages(&scorer, &[&passage, a]).unwrap();
    let alone = scorer.score(&[a, b]).unwrap();
    let best = |t: &ttpmap_core::TechniqueId| {
        alone
            .iter()
            .flatten()
            .filter(|p| &p.technique == t)
            .map(|p| p.score)
            .fold(f32::MIN, f32::max)
    };
    assert!(!got[0].is_empty());
    for p in &got[0] {
        assert_eq!(p.score, best(&p.technique), "{}", p.technique);
    }
    // One prediction per technique, best first.
    assert!(got[0].windows(2).all(|w| w[0].score >= w[1].score));
    // The short one: the classifier's own answer.
    assert_eq!(got[1], alone[0]);
}
