//! Request bodies: reading them under the size limit, and turning a report upload into a
//! [`Document`].
//!
//! Invariants:
//! - a body is refused with 413 from its `Content-Length` before any byte is read, and a
//!   chunked body is cut (413) as soon as it passes the limit: at most `max_body` bytes are
//!   ever held;
//! - an empty body is 422; an unknown content type is 415; malformed JSON or multipart is 422
//!   or 400 with the parser's message; every error is an [`ApiError`];
//! - ingestion runs on its own thread with a large stack, at most [`MAX_CONCURRENT_INGEST`] at
//!   once ([`IngestSlots`]).
//!
//! Accepted report bodies (for `POST /v1/extract` and `POST /v1/reports`):
//! - `application/json`: `{"text": string, "title"?: string, "format"?: "text"|"markdown"|"html"}`;
//! - `multipart/form-data`: a file part named `file` (any part with a file name is taken),
//!   optional text part `title`; the format comes from the file name, then the part's content
//!   type, then the content (txt, md, html, pdf);
//! - a raw body typed `text/plain`, `text/markdown`, `text/html` or `application/pdf`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart};
use axum::http::request::Parts;
use axum::http::{header, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use ttpmap_core::ingest::{self, Format, IngestOptions};
use ttpmap_core::Document;

use super::error::{ApiError, ApiResult};

/// Reads the whole body, at most `max` bytes.
pub async fn read_limited(parts: &Parts, body: Body, max: u64) -> ApiResult<Bytes> {
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > max {
            return Err(ApiError::too_large(max));
        }
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(max)),
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The content type's essence, lower-cased (`application/json`), or "" when absent.
pub fn content_type(parts: &Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The JSON form of a report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextInput {
    pub text: String,
    #[serde(default)]
    pub title: Option<String>,
    /// `text` (default), `markdown` or `html`.
    #[serde(default)]
    pub format: Option<String>,
}

/// Parses JSON, mapping serde's error to 422 with its line and column.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("empty body: expected a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::validation(format!("invalid JSON: {e}")))
}

/// A report read from the body, still to be ingested.
pub enum Upload {
    Text {
        source: String,
        title: Option<String>,
        text: String,
        format: Format,
    },
    Bytes {
        source: String,
        title: Option<String>,
        bytes: Bytes,
        format: Option<Format>,
    },
}

/// What a report body may be, for error messages.
const FORMS: &str = "send JSON {\"text\": ...}, a multipart/form-data upload (field `file`), or a \
                     text/plain, text/markdown, text/html or application/pdf body";

/// Reads a report from the request (see the module docs for the accepted forms).
pub async fn read_upload(parts: Parts, body: Body, max: u64) -> ApiResult<Upload> {
    let ct = content_type(&parts);
    if ct == "multipart/form-data" {
        return read_multipart(parts, body, max).await;
    }
    let bytes = read_limited(&parts, body, max).await?;
    if bytes.is_empty() {
        return Err(ApiError::validation(format!("empty body: {FORMS}")));
    }
    match ct.as_str() {
        "application/json" => {
            let input: TextInput = parse_json(&bytes)?;
            let format = match input
                .format
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("text") | Some("txt") => Format::Text,
                Some("markdown") | Some("md") => Format::Markdown,
                Some("html") => Format::Html,
                Some(other) => {
                    return Err(ApiError::validation(format!(
                        "unknown format {other:?}: expected text, markdown or html (upload PDFs \
                         as files)"
                    )))
                }
            };
            if input.text.trim().is_empty() {
                return Err(ApiError::validation("\"text\" is empty"));
            }
            Ok(Upload::Text {
                source: input.title.clone().unwrap_or_else(|| "<text>".into()),
                title: input.title,
                text: input.text,
                format,
            })
        }
        "" => Err(ApiError::unsupported_media_type(format!(
            "no Content-Type: {FORMS}"
        ))),
        other => match Format::from_mime(other) {
            Some(format) => Ok(Upload::Bytes {
                source: "<upload>".into(),
                title: None,
                bytes,
                format: Some(format),
            }),
            None => Err(ApiError::unsupported_media_type(format!(
                "unsupported Content-Type {other:?}: expected application/json, \
                 multipart/form-data, text/plain, text/markdown, text/html or application/pdf"
            ))),
        },
    }
}

