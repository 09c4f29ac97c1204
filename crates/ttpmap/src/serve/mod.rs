//! The analyst service (`ttpmap serve`): an HTTP API on axum over the extraction pipeline,
//! the ATT&CK catalog and a report store, plus the embedded review UI.
//!
//! Owns the router ([`router`]), the shared state ([`AppState`]) and the cross-cutting request
//! handling; handlers live in [`routes`] (extraction, catalog, health) and the submodules.
//!
//! Invariants:
//! - handlers parse, call one library function (on the inference [`worker`] for model work,
//!   on an ingestion thread ([`body::IngestSlots`]) for decoding uploads, on a blocking thread
//!   for storage) and render; the async runtime never runs model, parsing or database work
//!   itself;
//! - every error is JSON `{"error", "error_type"}` ([`error::ApiError`]), including unknown
//!   routes (404), wrong methods (405), time-outs (408), oversized bodies (413) and the HTTP
//!   layer's own answers to requests it cannot parse (400, 414, 431; see [`conn`]);
//! - a request body is never buffered beyond `max_body` bytes: the `Content-Length` is checked
//!   first, then the stream is cut at the limit ([`body`]);
//! - every request runs under the `timeout` and is counted in [`metrics`] by route template;
//! - a request whose `Host` is not loopback, an IP address or listed (`--allow-host`) is
//!   refused with 421 before any handler runs (DNS rebinding), and so is a state-changing
//!   request (POST, PUT, PATCH, DELETE) whose `Origin` / `Sec-Fetch-Site` names another origin
//!   than the one it was sent to or an `--allow-origin` / `--cors` one (403 `cross_origin`),
//!   whatever its token; requests without those headers (scripts, curl) are not browsers' and
//!   pass; only `--cors '*'` opens the stateless `POST /v1/extract` and `/v1/rerank` to every
//!   origin (as before), never a write;
//! - connections are served by [`conn`]: at most `max_connections` at once, headers read
//!   within `header_timeout`, and the HTTP layer's own errors answered in JSON too.

pub mod auth;
pub mod body;
pub mod conn;
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
    /// Most sentences a `?sentences=all` answer lists (`--max-sentences`); the answer says
    /// when it stopped early. Default 10,000.
    pub max_sentences: usize,
    /// Host names accepted in the `Host` header besides loopback names and IP addresses
    /// (`--allow-host`; lower-case, without port; `*` accepts any). Default: none.
    pub allow_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may write, besides the server's own
    /// (`--allow-origin`; the `--cors` origin is added). Default: none.
    pub allow_origins: Vec<String>,
    /// Time a connection has to send a request's headers (`--header-timeout-s`). Default 10 s.
    pub header_timeout: Duration,
    /// Connections served at once (`--max-connections`); more wait in the listen backlog.
    /// Default 128.
    pub max_connections: usize,
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
            max_sentences: 10_000,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            header_timeout: Duration::from_secs(10),
            max_connections: 128,
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
    /// The ingestion slots (uploads being decoded and segmented).
    pub ingest: body::IngestSlots,
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
            ingest: body::IngestSlots::default(),
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
        r("/v1/tactics", &["get"], get(routes::tactics)),
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

/// Host and origin checks, per-request time limit (408) and request metrics by route
/// template.
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
    // `--cors '*'` opened the stateless routes to every origin; it still opens no write.
    let any_origin = state.config.cors.as_deref() == Some("*")
        && matches!(route.as_str(), "/v1/extract" | "/v1/rerank");
    let checked = check_host(&state.config, req.headers()).and_then(|()| {
        if any_origin {
            Ok(())
        } else {
            check_origin(&state.config, req.method(), req.headers())
        }
    });
    let resp = match checked {
        Err(e) => e.into_response(),
        Ok(()) => match tokio::time::timeout(state.config.timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::timeout(state.config.timeout.as_secs_f64()).into_response(),
        },
    };
    state
        .metrics
        .count_request(&method, &route, resp.status().as_u16());
    resp
}

/// The host part of a `Host` header or an origin's authority, lower-case, without port or
/// IPv6 brackets.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

/// `Host` check against DNS rebinding: a page on `evil.example` whose name was re-pointed at
/// this server sends `Host: evil.example`. IP literals and loopback names cannot be re-pointed,
/// so they pass; other names only when listed. A request without `Host` (HTTP/1.0) passes.
pub fn check_host(config: &ServeConfig, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get(header::HOST) else {
        return Ok(());
    };
    let host = host_name(raw.to_str().unwrap_or(""));
    let ok = host.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || config
            .allow_hosts
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&host));
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "unknown_host",
        format!(
            "Host {host:?} is not served here: use an IP address or localhost, or start the \
             server with --allow-host {host}"
        ),
    ))
}

/// Cross-site check of state-changing requests: a browser names the page's origin in `Origin`
/// (and `Sec-Fetch-Site`); it must be the origin the request was sent to (same scheme-less
/// authority as `Host`) or an allowed one. Requests with neither header are not from a
/// browser page and pass (the token still decides who may write).
pub fn check_origin(
    config: &ServeConfig,
    method: &Method,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return Ok(());
    }
    let refuse = |what: String| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "{what}: writes are accepted from this server's own pages only (or origins \
                 listed with --allow-origin)"
            ),
        ))
    };
    let header_str = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(origin) = header_str(header::ORIGIN) {
        let origin = origin.trim();
        let allowed = config
            .allow_origins
            .iter()
            .chain(config.cors.iter())
            .any(|o| o != "*" && o.trim_end_matches('/').eq_ignore_ascii_case(origin));
        let same = origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .zip(header_str(header::HOST))
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host.trim()));
        if allowed || same {
            return Ok(());
        }
        return refuse(format!("request from origin {origin:?}"));
    }
    match header_str(axum::http::HeaderName::from_static("sec-fetch-site")) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(site) => refuse(format!("request from a {site} page (Sec-Fetch-Site)")),
    }
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

/// Serves `router` on `listener` until Ctrl-C / SIGTERM, with the connection limits of
/// `config` (see [`conn`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    config: &ServeConfig,
) -> std::io::Result<()> {
    conn::serve(
        listener,
        app,
        conn::ConnLimits {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
        },
        shutdown_signal(),
    )
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
