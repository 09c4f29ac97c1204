//! Evaluation metrics over technique sets and probabilities (no tensors).
//!
//! Owns:
//! - per-document F1 as in the CASSANDRA protocol ([`per_document_f1`]),
//! - sentence-level multi-label micro / macro precision, recall and F1 with scikit-learn's
//!   semantics ([`multilabel_prf`]),
//! - ranking metrics P@1, Hit@k, MRR, Recall@k with a per-group breakdown ([`rank_metrics`]),
//! - percentile bootstrap confidence intervals ([`bootstrap_ci`]),
//! - threshold tuning on a grid ([`tune_threshold`], [`tune_per_label_thresholds`]),
//! - a plain-text table renderer for the CLI ([`render_table`]).
//!
//! Invariants and conventions (every function follows them):
//! - A division by zero counts as 0 (scikit-learn's `zero_division=0`): the precision of an
//!   empty prediction set is 0, the recall of an empty gold set is 0, and F1 is 0 when
//!   precision + recall is 0. So a document whose prediction is empty but whose gold set is not
//!   scores F1 = 0.
//! - Every report type is `Serialize` (results JSON); means over an empty population are 0 and
//!   the report says how many items were scored, so a 0 can be told apart from "nothing scored".
//! - Randomness is seeded explicitly (`u64`, ChaCha8): same input and seed, same output.
//! - Thresholds are inclusive: a label is predicted when `score >= threshold`.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Extraction, TechniqueId};

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

fn f1_of(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Per-document F1 (CASSANDRA protocol)
// ---------------------------------------------------------------------------------------------

/// One document's gold and predicted technique sets.
///
/// The predicted set of a document is the union of its sentence predictions; build it with
/// [`union_by_document`] from sentence-level data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPrediction {
    pub id: String,
    pub gold: BTreeSet<TechniqueId>,
    pub predicted: BTreeSet<TechniqueId>,
}

/// Groups sentence-level `(document id, gold, predicted)` triples into documents: each
/// document's gold and predicted sets are the unions over its sentences. Documents keep the
/// order in which they first appear.
pub fn union_by_document<'a, I>(sentences: I) -> Vec<DocPrediction>
where
    I: IntoIterator<
        Item = (
            &'a str,
            &'a BTreeSet<TechniqueId>,
            &'a BTreeSet<TechniqueId>,
        ),
    >,
{
    let mut order: Vec<DocPrediction> = Vec::new();
    let mut index: BTreeMap<&'a str, usize> = BTreeMap::new();
    for (doc, gold, pred) in sentences {
        let i = *index.entry(doc).or_insert_with(|| {
            order.push(DocPrediction {
                id: doc.to_string(),
                gold: BTreeSet::new(),
                predicted: BTreeSet::new(),
            });
            order.len() - 1
        });
        order[i].gold.extend(gold.iter().cloned());
        order[i].predicted.extend(pred.iter().cloned());
    }
    order
}

/// The predicted set of an extracted document: the union of its sentence predictions (the
/// CASSANDRA protocol's document prediction; equal to the document summary's techniques when
/// the summary is not collapsed to parents).
pub fn extraction_predicted_set(x: &Extraction) -> BTreeSet<TechniqueId> {
    x.sentences
        .iter()
        .flat_map(|s| s.predictions.iter().map(|p| p.technique.clone()))
        .collect()
}

/// Which gold labels a document is scored against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocF1Variant {
    /// CASSANDRA's protocol: the gold set is restricted to the labels seen in training (the
    /// vocabulary); a document whose restricted gold set is empty is excluded. Predictions are
    /// NOT restricted: a predicted label outside the vocabulary still counts as a false positive.
    InVocabulary,
    /// The full gold set; documents with an empty gold set are excluded.
    AllGold,
}

/// Scores of one document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocScore {
    pub id: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Size of the gold set the document was scored against (after the vocabulary restriction).
    pub gold: usize,
    pub predicted: usize,
    pub correct: usize,
}

/// Per-document F1 averaged over the scored documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocF1Report {
    pub variant: DocF1Variant,
    pub mean_f1: f64,
    pub mean_precision: f64,
    pub mean_recall: f64,
    pub documents_scored: usize,
    /// Documents left out because their (restricted) gold set is empty.
    pub documents_excluded: usize,
    /// Scored documents, in input order.
    pub per_document: Vec<DocScore>,
}

/// Per-document precision, recall and F1, averaged (macro over documents) over the documents
/// whose gold set is not empty, following the CASSANDRA evaluation protocol.
///
/// `vocab` (the labels seen in training) is required for [`DocF1Variant::InVocabulary`] and
/// ignored for [`DocF1Variant::AllGold`]. An empty prediction for a scored document gives
/// precision 0, recall 0, F1 0. With no scored document the means are 0 and
/// `documents_scored` is 0.
pub fn per_document_f1(
    docs: &[DocPrediction],
    variant: DocF1Variant,
    vocab: Option<&BTreeSet<TechniqueId>>,
) -> Result<DocF1Report> {
    let vocab = match (variant, vocab) {
        (DocF1Variant::InVocabulary, None) => {
            return Err(Error::InvalidArgument(
                "per-document F1 in vocabulary needs the training vocabulary".into(),
            ))
        }
        (DocF1Variant::InVocabulary, Some(v)) => Some(v),
        (DocF1Variant::AllGold, _) => None,
    };
    let mut per_document = Vec::new();
    let mut excluded = 0;
    for d in docs {
        let gold: BTreeSet<&TechniqueId> = match vocab {
            Some(v) => d.gold.iter().filter(|t| v.contains(*t)).collect(),
            None => d.gold.iter().collect(),
        };
        if gold.is_empty() {
            excluded += 1;
            continue;
        }
        let correct = d.predicted.iter().filter(|t| gold.contains(t)).count();
        let precision = ratio(correct as f64, d.predicted.len() as f64);
        let recall = ratio(correct as f64, gold.len() as f64);
        per_document.push(DocScore {
            id: d.id.clone(),
            precision,
            recall,
            f1: f1_of(precision, recall),
            gold: gold.len(),
            predicted: d.predicted.len(),
            correct,
        });
    }
    Ok(DocF1Report {
        variant,
        mean_f1: mean(per_document.iter().map(|s| s.f1)),
        mean_precision: mean(per_document.iter().map(|s| s.precision)),
        mean_recall: mean(per_document.iter().map(|s| s.recall)),
        documents_scored: per_document.len(),
        documents_excluded: excluded,
        per_document,
    })
}

