//! Runs the built `ttpmap` binary's reranker commands on the shared data: `data pairs` writes
//! 20-candidate sets whose splits share no query text. Nothing is downloaded.

use crate::support::shared_dir;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn ttpmap(cache: &Path) -> Command {
    let bundle = shared_dir().join("data/attack/enterprise-attack-18.1.json");
    assert!(bundle.is_file(), "set TTPMAP_SHARED to the shared folder");
    let mut c = Command::new(env!("CARGO_BIN_EXE_ttpmap"));
    c.env("TTPMAP_ATTACK", bundle)
        .env("TTPMAP_CACHE", cache)
        .env("TTPMAP_OFFLINE", "1")
        .env("TTPMAP_DATA", shared_dir().join("data"));
    c
}

#[test]
fn pair_sets_have_twenty_candidates_and_disjoint_query_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut texts: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for split in ["train", "validation", "test"] {
        let out = tmp.path().join(format!("{split}.jsonl"));
        let o = ttpmap(tmp.path())
            .args([
                "data",
                "pairs",
                "--dataset",
                "emulation",
                "--split",
                split,
                "-o",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut per_query: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let q = v["query"].as_str().unwrap().to_string();
            let e = per_query.entry(q.clone()).or_default();
            e.0 += 1;
            e.1 += usize::from(v["label"].as_f64() == Some(1.0));
            assert!(v["text"]
                .as_str()
                .unwrap()
                .starts_with(v["technique"].as_str().unwrap()));
            texts.entry(split).or_default().insert(q);
        }
        assert!(!per_query.is_empty());
        for (q, (n, gold)) in &per_query {
            assert_eq!(*n, 20, "{q}: {n} candidates");
            assert!(*gold >= 1, "{q}: no gold candidate");
        }
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join(format!("{split}.config.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(config["candidates"]["k"], 20);
        assert_eq!(config["candidates"]["negatives"], "bm25");
    }
    let (a, b, c) = (&texts["train"], &texts["validation"], &texts["test"]);
    assert!(a.is_disjoint(b) && a.is_disjoint(c) && b.is_disjoint(c));
    // 80/10/10: the test split is a real share of the queries.
    assert!(
        c.len() * 20 > a.len(),
        "test {} vs train {}",
        c.len(),
        a.len()
    );
}
