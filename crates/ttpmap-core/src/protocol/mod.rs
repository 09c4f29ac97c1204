//! Evaluation protocols: how a scoring method is run over a benchmark and what is reported,
//! as functions that return typed, `Serialize` reports (the `results/*.json` files) with their
//! text rendering. Commands only choose the data and the scorer, call one of these and print
//! the report.
//!
//! - [`sentences`]: TRAM2 / AnnoCTR sentence datasets: scoring, the threshold policy, metrics
//!   at a threshold (per-document F1 in-vocabulary and all-gold with bootstrap CIs, sentence
//!   micro/macro P/R/F1; the one implementation, also used by training validation), per-seed
//!   scores of an ensemble.
//! - [`ranking`]: emulation-plan ranking (P@1, Hit@k, MRR per actor) and the reranker
//!   protocols (published: gold + negatives; catalog: BM25 top-k), with reciprocal rank fusion.
//!
//! Invariant: nothing here reads a test split to choose anything; the threshold policy takes
//! the tuning scores from the caller, who decides which split they come from.

pub mod ranking;
pub mod sentences;

pub use ranking::{
    rank_queries, rank_reports, render_rank_table, rerank_protocol, EmulationReport, RerankRow,
    RerankRows,
};
pub use sentences::{
    candidate_recall, choose_threshold, metrics_at, per_seed_results, score_dataset, AtThreshold,
    Bootstrap, CandidateRecall, OperatingPoints, SeedInfo, SeedScores, SeedTest,
    SentenceEvalReport, SentenceEvalSetup, ThresholdSource,
};