// ---------------------------------------------------------------------------------------------
// Sentence-level multi-label P/R/F1 (scikit-learn semantics)
// ---------------------------------------------------------------------------------------------

/// Precision, recall and F1 of one average.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Counts and scores of one label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelPrf {
    pub label: TechniqueId,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of gold occurrences (true positives + false negatives).
    pub support: usize,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

/// Micro and macro averages plus the per-label scores (in label order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrfReport {
    pub micro: Prf,
    #[serde(rename = "macro")]
    pub macro_: Prf,
    pub per_label: Vec<LabelPrf>,
    /// Number of samples (sentences).
    pub samples: usize,
}

/// Multi-label precision / recall / F1 over samples (sentences), matching scikit-learn's
/// `precision_recall_fscore_support(y_true, y_pred, labels=labels, average='micro'|'macro',
/// zero_division=0)` on the binarised label matrices.
///
/// - `labels = None` uses the sorted union of all gold and predicted labels (scikit-learn's
///   default); `Some` restricts both averages to exactly those labels (labels that never occur
///   count in the macro average with P = R = F1 = 0), and ignores all others.
/// - Micro sums tp / fp / fn over the labels; macro is the unweighted mean of the per-label
///   precision, recall and F1 (macro F1 is the mean of per-label F1, not the F1 of the means).
///
/// `gold` and `pred` must have the same length.
pub fn multilabel_prf(
    gold: &[BTreeSet<TechniqueId>],
    pred: &[BTreeSet<TechniqueId>],
    labels: Option<&[TechniqueId]>,
) -> Result<PrfReport> {
    if gold.len() != pred.len() {
        return Err(Error::InvalidArgument(format!(
            "multilabel_prf: {} gold samples but {} predicted samples",
            gold.len(),
            pred.len()
        )));
    }
    let labels: Vec<TechniqueId> = match labels {
        Some(l) => {
            let mut seen = BTreeSet::new();
            for t in l {
                if !seen.insert(t) {
                    return Err(Error::InvalidArgument(format!(
                        "multilabel_prf: label {t} is given twice"
                    )));
                }
            }
            l.to_vec()
        }
        None => gold
            .iter()
            .chain(pred.iter())
            .flat_map(|s| s.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let position: BTreeMap<&TechniqueId, usize> =
        labels.iter().enumerate().map(|(i, t)| (t, i)).collect();
    let mut tp = vec![0usize; labels.len()];
    let mut fp = vec![0usize; labels.len()];
    let mut fn_ = vec![0usize; labels.len()];
    for (g, p) in gold.iter().zip(pred) {
        for t in p {
            if let Some(&i) = position.get(t) {
                if g.contains(t) {
                    tp[i] += 1;
                } else {
                    fp[i] += 1;
                }
            }
        }
        for t in g {
            if let Some(&i) = position.get(t) {
                if !p.contains(t) {
                    fn_[i] += 1;
                }
            }
        }
    }
    let per_label: Vec<LabelPrf> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let precision = ratio(tp[i] as f64, (tp[i] + fp[i]) as f64);
            let recall = ratio(tp[i] as f64, (tp[i] + fn_[i]) as f64);
            LabelPrf {
                label: label.clone(),
                precision,
                recall,
                // scikit-learn computes 2tp / (2tp + fp + fn), which equals the harmonic mean.
                f1: ratio(2.0 * tp[i] as f64, (2 * tp[i] + fp[i] + fn_[i]) as f64),
                support: tp[i] + fn_[i],
                tp: tp[i],
                fp: fp[i],
                fn_: fn_[i],
            }
        })
        .collect();
    let (stp, sfp, sfn) = (
        tp.iter().sum::<usize>(),
        fp.iter().sum::<usize>(),
        fn_.iter().sum::<usize>(),
    );
    let micro = Prf {
        precision: ratio(stp as f64, (stp + sfp) as f64),
        recall: ratio(stp as f64, (stp + sfn) as f64),
        f1: ratio(2.0 * stp as f64, (2 * stp + sfp + sfn) as f64),
    };
    let macro_ = Prf {
        precision: mean(per_label.iter().map(|l| l.precision)),
        recall: mean(per_label.iter().map(|l| l.recall)),
        f1: mean(per_label.iter().map(|l| l.f1)),
    };
    Ok(PrfReport {
        micro,
        macro_,
        per_label,
        samples: gold.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// Ranking
// ---------------------------------------------------------------------------------------------

/// One ranking query: a gold set, the ranked candidates (best first) and a group name used for
/// the breakdown (an actor, a technique, a report...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedQuery {
    pub gold: BTreeSet<TechniqueId>,
    pub ranked: Vec<TechniqueId>,
    pub group: String,
}

/// Settings of [`rank_metrics`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankOptions {
    /// Cut-offs for `recall_at` and `hit_at`. Default: 1, 3, 5, 10.
    pub ks: Vec<usize>,
    /// Map gold and ranked ids to their parent technique before scoring (ranked ids are
    /// deduplicated keeping the first rank). Default: false.
    pub collapse_to_parent: bool,
}

impl Default for RankOptions {
    fn default() -> Self {
        RankOptions {
            ks: vec![1, 3, 5, 10],
            collapse_to_parent: false,
        }
    }
}

/// Ranking scores averaged over queries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankSummary {
    /// Queries scored (queries with an empty gold set are skipped).
    pub n: usize,
    /// Queries skipped because their gold set is empty.
    pub skipped: usize,
    /// Fraction of queries whose first candidate is relevant.
    pub p_at_1: f64,
    /// Fraction of queries with a relevant candidate in the top 3.
    pub hit_at_3: f64,
    /// Fraction of queries with a relevant candidate in the top 5.
    pub hit_at_5: f64,
    /// Mean reciprocal rank of the first relevant candidate (0 when none is ranked).
    pub mrr: f64,
    /// Mean of |top-k ∩ gold| / |gold| for each configured k.
    pub recall_at: BTreeMap<usize, f64>,
    /// Fraction of queries with a relevant candidate in the top k, for each configured k.
    pub hit_at: BTreeMap<usize, f64>,
}

