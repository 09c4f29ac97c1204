//! The sentence-dataset protocol (TRAM2, AnnoCTR; CASSANDRA's per-document F1).
//!
//! Per-document F1 unions a document's sentence predictions and compares them with the union
//! of its gold labels; "in-vocabulary" keeps only labels of the training split (the published
//! protocol), "all gold" keeps every gold label. Bootstrap CIs resample documents.
//!
//! The metrics at a threshold ([`point_metrics_at`]) and the threshold tuning
//! ([`tune_document_threshold`]) are defined here once: the evaluation commands and the
//! trainers' validation figures (`ttpmap_ml::train::classifier::validation_metrics`) call them.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::eval::{
    self, bootstrap_mean_ci, per_document_f1, render_table, DocF1Report, DocF1Variant, MeanCi,
    Objective, Prf, PrfReport, ScoredSentence, TunedThreshold,
};
use crate::pipeline::SentenceScorer;
use crate::TechniqueId;

/// Sentences scored per call of the scorer (and per progress step).
const CHUNK: usize = 256;

/// Scores every sentence of `ds` with `scorer`; `progress` gets the number of sentences done
/// after each chunk.
pub fn score_dataset(
    ds: &Dataset,
    scorer: &dyn SentenceScorer,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<ScoredSentence>> {
    let sentences: Vec<_> = ds.documents.iter().flat_map(|d| &d.sentences).collect();
    let mut out = Vec::with_capacity(sentences.len());
    let all_texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    for chunk in sentences.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|s| s.text.as_str()).collect();
        let preds = scorer.score(&texts)?;
        for (s, p) in chunk.iter().zip(preds) {
            out.push(ScoredSentence {
                doc: s.doc.clone(),
                gold: s.labels.iter().cloned().collect(),
                scores: p.into_iter().map(|p| (p.technique, p.score)).collect(),
            });
        }
        progress(out.len());
    }
    apply_document_rule(&mut out, scorer.document_rule(), &all_texts);
    Ok(out)
}

/// Applies `rule` to each document of `samples` (grouped by `doc`), as extraction does;
/// `texts` are the sentences of `samples` (a text repeated within a document counts once,
/// [`crate::pipeline::repeated_texts`]).
pub fn apply_document_rule(
    samples: &mut [ScoredSentence],
    rule: crate::pipeline::DocumentRule,
    texts: &[&str],
) {
    if rule == crate::pipeline::DocumentRule::AnySentence {
        return;
    }
    let mut docs: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, s) in samples.iter().enumerate() {
        docs.entry(s.doc.clone()).or_default().push(i);
    }
    // Without one text per sample (a caller's mistake) nothing counts as repeated.
    debug_assert_eq!(texts.len(), samples.len());
    for idx in docs.values() {
        let lifts = {
            let repeated = if texts.len() == samples.len() {
                crate::pipeline::repeated_texts(idx.iter().map(|&i| texts[i]))
            } else {
                vec![false; idx.len()]
            };
            let rows: Vec<Vec<(&TechniqueId, f32)>> = idx
                .iter()
                .zip(repeated)
                .map(|(&i, again)| {
                    samples[i]
                        .scores
                        .iter()
                        .filter(|_| !again)
                        .map(|(t, p)| (t, *p))
                        .collect()
                })
                .collect();
            rule.lifts(&rows)
        };
        for l in lifts {
            samples[idx[l.sentence]].scores[l.entry].1 = l.score;
        }
    }
}

/// Bootstrap settings of the confidence intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bootstrap {
    /// Resamples. Default [`eval::DEFAULT_BOOTSTRAP_RESAMPLES`].
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: eval::DEFAULT_BOOTSTRAP_RESAMPLES,
            seed: 42,
        }
    }
}

