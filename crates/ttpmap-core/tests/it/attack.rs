//! Integration tests of the ATT&CK catalog on the real Enterprise ATT&CK v18.1 bundle
//! (`../shared/data/attack/enterprise-attack-18.1.json`, read at run time, never committed).
//!
//! Expected counts were cross-checked in Python (json.load of the same file):
//! - active attack-patterns: not `revoked` and not `x_mitre_deprecated` -> 691
//!   (475 with `x_mitre_is_subtechnique`), 835 attack-patterns in all;
//! - procedure examples: `relationship` objects with `relationship_type == "uses"`, not revoked
//!   or deprecated, whose `target_ref` is an active attack-pattern, whose `source_ref` is an
//!   intrusion-set / malware / tool / campaign, with a non-empty `description` -> 16,017
//!   (malware 9,836, intrusion-set 4,362, campaign 1,019, tool 800).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use crate::shared_dir;
use ttpmap_core::attack::{Catalog, EntityKind, Resolution};
use ttpmap_core::TechniqueId;

fn bundle_path() -> PathBuf {
    let p = shared_dir().join("data/attack/enterprise-attack-18.1.json");
    assert!(
        p.is_file(),
        "missing {}: set TTPMAP_SHARED to the shared data folder (tests never download)",
        p.display()
    );
    p
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let path = bundle_path();
        let start = Instant::now();
        let c = Catalog::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("parsed {} in {:?}", path.display(), start.elapsed());
        c
    })
}

fn tid(s: &str) -> TechniqueId {
    TechniqueId::parse(s).unwrap()
}

#[test]
fn counts_match_v18_1() {
    let c = catalog();
    assert_eq!(c.version(), "18.1");
    assert_eq!(c.fingerprint().len(), 64);
    assert_eq!(c.techniques().len(), 835);
    assert_eq!(c.techniques().iter().filter(|t| t.revoked).count(), 132);
    assert_eq!(c.techniques().iter().filter(|t| t.deprecated).count(), 12);
    let active: Vec<_> = c.active_techniques().collect();
    assert_eq!(active.len(), 691);
    assert_eq!(
        active.iter().filter(|t| t.id.is_subtechnique()).count(),
        475
    );
    assert_eq!(
        active.iter().filter(|t| !t.id.is_subtechnique()).count(),
        216
    );
    assert_eq!(c.tactics().len(), 14);
    assert_eq!(c.groups().len(), 187);
    let malware = c
        .software()
        .iter()
        .filter(|e| e.kind == EntityKind::Malware)
        .count();
    let tools = c
        .software()
        .iter()
        .filter(|e| e.kind == EntityKind::Tool)
        .count();
    assert_eq!((malware, tools), (696, 91));
    assert_eq!(c.campaigns().len(), 52);
    assert_eq!(c.procedures().len(), 16_017);
    let by_kind = |k| c.procedures().iter().filter(|p| p.source_kind == k).count();
    assert_eq!(by_kind(EntityKind::Malware), 9_836);
    assert_eq!(by_kind(EntityKind::Group), 4_362);
    assert_eq!(by_kind(EntityKind::Campaign), 1_019);
    assert_eq!(by_kind(EntityKind::Tool), 800);
}

#[test]
fn techniques_and_tactics_are_complete() {
    let c = catalog();
    let ps = c.technique(&tid("T1059.001")).expect("T1059.001");
    assert_eq!(ps.name, "PowerShell");
    assert_eq!(ps.parent, Some(tid("T1059")));
    assert_eq!(ps.tactics, ["execution"]);
    assert!(ps.platforms.iter().any(|p| p == "Windows"));
    assert_eq!(
        ps.url.as_deref(),
        Some("https://attack.mitre.org/techniques/T1059/001")
    );
    assert_eq!(ps.external_references[0].source_name, "mitre-attack");
    assert!(!ps.description.contains("(Citation:") && !ps.description.contains("]("));
    let parent = c.technique(&tid("T1059")).unwrap();
    assert!(parent.subtechniques.contains(&tid("T1059.001")));
    assert!(parent.subtechniques.windows(2).all(|w| w[0] < w[1]));
    // Every active sub-technique has an active parent that lists it.
    for t in c.active_techniques().filter(|t| t.id.is_subtechnique()) {
        let p = t
            .parent
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no parent", t.id));
        assert_eq!(p, &t.id.parent());
        assert!(
            c.technique(p).unwrap().subtechniques.contains(&t.id),
            "{p} must list {}",
            t.id
        );
    }
    // Matrix order starts with Reconnaissance and ends with Impact.
    let first = &c.tactics()[0];
    assert_eq!(
        (first.id.as_str(), first.shortname.as_str()),
        ("TA0043", "reconnaissance")
    );
    assert_eq!(c.tactics()[13].shortname, "impact");
    assert_eq!(c.tactic("execution").unwrap().id, "TA0002");
    // Every kill-chain phase of an active technique is a known tactic.
    for t in c.active_techniques() {
        assert!(!t.tactics.is_empty(), "{} has no tactic", t.id);
        for s in &t.tactics {
            assert!(c.tactic(s).is_some(), "{}: unknown tactic {s}", t.id);
        }
    }
    let apt28 = c.groups().iter().find(|g| g.id == "G0007").unwrap();
    assert_eq!(apt28.name, "APT28");
    assert!(apt28.aliases.iter().any(|a| a == "Fancy Bear"));
    assert_eq!(c.entity_by_stix_id(&apt28.stix_id).unwrap().id, "G0007");
}

