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

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::json;
use ttpmap_core::attack::Catalog;
use ttpmap_core::eval::{rank_metrics, render_table, RankOptions, RankReport, RankedQuery};
use ttpmap_core::rerank_data::{CandidateSetConfig, RerankQuery};
use ttpmap_core::TechniqueId;
use ttpmap_ml::{Embedder, EmbedderConfig, ModelDir};

use crate::assets::Assets;
use crate::cmd::eval::EvalArgs;
use crate::cmd::pairs::NegativesArg;
use crate::methods::{bm25_index, compute_device, open_reranker, MethodArgs};
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

/// Reciprocal rank fusion (Cormack et al. 2009, k = 60) of several scorings of the same
/// candidates: each candidate scores the sum of `1 / (60 + rank)` over the scorings (rank 1 =
/// best, as [`order`] ranks). Pure RRF: unlike `ttpmap_core::pipeline::rrf_fuse`, which
/// orders by a confidence that also weighs the scorers' own scores.
fn rrf(cands: &[TechniqueId], scorings: &[&[f32]]) -> Vec<f32> {
    let mut fused = vec![0f32; cands.len()];
    for scores in scorings {
        for (rank, i) in order(cands, scores).into_iter().enumerate() {
            fused[i] += 1.0 / (60.0 + rank as f32 + 1.0);
        }
    }
    fused
}

fn reports(queries: &[RankedQuery], k: usize) -> (RankReport, RankReport) {
    let ks = vec![1, 3, 5, 10, k];
    let exact = rank_metrics(
        queries,
        &RankOptions {
            ks: ks.clone(),
            collapse_to_parent: false,
        },
    );
    let parent = rank_metrics(
        queries,
        &RankOptions {
            ks,
            collapse_to_parent: true,
        },
    );
    (exact, parent)
}

