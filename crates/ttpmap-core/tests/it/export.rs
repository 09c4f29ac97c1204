//! Export tests: golden files (insta) for every format on a hand-built extraction with real
//! ATT&CK 18.1 techniques, and validation of the Navigator layer and STIX bundle with the
//! reference tools (scripts/validate_exports.py: OASIS stix2-validator, mitreattack-python),
//! and of the MISP event with PyMISP.

use std::path::{Path, PathBuf};
use std::process::Command;

use ttpmap_core::attack::{ExternalReference, Technique};
use ttpmap_core::export::{
    self, ExportFormat, ExportOptions, MarkdownOptions, MispOptions, NavigatorOptions, StixObject,
    StixOptions, TechniqueLookup,
};
use ttpmap_core::{
    DocumentTechnique, Evidence, Extraction, Prediction, SentencePredictions, Span, TechniqueId,
};

const CLOCK: &str = "2026-01-15T10:00:00Z";

fn tid(s: &str) -> TechniqueId {
    TechniqueId::parse(s).expect("valid id")
}

fn mitre_ref(id: &str) -> ExternalReference {
    ExternalReference {
        source_name: "mitre-attack".into(),
        external_id: Some(id.into()),
        url: Some(format!(
            "https://attack.mitre.org/techniques/{}",
            id.replace('.', "/")
        )),
        description: None,
    }
}

/// Technique records as ATT&CK 18.1 publishes them (ids, names, timestamps and the first
/// external references copied from enterprise-attack-18.1.json; descriptions shortened).
fn techniques() -> Vec<Technique> {
    let t = |id: &str, stix: &str, name: &str, tactics: &[&str], created: &str, modified: &str| {
        let id = tid(id);
        Technique {
            stix_id: stix.into(),
            name: name.into(),
            description: format!("{name} (shortened for the test)."),
            tactics: tactics.iter().map(|s| s.to_string()).collect(),
            platforms: vec!["Windows".into()],
            parent: id.is_subtechnique().then(|| id.parent()),
            subtechniques: Vec::new(),
            revoked: false,
            deprecated: false,
            revoked_by: None,
            url: mitre_ref(id.as_str()).url,
            external_references: vec![mitre_ref(id.as_str())],
            created: created.into(),
            modified: modified.into(),
            id,
        }
    };
    let mut v = vec![
        t(
            "T1059.001",
            "attack-pattern--970a3432-3237-47ad-bcca-7d8cbb217736",
            "PowerShell",
            &["execution"],
            "2020-03-09T13:48:55.078Z",
            "2025-10-24T17:49:07.660Z",
        ),
        t(
            "T1566.001",
            "attack-pattern--2e34237d-8574-43f6-aace-ae2915de8597",
            "Spearphishing Attachment",
            &["initial-access"],
            "2020-03-02T19:05:18.137Z",
            "2025-10-24T17:48:35.522Z",
        ),
        t(
            "T1003.001",
            "attack-pattern--65f2d882-3f41-4d48-8a06-29af77ec9f90",
            "LSASS Memory",
            &["credential-access"],
            "2020-02-11T18:41:44.783Z",
            "2025-10-24T17:48:52.657Z",
        ),
        t(
            "T1078",
            "attack-pattern--b17a1a56-e99c-403c-8948-561df0cffe81",
            "Valid Accounts",
            &[
                "defense-evasion",
                "persistence",
                "privilege-escalation",
                "initial-access",
            ],
            "2017-05-31T21:31:00.645Z",
            "2025-10-24T17:49:14.095Z",
        ),
    ];
    // A second, real reference on PowerShell (as in ATT&CK) to check references are reused.
    v[0].external_references.push(ExternalReference {
        source_name: "TechNet PowerShell".into(),
        external_id: None,
        url: Some("https://technet.microsoft.com/en-us/scriptcenter/dd742419.aspx".into()),
        description: Some(
            "Microsoft. (n.d.). Windows PowerShell Scripting. Retrieved April 28, 2016.".into(),
        ),
    });
    v
}

fn pred(t: &str, score: f32, raw: f32, reasons: &[&str]) -> Prediction {
    Prediction {
        technique: tid(t),
        score,
        raw_score: raw,
        evidence: Evidence {
            method: "bm25".into(),
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
        },
    }
}

