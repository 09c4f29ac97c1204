//! Exports of extraction results: JSON, JSONL, CSV, Markdown, ATT&CK Navigator layer 4.5 and
//! STIX 2.1 bundle.
//!
//! Every exporter is a pure function of one or more [`Extraction`]s (one per document), a
//! technique lookup (normally the loaded ATT&CK catalog, see [`TechniqueLookup`]) and an options
//! struct; it returns a `String` (or a typed, `Serialize` value for Navigator and STIX). Nothing
//! here does I/O. Output is deterministic for a given input, except the STIX ids and timestamps
//! when [`StixOptions`] asks for random ids and the current time (the default).
//!
//! # JSON schema (formats `json` and `jsonl`)
//!
//! `json` is a pretty-printed JSON **array** with one object per document, even for a single
//! document; `jsonl` writes the same objects one per line. Each object is an [`Extraction`]:
//!
//! ```text
//! {
//!   "source": string,            // file path, URL or caller-chosen name
//!   "title": string | null,      // document title when the input had one
//!   "method": string,            // method name and settings, e.g. "bm25"
//!   "threshold": number,         // score threshold used to keep predictions
//!   "attack_version": string,    // ATT&CK catalog version, e.g. "18.1"
//!   "sentence_count": integer,   // sentences in the document
//!   "sentences": [               // only sentences with a prediction, in document order
//!     { "sentence": integer,     // sentence index from 0
//!       "span": { "start": integer, "end": integer },  // byte offsets into the normalised text
//!       "text": string,
//!       "predictions": [         // best first
//!         { "technique": "T1059.001",
//!           "score": number,     // confidence in [0, 1]
//!           "raw_score": number, // the method's raw score (e.g. BM25)
//!           "evidence": { "method": string, "reasons": [string] } } ] } ],
//!   "techniques": [              // document-level summary, best score first
//!     { "technique": "T1059.001", "name": string, "tactics": [string],
//!       "score": number,         // highest sentence score
//!       "sentences": [integer] } ]  // supporting sentence indices, best first
//! }
//! ```
//!
//! # Other formats
//! - CSV ([`to_csv`]): header `source,sentence,start,end,technique,name,score,method,text`, one
//!   row per sentence prediction, RFC 4180 quoting, `\n` line ends. Text cells that a
//!   spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) get a
//!   leading `'`: report texts are untrusted input.
//! - Markdown ([`to_markdown`]): per document a summary table (technique, name, tactics, score,
//!   number of sentences) and an evidence list.
//! - ATT&CK Navigator ([`navigator_layer`]): layer format 4.5 (navigator 5.1.0), one layer for
//!   all documents. A technique gets one entry per tactic (Navigator places an entry without
//!   `tactic` under every tactic, an explicit one is what Navigator itself exports); the score is
//!   the best confidence × 100 rounded; the comment holds the top evidence sentences. The parent
//!   of a predicted sub-technique gets `showSubtechniques: true` (an unscored entry when the
//!   parent itself was not predicted), so the sub-technique is visible when the layer opens.
//! - STIX 2.1 ([`stix_bundle`]): see the function for the objects and the id scheme.
//! - MISP event ([`misp_events`], module [`misp`]): one event per document, a MISP galaxy tag
//!   (`misp-galaxy:mitre-attack-pattern="PowerShell - T1059.001"`) per technique and the
//!   evidence sentences as `text` attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attack::{ExternalReference, Technique};
use crate::error::{Error, Result};
use crate::types::{DocumentTechnique, Extraction, TechniqueId};

pub mod misp;
pub use misp::{galaxy_tag, misp_events, to_misp_json, MispOptions};

/// Looks a technique up by id; normally `&|id| catalog.get(id)`. The returned technique lives as
/// long as the catalog (`'c`), not as long as the id.
pub type TechniqueLookup<'c> = dyn Fn(&TechniqueId) -> Option<&'c Technique> + 'c;

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// One piece of evidence for a document-level technique: a sentence and its prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvidenceItem<'e> {
    pub sentence: usize,
    pub text: &'e str,
    /// The sentence's score for the technique (for a parent-level summary entry, the best score
    /// among its sub-techniques in that sentence); `None` when the sentence holds no prediction
    /// of the technique.
    pub score: Option<f32>,
    pub method: Option<&'e str>,
    pub reasons: &'e [String],
}

/// The evidence of `technique` in `x`: its supporting sentences, in the order of
/// [`DocumentTechnique::sentences`] (best first). Sentence indices missing from `x.sentences`
/// are skipped.
pub fn evidence_for<'e>(x: &'e Extraction, technique: &DocumentTechnique) -> Vec<EvidenceItem<'e>> {
    technique
        .sentences
        .iter()
        .filter_map(|&idx| {
            let s = x.sentences.iter().find(|s| s.sentence == idx)?;
            let exact = s
                .predictions
                .iter()
                .find(|p| p.technique == technique.technique);
            let pred = exact.or_else(|| {
                s.predictions
                    .iter()
                    .filter(|p| p.technique.parent() == technique.technique)
                    .max_by(|a, b| a.score.total_cmp(&b.score))
            });
            Some(EvidenceItem {
                sentence: idx,
                text: &s.text,
                score: pred.map(|p| p.score),
                method: pred.map(|p| p.evidence.method.as_str()),
                reasons: pred.map(|p| p.evidence.reasons.as_slice()).unwrap_or(&[]),
            })
        })
        .collect()
}

