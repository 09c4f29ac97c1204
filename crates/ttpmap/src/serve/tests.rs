//! In-process tests of the router (`tower::ServiceExt::oneshot`), on a five-technique catalog
//! and BM25, or on a gated stub scorer for the queue and time-out paths.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::{Bm25Scorer, SentenceScorer};
use ttpmap_core::retrieve::{technique_documents, Analyzer, Bm25Index, Bm25Params, DocOptions};
use ttpmap_core::{Evidence, Prediction, TechniqueId};

use super::worker::Engine;
use super::*;

pub const BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--test", "objects": [
 {"type": "x-mitre-collection", "id": "x-mitre-collection--1", "x_mitre_version": "18.1"},
 {"type": "x-mitre-tactic", "id": "x-mitre-tactic--1", "name": "Execution", "x_mitre_shortname": "execution",
  "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]},
 {"type": "x-mitre-tactic", "id": "x-mitre-tactic--2", "name": "Credential Access", "x_mitre_shortname": "credential-access",
  "external_references": [{"source_name": "mitre-attack", "external_id": "TA0006"}]},
 {"type": "x-mitre-tactic", "id": "x-mitre-tactic--3", "name": "Persistence", "x_mitre_shortname": "persistence",
  "external_references": [{"source_name": "mitre-attack", "external_id": "TA0003"}]},
 {"type": "attack-pattern", "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--1", "name": "PowerShell",
  "description": "Adversaries may abuse PowerShell commands and scripts for execution.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001"}]},
 {"type": "attack-pattern", "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--2", "name": "Command and Scripting Interpreter",
  "description": "Adversaries may abuse command and script interpreters to execute commands.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1059"}]},
 {"type": "attack-pattern", "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--3", "name": "LSASS Memory",
  "description": "Adversaries may dump credentials from the LSASS process memory with Mimikatz.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "credential-access"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1003.001"}]},
 {"type": "attack-pattern", "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--4", "name": "Scheduled Task",
  "description": "Adversaries may create a scheduled task with schtasks to run malicious code at reboot.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "persistence"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1053.005"}]},
 {"type": "attack-pattern", "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--5", "name": "Registry Run Keys",
  "description": "Adversaries may add a registry run key so a program runs when a user logs in.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "persistence"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1547.001"}]},
 {"type": "attack-pattern", "created": "2017-05-31T21:31:31.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--6", "name": "PowerShell", "revoked": true,
  "description": "Revoked: see T1059.001.",
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1086"}]},
 {"type": "attack-pattern", "created": "2017-05-31T21:31:31.000Z", "modified": "2020-01-01T00:00:00.000Z", "id": "attack-pattern--7", "name": "Indicator Blocking (old)", "x_mitre_deprecated": true,
  "description": "Deprecated without replacement.",
  "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "persistence"}],
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1054"}]},
 {"type": "relationship", "id": "relationship--1", "relationship_type": "revoked-by",
  "source_ref": "attack-pattern--6", "target_ref": "attack-pattern--1"}
]}"#;

pub const REPORT: &str = "The actors ran encoded PowerShell commands and scripts on the host. \
They dumped credentials from LSASS process memory with Mimikatz. \
A scheduled task created with schtasks ran the loader at every reboot. \
The weather was nice that day.";

pub fn catalog() -> Arc<Catalog> {
    Arc::new(
        Catalog::from_slice(BUNDLE.as_bytes(), std::path::Path::new("test-bundle.json")).unwrap(),
    )
}

pub fn index(catalog: &Catalog) -> Bm25Index {
    let techniques: Vec<_> = catalog.active_techniques().cloned().collect();
    let docs = technique_documents(&techniques, &[], &DocOptions::default());
    Bm25Index::build(&docs, Bm25Params::default(), Analyzer::new()).unwrap()
}

/// BM25 over the test catalog; threshold 0.05 (five short documents give small raw scores).
pub fn bm25_state(config: ServeConfig) -> SharedState {
    let catalog = catalog();
    let idx = index(&catalog);
    let engine = Engine {
        scorer: Box::new(Bm25Scorer::new(idx.clone())),
        catalog,
        default_threshold: 0.05,
        reranker: None,
    };
    Arc::new(AppState::new(config, engine, Arc::new(idx), temp_db()))
}

/// A fresh database in a temporary folder that lives as long as the test process.
pub fn temp_db() -> Arc<super::db::Db> {
    let dir = tempfile::tempdir().unwrap().keep();
    Arc::new(super::db::Db::open(&dir.join("test.db")).unwrap())
}

/// A scorer that reports each call on `started` and then blocks until `release` sends.
struct GateScorer {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl SentenceScorer for GateScorer {
    fn name(&self) -> &str {
        "gate"
    }
    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        let _ = self.started.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        Ok(sentences
            .iter()
            .map(|_| {
                vec![Prediction {
                    technique: TechniqueId::parse("T1059.001").unwrap(),
                    score: 0.9,
                    raw_score: 0.9,
                    evidence: Evidence {
                        method: "gate".into(),
                        reasons: vec![],
                    },
                }]
            })
            .collect())
    }
}

fn gate_state(config: ServeConfig) -> (SharedState, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let catalog = catalog();
    let idx = index(&catalog);
    let engine = Engine {
        scorer: Box::new(GateScorer {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        }),
        catalog,
        default_threshold: 0.5,
        reranker: None,
    };
    (
        Arc::new(AppState::new(config, engine, Arc::new(idx), temp_db())),
        started_rx,
        release_tx,
    )
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>, Option<String>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes, ct)
}

