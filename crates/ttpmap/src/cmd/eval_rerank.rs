//! `ttpmap eval --method rerank --reranker DIR --dataset emulation`: the cross-encoder on the
//! emulation-plan queries of a split, next to BM25 and the untuned encoder on the same
//! candidates; P@1, Hit@3, Hit@5, MRR overall and per actor, exact id and parent-collapsed.
//!
//! - `--protocol published`: each query's 20 candidates are its gold plus negatives (BM25 hard
//!   negatives by default), so the gold is always rankable (the published work's setting).
//! - `--protocol catalog`: the candidates are BM25's top `--top-k` over every active technique;
//!   the candidate stage's recall@K is reported separately (a missed gold cannot be ranked).
//!
//! The untuned baseline is the cosine of all-MiniLM-L6-v2's mean-pooled embeddings (`--model`)
//! of query and candidate text: an encoder that was not trained for this task.

//!
//! The protocol (pair scoring, BM25 rescoring, RRF, metrics) is
//! `ttpmap_core::protocol::rerank_protocol`; this command builds the queries, candidates and
//! scorers, calls it and prints the tables.

use anyhow::Context;
use serde_json::json;
use ttpmap_core::attack::Catalog;
use ttpmap_core::eval::render_table;
use ttpmap_core::pipeline::PairScorer;
use ttpmap_core::protocol::{render_rank_table, rerank_protocol};
use ttpmap_core::rerank_data::{CandidateSetConfig, RerankQuery};
use ttpmap_core::TechniqueId;
use ttpmap_ml::embed::CosinePairs;
use ttpmap_ml::{Embedder, EmbedderConfig, ModelDir};

use crate::assets::Assets;
use crate::cmd::eval::EvalArgs;
use crate::cmd::pairs::NegativesArg;
use crate::methods::{bm25_index, compute_device, open_reranker, MethodArgs};
use crate::output::enum_name;
use crate::rerank::{self, QuerySplitName};

/// Candidate protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// 20 candidates per query, gold always included (the published work's protocol).
    Published,
    /// BM25 top-K over the whole catalog (the product's real job).
    Catalog,
}

/// Options of `eval --method rerank`.
#[derive(Debug, Clone, clap::Args)]
pub struct RerankEvalArgs {
    /// Rerank: candidate protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Published)]
    pub protocol: Protocol,
    /// Rerank: query split scored (80/10/10 by unique query text, stratified by actor).
    #[arg(long, value_enum, default_value_t = QuerySplitName::Test)]
    pub split: QuerySplitName,
    /// Rerank, published protocol: how the negatives are drawn.
    #[arg(long, value_enum, default_value_t = NegativesArg::Bm25)]
    pub negatives: NegativesArg,
    /// Rerank: seed of the query split.
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,
}

