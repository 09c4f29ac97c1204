//! Reranker data shared by `data pairs`, `train reranker`, `eval --method rerank`: the emulation
//! queries of a split (80/10/10 by unique query text, stratified by actor, seeded) and their
//! candidate sets (published protocol: gold + negatives; catalog protocol: BM25 top-K).

use std::collections::BTreeMap;

use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, EmulationStep};
use ttpmap_core::rerank_data::{
    candidate_set, candidate_text, queries_from_steps, CandidateSet, CandidateSetConfig,
    CandidateTextConfig, RerankQuery,
};
use ttpmap_core::retrieve::Bm25Index;
use ttpmap_core::TechniqueId;

use crate::assets::Assets;

/// Fractions of the emulation query split (train, validation, test).
pub const SPLIT_FRACTIONS: (f64, f64, f64) = (0.8, 0.1, 0.1);

/// A split of the emulation queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuerySplitName {
    Train,
    Validation,
    Test,
    /// Every query (no split).
    All,
}

/// Datasets the reranker commands know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PairDataset {
    /// MITRE CTID emulation plans (step description -> technique).
    Emulation,
}

/// Emulation steps remapped to the catalog's current ids (unknown ids dropped with a warning).
pub fn emulation_steps(assets: &Assets, catalog: &Catalog) -> anyhow::Result<Vec<EmulationStep>> {
    let mut steps = dataset::load_emulation(assets.data_dir().join("emulation"))?.steps;
    let report = dataset::remap_steps(&mut steps, |id| catalog.resolve(id).current().cloned());
    if !report.unknown.is_empty() {
        tracing::warn!(
            "emulation steps with ids not in ATT&CK {}: {:?}",
            catalog.version(),
            report.unknown
        );
    }
    Ok(steps)
}

/// The queries of `split` (grouped by text; see `queries_from_steps`).
pub fn split_queries(
    steps: &[EmulationStep],
    split: QuerySplitName,
    seed: u64,
) -> anyhow::Result<Vec<RerankQuery>> {
    let s = dataset::split_queries(steps, SPLIT_FRACTIONS, seed)?;
    let part = match split {
        QuerySplitName::Train => s.train,
        QuerySplitName::Validation => s.dev,
        QuerySplitName::Test => s.test,
        QuerySplitName::All => steps.to_vec(),
    };
    Ok(queries_from_steps(&part))
}

/// Active technique ids, sorted.
pub fn active_pool(catalog: &Catalog) -> Vec<TechniqueId> {
    let mut v: Vec<TechniqueId> = catalog.active_techniques().map(|t| t.id.clone()).collect();
    v.sort();
    v
}

/// The published protocol's candidate set of each query (BM25 over `index` ranks the
/// hard negatives).
pub fn candidate_sets(
    queries: &[RerankQuery],
    index: &Bm25Index,
    pool: &[TechniqueId],
    cfg: &CandidateSetConfig,
) -> Vec<CandidateSet> {
    queries
        .iter()
        .map(|q| {
            let ranked: Vec<TechniqueId> = index
                .search(&q.query, cfg.k + q.gold.len())
                .into_iter()
                .map(|h| h.technique)
                .collect();
            candidate_set(q, &ranked, pool, cfg)
        })
        .collect()
}

/// The candidate text of every active technique under `cfg`.
pub fn candidate_texts(
    catalog: &Catalog,
    cfg: &CandidateTextConfig,
) -> BTreeMap<TechniqueId, String> {
    catalog
        .active_techniques()
        .map(|t| (t.id.clone(), candidate_text(t, cfg)))
        .collect()
}
