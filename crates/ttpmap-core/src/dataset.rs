//! Labelled datasets: TRAM2 and AnnoCTR sentence datasets, the raw AnnoCTR corpus, MITRE CTID
//! adversary emulation plans; technique-id remapping; seeded, leakage-free splits; statistics.
//!
//! Invariants:
//! - Sentence labels are technique ids only; every other id met in a label column (software
//!   `S....`, groups `G....`, tactics `TA....`, anything else) is counted in
//!   [`Dataset::other_labels`], never silently dropped. Labels of a sentence are unique, in
//!   first-seen order.
//! - Column-format rows keep their numeric key order (`"0"`, `"1"`, ..., `"10"`), and a
//!   document's sentences keep row order; documents are in order of first appearance.
//! - Splits use `ChaCha8Rng::seed_from_u64(seed)`: the same input and seed give the same split
//!   on every platform. No sentence text occurs on both sides of a split this module makes
//!   ([`split_by_report`] drops test sentences whose exact text is in train and reports how
//!   many; [`validation_split`] and [`split_queries`] assign identical texts as one unit).
//! - Loaders never panic on input: a malformed file is an [`Error`] naming the file and the
//!   problem.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_norway::Value as Yaml;

use crate::error::{Error, Result};
use crate::types::TechniqueId;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// One labelled sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledSentence {
    pub text: String,
    pub labels: Vec<TechniqueId>,
    /// Id of the document (report) the sentence belongs to.
    pub doc: String,
}

/// One report: its sentences in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledDocument {
    pub id: String,
    pub sentences: Vec<LabeledSentence>,
}

/// A named split of a labelled sentence dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// `tram2`, `annoctr`, `annoctr-raw`.
    pub name: String,
    /// `train`, `test`, `dev`, `ext`, or a derived split (`train:fit`, `train:validation`).
    pub split: String,
    pub documents: Vec<LabeledDocument>,
    /// Non-technique ids found in the labels and not kept, with their counts.
    pub other_labels: BTreeMap<String, usize>,
}

/// Summary numbers of a [`Dataset`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub documents: usize,
    pub sentences: usize,
    /// Sentences with at least one technique label.
    pub labelled_sentences: usize,
    /// Distinct technique ids.
    pub techniques: usize,
    /// Sum over sentences of their number of labels.
    pub total_positives: usize,
    /// Mean and median number of positive sentences per technique (0 when no technique).
    pub positives_per_technique_mean: f64,
    pub positives_per_technique_median: f64,
    /// Techniques with fewer than 10 positive sentences.
    pub under_10: usize,
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} documents, {} sentences ({} labelled), {} techniques, {} positives \
             (per technique: mean {:.1}, median {:.1}; {} under 10)",
            self.documents,
            self.sentences,
            self.labelled_sentences,
            self.techniques,
            self.total_positives,
            self.positives_per_technique_mean,
            self.positives_per_technique_median,
            self.under_10
        )
    }
}

/// What [`Dataset::remap`] / [`remap_steps`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemapReport {
    /// Old id -> new id, for ids the resolver changed.
    pub remapped: BTreeMap<TechniqueId, TechniqueId>,
    /// Ids the resolver did not know (dropped), with the number of labels / steps dropped.
    pub unknown: BTreeMap<String, usize>,
}

impl Dataset {
    /// All sentences in document order.
    pub fn sentences(&self) -> impl Iterator<Item = &LabeledSentence> {
        self.documents.iter().flat_map(|d| d.sentences.iter())
    }

    /// Distinct technique ids of the labels.
    pub fn technique_ids(&self) -> BTreeSet<TechniqueId> {
        self.sentences()
            .flat_map(|s| s.labels.iter().cloned())
            .collect()
    }

    /// Summary numbers.
    pub fn stats(&self) -> DatasetStats {
        let mut per: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
        let (mut sentences, mut labelled, mut total) = (0, 0, 0);
        for s in self.sentences() {
            sentences += 1;
            if !s.labels.is_empty() {
                labelled += 1;
            }
            total += s.labels.len();
            for l in &s.labels {
                *per.entry(l).or_default() += 1;
            }
        }
        let mut counts: Vec<usize> = per.values().copied().collect();
        counts.sort_unstable();
        let (mean, median) = if counts.is_empty() {
            (0.0, 0.0)
        } else {
            let n = counts.len();
            let mean = counts.iter().sum::<usize>() as f64 / n as f64;
            let median = if n % 2 == 1 {
                counts[n / 2] as f64
            } else {
                (counts[n / 2 - 1] + counts[n / 2]) as f64 / 2.0
            };
            (mean, median)
        };
        DatasetStats {
            documents: self.documents.len(),
            sentences,
            labelled_sentences: labelled,
            techniques: counts.len(),
            total_positives: total,
            positives_per_technique_mean: mean,
            positives_per_technique_median: median,
            under_10: counts.iter().filter(|&&c| c < 10).count(),
        }
    }

    /// Maps every label through `resolve` (the lead passes the catalog's revoked-by
    /// resolution): `Some(new)` replaces the id, `None` drops the label and counts it as unknown.
    /// Labels stay unique per sentence.
    pub fn remap(&mut self, resolve: impl Fn(&TechniqueId) -> Option<TechniqueId>) -> RemapReport {
        let mut report = RemapReport::default();
        for doc in &mut self.documents {
            for s in &mut doc.sentences {
                let mut out: Vec<TechniqueId> = Vec::with_capacity(s.labels.len());
                for l in &s.labels {
                    match resolve(l) {
                        Some(new) => {
                            if &new != l {
                                report.remapped.insert(l.clone(), new.clone());
                            }
                            if !out.contains(&new) {
                                out.push(new);
                            }
                        }
                        None => *report.unknown.entry(l.to_string()).or_default() += 1,
                    }
                }
                s.labels = out;
            }
        }
        report
    }
}

/// Maps each step's technique through `resolve`; steps whose technique is unknown are removed
/// (they cannot be evaluated) and counted in the report.
pub fn remap_steps(
    steps: &mut Vec<EmulationStep>,
    resolve: impl Fn(&TechniqueId) -> Option<TechniqueId>,
) -> RemapReport {
    let mut report = RemapReport::default();
    steps.retain_mut(|s| match resolve(&s.technique) {
        Some(new) => {
            if new != s.technique {
                report.remapped.insert(s.technique.clone(), new.clone());
                s.technique = new;
            }
            true
        }
        None => {
            *report.unknown.entry(s.technique.to_string()).or_default() += 1;
            false
        }
    });
    report
}