fn sentence(index: usize, start: usize, text: &str, preds: Vec<Prediction>) -> SentencePredictions {
    SentencePredictions {
        sentence: index,
        span: Span::new(start, start + text.len()),
        text: text.into(),
        predictions: preds,
    }
}

fn doc_technique(
    t: &str,
    name: &str,
    tactic: &str,
    score: f32,
    sentences: &[usize],
) -> DocumentTechnique {
    DocumentTechnique {
        technique: tid(t),
        name: name.into(),
        tactics: vec![tactic.into()],
        score,
        sentences: sentences.to_vec(),
    }
}

/// A hand-built extraction: spearphishing -> PowerShell -> LSASS dump, with text that needs
/// quoting / escaping in CSV and Markdown.
fn extraction() -> Extraction {
    Extraction {
        source: "https://example.com/reports/demo-intrusion.html".into(),
        title: Some("Demo intrusion: from a phishing email to credential theft".into()),
        method: "bm25".into(),
        threshold: 0.3,
        attack_version: "18.1".into(),
        sentence_count: 6,
        sentences: vec![
            sentence(
                0,
                0,
                "The actor sent spearphishing emails with a malicious Word attachment, \"invoice.docm\".",
                vec![pred("T1566.001", 0.91, 14.2, &["spearphishing", "attachment", "emails"])],
            ),
            sentence(
                2,
                160,
                "The macro launched PowerShell with an encoded command (powershell.exe -nop -enc ...) to fetch a loader.",
                vec![pred("T1059.001", 0.84, 12.9, &["powershell", "encoded", "command"])],
            ),
            sentence(
                4,
                320,
                "Finally, they dumped LSASS memory with procdump | findstr and ran Mimikatz's sekurlsa::logonpasswords.",
                vec![
                    pred("T1003.001", 0.77, 11.0, &["lsass", "memory", "dumped"]),
                    pred("T1059.001", 0.35, 5.1, &["ran"]),
                ],
            ),
            sentence(
                5,
                430,
                "-enc was used again, a PowerShell flag seen in *every* stage.",
                vec![pred("T1059.001", 0.41, 6.0, &["powershell"])],
            ),
        ],
        techniques: vec![
            doc_technique("T1566.001", "Spearphishing Attachment", "initial-access", 0.91, &[0]),
            doc_technique("T1059.001", "PowerShell", "execution", 0.84, &[2, 5, 4]),
            doc_technique("T1003.001", "LSASS Memory", "credential-access", 0.77, &[4]),
        ],
    }
}

/// A second document (multi-document exports): one multi-tactic technique, no title.
fn second_extraction() -> Extraction {
    Extraction {
        source: "reports/second.txt".into(),
        title: None,
        method: "bm25".into(),
        threshold: 0.3,
        attack_version: "18.1".into(),
        sentence_count: 3,
        sentences: vec![
            sentence(
                1,
                40,
                "They logged in over VPN with stolen domain credentials.",
                vec![pred("T1078", 0.66, 9.0, &["credentials", "logged"])],
            ),
            sentence(
                2,
                97,
                "A PowerShell one-liner then listed the domain admins.",
                vec![pred("T1059.001", 0.9, 13.0, &["powershell"])],
            ),
        ],
        techniques: vec![
            DocumentTechnique {
                technique: tid("T1078"),
                name: "Valid Accounts".into(),
                tactics: vec![
                    "defense-evasion".into(),
                    "persistence".into(),
                    "privilege-escalation".into(),
                    "initial-access".into(),
                ],
                score: 0.66,
                sentences: vec![1],
            },
            doc_technique("T1059.001", "PowerShell", "execution", 0.9, &[2]),
        ],
    }
}

