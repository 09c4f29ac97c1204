//! The default pipeline end to end through the built binary: the shipped model (compiled in
//! from `models/default/`) loads over the shared all-MiniLM-L6-v2 with its sha256 checked and
//! finds the techniques of a plain sentence; `ttpmap train default` runs end to end on the
//! shared data with a tiny random base model and its output is usable and checked; a missing
//! base model falls back to BM25 and says so; a broken shipped model is an error.

use std::path::Path;
use std::process::{Command, Output};

use ttpmap_ml::model_dir::write_random_model;
use ttpmap_ml::BertConfig;

use crate::support::shared_dir;

/// `ttpmap` offline with a private cache; the data folder is the shared one unless `data`.
fn ttpmap(cache: &Path, data: Option<&Path>) -> Command {
    let shared = shared_dir();
    let bundle = shared.join("data/attack/enterprise-attack-18.1.json");
    assert!(
        bundle.is_file(),
        "missing {}: set TTPMAP_SHARED",
        bundle.display()
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_ttpmap"));
    c.env("TTPMAP_ATTACK", bundle)
        .env_remove("TTPMAP_MODEL")
        .env_remove("TTPMAP_TRAINED")
        .env("TTPMAP_CACHE", cache)
        .env("TTPMAP_OFFLINE", "1")
        .env(
            "TTPMAP_DATA",
            data.map_or(shared.join("data"), Path::to_path_buf),
        );
    c
}

/// The JSON a successful command printed.
fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn ok(out: &Output) -> serde_json::Value {
    // One extraction per input file.
    json_of(out)[0].clone()
}

/// `extract --format json` of `text` written to `cache/name` with the built-in default.
fn extract_json(cache: &Path, name: &str, text: &str) -> serde_json::Value {
    let report = cache.join(name);
    std::fs::write(&report, text).unwrap();
    ok(&ttpmap(cache, None)
        .args(["extract", "--format", "json"])
        .arg(&report)
        .output()
        .unwrap())
}

fn techniques(v: &serde_json::Value) -> Vec<String> {
    v["techniques"]
        .as_array()
        .expect("techniques")
        .iter()
        .map(|t| t["technique"].as_str().unwrap().to_string())
        .collect()
}

const SENTENCE: &str =
    "The actor used PowerShell to download a payload and created a scheduled task for persistence.";

#[test]
fn the_built_in_default_finds_powershell_and_the_scheduled_task() {
    let cache = tempfile::tempdir().unwrap();
    let v = extract_json(cache.path(), "r.txt", SENTENCE);
    assert_eq!(v["method"], "trained");
    let found = techniques(&v);
    for t in ["T1059.001", "T1053.005"] {
        assert!(found.iter().any(|f| f == t), "{t} not in {found:?}");
    }
}

/// `rank` of a passage longer than the model's 64 tokens reads it sentence by sentence (the
/// model was trained on single sentences): a technique's confidence is what its sentence gets
/// alone, and the evidence names the sentence. A passage that fits is read whole.
#[test]
fn rank_reads_a_long_passage_sentence_by_sentence() {
    let cache = tempfile::tempdir().unwrap();
    let second = "They created a scheduled task for persistence.";
    let first = "The intrusion began in early March, when the operators, who had been active \
                 against logistics, shipping and freight forwarding companies across three \
                 continents since at least the previous autumn according to several vendors and \
                 national agencies that tracked the same infrastructure, returned to a network \
                 they had already mapped in detail.";
    let rank = |text: &str| {
        let out = ttpmap(cache.path(), None)
            .args(["rank", "--json", "-k", "5", text])
            .output()
            .unwrap();
        json_of(&out).as_array().unwrap().clone()
    };
    let (long, alone) = (rank(&format!("{first} {second}")), rank(second));
    assert_eq!(long[0]["technique"], "T1053.005", "{long:?}");
    assert_eq!(alone[0]["technique"], "T1053.005", "{alone:?}");
    assert_eq!(long[0]["score"], alone[0]["score"]);
    let evidence = long[0]["evidence"].to_string();
    assert!(evidence.contains("sentence 2 of 2"), "{evidence}");
    // Short enough to read at once: no sentence is singled out.
    let short = rank(&format!("The actor used PowerShell. {second}"));
    assert!(
        !short[0]["evidence"].to_string().contains("of 2"),
        "{short:?}"
    );
}

#[test]
fn technique_ids_a_report_cites_are_found_with_the_citation_as_evidence() {
    let cache = tempfile::tempdir().unwrap();
    let v = extract_json(
        cache.path(),
        "mapping.md",
        "# ATT&CK mapping\n\n| Tactic | Technique |\n| --- | --- |\n\
         | Execution | T1059.001 PowerShell |\n| Defense Evasion | T1027 |\n\
         | Command and Control | T1071.001 Web Protocols |\n\n\
         The actor relied on T1218.011 to proxy execution, and on T1086 before that.\n",
    );
    assert_eq!(v["method"], "trained");
    let found = techniques(&v);
    for t in ["T1059.001", "T1059", "T1027", "T1071.001", "T1218.011"] {
        assert!(found.iter().any(|f| f == t), "{t} not in {found:?}");
    }
    let text = v.to_string();
    assert!(text.contains("cites T1027"), "{text}");
    assert!(
        text.contains("cites T1086 (revoked; now T1059.001)"),
        "{text}"
    );
}

#[test]
fn without_the_base_model_the_default_falls_back_to_bm25_and_says_so() {
    let cache = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let report = cache.path().join("r.txt");
    std::fs::write(
        &report,
        format!("{SENTENCE} The loader was packed (T1027)."),
    )
    .unwrap();
    let out = ttpmap(cache.path(), Some(empty.path()))
        .args(["extract", "--format", "json"])
        .arg(&report)
        .output()
        .unwrap();
    let v = ok(&out);
    assert_eq!(v["method"], "bm25");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Falling back to BM25") && err.contains("TTPMAP_MODEL"),
        "{err}"
    );
    // BM25 reads the ids a report cites too (as every method does).
    assert!(techniques(&v).iter().any(|t| t == "T1027"), "{v}");
    assert!(v.to_string().contains("cites T1027"), "{v}");
}

fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: 120,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: 32,
        ..BertConfig::default()
    }
}

const WORDS: &[&str] = &[
    "the",
    "actor",
    "used",
    "powershell",
    "to",
    "download",
    "a",
    "payload",
    "and",
    "created",
    "scheduled",
    "task",
    "for",
    "persistence",
    ".",
    "psexec",
    "mimikatz",
];

/// Every value listed, as configs/default.toml asks, at a size that trains in seconds.
const TINY_TOML: &str = r#"
[data]
validation_fraction = 0.2
split_seed = 42
procedures_per_technique = 1
descriptions = false
emulation = false
emulation_split_seed = 42
fixed_label_space = ["tram2"]
fixed_label_space_loss = true
annoctr_dev = false

[classifier]
epochs = 1
batch_size = 32
max_length = 16
seeds = [42]
unlabelled_ratio = 1.0
frozen_layers = 1
eval_batch_size = 128
"#;

/// Sentences of our own, labelled, as (document, text, labels).
const SENTENCES: &[(&str, &str, &[&str])] = &[
    (
        "a",
        "The actor used PowerShell to download a payload.",
        &["T1059.001"],
    ),
    (
        "a",
        "A scheduled task kept the implant running.",
        &["T1053.005"],
    ),
    ("a", "The company was founded in 2004.", &[]),
    ("b", "They moved laterally with PsExec.", &["T1569.002"]),
    (
        "b",
        "Credentials were dumped with Mimikatz.",
        &["T1003.001"],
    ),
    ("b", "Our team thanks the reviewers.", &[]),
    (
        "c",
        "A spearphishing attachment delivered the macro.",
        &["T1566.001"],
    ),
    ("c", "The macro started cmd.exe.", &["T1059.003"]),
    ("d", "Files were encrypted for impact.", &["T1486"]),
    ("d", "Shadow copies were deleted with vssadmin.", &["T1490"]),
    (
        "e",
        "Data was sent to cloud storage with rclone.",
        &["T1567.002"],
    ),
    ("e", "The report ends here.", &[]),
];

/// A data folder with small TRAM2- and AnnoCTR-format training files built from
/// [`SENTENCES`] (the shared ATT&CK bundle comes from TTPMAP_ATTACK).
fn tiny_data(dir: &Path) {
    let mut sentence = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut docs = serde_json::Map::new();
    let mut entities = serde_json::Map::new();
    for (i, (doc, text, ls)) in SENTENCES.iter().enumerate() {
        let k = i.to_string();
        sentence.insert(k.clone(), (*text).into());
        labels.insert(k.clone(), serde_json::json!(ls));
        docs.insert(k.clone(), format!("report {doc}").into());
        entities.insert(k, serde_json::json!([]));
    }
    for (name, doc_key, extra) in [("tram2", "doc_title", false), ("annoctr", "document", true)] {
        let mut v = serde_json::json!({"sentence": sentence, "labels": labels, doc_key: docs});
        if extra {
            v["entities"] = serde_json::Value::Object(entities.clone());
        }
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("train.json"), v.to_string()).unwrap();
    }
}