/// The protocol's metrics at one threshold, without confidence intervals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointMetrics {
    pub threshold: f32,
    pub per_document_f1_in_vocabulary: DocF1Report,
    pub per_document_f1_all_gold: DocF1Report,
    /// Sentence-level P/R/F1 over the vocabulary's labels (per-label rows in their order).
    pub sentence: PrfReport,
}

/// Per-document F1 (both variants) and sentence P/R/F1 of `scores` at `threshold`; `labels`
/// is the vocabulary (the training split's label set, or a model's labels), without
/// duplicates. The one definition of "the metrics at a threshold": [`metrics_at`] adds
/// bootstrap CIs, a trainer's validation figures use it as it is.
pub fn point_metrics_at(
    scores: &[ScoredSentence],
    threshold: f32,
    labels: &[TechniqueId],
) -> Result<PointMetrics> {
    let vocab: BTreeSet<TechniqueId> = labels.iter().cloned().collect();
    let predicted = eval::apply_threshold(scores, threshold);
    let golds: Vec<BTreeSet<TechniqueId>> = scores.iter().map(|s| s.gold.clone()).collect();
    let docs = eval::union_by_document(
        scores
            .iter()
            .zip(&predicted)
            .map(|(s, p)| (s.doc.as_str(), &s.gold, p)),
    );
    Ok(PointMetrics {
        threshold,
        per_document_f1_in_vocabulary: per_document_f1(
            &docs,
            DocF1Variant::InVocabulary,
            Some(&vocab),
        )?,
        per_document_f1_all_gold: per_document_f1(&docs, DocF1Variant::AllGold, None)?,
        sentence: eval::multilabel_prf(&golds, &predicted, Some(labels))?,
    })
}

/// Every metric of the protocol at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtThreshold {
    pub threshold: f32,
    pub per_document_f1_in_vocabulary: DocF1Report,
    pub per_document_f1_in_vocabulary_ci95: MeanCi,
    pub per_document_f1_all_gold: DocF1Report,
    pub per_document_f1_all_gold_ci95: MeanCi,
    /// Sentence-level P/R/F1 over the vocabulary's labels.
    pub sentence: PrfReport,
}

/// [`point_metrics_at`] with bootstrap CIs of both per-document F1 means; `vocab` is the
/// training split's label set. Fails when no document is scored (a CI of nothing).
pub fn metrics_at(
    scores: &[ScoredSentence],
    threshold: f32,
    vocab: &BTreeSet<TechniqueId>,
    bootstrap: &Bootstrap,
) -> Result<AtThreshold> {
    let labels: Vec<TechniqueId> = vocab.iter().cloned().collect();
    let m = point_metrics_at(scores, threshold, &labels)?;
    let ci = |r: &DocF1Report| {
        let f1s: Vec<f64> = r.per_document.iter().map(|d| d.f1).collect();
        bootstrap_mean_ci(&f1s, bootstrap.resamples, bootstrap.seed)
    };
    Ok(AtThreshold {
        threshold,
        per_document_f1_in_vocabulary_ci95: ci(&m.per_document_f1_in_vocabulary)?,
        per_document_f1_all_gold_ci95: ci(&m.per_document_f1_all_gold)?,
        per_document_f1_in_vocabulary: m.per_document_f1_in_vocabulary,
        per_document_f1_all_gold: m.per_document_f1_all_gold,
        sentence: m.sentence,
    })
}

/// The threshold of [`eval::default_grid`] maximising in-vocabulary per-document F1 of
/// `scores` (ties: closest to 0.5, then the lower): how every threshold of the protocol is
/// tuned, by [`choose_threshold`] and by a trainer on its validation split.
pub fn tune_document_threshold(
    scores: &[ScoredSentence],
    vocab: &BTreeSet<TechniqueId>,
) -> Result<TunedThreshold> {
    let objective = Objective::DocumentF1 {
        variant: DocF1Variant::InVocabulary,
        vocab: Some(vocab.clone()),
    };
    eval::tune_threshold(scores, &objective, &eval::default_grid())
}

