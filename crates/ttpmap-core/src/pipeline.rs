//! The extraction pipeline: a scorer proposes techniques per sentence, the pipeline thresholds
//! them and aggregates sentence predictions into the document-level summary.
//!
//! Models plug in through [`SentenceScorer`] (BM25 here; dense, classifier and reranker scorers
//! live in ttpmap-ml). Invariants of [`extract`]'s output:
//! - scores are the scorer's, except that under the scorer's [`DocumentRule`] a technique's
//!   best sentence may carry the document's confidence (with a reason saying so);
//! - every kept prediction has `score >= threshold`, and a sentence keeps those of at most
//!   `max_per_sentence` technique families (a sub-technique and its parent count once), best
//!   first (ties: a sub-technique before its parent, then by technique id);
//! - `Extraction::sentences` lists only sentences with a prediction, in document order;
//! - sentences shorter than `min_sentence_chars` and lists of indicators (IOC table rows,
//!   lines of hashes and addresses: [`crate::ingest::indicators`]) are not scored;
//! - the document technique set is exactly the union of the kept sentence predictions, best
//!   score first; a technique's `sentences` are ordered by that technique's score.
//!
//! [`extract_cancellable`] is [`extract`] for a service: it scores in batches of
//! [`CANCEL_CHECK_SENTENCES`] and asks its `cancelled` callback before each batch, so work
//! nobody waits for any more stops within one batch (its result is `None`).
//!
//! A scorer that others look up by type ([`find_scorer`]) implements `as_any` with
//! [`impl_scorer_any!`](crate::impl_scorer_any); one that keeps the caller's settings as they
//! are stores them with [`ScoreOptions::store`].

use std::collections::{BTreeMap, BTreeSet};

use crate::attack::Technique;
use crate::error::{Error, Result};
use crate::retrieve::Bm25Index;
use crate::types::{
    Document, DocumentTechnique, Evidence, Extraction, Prediction, SentencePredictions, TechniqueId,
};

/// Anything that scores ATT&CK techniques for sentences: a scoring method.
///
/// A method is one type implementing this trait (BM25 and the hybrid fusion here; dense,
/// classifier and reranker scorers in ttpmap-ml), built by the application's method registry.
/// Only [`name`](SentenceScorer::name) and [`score`](SentenceScorer::score) are required; the
/// rest have defaults a simple method keeps.
pub trait SentenceScorer: Send + Sync {
    /// Short method name recorded in outputs (`bm25`, `dense`, `classifier`, ...).
    fn name(&self) -> &str;

    /// Candidate predictions for each sentence, in any order; `out.len() == sentences.len()`.
    /// Scores are confidences in [0, 1].
    fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>>;

    /// The extraction threshold used when the caller gives none. Default 0.5.
    fn default_threshold(&self) -> f32 {
        0.5
    }

    /// How a document's techniques follow from its sentences' scores (the threshold applies
    /// to the result). Default [`DocumentRule::AnySentence`].
    fn document_rule(&self) -> DocumentRule {
        DocumentRule::AnySentence
    }

    /// Whether it reads `passage`, a text given as one input (a `rank` query, an emulation
    /// step's description), as it is, or sentence by sentence (see [`score_passages`]).
    /// Default: as it is (retrieval methods: BM25's bag of words, one dense vector, a
    /// cross-encoder pair).
    fn reads_whole(&self, passage: &str) -> bool {
        let _ = passage;
        true
    }

    /// Applies the caller's settings (candidates per sentence, evidence, label space); a
    /// composite scorer passes them on to its parts. Default: ignores them.
    fn configure(&mut self, options: &ScoreOptions) {
        let _ = options;
    }

    /// The scorer as [`Any`](std::any::Any), for capabilities particular to one method (e.g.
    /// per-seed scoring of a classifier ensemble); see [`find_scorer`]. Default `None`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Mutable [`as_any`](SentenceScorer::as_any); see [`find_scorer_mut`]. Default `None`.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }

    /// Whether its predictions already take the technique ids a sentence cites as evidence
    /// (see [`crate::software::CitingScorer`], which gives that to any method). Default: when
    /// one of its [`parts`](SentenceScorer::parts) does.
    fn reads_citations(&self) -> bool {
        self.parts().iter().any(|p| p.reads_citations())
    }

    /// The scorers a composite scorer is made of (hybrid: both; reranker: its first stage).
    /// Default: none.
    fn parts(&self) -> Vec<&dyn SentenceScorer> {
        Vec::new()
    }

    /// Mutable [`parts`](SentenceScorer::parts).
    fn parts_mut(&mut self) -> Vec<&mut dyn SentenceScorer> {
        Vec::new()
    }
}

/// The settings every scorer takes from its caller (see [`SentenceScorer::configure`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreOptions {
    /// Candidates proposed per sentence (before thresholding).
    pub top_k: usize,
    /// Attach human-readable reasons to predictions (evaluation turns it off).
    pub with_evidence: bool,
    /// When set, only these techniques may be proposed (a dataset's label space); scorers fall
    /// back from a sub-technique to its parent when only the parent is in it.
    pub label_space: Option<BTreeSet<TechniqueId>>,
}

impl ScoreOptions {
    /// Stores the three settings in a scorer's fields of the same names: what a scorer that
    /// takes them as they are does in [`SentenceScorer::configure`].
    pub fn store(
        &self,
        top_k: &mut usize,
        with_evidence: &mut bool,
        label_space: &mut Option<BTreeSet<TechniqueId>>,
    ) {
        *top_k = self.top_k;
        *with_evidence = self.with_evidence;
        *label_space = self.label_space.clone();
    }
}

/// The technique `id` counts as under `label_space` (see [`ScoreOptions::label_space`]): itself
/// when the space has it or there is no space, else its parent when the space has that, else
/// none.
pub fn in_label_space(
    id: &TechniqueId,
    label_space: Option<&BTreeSet<TechniqueId>>,
) -> Option<TechniqueId> {
    match label_space {
        None => Some(id.clone()),
        Some(ls) if ls.contains(id) => Some(id.clone()),
        Some(ls) => Some(id.parent()).filter(|p| ls.contains(p)),
    }
}

/// Implements [`SentenceScorer::as_any`] and [`SentenceScorer::as_any_mut`] as `Some(self)`
/// inside an `impl SentenceScorer for T` block, so that [`find_scorer`] finds a `T` (a
/// `'static` type): `ttpmap_core::impl_scorer_any!();`.
#[macro_export]
macro_rules! impl_scorer_any {
    () => {
        fn as_any(&self) -> Option<&dyn std::any::Any> {
            Some(self)
        }

        fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
            Some(self)
        }
    };
}

