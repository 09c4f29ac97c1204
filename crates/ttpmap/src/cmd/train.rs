//! `ttpmap train classifier`: trains the label-attention classifier (CASSANDRA recipe) on a
//! sentence dataset and writes a versioned model folder (see `ttpmap_ml::artifact`).
//!
//! Ctrl-C stops at the next step with a resumable checkpoint (`--resume` continues); the
//! artifact is written only when every seed is done (temporary folder, then rename).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use sha2::{Digest, Sha256};
use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, Dataset};
use ttpmap_core::TechniqueId;
use ttpmap_ml::artifact::{check_replaceable, write_artifact_with, Manifest};
use ttpmap_ml::train::classifier::{
    fit, ClassifierTrainConfig, Example, FitSetup, TrainData, TrainEvent,
};
use ttpmap_ml::train::{AslConfig, LossConfig};
use ttpmap_ml::ModelDir;

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub what: TrainWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrainWhat {
    /// The label-attention classifier (CASSANDRA recipe) on a sentence dataset.
    Classifier(ClassifierArgs),
    /// The cross-encoder reranker on emulation-plan queries.
    Reranker(crate::cmd::train_reranker::RerankerArgs),
}

/// `--loss` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossName {
    /// Asymmetric loss (gamma_neg 4, gamma_pos 0, clip 0.05).
    Asl,
    /// Binary cross-entropy (pos_weight from the config, none by default).
    Bce,
}

