//! JSON errors of the HTTP API: every failure is `{"error": message, "error_type": kind}` with
//! the status that says what went wrong (the shape text-embeddings-inference uses).
//!
//! | status | `error_type` | when |
//! | --- | --- | --- |
//! | 400 | `bad_request` | a malformed query string or multipart body; a malformed HTTP request (bad `Content-Length`, request line or header) |
//! | 401 | `unauthorized` | a write without a valid `Authorization: Bearer` token |
//! | 403 | `read_only` | a write to a server started without a token (and without `--open-writes`) |
//! | 403 | `cross_origin` | a write from a page on another origin (`Origin` / `Sec-Fetch-Site`, see `--allow-origin`) |
//! | 404 | `not_found` | unknown route, report or technique |
//! | 408 | `timeout` | the request took longer than `--timeout-s` |
//! | 413 | `payload_too_large` | a body over `--max-body` bytes |
//! | 414 | `uri_too_long` | a request target longer than the HTTP layer reads |
//! | 415 | `unsupported_media_type` | a content type the endpoint does not take |
//! | 421 | `unknown_host` | a `Host` header that is neither loopback, an IP address nor listed with `--allow-host` |
//! | 422 | `validation` | the request parsed but its content is wrong (empty text, bad PDF, unknown sentence...) |
//! | 429 | `overloaded` | the inference queue or the ingestion slots are full (the message says which): retry later |
//! | 431 | `headers_too_large` | request headers larger than the HTTP layer reads |
//! | 500 | `internal` | a bug or a storage failure (logged) |
//! | 500 | `model` | the model backend failed while scoring (logged with its source chain) |
//! | 501 | `not_implemented` | a feature that is not loaded (e.g. no reranker) |
//! | 503 | `unavailable` | the inference worker is gone |
//! | 505 | `http_version_not_supported` | an HTTP version other than 1.0 / 1.1 |
//!
//! The statuses the HTTP layer (hyper) answers itself before a request reaches the router (400
//! for a malformed request, 414, 431, 505) get the same JSON body: see [`crate::serve::conn`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An API error: status, message and machine-readable kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub error_type: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            error_type,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn validation(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn unsupported_media_type(m: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            m,
        )
    }
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body larger than the limit of {limit} bytes (--max-body)"),
        )
    }
    pub fn timeout(secs: f64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("request took longer than {secs} s (--timeout-s)"),
        )
    }
    /// 429; `what` says what is full, e.g. "inference queue full: 16 of 16 jobs waiting".
    pub fn overloaded(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!("{what}; retry later"),
        )
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }

    /// A library error about request content (bad input) -> 422, too large -> 413; a model
    /// backend failure -> 500 `model` (logged with its source chain: it is not the client's
    /// fault).
    pub fn from_core(err: &ttpmap_core::Error) -> Self {
        use ttpmap_core::Error as E;
        match err {
            E::Model { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "model", error_chain(err))
            }
            E::TooLarge { limit, .. } => Self::too_large(*limit),
            E::Io { .. } => Self::internal(format!("{err}")),
            E::Unsupported { .. } => Self::unsupported_media_type(format!("{err}")),
            _ => Self::validation(format!("{err}")),
        }
    }
}

/// `err` and its sources, joined with ": " (the chain `main` prints for the CLI).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.error_type, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = serde_json::json!({"error": self.message, "error_type": self.error_type});
        (self.status, Json(body)).into_response()
    }
}

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_failures_are_server_errors_and_bad_input_is_422() {
        let e = ttpmap_core::Error::model(
            "/models/clf",
            "classifying sentences",
            std::io::Error::other("shape mismatch in layer 3"),
        );
        let api = ApiError::from_core(&e);
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(api.error_type, "model");
        assert!(
            api.message.contains("/models/clf") && api.message.contains("shape mismatch"),
            "{}",
            api.message
        );
        let bad = ttpmap_core::Error::invalid("<upload>", "no sentences found");
        assert_eq!(
            ApiError::from_core(&bad).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
