//! `ttpmap serve`: the analyst service (HTTP API + review UI) on one address.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ttpmap_core::pipeline::{Bm25Scorer, SentenceScorer};
use ttpmap_core::Prediction;

use crate::assets::Assets;
use crate::methods::{bm25_index, Method, MethodArgs, Scorer};
use crate::serve::worker::Engine;
use crate::serve::{self, AppState, ServeConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; expose deliberately).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    #[command(flatten)]
    pub method: MethodArgs,
    /// Extraction jobs that may wait for the inference worker; more get 429.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue: usize,
    /// Largest request body (uploads included) in bytes; larger ones get 413.
    #[arg(long, default_value_t = 32 * 1024 * 1024, value_name = "BYTES")]
    pub max_body: u64,
    /// Time limit per request in seconds; slower requests get 408.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub timeout_s: u64,
    /// Allow cross-origin requests from this origin (e.g. https://analyst.example.org, or *).
    /// Off by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
}

/// The method's scorer as the worker's `SentenceScorer`.
struct MethodScorer(Scorer);

impl SentenceScorer for MethodScorer {
    fn name(&self) -> &str {
        self.0.as_scorer().name()
    }
    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        self.0.as_scorer().score(sentences)
    }
}

pub fn run(assets: &Assets, args: ServeArgs) -> anyhow::Result<()> {
    let catalog = Arc::new(assets.catalog()?);
    let search = Arc::new(bm25_index(&catalog, &args.method)?);
    let scorer = if args.method.method == Method::Bm25 && args.method.model.is_none() {
        Scorer::Bm25(Bm25Scorer::new(search.as_ref().clone()))
    } else {
        Scorer::build(assets, &catalog, &args.method)?
    };
    let engine = Engine {
        default_threshold: scorer.default_threshold(),
        scorer: Box::new(MethodScorer(scorer)),
        catalog: catalog.clone(),
        reranker: None,
    };
    let config = ServeConfig {
        max_body: args.max_body,
        timeout: Duration::from_secs(args.timeout_s.max(1)),
        queue: args.queue.max(1),
        cors: args.cors.clone(),
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("listening on {}", args.addr))?;
        let local = listener.local_addr()?;
        let state = Arc::new(AppState::new(config, engine, search));
        let app = serve::router(state);
        // The one line tools wait for: the bound address (port 0 picks a free one).
        eprintln!("ttpmap serve: listening on http://{local}");
        serve::serve(listener, app).await.context("serving HTTP")
    })
}
