//! `--method dense|hybrid` argument handling of the built `ttpmap` binary (no model work: a
//! full dense index build takes minutes and is measured separately, see README).
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