/// Truncates `s` to at most `max` chars (an ellipsis included) and folds whitespace runs
/// (newlines included) into single spaces.
fn clip(s: &str, max: usize) -> String {
    let folded: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if folded.chars().count() <= max {
        return folded;
    }
    let mut out: String = folded.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

fn technique_name(dt: &DocumentTechnique, lookup: &TechniqueLookup<'_>) -> String {
    if !dt.name.is_empty() {
        return dt.name.clone();
    }
    lookup(&dt.technique)
        .map(|t| t.name.clone())
        .unwrap_or_default()
}

fn technique_tactics(dt: &DocumentTechnique, lookup: &TechniqueLookup<'_>) -> Vec<String> {
    if !dt.tactics.is_empty() {
        return dt.tactics.clone();
    }
    lookup(&dt.technique)
        .map(|t| t.tactics.clone())
        .unwrap_or_default()
}

fn json_error(source: serde_json::Error) -> Error {
    Error::Json {
        path: "<export>".into(),
        source,
    }
}

fn doc_label(x: &Extraction) -> &str {
    x.title
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(&x.source)
}

// ---------------------------------------------------------------------------------------------
// JSON / JSONL
// ---------------------------------------------------------------------------------------------

/// Pretty-printed JSON array of the extractions (the schema is in the module doc).
pub fn to_json(extractions: &[Extraction]) -> Result<String> {
    let mut s = serde_json::to_string_pretty(extractions).map_err(json_error)?;
    s.push('\n');
    Ok(s)
}

/// One compact JSON object per line, one line per extraction.
pub fn to_jsonl(extractions: &[Extraction]) -> Result<String> {
    let mut out = String::new();
    for x in extractions {
        out.push_str(&serde_json::to_string(x).map_err(json_error)?);
        out.push('\n');
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// Quotes a CSV field per RFC 4180 when it holds a comma, quote, CR or LF, or starts or ends
/// with a space.
/// A score as people read it: two decimals, rounded down, so a score under a threshold never
/// reads as the threshold (0.597 shows as "0.59" when 0.60 drops it). Machine formats (JSON,
/// CSV, STIX, Navigator) keep the full value.
pub fn shown_score(score: f32) -> String {
    // The small slack keeps an f32 such as 0.29 (0.28999999) at "0.29".
    format!("{:.2}", ((f64::from(score) * 100.0) + 1e-4).floor() / 100.0)
}

fn csv_field(s: &str) -> String {
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A free-text CSV field: neutralises spreadsheet formulas, then quotes.
fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        csv_field(&format!("'{s}"))
    } else {
        csv_field(s)
    }
}

/// CSV with one row per sentence prediction (see the module doc for the columns). The `name`
/// comes from the document summary, else from `lookup`, else is empty.
pub fn to_csv(extractions: &[Extraction], lookup: &TechniqueLookup<'_>) -> String {
    let mut out = String::from("source,sentence,start,end,technique,name,score,method,text\n");
    for x in extractions {
        let names: BTreeMap<&TechniqueId, &str> = x
            .techniques
            .iter()
            .map(|t| (&t.technique, t.name.as_str()))
            .collect();
        for s in &x.sentences {
            for p in &s.predictions {
                let name = names
                    .get(&p.technique)
                    .filter(|n| !n.is_empty())
                    .map(|n| n.to_string())
                    .or_else(|| lookup(&p.technique).map(|t| t.name.clone()))
                    .unwrap_or_default();
                let row = [
                    csv_text(&x.source),
                    s.sentence.to_string(),
                    s.span.start.to_string(),
                    s.span.end.to_string(),
                    p.technique.to_string(),
                    csv_text(&name),
                    p.score.to_string(),
                    csv_text(&p.evidence.method),
                    csv_text(&s.text),
                ];
                out.push_str(&row.join(","));
                out.push('\n');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

/// Settings of [`to_markdown`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkdownOptions {
    /// Evidence sentences listed per technique. Default: 3.
    pub evidence_sentences: usize,
    /// Longest evidence sentence, in chars (longer ones are cut with `…`). Default: 300.
    pub evidence_chars: usize,
}

impl Default for MarkdownOptions {
    fn default() -> Self {
        MarkdownOptions {
            evidence_sentences: 3,
            evidence_chars: 300,
        }
    }
}

/// Escapes text for a Markdown table cell or list item: backslash-escapes the characters that
/// would start markup inline and folds line breaks.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
        if matches!(
            c,
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Markdown report: per document a heading, a summary line, a technique table and the
/// evidence for each technique. Documents are separated by a horizontal rule.
pub fn to_markdown(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &MarkdownOptions,
) -> String {
    let mut out = String::new();
    for (i, x) in extractions.iter().enumerate() {
        if i > 0 {
            out.push_str("\n---\n\n");
        }
        out.push_str(&format!("# {}\n\n", md_escape(doc_label(x))));
        out.push_str(&format!(
            "Source: `{}` · method: {} · threshold: {} · ATT&CK {} · {} sentences, {} with predictions, {} techniques\n\n",
            x.source.replace('`', "'"),
            md_escape(&x.method),
            x.threshold,
            md_escape(&x.attack_version),
            x.sentence_count,
            x.sentences.len(),
            x.techniques.len()
        ));
        if x.techniques.is_empty() {
            out.push_str("No technique was found.\n");
            continue;
        }
        out.push_str("| Technique | Name | Tactics | Score | Sentences |\n");
        out.push_str("| --- | --- | --- | ---: | ---: |\n");
        for t in &x.techniques {
            let id = match lookup(&t.technique).and_then(|c| c.url.as_deref()) {
                Some(url) => format!("[{}]({url})", t.technique),
                None => t.technique.to_string(),
            };
            out.push_str(&format!(
                "| {id} | {} | {} | {} | {} |\n",
                md_escape(&technique_name(t, lookup)),
                md_escape(&technique_tactics(t, lookup).join(", ")),
                shown_score(t.score),
                t.sentences.len()
            ));
        }
        out.push_str("\n## Evidence\n");
        for t in &x.techniques {
            out.push_str(&format!(
                "\n### {} {}\n\n",
                t.technique,
                md_escape(&technique_name(t, lookup))
            ));
            let items = evidence_for(x, t);
            if items.is_empty() {
                out.push_str("- (no sentence recorded)\n");
            }
            for e in items.iter().take(opts.evidence_sentences) {
                let how = match (e.score, e.method) {
                    (Some(s), Some(m)) => format!("score {}, {}", shown_score(s), md_escape(m)),
                    (Some(s), None) => format!("score {}", shown_score(s)),
                    _ => "no score".to_string(),
                };
                out.push_str(&format!(
                    "- sentence {} ({how}): {}\n",
                    e.sentence,
                    md_escape(&clip(e.text, opts.evidence_chars))
                ));
                if !e.reasons.is_empty() {
                    let reasons: Vec<String> =
                        e.reasons.iter().take(5).map(|r| md_escape(r)).collect();
                    out.push_str(&format!("  - why: {}\n", reasons.join("; ")));
                }
            }
            if items.len() > opts.evidence_sentences {
                out.push_str(&format!(
                    "- … and {} more\n",
                    items.len() - opts.evidence_sentences
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// ATT&CK Navigator layer 4.5
// ---------------------------------------------------------------------------------------------

/// Navigator layer format version written.
pub const NAVIGATOR_LAYER_VERSION: &str = "4.5";
/// Navigator application version written (layer 4.5 needs at least 4.9.0).
pub const NAVIGATOR_VERSION: &str = "5.1.0";

/// Settings of [`navigator_layer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NavigatorOptions {
    /// Layer name. Default: `ttpmap: <title or source>` for one document,
    /// `ttpmap: <n> documents` for several.
    pub name: Option<String>,
    /// Layer description. Default: method, threshold and sources.
    pub description: Option<String>,
    /// ATT&CK version for `versions.attack` (its major number is written). Default: the
    /// extractions' `attack_version`.
    pub attack_version: Option<String>,
    /// Evidence sentences in each technique's comment. Default: 3.
    pub evidence_sentences: usize,
    /// Longest evidence sentence in a comment, in chars. Default: 200.
    pub evidence_chars: usize,
}

impl Default for NavigatorOptions {
    fn default() -> Self {
        NavigatorOptions {
            name: None,
            description: None,
            attack_version: None,
            evidence_sentences: 3,
            evidence_chars: 200,
        }
    }
}

/// `versions` of a layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NavigatorVersions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<String>,
    pub navigator: String,
    pub layer: String,
}

/// A name/value metadata pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NavigatorMetadata {
    pub name: String,
    pub value: String,
}

/// One technique entry of a layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NavigatorTechnique {
    #[serde(rename = "techniqueID")]
    pub technique_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tactic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    pub comment: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub metadata: Vec<NavigatorMetadata>,
    pub show_subtechniques: bool,
}

/// The layout of a layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NavigatorLayout {
    pub layout: String,
    #[serde(rename = "showID")]
    pub show_id: bool,
    pub show_name: bool,
    pub show_aggregate_scores: bool,
    pub count_unscored: bool,
    pub aggregate_function: String,
    pub expanded_subtechniques: String,
}

/// The colour gradient of scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NavigatorGradient {
    pub colors: Vec<String>,
    pub min_value: i64,
    pub max_value: i64,
}

/// A legend entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NavigatorLegendItem {
    pub label: String,
    pub color: String,
}

/// An ATT&CK Navigator layer (format 4.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NavigatorLayer {
    pub name: String,
    pub versions: NavigatorVersions,
    pub domain: String,
    pub description: String,
    pub sorting: u8,
    pub layout: NavigatorLayout,
    pub hide_disabled: bool,
    pub techniques: Vec<NavigatorTechnique>,
    pub gradient: NavigatorGradient,
    pub legend_items: Vec<NavigatorLegendItem>,
    pub show_tactic_row_background: bool,
    pub tactic_row_background: String,
    pub select_techniques_across_tactics: bool,
    pub select_subtechniques_with_parent: bool,
    pub select_visible_techniques: bool,
    pub metadata: Vec<NavigatorMetadata>,
}

/// The ATT&CK version shared by all extractions, or an error when they disagree.
fn common_attack_version(extractions: &[Extraction]) -> Result<Option<String>> {
    let versions: BTreeSet<&str> = extractions
        .iter()
        .map(|x| x.attack_version.as_str())
        .collect();
    if versions.len() > 1 {
        return Err(Error::InvalidArgument(format!(
            "the extractions use different ATT&CK versions ({}); export them separately",
            versions.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(versions.into_iter().next().map(str::to_string))
}

/// `18.1` -> `18`; `v17` -> `17`.
fn attack_major(version: &str) -> String {
    let v = version.trim().trim_start_matches(['v', 'V']);
    v.split('.').next().unwrap_or(v).to_string()
}

/// Aggregated view of one technique across documents.
struct Aggregate<'e> {
    score: f32,
    sentences: usize,
    tactics: Vec<String>,
    /// (source, evidence) pairs.
    evidence: Vec<(&'e str, EvidenceItem<'e>)>,
}

fn aggregate<'e>(
    extractions: &'e [Extraction],
    lookup: &TechniqueLookup<'_>,
) -> BTreeMap<TechniqueId, Aggregate<'e>> {
    let mut agg: BTreeMap<TechniqueId, Aggregate<'e>> = BTreeMap::new();
    for x in extractions {
        for t in &x.techniques {
            let a = agg.entry(t.technique.clone()).or_insert_with(|| Aggregate {
                score: f32::NEG_INFINITY,
                sentences: 0,
                tactics: Vec::new(),
                evidence: Vec::new(),
            });
            a.score = a.score.max(t.score);
            a.sentences += t.sentences.len();
            for tac in technique_tactics(t, lookup) {
                if !a.tactics.contains(&tac) {
                    a.tactics.push(tac);
                }
            }
            a.evidence.extend(
                evidence_for(x, t)
                    .into_iter()
                    .map(|e| (x.source.as_str(), e)),
            );
        }
    }
    for a in agg.values_mut() {
        // Best evidence first; stable, so document and sentence order break ties.
        a.evidence.sort_by(|(_, x), (_, y)| {
            y.score
                .unwrap_or(f32::NEG_INFINITY)
                .total_cmp(&x.score.unwrap_or(f32::NEG_INFINITY))
        });
    }
    agg
}

fn navigator_score(score: f32) -> u32 {
    if score.is_finite() {
        (score.clamp(0.0, 1.0) * 100.0).round() as u32
    } else {
        0
    }
}

/// An ATT&CK Navigator layer (format 4.5, domain `enterprise-attack`) of the techniques of all
/// `extractions` (see the module doc for the layout choices). Errors when the extractions use
/// different ATT&CK versions.
pub fn navigator_layer(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &NavigatorOptions,
) -> Result<NavigatorLayer> {
    let version = match &opts.attack_version {
        Some(v) => Some(v.clone()),
        None => common_attack_version(extractions)?,
    };
    let multi = extractions.len() > 1;
    let agg = aggregate(extractions, lookup);
    let predicted_parents: BTreeSet<TechniqueId> = agg
        .keys()
        .filter(|t| t.is_subtechnique())
        .map(TechniqueId::parent)
        .collect();

    let mut techniques = Vec::new();
    for (id, a) in &agg {
        let mut comment_lines = Vec::new();
        for (source, e) in a.evidence.iter().take(opts.evidence_sentences) {
            let score = e.score.map(shown_score).unwrap_or_else(|| "-".into());
            let prefix = if multi {
                format!("[{source}] ")
            } else {
                String::new()
            };
            comment_lines.push(format!(
                "{prefix}({score}) {}",
                clip(e.text, opts.evidence_chars)
            ));
        }
        let metadata = vec![
            NavigatorMetadata {
                name: "confidence".into(),
                value: format!("{:.4}", a.score),
            },
            NavigatorMetadata {
                name: "sentences".into(),
                value: a.sentences.to_string(),
            },
        ];
        let tactics: Vec<Option<String>> = if a.tactics.is_empty() {
            vec![None]
        } else {
            a.tactics.iter().cloned().map(Some).collect()
        };
        for tactic in tactics {
            techniques.push(NavigatorTechnique {
                technique_id: id.to_string(),
                tactic,
                score: Some(navigator_score(a.score)),
                comment: comment_lines.join("\n"),
                enabled: true,
                metadata: metadata.clone(),
                show_subtechniques: predicted_parents.contains(id),
            });
        }
    }
    // Unscored parent entries so that predicted sub-techniques are expanded.
    for parent in predicted_parents.iter().filter(|p| !agg.contains_key(*p)) {
        let mut tactics: Vec<String> = Vec::new();
        for (_, a) in agg
            .range(parent.clone()..)
            .take_while(|(id, _)| id.parent() == *parent)
        {
            for t in &a.tactics {
                if !tactics.contains(t) {
                    tactics.push(t.clone());
                }
            }
        }
        let tactics: Vec<Option<String>> = if tactics.is_empty() {
            vec![None]
        } else {
            tactics.into_iter().map(Some).collect()
        };
        for tactic in tactics {
            techniques.push(NavigatorTechnique {
                technique_id: parent.to_string(),
                tactic,
                score: None,
                comment: String::new(),
                enabled: true,
                metadata: Vec::new(),
                show_subtechniques: true,
            });
        }
    }
    techniques.sort_by(|a, b| a.technique_id.cmp(&b.technique_id));

    let name = opts.name.clone().unwrap_or_else(|| match extractions {
        [x] => format!("ttpmap: {}", clip(doc_label(x), 120)),
        xs => format!("ttpmap: {} documents", xs.len()),
    });
    let methods: BTreeSet<&str> = extractions.iter().map(|x| x.method.as_str()).collect();
    let description = opts.description.clone().unwrap_or_else(|| {
        let methods: Vec<&str> = methods.iter().copied().collect();
        format!(
            "Techniques extracted by ttpmap ({}) from {} document(s). Score = confidence x 100.",
            methods.join(", "),
            extractions.len()
        )
    });
    let mut metadata = vec![NavigatorMetadata {
        name: "generator".into(),
        value: format!("ttpmap {}", env!("CARGO_PKG_VERSION")),
    }];
    for x in extractions {
        metadata.push(NavigatorMetadata {
            name: "source".into(),
            value: x.source.clone(),
        });
        metadata.push(NavigatorMetadata {
            name: "method".into(),
            value: format!("{} (threshold {})", x.method, x.threshold),
        });
    }
    Ok(NavigatorLayer {
        name,
        versions: NavigatorVersions {
            attack: version.as_deref().map(attack_major),
            navigator: NAVIGATOR_VERSION.into(),
            layer: NAVIGATOR_LAYER_VERSION.into(),
        },
        domain: "enterprise-attack".into(),
        description,
        sorting: 3,
        layout: NavigatorLayout {
            layout: "side".into(),
            show_id: true,
            show_name: true,
            show_aggregate_scores: false,
            count_unscored: false,
            aggregate_function: "max".into(),
            expanded_subtechniques: "annotated".into(),
        },
        hide_disabled: false,
        techniques,
        gradient: NavigatorGradient {
            colors: vec!["#ffffff".into(), "#ffe766".into(), "#ff6666".into()],
            min_value: 0,
            max_value: 100,
        },
        legend_items: vec![
            NavigatorLegendItem {
                label: "predicted, low confidence".into(),
                color: "#ffe766".into(),
            },
            NavigatorLegendItem {
                label: "predicted, high confidence".into(),
                color: "#ff6666".into(),
            },
        ],
        show_tactic_row_background: false,
        tactic_row_background: "#dddddd".into(),
        select_techniques_across_tactics: true,
        select_subtechniques_with_parent: false,
        select_visible_techniques: false,
        metadata,
    })
}

/// [`navigator_layer`] as pretty JSON.
pub fn to_navigator_json(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &NavigatorOptions,
) -> Result<String> {
    pretty_json(&navigator_layer(extractions, lookup, opts)?)
}

/// Pretty JSON with a final newline.
fn pretty_json<T: Serialize>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value).map_err(json_error)?;
    s.push('\n');
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// STIX 2.1
// ---------------------------------------------------------------------------------------------

/// The ttpmap identity: a fixed id and timestamp, so every bundle names the same creator.
pub const TTPMAP_IDENTITY_ID: &str = "identity--7c2d3f1e-5b0a-4e8c-9d41-2a6f0b8e3c55";
const TTPMAP_IDENTITY_TIME: &str = "2026-01-01T00:00:00.000Z";
/// MITRE's identity in ATT&CK (the `created_by_ref` of every ATT&CK object).
pub const MITRE_IDENTITY_ID: &str = "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5";
/// ATT&CK's copyright marking (the `object_marking_refs` of every ATT&CK object).
pub const ATTACK_MARKING_ID: &str = "marking-definition--fa42a846-8d90-4e51-bc29-71d5b4802168";
const ATTACK_MARKING_STATEMENT: &str = "Copyright 2015-2025, The MITRE Corporation. MITRE ATT&CK and ATT&CK are registered trademarks of The MITRE Corporation.";
const MITRE_TIME: &str = "2017-06-01T00:00:00.000Z";

/// Settings of [`stix_bundle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StixOptions {
    /// Derive ids from the content (reproducible) instead of random UUIDv4s. Default: false.
    /// Timestamps are fixed only by `clock`: set both for byte-identical output.
    pub deterministic: bool,
    /// A fixed RFC 3339 timestamp for `created` / `modified` / `published` (converted to UTC,
    /// millisecond precision). Default: `None`, the current time.
    pub clock: Option<String>,
    /// Evidence sentences in each technique's note. Default: 3.
    pub evidence_sentences: usize,
    /// Longest evidence sentence in a note, in chars. Default: 500.
    pub evidence_chars: usize,
}

impl Default for StixOptions {
    fn default() -> Self {
        StixOptions {
            deterministic: false,
            clock: None,
            evidence_sentences: 3,
            evidence_chars: 500,
        }
    }
}

/// A STIX 2.1 bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixBundle {
    #[serde(rename = "type")]
    pub type_: String,
    pub id: String,
    pub objects: Vec<StixObject>,
}

/// The STIX objects ttpmap writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StixObject {
    Identity(StixIdentity),
    MarkingDefinition(StixMarkingDefinition),
    AttackPattern(StixAttackPattern),
    Report(StixReport),
    Note(StixNote),
}

/// STIX `identity`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixIdentity {
    pub spec_version: String,
    pub id: String,
    pub created: String,
    pub modified: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub identity_class: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub object_marking_refs: Vec<String>,
}

