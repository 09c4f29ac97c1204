//! Handlers of the stateless routes: health, catalog lookup and search, extraction.
//!
//! Each handler parses the request, calls one library function and renders JSON (or the
//! export format asked for with `?format=`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use ttpmap_core::export::{self, ExportFormat, ExportOptions};
use ttpmap_core::pipeline::ExtractOptions;
use ttpmap_core::{Block, Extraction, Span, TechniqueId};

use super::body;
use super::error::{ApiError, ApiResult};
use super::SharedState;

/// Parses the query string into `T`; a bad one is a JSON 400, not axum's plain-text one.
pub fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> ApiResult<T> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// `GET /health`: liveness plus what is loaded.
pub async fn health(State(st): State<SharedState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "method": st.engine.scorer.name(),
        "attack_version": st.catalog.version(),
        "techniques": st.catalog.active_techniques().count(),
        "queue_depth": st.worker.depth(),
        "queue_capacity": st.config.queue,
        "ingest_active": st.ingest.active(),
        "ingest_capacity": st.ingest.capacity(),
        "writes": st.config.auth.writes_enabled(),
        "reranker": st.engine.reranker.as_ref().map(|r| r.name().to_string()),
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(st.worker.depth(), st.config.queue),
    )
        .into_response()
}

/// The hand-written OpenAPI 3.0 description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A tactic as `GET /v1/tactics` shows it.
#[derive(Debug, Serialize)]
struct TacticView<'a> {
    id: &'a str,
    shortname: &'a str,
    name: &'a str,
    url: Option<&'a str>,
}

/// `GET /v1/tactics`: the catalog's tactics in ATT&CK matrix order (the columns of the UI's
/// matrix view; techniques name their tactics by `shortname`).
pub async fn tactics(State(st): State<SharedState>) -> Json<serde_json::Value> {
    let rows: Vec<TacticView<'_>> = st
        .catalog
        .tactics()
        .iter()
        .map(|t| TacticView {
            id: &t.id,
            shortname: &t.shortname,
            name: &t.name,
            url: t.url.as_deref(),
        })
        .collect();
    Json(serde_json::json!({ "attack_version": st.catalog.version(), "tactics": rows }))
}

/// A technique as the API shows it.
#[derive(Debug, Serialize)]
pub struct TechniqueView<'a> {
    pub id: &'a TechniqueId,
    pub name: &'a str,
    pub tactics: &'a [String],
    pub description: &'a str,
    pub parent: Option<&'a TechniqueId>,
    pub subtechniques: &'a [TechniqueId],
    pub platforms: &'a [String],
    pub url: Option<&'a str>,
    pub revoked: bool,
    pub deprecated: bool,
    pub revoked_by: Option<&'a TechniqueId>,
}

impl<'a> TechniqueView<'a> {
    pub fn of(t: &'a ttpmap_core::attack::Technique) -> Self {
        TechniqueView {
            id: &t.id,
            name: &t.name,
            tactics: &t.tactics,
            description: &t.description,
            parent: t.parent.as_ref(),
            subtechniques: &t.subtechniques,
            platforms: &t.platforms,
            url: t.url.as_deref(),
            revoked: t.revoked,
            deprecated: t.deprecated,
            revoked_by: t.revoked_by.as_ref(),
        }
    }
}

/// Parses a technique id from a path or body: malformed -> 422, unknown -> `unknown` status.
pub fn technique_id(st: &SharedState, raw: &str, unknown: StatusCode) -> ApiResult<TechniqueId> {
    let id = TechniqueId::parse(raw).map_err(|e| ApiError::validation(format!("{e}")))?;
    if st.catalog.technique(&id).is_none() {
        let msg = format!(
            "unknown ATT&CK technique {id} (not in ATT&CK {})",
            st.catalog.version()
        );
        return Err(if unknown == StatusCode::NOT_FOUND {
            ApiError::not_found(msg)
        } else {
            ApiError::validation(msg)
        });
    }
    Ok(id)
}

