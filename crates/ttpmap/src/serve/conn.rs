//! Connections: the accept loop of `ttpmap serve`, on hyper's HTTP/1 server directly (not
//! `axum::serve`, which has neither of the two limits below).
//!
//! Invariants:
//! - at most `max_connections` connections are served at once; while all are taken the loop
//!   stops accepting and new connections wait in the kernel's listen backlog, so the process
//!   never runs out of file descriptors and a connection that finishes frees its place;
//! - a connection must deliver each request's headers within `header_timeout` of starting to
//!   wait for them (also an idle keep-alive connection), else it is closed: a client that never
//!   finishes its headers holds a place for at most that long;
//! - the automatic answers of the HTTP layer to a request it cannot parse (400 for a malformed
//!   request line, header or `Content-Length`; 414; 431) carry the same JSON body
//!   `{"error", "error_type"}` as every other error ([`JsonErrors`] rewrites hyper's empty
//!   ones on their way out);
//! - on shutdown the loop stops accepting, every connection finishes its request in flight and
//!   closes, and [`serve`] returns once all have (or after [`SHUTDOWN_GRACE`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Longest wait for connections still in flight after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once (at least 1).
    pub max_connections: usize,
    /// Time to deliver a request's headers.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let places = Arc::new(tokio::sync::Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let place = tokio::select! {
            p = places.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Per-connection failures (reset before accept) and resource exhaustion
                    // (EMFILE): log, breathe, go on; the listener itself stays usable.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                app.clone().oneshot(req.map(Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(JsonErrors::new(stream)), service);
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.changed() => None,
            };
            let result = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection closed: {e}");
            }
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, places.acquire_many(all)).await;
    Ok(())
}

/// A connection whose automatic error answers from hyper (status line, `content-length: 0`,
/// no body) are replaced by the same status with a JSON body. The router never answers an
/// error without a body, so only hyper's own answers match.
pub struct JsonErrors<S> {
    inner: S,
    /// A replacement answer still to be written, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonErrors {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer for hyper's empty automatic answer in `buf`, if `buf` is one.
pub fn json_error_for(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() || !buf.starts_with(b"HTTP/1.") || buf.len() < 12 {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?.to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (code, error_type, message) = match &buf[9..12] {
        b"400" => (
            400,
            "bad_request",
            "malformed HTTP request: invalid request line, header or Content-Length",
        ),
        b"414" => (
            414,
            "uri_too_long",
            "the request target (URI) is longer than this server reads",
        ),
        b"431" => (
            431,
            "headers_too_large",
            "the request headers are larger than this server reads",
        ),
        b"505" => (
            505,
            "http_version_not_supported",
            "only HTTP/1.0 and HTTP/1.1 are served",
        ),
        _ => return None,
    };
    let reason = axum::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = serde_json::json!({"error": message, "error_type": error_type}).to_string();
    Some(
        format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = json_error_for(buf) {
            this.pending = answer;
            this.written = 0;
            // The rest is written by later writes or the flush hyper always follows with.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_answers_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 08:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_error_for(hyper_431).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error_type"], "headers_too_large");
        // A router answer with a body, a success, or a head followed by body bytes: untouched.
        assert!(json_error_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            json_error_for(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none()
        );
        assert!(
            json_error_for(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none()
        );
        assert!(json_error_for(b"HTTP/1.1 400 Bad Req").is_none());
    }

    /// A writer that takes at most 7 bytes per call, to force partial writes.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            self.get_mut().0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_partial_write_of_the_answer_is_finished_by_flush() {
        let mut w = JsonErrors::new(Trickle(Vec::new()));
        let msg = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let n = std::future::poll_fn(|cx| Pin::new(&mut w).poll_write(cx, msg))
            .await
            .unwrap();
        assert_eq!(n, msg.len(), "the whole automatic answer counts as written");
        std::future::poll_fn(|cx| Pin::new(&mut w).poll_flush(cx))
            .await
            .unwrap();
        let out = String::from_utf8(w.inner.0).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.ends_with("\"error_type\":\"bad_request\"}"), "{out}");
        // Ordinary writes pass through untouched.
        let mut w = JsonErrors::new(Trickle(Vec::new()));
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let n = std::future::poll_fn(|cx| Pin::new(&mut w).poll_write(cx, ok))
            .await
            .unwrap();
        assert_eq!(w.inner.0, &ok[..n]);
    }
}