/// Overall ranking scores plus one summary per group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankReport {
    #[serde(flatten)]
    pub overall: RankSummary,
    pub collapse_to_parent: bool,
    pub by_group: BTreeMap<String, RankSummary>,
}

struct QueryScore {
    first_hit: Option<usize>,
    recall_at: Vec<f64>,
}

fn dedup_first(ids: impl IntoIterator<Item = TechniqueId>) -> Vec<TechniqueId> {
    let mut seen = BTreeSet::new();
    ids.into_iter().filter(|t| seen.insert(t.clone())).collect()
}

fn score_query(q: &RankedQuery, opts: &RankOptions) -> Option<QueryScore> {
    let (gold, ranked): (BTreeSet<TechniqueId>, Vec<TechniqueId>) = if opts.collapse_to_parent {
        (
            q.gold.iter().map(TechniqueId::parent).collect(),
            dedup_first(q.ranked.iter().map(TechniqueId::parent)),
        )
    } else {
        (q.gold.clone(), dedup_first(q.ranked.iter().cloned()))
    };
    if gold.is_empty() {
        return None;
    }
    let first_hit = ranked.iter().position(|t| gold.contains(t));
    let recall_at = opts
        .ks
        .iter()
        .map(|&k| {
            let hits = ranked.iter().take(k).filter(|t| gold.contains(*t)).count();
            hits as f64 / gold.len() as f64
        })
        .collect();
    Some(QueryScore {
        first_hit,
        recall_at,
    })
}

fn summarise(scores: &[QueryScore], skipped: usize, ks: &[usize]) -> RankSummary {
    let hit_rate = |k: usize| {
        mean(
            scores
                .iter()
                .map(|s| f64::from(s.first_hit.is_some_and(|r| r < k))),
        )
    };
    RankSummary {
        n: scores.len(),
        skipped,
        p_at_1: hit_rate(1),
        hit_at_3: hit_rate(3),
        hit_at_5: hit_rate(5),
        mrr: mean(
            scores
                .iter()
                .map(|s| s.first_hit.map_or(0.0, |r| 1.0 / (r + 1) as f64)),
        ),
        recall_at: ks
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, mean(scores.iter().map(|s| s.recall_at[i]))))
            .collect(),
        hit_at: ks.iter().map(|&k| (k, hit_rate(k))).collect(),
    }
}

