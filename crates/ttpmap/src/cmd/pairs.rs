//! `ttpmap data pairs`: the reranker's pair set as JSONL, one line per (query, candidate), with
//! the configuration written beside it (`<output stem>.config.json`).

use std::fmt::Write as _;
use std::path::PathBuf;

use ttpmap_core::rerank_data::{CandidateSetConfig, CandidateTextConfig, NegativeSampling};

use crate::assets::Assets;
use crate::methods::{bm25_index, MethodArgs};
use crate::rerank::{self, PairDataset, QuerySplitName};

/// `--negatives` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NegativesArg {
    /// BM25's top non-gold techniques (hard negatives).
    Bm25,
    /// Random active techniques.
    Random,
}

impl From<NegativesArg> for NegativeSampling {
    fn from(n: NegativesArg) -> Self {
        match n {
            NegativesArg::Bm25 => NegativeSampling::Bm25,
            NegativesArg::Random => NegativeSampling::Random,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PairsArgs {
    /// Dataset of queries.
    #[arg(long, value_enum, default_value_t = PairDataset::Emulation)]
    pub dataset: PairDataset,
    /// Query split (80/10/10 by unique query text, stratified by actor).
    #[arg(long, value_enum, default_value_t = QuerySplitName::Train)]
    pub split: QuerySplitName,
    /// Candidates per query, gold included.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// How negatives are drawn.
    #[arg(long, value_enum, default_value_t = NegativesArg::Bm25)]
    pub negatives: NegativesArg,
    /// Seed of the negatives and of the candidate order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Seed of the query split.
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,
    /// Output JSONL file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(assets: &Assets, args: PairsArgs) -> anyhow::Result<()> {
    if args.k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let catalog = assets.catalog()?;
    let steps = rerank::emulation_steps(assets, &catalog)?;
    let queries = rerank::split_queries(&steps, args.split, args.split_seed)?;
    let index = bm25_index(&catalog, &MethodArgs::default())?;
    let cfg = CandidateSetConfig {
        k: args.k,
        negatives: args.negatives.into(),
        seed: args.seed,
    };
    let text_cfg = CandidateTextConfig::default();
    let texts = rerank::candidate_texts(&catalog, &text_cfg);
    let sets = rerank::candidate_sets(&queries, &index, &rerank::active_pool(&catalog), &cfg);
    let mut out = String::new();
    let mut n = 0usize;
    for set in &sets {
        for t in &set.candidates {
            let line = serde_json::json!({
                "query_id": set.query.id,
                "actor": set.query.actor,
                "query": set.query.query,
                "technique": t,
                "text": texts.get(t).cloned().unwrap_or_else(|| t.to_string()),
                "label": if set.query.gold.contains(t) { 1.0 } else { 0.0 },
            });
            writeln!(out, "{line}")?;
            n += 1;
        }
    }
    crate::output::write_atomic(&args.output, out.as_bytes())?;
    let config_path = args.output.with_extension("config.json");
    let config = serde_json::json!({
        "dataset": args.dataset,
        "split": args.split,
        "split_fractions": rerank::SPLIT_FRACTIONS,
        "split_seed": args.split_seed,
        "split_unit": "unique query text, stratified by actor",
        "candidates": cfg,
        "candidate_text": text_cfg,
        "attack_version": catalog.version(),
        "queries": sets.len(),
        "pairs": n,
    });
    crate::output::write_atomic(
        &config_path,
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    eprintln!(
        "{} queries, {n} pairs written to {} (config: {})",
        sets.len(),
        args.output.display(),
        config_path.display()
    );
    Ok(())
}