/// Where the reported threshold came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdSource {
    /// Given by the caller (`--threshold`).
    Fixed,
    /// A trained artifact's threshold, tuned on its own validation split.
    Artifact,
    /// Tuned on the training split (in-vocabulary per-document F1).
    TunedOnTrain,
    /// Tuned on a held-out part of the training split (the rest serves as neighbours).
    TunedOnHeldOut,
}

impl ThresholdSource {
    /// A short note for the report's first line.
    pub fn note(self) -> &'static str {
        match self {
            ThresholdSource::Fixed => "",
            ThresholdSource::Artifact => " (tuned on the classifier's validation split)",
            ThresholdSource::TunedOnTrain => " (tuned on train)",
            ThresholdSource::TunedOnHeldOut => {
                " (tuned on 20% of train held out from the neighbours)"
            }
        }
    }
}

/// A trained model's two operating points: the untuned threshold and one tuned on validation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OperatingPoints {
    pub default: f32,
    pub tuned: f32,
}

/// The threshold policy: a fixed threshold wins, then a trained model's own tuned threshold
/// (its training data must not tune it again), else the one maximising in-vocabulary
/// per-document F1 on the tuning scores (`tuning` is called only then; the caller decides
/// which split they come from, never the test split).
pub fn choose_threshold(
    fixed: Option<f32>,
    model: Option<OperatingPoints>,
    held_out: bool,
    vocab: &BTreeSet<TechniqueId>,
    tuning: impl FnOnce() -> Result<Vec<ScoredSentence>>,
) -> Result<(f32, ThresholdSource, Option<TunedThreshold>)> {
    if let Some(t) = fixed {
        return Ok((t, ThresholdSource::Fixed, None));
    }
    if let Some(points) = model {
        return Ok((points.tuned, ThresholdSource::Artifact, None));
    }
    let tuned = tune_document_threshold(&tuning()?, vocab)?;
    let source = if held_out {
        ThresholdSource::TunedOnHeldOut
    } else {
        ThresholdSource::TunedOnTrain
    };
    Ok((tuned.threshold, source, Some(tuned)))
}

/// What is known about one seed of an ensemble (from the artifact).
#[derive(Clone, Debug, PartialEq)]
pub struct SeedInfo {
    pub seed: u64,
    /// Which weights the seed kept (`base`, `ema`, `swa`).
    pub selected: String,
    pub train_seconds: Option<f64>,
    /// The seed's own threshold tuned on validation, when the artifact records it.
    pub own_threshold: Option<f32>,
}

/// One seed of an ensemble scored alone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedTest {
    pub seed: u64,
    pub selected: String,
    pub train_seconds: Option<f64>,
    /// `seed_validation`: the seed's own threshold; `ensemble`: the artifact's (an artifact
    /// written before per-seed thresholds were kept).
    pub threshold_source: &'static str,
    pub tuned: SeedScores,
    pub at_default: SeedScores,
}

/// A seed's headline figures at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedScores {
    pub threshold: f32,
    pub per_document_f1_in_vocabulary: f64,
    pub per_document_f1_in_vocabulary_ci95: MeanCi,
    pub per_document_f1_all_gold: f64,
    pub documents_scored: usize,
    pub sentence_micro: Prf,
    pub sentence_macro: Prf,
}

impl From<AtThreshold> for SeedScores {
    fn from(a: AtThreshold) -> Self {
        SeedScores {
            threshold: a.threshold,
            per_document_f1_in_vocabulary: a.per_document_f1_in_vocabulary.mean_f1,
            per_document_f1_in_vocabulary_ci95: a.per_document_f1_in_vocabulary_ci95,
            per_document_f1_all_gold: a.per_document_f1_all_gold.mean_f1,
            documents_scored: a.per_document_f1_in_vocabulary.documents_scored,
            sentence_micro: a.sentence.micro,
            sentence_macro: a.sentence.macro_,
        }
    }
}