/// P@1, Hit@3, Hit@5, MRR, Recall@k and Hit@k over queries, overall and per group.
///
/// Ranked lists are deduplicated keeping the first occurrence before scoring (a repeated
/// candidate must not count twice). Queries with an empty gold set are skipped and counted in
/// `skipped`. A `k` of 0 gives 0 for that cut-off.
pub fn rank_metrics(queries: &[RankedQuery], opts: &RankOptions) -> RankReport {
    let mut all = Vec::new();
    let mut skipped = 0;
    let mut groups: BTreeMap<String, (Vec<QueryScore>, usize)> = BTreeMap::new();
    for q in queries {
        let entry = groups.entry(q.group.clone()).or_default();
        match score_query(q, opts) {
            Some(s) => {
                entry.0.push(QueryScore {
                    first_hit: s.first_hit,
                    recall_at: s.recall_at.clone(),
                });
                all.push(s);
            }
            None => {
                skipped += 1;
                entry.1 += 1;
            }
        }
    }
    RankReport {
        overall: summarise(&all, skipped, &opts.ks),
        collapse_to_parent: opts.collapse_to_parent,
        by_group: groups
            .into_iter()
            .map(|(g, (scores, skipped))| (g, summarise(&scores, skipped, &opts.ks)))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------------

/// Default number of bootstrap resamples.
pub const DEFAULT_BOOTSTRAP_RESAMPLES: usize = 1000;

/// A mean with its bootstrap confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub resamples: usize,
    pub seed: u64,
}

/// Linear-interpolation percentile of sorted data (numpy's default `linear` method).
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// 95% percentile-bootstrap confidence interval of the mean of `values` (e.g. per-document F1
/// scores): `n` resamples of `values.len()` draws with replacement from a ChaCha8 generator
/// seeded with `seed`; the bounds are the 2.5th and 97.5th percentiles (linear interpolation)
/// of the resampled means.
///
/// Errors on an empty `values`, `n == 0` or a non-finite value.
pub fn bootstrap_ci(values: &[f64], n: usize, seed: u64) -> Result<(f64, f64)> {
    if values.is_empty() {
        return Err(Error::InvalidArgument("bootstrap_ci: no values".into()));
    }
    if n == 0 {
        return Err(Error::InvalidArgument(
            "bootstrap_ci: the number of resamples must be > 0".into(),
        ));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "bootstrap_ci: non-finite value {v}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = values.len();
    let mut means: Vec<f64> = (0..n)
        .map(|_| {
            (0..len)
                .map(|_| values[rng.random_range(0..len)])
                .sum::<f64>()
                / len as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Ok((
        percentile_sorted(&means, 0.025),
        percentile_sorted(&means, 0.975),
    ))
}

/// The mean of `values` with its [`bootstrap_ci`].
pub fn bootstrap_mean_ci(values: &[f64], n: usize, seed: u64) -> Result<MeanCi> {
    let (lo, hi) = bootstrap_ci(values, n, seed)?;
    Ok(MeanCi {
        mean: mean(values.iter().copied()),
        lo,
        hi,
        resamples: n,
        seed,
    })
}

// ---------------------------------------------------------------------------------------------
// Thresholds
// ---------------------------------------------------------------------------------------------

/// One sentence with its gold labels and the model's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredSentence {
    /// Document id (sentences of one document share it).
    pub doc: String,
    pub gold: BTreeSet<TechniqueId>,
    /// Score (probability) per label; labels absent here are not predicted.
    pub scores: Vec<(TechniqueId, f32)>,
}

/// What threshold tuning maximises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Mean per-document F1 ([`per_document_f1`]); `vocab` is required for
    /// [`DocF1Variant::InVocabulary`].
    DocumentF1 {
        variant: DocF1Variant,
        vocab: Option<BTreeSet<TechniqueId>>,
    },
    /// Sentence-level macro F1 ([`multilabel_prf`]) over `labels` (all occurring labels when
    /// `None`).
    SentenceMacroF1 { labels: Option<Vec<TechniqueId>> },
    /// Sentence-level micro F1 ([`multilabel_prf`]).
    SentenceMicroF1 { labels: Option<Vec<TechniqueId>> },
}

/// The chosen threshold and the objective value it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedThreshold {
    pub threshold: f32,
    pub objective_value: f64,
}

/// A global threshold with optional per-label overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub global: f32,
    pub per_label: BTreeMap<TechniqueId, f32>,
}

impl Thresholds {
    /// The threshold that applies to `label`.
    pub fn for_label(&self, label: &TechniqueId) -> f32 {
        self.per_label.get(label).copied().unwrap_or(self.global)
    }
}

/// The default grid: 0.05, 0.06, ..., 0.95 (91 values).
pub fn default_grid() -> Vec<f32> {
    (5..=95).map(|i| i as f32 / 100.0).collect()
}

/// The predicted label set of every sentence: labels with `score >= threshold`.
pub fn apply_threshold(samples: &[ScoredSentence], threshold: f32) -> Vec<BTreeSet<TechniqueId>> {
    samples
        .iter()
        .map(|s| {
            s.scores
                .iter()
                .filter(|(_, p)| *p >= threshold)
                .map(|(t, _)| t.clone())
                .collect()
        })
        .collect()
}

/// Like [`apply_threshold`] with a per-label threshold.
pub fn apply_thresholds(
    samples: &[ScoredSentence],
    thresholds: &Thresholds,
) -> Vec<BTreeSet<TechniqueId>> {
    samples
        .iter()
        .map(|s| {
            s.scores
                .iter()
                .filter(|(t, p)| *p >= thresholds.for_label(t))
                .map(|(t, _)| t.clone())
                .collect()
        })
        .collect()
}

/// Value of `objective` for the given per-sentence predictions.
pub fn objective_value(
    samples: &[ScoredSentence],
    predicted: &[BTreeSet<TechniqueId>],
    objective: &Objective,
) -> Result<f64> {
    if samples.len() != predicted.len() {
        return Err(Error::InvalidArgument(format!(
            "objective_value: {} samples but {} prediction sets",
            samples.len(),
            predicted.len()
        )));
    }
    match objective {
        Objective::DocumentF1 { variant, vocab } => {
            let docs = union_by_document(
                samples
                    .iter()
                    .zip(predicted)
                    .map(|(s, p)| (s.doc.as_str(), &s.gold, p)),
            );
            Ok(per_document_f1(&docs, *variant, vocab.as_ref())?.mean_f1)
        }
        Objective::SentenceMacroF1 { labels } | Objective::SentenceMicroF1 { labels } => {
            let gold: Vec<BTreeSet<TechniqueId>> = samples.iter().map(|s| s.gold.clone()).collect();
            let r = multilabel_prf(&gold, predicted, labels.as_deref())?;
            Ok(if matches!(objective, Objective::SentenceMacroF1 { .. }) {
                r.macro_.f1
            } else {
                r.micro.f1
            })
        }
    }
}