#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    /// `tram2`, `annoctr` (train split of the data folder), a TRAM2-format JSON file, or a
    /// sentence JSONL file (`.jsonl`, e.g. from `ttpmap data export-reviews --format jsonl`).
    #[arg(long, value_name = "tram2|annoctr|FILE")]
    pub dataset: String,
    /// Loss (overrides the config file).
    #[arg(long, value_enum)]
    pub loss: Option<LossName>,
    /// Comma-separated seeds (overrides the config file).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub seeds: Option<Vec<u64>>,
    /// Training config: TOML (or JSON when the name ends in .json) with any fields of
    /// `ClassifierTrainConfig`; missing fields keep the recipe's defaults
    /// (configs/classifier.toml lists them all). The resolved config is saved with the model.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Epochs (overrides the config file).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Freeze the embeddings and the N lowest encoder layers, caching their output (overrides
    /// the config file; 0 = the recipe, all layers trained).
    #[arg(long, value_name = "N")]
    pub frozen_layers: Option<usize>,
    /// Base encoder folder (default: the dense methods' model, all-MiniLM-L6-v2).
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output model folder (default: models/classifier-<dataset>-<loss>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue from the checkpoints of an interrupted run with the same output folder.
    #[arg(long)]
    pub resume: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // The first Ctrl-C asks for a checkpoint at the next step; a second one (e.g. during the
    // frozen-layer caching or validation, where no step comes soon) kills the process.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

pub fn run(assets: &Assets, args: TrainArgs) -> anyhow::Result<()> {
    match args.what {
        TrainWhat::Classifier(a) => classifier(assets, a),
        TrainWhat::Reranker(a) => crate::cmd::train_reranker::run(assets, a),
    }
}

fn load_dataset(
    assets: &Assets,
    name: &str,
    catalog: &Catalog,
) -> anyhow::Result<(Dataset, PathBuf)> {
    let dir = assets.data_dir();
    let (mut ds, path) = match name {
        "tram2" => {
            let p = dir.join("tram2/train.json");
            (dataset::load_tram2(&p)?, p)
        }
        "annoctr" => {
            let p = dir.join("annoctr/train.json");
            (dataset::load_annoctr(&p)?, p)
        }
        file if file.ends_with(".jsonl") => {
            let p = PathBuf::from(file);
            (dataset::load_sentences_jsonl(&p)?, p)
        }
        file => {
            let p = PathBuf::from(file);
            (dataset::load_tram2(&p)?, p)
        }
    };
    let report = ds.remap(|id| catalog.resolve(id).current().cloned());
    if !report.unknown.is_empty() {
        tracing::warn!(
            "labels not in ATT&CK {} dropped: {:?}",
            catalog.version(),
            report.unknown
        );
    }
    Ok((ds, path))
}

/// `"T1059.001 PowerShell. <first sentence of the description>"`.
fn label_text(catalog: &Catalog, id: &TechniqueId) -> String {
    match catalog.technique(id) {
        Some(t) => {
            let first = t.description.split(". ").next().unwrap_or("").trim();
            format!("{id} {}. {first}", t.name)
        }
        None => id.to_string(),
    }
}

fn examples(ds: &Dataset) -> Vec<Example> {
    ds.sentences()
        .map(|s| Example {
            doc: s.doc.clone(),
            text: s.text.clone(),
            labels: s.labels.clone(),
        })
        .collect()
}

fn classifier(assets: &Assets, args: ClassifierArgs) -> anyhow::Result<()> {
    let mut cfg: ClassifierTrainConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the config {}", p.display()))?;
            parse_config(&text, p)?
        }
        None => ClassifierTrainConfig::default(),
    };
    match args.loss {
        Some(LossName::Asl) => cfg.loss = LossConfig::Asl(AslConfig::default()),
        Some(LossName::Bce) if !matches!(cfg.loss, LossConfig::Bce { .. }) => {
            cfg.loss = LossConfig::Bce { pos_weight: None }
        }
        _ => {}
    }
    if let Some(s) = &args.seeds {
        cfg.seeds = s.clone();
    }
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(k) = args.frozen_layers {
        cfg.frozen_layers = k;
    }
    let loss_name = match cfg.loss {
        LossConfig::Asl(_) => "asl",
        LossConfig::Bce { .. } => "bce",
    };
    let catalog = assets.catalog()?;
    let (ds, data_path) = load_dataset(assets, &args.dataset, &catalog)?;
    let (fit_ds, val_ds) = dataset::validation_split(&ds, cfg.validation_fraction, cfg.split_seed)?;
    let labels: Vec<TechniqueId> = ds
        .sentences()
        .flat_map(|s| s.labels.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut train = examples(&fit_ds);
    let labelset: BTreeSet<&TechniqueId> = labels.iter().collect();
    if cfg.augment_procedures > 0 {
        let mut per: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
        for p in catalog.procedures() {
            if labelset.contains(&p.technique) {
                let n = per.entry(&p.technique).or_default();
                if *n < cfg.augment_procedures {
                    *n += 1;
                    train.push(Example {
                        doc: "attack:procedures".into(),
                        text: p.description.clone(),
                        labels: vec![p.technique.clone()],
                    });
                }
            }
        }
    }
    if cfg.augment_descriptions {
        for id in &labels {
            if let Some(t) = catalog.technique(id) {
                train.push(Example {
                    doc: "attack:descriptions".into(),
                    text: t.description.clone(),
                    labels: vec![id.clone()],
                });
            }
        }
    }
    let data = TrainData {
        label_texts: labels.iter().map(|l| label_text(&catalog, l)).collect(),
        labels: labels.clone(),
        train,
        validation: examples(&val_ds),
    };
    let model_path = crate::methods::model_path(
        assets,
        &crate::methods::MethodArgs {
            model: args.model.clone(),
            ..Default::default()
        },
    )?;
    let md = ModelDir::open(&model_path)
        .with_context(|| format!("opening the model folder {}", model_path.display()))?;
    let tokenizer = md.tokenizer(cfg.max_length)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let name = std::path::Path::new(&args.dataset)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        PathBuf::from(format!("models/classifier-{name}-{loss_name}"))
    });
    // Refuse a folder that is not a previous model before hours of training, not after.
    check_replaceable(&out)?;
    let ckpt_dir = out.with_file_name(format!(
        ".{}.checkpoints",
        out.file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    ));
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    eprintln!(
        "training on {} sentences ({} validation), {} labels, seeds {:?}, {} epochs",
        data.train.len(),
        data.validation.len(),
        labels.len(),
        cfg.seeds,
        cfg.epochs
    );
    let setup = FitSetup {
        model: Some(&md),
        encoder_config: md.config().clone(),
        tokenizer: &tokenizer,
        checkpoint_dir: ckpt_dir.clone(),
        resume: args.resume,
        interrupt: &INTERRUPTED,
    };
    let mut pb = crate::progress::bar(0, "", assets.quiet());
    let quiet = assets.quiet();
    let result = fit(&setup, &data, &cfg, &mut |e| match e {
        TrainEvent::SeedStart {
            seed,
            index,
            of,
            total_steps,
        } => {
            pb = crate::progress::bar(
                *total_steps as u64,
                &format!("seed {seed} ({}/{of})", index + 1),
                quiet,
            );
        }
        TrainEvent::Cache { seed, done, total } => {
            if *done == 0 || pb.length() != Some(*total as u64) {
                pb = crate::progress::bar(
                    *total as u64,
                    &format!("seed {seed}: caching frozen layers"),
                    quiet,
                );
            }
            pb.set_position(*done as u64);
        }
        TrainEvent::Step {
            seed,
            step,
            total_steps,
            loss,
            eta_seconds,
            ..
        } => {
            crate::progress::training_step(&pb, quiet, *step, *total_steps, *loss, || {
                format!("seed {seed}: step {step}/{total_steps}, loss {loss:.4}, ETA {eta_seconds:.0} s")
            })
        }
        TrainEvent::Epoch {
            seed,
            epoch,
            mean_loss,
            val_macro_f1,
        } => crate::progress::line(
            &pb,
            quiet,
            &format!(
                "seed {seed} epoch {}: loss {mean_loss:.4}, validation macro-F1 {:.2}",
                epoch + 1,
                100.0 * val_macro_f1
            ),
        ),
        TrainEvent::SeedDone(r) => {
            pb.finish_and_clear();
            eprintln!(
                "seed {}: kept {} weights (validation macro-F1 {:?}); validation per-document \
                 F1 {:.2} at its tuned threshold {:.2}, {:.2} at 0.5; {:.0} s",
                r.seed,
                r.selected,
                r.val_macro_f1,
                100.0 * r.validation.per_document_f1_in_vocabulary_tuned,
                r.validation.tuned_threshold,
                100.0 * r.validation.per_document_f1_in_vocabulary_at_0_5,
                r.seconds
            );
        }
    });
    let outcome = match result {
        Ok(o) => o,
        Err(ttpmap_ml::Error::Interrupted { checkpoint }) => {
            pb.abandon();
            anyhow::bail!(
                "interrupted; checkpoint at {} (rerun with --resume to continue)",
                checkpoint.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let mut manifest = Manifest::new(labels, md.config().clone(), cfg.max_length);
    manifest.attack_version = Some(catalog.version().to_string());
    manifest.base_model = model_path.display().to_string();
    manifest.head_dropout = cfg.head_dropout;
    manifest.thresholds.tuned = outcome.tuned_threshold;
    manifest.training = serde_json::to_value(&cfg)?;
    let bytes =
        std::fs::read(&data_path).with_context(|| format!("reading {}", data_path.display()))?;
    manifest.data.insert(
        format!("train:{}", data_path.display()),
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    );
    manifest
        .data
        .insert("attack".into(), catalog.fingerprint().to_string());
    // The ensemble (mean of the seeds' probabilities) under "validation"; each seed's own
    // figures are under seeds[i].validation.
    let mut validation = serde_json::to_value(outcome.validation)?;
    validation["sentences"] = data.validation.len().into();
    let results = serde_json::json!({
        "seeds": outcome.seeds.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        "validation": validation,
    });
    let weights: Vec<_> = outcome
        .seeds
        .into_iter()
        .map(|(r, w)| (r.seed, r.selected, w))
        .collect();
    let resolved = config_toml(&cfg)?;
    write_artifact_with(
        &out,
        &manifest,
        &tokenizer,
        &weights,
        &results,
        &[("training.toml", resolved.as_bytes())],
    )
    .with_context(|| format!("writing the model folder {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    println!(
        "classifier written to {} (threshold tuned on validation: {:.2})",
        out.display(),
        outcome.tuned_threshold
    );
    Ok(())
}

/// A training config from TOML, or JSON when `path` ends in `.json`.
pub fn parse_config(text: &str, path: &std::path::Path) -> anyhow::Result<ClassifierTrainConfig> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(text)
            .with_context(|| format!("invalid training config {} (JSON)", path.display()))
    } else {
        toml::from_str(text)
            .with_context(|| format!("invalid training config {} (TOML)", path.display()))
    }
}

/// The resolved config as TOML, with a header saying what it is.
pub fn config_toml(cfg: &ClassifierTrainConfig) -> anyhow::Result<String> {
    Ok(format!(
        "# Resolved training config of this model (ttpmap train classifier --config accepts it).\n{}",
        toml::to_string(cfg).context("serialising the training config as TOML")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// configs/classifier.toml documents every recipe default: it must parse and equal them.
    #[test]
    fn shipped_config_is_the_recipe_default() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/classifier.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            parse_config(&text, &p).unwrap(),
            ClassifierTrainConfig::default()
        );
    }

    #[test]
    fn toml_round_trips_and_overrides_merge_with_defaults() {
        let cfg = ClassifierTrainConfig {
            frozen_layers: 4,
            seeds: vec![7],
            ..Default::default()
        };
        let text = config_toml(&cfg).unwrap();
        assert_eq!(parse_config(&text, Path::new("c.toml")).unwrap(), cfg);
        let partial = parse_config("epochs = 3\n", Path::new("c.toml")).unwrap();
        assert_eq!(partial.epochs, 3);
        assert_eq!(
            partial.batch_size,
            ClassifierTrainConfig::default().batch_size
        );
        let json = parse_config("{\"epochs\": 2}", Path::new("c.json")).unwrap();
        assert_eq!(json.epochs, 2);
    }

    #[test]
    fn unknown_or_mistyped_fields_name_the_file() {
        let err = parse_config("epoch = 3\n", Path::new("my.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("my.toml") && msg.contains("epoch"), "{msg}");
        let err = parse_config("epochs = \"ten\"\n", Path::new("my.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("my.toml"));
    }
}