/// A statement marking's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixStatement {
    pub statement: String,
}

/// STIX `marking-definition` (statement).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixMarkingDefinition {
    pub spec_version: String,
    pub id: String,
    pub created: String,
    pub created_by_ref: String,
    pub definition_type: String,
    pub definition: StixStatement,
}

/// A kill-chain phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixKillChainPhase {
    pub kill_chain_name: String,
    pub phase_name: String,
}

/// STIX `attack-pattern`, re-emitting ATT&CK's object (its id, timestamps, name, external
/// references and kill-chain phases).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixAttackPattern {
    pub spec_version: String,
    pub id: String,
    pub created: String,
    pub modified: String,
    pub created_by_ref: String,
    pub name: String,
    pub external_references: Vec<ExternalReference>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub kill_chain_phases: Vec<StixKillChainPhase>,
    pub object_marking_refs: Vec<String>,
}

/// STIX `report`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixReport {
    pub spec_version: String,
    pub id: String,
    pub created: String,
    pub modified: String,
    pub created_by_ref: String,
    pub name: String,
    pub description: String,
    pub report_types: Vec<String>,
    pub published: String,
    pub object_refs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub external_references: Vec<ExternalReference>,
}

/// STIX `note`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StixNote {
    pub spec_version: String,
    pub id: String,
    pub created: String,
    pub modified: String,
    pub created_by_ref: String,
    #[serde(rename = "abstract")]
    pub abstract_: String,
    pub content: String,
    pub object_refs: Vec<String>,
}

