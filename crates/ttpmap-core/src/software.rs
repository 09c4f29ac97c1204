//! Software named in text: ATT&CK's tools and malware (names and aliases) and the techniques
//! their `uses` relationships document ("PsExec: S0029 uses T1021.002"); also technique names
//! and the technique ids a text cites ([`CitedIds`]), which [`CitingScorer`] gives any method as
//! evidence.
//!
//! A mention is evidence, never a verdict: Mimikatz uses a dozen techniques, so the default
//! pipeline only raises the scores of the techniques the model already sees, by an amount
//! tuned on validation data, and shows the mention in the evidence.
//!
//! Matching is by whole words (no letter or digit on either side). Every name matches as
//! written; a name of 5 or more characters also matches in any case ("mimikatz", "RCLONE")
//! unless it is an ordinary English word (`Expand`, `Royal`, `Page`: [`COMMON_WORDS`]), which
//! must then appear capitalised as ATT&CK writes it. Names under 3 characters (`at`) are not
//! matched. [`SoftwareIndex::technique_names`] matches technique names ("PowerShell",
//! "Scheduled Task") the same way.

use std::collections::{BTreeMap, BTreeSet};

use crate::attack::{Catalog, EntityKind};
use crate::pipeline::{DocumentRule, ScoreOptions, SentenceScorer};
use crate::types::{Evidence, Prediction, TechniqueId};

/// Software names that are also ordinary words: matched only as ATT&CK writes them.
pub const COMMON_WORDS: &[&str] = &[
    "agenda",
    "anchor",
    "apostle",
    "aurora",
    "avenger",
    "cannon",
    "carbon",
    "chaos",
    "covenant",
    "crimson",
    "denis",
    "disco",
    "embargo",
    "emissary",
    "empire",
    "expand",
    "explosive",
    "flame",
    "flamer",
    "gazer",
    "james",
    "kevin",
    "lucifer",
    "mango",
    "matryoshka",
    "meteor",
    "milan",
    "mosquito",
    "ninja",
    "octopus",
    "pandora",
    "prestige",
    "proton",
    "raindrop",
    "reaver",
    "responder",
    "rover",
    "royal",
    "ruler",
    "samurai",
    "scorpion",
    "shark",
    "snake",
    "soldier",
    "solar",
    "spark",
    "trinity",
    "wiper",
    "sliver",
    "mythic",
    "havoc",
    "comet",
    "donut",
    "epic",
    "play",
    "page",
    "ping",
];

/// A technique id written in a text ("T1059.001", or a revoked "T1086"), with the active
/// technique it stands for in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Citation {
    /// The id as written.
    pub written: TechniqueId,
    /// The active technique it resolves to ([`Catalog::resolve`]; the same id unless revoked).
    pub current: TechniqueId,
}

/// Finds technique ids a text cites ("Execution | T1059.001 PowerShell", an ATT&CK mapping
/// table of a report): the strongest evidence a report gives, written by its author. Ids are
/// matched as whole words (`T` and four digits, optionally `.` and three); an id the catalog
/// does not know, or one deprecated or revoked without a replacement, is not a citation.
#[derive(Clone, Debug, Default)]
pub struct CitedIds {
    current: BTreeMap<TechniqueId, TechniqueId>,
}

static ID_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\bT\d{4}(?:\.\d{3})?\b").expect("static regex is valid")
});

impl CitedIds {
    /// Every id of `catalog` that resolves to an active technique.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let current = catalog
            .techniques()
            .iter()
            .filter_map(|t| {
                let r = catalog.resolve(&t.id);
                r.current().map(|c| (t.id.clone(), c.clone()))
            })
            .collect();
        Self { current }
    }

    /// Adds one id and the active technique it stands for (tests and hand-made indexes).
    pub fn add(&mut self, written: TechniqueId, current: TechniqueId) {
        self.current.insert(written, current);
    }

    /// The citations in `text`, in order, each written id once.
    pub fn find(&self, text: &str) -> Vec<Citation> {
        let mut out: Vec<Citation> = Vec::new();
        for m in ID_RE.find_iter(text) {
            let Ok(id) = TechniqueId::parse(m.as_str()) else {
                continue;
            };
            if out.iter().any(|c| c.written == id) {
                continue;
            }
            if let Some(current) = self.current.get(&id) {
                out.push(Citation {
                    written: id,
                    current: current.clone(),
                });
            }
        }
        out
    }
}

/// One tool or malware of the catalog with the techniques it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Software {
    /// ATT&CK id, e.g. `S0029`.
    pub id: String,
    pub name: String,
    /// Active techniques its `uses` relationships name.
    pub uses: BTreeSet<TechniqueId>,
}

/// A name to look for and how.
#[derive(Clone, Debug)]
struct Pattern {
    text: String,
    lower: String,
    any_case: bool,
    software: usize,
}

