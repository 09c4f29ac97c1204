//! BM25 retrieval over ATT&CK technique documents, with a security-aware analyzer and per-term
//! score explanations.
//!
//! Owns: [`Analyzer`] (text -> terms), [`technique_documents`] (techniques + procedure examples
//! -> [`IndexDoc`]s), [`Bm25Index`] (build, [`Bm25Index::search`], [`Bm25Index::explain`]).
//!
//! Scoring is Okapi BM25 as in Robertson & Zaragoza, "The Probabilistic Relevance Framework:
//! BM25 and Beyond" (2009), <https://doi.org/10.1561/1500000019>, with Lucene's non-negative
//! idf `ln(1 + (N - df + 0.5) / (df + 0.5))`:
//!
//! `score(q, d) = sum over query terms t of idf(t) * tf(t,d) * (k1 + 1) /
//!                (tf(t,d) + k1 * (1 - b + b * len(d) / avglen))`
//!
//! A repeated query term counts once per occurrence (as in `rank_bm25` and Lucene's boolean
//! query). Python's `rank_bm25.BM25Okapi` uses `ln((N - df + 0.5) / (df + 0.5))` instead and
//! replaces negative values by `0.25 * mean idf`; the tests cross-check against it with the idf
//! swapped for Lucene's (the Python is pasted there).
//!
//! Why hand-written rather than `tantivy` or `bm25`: the index needs (1) the custom security
//! analyzer below with multi-token expansion (`t1059.001` -> also `t1059`), (2) field weights
//! applied to term frequency, (3) several documents per technique aggregated by max, and (4) a
//! per-term explanation (tf, df, idf, contribution) the UI shows. tantivy brings all of that
//! only with a schema, a directory and a large dependency; the `bm25` crate has no explanation.
//! The whole scorer is ~150 lines and is tested against a hand computation and `rank_bm25`.
//!
//! Invariants:
//! - Search results are sorted by score descending, ties broken by technique id ascending,
//!   so results are deterministic; only techniques with score > 0 are returned.
//! - Several [`IndexDoc`]s may share a key; a technique's score is the max over its documents,
//!   and [`Bm25Index::explain`] explains that best document.
//! - The index is plain data (serde) and rebuilds the same bytes from the same input.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::attack::Technique;
use crate::error::{Error, Result};
use crate::types::TechniqueId;

// ---------------------------------------------------------------------------------------------
// Analyzer
// ---------------------------------------------------------------------------------------------

/// A small English stop-word list (articles, pronouns, auxiliaries, prepositions).
/// Deliberately short: words such as "file", "user" or "system" carry meaning in ATT&CK text.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "being", "but", "by", "can", "could", "did", "do", "does", "during", "each", "for",
    "from", "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "may", "more", "most", "no", "not", "of", "on", "or", "other", "our", "over", "she",
    "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "through", "to", "under", "up", "upon", "us", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "will", "with", "within", "would",
    "you", "your",
];

/// File extensions for which `name.ext` is kept whole as an extra token.
pub(crate) const FILE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "sys", "ps1", "psm1", "bat", "cmd", "vbs", "vbe", "js", "jse", "hta", "lnk",
    "scr", "msi", "doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "pdf", "rtf", "zip",
    "rar", "7z", "iso", "img", "jar", "py", "sh", "elf", "so", "dylib", "plist", "cpl", "ocx",
    "inf", "wsf", "aspx", "php", "jsp", "txt", "ini", "dat", "tmp", "log", "reg", "xml", "json",
];

/// Registry hive prefixes (lower case) that mark a registry path.
const REGISTRY_HIVES: &[&str] = &[
    "hklm",
    "hkcu",
    "hkcr",
    "hku",
    "hkcc",
    "hkey_local_machine",
    "hkey_current_user",
    "hkey_classes_root",
    "hkey_users",
    "hkey_current_config",
];

/// Text -> terms for security text.
///
/// Steps: lower-case; split on whitespace into chunks; trim surrounding punctuation; a chunk
/// that is a security token is kept whole as an extra term (not stemmed, never a stop word):
/// - ATT&CK technique ids (`t1059.001`, plus the parent `t1059`), tactic/group/software ids;
/// - CVE ids (`cve-2021-34527`); IPv4 addresses (with optional `/prefix`);
/// - file names with a known extension (`powershell.exe`);
/// - registry paths starting with a hive (`hkcu\software\...\run`);
/// - command-line flags (`-encodedcommand`, `-enc`, `--no-profile`, `/c`).
///
/// Every chunk is also split into its alphanumeric words, which go through stop-word removal and
/// the S-stemmer; single characters and one- or two-digit numbers are dropped (scores, counts
/// and version numbers are not evidence; ports and event ids of three or more digits are kept). So `powershell.exe` yields `powershell.exe`, `powershell`, `exe`: a query
/// that says "PowerShell" matches a document that says `powershell.exe` through the word, and
/// an exact file name scores higher through the whole token (its idf is high). `exe` is kept:
/// it is rare in prose and its idf is low where it is frequent.
///
/// Stemming is Harman's S-stemmer (Harman, "How effective is suffixing?", JASIS 1991,
/// <https://doi.org/10.1002/(SICI)1097-4571(199101)42:1%3C7::AID-ASI2%3E3.0.CO;2-P>): it only
/// folds plurals, which keeps technical words ("services", "scheduled", "tasking") readable in
/// explanations and avoids Porter's over-stemming of tool names; no dependency is needed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Analyzer {
    /// Keep stop words (default false: removed).
    pub keep_stop_words: bool,
    /// Disable the S-stemmer (default false: plurals are folded).
    pub no_stemming: bool,
}

