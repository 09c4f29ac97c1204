//! `--method dense|hybrid` argument handling of the built `ttpmap` binary, and a cold dense
//! run that takes ATT&CK's text embeddings from the shipped store (a full encoding takes
//! minutes and is measured separately, see docs/results.md).
//! Uses the ATT&CK bundle from ../shared (or $TTPMAP_SHARED); nothing is downloaded.

use crate::support::shared_dir;
use std::path::Path;
use std::process::Command;

fn ttpmap(cache: &Path) -> Command {
    let bundle = shared_dir().join("data/attack/enterprise-attack-18.1.json");
    assert!(
        bundle.is_file(),
        "missing {}: set TTPMAP_SHARED to the shared folder",
        bundle.display()
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_ttpmap"));
    c.env("TTPMAP_ATTACK", bundle)
        .env_remove("TTPMAP_MODEL")
        .env("TTPMAP_CACHE", cache)
        // A data folder without a models/ beside it: the shared model is not found there.
        .env("TTPMAP_DATA", cache.join("data"))
        .env("TTPMAP_OFFLINE", "1");
    c
}

#[test]
fn dense_without_a_model_says_how_to_pass_one() {
    let cache = tempfile::tempdir().unwrap();
    let report = cache.path().join("r.txt");
    std::fs::write(&report, "The actor dumped LSASS memory with Mimikatz.").unwrap();
    for method in ["dense", "hybrid"] {
        let out = ttpmap(cache.path())
            .args(["extract", "--method", method])
            .arg(&report)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{method} without a model succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        // TTPMAP_OFFLINE forbids the download: the error names the default model, why it is
        // not fetched, and how to pass a local folder instead.
        assert!(
            err.contains("sentence-transformers/all-MiniLM-L6-v2")
                && err.contains("--offline")
                && err.contains("pass --model DIR")
                && err.contains("../shared/models/all-MiniLM-L6-v2"),
            "{method}: {err}"
        );
    }
}

#[test]
fn rank_with_dense_needs_the_model() {
    let cache = tempfile::tempdir().unwrap();
    let out = ttpmap(cache.path())
        .args(["rank", "--method", "dense", "dump lsass memory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // rank takes every method; dense needs its model, which this offline run cannot fetch.
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --model DIR"));
}

#[test]
fn a_cold_dense_index_takes_every_attack_text_from_the_shipped_embeddings() {
    let cache = tempfile::tempdir().unwrap();
    let report = cache.path().join("r.txt");
    std::fs::write(&report, "The actor dumped LSASS memory with Mimikatz.").unwrap();
    let model = shared_dir().join("models/all-MiniLM-L6-v2");
    let out = ttpmap(cache.path())
        .args(["-v", "extract", "--method", "dense", "--format", "json"])
        .args(["--dense-max-examples", "100000", "--model"])
        .arg(&model)
        .arg(&report)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("16708 of 16708 texts from the shipped embeddings, 0 encoded"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.to_string().contains("T1003.001"),
        "LSASS dumping not found: {v}"
    );
    // The built index is cached like one that was encoded.
    let cached: Vec<_> = std::fs::read_dir(cache.path().join("dense"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.iter().any(|n| n.ends_with("-m100000.bin")),
        "{cached:?}"
    );
}