/// Finds tool and malware names in sentences (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SoftwareIndex {
    software: Vec<Software>,
    patterns: Vec<Pattern>,
}

impl SoftwareIndex {
    /// Every active tool and malware of `catalog` that uses at least one active technique.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let mut uses: BTreeMap<&str, BTreeSet<TechniqueId>> = BTreeMap::new();
        for p in catalog.procedures() {
            if matches!(p.source_kind, EntityKind::Malware | EntityKind::Tool)
                && catalog
                    .technique(&p.technique)
                    .is_some_and(|t| t.is_active())
            {
                uses.entry(p.source_id.as_str())
                    .or_default()
                    .insert(p.technique.clone());
            }
        }
        let mut index = SoftwareIndex::default();
        for e in catalog.software().iter().filter(|e| e.is_active()) {
            let Some(u) = uses.get(e.id.as_str()) else {
                continue;
            };
            let names: BTreeSet<&str> = std::iter::once(e.name.as_str())
                .chain(e.aliases.iter().map(String::as_str))
                .map(str::trim)
                .collect();
            index.add(&e.id, &e.name, names.into_iter(), u.clone());
        }
        index
    }

    /// Technique names as mentions: "PowerShell" or "scheduled task" in a sentence names
    /// T1059.001 or T1053.005. Each entry's `id` is the technique id and its one `uses` the
    /// technique; the same matching rules as software names apply.
    pub fn technique_names(catalog: &Catalog) -> Self {
        let mut index = SoftwareIndex::default();
        for t in catalog.active_techniques() {
            index.add(
                t.id.as_str(),
                &t.name,
                std::iter::once(t.name.as_str()),
                BTreeSet::from([t.id.clone()]),
            );
        }
        index
    }

    /// Adds one software with its names (tests and callers with their own lists).
    pub fn add<'a>(
        &mut self,
        id: &str,
        name: &str,
        names: impl Iterator<Item = &'a str>,
        uses: BTreeSet<TechniqueId>,
    ) {
        let software = self.software.len();
        self.software.push(Software {
            id: id.to_string(),
            name: name.to_string(),
            uses,
        });
        for n in names {
            if n.chars().count() < 3 {
                continue;
            }
            let lower = n.to_lowercase();
            let any_case = n.chars().count() >= 5 && !COMMON_WORDS.contains(&lower.as_str());
            self.patterns.push(Pattern {
                text: n.to_string(),
                lower,
                any_case,
                software,
            });
        }
    }

    /// Number of software entries.
    pub fn len(&self) -> usize {
        self.software.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.software.is_empty()
    }

    /// The software named in `text`, each once, in id order.
    pub fn mentions(&self, text: &str) -> Vec<&Software> {
        let lower = text.to_lowercase();
        // Lower-casing may change byte lengths (rare scripts); then only exact matches count.
        let same_len = lower.len() == text.len();
        let mut found: BTreeSet<usize> = BTreeSet::new();
        for p in &self.patterns {
            if found.contains(&p.software) {
                continue;
            }
            let hit = if p.any_case && same_len {
                whole_word(&lower, &p.lower)
            } else {
                whole_word(text, &p.text)
            };
            if hit {
                found.insert(p.software);
            }
        }
        let mut out: Vec<&Software> = found.into_iter().map(|i| &self.software[i]).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Whether `needle` occurs in `hay` with no letter or digit right before or after it.
fn whole_word(hay: &str, needle: &str) -> bool {
    whole_word_matches(hay, needle).next().is_some()
}

/// The byte offsets where `needle` occurs in `hay` with no letter or digit right before or
/// after it, left to right, not overlapping.
pub fn whole_word_matches<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        if needle.is_empty() {
            return None;
        }
        while let Some(pos) = hay[from..].find(needle) {
            let start = from + pos;
            let end = start + needle.len();
            let before = hay[..start].chars().next_back();
            let after = hay[end..].chars().next();
            let boundary = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
            if boundary(before) && boundary(after) {
                from = end;
                return Some(start);
            }
            from = start + needle.chars().next().map_or(1, char::len_utf8);
        }
        None
    })
}

/// The confidence a technique whose id a sentence cites gets at least, whatever the method: the
/// report's author names it ("Execution | T1059.001 PowerShell"), so it is kept at any threshold
/// a method ships with. Not tuned on data: a constant (on the default model's validation reports
/// it changed per-document F1 by -0.02 points, docs/results.md).
pub const CITED_CONFIDENCE: f32 = 0.95;

impl Citation {
    /// The evidence line: "cites T1027", or "cites T1086 (revoked; now T1059.001)".
    pub fn reason(&self) -> String {
        if self.written == self.current {
            format!("cites {}", self.written)
        } else {
            format!("cites {} (revoked; now {})", self.written, self.current)
        }
    }
}

