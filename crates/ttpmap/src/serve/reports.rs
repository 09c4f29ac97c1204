//! Handlers of the stored reports: create (extract + store), list, show, review, export.
//!
//! Writes (`POST /v1/reports`, `POST /v1/reports/{id}/reviews`) need the API token (see
//! [`super::auth`]). Storage calls run on blocking threads.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use ttpmap_core::export::ExportFormat;
use ttpmap_core::review::{self, Status};
use ttpmap_core::{Evidence, TechniqueId};

use super::body;
use super::db::{Db, Decision, ReportSummary, Review, StoreError, StoredReport};
use super::error::{ApiError, ApiResult};
use super::routes::{query, render_export, technique_id, ExtractQuery};
use super::SharedState;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownReport(_) => ApiError::not_found(e.to_string()),
            StoreError::UnknownSentence { .. } | StoreError::NothingToReview { .. } => {
                ApiError::validation(e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// Runs a storage call on a blocking thread.
async fn with_db<T: Send + 'static>(
    st: &SharedState,
    f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let db = st.db.clone();
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| ApiError::internal(format!("storage task failed: {e}")))?
        .map_err(ApiError::from)
}

fn report_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>().ok().filter(|&i| i > 0).ok_or_else(|| {
        ApiError::not_found(format!("no report {raw:?} (ids are positive integers)"))
    })
}

async fn load(st: &SharedState, id: i64) -> ApiResult<StoredReport> {
    with_db(st, move |db| db.get_report(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("report {id} does not exist")))
}

/// A technique on a sentence with its review state.
#[derive(Debug, Serialize)]
pub struct TechniqueState {
    pub technique: String,
    pub name: String,
    pub tactics: Vec<String>,
    pub score: f32,
    pub raw_score: f32,
    pub evidence: Evidence,
    /// `model` (predicted) or `analyst` (added in review).
    pub origin: &'static str,
    /// `predicted` (not reviewed), `accepted`, `rejected` or `added`.
    pub status: &'static str,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SentenceState {
    pub index: i64,
    pub span: ttpmap_core::Span,
    pub text: String,
    /// The kind of line the sentence is on (`paragraph`, `heading`, `list_item`, `table_row`,
    /// `code`).
    pub block: ttpmap_core::Block,
    /// The line of the report text it is on (from 0): sentences sharing it form one block.
    pub line: usize,
    pub techniques: Vec<TechniqueState>,
}

/// `GET /v1/reports/{id}`: the stored report with review state per sentence, the reviewed
/// document summary and the decision log.
#[derive(Debug, Serialize)]
pub struct ReportView {
    pub id: i64,
    pub title: Option<String>,
    pub source: String,
    pub method: String,
    pub threshold: f32,
    pub attack_version: String,
    pub created_at: String,
    pub created_by: String,
    pub sentences: Vec<SentenceState>,
    /// The reviewed result aggregated per technique, best first.
    pub techniques: Vec<ttpmap_core::DocumentTechnique>,
    pub reviews: Vec<Review>,
}

fn view(st: &SharedState, r: StoredReport) -> ReportView {
    let decisions = r.decisions();
    let meta = |t: &str| {
        TechniqueId::parse(t)
            .ok()
            .and_then(|id| st.catalog.technique(&id))
            .map(|t| (t.name.clone(), t.tactics.clone()))
            .unwrap_or_default()
    };
    let lookup = |id: &TechniqueId| st.catalog.technique(id);
    let reviewed = r.reviewed_extraction(&lookup);
    let lines = super::routes::line_numbers(&r.text, r.sentences.iter().map(|s| s.span.start));
    let sentences = r
        .sentences
        .iter()
        .zip(lines)
        .map(|(s, line)| {
            let mut techniques: Vec<TechniqueState> = s
                .predictions
                .iter()
                .map(|p| {
                    let d = decisions.get(&(s.index, p.technique.to_string()));
                    let (name, tactics) = meta(p.technique.as_str());
                    TechniqueState {
                        technique: p.technique.to_string(),
                        name,
                        tactics,
                        score: p.score,
                        raw_score: p.raw_score,
                        evidence: p.evidence.clone(),
                        origin: "model",
                        status: Status::of_prediction(d.map(|d| d.decision)).as_str(),
                        reviewed_by: d.map(|d| d.who.clone()),
                        reviewed_at: d.map(|d| d.at.clone()),
                    }
                })
                .collect();
            for (t, d) in review::on_sentence(&decisions, s.index) {
                if techniques.iter().any(|x| x.technique == t) {
                    continue;
                }
                let (name, tactics) = meta(t);
                techniques.push(TechniqueState {
                    technique: t.to_string(),
                    name,
                    tactics,
                    score: 1.0,
                    raw_score: 1.0,
                    evidence: Evidence {
                        method: "analyst".into(),
                        reasons: vec![],
                    },
                    origin: "analyst",
                    status: Status::of_addition(d.decision).as_str(),
                    reviewed_by: Some(d.who.clone()),
                    reviewed_at: Some(d.at.clone()),
                });
            }
            SentenceState {
                index: s.index,
                span: s.span,
                text: s.text.clone(),
                block: s.block,
                line,
                techniques,
            }
        })
        .collect();
    ReportView {
        id: r.id,
        title: r.title,
        source: r.source,
        method: r.method,
        threshold: r.threshold,
        attack_version: r.attack_version,
        created_at: r.created_at,
        created_by: r.created_by,
        sentences,
        techniques: reviewed.techniques,
        reviews: r.reviews,
    }
}