/// Normalises an RFC 3339 timestamp to STIX's `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC).
fn stix_timestamp(s: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    Some(
        t.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// Makes ids: random UUIDv4s, or UUIDv4-shaped ids from a SHA-256 of the parts.
///
/// Why not UUIDv5 for deterministic ids: STIX 2.1 says SDO / SMO / bundle ids SHOULD be
/// UUIDv4, and the OASIS validator in strict mode rejects other versions (check 103). So the
/// first 16 bytes of `SHA-256("ttpmap-stix" ‖ parts)` fill the random bits of a v4 layout:
/// reproducible, and still a valid UUIDv4.
struct IdMaker {
    deterministic: bool,
}

impl IdMaker {
    fn make(&self, kind: &str, parts: &[&str]) -> String {
        format!("{kind}--{}", self.uuid(kind, parts))
    }

    /// A bare UUIDv4 (random, or derived from `kind` and `parts`).
    fn uuid(&self, kind: &str, parts: &[&str]) -> uuid::Uuid {
        if self.deterministic {
            let mut h = Sha256::new();
            h.update(b"ttpmap-stix\0");
            h.update(kind.as_bytes());
            for p in parts {
                h.update([0u8]);
                h.update(p.as_bytes());
            }
            let digest = h.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        } else {
            uuid::Uuid::new_v4()
        }
    }
}

fn is_web_url(s: &str) -> bool {
    let l = s.trim().to_ascii_lowercase();
    l.starts_with("https://") || l.starts_with("http://")
}

/// A STIX 2.1 bundle of the extractions.
///
/// Objects, in order:
/// 1. the ttpmap `identity` (fixed id [`TTPMAP_IDENTITY_ID`], `identity_class: system`), the
///    creator of every object ttpmap makes;
/// 2. MITRE's `identity` ([`MITRE_IDENTITY_ID`]) and ATT&CK's copyright `marking-definition`
///    ([`ATTACK_MARKING_ID`]), because the re-emitted ATT&CK objects keep their
///    `created_by_ref` and `object_marking_refs` and a bundle must resolve its references (the
///    validator's `enforce_refs`); both are written as STIX 2.1 objects;
/// 3. one `attack-pattern` per distinct technique, reusing ATT&CK's STIX id, `created`,
///    `modified`, name, external references and kill-chain phases (`mitre-attack` chain), with
///    `spec_version: "2.1"`. ATT&CK's `x_mitre_*` custom properties and its description are not
///    copied: consumers resolve the full object from ATT&CK by id;
/// 4. per document a `report` (`report_types: ["threat-report"]`, `published` = the clock,
///    `object_refs` = its attack-patterns, or the ttpmap identity when nothing was found, an
///    external reference to the source when it is a web URL);
/// 5. per document and technique a `note` holding the evidence sentences, referring to the
///    report and the attack-pattern.
///
/// Ids: random UUIDv4s, or with `deterministic` content-derived UUIDv4s (SHA-256 of the content
/// in a v4 layout; UUIDv5 would fail the validator's strict check 103): the report id from the
/// extraction's position and JSON, note ids from the report id and technique, the bundle id
/// from the report ids. Errors: an invalid `clock`, a technique the lookup does
/// not know ([`Error::UnknownTechnique`]), or an ATT&CK timestamp that is not RFC 3339.
pub fn stix_bundle(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &StixOptions,
) -> Result<StixBundle> {
    let now = match &opts.clock {
        Some(c) => stix_timestamp(c).ok_or_else(|| {
            Error::InvalidArgument(format!("STIX clock {c:?} is not an RFC 3339 timestamp"))
        })?,
        None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let ids = IdMaker {
        deterministic: opts.deterministic,
    };
    let spec = || "2.1".to_string();

    let mut objects = vec![
        StixObject::Identity(StixIdentity {
            spec_version: spec(),
            id: TTPMAP_IDENTITY_ID.into(),
            created: TTPMAP_IDENTITY_TIME.into(),
            modified: TTPMAP_IDENTITY_TIME.into(),
            name: "ttpmap".into(),
            description: Some(
                "ttpmap maps cyber threat intelligence reports to MITRE ATT&CK techniques.".into(),
            ),
            identity_class: "system".into(),
            object_marking_refs: Vec::new(),
        }),
        StixObject::Identity(StixIdentity {
            spec_version: spec(),
            id: MITRE_IDENTITY_ID.into(),
            created: MITRE_TIME.into(),
            modified: MITRE_TIME.into(),
            name: "The MITRE Corporation".into(),
            description: None,
            identity_class: "organization".into(),
            object_marking_refs: vec![ATTACK_MARKING_ID.into()],
        }),
        StixObject::MarkingDefinition(StixMarkingDefinition {
            spec_version: spec(),
            id: ATTACK_MARKING_ID.into(),
            created: MITRE_TIME.into(),
            created_by_ref: MITRE_IDENTITY_ID.into(),
            definition_type: "statement".into(),
            definition: StixStatement {
                statement: ATTACK_MARKING_STATEMENT.into(),
            },
        }),
    ];

    // Attack patterns, once each, in first-seen order.
    let mut pattern_ids: BTreeMap<TechniqueId, String> = BTreeMap::new();
    for x in extractions {
        for dt in &x.techniques {
            if pattern_ids.contains_key(&dt.technique) {
                continue;
            }
            let t = lookup(&dt.technique).ok_or_else(|| Error::UnknownTechnique {
                id: dt.technique.to_string(),
                version: x.attack_version.clone(),
            })?;
            let ts = |s: &str, what: &str| {
                stix_timestamp(s).ok_or_else(|| {
                    Error::invalid(
                        "<ATT&CK catalog>",
                        format!(
                            "{} ({}): {what} {s:?} is not an RFC 3339 timestamp",
                            t.id, t.stix_id
                        ),
                    )
                })
            };
            if !t.stix_id.starts_with("attack-pattern--") {
                return Err(Error::invalid(
                    "<ATT&CK catalog>",
                    format!(
                        "{}: STIX id {:?} is not an attack-pattern id",
                        t.id, t.stix_id
                    ),
                ));
            }
            let external_references = if t.external_references.is_empty() {
                vec![ExternalReference {
                    source_name: "mitre-attack".into(),
                    external_id: Some(t.id.to_string()),
                    url: t.url.clone(),
                    description: None,
                }]
            } else {
                t.external_references.clone()
            };
            objects.push(StixObject::AttackPattern(StixAttackPattern {
                spec_version: spec(),
                id: t.stix_id.clone(),
                created: ts(&t.created, "created")?,
                modified: ts(&t.modified, "modified")?,
                created_by_ref: MITRE_IDENTITY_ID.into(),
                name: t.name.clone(),
                external_references,
                kill_chain_phases: t
                    .tactics
                    .iter()
                    .map(|p| StixKillChainPhase {
                        kill_chain_name: "mitre-attack".into(),
                        phase_name: p.clone(),
                    })
                    .collect(),
                object_marking_refs: vec![ATTACK_MARKING_ID.into()],
            }));
            pattern_ids.insert(dt.technique.clone(), t.stix_id.clone());
        }
    }

    let mut report_ids = Vec::new();
    for (position, x) in extractions.iter().enumerate() {
        let content = serde_json::to_string(x).map_err(json_error)?;
        // The position keeps ids unique when the same extraction is given twice.
        let report_id = ids.make("report", &[&position.to_string(), &content]);
        let mut lines = vec![format!(
            "Techniques extracted by ttpmap from {} ({}, threshold {}, ATT&CK {}): {} technique(s) in {} of {} sentences.",
            x.source,
            x.method,
            x.threshold,
            x.attack_version,
            x.techniques.len(),
            x.sentences.len(),
            x.sentence_count
        )];
        for dt in &x.techniques {
            lines.push(format!(
                "- {} {} (score {}, {} sentence(s))",
                dt.technique,
                technique_name(dt, lookup),
                shown_score(dt.score),
                dt.sentences.len()
            ));
        }
        let mut object_refs: Vec<String> = Vec::new();
        for dt in &x.techniques {
            if let Some(pid) = pattern_ids.get(&dt.technique) {
                if !object_refs.contains(pid) {
                    object_refs.push(pid.clone());
                }
            }
        }
        if object_refs.is_empty() {
            object_refs.push(TTPMAP_IDENTITY_ID.into());
        }
        let external_references = if is_web_url(&x.source) {
            vec![ExternalReference {
                source_name: "source".into(),
                external_id: None,
                url: Some(x.source.trim().to_string()),
                description: x.title.clone(),
            }]
        } else {
            Vec::new()
        };
        objects.push(StixObject::Report(StixReport {
            spec_version: spec(),
            id: report_id.clone(),
            created: now.clone(),
            modified: now.clone(),
            created_by_ref: TTPMAP_IDENTITY_ID.into(),
            name: format!("ttpmap: {}", doc_label(x)),
            description: lines.join("\n"),
            report_types: vec!["threat-report".into()],
            published: now.clone(),
            object_refs,
            external_references,
        }));
        for dt in &x.techniques {
            let Some(pid) = pattern_ids.get(&dt.technique) else {
                continue;
            };
            let evidence = evidence_for(x, dt);
            let mut content: Vec<String> = evidence
                .iter()
                .take(opts.evidence_sentences)
                .map(|e| {
                    let score = e.score.map(shown_score).unwrap_or_else(|| "-".into());
                    format!(
                        "- sentence {} (score {score}): {}",
                        e.sentence,
                        clip(e.text, opts.evidence_chars)
                    )
                })
                .collect();
            if content.is_empty() {
                content.push("(no sentence recorded)".into());
            }
            objects.push(StixObject::Note(StixNote {
                spec_version: spec(),
                id: ids.make("note", &[&report_id, dt.technique.as_str()]),
                created: now.clone(),
                modified: now.clone(),
                created_by_ref: TTPMAP_IDENTITY_ID.into(),
                abstract_: format!(
                    "Evidence for {} {}",
                    dt.technique,
                    technique_name(dt, lookup)
                ),
                content: content.join("\n"),
                object_refs: vec![report_id.clone(), pid.clone()],
            }));
        }
        report_ids.push(report_id);
    }
    let refs: Vec<&str> = report_ids.iter().map(String::as_str).collect();
    Ok(StixBundle {
        type_: "bundle".into(),
        id: ids.make("bundle", &refs),
        objects,
    })
}

/// [`stix_bundle`] as pretty JSON.
pub fn to_stix_json(
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &StixOptions,
) -> Result<String> {
    pretty_json(&stix_bundle(extractions, lookup, opts)?)
}

// ---------------------------------------------------------------------------------------------
// Format dispatch (for the CLI and the server)
// ---------------------------------------------------------------------------------------------

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Json,
    Jsonl,
    Csv,
    Markdown,
    Navigator,
    Stix,
    Misp,
}

impl ExportFormat {
    /// All formats, in documentation order.
    pub const ALL: [ExportFormat; 7] = [
        ExportFormat::Json,
        ExportFormat::Jsonl,
        ExportFormat::Csv,
        ExportFormat::Markdown,
        ExportFormat::Navigator,
        ExportFormat::Stix,
        ExportFormat::Misp,
    ];

    /// The format's name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
            ExportFormat::Markdown => "markdown",
            ExportFormat::Navigator => "navigator",
            ExportFormat::Stix => "stix",
            ExportFormat::Misp => "misp",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Json => "json",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
            ExportFormat::Markdown => "md",
            ExportFormat::Navigator => "layer.json",
            ExportFormat::Stix => "stix.json",
            ExportFormat::Misp => "misp.json",
        }
    }

    /// The MIME type to serve it with.
    pub fn media_type(self) -> &'static str {
        match self {
            ExportFormat::Json | ExportFormat::Navigator | ExportFormat::Misp => "application/json",
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Markdown => "text/markdown; charset=utf-8",
            ExportFormat::Stix => "application/stix+json;version=2.1",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        let f = match l.as_str() {
            "json" => ExportFormat::Json,
            "jsonl" | "ndjson" => ExportFormat::Jsonl,
            "csv" => ExportFormat::Csv,
            "markdown" | "md" => ExportFormat::Markdown,
            "navigator" | "layer" => ExportFormat::Navigator,
            "stix" | "stix2" | "stix21" => ExportFormat::Stix,
            "misp" => ExportFormat::Misp,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown export format {s:?} (expected one of: json, jsonl, csv, markdown, navigator, stix, misp)"
                )))
            }
        };
        Ok(f)
    }
}

