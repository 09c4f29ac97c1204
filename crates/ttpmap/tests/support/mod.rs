//! Starting the real `ttpmap serve` binary for integration tests: on a free port (`--addr
//! 127.0.0.1:0`, the bound address read from its stderr), with the shared ATT&CK bundle, a
//! private cache folder, offline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn shared_dir() -> PathBuf {
    std::env::var_os("TTPMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

pub fn bundle() -> PathBuf {
    let p = shared_dir().join("data/attack/enterprise-attack-18.1.json");
    assert!(
        p.is_file(),
        "{} is missing: set TTPMAP_SHARED to the shared data folder",
        p.display()
    );
    p
}

/// A running server; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Server {
    /// Starts `ttpmap serve` on `db` with `token` (NAME:SECRET) and extra flags.
    pub fn start(cache: &Path, db: &Path, token: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ttpmap"))
            .env("TTPMAP_ATTACK", bundle())
            .env("TTPMAP_CACHE", cache)
            .env("TTPMAP_OFFLINE", "1")
            .env("TTPMAP_TOKEN", token)
            .env_remove("TTPMAP_MODEL")
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ttpmap serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(addr) = line.split("listening on ").nth(1) {
                        let _ = tx.send(Ok(addr.trim().to_string()));
                        sent = true;
                        continue;
                    }
                }
                eprintln!("[server] {line}");
            }
            if !sent {
                let _ = tx.send(Err("the server exited before listening".to_string()));
            }
        });
        // Loading the catalog takes a few seconds on a cold cache (debug build: longer).
        let base = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Ok(base)) => base,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the server did not start within 300 s"),
        };
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, no shutdown of any kind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP agent that returns 4xx/5xx responses instead of errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POST JSON with a bearer token; (status, body).
pub fn post_json(
    agent: &ureq::Agent,
    url: &str,
    secret: &str,
    body: &str,
) -> Result<(u16, String), ureq::Error> {
    let mut resp = agent
        .post(url)
        .header("Authorization", &format!("Bearer {secret}"))
        .content_type("application/json")
        .send(body)?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    Ok((status, text))
}

pub fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent.get(url).call().expect("GET");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().expect("body"))
}
