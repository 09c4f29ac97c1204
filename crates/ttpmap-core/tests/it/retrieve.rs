//! BM25 over the real ATT&CK bundle, measured on the emulation-plan steps.
//!
//! The ATT&CK catalog loader is written elsewhere; this test parses the attack-patterns,
//! procedure examples (`uses` relationship descriptions) and `revoked-by` links itself with
//! serde_json, just enough to measure retrieval.
//!
//! Measurement (prints a table; run with
//! `TTPMAP_SHARED=/work/shared cargo test -p ttpmap-core --test it retrieve:: -- --ignored
//! --nocapture`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::data;
use serde_json::Value;
use ttpmap_core::attack::Technique;
use ttpmap_core::dataset::{load_emulation, remap_steps, EmulationStep};
use ttpmap_core::retrieve::{
    technique_documents, Analyzer, Bm25Index, Bm25Params, DocOptions, ProcedureLayout,
};
use ttpmap_core::TechniqueId;

/// `[text](url)` -> `text`; `(Citation: ...)` removed.
fn clean(s: &str) -> String {
    let link = regex::Regex::new(r"\[([^\]]*)\]\([^)]*\)").unwrap();
    let cite = regex::Regex::new(r"\(Citation:[^)]*\)").unwrap();
    let s = link.replace_all(s, "$1");
    cite.replace_all(&s, "").trim().to_string()
}

struct MiniCatalog {
    techniques: Vec<Technique>,
    procedures: Vec<(TechniqueId, String)>,
    /// Every technique id (active or not) -> (active, revoked_by id).
    status: HashMap<TechniqueId, (bool, Option<TechniqueId>)>,
}

impl MiniCatalog {
    fn load() -> Self {
        let text = std::fs::read_to_string(data("attack/enterprise-attack-18.1.json")).unwrap();
        let bundle: Value = serde_json::from_str(&text).unwrap();
        let objects = bundle["objects"].as_array().unwrap();
        let mut by_stix: HashMap<String, TechniqueId> = HashMap::new();
        let mut techniques = Vec::new();
        for o in objects.iter().filter(|o| o["type"] == "attack-pattern") {
            let Some(ext) = o["external_references"].as_array().and_then(|r| {
                r.iter()
                    .find(|e| e["source_name"] == "mitre-attack")
                    .and_then(|e| e["external_id"].as_str())
            }) else {
                continue;
            };
            let Ok(id) = TechniqueId::parse(ext) else {
                continue;
            };
            let stix = o["id"].as_str().unwrap().to_string();
            by_stix.insert(stix.clone(), id.clone());
            techniques.push(Technique {
                id: id.clone(),
                stix_id: stix,
                name: o["name"].as_str().unwrap_or("").to_string(),
                description: clean(o["description"].as_str().unwrap_or("")),
                tactics: vec![],
                platforms: vec![],
                parent: id.is_subtechnique().then(|| id.parent()),
                subtechniques: vec![],
                revoked: o["revoked"].as_bool().unwrap_or(false),
                deprecated: o["x_mitre_deprecated"].as_bool().unwrap_or(false),
                revoked_by: None,
                url: None,
                external_references: vec![],
                created: String::new(),
                modified: String::new(),
            });
        }
        let mut procedures = Vec::new();
        let mut revoked_by: HashMap<TechniqueId, TechniqueId> = HashMap::new();
        for o in objects.iter().filter(|o| o["type"] == "relationship") {
            if o["revoked"].as_bool() == Some(true)
                || o["x_mitre_deprecated"].as_bool() == Some(true)
            {
                continue;
            }
            let src = o["source_ref"].as_str().unwrap_or("");
            let Some(target) = o["target_ref"].as_str().and_then(|t| by_stix.get(t)) else {
                continue;
            };
            match o["relationship_type"].as_str() {
                Some("uses") => {
                    if let Some(d) = o["description"].as_str() {
                        let d = clean(d);
                        if !d.is_empty() {
                            procedures.push((target.clone(), d));
                        }
                    }
                }
                Some("revoked-by") => {
                    if let Some(s) = by_stix.get(src) {
                        revoked_by.insert(s.clone(), target.clone());
                    }
                }
                _ => {}
            }
        }
        // Sub-technique names get their parent's name in front, as ATT&CK shows them.
        let names: HashMap<TechniqueId, String> = techniques
            .iter()
            .filter(|t| t.is_active())
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect();
        for t in &mut techniques {
            if let Some(p) = t.parent.as_ref().and_then(|p| names.get(p)) {
                t.name = format!("{p}: {}", t.name);
            }
        }
        let status = techniques
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    (t.is_active(), revoked_by.get(&t.id).cloned()),
                )
            })
            .collect();
        MiniCatalog {
            techniques,
            procedures,
            status,
        }
    }

    fn resolve(&self, id: &TechniqueId) -> Option<TechniqueId> {
        let mut cur = id.clone();
        for _ in 0..10 {
            match self.status.get(&cur) {
                Some((true, _)) => return Some(cur),
                Some((false, Some(next))) => cur = next.clone(),
                _ => return None,
            }
        }
        None
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    n: usize,
    p1: usize,
    h3: usize,
    h5: usize,
}