// ---------------------------------------------------------------------------------------------
// Column-format loaders (TRAM2, AnnoCTR sentence split)
// ---------------------------------------------------------------------------------------------

/// Loads TRAM2 in column format (`sentence`, `labels`, `doc_title`). The split name is the
/// file stem (`train`, `test`).
pub fn load_tram2(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    tram2_from_str(&read_to_string(path)?, path)
}

/// [`load_tram2`] on text held in memory; `source` names it in errors and gives the split name
/// (its file stem).
pub fn tram2_from_str(text: &str, source: &Path) -> Result<Dataset> {
    columns_from_str(source, text, "tram2", "doc_title")
}

/// Loads the AnnoCTR sentence split in column format (`sentence`, `labels`, `document`;
/// `entities` is ignored). Non-technique label ids are counted in `other_labels`.
pub fn load_annoctr(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    annoctr_from_str(&read_to_string(path)?, path)
}

/// [`load_annoctr`] on text held in memory; `source` names it in errors and gives the split
/// name (its file stem).
pub fn annoctr_from_str(text: &str, source: &Path) -> Result<Dataset> {
    columns_from_str(source, text, "annoctr", "document")
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// One column: its values in numeric key order; checks keys are exactly 0..n.
fn column<'a>(
    path: &Path,
    root: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Vec<&'a Value>> {
    let col = root
        .get(name)
        .ok_or_else(|| Error::invalid(path, format!("missing column {name:?}")))?
        .as_object()
        .ok_or_else(|| {
            Error::invalid(
                path,
                format!("column {name:?} is not an object of \"row\": value"),
            )
        })?;
    let mut rows: Vec<(usize, &Value)> = Vec::with_capacity(col.len());
    for (k, v) in col {
        let i: usize = k.parse().map_err(|_| {
            Error::invalid(
                path,
                format!("column {name:?}: row key {k:?} is not a number"),
            )
        })?;
        rows.push((i, v));
    }
    rows.sort_by_key(|r| r.0);
    for (expect, (i, _)) in rows.iter().enumerate() {
        if *i != expect {
            return Err(Error::invalid(
                path,
                format!(
                    "column {name:?}: row keys are not 0..{} (row {expect} missing)",
                    rows.len()
                ),
            ));
        }
    }
    Ok(rows.into_iter().map(|r| r.1).collect())
}

/// Column JSON: serde_json keeps its recursion limit (128 levels), so deeply nested input is
/// a "recursion limit exceeded" error naming the file, not a stack overflow.
fn columns_from_str(path: &Path, text: &str, name: &str, doc_col: &str) -> Result<Dataset> {
    let root: Value = serde_json::from_str(text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    let root = root.as_object().ok_or_else(|| {
        Error::invalid(
            path,
            "expected a JSON object of columns {\"sentence\": {...}, ...}",
        )
    })?;
    let sentences = column(path, root, "sentence")?;
    let labels = column(path, root, "labels")?;
    let docs = column(path, root, doc_col)?;
    if sentences.len() != labels.len() || sentences.len() != docs.len() {
        return Err(Error::invalid(
            path,
            format!(
                "columns have different lengths: sentence {}, labels {}, {doc_col} {}",
                sentences.len(),
                labels.len(),
                docs.len()
            ),
        ));
    }
    let mut other = BTreeMap::new();
    let mut documents: Vec<LabeledDocument> = Vec::new();
    let mut doc_index: HashMap<String, usize> = HashMap::new();
    for (row, ((s, l), d)) in sentences.iter().zip(&labels).zip(&docs).enumerate() {
        let s = s.as_str().ok_or_else(|| {
            Error::invalid(path, format!("row {row}: \"sentence\" is not a string"))
        })?;
        let d = d.as_str().ok_or_else(|| {
            Error::invalid(path, format!("row {row}: {doc_col:?} is not a string"))
        })?;
        let l = l.as_array().ok_or_else(|| {
            Error::invalid(
                path,
                format!("row {row}: \"labels\" is not a list of strings"),
            )
        })?;
        let mut raw = Vec::with_capacity(l.len());
        for v in l {
            raw.push(v.as_str().ok_or_else(|| {
                Error::invalid(path, format!("row {row}: label {v} is not a string"))
            })?);
        }
        let labels = technique_labels(raw, &mut other);
        let di = *doc_index.entry(d.to_string()).or_insert_with(|| {
            documents.push(LabeledDocument {
                id: d.to_string(),
                sentences: Vec::new(),
            });
            documents.len() - 1
        });
        documents[di].sentences.push(LabeledSentence {
            text: s.to_string(),
            labels,
            doc: d.to_string(),
        });
    }
    let split = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    Ok(Dataset {
        name: name.to_string(),
        split,
        documents,
        other_labels: other,
    })
}

/// Keeps technique ids (unique, in order), counts the others.
fn technique_labels<'a>(
    raw: impl IntoIterator<Item = &'a str>,
    other: &mut BTreeMap<String, usize>,
) -> Vec<TechniqueId> {
    let mut out: Vec<TechniqueId> = Vec::new();
    // A set beside the list: a row with many labels stays linear.
    let mut seen: HashSet<TechniqueId> = HashSet::new();
    for l in raw {
        match TechniqueId::parse(l) {
            Ok(t) => {
                if seen.insert(t.clone()) {
                    out.push(t);
                }
            }
            Err(_) => *other.entry(l.trim().to_string()).or_default() += 1,
        }
    }
    out
}

/// Writes documents in the TRAM2 column format that [`load_tram2`] reads (and so
/// `ttpmap train classifier --dataset FILE`): `{"sentence": {"0": text, ...}, "labels": {"0":
/// ["T1059.001"], ...}, "doc_title": {"0": doc id, ...}}`, rows in document then sentence order.
/// A sentence without labels is a negative example.
pub fn to_tram2_columns(documents: &[LabeledDocument]) -> Value {
    let mut sentence = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut doc_title = serde_json::Map::new();
    let rows = documents.iter().flat_map(|d| d.sentences.iter());
    for (i, s) in rows.enumerate() {
        let k = i.to_string();
        sentence.insert(k.clone(), Value::String(s.text.clone()));
        labels.insert(
            k.clone(),
            Value::Array(
                s.labels
                    .iter()
                    .map(|l| Value::String(l.to_string()))
                    .collect(),
            ),
        );
        doc_title.insert(k, Value::String(s.doc.clone()));
    }
    serde_json::json!({ "sentence": sentence, "labels": labels, "doc_title": doc_title })
}