fn check_grid(grid: &[f32]) -> Result<()> {
    if grid.is_empty() {
        return Err(Error::InvalidArgument("threshold grid is empty".into()));
    }
    if let Some(t) = grid
        .iter()
        .find(|t| !(t.is_finite() && (0.0..=1.0).contains(*t)))
    {
        return Err(Error::InvalidArgument(format!(
            "threshold {t} is outside [0, 1]"
        )));
    }
    Ok(())
}

/// Picks the best of `(threshold, value)` candidates: highest value; among equal values
/// (within 1e-12) the threshold closest to 0.5; among equally close ones the lower threshold.
fn pick_best(candidates: impl IntoIterator<Item = (f32, f64)>) -> Option<TunedThreshold> {
    let mut best: Option<TunedThreshold> = None;
    for (threshold, value) in candidates {
        let better = match best {
            None => true,
            Some(b) => {
                if value > b.objective_value + 1e-12 {
                    true
                } else if value >= b.objective_value - 1e-12 {
                    let (d, db) = ((threshold - 0.5).abs(), (b.threshold - 0.5).abs());
                    d < db || (d == db && threshold < b.threshold)
                } else {
                    false
                }
            }
        };
        if better {
            best = Some(TunedThreshold {
                threshold,
                objective_value: value,
            });
        }
    }
    best
}

/// The global threshold from `grid` that maximises `objective` on `samples` (ties: the value
/// closest to 0.5, then the lower one). Use [`default_grid`] for 0.05..=0.95 by 0.01.
pub fn tune_threshold(
    samples: &[ScoredSentence],
    objective: &Objective,
    grid: &[f32],
) -> Result<TunedThreshold> {
    check_grid(grid)?;
    let mut values = Vec::with_capacity(grid.len());
    for &t in grid {
        values.push((
            t,
            objective_value(samples, &apply_threshold(samples, t), objective)?,
        ));
    }
    pick_best(values).ok_or_else(|| Error::InvalidArgument("threshold grid is empty".into()))
}

/// Per-label thresholds: for each label with at least one gold occurrence in `samples`, the
/// grid value maximising that label's sentence-level binary F1 (ties: closest to 0.5, then the
/// lower one). Labels without gold occurrences keep `global`. The result is a [`Thresholds`]
/// with `global` as the fallback.
pub fn tune_per_label_thresholds(
    samples: &[ScoredSentence],
    grid: &[f32],
    global: f32,
) -> Result<Thresholds> {
    check_grid(grid)?;
    // label -> (score or None, is gold) for every sentence where the label is gold or scored.
    let mut by_label: BTreeMap<&TechniqueId, Vec<(f32, bool)>> = BTreeMap::new();
    let mut gold_count: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    for s in samples {
        for g in &s.gold {
            *gold_count.entry(g).or_default() += 1;
        }
        let mut scored = BTreeSet::new();
        for (t, p) in &s.scores {
            if scored.insert(t) {
                by_label
                    .entry(t)
                    .or_default()
                    .push((*p, s.gold.contains(t)));
            }
        }
    }
    let mut per_label = BTreeMap::new();
    for (label, &n_gold) in &gold_count {
        let entries = by_label.get(label).map(Vec::as_slice).unwrap_or(&[]);
        let best = pick_best(grid.iter().map(|&t| {
            let tp = entries.iter().filter(|(p, g)| *g && *p >= t).count();
            let fp = entries.iter().filter(|(p, g)| !*g && *p >= t).count();
            let fn_ = n_gold - tp;
            (t, ratio(2.0 * tp as f64, (2 * tp + fp + fn_) as f64))
        }));
        if let Some(b) = best {
            per_label.insert((*label).clone(), b.threshold);
        }
    }
    Ok(Thresholds { global, per_label })
}

// ---------------------------------------------------------------------------------------------
// Plain-text tables
// ---------------------------------------------------------------------------------------------

fn looks_numeric(cell: &str) -> bool {
    let c = cell.trim().trim_end_matches('%');
    !c.is_empty() && c.parse::<f64>().is_ok()
}