/// Each seed's scores at its own tuned threshold (else the ensemble's) and at the default.
pub fn per_seed_results(
    seeds: &[SeedInfo],
    per_seed_scores: &[Vec<ScoredSentence>],
    points: OperatingPoints,
    vocab: &BTreeSet<TechniqueId>,
    bootstrap: &Bootstrap,
) -> Result<Vec<SeedTest>> {
    seeds
        .iter()
        .zip(per_seed_scores)
        .map(|(info, scores)| {
            Ok(SeedTest {
                seed: info.seed,
                selected: info.selected.clone(),
                train_seconds: info.train_seconds,
                threshold_source: if info.own_threshold.is_some() {
                    "seed_validation"
                } else {
                    "ensemble"
                },
                tuned: metrics_at(
                    scores,
                    info.own_threshold.unwrap_or(points.tuned),
                    vocab,
                    bootstrap,
                )?
                .into(),
                at_default: metrics_at(scores, points.default, vocab, bootstrap)?.into(),
            })
        })
        .collect()
}

/// Candidate recall: of the gold techniques of the labelled sentences (each sentence and
/// technique counted once), the share among that sentence's own `top_k` candidates (after the
/// document rule): what the candidate stage hands on, whatever the threshold. (Per document it
/// says little: a report's sentences together propose nearly every technique.)
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CandidateRecall {
    pub top_k: usize,
    /// Gold labels in the vocabulary, and all gold labels.
    pub in_vocabulary: f64,
    pub all_gold: f64,
    /// Gold (sentence, technique) pairs counted, in the vocabulary and all.
    pub gold_in_vocabulary: usize,
    pub gold_all: usize,
}

/// [`CandidateRecall`] of `scores` (the candidates as scored; a scorer that lists every label,
/// such as the classifier's per-seed pass, is cut to its best `top_k`); `vocab` is the training
/// split's label set.
pub fn candidate_recall(
    scores: &[ScoredSentence],
    top_k: usize,
    vocab: &BTreeSet<TechniqueId>,
) -> CandidateRecall {
    let (mut found, mut gold, mut found_v, mut gold_v) = (0usize, 0usize, 0usize, 0usize);
    for s in scores.iter().filter(|s| !s.gold.is_empty()) {
        let mut ranked: Vec<(&TechniqueId, f32)> = s
            .scores
            .iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|(t, p)| (t, *p))
            .collect();
        ranked.sort_by(|a, b| crate::pipeline::rank_order(*a, *b));
        ranked.truncate(top_k);
        for g in &s.gold {
            let hit = ranked.iter().any(|(t, _)| *t == g);
            gold += 1;
            found += usize::from(hit);
            if vocab.contains(g) {
                gold_v += 1;
                found_v += usize::from(hit);
            }
        }
    }
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    CandidateRecall {
        top_k,
        in_vocabulary: share(found_v, gold_v),
        all_gold: share(found, gold),
        gold_in_vocabulary: gold_v,
        gold_all: gold,
    }
}

/// How the evaluation was set up (names as the CLI spells them).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SentenceEvalSetup {
    pub dataset: String,
    pub split: String,
    pub method: String,
    pub label_space: String,
    pub top_k: usize,
    pub neighbours: String,
    pub dense_vote: String,
    pub attack_version: String,
}

/// The sentence protocol's report (`results/<method>-<dataset>.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SentenceEvalReport {
    #[serde(flatten)]
    pub setup: SentenceEvalSetup,
    /// The headline figures at the chosen threshold.
    #[serde(flatten)]
    pub headline: AtThreshold,
    pub threshold_source: ThresholdSource,
    pub threshold_tuned_on_train: bool,
    pub train_objective_per_document_f1_in_vocabulary: Option<f64>,
    pub classifier_thresholds: Option<OperatingPoints>,
    /// A trained model's figures at its untuned threshold.
    pub at_default_threshold: Option<AtThreshold>,
    /// The most any threshold could find (see [`CandidateRecall`]).
    pub candidate_recall: CandidateRecall,
    pub per_seed: Vec<SeedTest>,
    /// Sentences and documents of the test split.
    pub sentences: usize,
    pub documents: usize,
    pub seconds: f64,
}