/// One line of the sentence JSONL format: `{"doc_id": string, "sentence": string, "labels":
/// [technique id]}` (what `ttpmap data export-reviews --format jsonl` writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceRecord {
    pub doc_id: String,
    pub sentence: String,
    pub labels: Vec<String>,
}

/// Loads the sentence JSONL format (one [`SentenceRecord`] per line; blank lines skipped).
/// Rows of one `doc_id` form a document, in file order. The split name is the file stem.
pub fn load_sentences_jsonl(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let text = read_to_string(path)?;
    let mut other = BTreeMap::new();
    let mut documents: Vec<LabeledDocument> = Vec::new();
    let mut doc_index: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: SentenceRecord = serde_json::from_str(line).map_err(|e| {
            Error::invalid(
                path,
                format!(
                    "line {}: expected {{\"doc_id\", \"sentence\", \"labels\"}}: {e}",
                    n + 1
                ),
            )
        })?;
        let labels = technique_labels(r.labels.iter().map(String::as_str), &mut other);
        let di = *doc_index.entry(r.doc_id.clone()).or_insert_with(|| {
            documents.push(LabeledDocument {
                id: r.doc_id.clone(),
                sentences: Vec::new(),
            });
            documents.len() - 1
        });
        documents[di].sentences.push(LabeledSentence {
            text: r.sentence,
            labels,
            doc: r.doc_id,
        });
    }
    if documents.is_empty() {
        return Err(Error::invalid(path, "no sentences (empty JSONL file)"));
    }
    Ok(Dataset {
        name: "reviews".to_string(),
        split: path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string(),
        documents,
        other_labels: other,
    })
}

// ---------------------------------------------------------------------------------------------
// Raw AnnoCTR
// ---------------------------------------------------------------------------------------------

/// What [`load_annoctr_raw`] found in the mention files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnoctrRawReport {
    /// Mention lines read (all entity types).
    pub mentions: usize,
    /// Mentions linked to an ATT&CK technique URL.
    pub technique_mentions: usize,
    /// Technique mentions whose sentence could not be found in the text (not labelled).
    pub unlocated: usize,
    /// Technique mentions whose context occurs several times and was disambiguated by
    /// `sentence_left` (or, failing that, took the first occurrence).
    pub ambiguous: usize,
    /// Documents of the split without a mention file (all of `ext`: it is unannotated).
    pub documents_without_mentions: usize,
}

#[derive(Deserialize)]
struct RawMention {
    mention: String,
    #[serde(rename = "_context_left")]
    context_left: String,
    #[serde(rename = "_context_right")]
    context_right: String,
    #[serde(default)]
    sentence_left: String,
    label_link: String,
}

/// An id from an ATT&CK URL: `.../techniques/T1059/001` -> `T1059.001`,
/// `.../tactics/TA0011` -> `TA0011`, `.../software/S0154` -> `S0154`; `None` otherwise.
fn attack_url_id(url: &str) -> Option<String> {
    let rest = url.split("attack.mitre.org/").nth(1)?;
    let mut parts = rest.trim_end_matches('/').split('/');
    let kind = parts.next()?;
    let id = parts.next()?;
    match (kind, parts.next()) {
        ("techniques", Some(sub)) => Some(format!("{id}.{sub}")),
        (_, None) => Some(id.to_string()),
        _ => None,
    }
}

/// Loads one split (`train`, `dev`, `test`, `ext`) of the raw AnnoCTR corpus.
///
/// How sentences and labels are made (the corpus texts hold one sentence per line):
/// - sentences are the non-empty lines of `text/<doc>.txt` (trailing whitespace trimmed);
/// - each line of `linking_mitre_only/<doc>.json` is a mention; its `label_link` is an ATT&CK
///   URL for explicit (CE) and implicit (CI) mentions. Technique URLs become labels; tactic,
///   software, group and non-ATT&CK links are counted in `other_labels`;
/// - a mention's sentence is the line containing `_context_left + mention + _context_right`
///   (the raw, unstripped contexts). If that string occurs more than once, the occurrence
///   whose previous non-empty line equals `sentence_left` wins (else the first). If it does
///   not occur (21 mentions in the corpus, mostly with mangled non-breaking spaces), the
///   shorter `_context_left + mention` and `mention + _context_right` are tried; still not
///   found: counted as `unlocated`.
pub fn load_annoctr_raw(
    raw_dir: impl AsRef<Path>,
    split: &str,
) -> Result<(Dataset, AnnoctrRawReport)> {
    let raw_dir = raw_dir.as_ref();
    if !matches!(split, "train" | "dev" | "test" | "ext") {
        return Err(Error::InvalidArgument(format!(
            "AnnoCTR split {split:?} (expected train, dev, test or ext)"
        )));
    }
    let splits_path = raw_dir.join("splits.tsv");
    let splits = read_to_string(&splits_path)?;
    let mut doc_ids = Vec::new();
    for (i, line) in splits.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (doc, s) = line.split_once('\t').ok_or_else(|| {
            Error::invalid(
                &splits_path,
                format!("line {}: expected <document>\\t<split>", i + 1),
            )
        })?;
        if s.trim() == split {
            doc_ids.push(doc.trim().to_string());
        }
    }
    let mut report = AnnoctrRawReport::default();
    let mut other = BTreeMap::new();
    let mut documents = Vec::with_capacity(doc_ids.len());
    for doc in doc_ids {
        let text_path = raw_dir.join("text").join(format!("{doc}.txt"));
        let text = read_to_string(&text_path)?;
        // (byte offset of line start, trimmed line) for non-empty lines.
        let mut lines: Vec<(usize, &str)> = Vec::new();
        let mut offset = 0;
        for line in text.split('\n') {
            let t = line.trim_end();
            if !t.trim_start().is_empty() {
                lines.push((offset, t));
            }
            offset += line.len() + 1;
        }
        let mut labels: Vec<Vec<TechniqueId>> = vec![Vec::new(); lines.len()];
        let link_path = raw_dir
            .join("linking_mitre_only")
            .join(format!("{doc}.json"));
        if link_path.exists() {
            let content = read_to_string(&link_path)?;
            for (ln, line) in content.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let m: RawMention = serde_json::from_str(line).map_err(|e| {
                    Error::invalid(
                        &link_path,
                        format!("line {}: not a mention object: {e}", ln + 1),
                    )
                })?;
                report.mentions += 1;
                let id = attack_url_id(&m.label_link);
                let tech = id.as_deref().and_then(|i| TechniqueId::parse(i).ok());
                let Some(tech) = tech else {
                    let key = id.unwrap_or_else(|| "(non-ATT&CK link)".to_string());
                    *other.entry(key).or_default() += 1;
                    continue;
                };
                report.technique_mentions += 1;
                match locate_mention(&text, &lines, &m, &mut report.ambiguous) {
                    Some(li) => {
                        if !labels[li].contains(&tech) {
                            labels[li].push(tech);
                        }
                    }
                    None => report.unlocated += 1,
                }
            }
        } else {
            report.documents_without_mentions += 1;
        }
        let sentences = lines
            .iter()
            .zip(labels)
            .map(|((_, l), labels)| LabeledSentence {
                text: l.trim_start().to_string(),
                labels,
                doc: doc.clone(),
            })
            .collect();
        documents.push(LabeledDocument { id: doc, sentences });
    }
    let ds = Dataset {
        name: "annoctr-raw".into(),
        split: split.into(),
        documents,
        other_labels: other,
    };
    Ok((ds, report))
}