/// Options of every format, for [`export`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportOptions {
    pub markdown: MarkdownOptions,
    pub navigator: NavigatorOptions,
    pub stix: StixOptions,
    pub misp: MispOptions,
}

/// Renders `extractions` in `format`.
pub fn export(
    format: ExportFormat,
    extractions: &[Extraction],
    lookup: &TechniqueLookup<'_>,
    opts: &ExportOptions,
) -> Result<String> {
    match format {
        ExportFormat::Json => to_json(extractions),
        ExportFormat::Jsonl => to_jsonl(extractions),
        ExportFormat::Csv => Ok(to_csv(extractions, lookup)),
        ExportFormat::Markdown => Ok(to_markdown(extractions, lookup, &opts.markdown)),
        ExportFormat::Navigator => to_navigator_json(extractions, lookup, &opts.navigator),
        ExportFormat::Stix => to_stix_json(extractions, lookup, &opts.stix),
        ExportFormat::Misp => to_misp_json(extractions, lookup, &opts.misp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_formula_neutralisation() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_text("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_text("-x, y"), "\"'-x, y\"");
    }

    #[test]
    fn clip_folds_whitespace_and_truncates_on_chars() {
        assert_eq!(clip("a  b\n c", 10), "a b c");
        assert_eq!(clip("ééééé", 4), "ééé…");
        assert_eq!(clip("abc def", 5), "abc…");
        assert_eq!(clip("", 5), "");
    }

    #[test]
    fn shown_scores_round_down_so_a_dropped_score_never_reads_as_the_threshold() {
        assert_eq!(shown_score(0.597), "0.59");
        assert_eq!(shown_score(0.6), "0.60");
        assert_eq!(shown_score(0.29), "0.29");
        assert_eq!(shown_score(0.268), "0.26");
        assert_eq!(shown_score(1.0), "1.00");
        assert_eq!(shown_score(0.0), "0.00");
    }

    #[test]
    fn markdown_escaping() {
        assert_eq!(
            md_escape("a|b *c* [d](e) <x>"),
            "a\\|b \\*c\\* \\[d\\](e) \\<x\\>"
        );
        assert_eq!(md_escape("line\nbreak"), "line break");
    }

    #[test]
    fn stix_timestamps_and_ids() {
        assert_eq!(
            stix_timestamp("2026-03-01T12:00:00+02:00").as_deref(),
            Some("2026-03-01T10:00:00.000Z")
        );
        assert_eq!(
            stix_timestamp("2017-05-31T21:30:19.735Z").as_deref(),
            Some("2017-05-31T21:30:19.735Z")
        );
        assert_eq!(stix_timestamp("yesterday"), None);
        let det = IdMaker {
            deterministic: true,
        };
        let a = det.make("report", &["x"]);
        assert_eq!(a, det.make("report", &["x"]));
        assert_ne!(a, det.make("report", &["y"]));
        assert_ne!(
            det.make("report", &["ab", "c"]),
            det.make("report", &["a", "bc"])
        );
        let u = uuid::Uuid::parse_str(a.trim_start_matches("report--")).unwrap();
        assert_eq!(u.get_version_num(), 4);
        let rnd = IdMaker {
            deterministic: false,
        };
        assert_ne!(rnd.make("note", &["x"]), rnd.make("note", &["x"]));
    }

    #[test]
    fn attack_major_version() {
        assert_eq!(attack_major("18.1"), "18");
        assert_eq!(attack_major("v17"), "17");
        assert_eq!(attack_major("16.0.1"), "16");
    }

    #[test]
    fn format_names_round_trip() {
        for f in ExportFormat::ALL {
            assert_eq!(f.name().parse::<ExportFormat>().unwrap(), f);
        }
        assert_eq!(
            "MD".parse::<ExportFormat>().unwrap(),
            ExportFormat::Markdown
        );
        assert!("xml".parse::<ExportFormat>().is_err());
    }
}
