//! The ATT&CK procedure examples the default model never trains on, as a validation set: the
//! full-catalog training data takes the first `procedures_per_technique` (40) examples of each
//! technique in catalog order (`ttpmap_ml::train::data::catalog_data`); a technique with more
//! has the rest held out. Writes JSON lines `{"id", "text", "labels"}` on stdout, one per
//! distinct held-out text that no training example has, its labels every technique whose
//! examples hold that text. Only the examples of groups and campaigns: a tool's or malware's
//! example is the very `uses` relationship the software evidence reads ("Mimikatz uses
//! T1003.001"), so scoring it would score the catalog, not the model. `scripts/heldout_procedures.py` scores a model's rankings of them
//! (`score_passages`).
//!
//! `cargo run --release -p ttpmap-ml --example heldout_procedures -- [--per 40] [--shared DIR]
//! > heldout.jsonl` (`--shared` defaults to `$TTPMAP_SHARED` or `../shared`).

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::path::PathBuf;

use ttpmap_core::attack::{Catalog, EntityKind};

type BoxResult<T> = Result<T, Box<dyn StdError>>;

fn main() -> BoxResult<()> {
    let mut per = 40usize;
    let mut shared = std::env::var_os("TTPMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--per" => per = it.next().ok_or("--per needs a number")?.parse()?,
            "--shared" => shared = it.next().ok_or("--shared needs a folder")?.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let catalog = Catalog::open_cached(
        &shared.join("data/attack/enterprise-attack-18.1.json"),
        None,
    )?;
    // The same walk as `catalog_data`: the first `per` non-empty examples of each technique.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut trained: BTreeSet<&str> = BTreeSet::new();
    let mut held: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for p in catalog.procedures() {
        let text = p.description.as_str();
        if text.trim().is_empty() {
            continue;
        }
        let n = count.entry(p.technique.as_str()).or_default();
        *n += 1;
        if *n <= per {
            trained.insert(text);
        } else if !matches!(p.source_kind, EntityKind::Malware | EntityKind::Tool) {
            let e = held.entry(text).or_default();
            if e.is_empty() {
                order.push(text);
            }
            e.insert(p.technique.as_str());
        }
    }
    // A held-out text's gold is every technique it is an example of, trained or not.
    let mut all: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in catalog.procedures() {
        all.entry(p.description.as_str())
            .or_default()
            .insert(p.technique.as_str());
    }
    let mut written = 0;
    for (i, text) in order.iter().filter(|t| !trained.contains(*t)).enumerate() {
        let labels: Vec<&str> = all[text].iter().copied().collect();
        println!(
            "{}",
            serde_json::json!({"id": i, "text": text, "labels": labels})
        );
        written += 1;
    }
    eprintln!(
        "{written} held-out texts ({} techniques with more than {per} examples)",
        count.values().filter(|&&n| n > per).count()
    );
    Ok(())
}