/// Any method with the technique ids a sentence cites as evidence: each cited technique (or,
/// under a label space that lacks it, its parent when the space has that) is raised to at least
/// [`CITED_CONFIDENCE`], or added with it, and the citation is its first reason. The method's
/// own predictions are otherwise untouched. Methods that read citations themselves (the default
/// model, which raises them before calibration's implied parents) are not wrapped.
pub struct CitingScorer {
    inner: Box<dyn SentenceScorer>,
    ids: CitedIds,
    with_evidence: bool,
    label_space: Option<BTreeSet<TechniqueId>>,
}

impl CitingScorer {
    /// `inner` reading the citations `ids` finds.
    pub fn new(inner: Box<dyn SentenceScorer>, ids: CitedIds) -> Self {
        Self {
            inner,
            ids,
            with_evidence: true,
            label_space: None,
        }
    }

    /// The technique a citation raises under the label space, if any.
    fn target(&self, c: &Citation) -> Option<TechniqueId> {
        crate::pipeline::in_label_space(&c.current, self.label_space.as_ref())
    }
}

impl SentenceScorer for CitingScorer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn score(&self, sentences: &[&str]) -> crate::Result<Vec<Vec<Prediction>>> {
        let mut out = self.inner.score(sentences)?;
        for (text, preds) in sentences.iter().zip(out.iter_mut()) {
            for c in self.ids.find(text) {
                let Some(target) = self.target(&c) else {
                    continue;
                };
                let reason = || {
                    if self.with_evidence {
                        vec![c.reason()]
                    } else {
                        Vec::new()
                    }
                };
                match preds.iter_mut().find(|p| p.technique == target) {
                    Some(p) => {
                        p.score = p.score.max(CITED_CONFIDENCE);
                        p.evidence.reasons.splice(0..0, reason());
                    }
                    None => preds.push(Prediction {
                        technique: target,
                        score: CITED_CONFIDENCE,
                        raw_score: CITED_CONFIDENCE,
                        evidence: Evidence {
                            method: self.inner.name().to_string(),
                            reasons: reason(),
                        },
                    }),
                }
            }
        }
        Ok(out)
    }

    fn default_threshold(&self) -> f32 {
        self.inner.default_threshold()
    }

    fn document_rule(&self) -> DocumentRule {
        self.inner.document_rule()
    }

    fn reads_whole(&self, passage: &str) -> bool {
        self.inner.reads_whole(passage)
    }

    fn configure(&mut self, options: &ScoreOptions) {
        self.with_evidence = options.with_evidence;
        self.label_space = options.label_space.clone();
        self.inner.configure(options);
    }

    fn reads_citations(&self) -> bool {
        true
    }

    fn parts(&self) -> Vec<&dyn SentenceScorer> {
        vec![self.inner.as_ref()]
    }

    fn parts_mut(&mut self) -> Vec<&mut dyn SentenceScorer> {
        vec![self.inner.as_mut()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_ids_are_whole_words_known_to_the_catalog_and_follow_revocations() {
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        let mut ids = CitedIds::default();
        ids.add(t("T1059.001"), t("T1059.001"));
        ids.add(t("T1027"), t("T1027"));
        ids.add(t("T1086"), t("T1059.001"));
        let found = ids.find(
            "Execution | T1059.001 PowerShell; T1027, T1086 (old), T1059.001 again, T9999, \
             XT1027, T10270, T1027.9",
        );
        let pairs: Vec<(String, String)> = found
            .iter()
            .map(|c| (c.written.to_string(), c.current.to_string()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("T1059.001".to_string(), "T1059.001".to_string()),
                ("T1027".into(), "T1027".into()),
                ("T1086".into(), "T1059.001".into()),
            ]
        );
        assert!(ids.find("").is_empty());
        assert!(ids.find("t1059.001 in lower case").is_empty());
    }

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    /// Proposes T1059 at 0.3 for every sentence.
    struct Fixed;

    impl SentenceScorer for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }

        fn score(&self, sentences: &[&str]) -> crate::Result<Vec<Vec<Prediction>>> {
            Ok(sentences
                .iter()
                .map(|_| {
                    vec![Prediction {
                        technique: tid("T1059"),
                        score: 0.3,
                        raw_score: 7.0,
                        evidence: Evidence {
                            method: "fixed".into(),
                            reasons: vec!["terms".into()],
                        },
                    }]
                })
                .collect())
        }

        fn default_threshold(&self) -> f32 {
            0.42
        }
    }

    #[test]
    fn any_method_reads_the_ids_a_sentence_cites() {
        let mut ids = CitedIds::default();
        ids.add(tid("T1059"), tid("T1059"));
        ids.add(tid("T1218.011"), tid("T1218.011"));
        ids.add(tid("T1086"), tid("T1059.001"));
        let mut scorer = CitingScorer::new(Box::new(Fixed), ids);
        assert!(scorer.reads_citations() && !Fixed.reads_citations());
        assert_eq!((scorer.name(), scorer.default_threshold()), ("fixed", 0.42));
        let out = scorer
            .score(&[
                "No ids here.",
                "Execution | T1059 and T1218.011.",
                "They used T1086.",
            ])
            .unwrap();
        // Nothing cited: the method's own predictions as they were.
        assert_eq!(out[0], Fixed.score(&["x"]).unwrap()[0]);
        // A cited technique the method proposed is raised and says why first; one it did not
        // propose is added with the citation as its reason.
        let found: Vec<(String, f32, Vec<String>)> = out[1]
            .iter()
            .map(|p| (p.technique.to_string(), p.score, p.evidence.reasons.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "T1059".to_string(),
                    CITED_CONFIDENCE,
                    vec!["cites T1059".to_string(), "terms".into()]
                ),
                (
                    "T1218.011".to_string(),
                    CITED_CONFIDENCE,
                    vec!["cites T1218.011".to_string()]
                ),
            ]
        );
        assert_eq!(out[2][1].technique, tid("T1059.001"));
        assert_eq!(
            out[2][1].evidence.reasons,
            ["cites T1086 (revoked; now T1059.001)"]
        );
        assert_eq!(out[2][1].evidence.method, "fixed");
        // Under a label space a citation falls back to its parent, or is dropped.
        scorer.configure(&ScoreOptions {
            top_k: 5,
            with_evidence: false,
            label_space: Some([tid("T1218"), tid("T1059")].into()),
        });
        let out = scorer
            .score(&["Execution | T1059 and T1218.011.", "They used T1086."])
            .unwrap();
        let techniques = |row: &[Prediction]| -> Vec<String> {
            row.iter().map(|p| p.technique.to_string()).collect()
        };
        assert_eq!(techniques(&out[0]), ["T1059", "T1218"]);
        assert!(
            out[0][1].evidence.reasons.is_empty(),
            "evidence was turned off"
        );
        assert_eq!(techniques(&out[1]), ["T1059"]);
        assert_eq!(out[1][0].score, CITED_CONFIDENCE);
    }

    fn index() -> SoftwareIndex {
        let mut i = SoftwareIndex::default();
        i.add(
            "S0029",
            "PsExec",
            ["PsExec"].into_iter(),
            [tid("T1021.002"), tid("T1569.002")].into(),
        );
        i.add(
            "S0361",
            "Expand",
            ["Expand"].into_iter(),
            [tid("T1140")].into(),
        );
        i.add("S0110", "at", ["at"].into_iter(), [tid("T1053.002")].into());
        i.add(
            "S1040",
            "Rclone",
            ["Rclone"].into_iter(),
            [tid("T1567.002")].into(),
        );
        i.add(
            "S0154",
            "Cobalt Strike",
            ["Cobalt Strike"].into_iter(),
            [tid("T1071.001")].into(),
        );
        i
    }

    fn ids(i: &SoftwareIndex, text: &str) -> Vec<String> {
        i.mentions(text).into_iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn whole_word_matches_are_every_bounded_occurrence_left_to_right() {
        let m = |h, n| whole_word_matches(h, n).collect::<Vec<_>>();
        assert_eq!(m("APT5 and APT55, APT5's APT5", "APT5"), [0, 16, 23]);
        assert_eq!(m("xAPT5 APT5x", "APT5"), Vec::<usize>::new());
        assert_eq!(m("aaa a", "a"), [4]);
        assert_eq!(m("anything", ""), Vec::<usize>::new());
        assert!(whole_word("use PsExec.", "PsExec") && !whole_word("PsExecs", "PsExec"));
    }

    #[test]
    fn names_match_as_whole_words_in_any_case_unless_common_or_short() {
        let i = index();
        assert_eq!(
            ids(&i, "They used psexec.exe and rclone to copy."),
            ["S0029", "S1040"]
        );
        assert_eq!(
            ids(&i, "A Cobalt Strike beacon; Expand unpacked it."),
            ["S0154", "S0361"]
        );
        // Ordinary words and tiny names do not count in lower case or inside words.
        assert!(ids(&i, "expand the scope at noon; PsExecutor; xrclone").is_empty());
        assert!(ids(&i, "").is_empty());
        let s = &i.mentions("PsExec")[0];
        assert!(s.uses.contains(&tid("T1021.002")));
    }

    #[test]
    fn whole_word_scans_every_occurrence_and_survives_unicode() {
        assert!(whole_word("xabc abc", "abc"));
        assert!(!whole_word("xabc abcd", "abc"));
        assert!(whole_word("é abc é", "abc"));
        assert!(!whole_word("ééabc", "abc"));
    }
}