async fn read_multipart(parts: Parts, body: Body, max: u64) -> ApiResult<Upload> {
    // The size limit is checked here; the multipart parser also applies DefaultBodyLimit.
    let bytes = read_limited(&parts, body, max).await?;
    if bytes.is_empty() {
        return Err(ApiError::validation(format!("empty body: {FORMS}")));
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    })?;
    let mut file: Option<(String, Option<String>, Bytes)> = None;
    let mut title = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "malformed multipart body: {}",
                    e.body_text()
                )))
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let mime = field.content_type().map(str::to_string);
        let data = field.bytes().await.map_err(|e| {
            ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
        })?;
        if name == "title" && filename.is_none() {
            let t = String::from_utf8_lossy(&data).trim().to_string();
            title = (!t.is_empty()).then_some(t);
        } else if file.is_none() && (name == "file" || filename.is_some()) {
            file = Some((filename.unwrap_or_else(|| "<upload>".into()), mime, data));
        }
    }
    let Some((source, mime, bytes)) = file else {
        return Err(ApiError::validation(
            "multipart body without a file: send the report in a part named `file`",
        ));
    };
    let format = Format::from_path(std::path::Path::new(&source))
        .or_else(|| mime.as_deref().and_then(Format::from_mime));
    Ok(Upload::Bytes {
        source,
        title,
        bytes,
        format,
    })
}

/// Ingestions that may run at once. Each can hold a body and an inflated PDF in memory and a
/// parse in progress cannot be interrupted, so more are answered 429 at once.
pub const MAX_CONCURRENT_INGEST: usize = 4;

/// Stack of an ingestion thread: 256 MiB of address space, of which only the pages a parse
/// touches are ever committed. Ingestion walks input structure; even an input deeper than the
/// parsers' own limits then fails (or succeeds) alone instead of overflowing a small runtime
/// stack, which would abort the whole process.
pub const INGEST_STACK_BYTES: usize = 256 * 1024 * 1024;

/// The ingestion slots: at most [`MAX_CONCURRENT_INGEST`] uploads are decoded and segmented at
/// once, each on its own thread with an [`INGEST_STACK_BYTES`] stack.
///
/// Invariants: a slot is held from the moment the upload is handed over until its thread has
/// finished (also when the requester has gone meanwhile: the CPU is still busy), so
/// [`IngestSlots::active`] is what really runs; an upload whose requester has gone before its
/// thread starts parsing is dropped unparsed.
pub struct IngestSlots {
    permits: Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl Default for IngestSlots {
    fn default() -> Self {
        IngestSlots::new(MAX_CONCURRENT_INGEST)
    }
}

impl IngestSlots {
    pub fn new(capacity: usize) -> IngestSlots {
        let capacity = capacity.max(1);
        IngestSlots {
            permits: Arc::new(tokio::sync::Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Uploads being ingested now.
    pub fn active(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes every slot until the permit is dropped (tests of the full state).
    #[cfg(test)]
    pub fn hold_all_for_test(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.permits
            .clone()
            .try_acquire_many_owned(self.capacity as u32)
            .expect("no slot in use")
    }

    /// Decodes, normalises and segments an upload on an ingestion thread. All slots busy -> 429
    /// at once.
    pub async fn ingest(&self, upload: Upload, max: u64) -> ApiResult<Document> {
        let opts = IngestOptions {
            max_bytes: max,
            ..IngestOptions::default()
        };
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::overloaded(format!(
                "ingestion slots full: {} of {} uploads being read",
                self.active(),
                self.capacity
            ))
        })?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ttpmap-ingest".into())
            .stack_size(INGEST_STACK_BYTES)
            .spawn(move || {
                let _permit = permit;
                if reply.is_closed() {
                    return;
                }
                // A panic in a parser (a bug) fails this upload with 500, not the server.
                let run = std::panic::AssertUnwindSafe(|| ingest_now(upload, &opts));
                match std::panic::catch_unwind(run) {
                    Ok(doc) => {
                        let _ = reply.send(doc);
                    }
                    Err(_) => tracing::error!("ingesting an upload panicked"),
                }
            })
            .map_err(|e| ApiError::internal(format!("could not start an ingestion thread: {e}")))?;
        let result = rx
            .await
            .map_err(|_| ApiError::internal("ingestion failed (see the server log)"))?;
        result.map_err(|e| ApiError::from_core(&e))
    }
}

fn ingest_now(upload: Upload, opts: &IngestOptions) -> ttpmap_core::Result<Document> {
    match upload {
        Upload::Text {
            source,
            title,
            text,
            format,
        } => ingest::from_text(&source, &text, format).map(|mut d| {
            if title.is_some() {
                d.title = title;
            }
            d
        }),
        Upload::Bytes {
            source,
            title,
            bytes,
            format,
        } => ingest::from_bytes(&source, &bytes, format, opts).map(|mut d| {
            if title.is_some() {
                d.title = title;
            }
            d
        }),
    }
}
