//! End-to-end tests of the review UI in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, driven over WebDriver with fantoccini):
//! - [`review_ui_upload_review_export`]: upload a report file, accept one prediction, reject
//!   one, add a technique, export JSON / Navigator / STIX, and check the exported JSON;
//! - [`review_workbench`]: the report keeps its headings, lists and IOC table; confidence
//!   bands; the matrix view (tactic columns in ATT&CK order, cells by band and review state,
//!   a click jumps to the evidence and cycles); keys j/k/a/r; the progress count; "unreviewed
//!   only"; "next unreviewed"; bulk accept above a confidence; CSV and Markdown exports; and
//!   the preview (no stored report): names and tactics, a real title, Markdown as blocks,
//!   disabled exports.
//!
//! Each saves a screenshot of where it ended under `target/`. With `TTPMAP_SCREENSHOTS=DIR`
//! (relative to the workspace root, e.g. `docs`) the workbench test also writes
//! `DIR/ui-review.png` and `DIR/ui-matrix.png`, the pictures the README shows; CI leaves it
//! unset, so tracked files are never rewritten by a test run.
//!
//! Skipped (with a message) only when chromedriver is missing and `$CI` is unset; under CI
//! it must run (`.ci/run` installs the packages).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::Server;
use fantoccini::{ClientBuilder, Locator};
use serde_json::Value;

const SECRET: &str = "browser-test-secret";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn chromium_binary() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

/// Starts chromedriver on a free port and waits (bounded number of tries) until it listens.
fn start_chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (driver, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("chromedriver did not listen on port {port}");
}

/// A server, a chromedriver and a WebDriver session on them; `None` when the test is skipped.
struct Session {
    server: Server,
    client: fantoccini::Client,
    dir: tempfile::TempDir,
    _driver: Driver,
}

async fn start_session(window: (u32, u32)) -> Option<Session> {
    if !Path::new(CHROMEDRIVER).is_file() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{CHROMEDRIVER} is missing under CI: .ci/run installs chromium and chromium-driver"
            );
        }
        eprintln!(
            "SKIPPED serve_browser: {CHROMEDRIVER} not found (apt-get install chromium chromium-driver)"
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("cache"),
        &dir.path().join("reports.db"),
        &format!("analyst:{SECRET}"),
        &[],
    );
    let (driver, port) = start_chromedriver();
    let profile = dir.path().join("chromium-profile");
    let mut chrome = serde_json::json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", format!("--window-size={},{}", window.0, window.1),
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Some(bin) = chromium_binary() {
        chrome["binary"] = Value::String(bin.to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), chrome);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless Chromium");
    Some(Session {
        server,
        client: c,
        dir,
        _driver: driver,
    })
}

impl Session {
    /// Screenshots whatever happened to `target/NAME`, ends the session, then fails the test
    /// when `result` is an error.
    async fn finish(self, name: &str, result: Result<(), String>) {
        if let Ok(png) = self.client.screenshot().await {
            let out = target_dir().join(name);
            let _ = std::fs::create_dir_all(target_dir());
            std::fs::write(&out, png).unwrap();
            eprintln!("screenshot: {}", out.display());
        }
        let _ = self.client.close().await;
        drop(self.server);
        drop(self.dir);
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_ui_upload_review_export() {
    let Some(s) = start_session((1400, 1000)).await else {
        return;
    };
    let result = drive(&s.client, &s.server, s.dir.path()).await;
    s.finish("serve-browser.png", result).await;
}

async fn text_prop(c: &fantoccini::Client, css: &str) -> String {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.prop("textContent").await.unwrap().unwrap_or_default()
}

/// Waits for the status line to contain `needle` (fantoccini's wait: bounded by its timeout).
async fn wait_status(c: &fantoccini::Client, needle: &str) -> Result<(), String> {
    let xpath = format!("//*[@id='status'][contains(., '{needle}')]");
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(&xpath))
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "status never said {needle:?}: {e}; it says {:?}",
                futures_status(c)
            )
        })
}