pub async fn json(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes, _) = send(app, req).await;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Asserts a JSON error with this status and error_type.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, error_type: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error_type"], error_type, "{}", got.1);
    assert!(
        got.1["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        got.1
    );
}

#[tokio::test]
async fn health_and_catalog_lookup() {
    let app = router(bm25_state(ServeConfig::default()));
    let (s, v) = json(&app, get("/health")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["method"], "bm25");
    assert_eq!(v["attack_version"], "18.1");
    assert_eq!(v["techniques"], 5);

    let (s, v) = json(&app, get("/v1/techniques/t1003.001")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "T1003.001");
    assert_eq!(v["name"], "LSASS Memory");
    assert_eq!(v["tactics"][0], "credential-access");

    assert_error(
        &json(&app, get("/v1/techniques/T9999")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json(&app, get("/v1/techniques/G0007")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    );

    let (s, v) = json(&app, get("/v1/techniques?q=dump%20lsass%20memory&limit=2")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["id"], "T1003.001");
    assert!(v["results"].as_array().unwrap().len() <= 2);
    let (_, v) = json(&app, get("/v1/techniques")).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 5);
    assert_error(
        &json(&app, get("/v1/techniques?q=")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    );
    assert_error(
        &json(&app, get("/v1/techniques?bogus=1")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &json(&app, get("/nowhere")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json(
            &app,
            Request::delete("/health").body(Body::empty()).unwrap(),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn extract_json_text_and_exports() {
    let app = router(bm25_state(ServeConfig::default()));
    let body = serde_json::json!({"text": REPORT, "title": "Test report"}).to_string();
    let (s, v) = json(&app, post_json("/v1/extract?sentences=all", &body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["title"], "Test report");
    assert_eq!(v["method"], "bm25");
    assert_eq!(v["sentence_count"], 4);
    assert_eq!(v["document"]["sentences"].as_array().unwrap().len(), 4);
    let found: Vec<&str> = v["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["technique"].as_str().unwrap())
        .collect();
    for id in ["T1059.001", "T1003.001", "T1053.005"] {
        assert!(found.contains(&id), "{id} missing from {found:?}");
    }
    // The sentence with the LSASS dump is evidence for T1003.001.
    let s1 = v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sentence"] == 1)
        .unwrap();
    assert_eq!(s1["predictions"][0]["technique"], "T1003.001");

    let (s, bytes, ct) = send(&app, post_json("/v1/extract?format=navigator", &body)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/json"));
    let layer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert!(layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["techniqueID"] == "T1003.001"));

    let (s, bytes, ct) = send(&app, post_json("/v1/extract?format=stix", &body)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ct.as_deref(), Some("application/stix+json;version=2.1"));
    let bundle: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(bundle["type"], "bundle");
}

#[tokio::test]
async fn extract_accepts_uploads_and_raw_bodies() {
    let app = router(bm25_state(ServeConfig::default()));
    let boundary = "XBOUNDARYX";
    let html =
        format!("<html><head><title>Glass</title></head><body><p>{REPORT}</p></body></html>");
    let mp = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.html\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{html}\r\n--{boundary}--\r\n"
    );
    let req = Request::post("/v1/extract")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(mp))
        .unwrap();
    let (s, v) = json(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "r.html");
    assert_eq!(v["title"], "Glass");
    assert!(!v["techniques"].as_array().unwrap().is_empty());

    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "text/markdown")
        .body(Body::from(format!("# Md title\n\n{REPORT}\n")))
        .unwrap();
    let (s, v) = json(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["title"], "Md title");
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_the_server_keeps_serving() {
    let app = router(bm25_state(ServeConfig {
        max_body: 1000,
        ..ServeConfig::default()
    }));
    let un = StatusCode::UNPROCESSABLE_ENTITY;
    // Empty body.
    assert_error(
        &json(&app, post_json("/v1/extract", "")).await,
        un,
        "validation",
    );
    // Invalid JSON, wrong fields, empty text.
    assert_error(
        &json(&app, post_json("/v1/extract", "{\"text\": ")).await,
        un,
        "validation",
    );
    assert_error(
        &json(&app, post_json("/v1/extract", "{\"txt\": \"a\"}")).await,
        un,
        "validation",
    );
    assert_error(
        &json(&app, post_json("/v1/extract", "{\"text\": \"  \"}")).await,
        un,
        "validation",
    );
    // Wrong or missing content type.
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from("xx"))
        .unwrap();
    assert_error(
        &json(&app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let req = Request::post("/v1/extract").body(Body::from("xx")).unwrap();
    assert_error(
        &json(&app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // Bad query.
    assert_error(
        &json(
            &app,
            post_json("/v1/extract?format=xml", "{\"text\": \"a b c\"}"),
        )
        .await,
        un,
        "validation",
    );
    assert_error(
        &json(
            &app,
            post_json("/v1/extract?threshold=2", "{\"text\": \"a b c\"}"),
        )
        .await,
        un,
        "validation",
    );
    // Declared too large (a 500 MB upload is refused from its Content-Length, unread).
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "application/pdf")
        .header(header::CONTENT_LENGTH, "500000000")
        .body(Body::from("%PDF-1.4"))
        .unwrap();
    assert_error(
        &json(&app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Streamed without a length: cut at the limit.
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = (0..100)
        .map(|_| Ok(axum::body::Bytes::from(vec![b'a'; 100])))
        .collect();
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    assert_error(
        &json(&app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // A PDF that is not one.
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "application/pdf")
        .body(Body::from("%PDF-1.7\nthis is not a pdf"))
        .unwrap();
    assert_error(&json(&app, req).await, un, "validation");
    // Multipart without a file part, and a broken multipart body.
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=B")
        .body(Body::from(
            "--B\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--B--\r\n",
        ))
        .unwrap();
    assert_error(&json(&app, req).await, un, "validation");
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=B")
        .body(Body::from("garbage"))
        .unwrap();
    assert_error(
        &json(&app, req).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // Still serving.
    let (s, _) = json(&app, get("/health")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn pdf_bomb_is_refused() {
    use std::io::Write;
    let app = router(bm25_state(ServeConfig::default()));
    // 100 streams of 3 MiB of zeros (about 3 KiB each deflated): 300 MiB once inflated,
    // past ttpmap_core's 256 MiB budget per PDF.
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 3 << 20]).unwrap();
    let stream = e.finish().unwrap();
    let mut pdf = b"%PDF-1.4\n".to_vec();
    for i in 0..100 {
        pdf.extend_from_slice(
            format!(
                "{} 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
                i + 1,
                stream.len()
            )
            .as_bytes(),
        );
        pdf.extend_from_slice(&stream);
        pdf.extend_from_slice(b"\nendstream\nendobj\n");
    }
    pdf.extend_from_slice(b"%%EOF\n");
    assert!(pdf.len() < 1 << 20);
    let req = Request::post("/v1/extract")
        .header(header::CONTENT_TYPE, "application/pdf")
        .body(Body::from(pdf))
        .unwrap();
    let got = json(&app, req).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(
        got.1["error"]
            .as_str()
            .unwrap()
            .contains("decompression bomb"),
        "{}",
        got.1
    );
    let (s, _) = json(&app, get("/health")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn full_queue_is_429_and_slow_requests_408() {
    let (state, started, release) = gate_state(ServeConfig {
        queue: 1,
        ..ServeConfig::default()
    });
    let app = router(state.clone());
    let body = serde_json::json!({"text": REPORT}).to_string();
    // Job 1 runs (blocked in the scorer), job 2 waits in the queue, job 3 is refused.
    let a = tokio::spawn({
        let app = app.clone();
        let body = body.clone();
        async move { json(&app, post_json("/v1/extract", &body)).await }
    });
    // Wait until job 1 is running (the scorer says so).
    let _started = tokio::task::spawn_blocking(move || {
        started.recv().unwrap();
        started
    })
    .await
    .unwrap();
    let b = tokio::spawn({
        let app = app.clone();
        let body = body.clone();
        async move { json(&app, post_json("/v1/extract", &body)).await }
    });
    while state.worker.depth() < 1 {
        tokio::task::yield_now().await;
    }
    let c = json(&app, post_json("/v1/extract", &body)).await;
    assert_error(&c, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    // The message says what is full, and /health counts the same waiting job.
    assert!(
        c.1["error"]
            .as_str()
            .unwrap()
            .starts_with("inference queue full: 1 of 1 jobs waiting"),
        "{}",
        c.1
    );
    let health = json(&app, get("/health")).await.1;
    assert_eq!(health["queue_depth"], 1, "{health}");
    assert_eq!(health["queue_capacity"], 1, "{health}");
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(a.await.unwrap().0, StatusCode::OK);
    assert_eq!(b.await.unwrap().0, StatusCode::OK);
    assert_eq!(state.metrics.requests("POST", "/v1/extract", 429), 1);
    assert_eq!(state.metrics.requests("POST", "/v1/extract", 200), 2);
}

#[tokio::test]
async fn request_timeout_is_408() {
    let (state, started, release) = gate_state(ServeConfig {
        timeout: Duration::from_millis(1),
        ..ServeConfig::default()
    });
    let app = router(state);
    // The scorer blocks until released, so the 1 ms limit always passes first.
    let got = json(
        &app,
        post_json(
            "/v1/extract",
            &serde_json::json!({"text": REPORT}).to_string(),
        ),
    )
    .await;
    assert_error(&got, StatusCode::REQUEST_TIMEOUT, "timeout");
    drop(started);
    let _ = release.send(());
}

fn bm25_with_auth(auth: super::auth::Auth) -> SharedState {
    bm25_state(ServeConfig {
        auth,
        ..ServeConfig::default()
    })
}

fn tokens() -> super::auth::Auth {
    super::auth::Auth {
        tokens: vec![super::auth::Token::parse("alice:alice-secret-1").unwrap()],
        open_writes: false,
    }
}

fn authed(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer alice-secret-1".parse().unwrap(),
    );
    req
}

fn review(id: i64, sentence: i64, technique: &str, decision: &str) -> Request<Body> {
    authed(post_json(
        &format!("/v1/reports/{id}/reviews"),
        &serde_json::json!({"sentence": sentence, "technique": technique, "decision": decision})
            .to_string(),
    ))
}

/// Stores REPORT and returns (report id, report JSON).
async fn store(app: &Router) -> (i64, Value) {
    let body = serde_json::json!({"text": REPORT, "title": "Stored"}).to_string();
    let (s, v) = json(app, authed(post_json("/v1/reports", &body))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (v["id"].as_i64().unwrap(), v)
}

fn status_of(report: &Value, sentence: usize, technique: &str) -> Option<String> {
    report["sentences"][sentence]["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["technique"] == technique)
        .map(|t| t["status"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn reports_store_review_and_export() {
    let state = bm25_with_auth(tokens());
    let app = router(state.clone());
    let (id, v) = store(&app).await;
    assert_eq!(v["created_by"], "alice");
    assert_eq!(v["sentences"].as_array().unwrap().len(), 4);
    assert_eq!(status_of(&v, 1, "T1003.001").as_deref(), Some("predicted"));

    // Accept the LSASS prediction, reject the scheduled task, add Registry Run Keys.
    let (s, r) = json(&app, review(id, 1, "T1003.001", "accept")).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["who"], "alice");
    assert!(r["at"].as_str().unwrap().ends_with('Z'));
    let (s, _) = json(&app, review(id, 2, "T1053.005", "reject")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = json(&app, review(id, 2, "T1547.001", "add")).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, v) = json(&app, get(&format!("/v1/reports/{id}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status_of(&v, 1, "T1003.001").as_deref(), Some("accepted"));
    assert_eq!(status_of(&v, 2, "T1053.005").as_deref(), Some("rejected"));
    assert_eq!(status_of(&v, 2, "T1547.001").as_deref(), Some("added"));
    assert_eq!(v["reviews"].as_array().unwrap().len(), 3);
    let summary: Vec<&str> = v["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["technique"].as_str().unwrap())
        .collect();
    assert!(
        summary.contains(&"T1547.001") && !summary.contains(&"T1053.005"),
        "{summary:?}"
    );

    // Exports of the reviewed result.
    let (s, x) = json(&app, get(&format!("/v1/reports/{id}/export?format=json"))).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = x["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["technique"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"T1003.001") && ids.contains(&"T1547.001") && !ids.contains(&"T1053.005")
    );
    let (s, layer) = json(
        &app,
        get(&format!("/v1/reports/{id}/export?format=navigator")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["techniqueID"] == "T1547.001"));
    let (s, bytes, ct) = send(&app, get(&format!("/v1/reports/{id}/export?format=stix"))).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ct.as_deref(), Some("application/stix+json;version=2.1"));
    let (s, event) = json(&app, get(&format!("/v1/reports/{id}/export?format=misp"))).await;
    assert_eq!(s, StatusCode::OK, "{event}");
    assert!(event["Event"]["Tag"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"]
            .as_str()
            .unwrap()
            .starts_with("misp-galaxy:mitre-attack-pattern=\"")
            && t["name"].as_str().unwrap().ends_with(" - T1547.001\"")));

    // The list.
    let (s, l) = json(&app, get("/v1/reports")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["reports"][0]["id"], id);
    assert_eq!(l["reports"][0]["reviews"], 3);

    // The feedback loop: accepted + added, minus rejected.
    let docs = super::training::reviewed_documents(&state.db).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].id, format!("report-{id}"));
    let labels = |i: usize| -> Vec<String> {
        docs[0].sentences[i]
            .labels
            .iter()
            .map(|l| l.to_string())
            .collect()
    };
    assert_eq!(labels(1), vec!["T1003.001"]);
    assert_eq!(labels(2), vec!["T1547.001"]);
    assert!(labels(0).is_empty() && labels(3).is_empty());
    let jsonl = super::training::to_jsonl(&docs);
    assert_eq!(jsonl.lines().count(), 4);
    let line: Value = serde_json::from_str(jsonl.lines().nth(2).unwrap()).unwrap();
    assert_eq!(line["doc_id"], format!("report-{id}"));
    assert_eq!(line["labels"], serde_json::json!(["T1547.001"]));
    assert_eq!(state.db.integrity_check(true).unwrap(), "ok");
}

#[tokio::test]
async fn review_errors_and_write_policy() {
    let app = router(bm25_with_auth(tokens()));
    let (id, _) = store(&app).await;
    let un = StatusCode::UNPROCESSABLE_ENTITY;
    // Unknown report, sentence, technique; accept of something never predicted.
    assert_error(
        &json(&app, review(id + 100, 0, "T1003.001", "add")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json(&app, review(id, 99, "T1003.001", "add")).await,
        un,
        "validation",
    );
    assert_error(
        &json(&app, review(id, 0, "T9999.999", "add")).await,
        un,
        "validation",
    );
    assert_error(
        &json(&app, review(id, 0, "S0002", "add")).await,
        un,
        "validation",
    );
    assert_error(
        &json(&app, review(id, 3, "T1003.001", "accept")).await,
        un,
        "validation",
    );
    let bad = authed(post_json(
        &format!("/v1/reports/{id}/reviews"),
        "{\"sentence\": 0, \"technique\": \"T1003.001\", \"decision\": \"maybe\"}",
    ));
    assert_error(&json(&app, bad).await, un, "validation");
    assert_error(
        &json(&app, get("/v1/reports/999")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json(&app, get("/v1/reports/abc")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &json(&app, get(&format!("/v1/reports/{id}/export?format=xml"))).await,
        un,
        "validation",
    );
    // Writes without / with a wrong token.
    let body = serde_json::json!({"text": REPORT}).to_string();
    assert_error(
        &json(&app, post_json("/v1/reports", &body)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let mut wrong = post_json("/v1/reports", &body);
    wrong.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer nope-nope-nope".parse().unwrap(),
    );
    assert_error(
        &json(&app, wrong).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // No token configured: read-only, 403 saying how to enable writes.
    let ro = router(bm25_with_auth(super::auth::Auth::default()));
    let got = json(&ro, post_json("/v1/reports", &body)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "read_only");
    assert!(got.1["error"].as_str().unwrap().contains("--token"));
    let (s, _) = json(&ro, get("/v1/reports")).await;
    assert_eq!(s, StatusCode::OK);
    // --open-writes: anonymous.
    let open = router(bm25_with_auth(super::auth::Auth {
        tokens: vec![],
        open_writes: true,
    }));
    let (s, v) = json(&open, post_json("/v1/reports", &body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["created_by"], "anonymous");
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let app = router(bm25_state(ServeConfig::default()));
    let resp = app.clone().oneshot(get("/health")).await.unwrap();
    assert!(resp
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
    let app = router(bm25_state(ServeConfig {
        cors: Some("https://analyst.example.org".into()),
        ..ServeConfig::default()
    }));
    let resp = app
        .clone()
        .oneshot(Request::options("/v1/extract").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://analyst.example.org"
    );
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = router(bm25_state(ServeConfig::default()));
    let (s, doc) = json(&app, get("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let table = super::routes();
    for spec in &table {
        for m in spec.methods {
            assert!(
                paths.get(spec.path).and_then(|p| p.get(*m)).is_some(),
                "{} {} is routed but not in openapi.json",
                m.to_uppercase(),
                spec.path
            );
        }
    }
    // And nothing documented that is not routed.
    for (path, item) in paths {
        let spec = table.iter().find(|s| s.path == path);
        let spec = spec.unwrap_or_else(|| panic!("{path} documented but not routed"));
        for m in item.as_object().unwrap().keys() {
            assert!(
                spec.methods.contains(&m.as_str()),
                "{m} {path} documented but not routed"
            );
        }
    }
    // Each table entry really answers its methods (a known route, not the 404/405 fallback).
    let state = bm25_state(ServeConfig::default());
    let app = router(state.clone());
    for spec in &table {
        let path = spec.path.replace("{id}", "1");
        for m in spec.methods {
            let req = Request::builder()
                .method(m.to_uppercase().as_str())
                .uri(&path)
                .body(Body::empty())
                .unwrap();
            let _ = send(&app, req).await;
            let routed: u64 = [200, 201, 400, 401, 403, 404, 415, 422, 501]
                .iter()
                .map(|&c| state.metrics.requests(&m.to_uppercase(), spec.path, c))
                .sum();
            assert!(routed > 0, "{m} {} did not reach its route", spec.path);
        }
    }
}

#[tokio::test]
async fn metrics_and_ui_assets() {
    let app = router(bm25_state(ServeConfig::default()));
    let _ = send(&app, get("/health")).await;
    let _ = send(&app, get("/nowhere")).await;
    let body = serde_json::json!({"text": REPORT}).to_string();
    let (s, _, _) = send(&app, post_json("/v1/extract", &body)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, text, ct) = send(&app, get("/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.unwrap().starts_with("text/plain"));
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(
            "ttpmap_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("route=\"unmatched\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("ttpmap_inference_seconds_count 1"), "{text}");
    assert!(text.contains("ttpmap_inference_queue_depth 0"), "{text}");

    let (s, html, ct) = send(&app, get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.unwrap().starts_with("text/html"));
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("/ui/app.js") && !html.contains("http://") && !html.contains("https://"));
    let (s, _, ct) = send(&app, get("/ui/app.js")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ct.unwrap().starts_with("text/javascript"));
}

/// A reranker stub: score = number of query words in the text.
struct WordOverlap;

impl super::rerank::RerankService for WordOverlap {
    fn name(&self) -> &str {
        "word-overlap"
    }
    fn rerank(
        &self,
        query: &str,
        texts: &[&str],
    ) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>> {
        let q: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        Ok(texts
            .iter()
            .map(|t| {
                t.split_whitespace()
                    .filter(|w| q.contains(&w.to_lowercase()))
                    .count() as f32
            })
            .collect())
    }
}

#[tokio::test]
async fn rerank_tei_shape_and_501_without_model() {
    let app = router(bm25_state(ServeConfig::default()));
    let body = r#"{"query": "dump lsass memory", "texts": ["nothing", "dump lsass memory now"]}"#;
    assert_error(
        &json(&app, post_json("/v1/rerank", body)).await,
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
    );

    let catalog = catalog();
    let idx = index(&catalog);
    let engine = Engine {
        scorer: Box::new(Bm25Scorer::new(idx.clone())),
        catalog,
        default_threshold: 0.05,
        reranker: Some(Arc::new(WordOverlap)),
    };
    let app = router(Arc::new(AppState::new(
        ServeConfig::default(),
        engine,
        Arc::new(idx),
        temp_db(),
    )));
    let (s, v) = json(&app, post_json("/v1/rerank", body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // "dump lsass memory now" has 3 query words, "nothing" 0.
    assert_eq!(
        v,
        serde_json::json!([{"index": 1, "score": 3.0}, {"index": 0, "score": 0.0}])
    );
    let with_text = r#"{"query": "a", "texts": ["a", "b"], "return_text": true}"#;
    let (_, v) = json(&app, post_json("/v1/rerank", with_text)).await;
    assert_eq!(v[0]["text"], "a");
    assert_error(
        &json(
            &app,
            post_json("/v1/rerank", r#"{"query": "a", "texts": []}"#),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
    );
    let (_, h) = json(&app, get("/health")).await;
    assert_eq!(h["reranker"], "word-overlap");
}

/// A scorer whose first call panics (a model bug); later calls work.
struct PanicOnceScorer(std::sync::atomic::AtomicBool);

impl SentenceScorer for PanicOnceScorer {
    fn name(&self) -> &str {
        "panic-once"
    }
    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("simulated model bug");
        }
        Ok(sentences.iter().map(|_| Vec::new()).collect())
    }
}

#[tokio::test]
async fn a_panicking_model_fails_one_request_and_the_worker_keeps_serving() {
    let catalog = catalog();
    let idx = index(&catalog);
    let engine = Engine {
        scorer: Box::new(PanicOnceScorer(std::sync::atomic::AtomicBool::new(false))),
        catalog,
        default_threshold: 0.5,
        reranker: None,
    };
    let state = Arc::new(AppState::new(
        ServeConfig::default(),
        engine,
        Arc::new(idx),
        temp_db(),
    ));
    let app = router(state);
    let body = serde_json::json!({"text": REPORT}).to_string();
    let (s, v) = json(&app, post_json("/v1/extract", &body)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["error_type"], "internal");
    let (s, v) = json(&app, post_json("/v1/extract", &body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A path segment that is not valid percent-encoded UTF-8 is a JSON 400 like every error.
#[tokio::test]
async fn undecodable_path_ids_are_json_errors() {
    let app = router(bm25_state(ServeConfig::default()));
    for uri in [
        "/v1/reports/%FF",
        "/v1/techniques/%FF",
        "/v1/reports/%FF/export",
    ] {
        let (s, v) = json(&app, get(uri)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error_type"], "bad_request", "{uri}");
    }
}

/// A report of `n` scoreable sentences.
fn long_report(n: usize) -> String {
    (0..n)
        .map(|i| format!("The actors ran encoded PowerShell scripts on host number {i}."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn abandoned_extraction_stops_after_one_batch_and_frees_the_worker() {
    let (state, started, release) = gate_state(ServeConfig::default());
    let app = router(state.clone());
    // Three batches of work; the requester goes away while the first one runs.
    let n = ttpmap_core::pipeline::CANCEL_CHECK_SENTENCES * 3;
    let long = serde_json::json!({ "text": long_report(n) }).to_string();
    let a = tokio::spawn({
        let app = app.clone();
        async move { json(&app, post_json("/v1/extract", &long)).await }
    });
    let started = tokio::task::spawn_blocking(move || {
        started.recv().unwrap();
        started
    })
    .await
    .unwrap();
    // The client disconnects (hyper drops the request future; so does a 408).
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(state.metrics.cancelled(), 0);
    release.send(()).unwrap();
    // The next scorer call is the next request's, not batch 2 of the abandoned one.
    let b = tokio::spawn({
        let app = app.clone();
        let body = serde_json::json!({ "text": REPORT }).to_string();
        async move { json(&app, post_json("/v1/extract", &body)).await }
    });
    let started = tokio::task::spawn_blocking(move || {
        started.recv().unwrap();
        started
    })
    .await
    .unwrap();
    assert_eq!(
        state.metrics.cancelled(),
        1,
        "the abandoned extraction was counted as cancelled before the next job started"
    );
    release.send(()).unwrap();
    let got = b.await.unwrap();
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    // Exactly two scorer calls in all: one batch of the abandoned job, one of the next.
    assert!(started.try_recv().is_err());
    let (_, metrics, _) = send(&app, get("/metrics")).await;
    assert!(String::from_utf8(metrics)
        .unwrap()
        .contains("ttpmap_cancelled_jobs_total 1\n"));
}

#[tokio::test]
async fn full_ingestion_slots_say_so_and_health_counts_them() {
    let state = bm25_state(ServeConfig::default());
    let app = router(state.clone());
    let held = state.ingest.hold_all_for_test();
    let got = json(
        &app,
        post_json(
            "/v1/extract",
            &serde_json::json!({ "text": REPORT }).to_string(),
        ),
    )
    .await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    let msg = got.1["error"].as_str().unwrap();
    assert!(
        msg.starts_with("ingestion slots full: 4 of 4 uploads being read"),
        "{msg}"
    );
    let health = json(&app, get("/health")).await.1;
    assert_eq!(health["ingest_active"], 4, "{health}");
    assert_eq!(health["ingest_capacity"], 4, "{health}");
    assert_eq!(health["queue_depth"], 0, "{health}");
    drop(held);
    let health = json(&app, get("/health")).await.1;
    assert_eq!(health["ingest_active"], 0, "{health}");
    let got = json(
        &app,
        post_json(
            "/v1/extract",
            &serde_json::json!({ "text": REPORT }).to_string(),
        ),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

#[tokio::test]
async fn defanged_indicators_are_served_and_exported_as_written() {
    let app = router(bm25_state(ServeConfig::default()));
    let text =
        "The implant dumped LSASS memory with Mimikatz and sent it to hxxps://update-cdn[.]top/u.";
    let body = serde_json::json!({ "text": text }).to_string();
    let (s, v) = json(&app, post_json("/v1/extract?sentences=all", &body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["document"]["sentences"][0]["text"], text, "{v}");
    assert_eq!(v["sentences"][0]["text"], text, "{v}");
    for format in ["csv", "stix", "misp"] {
        let (s, bytes, _) = send(
            &app,
            post_json(&format!("/v1/extract?format={format}"), &body),
        )
        .await;
        let out = String::from_utf8_lossy(&bytes);
        assert_eq!(s, StatusCode::OK, "{out}");
        assert!(out.contains("hxxps://update-cdn[.]top"), "{format}: {out}");
        assert!(!out.contains("https://update-cdn.top"), "{format}: {out}");
    }
}

#[tokio::test]
async fn sentences_all_is_capped_and_says_so() {
    let state = bm25_state(ServeConfig {
        max_sentences: 2,
        ..ServeConfig::default()
    });
    let app = router(state);
    let body = serde_json::json!({ "text": REPORT }).to_string();
    let (status, v) = json(&app, post_json("/v1/extract?sentences=all", &body)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d = &v["document"];
    assert_eq!(d["sentences"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(d["sentence_count"], 4, "{v}");
    assert_eq!(d["truncated"], true, "{v}");
    assert_eq!(d["sentences_limit"], 2, "{v}");
    assert_eq!(v["sentence_count"], 4, "{v}");
    assert!(!v["techniques"].as_array().unwrap().is_empty(), "{v}");
    // Under the cap: everything, not truncated; without the flag: no `document`.
    let app = router(bm25_state(ServeConfig::default()));
    let (_, v) = json(&app, post_json("/v1/extract?sentences=all", &body)).await;
    assert_eq!(v["document"]["sentences"].as_array().unwrap().len(), 4);
    assert_eq!(v["document"]["truncated"], false);
    let (_, v) = json(&app, post_json("/v1/extract", &body)).await;
    assert!(v.get("document").is_none(), "{v}");
}

fn with_headers(mut req: Request<Body>, headers: &[(&str, &str)]) -> Request<Body> {
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

#[tokio::test]
async fn unknown_hosts_are_refused_unless_listed() {
    let app = router(bm25_state(ServeConfig {
        allow_hosts: vec!["ttpmap.example.org".into()],
        ..ServeConfig::default()
    }));
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST",
        "app.localhost:1",
        "[::1]:8080",
        "10.1.2.3",
        "ttpmap.example.org",
        "TTPMAP.example.org:443",
    ] {
        let got = json(&app, with_headers(get("/health"), &[("host", host)])).await;
        assert_eq!(got.0, StatusCode::OK, "{host}: {}", got.1);
    }
    // A rebound name: refused on reads and writes, with JSON.
    for req in [
        get("/health"),
        get("/v1/reports"),
        post_json(
            "/v1/extract",
            &serde_json::json!({ "text": REPORT }).to_string(),
        ),
    ] {
        let got = json(&app, with_headers(req, &[("host", "evil.example:8080")])).await;
        assert_error(&got, StatusCode::MISDIRECTED_REQUEST, "unknown_host");
        assert!(got.1["error"].as_str().unwrap().contains("--allow-host"));
    }
    // `*` accepts any name.
    let app = router(bm25_state(ServeConfig {
        allow_hosts: vec!["*".into()],
        ..ServeConfig::default()
    }));
    let got = json(
        &app,
        with_headers(get("/health"), &[("host", "evil.example")]),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_writes_are_refused_even_with_a_token_or_open_writes() {
    let body = serde_json::json!({ "text": REPORT }).to_string();
    for auth in [
        tokens(),
        super::auth::Auth {
            tokens: vec![],
            open_writes: true,
        },
    ] {
        let state = bm25_state(ServeConfig {
            auth: auth.clone(),
            allow_origins: vec!["https://ui.example.org".into()],
            ..ServeConfig::default()
        });
        let app = router(state);
        let write = || authed(post_json("/v1/reports", &body));
        // A page on another origin: form post, no-cors fetch, sandboxed ("null") page.
        for headers in [
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ][..],
            &[("host", "127.0.0.1:8080"), ("origin", "null")][..],
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9999"),
            ][..],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")][..],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-site")][..],
        ] {
            let got = json(&app, with_headers(write(), headers)).await;
            assert_error(&got, StatusCode::FORBIDDEN, "cross_origin");
        }
        // The server's own page, an allowed origin, and non-browser clients: written.
        for headers in [
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ][..],
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://ui.example.org"),
            ][..],
            &[("host", "127.0.0.1:8080"), ("sec-fetch-site", "none")][..],
            &[("host", "127.0.0.1:8080")][..],
        ] {
            let got = json(&app, with_headers(write(), headers)).await;
            assert_eq!(got.0, StatusCode::CREATED, "{headers:?}: {}", got.1);
        }
        // `--cors '*'` keeps the stateless routes open to every origin, not the writes.
        let open = router(bm25_state(ServeConfig {
            auth: auth.clone(),
            cors: Some("*".into()),
            ..ServeConfig::default()
        }));
        let from_evil = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ];
        let got = json(
            &open,
            with_headers(post_json("/v1/extract", &body), &from_evil),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        let got = json(&open, with_headers(write(), &from_evil)).await;
        assert_error(&got, StatusCode::FORBIDDEN, "cross_origin");
        // Reads from other origins are not writes.
        let got = json(
            &app,
            with_headers(get("/v1/reports"), &[("origin", "http://evil.example")]),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn review_add_of_a_revoked_id_is_remapped_and_deprecated_refused() {
    let state = bm25_with_auth(tokens());
    let app = router(state);
    let (id, _) = store(&app).await;
    let got = json(&app, review(id, 0, "T1086", "add")).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert_eq!(got.1["technique"], "T1059.001", "{}", got.1);
    assert_eq!(got.1["remapped_from"], "T1086", "{}", got.1);
    // Stored and exported under the replacement.
    let (_, report) = json(&app, get(&format!("/v1/reports/{id}"))).await;
    assert!(report.to_string().contains("T1059.001"));
    assert!(!report["reviews"].to_string().contains("T1086"), "{report}");
    let got = json(&app, review(id, 0, "T1054", "add")).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(
        got.1["error"]
            .as_str()
            .unwrap()
            .contains("T1054 is deprecated"),
        "{}",
        got.1
    );
    // A current id: no `remapped_from`.
    let got = json(&app, review(id, 0, "T1053.005", "add")).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert!(got.1.get("remapped_from").is_none(), "{}", got.1);
}

#[tokio::test]
async fn a_timed_out_extraction_is_skipped_or_stopped_and_frees_the_worker() {
    let (state, started, release) = gate_state(ServeConfig::default());
    let n = ttpmap_core::pipeline::CANCEL_CHECK_SENTENCES * 3;
    let doc = ttpmap_core::ingest::from_text(
        "<text>",
        &long_report(n),
        ttpmap_core::ingest::Format::Text,
    )
    .unwrap();
    // The scorer blocks until released, so the time-out (what the 408 guard applies to the
    // handler) always passes first: the job is abandoned waiting or inside its first batch.
    let out = tokio::time::timeout(
        Duration::from_millis(1),
        state.worker.extract(doc, Default::default()),
    )
    .await;
    assert!(out.is_err(), "the time-out passed first");
    release.send(()).unwrap();
    // A job behind it runs once the abandoned one is out of the way.
    let marker = state.worker.run(|_, _| 42).await.unwrap();
    assert_eq!(marker, 42);
    assert_eq!(state.metrics.cancelled(), 1);
    assert_eq!(state.worker.depth(), 0);
    // At most one of its three batches reached the scorer.
    let batches = std::iter::from_fn(|| started.try_recv().ok()).count();
    assert!(batches <= 1, "{batches} batches scored after the time-out");
}

/// A Markdown report with a heading, a list and an IOC table.
const MD_REPORT: &str = "# Lantern\n\n## Execution\n\n\
The actors ran encoded PowerShell commands and scripts on the host. They dumped credentials from LSASS process memory with Mimikatz.\n\n\
- A scheduled task created with schtasks ran the loader at every reboot.\n\
- PowerShell scripts ran on the host.\n\n\
| Type | Indicator | Notes |\n|---|---|---|\n\
| File | powershell-loader.ps1 | PowerShell scripts loader |\n\
| IPv4 | 185.243.115[.]42 | Mimikatz credentials host |\n";

#[tokio::test]
async fn tactics_are_listed_and_sentences_keep_their_blocks() {
    let app = router(bm25_with_auth(tokens()));
    let (s, t) = json(&app, get("/v1/tactics")).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    // The test bundle has no matrix: tactics by id.
    let ids: Vec<&str> = t["tactics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["TA0002", "TA0003", "TA0006"]);
    assert_eq!(t["tactics"][0]["shortname"], "execution");
    assert_eq!(t["tactics"][0]["name"], "Execution");

    let body = serde_json::json!({"text": MD_REPORT, "format": "markdown"}).to_string();
    let (s, v) = json(&app, authed(post_json("/v1/reports", &body))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sentences = v["sentences"].as_array().unwrap();
    let kinds: Vec<(&str, u64)> = sentences
        .iter()
        .map(|s| (s["block"].as_str().unwrap(), s["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("heading", 0),
            ("heading", 2),
            ("paragraph", 4),
            ("paragraph", 4),
            ("list_item", 6),
            ("list_item", 7),
            ("table_row", 9),
            ("table_row", 10),
            ("table_row", 11),
        ],
        "{v}"
    );
    // The IOC rows name PowerShell and Mimikatz in their notes but carry no technique.
    for row in &sentences[7..] {
        assert!(row["techniques"].as_array().unwrap().is_empty(), "{row}");
    }
    assert!(!sentences[2]["techniques"].as_array().unwrap().is_empty());
    // The stored report reads back the same; the preview (extract) says the same.
    let id = v["id"].as_i64().unwrap();
    let (_, again) = json(&app, get(&format!("/v1/reports/{id}"))).await;
    assert_eq!(again["sentences"], v["sentences"]);
    let (s, x) = json(&app, post_json("/v1/extract?sentences=all", &body)).await;
    assert_eq!(s, StatusCode::OK, "{x}");
    let doc = x["document"]["sentences"].as_array().unwrap();
    assert_eq!(doc[4]["block"], "list_item");
    assert_eq!(doc[4]["line"], 6);
    assert!(x["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["sentence"].as_u64().unwrap() < 7));
}