/// Index into `lines` of the line holding the mention.
fn locate_mention(
    text: &str,
    lines: &[(usize, &str)],
    m: &RawMention,
    ambiguous: &mut usize,
) -> Option<usize> {
    let line_of = |pos: usize| -> Option<usize> {
        match lines.binary_search_by_key(&pos, |l| l.0) {
            Ok(i) => Some(i),
            Err(0) => None,
            Err(i) => Some(i - 1),
        }
    };
    let full = format!("{}{}{}", m.context_left, m.mention, m.context_right);
    let candidates = [
        full,
        format!("{}{}", m.context_left, m.mention),
        format!("{}{}", m.mention, m.context_right),
    ];
    for needle in candidates.iter().filter(|n| !n.trim().is_empty()) {
        let hits: Vec<usize> = text
            .match_indices(needle.as_str())
            .filter_map(|(p, _)| line_of(p))
            .collect();
        match hits.len() {
            0 => continue,
            1 => return Some(hits[0]),
            _ => {
                *ambiguous += 1;
                let left = m.sentence_left.trim();
                let by_left = hits
                    .iter()
                    .copied()
                    .find(|&i| i > 0 && lines[i - 1].1.trim() == left && !left.is_empty());
                return Some(by_left.unwrap_or(hits[0]));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Emulation plans
// ---------------------------------------------------------------------------------------------

/// One step of an adversary emulation plan: a query (name + description) with its technique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulationStep {
    /// Actor as named in the project README (`APT29`, `OilRig`, `WizardSpider`, ...).
    pub actor: String,
    /// `procedure_step` (`2.A.9`), or the step's `id` when it has none.
    pub step_id: String,
    pub name: String,
    pub description: String,
    pub tactic: String,
    pub technique: TechniqueId,
    pub technique_name: String,
    /// Plan file, relative to the emulation directory.
    pub source_file: String,
}

impl EmulationStep {
    /// The retrieval query: name and description.
    pub fn query(&self) -> String {
        format!("{}. {}", self.name, self.description)
    }
}

/// A step that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedStep {
    pub source_file: String,
    pub step_id: String,
    pub reason: String,
}

/// A label correction applied by [`load_emulation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCorrection {
    pub source_file: String,
    pub step_id: String,
    pub from: TechniqueId,
    pub to: TechniqueId,
}

/// The loaded emulation plans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emulation {
    pub steps: Vec<EmulationStep>,
    pub skipped: Vec<SkippedStep>,
    pub corrections: Vec<AppliedCorrection>,
}

/// Known label noise, corrected on load: (file name, procedure_step, tagged id, correct id,
/// why). Applied only when the step still carries the tagged id, so an upstream fix is left
/// alone. Both are in oilrig.yaml (see the shared README):
pub const EMULATION_CORRECTIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "oilrig.yaml",
        "2.A.9",
        "T1021",
        "T1201",
        "`net accounts /domain`, named Password Policy Discovery, tagged Remote Services",
    ),
    (
        "oilrig.yaml",
        "4.A.4",
        "T1082",
        "T1564.001",
        "sets the hidden attribute, named Hidden Files & Directories, tagged System Information \
         Discovery",
    ),
];

/// Plan directory name -> actor name used by the project.
fn actor_name(dir: &str, adversary_name: Option<&str>) -> String {
    match dir {
        "apt29" => "APT29",
        "carbanak" => "Carbanak",
        "fin6" => "FIN6",
        "fin7" => "FIN7",
        "oilrig" => "OilRig",
        "sandworm" => "Sandworm",
        "wizard_spider" => "WizardSpider",
        "menu_pass" => "menuPass",
        "turla" => "Turla",
        _ => {
            return adversary_name
                .map(str::to_string)
                .unwrap_or_else(|| dir.to_string())
        }
    }
    .to_string()
}

fn yaml_str(v: Option<&Yaml>) -> Option<String> {
    match v? {
        Yaml::String(s) => Some(s.trim().to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Loads every `*/Emulation_Plan/yaml/*.yaml` plan under `dir` (sorted by path). Entries
/// without a description or a valid technique id are skipped and listed; the plan-details
/// entry is read for the adversary name. [`EMULATION_CORRECTIONS`] are applied.
pub fn load_emulation(dir: impl AsRef<Path>) -> Result<Emulation> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut plans: Vec<(String, PathBuf)> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let actor_dir = e.file_name().to_string_lossy().into_owned();
        let ydir = e.path().join("Emulation_Plan").join("yaml");
        let Ok(files) = std::fs::read_dir(&ydir) else {
            continue;
        };
        for f in files {
            let f = f.map_err(|e| Error::io(&ydir, e))?;
            let p = f.path();
            if p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                plans.push((actor_dir.clone(), p));
            }
        }
    }
    plans.sort_by(|a, b| a.1.cmp(&b.1));
    if plans.is_empty() {
        return Err(Error::invalid(
            dir,
            "no */Emulation_Plan/yaml/*.yaml plans found",
        ));
    }
    let mut out = Emulation::default();
    for (actor_dir, path) in plans {
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let text = read_to_string(&path)?;
        parse_plan(&text, &path, &rel, &actor_dir, &mut out)?;
    }
    Ok(out)
}