fn with_lookup<R>(f: impl FnOnce(&TechniqueLookup<'_>) -> R) -> R {
    let catalog = techniques();
    let lookup = |id: &TechniqueId| catalog.iter().find(|t| &t.id == id);
    f(&lookup)
}

fn stix_opts() -> StixOptions {
    StixOptions {
        deterministic: true,
        clock: Some(CLOCK.into()),
        ..Default::default()
    }
}

fn misp_opts() -> MispOptions {
    MispOptions {
        deterministic: true,
        clock: Some(CLOCK.into()),
    }
}

mod golden {
    use super::*;

    #[test]
    fn misp() {
        let out = with_lookup(|l| export::to_misp_json(&[extraction()], l, &misp_opts()).unwrap());
        insta::assert_snapshot!("misp", out);
    }

    #[test]
    fn json() {
        insta::assert_snapshot!("json", export::to_json(&[extraction()]).unwrap());
    }

    #[test]
    fn jsonl() {
        let out = export::to_jsonl(&[extraction(), second_extraction()]).unwrap();
        assert_eq!(out.lines().count(), 2);
        // Each line parses back into the same extraction.
        let back: Extraction = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(back, extraction());
        insta::assert_snapshot!("jsonl", out);
    }

    #[test]
    fn csv() {
        let out = with_lookup(|l| export::to_csv(&[extraction()], l));
        // 5 predictions + header.
        assert_eq!(out.lines().count(), 6);
        insta::assert_snapshot!("csv", out);
    }

    #[test]
    fn markdown() {
        let out =
            with_lookup(|l| export::to_markdown(&[extraction()], l, &MarkdownOptions::default()));
        insta::assert_snapshot!("markdown", out);
    }

    #[test]
    fn navigator() {
        let out = with_lookup(|l| {
            export::to_navigator_json(&[extraction()], l, &NavigatorOptions::default()).unwrap()
        });
        insta::assert_snapshot!("navigator", out);
    }

    #[test]
    fn stix() {
        let out = with_lookup(|l| export::to_stix_json(&[extraction()], l, &stix_opts()).unwrap());
        insta::assert_snapshot!("stix", out);
    }
}

mod behaviour {
    use super::*;

    #[test]
    fn misp_event_tags_techniques_and_keeps_the_evidence() {
        let out = with_lookup(|l| export::to_misp_json(&[extraction()], l, &misp_opts()).unwrap());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let e = &v["Event"];
        assert_eq!(
            e["info"],
            "ttpmap: Demo intrusion: from a phishing email to credential theft"
        );
        assert_eq!(e["date"], "2026-01-15");
        assert_eq!(e["timestamp"], "1768471200");
        let tags: Vec<&str> = e["Tag"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            [
                r#"misp-galaxy:mitre-attack-pattern="Spearphishing Attachment - T1566.001""#,
                r#"misp-galaxy:mitre-attack-pattern="PowerShell - T1059.001""#,
                r#"misp-galaxy:mitre-attack-pattern="LSASS Memory - T1003.001""#,
            ]
        );
        let attrs = e["Attribute"].as_array().unwrap();
        // The source link, then one text attribute per sentence with a prediction.
        assert_eq!(attrs.len(), 5);
        assert_eq!(attrs[0]["type"], "link");
        let lsass = &attrs[3];
        assert_eq!(lsass["type"], "text");
        assert_eq!(lsass["category"], "External analysis");
        assert!(lsass["value"]
            .as_str()
            .unwrap()
            .starts_with("Finally, they dumped LSASS"));
        assert_eq!(
            lsass["comment"],
            "ttpmap, sentence 4: T1003.001 LSASS Memory (confidence 0.77); T1059.001 PowerShell (confidence 0.35)"
        );
        // Deterministic: the same input gives the same uuids; without it they differ.
        let again =
            with_lookup(|l| export::to_misp_json(&[extraction()], l, &misp_opts()).unwrap());
        assert_eq!(out, again);
        let random = |_: ()| {
            with_lookup(|l| {
                export::to_misp_json(&[extraction()], l, &MispOptions::default()).unwrap()
            })
        };
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&random(())).unwrap(),
            serde_json::from_str(&random(())).unwrap(),
        );
        assert_ne!(a["Event"]["uuid"], b["Event"]["uuid"]);
        // Several documents: MISP's restSearch shape.
        let two = with_lookup(|l| {
            export::to_misp_json(&[extraction(), second_extraction()], l, &misp_opts()).unwrap()
        });
        let two: serde_json::Value = serde_json::from_str(&two).unwrap();
        assert_eq!(two["response"].as_array().unwrap().len(), 2);
        let bad = MispOptions {
            clock: Some("noon".into()),
            ..misp_opts()
        };
        assert!(with_lookup(|l| export::misp_events(&[extraction()], l, &bad)).is_err());
    }

    #[test]
    fn csv_round_trips_through_a_quote_aware_reader() {
        let out = with_lookup(|l| export::to_csv(&[extraction()], l));
        // Minimal RFC 4180 reader: enough to check quoting of commas, quotes and pipes.
        let mut rows: Vec<Vec<String>> = Vec::new();
        let (mut row, mut field, mut quoted, mut chars) =
            (Vec::new(), String::new(), false, out.chars().peekable());
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (_, c) => field.push(c),
            }
        }
        assert!(rows.iter().all(|r| r.len() == 9), "{rows:?}");
        assert_eq!(rows[1][8], extraction().sentences[0].text);
        assert_eq!(rows[1][5], "Spearphishing Attachment");
        // The sentence starting with '-' is neutralised for spreadsheets.
        assert!(rows[5][8].starts_with("'-enc"), "{:?}", rows[5]);
    }

    #[test]
    fn navigator_multi_document_multi_tactic() {
        let layer = with_lookup(|l| {
            export::navigator_layer(
                &[extraction(), second_extraction()],
                l,
                &NavigatorOptions::default(),
            )
            .unwrap()
        });
        assert_eq!(layer.name, "ttpmap: 2 documents");
        assert_eq!(layer.versions.attack.as_deref(), Some("18"));
        let entries: Vec<(&str, Option<&str>)> = layer
            .techniques
            .iter()
            .map(|t| (t.technique_id.as_str(), t.tactic.as_deref()))
            .collect();
        // One entry per tactic of T1078, and unscored parents showing their sub-techniques.
        assert_eq!(entries.iter().filter(|(id, _)| *id == "T1078").count(), 4);
        for parent in ["T1003", "T1059", "T1566"] {
            let p = layer
                .techniques
                .iter()
                .find(|t| t.technique_id == parent)
                .unwrap();
            assert!(p.show_subtechniques && p.score.is_none(), "{p:?}");
        }
        // PowerShell: the best score over both documents (0.9 -> 90); evidence from both,
        // best first and prefixed with the source.
        let ps = layer
            .techniques
            .iter()
            .find(|t| t.technique_id == "T1059.001")
            .unwrap();
        assert_eq!(ps.score, Some(90));
        let lines: Vec<&str> = ps.comment.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("[reports/second.txt] (0.90)"),
            "{lines:?}"
        );
        assert!(lines[1].contains("(0.84)"), "{lines:?}");
        // Different ATT&CK versions cannot share a layer.
        let mut other = second_extraction();
        other.attack_version = "17.1".into();
        let err = with_lookup(|l| {
            export::navigator_layer(&[extraction(), other], l, &NavigatorOptions::default())
        });
        assert!(err.is_err());
    }

    #[test]
    fn stix_reuses_attack_objects_and_is_reproducible() {
        let docs = [extraction(), second_extraction()];
        let a = with_lookup(|l| export::stix_bundle(&docs, l, &stix_opts()).unwrap());
        let b = with_lookup(|l| export::stix_bundle(&docs, l, &stix_opts()).unwrap());
        assert_eq!(
            a, b,
            "deterministic ids and a fixed clock give identical bundles"
        );
        let patterns: Vec<_> = a
            .objects
            .iter()
            .filter_map(|o| match o {
                StixObject::AttackPattern(p) => Some(p),
                _ => None,
            })
            .collect();
        // PowerShell appears in both documents but is emitted once.
        assert_eq!(patterns.len(), 4);
        let ps = patterns.iter().find(|p| p.name == "PowerShell").unwrap();
        assert_eq!(
            ps.id,
            "attack-pattern--970a3432-3237-47ad-bcca-7d8cbb217736"
        );
        assert_eq!(ps.external_references.len(), 2);
        assert_eq!(ps.created, "2020-03-09T13:48:55.078Z");
        let reports = a
            .objects
            .iter()
            .filter(|o| matches!(o, StixObject::Report(_)))
            .count();
        assert_eq!(reports, 2);
        let notes = a
            .objects
            .iter()
            .filter(|o| matches!(o, StixObject::Note(_)))
            .count();
        assert_eq!(notes, 5);

        // Random ids and the current time by default.
        let r1 = with_lookup(|l| export::stix_bundle(&docs, l, &StixOptions::default()).unwrap());
        let r2 = with_lookup(|l| export::stix_bundle(&docs, l, &StixOptions::default()).unwrap());
        assert_ne!(r1.id, r2.id);

        // A technique the catalog does not know is an error, not an invented object.
        let mut unknown = extraction();
        unknown.techniques[0].technique = tid("T1999");
        assert!(with_lookup(|l| export::stix_bundle(&[unknown], l, &stix_opts())).is_err());
        // A malformed clock is an error.
        let bad = StixOptions {
            clock: Some("noon".into()),
            ..stix_opts()
        };
        assert!(with_lookup(|l| export::stix_bundle(&docs, l, &bad)).is_err());
    }

    #[test]
    fn empty_extraction_exports() {
        let mut x = extraction();
        x.sentences.clear();
        x.techniques.clear();
        let opts = ExportOptions {
            stix: stix_opts(),
            ..Default::default()
        };
        for f in ExportFormat::ALL {
            let out = with_lookup(|l| export::export(f, std::slice::from_ref(&x), l, &opts));
            assert!(out.is_ok(), "{f}: {out:?}");
        }
        let md = with_lookup(|l| export::to_markdown(&[x.clone()], l, &MarkdownOptions::default()));
        assert!(md.contains("No technique was found."));
        let bundle = with_lookup(|l| export::stix_bundle(&[x], l, &stix_opts()).unwrap());
        let report = bundle
            .objects
            .iter()
            .find_map(|o| match o {
                StixObject::Report(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            report.object_refs,
            vec![export::TTPMAP_IDENTITY_ID.to_string()]
        );
    }
}

mod validators {
    use super::*;
    use crate::shared_dir;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Runs scripts/validate_exports.py on Navigator layers and STIX bundles written by the
    /// exporters (single and multi-document, deterministic and random ids). The Python
    /// packages (stix2-validator, mitreattack-python) are required under CI; elsewhere their
    /// absence is a loudly reported skip.
    #[test]
    fn reference_tools_accept_navigator_and_stix() {
        let dir = tempfile::tempdir().unwrap();
        let one = [extraction()];
        let two = [extraction(), second_extraction()];
        let mut args: Vec<String> = Vec::new();
        with_lookup(|l| {
            let files = [
                (
                    "layer-one.json",
                    export::to_navigator_json(&one, l, &NavigatorOptions::default()),
                ),
                (
                    "layer-two.json",
                    export::to_navigator_json(&two, l, &NavigatorOptions::default()),
                ),
                ("stix-one.json", export::to_stix_json(&one, l, &stix_opts())),
                (
                    "stix-two.json",
                    export::to_stix_json(&two, l, &StixOptions::default()),
                ),
            ];
            for (name, content) in files {
                let path = dir.path().join(name);
                std::fs::write(&path, content.unwrap()).unwrap();
                let flag = if name.starts_with("layer") {
                    "--navigator"
                } else {
                    "--stix"
                };
                args.push(flag.into());
                args.push(path.display().to_string());
            }
        });
        let script = repo_root().join("scripts/validate_exports.py");
        let out = match Command::new("python3").arg(&script).args(&args).output() {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI: cannot run python3: {e}"
                );
                eprintln!(
                    "SKIPPED reference_tools_accept_navigator_and_stix: cannot run python3: {e}"
                );
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: the export validators are not installed: {stderr}"
            );
            eprintln!("SKIPPED reference_tools_accept_navigator_and_stix: {stderr}");
            return;
        }
        assert!(
            out.status.success(),
            "validation failed:\n{stdout}\n{stderr}"
        );
        assert_eq!(stdout.matches("STIX ok").count(), 2, "{stdout}");
        assert_eq!(stdout.matches("Navigator ok").count(), 2, "{stdout}");
    }

    /// PyMISP loads the MISP events (one document, and two with random ids), keeping every tag
    /// and attribute (scripts/validate_exports.py --misp). PyMISP is required under CI;
    /// elsewhere its absence is a loudly reported skip.
    #[test]
    fn pymisp_loads_the_misp_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        with_lookup(|l| {
            let one = export::to_misp_json(&[extraction()], l, &misp_opts());
            let two = export::to_misp_json(
                &[extraction(), second_extraction()],
                l,
                &MispOptions::default(),
            );
            for (name, content) in [("misp-one.json", one), ("misp-two.json", two)] {
                let path = dir.path().join(name);
                std::fs::write(&path, content.unwrap()).unwrap();
                args.push("--misp".into());
                args.push(path.into());
            }
        });
        let script = repo_root().join("scripts/validate_exports.py");
        let out = match Command::new("python3").arg(&script).args(&args).output() {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI: cannot run python3: {e}"
                );
                eprintln!("SKIPPED pymisp_loads_the_misp_events: cannot run python3: {e}");
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: pymisp is not installed: {stderr}"
            );
            eprintln!("SKIPPED pymisp_loads_the_misp_events: {stderr}");
            return;
        }
        assert!(
            out.status.success(),
            "validation failed:\n{stdout}\n{stderr}"
        );
        assert_eq!(stdout.matches("MISP ok").count(), 2, "{stdout}");
    }

    /// Every active technique of ATT&CK 18.1, read straight from the shared STIX bundle (the
    /// catalog loader is tested elsewhere; this keeps the test about exports).
    fn real_catalog() -> Vec<Technique> {
        let path = shared_dir().join("data/attack/enterprise-attack-18.1.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the shared data is needed (set TTPMAP_SHARED)",
                path.display()
            )
        });
        let bundle: serde_json::Value = serde_json::from_str(&text).expect("ATT&CK bundle is JSON");
        let str_of = |o: &serde_json::Value, k: &str| o[k].as_str().unwrap_or_default().to_string();
        bundle["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .filter(|o| o["type"] == "attack-pattern")
            .filter(|o| o["revoked"] != true && o["x_mitre_deprecated"] != true)
            .map(|o| {
                let refs: Vec<ExternalReference> =
                    serde_json::from_value(o["external_references"].clone()).expect("references");
                let id = tid(refs[0].external_id.as_deref().expect("ATT&CK id"));
                let tactics = o["kill_chain_phases"]
                    .as_array()
                    .map(|a| a.iter().map(|k| str_of(k, "phase_name")).collect())
                    .unwrap_or_default();
                Technique {
                    stix_id: str_of(o, "id"),
                    name: str_of(o, "name"),
                    description: String::new(),
                    tactics,
                    platforms: Vec::new(),
                    parent: id.is_subtechnique().then(|| id.parent()),
                    subtechniques: Vec::new(),
                    revoked: false,
                    deprecated: false,
                    revoked_by: None,
                    url: refs[0].url.clone(),
                    external_references: refs,
                    created: str_of(o, "created"),
                    modified: str_of(o, "modified"),
                    id,
                }
            })
            .collect()
    }

    /// All 691 active ATT&CK 18.1 techniques in one extraction: the real external references
    /// and multi-tactic techniques must pass the same validators.
    #[test]
    fn reference_tools_accept_the_whole_attack_catalog() {
        let catalog = real_catalog();
        assert_eq!(catalog.len(), 691, "ATT&CK 18.1 has 691 active techniques");
        let mut x = extraction();
        x.techniques = catalog
            .iter()
            .enumerate()
            .map(|(i, t)| DocumentTechnique {
                technique: t.id.clone(),
                name: t.name.clone(),
                tactics: t.tactics.clone(),
                score: (i % 100) as f32 / 100.0,
                sentences: vec![0],
            })
            .collect();
        let lookup = |id: &TechniqueId| catalog.iter().find(|t| &t.id == id);
        let dir = tempfile::tempdir().unwrap();
        let stix = dir.path().join("catalog.stix.json");
        let layer = dir.path().join("catalog.layer.json");
        let bundle = export::to_stix_json(std::slice::from_ref(&x), &lookup, &stix_opts()).unwrap();
        std::fs::write(&stix, bundle).unwrap();
        let nav = export::to_navigator_json(&[x], &lookup, &NavigatorOptions::default()).unwrap();
        std::fs::write(&layer, nav).unwrap();
        let script = repo_root().join("scripts/validate_exports.py");
        let out = match Command::new("python3")
            .arg(&script)
            .arg("--stix")
            .arg(&stix)
            .arg("--navigator")
            .arg(&layer)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI: cannot run python3: {e}"
                );
                eprintln!("SKIPPED reference_tools_accept_the_whole_attack_catalog: cannot run python3: {e}");
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI: the export validators are not installed: {stderr}"
            );
            eprintln!("SKIPPED reference_tools_accept_the_whole_attack_catalog: {stderr}");
            return;
        }
        assert!(
            out.status.success(),
            "validation failed:\n{stdout}\n{stderr}"
        );
    }
}