impl Analyzer {
    /// The default analyzer (stop words removed, S-stemming on).
    pub fn new() -> Self {
        Analyzer::default()
    }

    /// Analyzes `text` into terms, in text order (duplicates kept: they are term frequencies).
    pub fn analyze(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let lower = text.to_lowercase();
        for raw in lower.split_whitespace() {
            let chunk = trim_punct(raw);
            if chunk.is_empty() {
                continue;
            }
            self.special_tokens(chunk, &mut out);
            for word in chunk.split(|c: char| !c.is_alphanumeric()) {
                if word.is_empty() {
                    continue;
                }
                if !self.keep_stop_words && is_stop_word(word) {
                    continue;
                }
                // A single letter carries no meaning once split from its chunk (`c` of `/c`).
                if word.chars().count() == 1 {
                    continue;
                }
                // Nor does a one- or two-digit number: scores, counts, versions ("5.0",
                // "10 (6.0)") matched technique documents through their list numbering and
                // version strings. Longer numbers stay: ports (445, 3389), event ids (4624).
                if word.len() <= 2 && word.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if self.no_stemming {
                    out.push(word.to_string());
                } else {
                    out.push(s_stem(word));
                }
            }
        }
        out
    }

    /// Pushes the whole-token forms of a security token (none for plain words).
    fn special_tokens(&self, chunk: &str, out: &mut Vec<String>) {
        if let Some(parent) = technique_like(chunk) {
            out.push(chunk.to_string());
            if let Some(p) = parent {
                out.push(p.to_string());
            }
            return;
        }
        if is_cve(chunk) || is_ipv4(chunk) || is_attack_object_id(chunk) {
            out.push(chunk.to_string());
            return;
        }
        if is_flag(chunk) {
            out.push(chunk.to_string());
            return;
        }
        if is_registry_path(chunk) {
            // The whole path; its components (`hkcu`, `currentversion`, `run`) come from the
            // word split below, so a query naming just the key matches too.
            out.push(chunk.trim_end_matches('\\').to_string());
            return;
        }
        if let Some(file) = file_name(chunk) {
            out.push(file.to_string());
        }
    }
}

fn trim_punct(s: &str) -> &str {
    // Leading `-` and `/` are kept: they mark command-line flags.
    s.trim_start_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '/' && c != '\\')
        .trim_end_matches(|c: char| !c.is_alphanumeric() && c != '\\')
}

fn is_stop_word(w: &str) -> bool {
    STOP_WORDS.binary_search(&w).is_ok()
}