/// Parses one emulation plan (YAML) held in memory into an [`Emulation`]; `source` names it in
/// errors and its file name selects [`EMULATION_CORRECTIONS`]; `actor_dir` is the folder name
/// used when the plan names no adversary. YAML nested deeper than serde_norway's recursion
/// limit (128) is an error naming `source`, not a stack overflow.
pub fn emulation_plan_from_str(text: &str, source: &Path, actor_dir: &str) -> Result<Emulation> {
    let mut out = Emulation::default();
    let rel = source.to_string_lossy().into_owned();
    parse_plan(text, source, &rel, actor_dir, &mut out)?;
    Ok(out)
}

/// Deepest nesting of YAML flow collections (`[...]`, `{...}`) an emulation plan may have.
/// libyaml checks every open flow level on each token (quadratic: 20,000 nested `{a: ` took
/// 30 s) and serde_norway's recursion to its limit of 128 levels needs about 1 MiB of stack in
/// a debug build; real plans nest flow collections two or three deep.
pub const MAX_YAML_FLOW_DEPTH: usize = 64;

/// Refuses YAML whose flow collections nest deeper than [`MAX_YAML_FLOW_DEPTH`], naming the
/// file and line, before libyaml sees it. One pass: quoted scalars and comments are skipped; a
/// `[` or `{` counts when it opens a value (after whitespace, `:`, `-`, `,`, `?` or another
/// opener, or anywhere inside a flow collection).
fn check_yaml_flow_depth(text: &str, path: &Path) -> Result<()> {
    let b = text.as_bytes();
    let (mut depth, mut line) = (0usize, 1usize);
    let (mut single, mut double, mut comment) = (false, false, false);
    let mut prev = b'\n';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            comment = false;
        }
        let opens_value = prev.is_ascii_whitespace() || b"[{,:-?".contains(&prev);
        if comment {
        } else if double {
            if c == b'\\' {
                i += 1;
                if b.get(i) == Some(&b'\n') {
                    line += 1;
                }
            } else if c == b'"' {
                double = false;
            }
        } else if single {
            if c == b'\'' {
                if b.get(i + 1) == Some(&b'\'') {
                    i += 1; // '' is a quote inside the scalar
                } else {
                    single = false;
                }
            }
        } else {
            match c {
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'"' if opens_value => double = true,
                b'\'' if opens_value => single = true,
                b'[' | b'{' if opens_value || depth > 0 => {
                    depth += 1;
                    if depth > MAX_YAML_FLOW_DEPTH {
                        return Err(Error::invalid(
                            path,
                            format!("YAML flow collections nested deeper than {MAX_YAML_FLOW_DEPTH} levels at line {line}"),
                        ));
                    }
                }
                b']' | b'}' if depth > 0 => depth -= 1,
                _ => {}
            }
        }
        prev = c;
        i += 1;
    }
    Ok(())
}

/// Adds the steps of one plan to `out`; `rel` is the plan's path as recorded in the steps.
fn parse_plan(
    text: &str,
    path: &Path,
    rel: &str,
    actor_dir: &str,
    out: &mut Emulation,
) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_yaml_flow_depth(text, path)?;
    let doc: Yaml = serde_norway::from_str(text).map_err(|e| Error::Yaml {
        path: path.to_path_buf(),
        source: e,
    })?;
    let Yaml::Sequence(items) = doc else {
        return Err(Error::invalid(path, "expected a YAML list of steps"));
    };
    let adversary = items.iter().find_map(|i| {
        yaml_str(
            i.get("emulation_plan_details")
                .and_then(|d| d.get("adversary_name")),
        )
    });
    let actor = actor_name(actor_dir, adversary.as_deref());
    for (pos, item) in items.iter().enumerate() {
        if !item.is_mapping() {
            return Err(Error::invalid(
                path,
                format!("list item {pos} is not a mapping"),
            ));
        }
        if item.get("emulation_plan_details").is_some() {
            continue;
        }
        let step_id = yaml_str(item.get("procedure_step"))
            .or_else(|| yaml_str(item.get("id")))
            .unwrap_or_else(|| format!("#{pos}"));
        let skip = |reason: &str| SkippedStep {
            source_file: rel.to_string(),
            step_id: step_id.clone(),
            reason: reason.to_string(),
        };
        let description = yaml_str(item.get("description")).unwrap_or_default();
        if description.is_empty() {
            out.skipped.push(skip("no description"));
            continue;
        }
        let tech = item.get("technique");
        let Some(raw_id) = yaml_str(tech.and_then(|t| t.get("attack_id"))) else {
            out.skipped.push(skip("no technique"));
            continue;
        };
        let Ok(mut technique) = TechniqueId::parse(&raw_id) else {
            out.skipped
                .push(skip(&format!("invalid technique id {raw_id:?}")));
            continue;
        };
        for (f, s, from, to, _) in EMULATION_CORRECTIONS {
            if *f == file_name && *s == step_id && technique.as_str() == *from {
                if let Ok(to) = TechniqueId::parse(to) {
                    out.corrections.push(AppliedCorrection {
                        source_file: rel.to_string(),
                        step_id: step_id.clone(),
                        from: technique.clone(),
                        to: to.clone(),
                    });
                    technique = to;
                }
            }
        }
        out.steps.push(EmulationStep {
            actor: actor.clone(),
            step_id,
            name: yaml_str(item.get("name")).unwrap_or_default(),
            description,
            tactic: yaml_str(item.get("tactic")).unwrap_or_default(),
            technique,
            technique_name: yaml_str(tech.and_then(|t| t.get("name"))).unwrap_or_default(),
            source_file: rel.to_string(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------------

fn check_fraction(name: &str, f: f64) -> Result<()> {
    if f.is_finite() && f > 0.0 && f < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name} must be in (0, 1), got {f}"
        )))
    }
}

/// A split of reports into train and test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSplit {
    pub train: Vec<LabeledDocument>,
    pub test: Vec<LabeledDocument>,
    /// Test sentences removed because their exact text is also a train sentence (boilerplate
    /// such as `cmd.exe /c` or `Figure 1.` shared by reports).
    pub dropped_test_duplicates: usize,
}