pub fn run(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<serde_json::Value> {
    let ra = &args.rerank;
    let ce = open_reranker(&args.method)?;
    // Scoring on queries the model trained on would look like a normal result: say so.
    let trained_seed = match ce.reranker_metadata() {
        Ok(m) => m.map(|m| m.split.seed),
        Err(e) => {
            tracing::warn!("{e}; the training split's seed is not checked");
            None
        }
    };
    if let Some(seed) = trained_seed.filter(|s| *s != ra.split_seed) {
        tracing::warn!(
            "the reranker was trained on the split with seed {seed}, evaluated with \
             --split-seed {}: test queries may be training queries",
            ra.split_seed
        );
    }
    let steps = rerank::emulation_steps(assets, catalog)?;
    let queries: Vec<RerankQuery> = rerank::split_queries(&steps, ra.split, ra.split_seed)?;
    let index = bm25_index(catalog, &MethodArgs::default())?;
    let k = args.top_k.max(1);
    let set_cfg = CandidateSetConfig {
        k,
        negatives: ra.negatives.into(),
        ..CandidateSetConfig::default()
    };
    let candidates: Vec<Vec<TechniqueId>> = match ra.protocol {
        Protocol::Published => {
            rerank::candidate_sets(&queries, &index, &rerank::active_pool(catalog), &set_cfg)
                .into_iter()
                .map(|s| s.candidates)
                .collect()
        }
        Protocol::Catalog => queries
            .iter()
            .map(|q| {
                index
                    .search(&q.query, k)
                    .into_iter()
                    .map(|h| h.technique)
                    .collect()
            })
            .collect(),
    };
    let texts = rerank::candidate_texts(catalog, &ce.candidate_text_config());
    // The untuned baseline: cosine of the base encoder's mean-pooled embeddings.
    let base = crate::methods::model_path(assets, &args.method)?;
    let md = ModelDir::open(&base)
        .with_context(|| format!("opening the model folder {}", base.display()))?;
    let embedder = Embedder::from_model_dir(&md, EmbedderConfig::default(), &compute_device())?;
    let cosine = CosinePairs {
        embedder: &embedder,
        model: base.clone(),
    };
    let reranker_label = if ce.head_trained() {
        format!("rerank ({})", ce.dir().display())
    } else {
        format!("rerank, UNTRAINED random head ({})", ce.dir().display())
    };
    let base_name = base
        .file_name()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let scorers: [(&str, String, &dyn PairScorer); 2] = [
        ("rerank", reranker_label, &ce),
        (
            "untuned_cosine",
            format!("untuned encoder: cosine of mean-pooled {base_name} embeddings"),
            &cosine,
        ),
    ];
    let rows = rerank_protocol(&queries, &candidates, &texts, &scorers, &index, k)?;

    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let (stage_exact, stage_parent) = (
        &rows.candidate_stage.exact.overall,
        &rows.candidate_stage.parent_collapsed.overall,
    );
    println!(
        "Emulation plans, {:?} split: {} queries (unique texts), protocol {:?}, {} candidates per query{}\n",
        ra.split,
        queries.len(),
        ra.protocol,
        k,
        match ra.protocol {
            Protocol::Published => format!(" (gold + {:?} negatives)", ra.negatives).to_lowercase(),
            Protocol::Catalog => String::new(),
        }
    );
    if ra.protocol == Protocol::Catalog {
        println!(
            "Candidate stage (BM25 top {k}): gold in candidates {} % exact, {} % parent-collapsed\n",
            stage_exact.hit_at.get(&k).map(|v| pct(*v)).unwrap_or_default(),
            stage_parent.hit_at.get(&k).map(|v| pct(*v)).unwrap_or_default()
        );
    }
    let headers = ["method", "queries", "P@1", "Hit@3", "Hit@5", "MRR"];
    for (title, parent) in [
        ("Exact technique id:", false),
        ("\nParent-collapsed:", true),
    ] {
        let table: Vec<Vec<String>> = ["rerank", "bm25", "untuned_cosine", "rerank_bm25_rrf"]
            .iter()
            .map(|name| {
                let row = &rows.rows[*name];
                let r = if parent {
                    &row.parent_collapsed
                } else {
                    &row.exact
                };
                vec![
                    row.label.clone(),
                    r.overall.n.to_string(),
                    pct(r.overall.p_at_1),
                    pct(r.overall.hit_at_3),
                    pct(r.overall.hit_at_5),
                    format!("{:.3}", r.overall.mrr),
                ]
            })
            .collect();
        println!("{title}");
        print!("{}", render_table(&headers, &table));
    }
    let main = &rows.rows["rerank"];
    println!("\nReranker per actor, exact id:");
    print!("{}", render_rank_table(&main.exact, k));
    println!("\nReranker per actor, parent-collapsed:");
    print!("{}", render_rank_table(&main.parent_collapsed, k));
    eprintln!(
        "{} pairs reranked in {:.1} s ({:.0} pairs/s)",
        rows.pairs,
        rows.rerank_seconds,
        rows.pairs as f64 / rows.rerank_seconds.max(1e-9)
    );
    Ok(json!({
        "dataset": "emulation",
        "method": "rerank",
        "reranker": ce.dir().display().to_string(),
        "reranker_head_trained": ce.head_trained(),
        "reranker_metadata": ce.metadata(),
        "untuned_baseline_model": base.display().to_string(),
        "protocol": enum_name(ra.protocol),
        "split": enum_name(ra.split),
        "split_seed": ra.split_seed,
        "queries": queries.len(),
        "candidates": match ra.protocol {
            Protocol::Published => serde_json::to_value(set_cfg)?,
            Protocol::Catalog => json!({"k": k, "source": "bm25 top-k over active techniques"}),
        },
        "candidate_stage": {
            "k": k,
            "exact": {"recall_at_k": stage_exact.recall_at.get(&k), "hit_at_k": stage_exact.hit_at.get(&k)},
            "parent_collapsed": {"recall_at_k": stage_parent.recall_at.get(&k), "hit_at_k": stage_parent.hit_at.get(&k)},
        },
        "attack_version": catalog.version(),
        "pairs": rows.pairs,
        "rerank_seconds": rows.rerank_seconds,
        "methods": rows.rows,
    }))
}