fn futures_status(_c: &fantoccini::Client) -> &'static str {
    "(see the screenshot)"
}

/// Selects the `n`th highlighted sentence; returns its index and its first technique.
async fn select_sentence(c: &fantoccini::Client, n: usize) -> Result<(i64, String), String> {
    let sentences = c
        .find_all(Locator::Css("#report-text .sentence.has"))
        .await
        .map_err(|e| e.to_string())?;
    let s = sentences
        .get(n)
        .ok_or_else(|| format!("fewer than {} highlighted sentences", n + 1))?;
    let index: i64 = s
        .attr("data-index")
        .await
        .map_err(|e| e.to_string())?
        .unwrap()
        .parse()
        .unwrap();
    s.click().await.map_err(|e| e.to_string())?;
    let panel_tech = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#sentence-panel .tech"))
        .await
        .map_err(|e| e.to_string())?;
    let technique = panel_tech
        .attr("data-technique")
        .await
        .map_err(|e| e.to_string())?
        .unwrap();
    Ok((index, technique))
}

async fn click_review(c: &fantoccini::Client, class: &str, technique: &str) -> Result<(), String> {
    let css = format!("#sentence-panel button.{class}[data-technique='{technique}']");
    c.find(Locator::Css(&css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())
}

async fn export(c: &fantoccini::Client, which: &str) -> Result<Value, String> {
    c.find(Locator::Id(&format!("export-{which}")))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    wait_status(c, &format!("Exported {which}")).await?;
    let text = text_prop(c, "#export-output").await;
    serde_json::from_str(&text).map_err(|e| format!("export {which} is not JSON: {e}: {text}"))
}

async fn drive(c: &fantoccini::Client, server: &Server, tmp: &Path) -> Result<(), String> {
    c.goto(&server.url("/")).await.map_err(|e| e.to_string())?;
    // The token field (kept in localStorage), the title, and a file upload.
    c.find(Locator::Id("token"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(SECRET)
        .await
        .map_err(|e| e.to_string())?;
    c.find(Locator::Id("title"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("Glass Lantern (browser test)")
        .await
        .map_err(|e| e.to_string())?;
    let report = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/reports/operation-glass-lantern.md")
        .canonicalize()
        .unwrap();
    let upload = tmp.join("operation-glass-lantern.md");
    std::fs::copy(&report, &upload).unwrap();
    c.find(Locator::Id("file"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(&upload.display().to_string())
        .await
        .map_err(|e| e.to_string())?;
    c.find(Locator::Id("submit"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    wait_status(c, "Stored as report").await?;
    let stored_token: Value = c
        .execute("return localStorage.getItem('ttpmap.token');", vec![])
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(stored_token, SECRET);
    let tactics = c
        .find_all(Locator::Css("#tactics .tactic"))
        .await
        .map_err(|e| e.to_string())?;
    assert!(!tactics.is_empty(), "no tactic groups");

    // Accept the first highlighted sentence's top technique.
    let (acc_s, acc_t) = select_sentence(c, 0).await?;
    click_review(c, "accept", &acc_t).await?;
    wait_status(c, &format!("accept {acc_t} on sentence {acc_s}: saved")).await?;
    // Reject the second one's.
    let (rej_s, rej_t) = select_sentence(c, 1).await?;
    click_review(c, "reject", &rej_t).await?;
    wait_status(c, &format!("reject {rej_t} on sentence {rej_s}: saved")).await?;
    // Add Registry Run Keys on the third.
    let (add_s, _) = select_sentence(c, 2).await?;
    c.find(Locator::Id("add-technique"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("T1547.001")
        .await
        .map_err(|e| e.to_string())?;
    c.find(Locator::Id("add-button"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    wait_status(c, &format!("add T1547.001 on sentence {add_s}: saved")).await?;
    // The rejected sentence is no longer highlighted for that technique; the slider filters.
    let slider = c
        .find(Locator::Id("slider"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        slider
            .prop("value")
            .await
            .map_err(|e| e.to_string())?
            .as_deref(),
        Some("0")
    );

    // Exports of the reviewed result.
    let x = export(c, "json").await?;
    let sentence = |i: i64| {
        x["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sentence"] == i)
            .cloned()
    };
    let has = |i: i64, t: &str| {
        sentence(i).is_some_and(|s| {
            s["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["technique"] == t)
        })
    };
    assert!(
        has(acc_s, &acc_t),
        "accepted {acc_t} missing on sentence {acc_s}: {x}"
    );
    assert!(
        !has(rej_s, &rej_t),
        "rejected {rej_t} still on sentence {rej_s}: {x}"
    );
    assert!(
        has(add_s, "T1547.001"),
        "added T1547.001 missing on sentence {add_s}: {x}"
    );
    let added = sentence(add_s).unwrap();
    let p = added["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["technique"] == "T1547.001")
        .unwrap();
    assert_eq!(p["evidence"]["method"], "analyst");
    assert!(x["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["technique"] == "T1547.001"));
    assert_eq!(x["title"], "Glass Lantern (browser test)");

    let layer = export(c, "navigator").await?;
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert!(layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["techniqueID"] == "T1547.001"));
    let bundle = export(c, "stix").await?;
    assert_eq!(bundle["type"], "bundle");
    Ok(())
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Waits (bounded) for an element matching `css`.
async fn wait_css(
    c: &fantoccini::Client,
    css: &str,
) -> Result<fantoccini::elements::Element, String> {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("no element {css}: {e}"))
}

async fn click(c: &fantoccini::Client, css: &str) -> Result<(), String> {
    wait_css(c, css).await?.click().await.map_err(s)
}

async fn attr(e: &fantoccini::elements::Element, name: &str) -> Result<String, String> {
    Ok(e.attr(name).await.map_err(s)?.unwrap_or_default())
}

async fn count(c: &fantoccini::Client, css: &str) -> Result<usize, String> {
    Ok(c.find_all(Locator::Css(css)).await.map_err(s)?.len())
}

/// Presses and releases one key (a real keyboard event, as a person types it).
async fn key(c: &fantoccini::Client, k: char) -> Result<(), String> {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: k })
        .then(KeyAction::Up { value: k });
    c.perform_actions(keys).await.map_err(s)
}

/// The `data-index` of the selected sentence, once one with `index` is selected.
async fn wait_selected(c: &fantoccini::Client, index: i64) -> Result<(), String> {
    wait_css(
        c,
        &format!("#report-text .sentence.selected[data-index='{index}']"),
    )
    .await
    .map(|_| ())
}

async fn selected(c: &fantoccini::Client) -> Result<i64, String> {
    let e = wait_css(c, "#report-text .sentence.selected").await?;
    attr(&e, "data-index").await?.parse().map_err(s)
}

/// The stored report as the API shows it.
fn report_json(server: &Server, id: i64) -> Value {
    let (code, body) = crate::support::get(
        &crate::support::agent(),
        &server.url(&format!("/v1/reports/{id}")),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// (sentence, technique, score, status) of every model prediction.
fn predictions(report: &Value) -> Vec<(i64, String, f64, String)> {
    let mut out = Vec::new();
    for sen in report["sentences"].as_array().unwrap() {
        for t in sen["techniques"].as_array().unwrap() {
            if t["origin"] == "model" {
                out.push((
                    sen["index"].as_i64().unwrap(),
                    t["technique"].as_str().unwrap().to_string(),
                    t["score"].as_f64().unwrap(),
                    t["status"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// Writes the current window to `$TTPMAP_SCREENSHOTS/NAME` when that is set.
async fn doc_screenshot(c: &fantoccini::Client, name: &str) -> Result<(), String> {
    let Some(dir) = std::env::var_os("TTPMAP_SCREENSHOTS") else {
        return Ok(());
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    std::fs::create_dir_all(&dir).map_err(s)?;
    c.execute("window.scrollTo(0, 0);", vec![])
        .await
        .map_err(s)?;
    let png = c.screenshot().await.map_err(s)?;
    std::fs::write(dir.join(name), png).map_err(s)?;
    eprintln!("screenshot: {}", dir.join(name).display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_workbench() {
    let Some(sess) = start_session((1400, 900)).await else {
        return;
    };
    let result = workbench(&sess.client, &sess.server, sess.dir.path()).await;
    sess.finish("serve-browser-workbench.png", result).await;
}

async fn workbench(c: &fantoccini::Client, server: &Server, tmp: &Path) -> Result<(), String> {
    c.goto(&server.url("/")).await.map_err(s)?;
    wait_css(c, "#token")
        .await?
        .send_keys(SECRET)
        .await
        .map_err(s)?;
    let report = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/reports/operation-glass-lantern.md")
        .canonicalize()
        .unwrap();
    let upload = tmp.join("operation-glass-lantern.md");
    std::fs::copy(&report, &upload).unwrap();
    wait_css(c, "#file")
        .await?
        .send_keys(&upload.display().to_string())
        .await
        .map_err(s)?;
    click(c, "#submit").await?;
    wait_status(c, "Stored as report").await?;
    let id: i64 = text_prop(c, "#status")
        .await
        .trim_start_matches("Stored as report ")
        .trim_end_matches('.')
        .parse()
        .map_err(s)?;
    let stored = report_json(server, id);
    let preds = predictions(&stored);
    assert!(preds.len() >= 10, "{preds:?}");

    // Structure: headings, list items and the IOC table keep their shape; no IOC row is tagged.
    let headings = c
        .find_all(Locator::Css("#report-text h3.b-heading"))
        .await
        .map_err(s)?;
    let mut heading_texts = Vec::new();
    for h in &headings {
        heading_texts.push(h.text().await.map_err(s)?);
    }
    assert!(
        heading_texts
            .iter()
            .any(|t| t.starts_with("Initial access"))
            && heading_texts
                .iter()
                .any(|t| t.starts_with("Indicators of compromise")),
        "{heading_texts:?}"
    );
    assert!(count(c, "#report-text ul > li").await? >= 8, "list items");
    assert_eq!(count(c, "#report-text table tr.sentence").await?, 7);
    assert_eq!(count(c, "#report-text table tr.sentence td").await?, 21);
    assert_eq!(count(c, "#report-text table tr.sentence.has").await?, 0);

    // Bands: a model prediction in [0.60, 0.80) is "high" (the old bands started at 0.80).
    let best: Vec<(i64, f64)> = stored["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|sen| {
            let m = sen["techniques"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["score"].as_f64().unwrap())
                .fold(f64::NAN, f64::max);
            (!m.is_nan()).then(|| (sen["index"].as_i64().unwrap(), m))
        })
        .collect();
    let (hi, _) = best
        .iter()
        .find(|(_, m)| (0.6..0.8).contains(m))
        .or_else(|| best.iter().find(|(_, m)| *m >= 0.6))
        .ok_or("no prediction at or above 0.60")?;
    wait_css(
        c,
        &format!("#report-text .sentence.high[data-index='{hi}']"),
    )
    .await?;
    assert!(text_prop(c, "#legend").await.contains("high ≥ 0.60"));

    // Progress and help.
    let progress = text_prop(c, "#progress").await;
    assert_eq!(
        progress,
        format!("0 of {} predictions reviewed", preds.len())
    );
    assert!(text_prop(c, "#help").await.contains("accept/reject"));

    // Keys: j/k walk the sentences with predictions, a/r decide the focused prediction.
    let with: Vec<i64> = {
        let mut v: Vec<i64> = preds.iter().map(|p| p.0).collect();
        v.dedup();
        v
    };
    click(c, "#report-title").await?;
    key(c, 'j').await?;
    wait_selected(c, with[0]).await?;
    key(c, 'j').await?;
    wait_selected(c, with[1]).await?;
    key(c, 'k').await?;
    wait_selected(c, with[0]).await?;
    let first = |i: i64| {
        preds
            .iter()
            .find(|p| p.0 == i)
            .map(|p| p.1.clone())
            .unwrap()
    };
    key(c, 'a').await?;
    wait_status(
        c,
        &format!("accept {} on sentence {}: saved", first(with[0]), with[0]),
    )
    .await?;
    key(c, 'j').await?;
    wait_selected(c, with[1]).await?;
    key(c, 'r').await?;
    wait_status(
        c,
        &format!("reject {} on sentence {}: saved", first(with[1]), with[1]),
    )
    .await?;
    assert_eq!(
        text_prop(c, "#progress").await,
        format!("2 of {} predictions reviewed", preds.len())
    );
    let after = report_json(server, id);
    let st = |i: i64, t: &str| {
        predictions(&after)
            .into_iter()
            .find(|p| p.0 == i && p.1 == t)
            .map(|p| p.3)
    };
    assert_eq!(st(with[0], &first(with[0])).as_deref(), Some("accepted"));
    assert_eq!(st(with[1], &first(with[1])).as_deref(), Some("rejected"));

    // "Unreviewed only": every highlighted sentence still has an open prediction.
    click(c, "#only-unreviewed").await?;
    let open: std::collections::BTreeSet<i64> = predictions(&after)
        .into_iter()
        .filter(|p| p.3 == "predicted")
        .map(|p| p.0)
        .collect();
    let shown = c
        .find_all(Locator::Css("#report-text .sentence.has"))
        .await
        .map_err(s)?;
    assert_eq!(shown.len(), open.len());
    for e in &shown {
        let i: i64 = attr(e, "data-index").await?.parse().map_err(s)?;
        assert!(open.contains(&i), "sentence {i} shown but fully reviewed");
    }
    click(c, "#only-unreviewed").await?;

    // "Next unreviewed" from the first sentence skips the reviewed one.
    click(
        c,
        &format!("#report-text .sentence[data-index='{}']", with[0]),
    )
    .await?;
    click(c, "#next-unreviewed").await?;
    let next = *open.iter().find(|&&i| i > with[0]).unwrap();
    wait_selected(c, next).await?;
    let focused = wait_css(c, "#sentence-panel .tech.focused").await?;
    assert!(attr(&focused, "class").await?.contains("predicted"));
    doc_screenshot(c, "ui-review.png").await?;

    // Matrix: one column per tactic in ATT&CK order, cells coloured and marked.
    let (code, body) = crate::support::get(&crate::support::agent(), &server.url("/v1/tactics"));
    assert_eq!(code, 200);
    let tactics: Value = serde_json::from_str(&body).unwrap();
    let order: Vec<String> = tactics["tactics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["shortname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order.len(), 14);
    assert!(!wait_css(c, "#matrix")
        .await?
        .is_displayed()
        .await
        .map_err(s)?);
    click(c, "#view-matrix").await?;
    wait_css(c, "#matrix-pane:not([hidden]) #matrix .mcol").await?;
    assert!(!wait_css(c, "#report-text")
        .await?
        .is_displayed()
        .await
        .map_err(s)?);
    assert!(wait_css(c, "#matrix")
        .await?
        .is_displayed()
        .await
        .map_err(s)?);
    let cols = c.find_all(Locator::Css("#matrix .mcol")).await.map_err(s)?;
    let mut names = Vec::new();
    for col in &cols {
        names.push(attr(col, "data-tactic").await?);
    }
    assert_eq!(names, order);
    let accepted = first(with[0]);
    let cell = wait_css(c, &format!("#matrix .cell[data-technique='{accepted}']")).await?;
    let class = attr(&cell, "class").await?;
    assert!(
        class.contains("high") || class.contains("mid") || class.contains("low"),
        "{class}"
    );
    // Reviewed cells say so; a technique with an open prediction elsewhere stays unreviewed.
    assert!(count(c, "#matrix .cell.unreviewed").await? > 0);
    assert!(count(c, "#matrix .cell.accepted, #matrix .cell.unreviewed").await? > 0);
    let tname = text_prop(c, &format!("#matrix .cell[data-technique='{accepted}']")).await;
    assert!(tname.len() > accepted.len() + 2, "no name in {tname:?}");

    // A cell jumps to its evidence, and again to the next one (cycling); so does the summary.
    let evidence: Vec<i64> = {
        let mut v: Vec<i64> = predictions(&after)
            .into_iter()
            .filter(|p| p.1 == accepted && p.3 != "rejected")
            .map(|p| p.0)
            .collect();
        v.dedup();
        v
    };
    cell.click().await.map_err(s)?;
    wait_css(c, "#report-text:not([hidden])").await?;
    wait_selected(c, evidence[0]).await?;
    wait_status(c, &format!("{accepted}: evidence 1 of {}", evidence.len())).await?;
    click(c, &format!("#tactics li[data-technique='{accepted}']")).await?;
    let second = evidence[1 % evidence.len()];
    wait_status(
        c,
        &format!(
            "{accepted}: evidence {} of {}",
            1 % evidence.len() + 1,
            evidence.len()
        ),
    )
    .await?;
    assert_eq!(selected(c).await?, second);

    // Bulk accept of every unreviewed prediction at or above 0.6.
    let bulk = wait_css(c, "#bulk-min").await?;
    bulk.clear().await.map_err(s)?;
    bulk.send_keys("0.6").await.map_err(s)?;
    let todo = predictions(&report_json(server, id))
        .into_iter()
        .filter(|p| p.3 == "predicted" && p.2 >= 0.6)
        .count();
    assert!(todo > 0);
    wait_css(c, "#bulk-accept:not([disabled])").await?;
    assert_eq!(text_prop(c, "#bulk-accept").await, format!("Accept {todo}"));
    click(c, "#bulk-accept").await?;
    wait_status(c, &format!("Accepted {todo} predictions at or above 0.60")).await?;
    let done = predictions(&report_json(server, id));
    assert!(done.iter().all(|p| p.2 < 0.6 || p.3 != "predicted"));
    let reviewed = done.iter().filter(|p| p.3 != "predicted").count();
    assert_eq!(
        text_prop(c, "#progress").await,
        format!("{reviewed} of {} predictions reviewed", done.len())
    );
    // Every cell shows its technique's review state: open while any prediction is, else
    // accepted when one was accepted, else rejected.
    click(c, "#view-matrix").await?;
    wait_css(c, "#matrix .cell.accepted").await?;
    let mut want = std::collections::BTreeMap::<String, Vec<String>>::new();
    for p in &done {
        want.entry(p.1.clone()).or_default().push(p.3.clone());
    }
    for cell in c.find_all(Locator::Css("#matrix .cell")).await.map_err(s)? {
        let t = attr(&cell, "data-technique").await?;
        let st = &want[&t];
        let expect = if st.iter().any(|x| x == "predicted") {
            "unreviewed"
        } else if st.iter().any(|x| x == "accepted") {
            "accepted"
        } else {
            "rejected"
        };
        assert_eq!(attr(&cell, "data-review").await?, expect, "{t}: {st:?}");
        assert!(attr(&cell, "class").await?.contains(expect));
    }
    // As in ATT&CK Navigator, a sub-technique sits under its parent when the parent is in the
    // same column (nested), and nowhere else is nested.
    for col in c.find_all(Locator::Css("#matrix .mcol")).await.map_err(s)? {
        let mut cells = Vec::new();
        for cell in col.find_all(Locator::Css(".cell")).await.map_err(s)? {
            let t = attr(&cell, "data-technique").await?;
            let nested = attr(&cell, "class").await?.split(' ').any(|c| c == "sub");
            cells.push((t, nested));
        }
        let column: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.0.as_str()).collect();
        let mut group: Option<&str> = None;
        for (t, nested) in &cells {
            let parent = t.split('.').next().unwrap_or(t);
            let has_parent = t.contains('.') && column.contains(parent);
            assert_eq!(*nested, has_parent, "{t} in {cells:?}");
            if *nested {
                assert_eq!(
                    group,
                    Some(parent),
                    "{t} is not under its parent in {cells:?}"
                );
            } else if !t.contains('.') {
                group = Some(t.as_str());
            } else {
                group = None;
            }
        }
    }
    doc_screenshot(c, "ui-matrix.png").await?;
    click(c, "#view-text").await?;

    // CSV and Markdown exports.
    click(c, "#export-csv").await?;
    wait_status(c, "Exported csv").await?;
    let csv = text_prop(c, "#export-output").await;
    assert!(
        csv.starts_with("source,sentence,start,end,technique,name,score,method,text\n"),
        "{csv}"
    );
    assert!(csv.contains(&accepted));
    click(c, "#export-markdown").await?;
    wait_status(c, "Exported markdown").await?;
    let md = text_prop(c, "#export-output").await;
    assert!(
        md.contains("| Technique | Name |") && md.contains(&accepted),
        "{md}"
    );

    // Preview of pasted plain text: a title for people, not the "<text>" placeholder.
    c.execute(
        "document.getElementById('file').value = '';\
         document.getElementById('text').value = arguments[0];",
        vec![Value::String(
            "They dumped credentials from LSASS memory with Mimikatz.".into(),
        )],
    )
    .await
    .map_err(s)?;
    click(c, "#preview").await?;
    wait_css(c, "#report-title[data-preview='true']").await?;
    assert_eq!(
        text_prop(c, "#report-title").await,
        "Untitled report (preview)"
    );
    // Preview of pasted Markdown: nothing stored, nothing to export.
    c.execute(
        "document.getElementById('file').value = '';\
         document.getElementById('text').value = arguments[0];",
        vec![Value::String(
            "Prepared by the CERT.\n\n## Credential access\n\nThey dumped credentials from LSASS memory with Mimikatz.\n\n\
             - The actors created a scheduled task named LanternUpdate that runs every 30 minutes.\n\
             - They ran whoami /all to check their privileges.\n"
                .into(),
        )],
    )
    .await
    .map_err(s)?;
    click(c, "#preview").await?;
    wait_status(c, "Preview (not stored)").await?;
    let h = wait_css(c, "#report-text h3.b-heading").await?;
    let title = text_prop(c, "#report-title").await;
    assert!(!title.contains('<') && !title.is_empty(), "{title}");
    for f in ["navigator", "stix", "misp", "json", "csv", "markdown"] {
        let b = wait_css(c, &format!("#export-{f}")).await?;
        assert_eq!(
            b.prop("disabled").await.map_err(s)?.as_deref(),
            Some("true")
        );
        let opacity = c
            .execute(
                "return getComputedStyle(document.getElementById(arguments[0])).opacity;",
                vec![Value::String(format!("export-{f}"))],
            )
            .await
            .map_err(s)?;
        let o: f64 = opacity.as_str().unwrap_or("1").parse().map_err(s)?;
        assert!(o < 0.9, "export-{f} looks enabled (opacity {o})");
    }
    assert!(h.text().await.map_err(s)?.starts_with("Credential access"));
    assert_eq!(count(c, "#report-text ul > li").await?, 2);
    let text = text_prop(c, "#report-text").await;
    assert!(
        !text.contains("##") && !text.contains("- The actors"),
        "{text}"
    );
    let groups = c
        .find_all(Locator::Css("#tactics .tactic h4"))
        .await
        .map_err(s)?;
    assert!(!groups.is_empty());
    for g in &groups {
        let t = g.text().await.map_err(s)?;
        assert!(
            !t.is_empty() && !t.to_lowercase().contains("no tactic"),
            "{t:?}"
        );
    }
    for li in c.find_all(Locator::Css("#tactics li")).await.map_err(s)? {
        let t = li.text().await.map_err(s)?;
        let name = t.split_whitespace().nth(1).unwrap_or("");
        assert!(
            name.chars().next().is_some_and(char::is_alphabetic),
            "blank name in {t:?}"
        );
    }
    // No review controls in a preview.
    click(c, "#report-text .sentence.has").await?;
    wait_css(c, "#sentence-panel .tech").await?;
    assert_eq!(count(c, "#sentence-panel button.accept").await?, 0);
    Ok(())
}