/// Splits whole reports: `round(n * test_fraction)` random reports (at least 1, at most n-1)
/// go to test, the others to train; both keep the input order. Test sentences whose exact text
/// occurs in train are then dropped (counted), so no sentence text crosses the split.
pub fn split_by_report(
    docs: &[LabeledDocument],
    test_fraction: f64,
    seed: u64,
) -> Result<ReportSplit> {
    check_fraction("test_fraction", test_fraction)?;
    let n = docs.len();
    if n < 2 {
        return Err(Error::InvalidArgument(format!(
            "split_by_report needs 2 or more reports, got {n}"
        )));
    }
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let test_set: HashSet<usize> = idx[..n_test].iter().copied().collect();
    let train: Vec<LabeledDocument> = (0..n)
        .filter(|i| !test_set.contains(i))
        .map(|i| docs[i].clone())
        .collect();
    let train_texts: HashSet<&str> = train
        .iter()
        .flat_map(|d| d.sentences.iter().map(|s| s.text.as_str()))
        .collect();
    let mut dropped = 0;
    let mut test = Vec::with_capacity(n_test);
    for i in (0..n).filter(|i| test_set.contains(i)) {
        let mut d = docs[i].clone();
        let before = d.sentences.len();
        d.sentences
            .retain(|s| !train_texts.contains(s.text.as_str()));
        dropped += before - d.sentences.len();
        if !d.sentences.is_empty() {
            test.push(d);
        }
    }
    Ok(ReportSplit {
        train,
        test,
        dropped_test_duplicates: dropped,
    })
}

/// Exact sentence texts shared by two sets of documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossDuplicates {
    /// Distinct texts present on both sides.
    pub distinct_texts: usize,
    /// Sentences of `test` whose text is in `train`.
    pub test_sentences: usize,
}

/// Counts exact sentence texts of `test` that also occur in `train` (a leakage check).
pub fn cross_duplicates(train: &[LabeledDocument], test: &[LabeledDocument]) -> CrossDuplicates {
    let train_texts: HashSet<&str> = train
        .iter()
        .flat_map(|d| d.sentences.iter().map(|s| s.text.as_str()))
        .collect();
    let mut distinct = HashSet::new();
    let mut n = 0;
    for s in test.iter().flat_map(|d| d.sentences.iter()) {
        if train_texts.contains(s.text.as_str()) {
            n += 1;
            distinct.insert(s.text.as_str());
        }
    }
    CrossDuplicates {
        distinct_texts: distinct.len(),
        test_sentences: n,
    }
}

/// CASSANDRA's validation split: a random `frac` of the sentences of the training reports
/// (by sentence, not by report) becomes validation, the rest is kept for fitting. Sentences
/// with the same text go to the same side. Returns `(fit, validation)`, named
/// `<split>:fit` and `<split>:validation`; documents keep their sentence order and documents
/// left empty are omitted. `other_labels` stays with `fit`.
pub fn validation_split(dataset: &Dataset, frac: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    check_fraction("frac", frac)?;
    let mut by_text: BTreeMap<&str, usize> = BTreeMap::new();
    for s in dataset.sentences() {
        *by_text.entry(s.text.as_str()).or_default() += 1;
    }
    let total: usize = by_text.values().sum();
    let target = (total as f64 * frac).round() as usize;
    let mut texts: Vec<(&str, usize)> = by_text.into_iter().collect();
    texts.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut val_texts: HashSet<&str> = HashSet::new();
    let mut taken = 0;
    for (t, c) in texts {
        if taken >= target {
            break;
        }
        val_texts.insert(t);
        taken += c;
    }
    let part = |val: bool, split: &str| -> Dataset {
        let documents = dataset
            .documents
            .iter()
            .filter_map(|d| {
                let sentences: Vec<LabeledSentence> = d
                    .sentences
                    .iter()
                    .filter(|s| val_texts.contains(s.text.as_str()) == val)
                    .cloned()
                    .collect();
                (!sentences.is_empty()).then(|| LabeledDocument {
                    id: d.id.clone(),
                    sentences,
                })
            })
            .collect();
        Dataset {
            name: dataset.name.clone(),
            split: format!("{}:{split}", dataset.split),
            documents,
            other_labels: if val {
                BTreeMap::new()
            } else {
                dataset.other_labels.clone()
            },
        }
    };
    Ok((part(false, "fit"), part(true, "validation")))
}

/// Emulation steps split into train / dev / test queries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuerySplit {
    pub train: Vec<EmulationStep>,
    pub dev: Vec<EmulationStep>,
    pub test: Vec<EmulationStep>,
}