impl SentenceEvalReport {
    /// The report as text tables.
    pub fn render(&self) -> String {
        let pct = |x: f64| format!("{:.2}", 100.0 * x);
        let h = &self.headline;
        let mut out = format!(
            "{} {} ({} documents, {} sentences), method {}, threshold {:.2}{}\n\n",
            self.setup.dataset,
            self.setup.split,
            self.documents,
            self.sentences,
            self.setup.method,
            h.threshold,
            self.threshold_source.note()
        );
        let mut rows = Vec::new();
        let mut push_at = |suffix: String, a: &AtThreshold| {
            for (name, r, ci) in [
                (
                    "in-vocabulary (CASSANDRA)",
                    &a.per_document_f1_in_vocabulary,
                    &a.per_document_f1_in_vocabulary_ci95,
                ),
                (
                    "all gold labels",
                    &a.per_document_f1_all_gold,
                    &a.per_document_f1_all_gold_ci95,
                ),
            ] {
                rows.push(vec![
                    format!("per-document F1, {name}{suffix}"),
                    pct(r.mean_f1),
                    format!("[{}, {}]", pct(ci.lo), pct(ci.hi)),
                    r.documents_scored.to_string(),
                ]);
            }
            for (name, f1) in [
                ("micro", a.sentence.micro.f1),
                ("macro", a.sentence.macro_.f1),
            ] {
                rows.push(vec![
                    format!("sentence {name} F1 (train labels){suffix}"),
                    pct(f1),
                    String::new(),
                    a.sentence.samples.to_string(),
                ]);
            }
        };
        push_at(String::new(), h);
        if let Some(d) = &self.at_default_threshold {
            push_at(format!(", at {:.2}", d.threshold), d);
        }
        let c = &self.candidate_recall;
        for (name, v) in [
            ("in-vocabulary", c.in_vocabulary),
            ("all gold labels", c.all_gold),
        ] {
            rows.push(vec![
                format!("candidate recall@{} of labelled sentences, {name}", c.top_k),
                pct(v),
                String::new(),
                if name == "in-vocabulary" {
                    c.gold_in_vocabulary
                } else {
                    c.gold_all
                }
                .to_string(),
            ]);
        }
        out += &render_table(&["metric", "value", "95% CI", "n"], &rows);
        if !self.per_seed.is_empty() {
            let source = if self
                .per_seed
                .iter()
                .all(|r| r.threshold_source == "seed_validation")
            {
                "its own threshold tuned on validation"
            } else {
                "the ensemble's threshold: this artifact predates per-seed thresholds"
            };
            out += &format!("\nEach seed alone (per-document F1 in-vocabulary; {source}):\n");
            let rows: Vec<Vec<String>> = self
                .per_seed
                .iter()
                .map(|r| {
                    vec![
                        r.seed.to_string(),
                        r.selected.clone(),
                        format!("{:.2}", r.tuned.threshold),
                        pct(r.tuned.per_document_f1_in_vocabulary),
                        pct(r.at_default.per_document_f1_in_vocabulary),
                        pct(r.tuned.sentence_micro.f1),
                        pct(r.tuned.sentence_macro.f1),
                        r.train_seconds
                            .map(|t| format!("{t:.0}"))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            out += &render_table(
                &[
                    "seed",
                    "kept",
                    "threshold",
                    "doc F1 tuned",
                    "doc F1 at 0.5",
                    "micro F1",
                    "macro F1",
                    "train s",
                ],
                &rows,
            );
        }
        let mut per_label = h.sentence.per_label.clone();
        per_label.sort_by(|a, b| b.support.cmp(&a.support).then(a.label.cmp(&b.label)));
        let rows: Vec<Vec<String>> = per_label
            .iter()
            .filter(|l| l.support > 0)
            .take(15)
            .map(|l| {
                vec![
                    l.label.to_string(),
                    l.support.to_string(),
                    pct(l.precision),
                    pct(l.recall),
                    pct(l.f1),
                ]
            })
            .collect();
        out += "\nMost frequent test techniques:\n";
        out += &render_table(&["technique", "support", "P", "R", "F1"], &rows);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    fn sentence(doc: &str, gold: &[&str], scores: &[(&str, f32)]) -> ScoredSentence {
        ScoredSentence {
            doc: doc.into(),
            gold: gold.iter().map(|g| id(g)).collect(),
            scores: scores.iter().map(|(t, p)| (id(t), *p)).collect(),
        }
    }

    #[test]
    fn the_document_rule_is_applied_within_each_document_only() {
        let mut samples = vec![
            sentence("a", &["T1059"], &[("T1059", 0.3)]),
            sentence("b", &[], &[("T1059", 0.3)]),
            sentence("a", &[], &[("T1059", 0.3)]),
        ];
        let before = samples.clone();
        let texts = ["One.", "Two.", "Three."];
        apply_document_rule(
            &mut samples,
            crate::pipeline::DocumentRule::AnySentence,
            &texts,
        );
        assert_eq!(samples, before);
        apply_document_rule(
            &mut samples,
            crate::pipeline::DocumentRule::NoisyOr { top: 3 },
            &texts,
        );
        // Document a: 1 - 0.7^2 = 0.51 on its first sentence; b has one sentence.
        assert!((samples[0].scores[0].1 - 0.51).abs() < 1e-6);
        assert_eq!(samples[1].scores[0].1, 0.3);
        assert_eq!(samples[2].scores[0].1, 0.3);
        // The same sentence twice in a document (a running header) is one piece of evidence.
        let mut again = before.clone();
        apply_document_rule(
            &mut again,
            crate::pipeline::DocumentRule::NoisyOr { top: 3 },
            &["Header  line", "Two.", "header line"],
        );
        assert_eq!(again, before);
    }

    #[test]
    fn candidate_recall_is_the_share_of_gold_among_each_sentences_best_k() {
        let samples = vec![
            sentence("a", &["T1059", "T1003"], &[("T1059", 0.01), ("T1105", 0.9)]),
            sentence("a", &[], &[("T1027", 0.5), ("T1003", 0.2)]),
            sentence("b", &["T1566"], &[("T1566", 0.3), ("T1003", 0.0)]),
            sentence("c", &["T1003"], &[("T1003", 0.0)]),
        ];
        let vocab: BTreeSet<TechniqueId> = ["T1059", "T1566"]
            .iter()
            .map(|t| TechniqueId::parse(t).unwrap())
            .collect();
        // Top 2: T1059 and T1566 found, T1003 of a (only in another sentence) and of c (score
        // 0) not: 2 of 4; in the vocabulary 2 of 2.
        let r = candidate_recall(&samples, 2, &vocab);
        assert_eq!((r.gold_all, r.gold_in_vocabulary), (4, 2));
        assert_eq!((r.all_gold, r.in_vocabulary), (0.5, 1.0));
        // Top 1: a's T1105 first, so only T1566.
        let r = candidate_recall(&samples, 1, &vocab);
        assert_eq!((r.top_k, r.all_gold, r.in_vocabulary), (1, 0.25, 0.5));
    }

    /// Two documents; at 0.5 document a predicts {T1059} (gold {T1059, T1003}: P 1, R 0.5,
    /// F1 2/3) and document b predicts {T1566} (gold {T1566}: F1 1). Mean 5/6, by hand.
    #[test]
    fn metrics_at_a_threshold_match_hand_computed_values() {
        let scores = vec![
            sentence("a", &["T1059"], &[("T1059", 0.9), ("T1003", 0.2)]),
            sentence("a", &["T1003"], &[("T1003", 0.4)]),
            sentence("b", &["T1566"], &[("T1566", 0.7)]),
        ];
        let vocab: BTreeSet<_> = ["T1059", "T1003", "T1566"].iter().map(|s| id(s)).collect();
        let m = metrics_at(&scores, 0.5, &vocab, &Bootstrap::default()).unwrap();
        assert!((m.per_document_f1_in_vocabulary.mean_f1 - 5.0 / 6.0).abs() < 1e-9);
        assert_eq!(m.per_document_f1_in_vocabulary.documents_scored, 2);
        // Sentence micro: TP 2 (T1059, T1566), FP 0, FN 1 (T1003): F1 = 4/5.
        assert!((m.sentence.micro.f1 - 0.8).abs() < 1e-9);
        // At 0.3 the T1003 sentence is found too: both documents perfect.
        let m = metrics_at(&scores, 0.3, &vocab, &Bootstrap::default()).unwrap();
        assert!((m.per_document_f1_in_vocabulary.mean_f1 - 1.0).abs() < 1e-9);
    }

    /// The CI-less figures are the ones `metrics_at` reports, and need no scored document.
    #[test]
    fn point_metrics_are_metrics_at_without_intervals() {
        let scores = vec![
            sentence("a", &["T1059"], &[("T1059", 0.9), ("T1003", 0.2)]),
            sentence("b", &["T1566"], &[("T1566", 0.4)]),
        ];
        let vocab: BTreeSet<_> = ["T1059", "T1003", "T1566"].iter().map(|s| id(s)).collect();
        let labels: Vec<_> = vocab.iter().cloned().collect();
        let p = point_metrics_at(&scores, 0.5, &labels).unwrap();
        let m = metrics_at(&scores, 0.5, &vocab, &Bootstrap::default()).unwrap();
        assert_eq!(
            p.per_document_f1_in_vocabulary,
            m.per_document_f1_in_vocabulary
        );
        assert_eq!(p.per_document_f1_all_gold, m.per_document_f1_all_gold);
        assert_eq!(p.sentence, m.sentence);
        // No document has an in-vocabulary gold label: zeros, where metrics_at has no CI.
        let unknown = vec![sentence("a", &["T1105"], &[("T1059", 0.9)])];
        let p = point_metrics_at(&unknown, 0.5, &labels).unwrap();
        assert_eq!(p.per_document_f1_in_vocabulary.documents_scored, 0);
        assert_eq!(p.per_document_f1_in_vocabulary.mean_f1, 0.0);
        assert!(metrics_at(&unknown, 0.5, &vocab, &Bootstrap::default()).is_err());
        let t = tune_document_threshold(&scores, &vocab).unwrap();
        assert!(t.threshold <= 0.4 && t.objective_value == 1.0, "{t:?}");
    }

    #[test]
    fn the_threshold_policy_never_tunes_when_told_or_trained() {
        let vocab: BTreeSet<_> = [id("T1059")].into();
        let never = || -> Result<Vec<ScoredSentence>> { panic!("must not score the tuning split") };
        let (t, s, _) = choose_threshold(Some(0.42), None, false, &vocab, never).unwrap();
        assert_eq!((t, s), (0.42, ThresholdSource::Fixed));
        let points = OperatingPoints {
            default: 0.5,
            tuned: 0.31,
        };
        let (t, s, _) = choose_threshold(None, Some(points), false, &vocab, never).unwrap();
        assert_eq!((t, s), (0.31, ThresholdSource::Artifact));
        let tuning = || Ok(vec![sentence("a", &["T1059"], &[("T1059", 0.35)])]);
        let (t, s, tuned) = choose_threshold(None, None, true, &vocab, tuning).unwrap();
        assert_eq!(s, ThresholdSource::TunedOnHeldOut);
        assert!(t <= 0.35 && tuned.unwrap().objective_value == 1.0, "{t}");
    }
}