/// `GET /v1/techniques/{id}`.
pub async fn get_technique(
    State(st): State<SharedState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = technique_id(&st, &raw, StatusCode::NOT_FOUND)?;
    let t = st
        .catalog
        .technique(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown ATT&CK technique {id}")))?;
    Ok(Json(TechniqueView::of(t)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Search text; without it the active techniques are listed by id.
    #[serde(default)]
    pub q: Option<String>,
    /// At most this many results (1..=100; default 10 with `q`, 100 without).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct SearchHit<'a> {
    rank: usize,
    id: &'a TechniqueId,
    name: &'a str,
    tactics: &'a [String],
    /// BM25 score (unbounded; 0 when listing without a query).
    score: f32,
}

/// `GET /v1/techniques?q=&limit=`: BM25 over names, descriptions and procedure examples.
pub async fn search_techniques(State(st): State<SharedState>, uri: Uri) -> ApiResult<Response> {
    let q: SearchQuery = query(&uri)?;
    let limit = q.limit.unwrap_or(if q.q.is_some() { 10 } else { 100 });
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be in 1..=1000"));
    }
    let hits: Vec<(TechniqueId, f32)> = match q.q.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::validation("q is empty")),
        Some(text) => st
            .search
            .search(text, limit)
            .into_iter()
            .map(|h| (h.technique, h.score))
            .collect(),
        None => st
            .catalog
            .active_techniques()
            .take(limit)
            .map(|t| (t.id.clone(), 0.0))
            .collect(),
    };
    let rows: Vec<SearchHit<'_>> = hits
        .iter()
        .enumerate()
        .filter_map(|(i, (id, score))| {
            let t = st.catalog.technique(id)?;
            Some(SearchHit {
                rank: i + 1,
                id: &t.id,
                name: &t.name,
                tactics: &t.tactics,
                score: *score,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "query": q.q, "results": rows })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractQuery {
    /// `json` (default), `navigator`, `stix`, `misp`, `jsonl`, `csv` or `markdown`.
    #[serde(default)]
    pub format: Option<String>,
    /// Confidence threshold (default: the method's).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// At most this many techniques per sentence (default 3).
    #[serde(default)]
    pub max_per_sentence: Option<usize>,
    /// `all` adds the document's sentences (`document.sentences`, at most `--max-sentences`
    /// of them; `document.truncated` says when there were more) to the JSON output.
    #[serde(default)]
    pub sentences: Option<String>,
}

impl ExtractQuery {
    pub fn export_format(&self) -> ApiResult<ExportFormat> {
        match &self.format {
            None => Ok(ExportFormat::Json),
            Some(f) => f
                .parse::<ExportFormat>()
                .map_err(|e| ApiError::validation(format!("{e}"))),
        }
    }

    pub fn options(&self, st: &SharedState) -> ApiResult<ExtractOptions> {
        let o = ExtractOptions {
            threshold: self.threshold.unwrap_or(st.engine.default_threshold),
            max_per_sentence: self.max_per_sentence.unwrap_or(st.config.max_per_sentence),
            ..ExtractOptions::default()
        };
        if !(0.0..=1.0).contains(&o.threshold) {
            return Err(ApiError::validation(format!(
                "threshold must be in [0, 1], got {}",
                o.threshold
            )));
        }
        if !(1..=50).contains(&o.max_per_sentence) {
            return Err(ApiError::validation("max_per_sentence must be in 1..=50"));
        }
        Ok(o)
    }
}

/// One sentence of the document (all of them, with or without predictions).
#[derive(Debug, Serialize)]
pub struct SentenceView<'a> {
    pub index: usize,
    pub span: Span,
    pub text: &'a str,
    /// The kind of line the sentence is on: `paragraph`, `heading`, `list_item`, `table_row`
    /// or `code`.
    pub block: Block,
    /// The line of the document text the sentence is on (from 0): sentences with the same
    /// `line` form one block.
    pub line: usize,
}

/// The line (from 0) of `text` each span starts on; spans are in order. A span outside `text`
/// (never, for an ingested document) stays on the previous line.
pub fn line_numbers(text: &str, starts: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut line = 0;
    let mut at = 0;
    starts
        .map(|start| {
            if let Some(gap) = text.get(at..start) {
                line += gap.bytes().filter(|&b| b == b'\n').count();
                at = start;
            }
            line
        })
        .collect()
}

/// `document` of a `?sentences=all` answer: the first `--max-sentences` sentences.
#[derive(Debug, Serialize)]
struct DocumentView<'a> {
    sentences: Vec<SentenceView<'a>>,
    /// Sentences in the document (also when `sentences` holds fewer).
    sentence_count: usize,
    /// True when `sentences` stops at `sentences_limit` before the end of the document.
    truncated: bool,
    sentences_limit: usize,
}

/// The JSON answer of `POST /v1/extract`: the extraction's fields, plus `document` with
/// `?sentences=all`. Serialised straight into the response bytes (no intermediate tree).
#[derive(Debug, Serialize)]
struct ExtractView<'a> {
    #[serde(flatten)]
    extraction: &'a Extraction,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentView<'a>>,
}

