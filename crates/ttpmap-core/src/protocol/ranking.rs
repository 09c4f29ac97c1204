//! Ranking protocols on the emulation plans: a step's (or a unique query text's) techniques
//! are ranked; P@1, Hit@3, Hit@5, MRR and recall@k overall and per actor, exact id and
//! parent-collapsed.
//!
//! - [`rank_queries`]: a [`SentenceScorer`] ranks every step over its own candidates.
//! - [`rerank_protocol`]: fixed candidates per query (the published protocol: gold plus
//!   negatives; the catalog protocol: BM25 top-k) reordered by pair scorers (the
//!   cross-encoder, an untuned baseline), next to BM25's order of the same candidates and the
//!   reciprocal rank fusion of the first scorer with BM25.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::dataset::EmulationStep;
use crate::error::{Error, Result};
use crate::eval::{rank_metrics, render_table, RankOptions, RankReport, RankSummary, RankedQuery};
use crate::pipeline::{
    reciprocal_rank_fusion, score_passages, sort_predictions, PairScorer, SentenceScorer,
};
use crate::rerank_data::RerankQuery;
use crate::retrieve::Bm25Index;
use crate::TechniqueId;

/// Exact and parent-collapsed reports at k = 1, 3, 5, 10 and `k`.
pub fn rank_reports(queries: &[RankedQuery], k: usize) -> (RankReport, RankReport) {
    let ks = vec![1, 3, 5, 10, k];
    let report = |collapse_to_parent| {
        rank_metrics(
            queries,
            &RankOptions {
                ks: ks.clone(),
                collapse_to_parent,
            },
        )
    };
    (report(false), report(true))
}

/// The per-actor table of a report (`recall@k` as the last column).
pub fn render_rank_table(r: &RankReport, k: usize) -> String {
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let row = |name: &str, s: &RankSummary| {
        vec![
            name.to_string(),
            s.n.to_string(),
            pct(s.p_at_1),
            pct(s.hit_at_3),
            pct(s.hit_at_5),
            format!("{:.3}", s.mrr),
            s.recall_at.get(&k).map(|v| pct(*v)).unwrap_or_default(),
        ]
    };
    let mut rows: Vec<Vec<String>> = r.by_group.iter().map(|(g, s)| row(g, s)).collect();
    rows.push(row("all", &r.overall));
    let recall = format!("recall@{k}");
    render_table(
        &["actor", "queries", "P@1", "Hit@3", "Hit@5", "MRR", &recall],
        &rows,
    )
}

/// The emulation ranking report (`results/<method>-emulation.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmulationReport {
    pub dataset: String,
    pub method: String,
    pub top_k: usize,
    pub attack_version: String,
    pub exact: RankReport,
    pub parent_collapsed: RankReport,
}

impl EmulationReport {
    /// The report as text tables.
    pub fn render(&self) -> String {
        format!(
            "Emulation plans: {} steps, method {}, top {} candidates\n\nExact technique id:\n{}\nParent-collapsed (sub-techniques count as their parent):\n{}",
            self.exact.overall.n,
            self.method,
            self.top_k,
            render_rank_table(&self.exact, self.top_k),
            render_rank_table(&self.parent_collapsed, self.top_k)
        )
    }
}

/// Ranks every step's query (name and description) with `scorer` (configured by the caller
/// for `top_k` candidates), read as the scorer reads a passage
/// ([`crate::pipeline::score_passages`]); `progress` gets the steps done after each chunk.
pub fn rank_queries(
    steps: &[EmulationStep],
    scorer: &dyn SentenceScorer,
    top_k: usize,
    attack_version: &str,
    progress: &mut dyn FnMut(usize),
) -> Result<EmulationReport> {
    let texts: Vec<String> = steps.iter().map(|s| s.query()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut queries = Vec::with_capacity(steps.len());
    for (chunk_steps, chunk) in steps.chunks(64).zip(texts.chunks(64)) {
        for (step, mut preds) in chunk_steps.iter().zip(score_passages(scorer, chunk)?) {
            sort_predictions(&mut preds);
            queries.push(RankedQuery {
                gold: BTreeSet::from([step.technique.clone()]),
                ranked: preds.into_iter().map(|p| p.technique).collect(),
                group: step.actor.clone(),
            });
        }
        progress(queries.len());
    }
    let (exact, parent_collapsed) = rank_reports(&queries, top_k);
    Ok(EmulationReport {
        dataset: "emulation".into(),
        method: scorer.name().to_string(),
        top_k,
        attack_version: attack_version.to_string(),
        exact,
        parent_collapsed,
    })
}

/// Candidate indices best first: score descending, ties by technique id.
fn order(cands: &[TechniqueId], scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..cands.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then_with(|| cands[a].cmp(&cands[b]))
    });
    idx
}

