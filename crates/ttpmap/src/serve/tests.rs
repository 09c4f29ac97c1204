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
  "external_references": [{"source_name": "mitre-attack", "external_id": "T1547.001"}]}
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
    Arc::new(AppState::new(config, engine, Arc::new(idx)))
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
        Arc::new(AppState::new(config, engine, Arc::new(idx))),
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
