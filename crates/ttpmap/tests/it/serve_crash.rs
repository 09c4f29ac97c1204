//! Crash safety of the report store: SIGKILL `ttpmap serve` in the middle of a stream of
//! review writes, restart it on the same database, and check that every write the server
//! acknowledged (201) is there and that SQLite's integrity check passes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{agent, get, post_json, Server};
use serde_json::Value;

const SECRET: &str = "crash-test-secret";

#[test]
fn acknowledged_reviews_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.db");
    let cache = dir.path().join("cache");
    let token = format!("tester:{SECRET}");
    let mut server = Server::start(&cache, &db, &token, &[]);
    let http = agent();

    // A stored report to review.
    let text = "The actors dumped credentials from LSASS memory with Mimikatz. \
                They created a scheduled task for persistence. \
                PowerShell scripts downloaded the next stage. \
                Files were archived with 7-Zip before exfiltration.";
    let (s, body) = post_json(
        &http,
        &server.url("/v1/reports"),
        SECRET,
        &serde_json::json!({"text": text, "title": "crash"}).to_string(),
    )
    .unwrap();
    assert_eq!(s, 201, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let id = report["id"].as_i64().unwrap();
    let sentences = report["sentences"].as_array().unwrap().len() as i64;
    let (_, list) = get(&http, &server.url("/v1/techniques?limit=40"));
    let list: Value = serde_json::from_str(&list).unwrap();
    let techniques: Vec<String> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    // Two writers stream "add" decisions; every 201 is recorded with the review it returned.
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url(&format!("/v1/reports/{id}/reviews"));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (acked, count, stop, url, techniques) = (
                acked.clone(),
                count.clone(),
                stop.clone(),
                url.clone(),
                techniques.clone(),
            );
            std::thread::spawn(move || {
                let http = agent();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) && i < 100_000 {
                    let body = serde_json::json!({
                        "sentence": (i as i64 + w) % sentences,
                        "technique": techniques[(i * 2 + w as usize) % techniques.len()],
                        "decision": "add",
                    });
                    i += 1;
                    match post_json(&http, &url, SECRET, &body.to_string()) {
                        Ok((201, text)) => {
                            acked
                                .lock()
                                .unwrap()
                                .push(serde_json::from_str(&text).unwrap());
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, text)) => panic!("unexpected {status}: {text}"),
                        // The server is gone (killed): stop writing.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    // Kill once enough writes are acknowledged, while both writers are still sending.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count.load(Ordering::SeqCst) < 40 {
        // A writer that stopped early (a panic on an unexpected status) must fail the test,
        // not hang it.
        assert!(
            !writers.iter().any(|w| w.is_finished()),
            "a writer stopped before 40 acknowledged writes"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 40 writes acknowledged in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);

    // Restart on the same database: every acknowledged review is there, unchanged.
    let server = Server::start(&cache, &db, &token, &[]);
    let (s, body) = get(&http, &server.url(&format!("/v1/reports/{id}")));
    assert_eq!(s, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    let reviews = stored["reviews"].as_array().unwrap();
    for a in &acked {
        assert!(
            reviews.iter().any(|r| r == a),
            "acknowledged review {a} is missing after the crash"
        );
    }
    // The server still takes writes after the restart.
    let (s, body) = post_json(
        &http,
        &url.replace(&url[..url.find("/v1").unwrap()], &server.base),
        SECRET,
        &serde_json::json!({"sentence": 0, "technique": techniques[0], "decision": "add"})
            .to_string(),
    )
    .unwrap();
    assert_eq!(s, 201, "{body}");
    drop(server);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM reviews", [], |r| r.get(0))
        .unwrap();
    assert!(
        n as usize > acked.len(),
        "{n} rows for {} acknowledged + 1",
        acked.len()
    );
}