/// Harman's S-stemmer: `ies`->`y` (not `eies`/`aies`), `es`->`e` (not `aes`/`ees`/`oes`),
/// `s`->`` (not `us`/`ss`). Words of 3 characters or fewer are left alone.
pub fn s_stem(w: &str) -> String {
    if w.len() <= 3 || !w.is_ascii() {
        return w.to_string();
    }
    if w.ends_with("ies") && !w.ends_with("eies") && !w.ends_with("aies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if w.ends_with("es") && !w.ends_with("aes") && !w.ends_with("ees") && !w.ends_with("oes") {
        return w[..w.len() - 1].to_string();
    }
    if w.ends_with('s') && !w.ends_with("us") && !w.ends_with("ss") {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

/// `t1234` -> Some(None); `t1234.001` -> Some(Some("t1234")); anything else -> None.
fn technique_like(s: &str) -> Option<Option<&str>> {
    let b = s.as_bytes();
    if b.len() >= 5 && b[0] == b't' && b[1..5].iter().all(u8::is_ascii_digit) {
        match b.len() {
            5 => return Some(None),
            9 if b[5] == b'.' && b[6..9].iter().all(u8::is_ascii_digit) => {
                return Some(Some(&s[..5]))
            }
            _ => {}
        }
    }
    None
}

/// Group, software, tactic, mitigation and data-source ids: `g0016`, `s0154`, `ta0011`, ...
fn is_attack_object_id(s: &str) -> bool {
    let digits = |d: &str| d.len() == 4 && d.bytes().all(|c| c.is_ascii_digit());
    ["g", "s", "ta", "m", "ds", "c"]
        .iter()
        .any(|p| s.strip_prefix(p).is_some_and(digits))
}

fn is_cve(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("cve-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let year = parts.next().unwrap_or("");
    let num = parts.next().unwrap_or("");
    parts.next().is_none()
        && year.len() == 4
        && year.bytes().all(|c| c.is_ascii_digit())
        && num.len() >= 4
        && num.bytes().all(|c| c.is_ascii_digit())
}

fn is_ipv4(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let octets: Vec<&str> = addr.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| {
            !o.is_empty()
                && o.len() <= 3
                && o.bytes().all(|c| c.is_ascii_digit())
                && o.parse::<u16>().is_ok_and(|v| v <= 255)
        })
}

fn is_flag(s: &str) -> bool {
    let body = if let Some(b) = s.strip_prefix("--") {
        b
    } else if let Some(b) = s.strip_prefix('-') {
        b
    } else if let Some(b) = s.strip_prefix('/') {
        // `/c`, `/create`, `/domain`; but not a path such as `/etc/passwd`.
        if b.contains('/') || b.len() > 16 {
            return false;
        }
        b
    } else {
        return false;
    };
    let mut chars = body.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_registry_path(s: &str) -> bool {
    let Some((hive, rest)) = s.split_once('\\') else {
        return false;
    };
    !rest.is_empty() && REGISTRY_HIVES.contains(&hive.trim_end_matches(':'))
}

/// `powershell.exe` or `c:\windows\system32\cmd.exe` -> the file name with a known extension.
fn file_name(s: &str) -> Option<&str> {
    let name = s.rsplit(['\\', '/']).next().unwrap_or(s);
    let (stem, ext) = name.rsplit_once('.')?;
    let ok_stem = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    (ok_stem && FILE_EXTENSIONS.contains(&ext)).then_some(name)
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

/// One field of an [`IndexDoc`]: text and an integer weight that multiplies its term
/// frequencies (and its length), as if the text were repeated `weight` times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocField {
    pub text: String,
    pub weight: u32,
}

/// A document to index, retrieved as `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDoc {
    pub key: TechniqueId,
    pub fields: Vec<DocField>,
}

/// How procedure examples become documents.
///
/// Measured on the 348 emulation-plan steps (name + description as query, exact technique
/// match, ATT&CK v18.1, 16,017 procedure examples; see `tests/it/retrieve.rs`):
///
/// | documents                          | P@1   | Hit@3 | Hit@5 |
/// |------------------------------------|-------|-------|-------|
/// | techniques only (id, name x3, desc)| 0.267 | 0.431 | 0.537 |
/// | + procedures concatenated (max 50) | 0.414 | 0.589 | 0.672 |
/// | + procedures concatenated (all)    | 0.448 | 0.612 | 0.690 |
/// | + procedures separate, max (all)   | 0.466 | 0.647 | 0.721 |
/// | + procedures separate, max (≤ 50)  | 0.411 | 0.566 | 0.655 |
///
/// Separate documents with max aggregation win on all three, so they are the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcedureLayout {
    /// Procedure examples are appended to the technique's one document.
    Concatenated,
    /// Each procedure example is its own document (with the technique's id and name); a
    /// technique scores the max over its documents (default).
    #[default]
    Separate,
}

/// Options for [`technique_documents`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocOptions {
    /// Index the technique description (default true).
    pub include_description: bool,
    /// Index procedure examples (default true).
    pub include_procedures: bool,
    /// At most this many procedure examples per technique, in input order (default 10,000:
    /// all of them; the most any technique has in ATT&CK v18.1 is well below that).
    pub max_procedures_per_technique: usize,
    /// Weight of the technique name (default 3: the name counts as if written three times).
    pub name_boost: u32,
    /// Where procedure examples go (default [`ProcedureLayout::Separate`]).
    pub procedure_layout: ProcedureLayout,
}

impl Default for DocOptions {
    fn default() -> Self {
        DocOptions {
            include_description: true,
            include_procedures: true,
            max_procedures_per_technique: 10_000,
            name_boost: 3,
            procedure_layout: ProcedureLayout::Separate,
        }
    }
}