/// The scorer of type `T` in `scorer` or among its [`parts`](SentenceScorer::parts)
/// (depth-first, itself first).
pub fn find_scorer<T: 'static>(scorer: &dyn SentenceScorer) -> Option<&T> {
    if let Some(t) = scorer.as_any().and_then(|a| a.downcast_ref::<T>()) {
        return Some(t);
    }
    scorer.parts().into_iter().find_map(find_scorer::<T>)
}

/// Mutable [`find_scorer`].
pub fn find_scorer_mut<T: 'static>(scorer: &mut dyn SentenceScorer) -> Option<&mut T> {
    if scorer.as_any().is_some_and(|a| a.is::<T>()) {
        return scorer.as_any_mut()?.downcast_mut::<T>();
    }
    scorer
        .parts_mut()
        .into_iter()
        .find_map(find_scorer_mut::<T>)
}

/// How a document's techniques follow from its sentences' scores.
///
/// With [`DocumentRule::NoisyOr`], each technique's best sentence carries the document's
/// confidence: `1 - (1 - p1)(1 - p2)...(1 - pk)` over the technique's `top` best sentence
/// scores (several sentences with middling evidence add up; `top` keeps a long report from
/// adding up many weak ones). The other sentences keep their own scores, so the document set
/// is still the union of the sentence predictions at the threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DocumentRule {
    /// A technique is in the document when one of its sentences reaches the threshold.
    #[default]
    AnySentence,
    /// Noisy-OR of each technique's `top` best sentence scores (`top` >= 1).
    NoisyOr { top: usize },
}

/// One raised score of [`DocumentRule::lifts`].
#[derive(Clone, Debug, PartialEq)]
pub struct Lift {
    /// Row (sentence) and entry (within the row) of the technique's best sentence score.
    pub sentence: usize,
    pub entry: usize,
    /// The document confidence it is raised to.
    pub score: f32,
    /// The sentence scores it combines, best first (the first is the entry's own).
    pub support: Vec<f32>,
}

