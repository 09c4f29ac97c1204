//! The analyst service (`ttpmap serve`): an HTTP API on axum over the extraction pipeline,
//! the ATT&CK catalog and a report store, plus the embedded review UI.
//!
//! Owns the router ([`router`]), the shared state ([`AppState`]) and the cross-cutting request
//! handling; handlers live in [`routes`] (extraction, catalog, health) and the submodules.
//!
//! Invariants:
//! - handlers parse, call one library function (on the inference [`worker`] for model work,
//!   on a blocking thread for ingestion and storage) and render; the async runtime never runs
//!   model or database work itself;
//! - every error is JSON `{"error", "error_type"}` ([`error::ApiError`]), including unknown
//!   routes (404), wrong methods (405), time-outs (408) and oversized bodies (413);
//! - a request body is never buffered beyond `max_body` bytes: the `Content-Length` is checked
//!   first, then the stream is cut at the limit ([`body`]);
//! - every request runs under the `timeout` and is counted in [`metrics`] by route template.

pub mod auth;
pub mod body;
pub mod db;
pub mod error;
pub mod metrics;
pub mod reports;
pub mod rerank;
pub mod routes;
pub mod training;
pub mod ui;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use ttpmap_core::attack::Catalog;
use ttpmap_core::retrieve::Bm25Index;

use auth::Auth;
use db::Db;
use error::ApiError;
use metrics::Metrics;
use worker::{Engine, Worker};

/// Limits and switches of the service (the `ttpmap serve` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Largest request body in bytes (`--max-body`). Default 32 MiB.
    pub max_body: u64,
    /// Time limit of one request (`--timeout-s`). Default 60 s.
    pub timeout: Duration,
    /// Extraction jobs that may wait for the worker before requests get 429 (`--queue`).
    /// Default 16.
    pub queue: usize,
    /// `Access-Control-Allow-Origin` value; `None` (the default) sends no CORS headers.
    pub cors: Option<String>,
    /// At most this many techniques per sentence unless a request asks otherwise. Default 3.
    pub max_per_sentence: usize,
    /// Who may write. Default: nobody (read-only).
    pub auth: Auth,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body: 32 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            queue: 16,
            cors: None,
            max_per_sentence: 3,
            auth: Auth::default(),
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub config: ServeConfig,
    pub catalog: Arc<Catalog>,
    /// BM25 over the technique documents, for `GET /v1/techniques?q=`.
    pub search: Arc<Bm25Index>,
    pub engine: Arc<Engine>,
    pub worker: Worker,
    pub metrics: Arc<Metrics>,
    /// The report store.
    pub db: Arc<Db>,
}

impl AppState {
    /// Starts the inference worker for `engine` and assembles the state.
    pub fn new(
        config: ServeConfig,
        engine: Engine,
        search: Arc<Bm25Index>,
        db: Arc<Db>,
    ) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let engine = Arc::new(engine);
        let worker = Worker::spawn(engine.clone(), config.queue, metrics.clone());
        AppState {
            catalog: engine.catalog.clone(),
            config,
            search,
            engine,
            worker,
            metrics,
            db,
        }
    }
}

pub type SharedState = Arc<AppState>;

/// One route: path template, the methods it answers, and its handlers.
pub struct RouteSpec {
    pub path: &'static str,
    /// Lower-case HTTP methods, as OpenAPI names them (read by the OpenAPI test).
    #[cfg_attr(not(test), allow(dead_code))]
    pub methods: &'static [&'static str],
    pub handler: MethodRouter<SharedState>,
}

/// Every route of the service, in one table: the router is built from it, and the OpenAPI test
/// checks that `/openapi.json` describes each entry.
pub fn routes() -> Vec<RouteSpec> {
    let r = |path, methods, handler| RouteSpec {
        path,
        methods,
        handler,
    };
    vec![
        r("/", &["get"], get(ui::index)),
        r("/ui/app.js", &["get"], get(ui::app_js)),
        r("/ui/app.css", &["get"], get(ui::app_css)),
        r("/health", &["get"], get(routes::health)),
        r("/metrics", &["get"], get(routes::metrics)),
        r("/openapi.json", &["get"], get(routes::openapi)),
        r("/v1/techniques", &["get"], get(routes::search_techniques)),
        r("/v1/techniques/{id}", &["get"], get(routes::get_technique)),
        r("/v1/extract", &["post"], post(routes::extract)),
        r("/v1/rerank", &["post"], post(rerank::rerank)),
        r(
            "/v1/reports",
            &["get", "post"],
            get(reports::list_reports).post(reports::create_report),
        ),
        r("/v1/reports/{id}", &["get"], get(reports::get_report)),
        r(
            "/v1/reports/{id}/reviews",
            &["post"],
            post(reports::add_review),
        ),
        r(
            "/v1/reports/{id}/export",
            &["get"],
            get(reports::export_report),
        ),
    ]
}

/// The service's router over [`routes`], with the JSON fallbacks, limits, time-out, metrics
/// and (when configured) CORS.
pub fn router(state: SharedState) -> Router {
    let mut api = Router::new();
    for spec in routes() {
        api = api.route(spec.path, spec.handler);
    }
    let cors = state.config.cors.clone();
    let mut app = api
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(
            usize::try_from(state.config.max_body).unwrap_or(usize::MAX),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    if let Some(origin) = cors {
        app = app.layer(middleware::from_fn_with_state(Arc::new(origin), cors_layer));
    }
    app.with_state(state)
}

/// Per-request time limit (408) and request metrics by route template.
async fn guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    // Known methods only: arbitrary extension methods must not grow the metrics without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let resp = match tokio::time::timeout(state.config.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::timeout(state.config.timeout.as_secs_f64()).into_response(),
    };
    state
        .metrics
        .count_request(&method, &route, resp.status().as_u16());
    resp
}

/// CORS for one configured origin (`--cors`): answers preflights and tags responses.
async fn cors_layer(State(origin): State<Arc<String>>, req: Request, next: Next) -> Response {
    let value = HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("null"));
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    resp
}

/// Serves `router` on `listener` until Ctrl-C / SIGTERM.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests;