fn ranked_by(cands: &[TechniqueId], scores: &[f32]) -> Vec<TechniqueId> {
    order(cands, scores)
        .into_iter()
        .map(|i| cands[i].clone())
        .collect()
}

/// One scoring of the candidates in [`rerank_protocol`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RerankRow {
    /// Human-readable name of the row.
    pub label: String,
    pub exact: RankReport,
    pub parent_collapsed: RankReport,
}

/// What [`rerank_protocol`] measured: one row per scoring (keyed by the scorer's name, plus
/// `bm25` and `<first>_bm25_rrf`), the candidate stage (does the gold reach the candidates at
/// all?) and the pairs scored by the first pair scorer with their time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RerankRows {
    pub rows: BTreeMap<String, RerankRow>,
    pub candidate_stage: RerankRow,
    pub pairs: usize,
    pub rerank_seconds: f64,
}

/// Scores every (query, candidate text) pair with each of `scorers` (name, label, scorer; the
/// first is the model under test, timed), rescores the same candidates with `bm25` (0 for a
/// candidate sharing no term with the query) and fuses the first scorer with BM25 by
/// reciprocal rank fusion (k 60). `texts` gives each technique's candidate text (a missing one
/// is scored on its id).
pub fn rerank_protocol(
    queries: &[RerankQuery],
    candidates: &[Vec<TechniqueId>],
    texts: &BTreeMap<TechniqueId, String>,
    scorers: &[(&str, String, &dyn PairScorer)],
    bm25: &Bm25Index,
    k: usize,
) -> Result<RerankRows> {
    if queries.len() != candidates.len() || scorers.is_empty() {
        return Err(Error::InvalidArgument(
            "rerank protocol: one candidate list per query and at least one scorer".into(),
        ));
    }
    let text = |t: &TechniqueId| texts.get(t).cloned().unwrap_or_else(|| t.to_string());
    let cand_texts: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| c.iter().map(text).collect())
        .collect();
    let pairs: Vec<(&str, &str)> = queries
        .iter()
        .zip(&cand_texts)
        .flat_map(|(q, cs)| cs.iter().map(move |c| (q.query.as_str(), c.as_str())))
        .collect();
    // Scores per scorer, split back per query.
    let mut scorings: Vec<(String, String, Vec<Vec<f32>>)> = Vec::new();
    let mut rerank_seconds = 0.0;
    for (i, (name, label, scorer)) in scorers.iter().enumerate() {
        let started = std::time::Instant::now();
        let flat = scorer.score_pairs(&pairs)?;
        if i == 0 {
            rerank_seconds = started.elapsed().as_secs_f64();
        }
        let mut it = flat.into_iter();
        let per_query = candidates
            .iter()
            .map(|c| it.by_ref().take(c.len()).collect())
            .collect();
        scorings.push((name.to_string(), label.clone(), per_query));
    }
    let bm25_scores: Vec<Vec<f32>> = queries
        .iter()
        .zip(candidates)
        .map(|(q, cs)| {
            let all: BTreeMap<TechniqueId, f32> = bm25
                .search(&q.query, bm25.num_docs())
                .into_iter()
                .map(|h| (h.technique, h.score))
                .collect();
            cs.iter()
                .map(|t| all.get(t).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    let first = scorings[0].0.clone();
    let fused: Vec<Vec<f32>> = candidates
        .iter()
        .enumerate()
        .map(|(i, cs)| {
            let rankings = [
                ranked_by(cs, &scorings[0].2[i]),
                ranked_by(cs, &bm25_scores[i]),
            ];
            let f = reciprocal_rank_fusion(&rankings, 60.0);
            cs.iter()
                .map(|t| f.get(t).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    scorings.push(("bm25".into(), "bm25 (same candidates)".into(), bm25_scores));
    scorings.push((
        format!("{first}_bm25_rrf"),
        format!("{first} + bm25, reciprocal rank fusion (k 60)"),
        fused,
    ));
    let rows = scorings
        .into_iter()
        .map(|(name, label, scores)| {
            let ranked: Vec<RankedQuery> = queries
                .iter()
                .zip(candidates)
                .zip(&scores)
                .map(|((q, cs), s)| RankedQuery {
                    gold: q.gold.clone(),
                    ranked: ranked_by(cs, s),
                    group: q.actor.clone(),
                })
                .collect();
            let (exact, parent_collapsed) = rank_reports(&ranked, k);
            let row = RerankRow {
                label,
                exact,
                parent_collapsed,
            };
            (name, row)
        })
        .collect();
    let stage: Vec<RankedQuery> = queries
        .iter()
        .zip(candidates)
        .map(|(q, cs)| RankedQuery {
            gold: q.gold.clone(),
            ranked: cs.clone(),
            group: q.actor.clone(),
        })
        .collect();
    let (exact, parent_collapsed) = rank_reports(&stage, k);
    Ok(RerankRows {
        rows,
        candidate_stage: RerankRow {
            label: format!("candidate stage (top {k})"),
            exact,
            parent_collapsed,
        },
        pairs: pairs.len(),
        rerank_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TechniqueId {
        TechniqueId::parse(s).unwrap()
    }

    /// Prefers the candidate whose text shares the query's first word.
    struct FirstWord;

    impl PairScorer for FirstWord {
        fn name(&self) -> &str {
            "first_word"
        }
        fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
            Ok(pairs
                .iter()
                .map(|(q, c)| {
                    let w = q.split_whitespace().next().unwrap_or("");
                    if c.contains(w) {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect())
        }
    }

    #[test]
    fn pair_scorers_reorder_fixed_candidates() {
        let queries = vec![RerankQuery {
            id: "a/1".into(),
            actor: "A".into(),
            query: "powershell download".into(),
            gold: [id("T1059.001")].into(),
        }];
        let candidates = vec![vec![id("T1105"), id("T1059.001")]];
        let texts: BTreeMap<_, _> = [
            (id("T1105"), "Ingress Tool Transfer".to_string()),
            (id("T1059.001"), "powershell scripts".to_string()),
        ]
        .into();
        // BM25 knows only T1105's text: it ranks T1105 first, the pair scorer T1059.001.
        let docs = [crate::retrieve::IndexDoc {
            key: id("T1105"),
            fields: vec![crate::retrieve::DocField {
                text: "download tools".into(),
                weight: 1,
            }],
        }];
        let bm25 = Bm25Index::build(
            &docs,
            crate::retrieve::Bm25Params::default(),
            crate::retrieve::Analyzer::new(),
        )
        .unwrap();
        let scorer = FirstWord;
        let rows = rerank_protocol(
            &queries,
            &candidates,
            &texts,
            &[("rerank", "test".into(), &scorer)],
            &bm25,
            2,
        )
        .unwrap();
        assert_eq!(rows.pairs, 2);
        assert_eq!(rows.rows["rerank"].exact.overall.p_at_1, 1.0);
        assert_eq!(rows.rows["bm25"].exact.overall.p_at_1, 0.0);
        assert!(rows.rows.contains_key("rerank_bm25_rrf"));
        assert_eq!(
            rows.candidate_stage.exact.overall.hit_at.get(&2),
            Some(&1.0)
        );
    }
}