fn measure(idx: &Bm25Index, steps: &[EmulationStep]) -> BTreeMap<String, Counts> {
    let mut per: BTreeMap<String, Counts> = BTreeMap::new();
    for s in steps {
        let hits = idx.search(&s.query(), 5);
        let rank = hits.iter().position(|h| h.technique == s.technique);
        for key in [s.actor.clone(), "ALL".to_string()] {
            let c = per.entry(key).or_default();
            c.n += 1;
            c.p1 += usize::from(rank == Some(0));
            c.h3 += usize::from(rank.is_some_and(|r| r < 3));
            c.h5 += usize::from(rank.is_some());
        }
    }
    per
}

fn load_steps(cat: &MiniCatalog) -> Vec<EmulationStep> {
    let mut steps = load_emulation(data("emulation")).unwrap().steps;
    let report = remap_steps(&mut steps, |t| cat.resolve(t));
    // All 348 steps carry ids that are still active in ATT&CK v18.1: nothing is remapped.
    assert_eq!(steps.len(), 348, "{report:?}");
    assert!(report.unknown.is_empty(), "{report:?}");
    assert!(report.remapped.is_empty(), "{report:?}");
    steps
}

/// Sanity on the real data: the index builds and retrieves obvious techniques.
#[test]
fn bm25_on_attack_finds_obvious_techniques() {
    let cat = MiniCatalog::load();
    let opts = DocOptions {
        include_procedures: false,
        ..DocOptions::default()
    };
    let docs = technique_documents(&cat.techniques, &cat.procedures, &opts);
    assert_eq!(docs.len(), 691, "active techniques");
    let docs = technique_documents(&cat.techniques, &cat.procedures, &DocOptions::default());
    let max_per = {
        let mut c: HashMap<&TechniqueId, usize> = HashMap::new();
        for (t, _) in &cat.procedures {
            *c.entry(t).or_default() += 1;
        }
        c.into_values().max().unwrap_or(0)
    };
    assert!(
        max_per < DocOptions::default().max_procedures_per_technique,
        "{max_per}"
    );
    let steps = load_steps(&cat);
    assert!(steps.iter().any(|s| s.actor == "OilRig"));
    let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
    let top = |q: &str| {
        idx.search(q, 3)
            .into_iter()
            .map(|h| h.technique.to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        top("powershell.exe -EncodedCommand").contains(&"T1059.001".to_string()),
        "{:?}",
        top("powershell.exe -EncodedCommand")
    );
    assert!(top("net accounts /domain password policy").contains(&"T1201".to_string()));
    assert!(top("dumped credentials from LSASS memory with mimikatz")
        .contains(&"T1003.001".to_string()));
    let ex = idx
        .explain("LSASS memory", &TechniqueId::parse("T1003.001").unwrap())
        .unwrap();
    assert!(ex
        .terms
        .iter()
        .any(|t| t.term == "lsass" && t.contribution > 0.0));
    // Regression floor for the default documents (measured 0.466 / 0.721, see
    // `ProcedureLayout`'s doc).
    let all = measure(&idx, &steps)["ALL"];
    assert_eq!(all.n, 348);
    assert!(
        all.p1 as f64 / 348.0 >= 0.45 && all.h5 as f64 / 348.0 >= 0.70,
        "P@1 {} Hit@5 {}",
        all.p1,
        all.h5
    );
}

#[test]
#[ignore = "measurement: prints P@1 / Hit@3 / Hit@5 per actor"]
fn measure_bm25_on_emulation_plans() {
    let cat = MiniCatalog::load();
    let steps = load_steps(&cat);
    println!(
        "{} techniques, {} procedures, {} steps",
        cat.techniques.len(),
        cat.procedures.len(),
        steps.len()
    );
    let configs = [
        (
            "techniques only",
            DocOptions {
                include_procedures: false,
                ..DocOptions::default()
            },
        ),
        (
            "+procedures concat (max 50)",
            DocOptions {
                max_procedures_per_technique: 50,
                procedure_layout: ProcedureLayout::Concatenated,
                ..DocOptions::default()
            },
        ),
        (
            "+procedures concat (all)",
            DocOptions {
                max_procedures_per_technique: usize::MAX,
                procedure_layout: ProcedureLayout::Concatenated,
                ..DocOptions::default()
            },
        ),
        (
            "+procedures separate (all)",
            DocOptions {
                max_procedures_per_technique: usize::MAX,
                procedure_layout: ProcedureLayout::Separate,
                ..DocOptions::default()
            },
        ),
        (
            "+procedures separate (max 50)",
            DocOptions {
                max_procedures_per_technique: 50,
                ..DocOptions::default()
            },
        ),
    ];
    for (label, opts) in configs {
        let t0 = Instant::now();
        let docs = technique_documents(&cat.techniques, &cat.procedures, &opts);
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let build = t0.elapsed();
        let t1 = Instant::now();
        let per = measure(&idx, &steps);
        let q = t1.elapsed();
        println!(
            "\n== {label}: {} docs, {} terms, build {:.0} ms, {:.2} ms/query",
            idx.num_docs(),
            idx.num_terms(),
            build.as_secs_f64() * 1e3,
            q.as_secs_f64() * 1e3 / steps.len() as f64
        );
        println!(
            "{:<14} {:>4} {:>6} {:>6} {:>6}",
            "actor", "n", "P@1", "Hit@3", "Hit@5"
        );
        for (actor, c) in &per {
            let f = |x: usize| x as f64 / c.n as f64;
            println!(
                "{:<14} {:>4} {:>6.3} {:>6.3} {:>6.3}",
                actor,
                c.n,
                f(c.p1),
                f(c.h3),
                f(c.h5)
            );
        }
    }
}
