//! ttpmap-core: everything in ttpmap that is plain Rust.
//!
//! No ML runtime, no async runtime, no HTTP. Models plug in through the traits in
//! [`pipeline`]; everything that works on probabilities (thresholds, aggregation, metrics)
//! lives here and knows nothing about tensors.

pub mod attack;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod export;
pub mod ingest;
pub mod pipeline;
pub mod protocol;
pub mod rerank_data;
pub mod retrieve;
pub mod review;
pub mod software;
pub mod types;

pub use error::{Error, Result};
pub use types::*;
