//! Starting the real `ttpmap serve` binary for integration tests: on a free port (`--addr
//! 127.0.0.1:0`, the bound address read from its stderr), with the shared ATT&CK bundle, a
//! private cache folder, offline.

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
        Server::start_with(cache, db, Some(token), extra, None)
    }

    /// Starts `ttpmap serve` on `db`: with `token` in TTPMAP_TOKEN (none: no token in the
    /// environment), extra flags, and at most `max_open_files` file descriptors when given.
    pub fn start_with(
        cache: &Path,
        db: &Path,
        token: Option<&str>,
        extra: &[&str],
        max_open_files: Option<u64>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ttpmap"));
        cmd.env("TTPMAP_ATTACK", bundle())
            .env("TTPMAP_CACHE", cache)
            .env("TTPMAP_OFFLINE", "1")
            .env_remove("TTPMAP_TOKEN")
            .env_remove("TTPMAP_TOKEN_FILE")
            .env_remove("TTPMAP_MODEL")
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            cmd.env("TTPMAP_TOKEN", token);
        }
        #[cfg(unix)]
        if let Some(n) = max_open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child here.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("starting ttpmap serve");
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

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

/// A raw HTTP/1.1 exchange on a fresh connection: writes `request` as is (the caller sets
/// `Host`, `Connection: close` and the rest), reads until the server closes; (status, body).
/// Status 0 when the server closed without an answer.
pub fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer (and close) before reading everything: ignore a failed write.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Peak and current resident size of a process in KiB (`VmHWM`, `VmRSS` of /proc/PID/status).
#[cfg(target_os = "linux")]
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets the peak resident size (`VmHWM`) of a process to its current size.
#[cfg(target_os = "linux")]
pub fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
}
