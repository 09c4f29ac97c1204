//! [`RerankScorer`]: the pipeline's [`SentenceScorer`] that reranks a first stage's candidates
//! (BM25 or hybrid) with a [`CrossEncoder`].
//!
//! Per sentence: the first stage's predictions, best first; a sentence is *flagged* when its
//! best first-stage confidence reaches `flag_threshold`; the top `candidates` techniques of a
//! flagged sentence are scored as (sentence, candidate text) pairs, all pairs of one call in
//! length-sorted batches; the predictions are the reranker's probabilities (raw score: the
//! first stage's confidence). Unflagged sentences get no predictions. The pair counters say
//! what a report cost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use ttpmap_core::pipeline::{sort_predictions, ScoreOptions, SentenceScorer};
use ttpmap_core::{Evidence, Prediction, TechniqueId};

use crate::crossencoder::CrossEncoder;

/// First stage + cross-encoder.
pub struct RerankScorer {
    first: Box<dyn SentenceScorer>,
    reranker: CrossEncoder,
    texts: BTreeMap<TechniqueId, String>,
    /// First-stage candidates reranked per flagged sentence. Default 20.
    pub candidates: usize,
    /// Best first-stage confidence a sentence needs to be reranked. Default 0 (every sentence).
    pub flag_threshold: f32,
    pairs: AtomicUsize,
    flagged: AtomicUsize,
    sentences: AtomicUsize,
}

/// Work done by a [`RerankScorer`] so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RerankCost {
    /// Sentences scored by the first stage.
    pub sentences: usize,
    /// Sentences reranked (flagged by the first stage).
    pub reranked_sentences: usize,
    /// (sentence, candidate) pairs run through the cross-encoder.
    pub pairs: usize,
}

impl RerankScorer {
    /// Default threshold on the reranker's probability.
    pub const DEFAULT_THRESHOLD: f32 = 0.5;

    /// `texts`: the candidate text of each technique (in the format the reranker was trained
    /// with); a technique without one is scored on its id.
    pub fn new(
        first: Box<dyn SentenceScorer>,
        reranker: CrossEncoder,
        texts: BTreeMap<TechniqueId, String>,
    ) -> Self {
        Self {
            first,
            reranker,
            texts,
            candidates: 20,
            flag_threshold: 0.0,
            pairs: AtomicUsize::new(0),
            flagged: AtomicUsize::new(0),
            sentences: AtomicUsize::new(0),
        }
    }

    /// The cross-encoder.
    pub fn reranker(&self) -> &CrossEncoder {
        &self.reranker
    }

    /// Sentences and pairs scored so far.
    pub fn cost(&self) -> RerankCost {
        RerankCost {
            sentences: self.sentences.load(Ordering::Relaxed),
            reranked_sentences: self.flagged.load(Ordering::Relaxed),
            pairs: self.pairs.load(Ordering::Relaxed),
        }
    }
}

impl SentenceScorer for RerankScorer {
    fn name(&self) -> &str {
        "rerank"
    }

    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        let first = {
            let _candidates =
                tracing::info_span!("candidates", first = self.first.name()).entered();
            self.first.score(sentences)?
        };
        let mut jobs: Vec<(usize, Vec<Prediction>)> = Vec::new();
        for (i, mut preds) in first.into_iter().enumerate() {
            sort_predictions(&mut preds);
            let flagged = preds
                .first()
                .is_some_and(|p| p.score >= self.flag_threshold);
            if flagged {
                preds.truncate(self.candidates);
                jobs.push((i, preds));
            }
        }
        let pair_texts: Vec<(&str, String)> = jobs
            .iter()
            .flat_map(|(i, preds)| {
                preds.iter().map(move |p| {
                    let text = self
                        .texts
                        .get(&p.technique)
                        .cloned()
                        .unwrap_or_else(|| p.technique.to_string());
                    (sentences[*i], text)
                })
            })
            .collect();
        let pairs: Vec<(&str, &str)> = pair_texts.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let probs = if pairs.is_empty() {
            Vec::new()
        } else {
            self.reranker
                .score_pairs(&pairs)
                .map_err(|e| ttpmap_core::Error::model(self.reranker.dir(), "reranking", e))?
        };
        self.sentences.fetch_add(sentences.len(), Ordering::Relaxed);
        self.flagged.fetch_add(jobs.len(), Ordering::Relaxed);
        self.pairs.fetch_add(pairs.len(), Ordering::Relaxed);
        let mut out: Vec<Vec<Prediction>> = vec![Vec::new(); sentences.len()];
        let mut k = 0;
        for (i, preds) in jobs {
            let mut reranked: Vec<Prediction> = preds
                .into_iter()
                .map(|p| {
                    let score = probs[k];
                    k += 1;
                    Prediction {
                        technique: p.technique,
                        score,
                        raw_score: p.score,
                        evidence: Evidence {
                            method: "rerank".into(),
                            reasons: vec![format!(
                                "{} candidate, confidence {:.2}",
                                p.evidence.method, p.score
                            )],
                        },
                    }
                })
                .collect();
            sort_predictions(&mut reranked);
            out[i] = reranked;
        }
        Ok(out)
    }

    /// On the reranker's probability.
    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    /// The first stage keeps its own candidate settings (set when the scorer is built); more
    /// candidates per sentence are reranked when the caller asks for more.
    fn configure(&mut self, options: &ScoreOptions) {
        self.candidates = self.candidates.max(options.top_k);
    }

    ttpmap_core::impl_scorer_any!();

    /// Its scores are the cross-encoder's, whatever the first stage read: citations are applied
    /// after it (`CitingScorer`).
    fn reads_citations(&self) -> bool {
        false
    }

    fn parts(&self) -> Vec<&dyn SentenceScorer> {
        vec![self.first.as_ref()]
    }

    fn parts_mut(&mut self) -> Vec<&mut dyn SentenceScorer> {
        vec![self.first.as_mut()]
    }
}