#[test]
fn old_ids_resolve_to_current_techniques() {
    let c = catalog();
    let remapped = |from: &str, to: &str| {
        assert_eq!(
            c.resolve(&tid(from)),
            Resolution::Remapped {
                from: tid(from),
                to: tid(to)
            },
            "{from}"
        );
    };
    remapped("T1086", "T1059.001");
    remapped("T1035", "T1569.002");
    remapped("T1088", "T1548.002");
    remapped("T1192", "T1566.002");
    // Chains of two revoked-by steps: T1150 -> T1547.011 -> T1647, T1073 -> T1574.002 -> T1574.001.
    remapped("T1150", "T1647");
    remapped("T1073", "T1574.001");
    assert_eq!(
        c.resolve(&tid("T1064")),
        Resolution::Deprecated(tid("T1064"))
    );
    assert_eq!(
        c.resolve(&tid("T1059.001")),
        Resolution::Current(tid("T1059.001"))
    );
    assert_eq!(c.resolve(&tid("T9999")), Resolution::Unknown(tid("T9999")));
    // Every revoked technique leads somewhere in v18.1: no cycles, no dangling targets.
    for t in c.techniques().iter().filter(|t| t.revoked) {
        let r = c.resolve(&t.id);
        assert!(
            r.current().is_some() || matches!(r, Resolution::Deprecated(_)),
            "{}: {r:?}",
            t.id
        );
    }
}

#[test]
fn procedure_examples() {
    let c = catalog();
    let ps: Vec<_> = c.procedures_for(&tid("T1059.001")).collect();
    assert!(
        ps.len() > 100,
        "PowerShell has many examples, got {}",
        ps.len()
    );
    for p in c.procedures() {
        assert!(c.technique(&p.technique).is_some_and(|t| t.is_active()));
        assert!(!p.description.is_empty());
        assert!(!p.description.contains("(Citation:"), "{}", p.description);
        assert!(!p.description.contains("](http"), "{}", p.description);
        assert!(!p.description.contains("<code>"), "{}", p.description);
    }
    let apt28 = c
        .procedures()
        .iter()
        .find(|p| p.source_id == "G0007")
        .unwrap();
    assert_eq!(apt28.source_name, "APT28");
    assert_eq!(apt28.source_kind, EntityKind::Group);
}

#[test]
fn cached_load_matches_parse() {
    let c = catalog();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let cold = Catalog::open_cached(&bundle_path(), Some(dir.path())).unwrap();
    let cold_time = start.elapsed();
    let start = Instant::now();
    let warm = Catalog::open_cached(&bundle_path(), Some(dir.path())).unwrap();
    let warm_time = start.elapsed();
    eprintln!("open_cached: cold {cold_time:?}, cached {warm_time:?}");
    assert_eq!(cold.fingerprint(), c.fingerprint());
    assert_eq!(warm.version(), "18.1");
    assert_eq!(warm.techniques(), c.techniques());
    assert_eq!(warm.procedures(), c.procedures());
    assert_eq!(warm.groups(), c.groups());
    assert_eq!(warm.software(), c.software());
    assert_eq!(warm.campaigns(), c.campaigns());
    assert_eq!(warm.tactics(), c.tactics());
}