pub fn run(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<serde_json::Value> {
    let ra = &args.rerank;
    let ce = open_reranker(&args.method)?;
    // Scoring on queries the model trained on would look like a normal result: say so.
    let trained_seed = ce
        .metadata()
        .and_then(|m| m.pointer("/split/seed"))
        .and_then(serde_json::Value::as_u64);
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
    let text = |t: &TechniqueId| texts.get(t).cloned().unwrap_or_else(|| t.to_string());

    // Cross-encoder: every (query, candidate) pair in one length-sorted run.
    let cand_texts: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| c.iter().map(text).collect())
        .collect();
    let pairs: Vec<(&str, &str)> = queries
        .iter()
        .zip(&cand_texts)
        .flat_map(|(q, cs)| cs.iter().map(move |c| (q.query.as_str(), c.as_str())))
        .collect();
    let started = std::time::Instant::now();
    let logits = ce.logits(&pairs)?;
    let rerank_seconds = started.elapsed().as_secs_f64();

    // BM25 scores of the same candidates (0 for a candidate sharing no term with the query).
    let bm25_scores: Vec<Vec<f32>> = queries
        .iter()
        .zip(&candidates)
        .map(|(q, cs)| {
            let all: BTreeMap<TechniqueId, f32> = index
                .search(&q.query, index.num_docs())
                .into_iter()
                .map(|h| (h.technique, h.score))
                .collect();
            cs.iter()
                .map(|t| all.get(t).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();

    // Untuned encoder: cosine of mean-pooled embeddings of query and candidate text.
    let base = crate::methods::model_path(assets, &args.method)?;
    let md = ModelDir::open(&base)
        .with_context(|| format!("opening the model folder {}", base.display()))?;
    let embedder = Embedder::from_model_dir(&md, EmbedderConfig::default(), &compute_device())?;
    let unique: BTreeSet<&String> = cand_texts.iter().flatten().collect();
    let unique: Vec<&String> = unique.into_iter().collect();
    let uvec = embedder.encode(&unique.iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
    let umap: BTreeMap<&String, &Vec<f32>> = unique.iter().copied().zip(uvec.iter()).collect();
    let qvec = embedder.encode(&queries.iter().map(|q| q.query.as_str()).collect::<Vec<_>>())?;

    let mut rows: BTreeMap<&str, Vec<RankedQuery>> = BTreeMap::new();
    let mut offset = 0;
    for (i, q) in queries.iter().enumerate() {
        let cs = &candidates[i];
        let n = cs.len();
        let push = |rows: &mut BTreeMap<&str, Vec<RankedQuery>>, name, ranked| {
            rows.entry(name).or_default().push(RankedQuery {
                gold: q.gold.clone(),
                ranked,
                group: q.actor.clone(),
            })
        };
        let ce_scores = &logits[offset..offset + n];
        push(&mut rows, "rerank", ranked_by(cs, ce_scores));
        push(&mut rows, "bm25", ranked_by(cs, &bm25_scores[i]));
        let cos: Vec<f32> = cand_texts[i]
            .iter()
            .map(|t| ttpmap_ml::embed::cosine(&qvec[i], umap[t]))
            .collect();
        push(&mut rows, "untuned_cosine", ranked_by(cs, &cos));
        push(
            &mut rows,
            "rerank_bm25_rrf",
            ranked_by(cs, &rrf(cs, &[ce_scores, &bm25_scores[i]])),
        );
        offset += n;
    }
    let reranker_label = if ce.head_trained() {
        format!("rerank ({})", ce.dir().display())
    } else {
        format!("rerank, UNTRAINED random head ({})", ce.dir().display())
    };
    let label = |name: &str| match name {
        "rerank" => reranker_label.clone(),
        "bm25" => "bm25 (same candidates)".to_string(),
        "rerank_bm25_rrf" => "rerank + bm25, reciprocal rank fusion (k 60)".to_string(),
        _ => format!(
            "untuned encoder: cosine of mean-pooled {} embeddings",
            base.file_name()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    let mut results = serde_json::Map::new();
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let mut table_exact = Vec::new();
    let mut table_parent = Vec::new();
    let mut per_actor = None;
    for name in ["rerank", "bm25", "untuned_cosine", "rerank_bm25_rrf"] {
        let (exact, parent) = reports(&rows[name], k);
        for (t, r) in [(&mut table_exact, &exact), (&mut table_parent, &parent)] {
            t.push(vec![
                label(name),
                r.overall.n.to_string(),
                pct(r.overall.p_at_1),
                pct(r.overall.hit_at_3),
                pct(r.overall.hit_at_5),
                format!("{:.3}", r.overall.mrr),
            ]);
        }
        if name == "rerank" {
            per_actor = Some((
                crate::cmd::eval::rank_table(&exact, k),
                crate::cmd::eval::rank_table(&parent, k),
            ));
        }
        results.insert(
            name.to_string(),
            json!({"label": label(name), "exact": exact, "parent_collapsed": parent}),
        );
    }
    // Candidate stage: does the gold reach the K candidates at all?
    let stage: Vec<RankedQuery> = queries
        .iter()
        .zip(&candidates)
        .map(|(q, cs)| RankedQuery {
            gold: q.gold.clone(),
            ranked: cs.clone(),
            group: q.actor.clone(),
        })
        .collect();
    let (se, sp) = reports(&stage, k);
    let stage_json = json!({
        "k": k,
        "exact": {"recall_at_k": se.overall.recall_at.get(&k), "hit_at_k": se.overall.hit_at.get(&k)},
        "parent_collapsed": {"recall_at_k": sp.overall.recall_at.get(&k), "hit_at_k": sp.overall.hit_at.get(&k)},
    });

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
            se.overall.hit_at.get(&k).map(|v| pct(*v)).unwrap_or_default(),
            sp.overall.hit_at.get(&k).map(|v| pct(*v)).unwrap_or_default()
        );
    }
    let headers = ["method", "queries", "P@1", "Hit@3", "Hit@5", "MRR"];
    println!("Exact technique id:");
    print!("{}", render_table(&headers, &table_exact));
    println!("\nParent-collapsed:");
    print!("{}", render_table(&headers, &table_parent));
    if let Some((e, p)) = per_actor {
        println!("\nReranker per actor, exact id:");
        print!("{e}");
        println!("\nReranker per actor, parent-collapsed:");
        print!("{p}");
    }
    eprintln!(
        "{} pairs reranked in {:.1} s ({:.0} pairs/s)",
        pairs.len(),
        rerank_seconds,
        pairs.len() as f64 / rerank_seconds.max(1e-9)
    );
    Ok(json!({
        "dataset": "emulation",
        "method": "rerank",
        "reranker": ce.dir().display().to_string(),
        "reranker_head_trained": ce.head_trained(),
        "reranker_metadata": ce.metadata(),
        "untuned_baseline_model": base.display().to_string(),
        "protocol": ra.protocol,
        "split": ra.split,
        "split_seed": ra.split_seed,
        "queries": queries.len(),
        "candidates": match ra.protocol {
            Protocol::Published => serde_json::to_value(set_cfg)?,
            Protocol::Catalog => json!({"k": k, "source": "bm25 top-k over active techniques"}),
        },
        "candidate_stage": stage_json,
        "attack_version": catalog.version(),
        "pairs": pairs.len(),
        "rerank_seconds": rerank_seconds,
        "methods": results,
    }))
}
