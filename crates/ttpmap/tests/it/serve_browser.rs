//! End-to-end test of the review UI in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, driven over WebDriver with fantoccini): upload a report file, accept one
//! prediction, reject one, add a technique, export JSON / Navigator / STIX, and check the
//! exported JSON. Saves a screenshot to `target/serve-browser.png`.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_ui_upload_review_export() {
    if !Path::new(CHROMEDRIVER).is_file() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{CHROMEDRIVER} is missing under CI: .ci/run installs chromium and chromium-driver"
            );
        }
        eprintln!(
            "SKIPPED serve_browser: {CHROMEDRIVER} not found (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("cache"),
        &dir.path().join("reports.db"),
        &format!("analyst:{SECRET}"),
        &[],
    );
    let (_driver, port) = start_chromedriver();
    let profile = dir.path().join("chromium-profile");
    let mut chrome = serde_json::json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1400,1000",
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

    let result = drive(&c, &server, dir.path()).await;
    // Screenshot whatever happened, then end the session.
    if let Ok(png) = c.screenshot().await {
        let out = target_dir().join("serve-browser.png");
        let _ = std::fs::create_dir_all(target_dir());
        std::fs::write(&out, png).unwrap();
        eprintln!("screenshot: {}", out.display());
    }
    let _ = c.close().await;
    result.unwrap();
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