/// Gives memory back to the operating system when dropped (glibc keeps freed heap otherwise,
/// so one large request would leave the server's resident size at its peak for good).
pub(crate) struct TrimHeap;

impl Drop for TrimHeap {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// `POST /v1/extract`: a report in, techniques out (JSON, or `?format=` an export).
pub async fn extract(State(st): State<SharedState>, req: Request) -> ApiResult<Response> {
    // Declared first, dropped last: after the document and the extraction are freed.
    let _trim = TrimHeap;
    let q: ExtractQuery = query(req.uri())?;
    let format = q.export_format()?;
    let options = q.options(&st)?;
    let all = match q.sentences.as_deref() {
        None | Some("matched") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "sentences={other:?}: expected all or matched"
            )))
        }
    };
    let (parts, body) = req.into_parts();
    let upload = body::read_upload(parts, body, st.config.max_body).await?;
    let doc = st.ingest.ingest(upload, st.config.max_body).await?;
    let (doc, extraction) = st.worker.extract(doc, options).await?;
    if format == ExportFormat::Json {
        let limit = st.config.max_sentences;
        let document = all.then(|| {
            let shown = &doc.sentences[..doc.sentences.len().min(limit)];
            let lines = line_numbers(&doc.text, shown.iter().map(|s| s.span.start));
            DocumentView {
                sentences: shown
                    .iter()
                    .zip(lines)
                    .map(|(s, line)| SentenceView {
                        index: s.index,
                        span: s.span,
                        text: &s.text,
                        block: s.block,
                        line,
                    })
                    .collect(),
                sentence_count: doc.sentences.len(),
                truncated: doc.sentences.len() > limit,
                sentences_limit: limit,
            }
        });
        let view = ExtractView {
            extraction: &extraction,
            document,
        };
        let bytes = serde_json::to_vec(&view)
            .map_err(|e| ApiError::internal(format!("serialising the extraction: {e}")))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Bytes::from(bytes),
        )
            .into_response());
    }
    render_export(&st, format, std::slice::from_ref(&extraction))
}

/// Renders extractions in an export format with its media type.
pub fn render_export(
    st: &SharedState,
    format: ExportFormat,
    extractions: &[Extraction],
) -> ApiResult<Response> {
    let lookup = |id: &TechniqueId| st.catalog.technique(id);
    let mut opts = ExportOptions::default();
    opts.navigator.attack_version = Some(st.catalog.version().to_string());
    let text = export::export(format, extractions, &lookup, &opts)
        .map_err(|e| ApiError::internal(format!("export to {format} failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], text).into_response())
}

/// Unknown route.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// Known route, wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