impl DocumentRule {
    /// The raises this rule makes to the `(technique, score)` rows of one document's
    /// sentences (none for [`DocumentRule::AnySentence`], or where one sentence is all the
    /// evidence). Deterministic: ties go to the earlier sentence.
    pub fn lifts(&self, rows: &[Vec<(&TechniqueId, f32)>]) -> Vec<Lift> {
        let top = match *self {
            DocumentRule::AnySentence => return Vec::new(),
            DocumentRule::NoisyOr { top } => top.max(1),
        };
        let mut by_tech: BTreeMap<&TechniqueId, Vec<(f32, usize, usize)>> = BTreeMap::new();
        for (i, row) in rows.iter().enumerate() {
            for (j, (t, p)) in row.iter().enumerate() {
                if p.is_finite() && *p > 0.0 {
                    let hits = by_tech.entry(*t).or_default();
                    // A technique listed twice for one sentence counts once, at its best.
                    match hits.last_mut() {
                        Some(h) if h.1 == i => {
                            if p.min(1.0) > h.0 {
                                *h = (p.min(1.0), i, j);
                            }
                        }
                        _ => hits.push((p.min(1.0), i, j)),
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (_, mut hits) in by_tech {
            if hits.len() < 2 {
                continue;
            }
            hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            hits.truncate(top);
            let miss: f32 = hits.iter().map(|h| 1.0 - h.0).product();
            let score = (1.0 - miss).clamp(0.0, 1.0);
            if hits.len() >= 2 && score > hits[0].0 {
                out.push(Lift {
                    sentence: hits[0].1,
                    entry: hits[0].2,
                    score,
                    support: hits.iter().map(|h| h.0).collect(),
                });
            }
        }
        out
    }
}

/// Scores each passage the way `scorer` reads one ([`SentenceScorer::reads_whole`]): as it is
/// (the scorer's answer unchanged), or split into sentences ([`crate::ingest::split_sentences`])
/// with each technique's passage score following the scorer's document rule over them, as
/// `extract` scores a document ([`lift_predictions`]): with the noisy-OR rule, two sentences
/// that each describe a technique raise it above either. A model trained on single sentences
/// of at most 64 tokens would otherwise read only a long passage's first tokens. All texts go
/// to the scorer in one call. A passage read by sentence gets its candidates sorted by
/// [`rank_order`], one per technique (its best), with the sentence it comes from as evidence.
pub fn score_passages(
    scorer: &dyn SentenceScorer,
    passages: &[&str],
) -> Result<Vec<Vec<Prediction>>> {
    let mut pieces: Vec<&str> = Vec::new();
    let mut ranges = Vec::with_capacity(passages.len());
    for &p in passages {
        let start = pieces.len();
        let parts: Vec<&str> = if scorer.reads_whole(p) {
            Vec::new()
        } else {
            crate::ingest::split_sentences(p)
                .iter()
                .map(|s| p[s.start..s.end].trim())
                .filter(|t| !t.is_empty())
                .collect()
        };
        if parts.len() > 1 {
            pieces.extend(parts);
        } else {
            pieces.push(p);
        }
        ranges.push(start..pieces.len());
    }
    let mut scored = score_each(scorer, &pieces)?.into_iter();
    let rule = scorer.document_rule();
    Ok(ranges
        .into_iter()
        .map(|r| {
            let n = r.len();
            let mut rows: Vec<Vec<Prediction>> = scored.by_ref().take(n).collect();
            if n == 1 {
                return rows.pop().unwrap_or_default();
            }
            lift_predictions(&mut rows, rule, &pieces[r.clone()]);
            for (i, row) in rows.iter_mut().enumerate() {
                for p in row.iter_mut().filter(|p| !p.evidence.reasons.is_empty()) {
                    p.evidence
                        .reasons
                        .push(format!("sentence {} of {n}", i + 1));
                }
            }
            let mut preds: Vec<Prediction> = rows.into_iter().flatten().collect();
            sort_predictions(&mut preds);
            dedup_by_technique(&mut preds);
            preds
        })
        .collect())
}

/// `scorer.score(texts)`, checked to give one result per text.
fn score_each(scorer: &dyn SentenceScorer, texts: &[&str]) -> Result<Vec<Vec<Prediction>>> {
    let scored = scorer.score(texts)?;
    if scored.len() != texts.len() {
        return Err(Error::InvalidArgument(format!(
            "scorer {} returned {} results for {} sentences",
            scorer.name(),
            scored.len(),
            texts.len()
        )));
    }
    Ok(scored)
}

/// Looks up catalog metadata for a technique (the catalog, in the application).
pub type TechniqueLookup<'a> = &'a dyn Fn(&TechniqueId) -> Option<&'a Technique>;

/// Settings of [`extract`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractOptions {
    /// Minimum confidence for a prediction to be kept. Default 0.5.
    pub threshold: f32,
    /// At most this many techniques per sentence. Default 3.
    pub max_per_sentence: usize,
    /// Sentences shorter than this many characters (after trimming) are not scored: headings
    /// such as "Execution" carry no evidence of their own. Default 12.
    pub min_sentence_chars: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            threshold: 0.5,
            max_per_sentence: 3,
            min_sentence_chars: 12,
        }
    }
}

impl ExtractOptions {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) || self.threshold.is_nan() {
            return Err(Error::InvalidArgument(format!(
                "threshold must be in [0, 1], got {}",
                self.threshold
            )));
        }
        if self.max_per_sentence == 0 {
            return Err(Error::InvalidArgument(
                "max_per_sentence must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Scores every sentence of `doc` with `scorer` and keeps what passes `options`.
pub fn extract(
    doc: &Document,
    scorer: &dyn SentenceScorer,
    lookup: TechniqueLookup<'_>,
    attack_version: &str,
    options: &ExtractOptions,
) -> Result<Extraction> {
    let never = || false;
    let out = extract_batched(
        doc,
        scorer,
        lookup,
        attack_version,
        options,
        usize::MAX,
        &never,
    )?;
    // `never` is never true, so the extraction ran to the end.
    out.ok_or_else(|| Error::InvalidArgument("extraction cancelled".into()))
}

/// Sentences scored between two checks of the `cancelled` callback of [`extract_cancellable`].
pub const CANCEL_CHECK_SENTENCES: usize = 256;

/// [`extract`] that stops early: `cancelled` is asked before each batch of
/// [`CANCEL_CHECK_SENTENCES`] sentences is scored, and once it answers true the extraction
/// stops and returns `Ok(None)`. The result of a run to the end equals [`extract`]'s for
/// scorers that score each sentence on its own (every scorer here).
pub fn extract_cancellable(
    doc: &Document,
    scorer: &dyn SentenceScorer,
    lookup: TechniqueLookup<'_>,
    attack_version: &str,
    options: &ExtractOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Extraction>> {
    extract_batched(
        doc,
        scorer,
        lookup,
        attack_version,
        options,
        CANCEL_CHECK_SENTENCES,
        cancelled,
    )
}

fn extract_batched(
    doc: &Document,
    scorer: &dyn SentenceScorer,
    lookup: TechniqueLookup<'_>,
    attack_version: &str,
    options: &ExtractOptions,
    batch: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Extraction>> {
    options.validate()?;
    let _span =
        tracing::info_span!("extract", source = %doc.source, method = scorer.name()).entered();
    let scored: Vec<usize> = doc
        .sentences
        .iter()
        .filter(|s| s.text.trim().chars().count() >= options.min_sentence_chars)
        .filter(|s| !crate::ingest::indicators::carries_no_technique(&s.text, s.block))
        .map(|s| s.index)
        .collect();
    // Scorers see indicators refanged (`hxxps://evil[.]com` -> `https://evil.com`); the
    // extraction keeps the sentence as written.
    let refanged: Vec<std::borrow::Cow<'_, str>> = scored
        .iter()
        .map(|&i| crate::ingest::refang_text(&doc.sentences[i].text))
        .collect();
    let texts: Vec<&str> = refanged.iter().map(|t| t.as_ref()).collect();
    let mut raw = Vec::with_capacity(texts.len());
    let score_span = tracing::info_span!("score", sentences = texts.len()).entered();
    for chunk in texts.chunks(batch.max(1)) {
        if cancelled() {
            return Ok(None);
        }
        raw.extend(score_each(scorer, chunk)?);
    }
    drop(score_span);
    lift_predictions(&mut raw, scorer.document_rule(), &texts);

    let _aggregate = tracing::info_span!("aggregate").entered();
    let mut sentences = Vec::new();
    for (&index, mut preds) in scored.iter().zip(raw) {
        preds.retain(|p| p.score >= options.threshold && p.score.is_finite());
        if preds.is_empty() {
            continue;
        }
        sort_predictions(&mut preds);
        dedup_by_technique(&mut preds);
        keep_families(&mut preds, options.max_per_sentence);
        let s = &doc.sentences[index];
        sentences.push(SentencePredictions {
            sentence: s.index,
            span: s.span,
            text: s.text.clone(),
            predictions: preds,
        });
    }
    let techniques = aggregate(&sentences, lookup);
    Ok(Some(Extraction {
        source: doc.source.clone(),
        title: doc.title.clone(),
        method: scorer.name().to_string(),
        threshold: options.threshold,
        attack_version: attack_version.to_string(),
        sentence_count: doc.sentences.len(),
        sentences,
        techniques,
    }))
}

/// For each of one document's sentence texts, whether the same text (case and whitespace
/// aside) came earlier in it: a repeated line (a PDF's running header or footer, a pull quote
/// that repeats the body) is one piece of evidence, so the document rule counts it once (it
/// keeps its own score).
pub fn repeated_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    texts
        .into_iter()
        .map(|t| {
            let key: String = t
                .split_whitespace()
                .flat_map(|w| w.chars().chain([' ']))
                .flat_map(char::to_lowercase)
                .collect();
            !seen.insert(key)
        })
        .collect()
}

/// Applies `rule` to one document's sentence predictions (`texts`: the sentences, for
/// [`repeated_texts`]): a raised prediction gets the document confidence as its score and a
/// reason saying where it comes from.
pub fn lift_predictions(raw: &mut [Vec<Prediction>], rule: DocumentRule, texts: &[&str]) {
    let lifts = {
        let repeated = repeated_texts(texts.iter().copied());
        let rows: Vec<Vec<(&TechniqueId, f32)>> = raw
            .iter()
            .zip(repeated.iter().chain(std::iter::repeat(&false)))
            .map(|(r, &again)| {
                r.iter()
                    .filter(|_| !again)
                    .map(|p| (&p.technique, p.score))
                    .collect()
            })
            .collect();
        rule.lifts(&rows)
    };
    for l in lifts {
        let p = &mut raw[l.sentence][l.entry];
        let list: Vec<String> = l.support.iter().map(|s| format!("{s:.3}")).collect();
        p.evidence.reasons.push(format!(
            "document confidence {:.3}: this sentence {:.3} with {} other sentence{} ({})",
            l.score,
            p.score,
            l.support.len() - 1,
            if l.support.len() == 2 { "" } else { "s" },
            list[1..].join(", ")
        ));
        p.score = l.score;
    }
}

/// The order of scored techniques everywhere (sentence predictions, the document summary,
/// `rank`): best score first; ties list sub-techniques (the more specific answer, e.g. a parent
/// raised to its sub-technique's score) before parents, then go by technique id, so output is
/// deterministic.
pub fn rank_order(a: (&TechniqueId, f32), b: (&TechniqueId, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1)
        .then_with(|| b.0.is_subtechnique().cmp(&a.0.is_subtechnique()))
        .then_with(|| a.0.cmp(b.0))
}

/// Sorts predictions by [`rank_order`].
pub fn sort_predictions(preds: &mut [Prediction]) {
    preds.sort_by(|a, b| rank_order((&a.technique, a.score), (&b.technique, b.score)));
}

/// Keeps the predictions of the first `max` technique families (a technique and its
/// sub-techniques); `preds` must be sorted.
fn keep_families(preds: &mut Vec<Prediction>, max: usize) {
    let mut families = BTreeSet::new();
    preds.retain(|p| {
        let family = p.technique.parent();
        families.contains(&family) || { families.len() < max && families.insert(family) }
    });
}

/// Keeps the first (best) prediction of each technique; `preds` must be sorted.
fn dedup_by_technique(preds: &mut Vec<Prediction>) {
    let mut seen = std::collections::BTreeSet::new();
    preds.retain(|p| seen.insert(p.technique.clone()));
}

/// Union of sentence predictions: per technique the best score and its supporting sentences.
pub fn aggregate(
    sentences: &[SentencePredictions],
    lookup: TechniqueLookup<'_>,
) -> Vec<DocumentTechnique> {
    let mut by_tech: BTreeMap<&TechniqueId, Vec<(f32, usize)>> = BTreeMap::new();
    for s in sentences {
        for p in &s.predictions {
            by_tech
                .entry(&p.technique)
                .or_default()
                .push((p.score, s.sentence));
        }
    }
    let mut out: Vec<DocumentTechnique> = by_tech
        .into_iter()
        .map(|(id, mut support)| {
            support.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let (name, tactics) = match lookup(id) {
                Some(t) => (t.name.clone(), t.tactics.clone()),
                None => (String::new(), Vec::new()),
            };
            DocumentTechnique {
                technique: id.clone(),
                name,
                tactics,
                score: support[0].0,
                sentences: support.into_iter().map(|(_, i)| i).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| rank_order((&a.technique, a.score), (&b.technique, b.score)));
    out
}

/// BM25 as a sentence scorer: each sentence is a query against the technique documents.
///
/// BM25 scores are unbounded; the confidence is `raw / (raw + scale)`, a monotone map into
/// [0, 1) so one threshold works across sentences (`raw` is kept in [`Prediction::raw_score`]).
/// Evidence lists the query terms that contributed most to the score.
pub struct Bm25Scorer {
    index: Bm25Index,
    /// Candidates returned per sentence before thresholding. Default 10.
    pub top_k: usize,
    /// The raw score that maps to confidence 0.5. Default 20.
    pub scale: f32,
    /// When set, only these techniques are proposed (e.g. a dataset's label space); a
    /// sub-technique outside it falls back to its parent when the parent is in it.
    pub label_space: Option<BTreeSet<TechniqueId>>,
    /// Explain each prediction with its top query terms (costs one explanation per hit;
    /// evaluation turns it off). Default true.
    pub with_evidence: bool,
}

impl Bm25Scorer {
    /// Default extraction threshold, tuned on the TRAM2 and AnnoCTR training splits (README).
    pub const DEFAULT_THRESHOLD: f32 = 0.6;

    pub fn new(index: Bm25Index) -> Self {
        Bm25Scorer {
            index,
            top_k: 10,
            scale: 20.0,
            label_space: None,
            with_evidence: true,
        }
    }

    pub fn index(&self) -> &Bm25Index {
        &self.index
    }

    fn predictions(&self, sentence: &str) -> Vec<Prediction> {
        let k = if self.label_space.is_some() {
            self.index.num_docs()
        } else {
            self.top_k
        };
        let hits = self.index.search(sentence, k);
        let mut seen = BTreeSet::new();
        hits.into_iter()
            .filter_map(|mut h| {
                if let Some(ls) = &self.label_space {
                    // Parent fallback: a sub-technique outside the label space counts as its
                    // parent when the parent is in it (datasets often label parents only).
                    if !ls.contains(&h.technique) {
                        let parent = h.technique.parent();
                        if !ls.contains(&parent) {
                            return None;
                        }
                        h.technique = parent;
                    }
                }
                // Hits are sorted: the first occurrence of a technique has its best score.
                seen.insert(h.technique.clone()).then_some(h)
            })
            .take(self.top_k)
            .map(|h| {
                let reasons = if !self.with_evidence {
                    Vec::new()
                } else {
                    self.index
                        .explain(sentence, &h.technique)
                        .map(|e| {
                            let mut terms: Vec<_> = e
                                .terms
                                .into_iter()
                                .filter(|t| t.contribution > 0.0)
                                .collect();
                            terms.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
                            let mut seen = BTreeSet::new();
                            terms
                                .into_iter()
                                .filter(|t| seen.insert(t.term.clone()))
                                .take(5)
                                .map(|t| format!("{} ({:.1})", t.term, t.contribution))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Prediction {
                    technique: h.technique,
                    score: h.score / (h.score + self.scale),
                    raw_score: h.score,
                    evidence: Evidence {
                        method: "bm25".into(),
                        reasons,
                    },
                }
            })
            .collect()
    }
}

impl SentenceScorer for Bm25Scorer {
    fn name(&self) -> &str {
        "bm25"
    }

    fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>> {
        Ok(sentences.iter().map(|s| self.predictions(s)).collect())
    }

    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    fn configure(&mut self, options: &ScoreOptions) {
        options.store(
            &mut self.top_k,
            &mut self.with_evidence,
            &mut self.label_space,
        );
    }

    crate::impl_scorer_any!();
}

/// Reciprocal rank fusion of two scorers ([Cormack, Clarke and Büttcher 2009,
/// "Reciprocal rank fusion outperforms Condorcet and individual rank learning
/// methods"](https://doi.org/10.1145/1571941.1572114)).
///
/// Per sentence, each scorer's candidates are ranked (score descending, ties by technique id;
/// rank 1 is best) and a technique's fused score is `sum 1 / (k + rank)` over the lists it is
/// in. RRF only sees ranks, so every sentence's top candidate would look equally sure; the
/// confidence therefore multiplies the fused score normalised by its maximum `2 / (k + 1)`
/// (first in both lists) with the highest confidence either scorer gave the technique. It lies
/// in [0, 1], is 1 only when both lists rank the technique first and one is fully confident, and
/// a threshold still rejects sentences neither scorer is sure of. `raw_score` is the
/// unnormalised fused score. Evidence (method `hybrid`) gives each list's rank, then the reasons
/// of both scorers.
pub struct HybridScorer<A, B> {
    /// The first scorer (BM25 in the application).
    pub first: A,
    /// The second scorer (dense in the application).
    pub second: B,
    /// The RRF constant. Default 60 (the paper's value).
    pub k: f32,
    /// At most this many fused candidates per sentence. Default 10.
    pub top_k: usize,
}

impl<A: SentenceScorer, B: SentenceScorer> HybridScorer<A, B> {
    /// Default extraction threshold: a technique ranked first by both scorers is kept when
    /// either gives it at least 0.5 (not tuned).
    pub const DEFAULT_THRESHOLD: f32 = 0.5;

    pub fn new(first: A, second: B) -> Self {
        HybridScorer {
            first,
            second,
            k: 60.0,
            top_k: 10,
        }
    }
}

/// Reciprocal rank fusion of rankings (best first; [Cormack et al.
/// 2009](https://doi.org/10.1145/1571941.1572114)): each item scores the sum of
/// `1 / (k + rank)` over the rankings it is in (rank 1 = best). The one RRF of ttpmap: the
/// hybrid method ([`rrf_fuse`]) and the reranker evaluation use it.
pub fn reciprocal_rank_fusion<T: Ord + Clone>(rankings: &[Vec<T>], k: f32) -> BTreeMap<T, f32> {
    let mut fused = BTreeMap::new();
    for ranking in rankings {
        for (rank, item) in ranking.iter().enumerate() {
            *fused.entry(item.clone()).or_insert(0.0) += 1.0 / (k + rank as f32 + 1.0);
        }
    }
    fused
}

/// Fuses candidate lists with reciprocal rank fusion (see [`HybridScorer`]); `names` labels
/// each list's rank in the evidence. Returns the fused predictions, best first.
pub fn rrf_fuse(lists: &[(&str, Vec<Prediction>)], k: f32, top_k: usize) -> Vec<Prediction> {
    let max = lists.len() as f32 / (k + 1.0);
    // Each list ranked (a technique once, at its best), with its confidence and reasons.
    let mut rankings = Vec::with_capacity(lists.len());
    // technique -> (best component confidence, ranks, reasons)
    let mut meta: BTreeMap<TechniqueId, (f32, Vec<String>, Vec<String>)> = BTreeMap::new();
    for (name, preds) in lists {
        let mut preds = preds.clone();
        sort_predictions(&mut preds);
        let mut ranking: Vec<TechniqueId> = Vec::new();
        let mut seen = BTreeSet::new();
        for p in preds {
            if !seen.insert(p.technique.clone()) {
                continue;
            }
            ranking.push(p.technique.clone());
            let e = meta.entry(p.technique).or_default();
            e.0 = e.0.max(p.score.clamp(0.0, 1.0));
            e.1.push(format!("{name} rank {}", ranking.len()));
            e.2.extend(p.evidence.reasons);
        }
        rankings.push(ranking);
    }
    let fused = reciprocal_rank_fusion(&rankings, k);
    let mut out: Vec<Prediction> = meta
        .into_iter()
        .map(|(technique, (best, ranks, reasons))| {
            let raw = fused.get(&technique).copied().unwrap_or(0.0);
            Prediction {
                technique,
                score: if max > 0.0 {
                    (raw / max).min(1.0) * best
                } else {
                    0.0
                },
                raw_score: raw,
                evidence: Evidence {
                    method: "hybrid".into(),
                    reasons: ranks.into_iter().chain(reasons).collect(),
                },
            }
        })
        .collect();
    sort_predictions(&mut out);
    out.truncate(top_k);
    out
}

/// Anything that scores (query, candidate text) pairs: a cross-encoder, or an embedding
/// cosine as a baseline. Higher is better; scores of one call are comparable.
pub trait PairScorer: Send + Sync {
    /// Short name recorded in outputs.
    fn name(&self) -> &str;

    /// One score per pair, in order.
    fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>>;
}

impl<A: SentenceScorer, B: SentenceScorer> SentenceScorer for HybridScorer<A, B> {
    fn name(&self) -> &str {
        "hybrid"
    }

    fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>> {
        let a = self.first.score(sentences)?;
        let b = self.second.score(sentences)?;
        if a.len() != sentences.len() || b.len() != sentences.len() {
            return Err(Error::InvalidArgument(
                "hybrid: a scorer returned the wrong number of sentences".into(),
            ));
        }
        let (na, nb) = (
            self.first.name().to_string(),
            self.second.name().to_string(),
        );
        Ok(a.into_iter()
            .zip(b)
            .map(|(pa, pb)| rrf_fuse(&[(&na, pa), (&nb, pb)], self.k, self.top_k))
            .collect())
    }

    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    fn configure(&mut self, options: &ScoreOptions) {
        self.top_k = options.top_k;
        self.first.configure(options);
        self.second.configure(options);
    }

    fn parts(&self) -> Vec<&dyn SentenceScorer> {
        vec![&self.first, &self.second]
    }

    fn parts_mut(&mut self) -> Vec<&mut dyn SentenceScorer> {
        vec![&mut self.first, &mut self.second]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Sentence, Span};

    /// Scores a sentence for T1059.001 when it mentions PowerShell and T1053.005 for schtasks.
    struct KeywordScorer;

    impl SentenceScorer for KeywordScorer {
        fn name(&self) -> &str {
            "keywords"
        }
        fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>> {
            Ok(sentences
                .iter()
                .map(|s| {
                    let mut out = Vec::new();
                    let lower = s.to_lowercase();
                    let mut add = |id: &str, score: f32| {
                        out.push(Prediction {
                            technique: TechniqueId::parse(id).unwrap(),
                            score,
                            raw_score: score * 10.0,
                            evidence: Evidence {
                                method: "keywords".into(),
                                reasons: vec![],
                            },
                        })
                    };
                    if lower.contains("powershell") {
                        add(
                            "T1059.001",
                            if lower.contains("encoded") { 0.9 } else { 0.6 },
                        );
                    }
                    if lower.contains("schtasks") {
                        add("T1053.005", 0.7);
                    }
                    // Only the refanged form: proves the scorer sees refanged text.
                    if lower.contains("https://update-cdn.top") {
                        add("T1071.001", 0.8);
                    }
                    add("T1082", 0.1);
                    out
                })
                .collect())
        }
    }

    fn doc(sentences: &[&str]) -> Document {
        let text = sentences.join(" ");
        let mut out = Vec::new();
        let mut start = 0;
        for (index, s) in sentences.iter().enumerate() {
            out.push(Sentence {
                index,
                span: Span::new(start, start + s.len()),
                text: s.to_string(),
                block: Default::default(),
            });
            start += s.len() + 1;
        }
        Document {
            source: "test.txt".into(),
            title: None,
            text,
            sentences: out,
            warnings: Vec::new(),
        }
    }

    fn no_lookup(_: &TechniqueId) -> Option<&'static Technique> {
        None
    }

    fn pred(t: &str, score: f32) -> Prediction {
        Prediction {
            technique: TechniqueId::parse(t).unwrap(),
            score,
            raw_score: score,
            evidence: Evidence {
                method: "x".into(),
                reasons: vec![format!("{t}@{score}")],
            },
        }
    }

    /// A parent raised to its sub-technique's score ranks after it, and the two count as one
    /// of a sentence's `max_per_sentence` techniques.
    #[test]
    fn a_sub_technique_and_its_parent_are_one_family_and_the_sub_technique_ranks_first() {
        let mut preds = vec![
            pred("T1059", 0.6),
            pred("T1105", 0.4),
            pred("T1059.001", 0.6),
            pred("T1027", 0.3),
            pred("T1053.005", 0.2),
        ];
        sort_predictions(&mut preds);
        let ids = |p: &[Prediction]| {
            p.iter()
                .map(|p| p.technique.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&preds),
            ["T1059.001", "T1059", "T1105", "T1027", "T1053.005"]
        );
        keep_families(&mut preds, 3);
        assert_eq!(ids(&preds), ["T1059.001", "T1059", "T1105", "T1027"]);
        keep_families(&mut preds, 1);
        assert_eq!(ids(&preds), ["T1059.001", "T1059"]);
        // The document summary orders ties the same way.
        let sentences = vec![SentencePredictions {
            sentence: 0,
            span: Span::new(0, 1),
            text: "x".into(),
            predictions: preds,
        }];
        let techniques = aggregate(&sentences, &no_lookup);
        let doc_ids: Vec<String> = techniques.iter().map(|t| t.technique.to_string()).collect();
        assert_eq!(doc_ids, ["T1059.001", "T1059"]);
    }

    /// [`KeywordScorer`] that reads a passage of more than 40 bytes sentence by sentence, with
    /// the noisy-OR of the best 3, counting the texts it is given.
    struct BySentence(std::sync::atomic::AtomicUsize);

    impl SentenceScorer for BySentence {
        fn name(&self) -> &str {
            "by-sentence"
        }
        fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>> {
            self.0
                .fetch_add(sentences.len(), std::sync::atomic::Ordering::Relaxed);
            let mut out = KeywordScorer.score(sentences)?;
            for p in out.iter_mut().flatten() {
                p.evidence.reasons.push(format!("keyword {:.1}", p.score));
            }
            Ok(out)
        }
        fn document_rule(&self) -> DocumentRule {
            DocumentRule::NoisyOr { top: 3 }
        }
        fn reads_whole(&self, passage: &str) -> bool {
            passage.len() <= 40
        }
    }

    /// A line repeated in a document (a PDF's running header) is one piece of evidence for the
    /// document rule; another sentence saying the same is a second one.
    #[test]
    fn a_repeated_line_counts_once_in_the_document_rule() {
        let scorer = BySentence(Default::default());
        let header = "ACME report: schtasks persistence";
        let run = |sentences: &[&str]| -> Vec<f32> {
            let out = extract(
                &doc(sentences),
                &scorer,
                &no_lookup,
                "18.1",
                &ExtractOptions::default(),
            )
            .unwrap();
            out.sentences
                .iter()
                .flat_map(|s| &s.predictions)
                .filter(|p| p.technique.to_string() == "T1053.005")
                .map(|p| p.score)
                .collect()
        };
        let repeated = run(&[
            header,
            "Body text here.",
            header,
            "acme REPORT:  schtasks persistence",
        ]);
        assert_eq!(repeated, [0.7, 0.7, 0.7], "{repeated:?}");
        let distinct = run(&[header, "They ran schtasks again later."]);
        assert!((distinct[0] - 0.91).abs() < 1e-5, "{distinct:?}");
        assert_eq!(
            repeated_texts(["a  b", "c", "A b", "a b c"]),
            [false, false, true, false]
        );
    }

    #[test]
    fn a_passage_is_read_whole_or_sentence_by_sentence_as_the_scorer_says() {
        let passages = [
            "They ran PowerShell. Then schtasks made it persist. PowerShell ran again.",
            "One sentence with powershell",
            "",
            "Short: powershell. And schtasks.",
        ];
        // Whole: the scorer's own answer for each text.
        assert_eq!(
            score_passages(&KeywordScorer, &passages).unwrap(),
            KeywordScorer.score(&passages).unwrap()
        );
        let scorer = BySentence(Default::default());
        let out = score_passages(&scorer, &passages).unwrap();
        // 3 sentences, then each one-sentence, empty or short passage as it is, in one call.
        assert_eq!(scorer.0.load(std::sync::atomic::Ordering::Relaxed), 6);
        assert_eq!(out.len(), 4);
        let got = |i: usize| -> Vec<(String, f32)> {
            out[i]
                .iter()
                .map(|p| (p.technique.to_string(), p.score))
                .collect()
        };
        // T1059.001 in two sentences: 1 - 0.4 * 0.4; T1053.005 from its one sentence; T1082 in
        // all three: 1 - 0.9^3. Best first, one entry per technique.
        let first = got(0);
        assert_eq!(
            first.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["T1059.001", "T1053.005", "T1082"]
        );
        for ((_, got), want) in first.iter().zip([0.84, 0.7, 0.271]) {
            assert!((got - want).abs() < 1e-5, "{first:?}");
        }
        // The evidence says which sentence and how the confidence was combined.
        let reasons = &out[0][0].evidence.reasons;
        assert!(reasons[0].starts_with("keyword 0.6"), "{reasons:?}");
        assert!(
            reasons[1].starts_with("document confidence 0.840"),
            "{reasons:?}"
        );
        assert_eq!(reasons.last().unwrap(), "sentence 1 of 3");
        assert_eq!(
            out[0][1].evidence.reasons.last().unwrap(),
            "sentence 2 of 3"
        );
        // A passage of one sentence (or none), or one the scorer reads whole, is scored as it is.
        for i in 1..4 {
            assert_eq!(out[i], scorer.score(&[passages[i]]).unwrap()[0]);
        }
    }

    #[test]
    fn noisy_or_lifts_each_techniques_best_sentence_to_the_document_confidence() {
        let a = TechniqueId::parse("T1059").unwrap();
        let b = TechniqueId::parse("T1105").unwrap();
        let rows = vec![
            vec![(&a, 0.5), (&b, 0.9)],
            vec![(&a, 0.4)],
            vec![(&a, 0.3)],
            vec![],
        ];
        assert!(DocumentRule::AnySentence.lifts(&rows).is_empty());
        // Best two of T1059: 1 - 0.5 * 0.6 = 0.7 on sentence 0; T1105 has one sentence.
        let lifts = DocumentRule::NoisyOr { top: 2 }.lifts(&rows);
        assert_eq!(lifts.len(), 1, "{lifts:?}");
        assert_eq!((lifts[0].sentence, lifts[0].entry), (0, 0));
        assert!((lifts[0].score - 0.7).abs() < 1e-6);
        assert_eq!(lifts[0].support, vec![0.5, 0.4]);
        // All three: 1 - 0.5 * 0.6 * 0.7 = 0.79.
        let lifts = DocumentRule::NoisyOr { top: 3 }.lifts(&rows);
        assert!((lifts[0].score - 0.79).abs() < 1e-6);
        // One sentence listing a technique twice is one sentence.
        let rows = vec![vec![(&a, 0.5), (&a, 0.6)]];
        assert!(DocumentRule::NoisyOr { top: 3 }.lifts(&rows).is_empty());
        // Ties go to the earlier sentence.
        let rows = vec![vec![(&a, 0.5)], vec![(&a, 0.5)]];
        let lifts = DocumentRule::NoisyOr { top: 3 }.lifts(&rows);
        assert_eq!(lifts[0].sentence, 0);
        assert!((lifts[0].score - 0.75).abs() < 1e-6);
    }

    /// A scorer giving every sentence the same T1059 score, with a document rule.
    struct Flat(DocumentRule, f32);

    impl SentenceScorer for Flat {
        fn name(&self) -> &str {
            "flat"
        }
        fn score(&self, sentences: &[&str]) -> Result<Vec<Vec<Prediction>>> {
            Ok(sentences
                .iter()
                .map(|_| vec![pred("T1059", self.1)])
                .collect())
        }
        fn document_rule(&self) -> DocumentRule {
            self.0
        }
    }

    #[test]
    fn extraction_applies_the_scorers_document_rule() {
        let d = doc(&[
            "The actor ran a script on the host.",
            "Another script ran on the server.",
        ]);
        let opts = ExtractOptions {
            threshold: 0.5,
            ..ExtractOptions::default()
        };
        let any = extract(
            &d,
            &Flat(DocumentRule::AnySentence, 0.3),
            &no_lookup,
            "18.1",
            &opts,
        )
        .unwrap();
        assert!(any.techniques.is_empty() && any.sentences.is_empty());
        let rule = DocumentRule::NoisyOr { top: 3 };
        let x = extract(&d, &Flat(rule, 0.3), &no_lookup, "18.1", &opts).unwrap();
        // 1 - 0.7 * 0.7 = 0.51 on the first sentence; the second keeps its own 0.3.
        assert_eq!(x.techniques.len(), 1);
        assert!((x.techniques[0].score - 0.51).abs() < 1e-6);
        assert_eq!(x.sentences.len(), 1);
        assert_eq!(x.sentences[0].sentence, 0);
        let reasons = &x.sentences[0].predictions[0].evidence.reasons;
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("document confidence 0.510") && r.contains("1 other sentence")),
            "{reasons:?}"
        );
    }

    #[test]
    fn rrf_fusion_matches_hand_computation() {
        // List a ranks T1003 > T1059 > T1486; list b ranks T1566 > T1059 > T1003.
        let a = vec![pred("T1059", 0.8), pred("T1003", 0.9), pred("T1486", 0.1)];
        let b = vec![pred("T1566", 0.5), pred("T1059", 0.7), pred("T1003", 0.2)];
        let out = rrf_fuse(&[("a", a), ("b", b)], 60.0, 10);
        let ids: Vec<String> = out.iter().map(|p| p.technique.to_string()).collect();
        // Fused: T1059 1/62 + 1/61 = 0.032522; T1003 1/61 + 1/63 = 0.032266;
        // T1566 1/62 = 0.016129; T1486 1/63 = 0.015873; max 2/61 = 0.032787.
        // Confidence = fused / max * best component score:
        // T1003 0.98413 * 0.9 = 0.88571; T1059 0.99194 * 0.8 = 0.79355;
        // T1566 0.49194 * 0.5 = 0.24597; T1486 0.48413 * 0.1 = 0.04841.
        assert_eq!(ids, ["T1003", "T1059", "T1566", "T1486"]);
        let close = |x: f32, y: f32| (x - y).abs() < 1e-5;
        assert!(close(out[0].raw_score, 1.0 / 61.0 + 1.0 / 63.0));
        assert!(close(out[0].score, 0.885714));
        assert!(close(out[1].raw_score, 1.0 / 62.0 + 1.0 / 61.0));
        assert!(close(out[1].score, 0.793548));
        assert!(close(out[2].score, 0.245968));
        assert!(close(out[3].raw_score, 1.0 / 63.0));
        assert!(close(out[3].score, 0.048413));
        assert_eq!(out[1].evidence.method, "hybrid");
        assert_eq!(
            out[1].evidence.reasons[..2],
            ["a rank 2".to_string(), "b rank 1".to_string()]
        );
        assert!(out[1].evidence.reasons.contains(&"T1059@0.7".to_string()));
        assert_eq!(rrf_fuse(&[("a", vec![]), ("b", vec![])], 60.0, 10), vec![]);
        let top = rrf_fuse(
            &[
                ("a", vec![pred("T1003", 0.9)]),
                ("b", vec![pred("T1003", 0.1)]),
            ],
            60.0,
            1,
        );
        assert!(close(top[0].score, 0.9));
    }

    #[test]
    fn hybrid_scorer_fuses_two_scorers() {
        let h = HybridScorer::new(Bm25Scorer::new(tiny_index()), KeywordScorer);
        assert_eq!(h.name(), "hybrid");
        let out = h
            .score(&["encoded powershell commands", "nothing"])
            .unwrap();
        assert_eq!(out.len(), 2);
        // First in both lists: confidence = the best component confidence (keywords: 0.9;
        // BM25 is below 1).
        assert_eq!(
            out[0][0].technique,
            TechniqueId::parse("T1059.001").unwrap()
        );
        assert!(out[0][0].score >= 0.9 - 1e-6 && out[0][0].score < 1.0);
        assert!(out[0][0]
            .evidence
            .reasons
            .contains(&"bm25 rank 1".to_string()));
        // Only the keyword scorer's T1082 (0.1) for the second sentence: rank 1 in one list
        // normalises to 0.5, times 0.1.
        assert_eq!(out[1].len(), 1);
        assert!((out[1][0].score - 0.05).abs() < 1e-6);
        assert!(out
            .iter()
            .flatten()
            .all(|p| p.score > 0.0 && p.score <= 1.0));
    }
    #[test]
    fn thresholds_and_aggregates() {
        let d = doc(&[
            "The actor ran PowerShell scripts on the host.",
            "Execution",
            "It then created a task with schtasks and an encoded PowerShell command.",
            "Nothing to see in this sentence.",
        ]);
        let ex = extract(
            &d,
            &KeywordScorer,
            &no_lookup,
            "18.1",
            &ExtractOptions::default(),
        )
        .unwrap();
        assert_eq!(ex.sentence_count, 4);
        // The heading is not scored; the last sentence only has T1082 at 0.1 (< 0.5).
        let kept: Vec<usize> = ex.sentences.iter().map(|s| s.sentence).collect();
        assert_eq!(kept, vec![0, 2]);
        let ids: Vec<&str> = ex.sentences[1]
            .predictions
            .iter()
            .map(|p| p.technique.as_str())
            .collect();
        assert_eq!(ids, vec!["T1059.001", "T1053.005"]);
        // Document level: best score per technique, supporting sentences best first.
        assert_eq!(ex.techniques.len(), 2);
        assert_eq!(ex.techniques[0].technique.as_str(), "T1059.001");
        assert_eq!(ex.techniques[0].score, 0.9);
        assert_eq!(ex.techniques[0].sentences, vec![2, 0]);
        assert_eq!(ex.techniques[1].technique.as_str(), "T1053.005");
        for s in &ex.sentences {
            assert_eq!(&d.text[s.span.start..s.span.end], s.text);
        }
    }

    #[test]
    fn scorers_see_refanged_text_and_the_extraction_keeps_it_as_written() {
        let d = crate::ingest::from_text(
            "<defanged>",
            "The loader beacons to hxxps://update-cdn[.]top over HTTPS.",
            crate::ingest::Format::Text,
        )
        .unwrap();
        assert_eq!(
            d.sentences[0].text,
            "The loader beacons to hxxps://update-cdn[.]top over HTTPS."
        );
        let ex = extract(
            &d,
            &KeywordScorer,
            &no_lookup,
            "18.1",
            &ExtractOptions::default(),
        )
        .unwrap();
        assert_eq!(ex.techniques[0].technique.as_str(), "T1071.001");
        assert_eq!(
            ex.sentences[0].text,
            "The loader beacons to hxxps://update-cdn[.]top over HTTPS."
        );
        assert_eq!(
            &d.text[ex.sentences[0].span.start..ex.sentences[0].span.end],
            ex.sentences[0].text
        );
    }

    #[test]
    fn max_per_sentence_and_threshold_zero() {
        let d = doc(&["schtasks launched an encoded PowerShell payload."]);
        let opts = ExtractOptions {
            threshold: 0.0,
            max_per_sentence: 2,
            ..Default::default()
        };
        let ex = extract(&d, &KeywordScorer, &no_lookup, "18.1", &opts).unwrap();
        assert_eq!(ex.sentences[0].predictions.len(), 2);
        assert_eq!(ex.techniques.len(), 2);
    }

    #[test]
    fn cancellable_extraction_stops_between_batches_and_matches_extract() {
        let texts: Vec<String> = (0..CANCEL_CHECK_SENTENCES * 3)
            .map(|i| format!("Sentence {i} ran an encoded PowerShell payload."))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let d = doc(&refs);
        let opts = ExtractOptions::default();
        let full = extract(&d, &KeywordScorer, &no_lookup, "18.1", &opts).unwrap();
        let never = || false;
        let same = extract_cancellable(&d, &KeywordScorer, &no_lookup, "18.1", &opts, &never)
            .unwrap()
            .unwrap();
        assert_eq!(same, full);
        // Cancelled after the first check: one batch scored, then `None`.
        let asked = std::cell::Cell::new(0usize);
        let cancel_after_one = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        let out = extract_cancellable(
            &d,
            &KeywordScorer,
            &no_lookup,
            "18.1",
            &opts,
            &cancel_after_one,
        )
        .unwrap();
        assert!(out.is_none());
        assert_eq!(asked.get(), 2, "stopped at the second batch's check");
    }

    #[test]
    fn rejects_bad_options() {
        let d = doc(&["The actor ran PowerShell scripts on the host."]);
        for opts in [
            ExtractOptions {
                threshold: 1.5,
                ..Default::default()
            },
            ExtractOptions {
                threshold: f32::NAN,
                ..Default::default()
            },
            ExtractOptions {
                max_per_sentence: 0,
                ..Default::default()
            },
        ] {
            assert!(extract(&d, &KeywordScorer, &no_lookup, "18.1", &opts).is_err());
        }
    }

    fn tiny_index() -> Bm25Index {
        use crate::retrieve::{Analyzer, Bm25Params, DocField, IndexDoc};
        let doc = |id: &str, text: &str| IndexDoc {
            key: TechniqueId::parse(id).unwrap(),
            fields: vec![DocField {
                text: text.into(),
                weight: 1,
            }],
        };
        let docs = vec![
            doc(
                "T1059.001",
                "PowerShell scripts and encoded powershell commands",
            ),
            doc("T1053.005", "Scheduled Task created with schtasks"),
            doc("T1003.001", "LSASS memory dumped with Mimikatz"),
        ];
        Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap()
    }

    #[test]
    fn bm25_scorer_confidence_and_evidence() {
        let scorer = Bm25Scorer::new(tiny_index());
        let out = scorer
            .score(&["They ran encoded PowerShell.", "Nothing here."])
            .unwrap();
        assert_eq!(out.len(), 2);
        let top = &out[0][0];
        assert_eq!(top.technique.as_str(), "T1059.001");
        // confidence = raw / (raw + scale)
        let expected = top.raw_score / (top.raw_score + scorer.scale);
        assert!((top.score - expected).abs() < 1e-6);
        assert!(top
            .evidence
            .reasons
            .iter()
            .any(|r| r.starts_with("powershell")));
        assert!(out[1].is_empty(), "no query term matches: no candidate");
    }

    #[test]
    fn bm25_label_space_falls_back_to_parent() {
        let mut scorer = Bm25Scorer::new(tiny_index());
        scorer.label_space = Some(BTreeSet::from([
            TechniqueId::parse("T1059").unwrap(),
            TechniqueId::parse("T1003.001").unwrap(),
        ]));
        let out = scorer
            .score(&["encoded powershell and mimikatz on lsass and schtasks"])
            .unwrap();
        let ids: BTreeSet<&str> = out[0].iter().map(|p| p.technique.as_str()).collect();
        // T1059.001 -> T1059 (parent in the space); T1053.005 has no parent in it: dropped.
        assert_eq!(ids, BTreeSet::from(["T1059", "T1003.001"]));
    }
}