/// Builds index documents for the active techniques (revoked and deprecated ones are skipped).
///
/// A technique's document holds its id (weight 1), its name (weight `name_boost`), its
/// description (weight 1, if `include_description`) and its procedure examples (if
/// `include_procedures`, at most `max_procedures_per_technique`, laid out per
/// `procedure_layout`). Names are used as given: prefixing a sub-technique's name with its
/// parent's (`Command and Scripting Interpreter: PowerShell`, as ATT&CK displays it) is the
/// caller's choice; the measurement in `tests/it/retrieve.rs` does so. Procedures are matched by
/// id as given (the lead remaps them to active ids first); others are ignored.
pub fn technique_documents(
    techniques: &[Technique],
    procedures: &[(TechniqueId, String)],
    opts: &DocOptions,
) -> Vec<IndexDoc> {
    let mut by_tech: BTreeMap<&TechniqueId, Vec<&str>> = BTreeMap::new();
    if opts.include_procedures {
        for (id, text) in procedures {
            let list = by_tech.entry(id).or_default();
            if list.len() < opts.max_procedures_per_technique {
                list.push(text.as_str());
            }
        }
    }
    let mut docs = Vec::new();
    for t in techniques.iter().filter(|t| t.is_active()) {
        let head = vec![
            DocField {
                text: t.id.as_str().to_string(),
                weight: 1,
            },
            DocField {
                text: t.name.clone(),
                weight: opts.name_boost.max(1),
            },
        ];
        let mut fields = head.clone();
        if opts.include_description && !t.description.is_empty() {
            fields.push(DocField {
                text: t.description.clone(),
                weight: 1,
            });
        }
        let procs = by_tech.get(&t.id).map(Vec::as_slice).unwrap_or(&[]);
        match opts.procedure_layout {
            ProcedureLayout::Concatenated => {
                fields.extend(procs.iter().map(|p| DocField {
                    text: p.to_string(),
                    weight: 1,
                }));
                docs.push(IndexDoc {
                    key: t.id.clone(),
                    fields,
                });
            }
            ProcedureLayout::Separate => {
                docs.push(IndexDoc {
                    key: t.id.clone(),
                    fields,
                });
                for p in procs {
                    let mut f = head.clone();
                    f.push(DocField {
                        text: p.to_string(),
                        weight: 1,
                    });
                    docs.push(IndexDoc {
                        key: t.id.clone(),
                        fields: f,
                    });
                }
            }
        }
    }
    docs
}

// ---------------------------------------------------------------------------------------------
// Index
// ---------------------------------------------------------------------------------------------

/// BM25 parameters (Robertson & Zaragoza 2009, section 3.4).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bm25Params {
    /// Term-frequency saturation (default 1.2).
    pub k1: f32,
    /// Length normalisation in [0, 1] (default 0.75).
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.2, b: 0.75 }
    }
}

/// A retrieved technique.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub technique: TechniqueId,
    pub score: f32,
}

/// One query term's share of a score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TermContribution {
    pub term: String,
    /// Weighted term frequency in the explained document.
    pub tf: f32,
    /// Number of documents containing the term.
    pub df: u32,
    pub idf: f32,
    pub contribution: f32,
}

/// Why a technique scored what it scored for a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub score: f32,
    /// Length (weighted term count) of the explained document and the average length.
    pub doc_len: f32,
    pub avg_doc_len: f32,
    /// Per query term (in query order, duplicates kept as separate entries), including terms
    /// that did not match (contribution 0).
    pub terms: Vec<TermContribution>,
}

/// An Okapi BM25 index over [`IndexDoc`]s. See the module doc for the formula.
///
/// Deserialising checks the internal invariants (a corrupt cache is an error, never a panic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Bm25IndexRepr")]
pub struct Bm25Index {
    params: Bm25Params,
    analyzer: Analyzer,
    /// Term -> term id.
    vocab: BTreeMap<String, u32>,
    /// Per term id: (doc index, weighted tf), doc indices ascending.
    postings: Vec<Vec<(u32, f32)>>,
    /// Per doc: weighted length.
    doc_len: Vec<f32>,
    /// Per doc: the technique it belongs to.
    doc_key: Vec<TechniqueId>,
    avg_doc_len: f32,
}

/// The serialised form of [`Bm25Index`], checked by `TryFrom` before use.
#[derive(Deserialize)]
struct Bm25IndexRepr {
    params: Bm25Params,
    analyzer: Analyzer,
    vocab: BTreeMap<String, u32>,
    postings: Vec<Vec<(u32, f32)>>,
    doc_len: Vec<f32>,
    doc_key: Vec<TechniqueId>,
    avg_doc_len: f32,
}

impl TryFrom<Bm25IndexRepr> for Bm25Index {
    type Error = String;
    fn try_from(r: Bm25IndexRepr) -> std::result::Result<Self, String> {
        let n = r.doc_len.len();
        if n == 0 || r.doc_key.len() != n {
            return Err(format!(
                "BM25 index: {n} document lengths but {} keys",
                r.doc_key.len()
            ));
        }
        if r.vocab.len() != r.postings.len()
            || r.vocab.values().any(|&t| t as usize >= r.postings.len())
        {
            return Err("BM25 index: vocabulary and postings disagree".into());
        }
        for plist in &r.postings {
            let sorted = plist.windows(2).all(|w| w[0].0 < w[1].0);
            if !sorted
                || plist
                    .iter()
                    .any(|&(d, tf)| d as usize >= n || !tf.is_finite() || tf <= 0.0)
            {
                return Err("BM25 index: a posting list is unsorted or out of range".into());
            }
        }
        if r.doc_len.iter().any(|l| !(l.is_finite() && *l >= 0.0)) || !r.avg_doc_len.is_finite() {
            return Err("BM25 index: invalid document length".into());
        }
        let p = r.params;
        if !(p.k1 >= 0.0 && p.k1.is_finite() && (0.0..=1.0).contains(&p.b)) {
            return Err("BM25 index: parameters out of range".into());
        }
        Ok(Bm25Index {
            params: r.params,
            analyzer: r.analyzer,
            vocab: r.vocab,
            postings: r.postings,
            doc_len: r.doc_len,
            doc_key: r.doc_key,
            avg_doc_len: r.avg_doc_len,
        })
    }
}

