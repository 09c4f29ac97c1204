//! Reranker data shared by `data pairs`, `train reranker`, `eval --method rerank`: the emulation
//! queries of a split (80/10/10 by unique query text, stratified by actor, seeded) and their
//! candidate sets (published protocol: gold + negatives; catalog protocol: BM25 top-K; the
//! library functions are re-exported from `ttpmap_core::rerank_data`).

use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, EmulationStep};
use ttpmap_core::rerank_data::{queries_from_steps, RerankQuery};

use crate::assets::Assets;

pub use ttpmap_core::rerank_data::{active_pool, candidate_sets, candidate_texts, SPLIT_FRACTIONS};

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