/// Renders an aligned plain-text table: a header row, a dashed rule, then the rows. Columns are
/// separated by two spaces; cells that parse as numbers (optionally ending in `%`) are aligned
/// right, others left. Widths count `char`s. Short rows are padded with empty cells; trailing
/// spaces are trimmed from every line. The result ends with a newline.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(headers.len()))
        .max()
        .unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for (i, h) in headers.iter().enumerate() {
        widths[i] = widths[i].max(h.chars().count());
    }
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // A column is right-aligned when all its non-empty body cells are numeric.
    let right: Vec<bool> = (0..ncols)
        .map(|i| {
            let mut cells = rows
                .iter()
                .filter_map(|r| r.get(i))
                .filter(|c| !c.is_empty())
                .peekable();
            cells.peek().is_some() && cells.all(|c| looks_numeric(c))
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = String::new();
        for i in 0..ncols {
            let c = cells.next().unwrap_or("");
            let pad = widths[i].saturating_sub(c.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if right[i] {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    fn set(ids: &[&str]) -> BTreeSet<TechniqueId> {
        ids.iter().map(|s| t(s)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn document_f1_all_gold_and_edge_cases() {
        let docs = vec![
            DocPrediction {
                id: "a".into(),
                gold: set(&["T1059", "T1003"]),
                predicted: set(&["T1059", "T1105"]),
            },
            // Empty prediction, non-empty gold: F1 = 0 and the document counts.
            DocPrediction {
                id: "b".into(),
                gold: set(&["T1566"]),
                predicted: set(&[]),
            },
            // Empty gold: excluded.
            DocPrediction {
                id: "c".into(),
                gold: set(&[]),
                predicted: set(&["T1059"]),
            },
        ];
        let r = per_document_f1(&docs, DocF1Variant::AllGold, None).unwrap();
        assert_eq!(r.documents_scored, 2);
        assert_eq!(r.documents_excluded, 1);
        assert!(close(r.per_document[0].precision, 0.5));
        assert!(close(r.per_document[0].recall, 0.5));
        assert!(close(r.per_document[0].f1, 0.5));
        assert_eq!(r.per_document[1].f1, 0.0);
        assert!(close(r.mean_f1, 0.25));
        assert!(close(r.mean_precision, 0.25));
        assert!(close(r.mean_recall, 0.25));
    }

    #[test]
    fn document_f1_in_vocabulary_restricts_gold_only() {
        let vocab = set(&["T1059", "T1105"]);
        let docs = vec![
            // Gold restricted to {T1059}; T1003 (out of vocabulary) is not a false negative, but
            // the out-of-vocabulary prediction T1566 is a false positive.
            DocPrediction {
                id: "a".into(),
                gold: set(&["T1059", "T1003"]),
                predicted: set(&["T1059", "T1566"]),
            },
            // Gold entirely out of vocabulary: excluded.
            DocPrediction {
                id: "b".into(),
                gold: set(&["T1003"]),
                predicted: set(&["T1003"]),
            },
        ];
        let r = per_document_f1(&docs, DocF1Variant::InVocabulary, Some(&vocab)).unwrap();
        assert_eq!(r.documents_scored, 1);
        assert_eq!(r.documents_excluded, 1);
        let d = &r.per_document[0];
        assert_eq!((d.gold, d.predicted, d.correct), (1, 2, 1));
        assert!(close(d.precision, 0.5));
        assert!(close(d.recall, 1.0));
        assert!(close(d.f1, 2.0 / 3.0));
        assert!(per_document_f1(&docs, DocF1Variant::InVocabulary, None).is_err());
        let all = per_document_f1(&docs, DocF1Variant::AllGold, None).unwrap();
        assert_eq!(all.documents_scored, 2);
        assert!(close(all.mean_f1, (0.5 + 1.0) / 2.0));
    }

    #[test]
    fn extraction_predicted_set_is_the_union_of_sentences() {
        use crate::types::{Evidence, Prediction, SentencePredictions, Span};
        let p = |id: &str| Prediction {
            technique: t(id),
            score: 0.5,
            raw_score: 1.0,
            evidence: Evidence {
                method: "bm25".into(),
                reasons: Vec::new(),
            },
        };
        let s = |i: usize, ids: &[&str]| SentencePredictions {
            sentence: i,
            span: Span::new(0, 1),
            text: "x".into(),
            predictions: ids.iter().map(|id| p(id)).collect(),
        };
        let x = Extraction {
            source: "d".into(),
            title: None,
            method: "bm25".into(),
            threshold: 0.5,
            attack_version: "18.1".into(),
            sentence_count: 3,
            sentences: vec![s(0, &["T1059.001", "T1003"]), s(2, &["T1003", "T1566"])],
            techniques: Vec::new(),
        };
        assert_eq!(
            extraction_predicted_set(&x),
            set(&["T1003", "T1059.001", "T1566"])
        );
    }

    #[test]
    fn union_by_document_groups_in_first_seen_order() {
        let (g1, p1) = (set(&["T1059"]), set(&["T1003"]));
        let (g2, p2) = (set(&[]), set(&["T1059"]));
        let (g3, p3) = (set(&["T1566"]), set(&[]));
        let docs = union_by_document([("x", &g1, &p1), ("y", &g3, &p3), ("x", &g2, &p2)]);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id, "x");
        assert_eq!(docs[0].gold, set(&["T1059"]));
        assert_eq!(docs[0].predicted, set(&["T1003", "T1059"]));
        assert_eq!(docs[1].id, "y");
    }

    // Expected numbers from scikit-learn 1.9.1:
    //
    // from sklearn.preprocessing import MultiLabelBinarizer
    // from sklearn.metrics import precision_recall_fscore_support as prfs
    // gold = [{"T1059"}, {"T1059", "T1003"}, set(), {"T1566"}, {"T1105"}]
    // pred = [{"T1059"}, {"T1003", "T1566"}, {"T1105"}, set(), {"T1105", "T1059"}]
    // labels = ["T1003", "T1059", "T1105", "T1566"]
    // mlb = MultiLabelBinarizer(classes=labels); Y = mlb.fit_transform(gold); P = mlb.transform(pred)
    // prfs(Y, P, average="micro", zero_division=0)  # (0.5, 0.6, 0.5454545454545454)
    // prfs(Y, P, average="macro", zero_division=0)  # (0.5, 0.625, 0.5416666666666666)
    // prfs(Y, P, average=None, zero_division=0)
    //   # p [1, 0.5, 0.5, 0], r [1, 0.5, 1, 0], f [1, 0.5, 0.6667, 0], support [1, 2, 1, 1]
    // # restricted labels, one never occurring (T1490):
    // mlb = MultiLabelBinarizer(classes=labels + ["T1490"]); Y = mlb.fit_transform(gold); P = mlb.transform(pred)
    // prfs(Y, P, labels=[1, 3, 4], average="micro", zero_division=0)  # (1/3, 1/3, 1/3)
    // prfs(Y, P, labels=[1, 3, 4], average="macro", zero_division=0)  # (1/6, 1/6, 1/6)
    #[test]
    fn multilabel_prf_matches_scikit_learn() {
        let gold = vec![
            set(&["T1059"]),
            set(&["T1059", "T1003"]),
            set(&[]),
            set(&["T1566"]),
            set(&["T1105"]),
        ];
        let pred = vec![
            set(&["T1059"]),
            set(&["T1003", "T1566"]),
            set(&["T1105"]),
            set(&[]),
            set(&["T1105", "T1059"]),
        ];
        let r = multilabel_prf(&gold, &pred, None).unwrap();
        assert!(close(r.micro.precision, 0.5));
        assert!(close(r.micro.recall, 0.6));
        assert!(close(r.micro.f1, 0.5454545454545454));
        assert!(close(r.macro_.precision, 0.5));
        assert!(close(r.macro_.recall, 0.625));
        assert!(close(r.macro_.f1, 0.5416666666666666));
        let labels: Vec<&str> = r.per_label.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["T1003", "T1059", "T1105", "T1566"]);
        let f1s: Vec<f64> = r.per_label.iter().map(|l| l.f1).collect();
        for (a, b) in f1s.iter().zip([1.0, 0.5, 2.0 / 3.0, 0.0]) {
            assert!(close(*a, b), "{f1s:?}");
        }
        let supports: Vec<usize> = r.per_label.iter().map(|l| l.support).collect();
        assert_eq!(supports, [1, 2, 1, 1]);

        let only = [t("T1059"), t("T1566"), t("T1490")];
        let r = multilabel_prf(&gold, &pred, Some(&only)).unwrap();
        assert!(close(r.micro.precision, 1.0 / 3.0));
        assert!(close(r.micro.recall, 1.0 / 3.0));
        assert!(close(r.micro.f1, 1.0 / 3.0));
        assert!(close(r.macro_.precision, 1.0 / 6.0));
        assert!(close(r.macro_.recall, 1.0 / 6.0));
        assert!(close(r.macro_.f1, 1.0 / 6.0));
        assert_eq!(r.per_label.len(), 3);

        assert!(multilabel_prf(&gold, &pred[..2], None).is_err());
        assert!(multilabel_prf(&gold, &pred, Some(&[t("T1059"), t("T1059")])).is_err());
        let empty = multilabel_prf(&[], &[], None).unwrap();
        assert_eq!(
            (empty.micro.f1, empty.macro_.f1, empty.samples),
            (0.0, 0.0, 0)
        );
    }

    #[test]
    fn rank_metrics_overall_and_by_group() {
        let q = |gold: &[&str], ranked: &[&str], group: &str| RankedQuery {
            gold: set(gold),
            ranked: ranked.iter().map(|s| t(s)).collect(),
            group: group.into(),
        };
        let queries = vec![
            q(&["T1059.001"], &["T1059.001", "T1003"], "apt29"),
            // Duplicate T1003 is counted once: the hit is at rank 3.
            q(
                &["T1566.001", "T1105"],
                &["T1003", "T1003", "T1059", "T1105", "T1566.001"],
                "apt29",
            ),
            q(
                &["T1490"],
                &["T1003", "T1059", "T1105", "T1566", "T1021", "T1490"],
                "fin7",
            ),
            q(&[], &["T1003"], "fin7"),
        ];
        let r = rank_metrics(&queries, &RankOptions::default());
        let o = &r.overall;
        assert_eq!((o.n, o.skipped), (3, 1));
        assert!(close(o.p_at_1, 1.0 / 3.0));
        assert!(close(o.hit_at_3, 2.0 / 3.0));
        assert!(close(o.hit_at_5, 2.0 / 3.0));
        assert!(close(o.mrr, (1.0 + 1.0 / 3.0 + 1.0 / 6.0) / 3.0));
        // recall@3: 1, 1/2, 0; recall@5 (after dedup the second list has 4 items): 1, 1, 0.
        assert!(close(o.recall_at[&3], 0.5));
        assert!(close(o.recall_at[&5], 2.0 / 3.0));
        assert!(close(o.recall_at[&10], 1.0));
        assert!(close(o.hit_at[&10], 1.0));
        let apt29 = &r.by_group["apt29"];
        assert_eq!(apt29.n, 2);
        assert!(close(apt29.mrr, (1.0 + 1.0 / 3.0) / 2.0));
        let fin7 = &r.by_group["fin7"];
        assert_eq!((fin7.n, fin7.skipped), (1, 1));
        assert!(close(fin7.p_at_1, 0.0));

        // Parent collapse: T1059.003 ranked first now hits gold T1059.001 (both -> T1059).
        let sub = vec![q(&["T1059.001"], &["T1059.003", "T1059.001", "T1003"], "x")];
        let plain = rank_metrics(&sub, &RankOptions::default());
        assert!(close(plain.overall.mrr, 0.5));
        let collapsed = rank_metrics(
            &sub,
            &RankOptions {
                collapse_to_parent: true,
                ..Default::default()
            },
        );
        assert!(close(collapsed.overall.p_at_1, 1.0));
        assert!(close(collapsed.overall.recall_at[&1], 1.0));
        assert!(collapsed.collapse_to_parent);
    }

    #[test]
    fn bootstrap_is_deterministic_and_contains_the_mean() {
        let values: Vec<f64> = (0..40).map(|i| ((i * 37) % 11) as f64 / 10.0).collect();
        let m = values.iter().sum::<f64>() / values.len() as f64;
        let (lo, hi) = bootstrap_ci(&values, DEFAULT_BOOTSTRAP_RESAMPLES, 7).unwrap();
        assert!(lo < m && m < hi, "{lo} {m} {hi}");
        assert!(hi - lo > 0.05 && hi - lo < 0.6, "{lo} {hi}");
        assert_eq!(
            bootstrap_ci(&values, DEFAULT_BOOTSTRAP_RESAMPLES, 7).unwrap(),
            (lo, hi)
        );
        assert_ne!(
            bootstrap_ci(&values, DEFAULT_BOOTSTRAP_RESAMPLES, 8).unwrap(),
            (lo, hi)
        );
        let ci = bootstrap_mean_ci(&values, 200, 1).unwrap();
        assert!(close(ci.mean, m));
        assert!(ci.lo <= ci.mean && ci.mean <= ci.hi);
        // Constant data: a degenerate interval at the value.
        assert_eq!(bootstrap_ci(&[0.3; 5], 50, 0).unwrap(), (0.3, 0.3));
        assert!(bootstrap_ci(&[], 10, 0).is_err());
        assert!(bootstrap_ci(&[1.0], 0, 0).is_err());
        assert!(bootstrap_ci(&[f64::NAN], 10, 0).is_err());
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) == [1.075, 3.925]
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile_sorted(&s, 0.025), 1.075));
        assert!(close(percentile_sorted(&s, 0.975), 3.925));
    }

    fn scored(doc: &str, gold: &[&str], scores: &[(&str, f32)]) -> ScoredSentence {
        ScoredSentence {
            doc: doc.into(),
            gold: set(gold),
            scores: scores.iter().map(|(s, p)| (t(s), *p)).collect(),
        }
    }

    #[test]
    fn threshold_tuning_finds_the_separating_value_and_breaks_ties_towards_half() {
        let samples = vec![
            scored("d1", &["T1059"], &[("T1059", 0.8), ("T1003", 0.3)]),
            scored("d1", &[], &[("T1003", 0.35)]),
            scored("d2", &["T1003"], &[("T1003", 0.7), ("T1059", 0.2)]),
        ];
        // Any threshold in (0.35, 0.7] separates perfectly; 0.5 is the closest to 0.5.
        let grid = default_grid();
        assert_eq!(grid.len(), 91);
        let obj = Objective::SentenceMacroF1 { labels: None };
        let best = tune_threshold(&samples, &obj, &grid).unwrap();
        assert!(close(best.objective_value, 1.0));
        assert!((best.threshold - 0.5).abs() < 1e-6, "{best:?}");
        // With a grid that excludes 0.5, the tie between 0.4 and 0.6 goes to the lower value.
        let best = tune_threshold(&samples, &obj, &[0.1, 0.4, 0.6, 0.9]).unwrap();
        assert_eq!(best.threshold, 0.4);
        // Per-document objective: d1 must not predict T1003 (0.35), d2 must predict it (0.7).
        let obj = Objective::DocumentF1 {
            variant: DocF1Variant::AllGold,
            vocab: None,
        };
        let best = tune_threshold(&samples, &obj, &[0.2, 0.3, 0.75, 0.36]).unwrap();
        assert_eq!(best.threshold, 0.36);
        assert!(close(best.objective_value, 1.0));
        assert!(tune_threshold(&samples, &obj, &[]).is_err());
        assert!(tune_threshold(&samples, &obj, &[1.5]).is_err());
        let preds = apply_threshold(&samples, 0.35);
        assert_eq!(preds[1], set(&["T1003"]), "thresholds are inclusive");
    }

    #[test]
    fn per_label_thresholds() {
        let samples = vec![
            scored("d", &["T1059"], &[("T1059", 0.9), ("T1003", 0.2)]),
            scored("d", &[], &[("T1059", 0.6), ("T1003", 0.1)]),
            scored("d", &["T1003"], &[("T1059", 0.1), ("T1003", 0.25)]),
        ];
        let th = tune_per_label_thresholds(&samples, &default_grid(), 0.5).unwrap();
        // T1059: any threshold in (0.6, 0.9] is perfect; the closest to 0.5 is 0.61.
        assert!((th.per_label[&t("T1059")] - 0.61).abs() < 1e-6, "{th:?}");
        // T1003: (0.2, 0.25] is perfect: 0.25.
        assert!((th.per_label[&t("T1003")] - 0.25).abs() < 1e-6, "{th:?}");
        assert_eq!(th.for_label(&t("T1566")), 0.5);
        let preds = apply_thresholds(&samples, &th);
        assert_eq!(preds, vec![set(&["T1059"]), set(&[]), set(&["T1003"])]);
    }

    #[test]
    fn table_is_aligned() {
        let out = render_table(
            &["metric", "value", "n"],
            &[
                vec!["doc F1".into(), "0.512".into(), "31".into()],
                vec!["macro F1 (sentences)".into(), "0.4".into(), "3820".into()],
                vec!["short".into()],
            ],
        );
        let expected = "\
metric                value     n
--------------------  -----  ----
doc F1                0.512    31
macro F1 (sentences)    0.4  3820
short
";
        assert_eq!(out, expected);
    }

    #[test]
    fn reports_serialise() {
        let r = multilabel_prf(&[set(&["T1059"])], &[set(&["T1059"])], None).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["macro"]["f1"], 1.0);
        assert_eq!(v["per_label"][0]["fn"], 0);
        let rr = rank_metrics(&[], &RankOptions::default());
        let v = serde_json::to_value(&rr).unwrap();
        assert_eq!(v["n"], 0);
        assert!(v["recall_at"]["10"].is_number());
    }
}
