//! `ttpmap serve`: the analyst service (HTTP API + review UI) on one address.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ttpmap_core::pipeline::{Bm25Scorer, SentenceScorer};

use crate::assets::Assets;
use crate::methods::{bm25_index, MethodArgs};
use crate::serve::auth::{Auth, Token};
use crate::serve::db::Db;
use crate::serve::worker::Engine;
use crate::serve::{self, AppState, ServeConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; expose deliberately).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub addr: String,
    /// Listen on 127.0.0.1:PORT (short for --addr 127.0.0.1:PORT).
    #[arg(long, value_name = "PORT", conflicts_with = "addr")]
    pub port: Option<u16>,
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
    /// The report database (SQLite; created and migrated on first start). Default:
    /// ttpmap.db in the cache folder (--cache-dir / $TTPMAP_CACHE, else
    /// $XDG_CACHE_HOME/ttpmap, else ~/.cache/ttpmap); the path is printed at start.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// API token(s) for writes, `NAME:SECRET` (the name is recorded with each review) or
    /// `SECRET`; comma-separated in TTPMAP_TOKEN. Without one the server is read-only.
    /// A secret on the command line is visible to every local user in `ps`: prefer
    /// --token-file or the environment variable.
    #[arg(
        long,
        env = "TTPMAP_TOKEN",
        value_delimiter = ',',
        value_name = "NAME:SECRET",
        hide_env_values = true
    )]
    pub token: Vec<String>,
    /// File with API tokens, one `NAME:SECRET` per line (`#` comments); adds to --token.
    #[arg(long, env = "TTPMAP_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow anonymous writes when no token is configured (for a single analyst on loopback).
    #[arg(long)]
    pub open_writes: bool,
    /// Allow cross-origin requests from this origin (e.g. https://analyst.example.org, or *).
    /// Off by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// Also accept requests whose Host header is this name (the server's public name behind a
    /// reverse proxy; `*` for any). IP addresses and localhost are always accepted; other
    /// names get 421, which blocks DNS rebinding. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Also accept writes from pages of this origin (`https://ui.example.org`). Browsers'
    /// writes from other origins get 403 whatever their token; the server's own origin and the
    /// --cors origin are allowed. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Seconds a connection has to send a request's headers before it is closed.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub header_timeout_s: u64,
    /// Connections served at once; more wait until one closes. Keep it below the open-file
    /// limit (`ulimit -n`).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_connections: usize,
    /// Most sentences listed by `POST /v1/extract?sentences=all` (the answer says when the
    /// document has more).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_sentences: usize,
}

/// `POST /v1/rerank` over a loaded cross-encoder (`--reranker DIR`): sigmoid scores.
struct CrossEncoderService {
    name: String,
    model: ttpmap_ml::CrossEncoder,
}

impl crate::serve::rerank::RerankService for CrossEncoderService {
    fn name(&self) -> &str {
        &self.name
    }
    fn rerank(
        &self,
        query: &str,
        texts: &[&str],
    ) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>> {
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
        Ok(self.model.score_pairs(&pairs)?)
    }
}

pub fn run(assets: &Assets, args: ServeArgs) -> anyhow::Result<()> {
    let mut tokens = args
        .token
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Token::parse(t).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &args.token_file {
        tokens.extend(Token::parse_file(path).map_err(anyhow::Error::msg)?);
    }
    if std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--token" || a.starts_with("--token=")
    }) {
        tracing::warn!(
            "--token on the command line is visible to every local user (ps); use --token-file \
             or TTPMAP_TOKEN"
        );
    }
    let auth = Auth {
        open_writes: args.open_writes && tokens.is_empty(),
        tokens,
    };
    if args.open_writes && !auth.tokens.is_empty() {
        tracing::warn!("--open-writes ignored: API tokens are configured, writes need one");
    }
    let db_path = match &args.db {
        Some(p) => p.clone(),
        None => {
            let dir = assets.cache_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the cache folder {}", dir.display()))?;
            assets.review_db()
        }
    };
    let db = Arc::new(Db::open(&db_path).context("opening the report database")?);
    let check = db
        .integrity_check(false)
        .context("checking the report database")?;
    if check != "ok" {
        anyhow::bail!(
            "{}: the database is damaged (quick_check: {check}); restore a backup",
            db_path.display()
        );
    }
    let catalog = Arc::new(assets.catalog()?);
    let search = Arc::new(bm25_index(&catalog, &args.method)?);
    // `--reranker` serves POST /v1/rerank; extraction reranks only with `--method rerank`
    // (it costs a cross-encoder pass per flagged sentence on every request).
    let extract_args = crate::methods::MethodArgs {
        reranker: if args.method.is(crate::methods::rerank::SPEC.name) {
            args.method.reranker.clone()
        } else {
            None
        },
        ..args.method.clone()
    };
    let scorer: Box<dyn SentenceScorer> =
        if extract_args.is(crate::methods::bm25::SPEC.name) && extract_args.model.is_none() {
            Box::new(Bm25Scorer::new(search.as_ref().clone()))
        } else {
            crate::methods::build(assets, &catalog, &extract_args)?
        };
    let engine = Engine {
        default_threshold: scorer.default_threshold(),
        scorer,
        catalog: catalog.clone(),
        reranker: match &args.method.reranker {
            Some(_) => Some(Arc::new(CrossEncoderService {
                name: args
                    .method
                    .reranker
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                model: crate::methods::open_reranker(&args.method)?,
            })
                as Arc<dyn crate::serve::rerank::RerankService>),
            None => None,
        },
    };
    let config = ServeConfig {
        max_body: args.max_body,
        timeout: Duration::from_secs(args.timeout_s.max(1)),
        queue: args.queue.max(1),
        cors: args.cors.clone(),
        auth,
        max_sentences: args.max_sentences.max(1),
        allow_hosts: args
            .allow_host
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
        allow_origins: args
            .allow_origin
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        header_timeout: Duration::from_secs(args.header_timeout_s.max(1)),
        max_connections: args.max_connections.max(1),
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let addr = match args.port {
        Some(port) => format!("127.0.0.1:{port}"),
        None => args.addr.clone(),
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        if config.auth.open_writes {
            tracing::warn!(
                "--open-writes: ANYONE who can reach http://{local} can store reports and \
                 review decisions (recorded as \"anonymous\"); use --token for shared servers"
            );
            eprintln!("WARNING: open writes: anyone reaching http://{local} can write");
        } else if config.auth.tokens.is_empty() {
            eprintln!(
                "ttpmap serve: read-only (no --token / TTPMAP_TOKEN): reports cannot be stored or reviewed"
            );
        }
        eprintln!("ttpmap serve: reports in {}", db.path().display());
        let state = Arc::new(AppState::new(config.clone(), engine, search, db));
        let app = serve::router(state);
        // The one line tools wait for: the bound address (port 0 picks a free one).
        eprintln!("ttpmap serve: listening on http://{local}");
        serve::serve(listener, app, &config)
            .await
            .context("serving HTTP")
    })
}
