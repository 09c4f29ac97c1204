//! `POST /v1/rerank`: the text-embeddings-inference rerank shape over a cross-encoder.
//!
//! Request `{"query": string, "texts": [string], "return_text"?: bool}`; response
//! `[{"index": integer, "score": number, "text"?: string}]`, best first (index = position in
//! `texts`). The model sits behind [`RerankService`] so the server does not depend on how the
//! reranker is built; without one loaded the route answers 501. Scoring runs on the inference
//! worker, in the same bounded queue as extraction (429 when full).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body;
use super::error::{ApiError, ApiResult};
use super::SharedState;

/// At most this many texts per request.
pub const MAX_TEXTS: usize = 1000;

/// A loaded reranker (a cross-encoder): relevance of each text to the query.
pub trait RerankService: Send + Sync {
    /// Model name for `/health`.
    fn name(&self) -> &str;
    /// One score per text, in `texts` order; higher is more relevant.
    fn rerank(
        &self,
        query: &str,
        texts: &[&str],
    ) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>>;
}

#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    #[serde(default)]
    pub return_text: bool,
    /// Accepted for compatibility with text-embeddings-inference; ignored.
    #[serde(default, rename = "raw_scores")]
    pub _raw_scores: bool,
    /// Accepted for compatibility with text-embeddings-inference; ignored.
    #[serde(default, rename = "truncate")]
    pub _truncate: Option<bool>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Rank {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /v1/rerank`.
pub async fn rerank(State(st): State<SharedState>, req: Request) -> ApiResult<Response> {
    if st.engine.reranker.is_none() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "no reranker is loaded on this server",
        ));
    }
    let (parts, body) = req.into_parts();
    if body::content_type(&parts) != "application/json" {
        return Err(ApiError::unsupported_media_type(
            "rerank takes JSON: Content-Type: application/json",
        ));
    }
    let bytes = body::read_limited(&parts, body, st.config.max_body).await?;
    let r: RerankRequest = body::parse_json(&bytes)?;
    if r.query.trim().is_empty() {
        return Err(ApiError::validation("\"query\" is empty"));
    }
    if r.texts.is_empty() || r.texts.len() > MAX_TEXTS {
        return Err(ApiError::validation(format!(
            "\"texts\" must hold 1 to {MAX_TEXTS} texts, got {}",
            r.texts.len()
        )));
    }
    let RerankRequest {
        query,
        texts,
        return_text,
        ..
    } = r;
    let ranks = st
        .worker
        .run(move |engine, _cancelled| {
            let Some(model) = engine.reranker.as_ref() else {
                return Err("no reranker is loaded".to_string());
            };
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let scores = model.rerank(&query, &refs).map_err(|e| e.to_string())?;
            if scores.len() != texts.len() {
                return Err(format!(
                    "reranker returned {} scores for {} texts",
                    scores.len(),
                    texts.len()
                ));
            }
            Ok(rank(scores, texts, return_text))
        })
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(ranks).into_response())
}

/// Sorts by score, best first (ties by index), as text-embeddings-inference answers.
pub fn rank(scores: Vec<f32>, texts: Vec<String>, return_text: bool) -> Vec<Rank> {
    let mut out: Vec<Rank> = scores
        .into_iter()
        .zip(texts)
        .enumerate()
        .map(|(index, (score, text))| Rank {
            index,
            score,
            text: return_text.then_some(text),
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    out
}