/// Splits emulation steps `(train, dev, test)` by the given fractions, stratified by actor:
/// per actor (sorted by name), `round(n * dev)` and `round(n * test)` steps go to dev and test,
/// the rest to train. Steps with the same query text ([`EmulationStep::query`]) move together
/// as one group, across actors too (a group counts towards the first actor, by name, that has
/// the text), so no query text is shared between splits. Fractions must be >= 0 and sum to 1.
pub fn split_queries(
    steps: &[EmulationStep],
    fractions: (f64, f64, f64),
    seed: u64,
) -> Result<QuerySplit> {
    let (tr, dv, te) = fractions;
    let ok = [tr, dv, te].iter().all(|f| f.is_finite() && *f >= 0.0)
        && ((tr + dv + te) - 1.0).abs() < 1e-6;
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "query split fractions must be >= 0 and sum to 1, got {fractions:?}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_text: BTreeMap<String, Vec<&EmulationStep>> = BTreeMap::new();
    for s in steps {
        by_text.entry(s.query()).or_default().push(s);
    }
    let mut by_actor: BTreeMap<&str, BTreeMap<String, Vec<&EmulationStep>>> = BTreeMap::new();
    for (text, group) in by_text {
        let actor = group
            .iter()
            .map(|s| s.actor.as_str())
            .min()
            .unwrap_or_default();
        by_actor.entry(actor).or_default().insert(text, group);
    }
    let mut out = QuerySplit {
        train: Vec::new(),
        dev: Vec::new(),
        test: Vec::new(),
    };
    for groups in by_actor.into_values() {
        let n: usize = groups.values().map(Vec::len).sum();
        let n_test = (n as f64 * te).round() as usize;
        let n_dev = (n as f64 * dv).round() as usize;
        let mut groups: Vec<Vec<&EmulationStep>> = groups.into_values().collect();
        groups.shuffle(&mut rng);
        let (mut t, mut d) = (0, 0);
        for g in groups {
            let target = if t < n_test {
                t += g.len();
                &mut out.test
            } else if d < n_dev {
                d += g.len();
                &mut out.dev
            } else {
                &mut out.train
            };
            target.extend(g.into_iter().cloned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_flow_depth_is_capped() {
        let p = Path::new("plans/x.yaml");
        let deep = "- id: 1\n  x: ".to_string() + &"{a: ".repeat(20_000);
        let e = check_yaml_flow_depth(&deep, p).unwrap_err().to_string();
        assert!(e.contains("plans/x.yaml") && e.contains("line 2"), "{e}");
        let e = emulation_plan_from_str(&"[".repeat(100_000), p, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("deeper than 64"), "{e}");
        for ok in [
            "- a: [1, [2, {b: 3}]]\n  d: \"[[[[\" # [[[[\n  e: 'it''s [' \n  f: x[y\n",
            &("- d: ".to_string() + &"[".repeat(64) + &"]".repeat(64)),
        ] {
            check_yaml_flow_depth(ok, p).expect(ok);
        }
    }

    #[test]
    fn tram2_columns_and_jsonl_round_trip() {
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        let docs = vec![LabeledDocument {
            id: "report-1".into(),
            sentences: vec![
                LabeledSentence {
                    text: "They ran PowerShell.".into(),
                    labels: vec![t("T1059.001")],
                    doc: "report-1".into(),
                },
                LabeledSentence {
                    text: "Nothing here.".into(),
                    labels: vec![],
                    doc: "report-1".into(),
                },
            ],
        }];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("reviews.json");
        std::fs::write(&p, to_tram2_columns(&docs).to_string()).unwrap();
        let ds = load_tram2(&p).unwrap();
        assert_eq!(ds.documents, docs);

        let p = dir.path().join("reviews.jsonl");
        std::fs::write(
            &p,
            "{\"doc_id\": \"report-1\", \"sentence\": \"They ran PowerShell.\", \"labels\": [\"T1059.001\"]}\n\n\
             {\"doc_id\": \"report-1\", \"sentence\": \"Nothing here.\", \"labels\": []}\n",
        )
        .unwrap();
        let ds = load_sentences_jsonl(&p).unwrap();
        assert_eq!(ds.documents, docs);
        assert_eq!(ds.split, "reviews");
        std::fs::write(&p, "{\"doc\": 1}\n").unwrap();
        let err = load_sentences_jsonl(&p).unwrap_err().to_string();
        assert!(
            err.contains("reviews.jsonl") && err.contains("line 1"),
            "{err}"
        );
    }
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    #[test]
    fn columns_keep_numeric_order_and_count_other_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut sent = serde_json::Map::new();
        let mut labels = serde_json::Map::new();
        let mut docs = serde_json::Map::new();
        for i in 0..12 {
            sent.insert(i.to_string(), Value::from(format!("s{i}")));
            let l = if i == 10 {
                vec!["T1059.001", "S0154", "TA0011", "T1059.001"]
            } else {
                vec![]
            };
            labels.insert(i.to_string(), Value::from(l));
            docs.insert(i.to_string(), Value::from(if i < 6 { "a" } else { "b" }));
        }
        let root = serde_json::json!({"sentence": sent, "labels": labels, "document": docs});
        let p = write(dir.path(), "train.json", &root.to_string());
        let ds = load_annoctr(&p).unwrap();
        assert_eq!(ds.split, "train");
        assert_eq!(ds.documents.len(), 2);
        let texts: Vec<&str> = ds.sentences().map(|s| s.text.as_str()).collect();
        assert_eq!(texts[10], "s10", "numeric, not lexicographic, order");
        assert_eq!(texts[2], "s2");
        assert_eq!(ds.documents[1].sentences[4].labels, vec![tid("T1059.001")]);
        assert_eq!(ds.other_labels.get("S0154"), Some(&1));
        assert_eq!(ds.other_labels.get("TA0011"), Some(&1));
        let st = ds.stats();
        assert_eq!(
            (
                st.sentences,
                st.labelled_sentences,
                st.techniques,
                st.total_positives
            ),
            (12, 1, 1, 1)
        );
    }

    #[test]
    fn malformed_columns_name_file_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("shape.json", r#"[1, 2]"#, "expected a JSON object"),
            (
                "len.json",
                r#"{"sentence": {"0": "a", "1": "b"}, "labels": {"0": [], "2": []}, "doc_title": {"0": "d", "1": "d"}}"#,
                "row 1 missing",
            ),
            (
                "lab.json",
                r#"{"sentence": {"0": "a"}, "labels": {"0": "T1059"}, "doc_title": {"0": "d"}}"#,
                "not a list of strings",
            ),
            (
                "lab2.json",
                r#"{"sentence": {"0": "a"}, "labels": {"0": [5]}, "doc_title": {"0": "d"}}"#,
                "label 5 is not a string",
            ),
            (
                "key.json",
                r#"{"sentence": {"x": "a"}, "labels": {}, "doc_title": {}}"#,
                "not a number",
            ),
            (
                "miss.json",
                r#"{"sentence": {"0": "a"}, "labels": {"0": []}}"#,
                "missing column \"doc_title\"",
            ),
            ("json.json", r#"{"sentence": "#, "malformed JSON"),
        ];
        for (name, text, want) in cases {
            let p = write(dir.path(), name, text);
            let err = load_tram2(&p).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        }
        // Different lengths with contiguous keys.
        let p = write(
            dir.path(),
            "lens.json",
            r#"{"sentence": {"0": "a", "1": "b"}, "labels": {"0": []}, "doc_title": {"0": "d", "1": "d"}}"#,
        );
        let err = load_tram2(&p).unwrap_err().to_string();
        assert!(err.contains("different lengths"), "{err}");
    }

    fn docs(n: usize) -> Vec<LabeledDocument> {
        (0..n)
            .map(|d| LabeledDocument {
                id: format!("d{d}"),
                sentences: (0..5)
                    .map(|i| LabeledSentence {
                        // Every report shares the text "Figure 1."
                        text: if i == 0 {
                            "Figure 1.".into()
                        } else {
                            format!("d{d} s{i}")
                        },
                        labels: vec![],
                        doc: format!("d{d}"),
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn split_by_report_is_seeded_and_leak_free() {
        let d = docs(20);
        let a = split_by_report(&d, 0.25, 7).unwrap();
        let b = split_by_report(&d, 0.25, 7).unwrap();
        let c = split_by_report(&d, 0.25, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.test, c.test);
        assert_eq!(a.train.len(), 15);
        assert_eq!(a.test.len(), 5);
        assert_eq!(
            a.dropped_test_duplicates, 5,
            "the shared 'Figure 1.' leaves test"
        );
        assert_eq!(cross_duplicates(&a.train, &a.test).test_sentences, 0);
        assert!(split_by_report(&d, 1.0, 1).is_err());
        assert!(split_by_report(&d[..1], 0.5, 1).is_err());
    }

    #[test]
    fn validation_split_by_sentence() {
        let ds = Dataset {
            name: "x".into(),
            split: "train".into(),
            documents: docs(10),
            other_labels: BTreeMap::new(),
        };
        let (fit, val) = validation_split(&ds, 0.2, 3).unwrap();
        let (nf, nv) = (fit.stats().sentences, val.stats().sentences);
        assert_eq!(nf + nv, 50);
        assert!((9..=11).contains(&nv), "{nv}");
        assert_eq!(
            cross_duplicates(&fit.documents, &val.documents).test_sentences,
            0
        );
        assert_eq!(validation_split(&ds, 0.2, 3).unwrap().1, val);
        assert_eq!(fit.split, "train:fit");
    }

    fn step(actor: &str, i: usize, t: &str) -> EmulationStep {
        EmulationStep {
            actor: actor.into(),
            step_id: i.to_string(),
            name: format!("{actor} step {i}"),
            description: "d".into(),
            tactic: "discovery".into(),
            technique: tid(t),
            technique_name: String::new(),
            source_file: "x.yaml".into(),
        }
    }

    #[test]
    fn split_queries_stratified() {
        let mut steps: Vec<EmulationStep> = (0..20).map(|i| step("A", i, "T1082")).collect();
        steps.extend((0..10).map(|i| step("B", i, "T1057")));
        let s = split_queries(&steps, (0.8, 0.1, 0.1), 5).unwrap();
        let count = |v: &[EmulationStep], a: &str| v.iter().filter(|s| s.actor == a).count();
        assert_eq!(
            (
                count(&s.train, "A"),
                count(&s.dev, "A"),
                count(&s.test, "A")
            ),
            (16, 2, 2)
        );
        assert_eq!(
            (
                count(&s.train, "B"),
                count(&s.dev, "B"),
                count(&s.test, "B")
            ),
            (8, 1, 1)
        );
        assert_eq!(s, split_queries(&steps, (0.8, 0.1, 0.1), 5).unwrap());
        assert!(split_queries(&steps, (0.8, 0.1, 0.2), 5).is_err());
    }

    #[test]
    fn remap_labels_and_steps() {
        let mut ds = Dataset {
            name: "x".into(),
            split: "t".into(),
            documents: vec![LabeledDocument {
                id: "d".into(),
                sentences: vec![LabeledSentence {
                    text: "s".into(),
                    labels: vec![tid("T1086"), tid("T1059.001"), tid("T9999")],
                    doc: "d".into(),
                }],
            }],
            other_labels: BTreeMap::new(),
        };
        let resolve = |t: &TechniqueId| match t.as_str() {
            "T1086" => Some(tid("T1059.001")),
            "T9999" => None,
            _ => Some(t.clone()),
        };
        let r = ds.remap(resolve);
        assert_eq!(ds.documents[0].sentences[0].labels, vec![tid("T1059.001")]);
        assert_eq!(r.remapped.get(&tid("T1086")), Some(&tid("T1059.001")));
        assert_eq!(r.unknown.get("T9999"), Some(&1));
        let mut steps = vec![
            step("A", 0, "T1086"),
            step("A", 1, "T9999"),
            step("A", 2, "T1082"),
        ];
        let r = remap_steps(&mut steps, resolve);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].technique, tid("T1059.001"));
        assert_eq!(r.unknown.get("T9999"), Some(&1));
    }

    #[test]
    fn attack_urls() {
        assert_eq!(
            attack_url_id("https://attack.mitre.org/techniques/T1059/001").as_deref(),
            Some("T1059.001")
        );
        assert_eq!(
            attack_url_id("https://attack.mitre.org/techniques/T1105").as_deref(),
            Some("T1105")
        );
        assert_eq!(
            attack_url_id("https://attack.mitre.org/tactics/TA0011").as_deref(),
            Some("TA0011")
        );
        assert_eq!(attack_url_id("http://www.bosch.com#node1"), None);
    }

    #[test]
    fn raw_mentions_located_by_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("text")).unwrap();
        std::fs::create_dir_all(dir.path().join("linking_mitre_only")).unwrap();
        write(dir.path(), "splits.tsv", "r1\ttrain\nr2\ttest\n");
        write(
            dir.path(),
            "text/r1.txt",
            "Title\n\nThey used phishing.\nThen A.\nThey used phishing.\n",
        );
        let m = |left: &str, link: &str| {
            serde_json::json!({"mention": "phishing", "_context_left": "They used ", "_context_right": ".",
                "sentence_left": left, "label_link": link}).to_string()
        };
        let lines = [
            m("Then A.", "https://attack.mitre.org/techniques/T1566"),
            m("", "https://attack.mitre.org/tactics/TA0001"),
        ];
        write(dir.path(), "linking_mitre_only/r1.json", &lines.join("\n"));
        let (ds, rep) = load_annoctr_raw(dir.path(), "train").unwrap();
        let s = &ds.documents[0].sentences;
        assert_eq!(s.len(), 4);
        assert!(s[1].labels.is_empty());
        assert_eq!(
            s[3].labels,
            vec![tid("T1566")],
            "disambiguated by sentence_left"
        );
        assert_eq!(ds.other_labels.get("TA0001"), Some(&1));
        assert_eq!(
            (
                rep.mentions,
                rep.technique_mentions,
                rep.ambiguous,
                rep.unlocated
            ),
            (2, 1, 1, 0)
        );
        assert!(load_annoctr_raw(dir.path(), "valid").is_err());
    }
}