#[test]
fn train_default_runs_end_to_end_with_a_tiny_model_and_its_output_is_checked() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    tiny_data(&data);
    let base = work.path().join("tiny");
    write_random_model(&base, &tiny_config(), 7, WORDS).unwrap();
    let cfg = work.path().join("tiny.toml");
    std::fs::write(&cfg, TINY_TOML).unwrap();
    let full = work.path().join("full");
    let ship = work.path().join("ship");
    let out = ttpmap(work.path(), Some(&data))
        .args(["--quiet", "train", "default", "--config"])
        .arg(&cfg)
        .arg("--model")
        .arg(&base)
        .arg("--out")
        .arg(&full)
        .arg("--ship")
        .arg(&ship)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "train default failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ship.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "ttpmap-trained-delta");
    assert!(manifest["command"]
        .as_str()
        .unwrap()
        .contains("train default"));
    assert!(manifest["classifier"]["labels"].as_array().unwrap().len() > 500);
    // Only the trained layer and the head ship: the frozen embeddings and layer 0 do not.
    let delta = std::fs::read(ship.join("delta-seed-42.safetensors")).unwrap();
    let names = String::from_utf8_lossy(&delta[..2000.min(delta.len())]).into_owned();
    assert!(
        !names.contains("word_embeddings") && !names.contains("layer.0."),
        "{names}"
    );
    assert_eq!(
        manifest["validation"]["decision_grid"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // A shipped folder can be packaged again (new validation data or tuning) without the
    // full weights, but only over the base it was made for.
    let again = work.path().join("again");
    let repackage = |base: &Path| {
        ttpmap(work.path(), Some(&data))
            .args(["--quiet", "train", "default", "--package-only", "--config"])
            .arg(&cfg)
            .arg("--model")
            .arg(base)
            .arg("--out")
            .arg(&ship)
            .arg("--ship")
            .arg(&again)
            .arg("--dump-validation")
            .arg(work.path().join("validation.jsonl"))
            .output()
            .unwrap()
    };
    let out = repackage(&base);
    assert!(
        out.status.success(),
        "package again failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["classifier"]["labels"], manifest["classifier"]["labels"]);
    // The validation scores were dumped, one JSON line per validation sentence.
    let dump = std::fs::read_to_string(work.path().join("validation.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(dump.lines().next().unwrap()).unwrap();
    assert!(
        first["doc"].is_string() && first["scores"].is_array(),
        "{first}"
    );
    // The shipped folder is used by extract over its base model.
    let report = work.path().join("r.txt");
    std::fs::write(&report, SENTENCE).unwrap();
    let v = ok(&ttpmap(work.path(), None)
        .args(["extract", "--format", "json", "--trained"])
        .arg(&ship)
        .arg("--model")
        .arg(&base)
        .arg(&report)
        .output()
        .unwrap());
    assert_eq!(v["method"], "trained");
    // Packaged again, it is the same model: the same scores for the same sentence.
    let scores = |ship: &Path| {
        let v = ok(&ttpmap(work.path(), None)
            .args(["rank", "--json", "--trained"])
            .arg(ship)
            .arg("--model")
            .arg(&base)
            .arg(SENTENCE)
            .output()
            .unwrap());
        v.to_string()
    };
    let (first, second) = (scores(&ship), scores(&again));
    assert!(first.contains("T1"), "{first}");
    assert_eq!(first, second);
    // Another base model (same shapes, other weights) is refused by its sha256.
    let other = work.path().join("other");
    write_random_model(&other, &tiny_config(), 8, WORDS).unwrap();
    let out = ttpmap(work.path(), None)
        .args(["extract", "--trained"])
        .arg(&ship)
        .arg("--model")
        .arg(&other)
        .arg(&report)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256") && err.contains("model.safetensors"),
        "{err}"
    );
    let out = repackage(&other);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256") && err.contains("manifest.json"),
        "{err}"
    );
}

#[test]
fn a_broken_shipped_model_is_an_error_naming_the_file_not_a_fallback() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("tiny");
    write_random_model(&base, &tiny_config(), 7, WORDS).unwrap();
    let ship = work.path().join("ship");
    std::fs::create_dir_all(&ship).unwrap();
    std::fs::write(
        ship.join("manifest.json"),
        "{\"format\": \"something else\"}",
    )
    .unwrap();
    let report = work.path().join("r.txt");
    std::fs::write(&report, SENTENCE).unwrap();
    let out = ttpmap(work.path(), None)
        .args(["extract", "--trained"])
        .arg(&ship)
        .arg("--model")
        .arg(&base)
        .arg(&report)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest.json") && err.contains("format"),
        "{err}"
    );
}