impl Bm25Index {
    /// Builds an index. Errors if `k1 < 0`, `b` is outside [0, 1] or there are no documents.
    pub fn build(docs: &[IndexDoc], params: Bm25Params, analyzer: Analyzer) -> Result<Self> {
        if !(params.k1 >= 0.0 && params.k1.is_finite() && (0.0..=1.0).contains(&params.b)) {
            return Err(Error::InvalidArgument(format!(
                "BM25 parameters out of range: k1={} (>= 0), b={} (in [0, 1])",
                params.k1, params.b
            )));
        }
        if docs.is_empty() {
            return Err(Error::InvalidArgument(
                "BM25 index needs at least one document".into(),
            ));
        }
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, f32)>> = Vec::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        let mut doc_key = Vec::with_capacity(docs.len());
        let mut tf: HashMap<u32, f32> = HashMap::new();
        for (di, doc) in docs.iter().enumerate() {
            tf.clear();
            let mut len = 0f32;
            for field in &doc.fields {
                let w = field.weight as f32;
                for term in analyzer.analyze(&field.text) {
                    let next = vocab.len() as u32;
                    let id = *vocab.entry(term).or_insert(next);
                    if id as usize == postings.len() {
                        postings.push(Vec::new());
                    }
                    *tf.entry(id).or_insert(0.0) += w;
                    len += w;
                }
            }
            let mut entries: Vec<(u32, f32)> = tf.iter().map(|(&t, &f)| (t, f)).collect();
            entries.sort_by_key(|e| e.0);
            for (t, f) in entries {
                postings[t as usize].push((di as u32, f));
            }
            doc_len.push(len);
            doc_key.push(doc.key.clone());
        }
        // Renumber terms in sorted order so the same input always gives the same index.
        let mut sorted: Vec<(String, u32)> = vocab.into_iter().collect();
        sorted.sort();
        let mut new_postings = Vec::with_capacity(sorted.len());
        let mut new_vocab = BTreeMap::new();
        for (i, (term, old)) in sorted.into_iter().enumerate() {
            new_postings.push(std::mem::take(&mut postings[old as usize]));
            new_vocab.insert(term, i as u32);
        }
        let avg_doc_len = doc_len.iter().sum::<f32>() / doc_len.len() as f32;
        Ok(Bm25Index {
            params,
            analyzer,
            vocab: new_vocab,
            postings: new_postings,
            doc_len,
            doc_key,
            avg_doc_len,
        })
    }

    /// Number of indexed documents.
    pub fn num_docs(&self) -> usize {
        self.doc_len.len()
    }

    /// Number of distinct terms.
    pub fn num_terms(&self) -> usize {
        self.vocab.len()
    }

    /// The analyzer the index was built with (queries go through the same one).
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> Bm25Params {
        self.params
    }

    /// Lucene's idf: `ln(1 + (N - df + 0.5) / (df + 0.5))`, always > 0.
    fn idf(&self, df: usize) -> f32 {
        let n = self.num_docs() as f32;
        let df = df as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    fn term_score(&self, idf: f32, tf: f32, len: f32) -> f32 {
        let Bm25Params { k1, b } = self.params;
        let norm = if self.avg_doc_len > 0.0 {
            len / self.avg_doc_len
        } else {
            0.0
        };
        idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * norm))
    }

    /// Scores of every document for `query` (0 for documents with no query term).
    fn doc_scores(&self, query: &str) -> Vec<f32> {
        let mut scores = vec![0f32; self.num_docs()];
        for term in self.analyzer.analyze(query) {
            let Some(&tid) = self.vocab.get(&term) else {
                continue;
            };
            let plist = &self.postings[tid as usize];
            let idf = self.idf(plist.len());
            for &(d, tf) in plist {
                scores[d as usize] += self.term_score(idf, tf, self.doc_len[d as usize]);
            }
        }
        scores
    }

    /// The `k` best techniques for `query`: score = max over the technique's documents; sorted
    /// by score descending, ties by id ascending; techniques scoring 0 are not returned.
    ///
    /// ```
    /// use ttpmap_core::retrieve::{Analyzer, Bm25Index, Bm25Params, DocField, IndexDoc};
    /// use ttpmap_core::TechniqueId;
    ///
    /// let doc = |id: &str, text: &str| IndexDoc {
    ///     key: TechniqueId::parse(id).unwrap(),
    ///     fields: vec![DocField { text: text.into(), weight: 1 }],
    /// };
    /// let docs = [
    ///     doc("T1059.001", "PowerShell commands and scripts"),
    ///     doc("T1003.001", "Dumping LSASS memory for credentials"),
    /// ];
    /// let index = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
    /// let hits = index.search("they dumped lsass.exe memory", 5);
    /// assert_eq!(hits[0].technique.as_str(), "T1003.001");
    /// assert_eq!(hits.len(), 1);
    /// ```
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let scores = self.doc_scores(query);
        let mut best: HashMap<&TechniqueId, f32> = HashMap::new();
        for (d, &s) in scores.iter().enumerate() {
            if s > 0.0 {
                let e = best.entry(&self.doc_key[d]).or_insert(s);
                if s > *e {
                    *e = s;
                }
            }
        }
        let mut hits: Vec<Hit> = best
            .into_iter()
            .map(|(t, score)| Hit {
                technique: t.clone(),
                score,
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.technique.cmp(&b.technique))
        });
        hits.truncate(k);
        hits
    }

    /// Explains the score of `technique` for `query` (its best-scoring document). `None` if the
    /// technique has no document in the index.
    pub fn explain(&self, query: &str, technique: &TechniqueId) -> Option<Explanation> {
        let scores = self.doc_scores(query);
        let doc = (0..self.num_docs())
            .filter(|&d| &self.doc_key[d] == technique)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))?;
        let len = self.doc_len[doc];
        let mut terms = Vec::new();
        let mut total = 0f32;
        for term in self.analyzer.analyze(query) {
            let (tf, df) = match self.vocab.get(&term) {
                Some(&tid) => {
                    let plist = &self.postings[tid as usize];
                    let tf = plist
                        .binary_search_by_key(&(doc as u32), |e| e.0)
                        .map(|i| plist[i].1)
                        .unwrap_or(0.0);
                    (tf, plist.len())
                }
                None => (0.0, 0),
            };
            let idf = if df > 0 { self.idf(df) } else { 0.0 };
            let contribution = if tf > 0.0 {
                self.term_score(idf, tf, len)
            } else {
                0.0
            };
            total += contribution;
            terms.push(TermContribution {
                term,
                tf,
                df: df as u32,
                idf,
                contribution,
            });
        }
        Some(Explanation {
            score: total,
            doc_len: len,
            avg_doc_len: self.avg_doc_len,
            terms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    fn doc(key: &str, text: &str) -> IndexDoc {
        IndexDoc {
            key: tid(key),
            fields: vec![DocField {
                text: text.into(),
                weight: 1,
            }],
        }
    }

    #[test]
    fn stop_words_sorted_for_binary_search() {
        let mut s = STOP_WORDS.to_vec();
        s.sort();
        assert_eq!(s, STOP_WORDS);
    }

    #[test]
    fn short_numbers_are_not_terms_but_ports_and_event_ids_are() {
        let a = Analyzer::new();
        let t = a.analyze(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) scores 0 (7.7); 5 (6.3); 10 (6.0) \
             over port 3389, event 4624",
        );
        for gone in ["0", "5", "7", "10", "6", "3"] {
            assert!(!t.contains(&gone.to_string()), "{gone} kept in {t:?}");
        }
        for kept in ["3389", "4624", "win64", "x64", "mozilla", "score"] {
            assert!(t.contains(&kept.to_string()), "{kept} missing from {t:?}");
        }
    }

    #[test]
    fn analyzer_keeps_security_tokens() {
        let a = Analyzer::new();
        let t = a.analyze("Uses T1059.001 and powershell.exe -EncodedCommand (CVE-2021-34527).");
        for want in [
            "t1059.001",
            "t1059",
            "powershell.exe",
            "powershell",
            "exe",
            "-encodedcommand",
            "encodedcommand",
            "cve-2021-34527",
            "cve",
            "2021",
            "34527",
            "use",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
        assert!(!t.contains(&"and".to_string()));
        let t =
            a.analyze(r"Adds HKCU\Software\Microsoft\Windows\CurrentVersion\Run, then 10.1.0.6");
        for want in [
            r"hkcu\software\microsoft\windows\currentversion\run",
            "hkcu",
            "currentversion",
            "run",
            "10.1.0.6",
            "add",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
        let t = a.analyze("cmd.exe /c whoami; net group \"domain admins\" /domain -enc");
        for want in [
            "cmd.exe", "/c", "/domain", "-enc", "whoami", "domain", "admin", "group",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
        assert!(!t.contains(&"c".to_string()));
        assert!(a
            .analyze("G0016 S0154 TA0011")
            .iter()
            .any(|x| x == "ta0011"));
    }

    #[test]
    fn s_stemmer_follows_harman() {
        assert_eq!(s_stem("queries"), "query");
        assert_eq!(s_stem("services"), "service");
        assert_eq!(s_stem("accounts"), "account");
        assert_eq!(s_stem("access"), "access");
        assert_eq!(s_stem("virus"), "virus");
        assert_eq!(
            s_stem("goes"),
            "goe",
            "oes: rule 2 does not apply, rule 3 does"
        );
        assert_eq!(s_stem("has"), "has");
    }

    #[test]
    fn not_flags_or_ids() {
        assert!(!is_flag("/etc/passwd"));
        assert!(!is_flag("-1"));
        assert!(!is_ipv4("300.1.1.1"));
        assert!(is_ipv4("192.168.0.0/16"));
        assert!(technique_like("t10591").is_none());
        assert!(!is_cve("cve-21-1"));
    }

    /// Hand computation: 3 docs, k1=1.2, b=0.75.
    /// d0 = [credential dump] (len 2), d1 = [credential credential phish] (len 3),
    /// d2 = [scan network] (len 2); avgdl = 7/3. Query "credential".
    /// df=2, idf = ln(1 + (3-2+0.5)/(2+0.5)) = ln(1.6) = 0.470004.
    /// d0: tf=1, norm = 1 - 0.75 + 0.75*2/(7/3) = 0.892857; 0.470004*2.2/(1+1.2*0.892857)
    ///     = 1.034008/2.071429 = 0.499176.
    /// d1: tf=2, norm = 0.25 + 0.75*3/(7/3) = 1.214286; 0.470004*4.4/(2+1.457143) = 0.598187.
    #[test]
    fn bm25_matches_hand_computation() {
        let docs = vec![
            doc("T1003", "credential dump"),
            doc("T1566", "credential credential phish"),
            doc("T1046", "scan network"),
        ];
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let hits = idx.search("credential", 10);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].technique, tid("T1566"));
        assert!((hits[0].score - 0.598187).abs() < 1e-5, "{}", hits[0].score);
        assert!((hits[1].score - 0.499176).abs() < 1e-5, "{}", hits[1].score);
        let ex = idx.explain("credential", &tid("T1003")).unwrap();
        assert_eq!(ex.terms.len(), 1);
        assert_eq!(ex.terms[0].df, 2);
        assert!((ex.terms[0].idf - 0.470004).abs() < 1e-5);
        assert!((ex.score - hits[1].score).abs() < 1e-6);
    }

    /// Cross-check with Python's rank_bm25 0.2.2 (BM25Okapi, k1=1.5 default overridden to 1.2,
    /// b=0.75), with its idf replaced by Lucene's so the formulas agree; the analyzer output
    /// is passed as pre-tokenised lists:
    ///
    /// ```python
    /// import math
    /// from rank_bm25 import BM25Okapi
    /// class Lucene(BM25Okapi):
    ///     def _calc_idf(self, nd):
    ///         for w, f in nd.items():
    ///             self.idf[w] = math.log(1 + (self.corpus_size - f + 0.5) / (f + 0.5))
    /// corpus = [["adversari", "dump", "credential", "lsass"], ["credential", "phish", "email"],
    ///           ["scan", "network", "service", "port", "scan"], ["dump", "lsass", "memory"],
    ///           ["email", "collect", "mailbox"]]
    /// for cls in (Lucene, BM25Okapi):
    ///     print(cls.__name__, list(cls(corpus, k1=1.2, b=0.75).get_scores(["dump", "lsass", "scan"])))
    /// ```
    /// prints `Lucene [1.6748097584161565, 0.0, 1.7182239968809914, 1.879054850905932, 0.0]`
    /// (pasted below) and `BM25Okapi [0.6436860178840597, 0.0, 1.3616603014477981,
    /// 0.7221843127479695, 0.0]`: stock BM25Okapi's idf is ln((N - df + 0.5) / (df + 0.5)),
    /// 0.336 instead of 0.875 for df=2 (its negative-idf floor, 0.25 * mean idf, does not
    /// trigger here).
    #[test]
    fn bm25_matches_rank_bm25_with_lucene_idf() {
        // Words chosen so the analyzer keeps them as they are.
        let texts = [
            "adversari dump credential lsass",
            "credential phish email",
            "scan network service port scan",
            "dump lsass memory",
            "email collect mailbox",
        ];
        let keys = ["T1001", "T1002", "T1003", "T1004", "T1005"];
        let docs: Vec<IndexDoc> = keys.iter().zip(texts).map(|(k, t)| doc(k, t)).collect();
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let scores = idx.doc_scores("dump lsass scan");
        let expected = [1.674_809_8_f32, 0.0, 1.718_224, 1.879_054_9, 0.0];
        for (got, want) in scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-4, "{scores:?} vs {expected:?}");
        }
    }

    #[test]
    fn aggregation_is_max_and_ties_break_by_id() {
        let docs = vec![
            doc("T1002", "alpha"),
            doc("T1001", "alpha"),
            doc("T1003", "beta gamma"),
            doc("T1003", "alpha beta"),
        ];
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let hits = idx.search("alpha", 10);
        assert_eq!(hits[0].technique, tid("T1001"));
        assert_eq!(hits[1].technique, tid("T1002"));
        assert_eq!(hits[0].score, hits[1].score);
        assert_eq!(hits.len(), 3);
        let ex = idx.explain("alpha beta", &tid("T1003")).unwrap();
        assert!(
            ex.terms.iter().all(|t| t.tf > 0.0),
            "explains the best doc (alpha beta)"
        );
        assert!(idx.search("zzz", 5).is_empty());
        assert_eq!(idx.search("alpha", 1).len(), 1);
        assert!(idx.explain("alpha", &tid("T1999")).is_none());
    }

    #[test]
    fn field_weight_equals_repetition() {
        let weighted = vec![
            IndexDoc {
                key: tid("T1001"),
                fields: vec![DocField {
                    text: "remote desktop".into(),
                    weight: 3,
                }],
            },
            doc("T1002", "desktop wallpaper"),
        ];
        let repeated = vec![
            doc("T1001", "remote desktop remote desktop remote desktop"),
            doc("T1002", "desktop wallpaper"),
        ];
        let a = Bm25Index::build(&weighted, Bm25Params::default(), Analyzer::new()).unwrap();
        let b = Bm25Index::build(&repeated, Bm25Params::default(), Analyzer::new()).unwrap();
        assert_eq!(a.search("remote desktop", 5), b.search("remote desktop", 5));
    }

    #[test]
    fn rejects_bad_params_and_empty() {
        let docs = vec![doc("T1001", "x")];
        let p = Bm25Params { k1: 1.2, b: 1.5 };
        assert!(Bm25Index::build(&docs, p, Analyzer::new()).is_err());
        assert!(Bm25Index::build(&[], Bm25Params::default(), Analyzer::new()).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let docs = vec![doc("T1001", "alpha beta"), doc("T1002", "beta")];
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let json = serde_json::to_string(&idx).unwrap();
        let back: Bm25Index = serde_json::from_str(&json).unwrap();
        assert_eq!(idx, back);
        assert_eq!(back.search("beta", 5), idx.search("beta", 5));
    }

    #[test]
    fn options_fill_defaults_and_reject_unknown_fields() {
        let o: DocOptions = serde_json::from_str(r#"{"name_boost": 2}"#).unwrap();
        assert_eq!(
            o,
            DocOptions {
                name_boost: 2,
                ..DocOptions::default()
            }
        );
        let p: Bm25Params = serde_json::from_str(r#"{"b": 0.5}"#).unwrap();
        assert_eq!(p, Bm25Params { k1: 1.2, b: 0.5 });
        assert!(serde_json::from_str::<DocOptions>(r#"{"boost": 2}"#).is_err());
    }

    #[test]
    fn corrupt_cache_is_an_error() {
        let docs = vec![doc("T1001", "alpha beta"), doc("T1002", "beta")];
        let idx = Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap();
        let mut v = serde_json::to_value(&idx).unwrap();
        v["postings"][0][0][0] = serde_json::json!(99);
        let err = serde_json::from_value::<Bm25Index>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
        let mut v = serde_json::to_value(&idx).unwrap();
        v["doc_key"] = serde_json::json!(["T1001"]);
        assert!(serde_json::from_value::<Bm25Index>(v).is_err());
    }

    fn technique(id: &str, name: &str, active: bool) -> Technique {
        Technique {
            id: tid(id),
            stix_id: format!("attack-pattern--{id}"),
            name: name.into(),
            description: format!("{name} description"),
            tactics: vec![],
            platforms: vec![],
            parent: None,
            subtechniques: vec![],
            revoked: !active,
            deprecated: false,
            revoked_by: None,
            url: None,
            external_references: vec![],
            created: String::new(),
            modified: String::new(),
        }
    }

    #[test]
    fn technique_documents_layouts() {
        let techs = vec![
            technique("T1001", "Data Obfuscation", true),
            technique("T1002", "Old", false),
        ];
        let procs = vec![
            (tid("T1001"), "p1".to_string()),
            (tid("T1001"), "p2".to_string()),
            (tid("T1001"), "p3".to_string()),
            (tid("T1002"), "q".to_string()),
        ];
        let mut opts = DocOptions {
            max_procedures_per_technique: 2,
            procedure_layout: ProcedureLayout::Concatenated,
            ..DocOptions::default()
        };
        let docs = technique_documents(&techs, &procs, &opts);
        assert_eq!(docs.len(), 1, "revoked technique skipped");
        assert_eq!(
            docs[0].fields.len(),
            5,
            "id, name, description, 2 procedures"
        );
        assert_eq!(docs[0].fields[1].weight, 3);
        opts.procedure_layout = ProcedureLayout::Separate;
        let docs = technique_documents(&techs, &procs, &opts);
        assert_eq!(docs.len(), 3);
        assert!(docs.iter().all(|d| d.key == tid("T1001")));
        opts.include_procedures = false;
        opts.include_description = false;
        let docs = technique_documents(&techs, &procs, &opts);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].fields.len(), 2);
    }
}