/// `POST /v1/reports`: extracts a report (same bodies and query as `/v1/extract`) and stores
/// it with its predictions; 201 with the stored report.
pub async fn create_report(State(st): State<SharedState>, req: Request) -> ApiResult<Response> {
    // Declared first, dropped last: after the document and the extraction are freed.
    let _trim = super::routes::TrimHeap;
    let who = st.config.auth.writer(req.headers())?;
    let q: ExtractQuery = query(req.uri())?;
    if q.format.is_some() || q.sentences.is_some() {
        return Err(ApiError::validation(
            "POST /v1/reports takes threshold and max_per_sentence; export with GET /v1/reports/{id}/export",
        ));
    }
    let options = q.options(&st)?;
    let (parts, body) = req.into_parts();
    let upload = body::read_upload(parts, body, st.config.max_body).await?;
    let doc = st.ingest.ingest(upload, st.config.max_body).await?;
    let (doc, extraction) = st.worker.extract(doc, options).await?;
    let id = with_db(&st, move |db| db.insert_report(&doc, &extraction, &who)).await?;
    tracing::info!("stored report {id}");
    let report = load(&st, id).await?;
    Ok((StatusCode::CREATED, Json(view(&st, report))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Default 50, at most 500.
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

/// `GET /v1/reports?limit=&offset=`: newest first.
pub async fn list_reports(State(st): State<SharedState>, uri: Uri) -> ApiResult<Response> {
    let q: ListQuery = query(&uri)?;
    let limit = q.limit.unwrap_or(50);
    let offset = q.offset.unwrap_or(0);
    if !(1..=500).contains(&limit) || offset < 0 {
        return Err(ApiError::validation(
            "limit must be in 1..=500 and offset >= 0",
        ));
    }
    let rows: Vec<ReportSummary> = with_db(&st, move |db| db.list_reports(limit, offset)).await?;
    Ok(
        Json(serde_json::json!({ "reports": rows, "limit": limit, "offset": offset }))
            .into_response(),
    )
}

/// `GET /v1/reports/{id}`.
pub async fn get_report(
    State(st): State<SharedState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = report_id(&raw)?;
    let r = load(&st, id).await?;
    Ok(Json(view(&st, r)).into_response())
}

/// Body of `POST /v1/reports/{id}/reviews`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    /// Sentence index (from 0, as in the report).
    pub sentence: i64,
    /// Technique id, e.g. `T1059.001`.
    pub technique: String,
    pub decision: Decision,
}

/// `POST /v1/reports/{id}/reviews`: accept, reject or add a technique on a sentence; one
/// transaction; 201 with the stored decision (who, when). An "add" of a revoked id is stored
/// as its replacement (the answer has `remapped_from`); of a deprecated one, refused (422).
pub async fn add_review(
    State(st): State<SharedState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let who = st.config.auth.writer(&headers)?;
    let id = report_id(&raw)?;
    let (parts, body) = req.into_parts();
    if body::content_type(&parts) != "application/json" {
        return Err(ApiError::unsupported_media_type(
            "reviews are JSON: Content-Type: application/json",
        ));
    }
    let bytes = body::read_limited(&parts, body, st.config.max_body).await?;
    let input: ReviewInput = body::parse_json(&bytes)?;
    let technique = technique_id(&st, &input.technique, StatusCode::UNPROCESSABLE_ENTITY)?;
    if input.sentence < 0 {
        return Err(ApiError::validation("sentence must be >= 0"));
    }
    let (technique, remapped_from) = if input.decision == Decision::Add {
        let added = review::technique_to_add(&st.catalog, &technique)
            .map_err(|e| ApiError::validation(e.to_string()))?;
        (added.technique, added.remapped_from)
    } else {
        (technique, None)
    };
    let review = with_db(&st, move |db| {
        db.add_review(id, input.sentence, &technique, input.decision, &who)
    })
    .await?;
    let mut value = serde_json::to_value(&review)
        .map_err(|e| ApiError::internal(format!("serialising the review: {e}")))?;
    if let (Some(from), Some(obj)) = (remapped_from, value.as_object_mut()) {
        obj.insert("remapped_from".into(), serde_json::json!(from.to_string()));
    }
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `json` (default), `navigator`, `stix`, `misp`, `jsonl`, `csv` or `markdown`.
    #[serde(default)]
    pub format: Option<String>,
}

/// `GET /v1/reports/{id}/export?format=`: the reviewed result (rejected predictions removed,
/// added techniques in).
pub async fn export_report(
    State(st): State<SharedState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> ApiResult<Response> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q: ExportQuery = query(&uri)?;
    let format = match &q.format {
        None => ExportFormat::Json,
        Some(f) => f
            .parse::<ExportFormat>()
            .map_err(|e| ApiError::validation(format!("{e}")))?,
    };
    let id = report_id(&raw)?;
    let r = load(&st, id).await?;
    let lookup = |id: &TechniqueId| st.catalog.technique(id);
    let x = r.reviewed_extraction(&lookup);
    if format == ExportFormat::Json {
        return Ok(Json(x).into_response());
    }
    render_export(&st, format, std::slice::from_ref(&x))
}
