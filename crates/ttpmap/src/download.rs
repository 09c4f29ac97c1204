//! Downloads of assets (the ATT&CK bundle; later model folders) over HTTP(S) with ureq.
//!
//! Invariant: a download replaces its destination only when it is complete, matches the
//! expected sha256 (when one is given) and passes the caller's validator; the body is streamed
//! into a temporary file beside the destination and renamed over it. A failed, partial or
//! invalid download leaves the previous file untouched and no temporary file behind (the
//! temporary file is deleted on drop).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The latest Enterprise ATT&CK bundle published by MITRE (STIX 2.1).
pub const ATTACK_URL: &str =
    "https://raw.githubusercontent.com/mitre-attack/attack-stix-data/master/enterprise-attack/enterprise-attack.json";

/// The URL of one published Enterprise ATT&CK version, e.g. `18.1`.
pub fn attack_url_for_version(version: &str) -> anyhow::Result<String> {
    let v = version.trim().trim_start_matches(['v', 'V']);
    let valid = !v.is_empty()
        && v.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && v.split('.').count() <= 3;
    if !valid {
        bail!("invalid ATT&CK version {version:?} (expected e.g. 18.1)");
    }
    Ok(format!(
        "https://raw.githubusercontent.com/mitre-attack/attack-stix-data/master/enterprise-attack/enterprise-attack-{v}.json"
    ))
}

/// What a successful download wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    /// Bytes written to the destination.
    pub bytes: u64,
    /// sha256 of the destination's content, lower-case hex.
    pub sha256: String,
}

/// Downloads `url` to `dest` (see the module invariant); no content validation.
#[cfg_attr(not(feature = "hub"), allow(dead_code))] // model downloads (`hub` feature)
pub fn download_to(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    quiet: bool,
) -> anyhow::Result<DownloadReport> {
    download_validated(url, dest, expected_sha256, quiet, |_| Ok(()))
}

/// Downloads `url` to `dest`, checking the sha256 when `expected_sha256` is given and calling
/// `validate` on the complete temporary file before it replaces `dest`.
pub fn download_validated<F>(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    quiet: bool,
    validate: F,
) -> anyhow::Result<DownloadReport>
where
    F: FnOnce(&Path) -> anyhow::Result<()>,
{
    let expected = expected_sha256.map(normalize_sha256).transpose()?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut response = agent()
        .get(url)
        .call()
        .with_context(|| format!("downloading {url}"))?;
    let total = response.body().content_length();

    let mut builder = tempfile::Builder::new();
    builder.prefix(".ttpmap-download-").suffix(".part");
    // An asset is an ordinary file once in place (tempfile's default is 0600); umask applies.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bar = crate::progress::bytes_bar(total, &format!("Downloading {name}"), quiet);

    let mut reader = response.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(e)
                    .with_context(|| format!("downloading {url}: failed after {bytes} bytes"));
            }
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        bytes += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(t) = total {
        if bytes != t {
            bail!("downloading {url}: incomplete body ({bytes} of {t} bytes)");
        }
    }
    if bytes == 0 {
        bail!("downloading {url}: empty response");
    }
    tmp.as_file_mut()
        .flush()
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let sha256 = hex::encode(hasher.finalize());
    if let Some(want) = expected {
        if sha256 != want {
            bail!("downloading {url}: sha256 mismatch (expected {want}, got {sha256})");
        }
    }
    validate(tmp.path()).with_context(|| format!("downloaded {url}: invalid content"))?;
    tmp.persist(dest)
        .with_context(|| format!("moving the download into {}", dest.display()))?;
    Ok(DownloadReport { bytes, sha256 })
}

/// An HTTP agent with ttpmap's user agent and time limits.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("ttpmap/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Fetches a report from a URL into memory: at most `max_bytes` (a larger body is an error,
/// checked while reading, so memory stays bounded). Returns the body and its MIME type.
pub fn fetch_bytes(url: &str, max_bytes: u64) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let mut response = agent()
        .get(url)
        .call()
        .with_context(|| format!("fetching {url}"))?;
    let mime = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(len) = response.body().content_length() {
        if len > max_bytes {
            bail!("{url}: too large ({len} bytes; the limit is {max_bytes} bytes)");
        }
    }
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(max_bytes + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("reading {url}"))?;
    if body.len() as u64 > max_bytes {
        bail!("{url}: too large (more than {max_bytes} bytes)");
    }
    Ok((body, mime))
}

/// Checks a user-given sha256 (64 hex digits) and lower-cases it.
fn normalize_sha256(s: &str) -> anyhow::Result<String> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid sha256 {s:?} (expected 64 hexadecimal digits)");
    }
    Ok(t)
}

/// A tiny HTTP server for tests (no test touches the internet).
#[cfg(test)]
pub(crate) mod test_server {
    use std::io::{BufRead, Write};
    use std::net::TcpListener;

    /// A one-connection-per-request HTTP/1.1 server on 127.0.0.1 that answers every request
    /// with `status`, the given `Content-Length` and `body`, then closes the connection.
    pub(crate) fn serve(
        status: &str,
        content_length: usize,
        body: Vec<u8>,
    ) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let status = status.to_string();
        let handle = std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let mut stream = stream;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
                let _ = stream.flush();
            }
        });
        (format!("http://{addr}/enterprise-attack.json"), handle)
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::serve;
    use super::*;
    use std::net::TcpListener;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("asset.json");
        std::fs::write(&dest, b"previous good file").unwrap();
        (dir, dest)
    }

    fn assert_untouched(dir: &Path, dest: &Path) {
        assert_eq!(std::fs::read(dest).unwrap(), b"previous good file");
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["asset.json"],
            "no temporary file may be left behind"
        );
    }

    fn is_json(p: &Path) -> anyhow::Result<()> {
        let bytes = std::fs::read(p)?;
        serde_json::from_slice::<serde_json::Value>(&bytes).context("not JSON")?;
        Ok(())
    }

    #[test]
    fn fetch_bytes_reads_a_report_within_the_limit() {
        let body = b"The actor ran PowerShell.".to_vec();
        let (url, h) = serve("200 OK", body.len(), body.clone());
        let (got, _mime) = fetch_bytes(&url, 1024).unwrap();
        h.join().unwrap();
        assert_eq!(got, body);

        // Content-Length over the limit: refused before reading the body.
        let (url, h) = serve("200 OK", body.len(), body.clone());
        let err = fetch_bytes(&url, 10).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("too large"), "{err:#}");

        let (url, h) = serve("404 Not Found", 0, Vec::new());
        assert!(fetch_bytes(&url, 1024).is_err());
        h.join().unwrap();
    }

    #[test]
    fn success_replaces_the_file() {
        let (dir, dest) = setup();
        let body = b"{\"type\": \"bundle\"}".to_vec();
        let (url, h) = serve("200 OK", body.len(), body.clone());
        let report =
            download_validated(&url, &dest, Some(&sha(&body).to_uppercase()), true, is_json)
                .unwrap();
        h.join().unwrap();
        assert_eq!(
            report,
            DownloadReport {
                bytes: body.len() as u64,
                sha256: sha(&body)
            }
        );
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        let count = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(count, 1);
    }

    #[test]
    fn success_into_a_new_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("attack/asset.json");
        let (url, h) = serve("200 OK", 2, b"{}".to_vec());
        let report = download_to(&url, &dest, None, true).unwrap();
        h.join().unwrap();
        assert_eq!(report.bytes, 2);
        assert_eq!(std::fs::read(&dest).unwrap(), b"{}");
    }

    #[test]
    fn checksum_mismatch_keeps_the_old_file() {
        let (dir, dest) = setup();
        let body = b"{\"a\": 1}".to_vec();
        let (url, h) = serve("200 OK", body.len(), body);
        let err = download_to(&url, &dest, Some(&"0".repeat(64)), true).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("sha256 mismatch"), "{err:#}");
        assert_untouched(dir.path(), &dest);
    }

    #[test]
    fn truncated_body_keeps_the_old_file() {
        let (dir, dest) = setup();
        let (url, h) = serve("200 OK", 1000, b"{\"type\": \"bun".to_vec());
        let err = download_to(&url, &dest, None, true).unwrap_err();
        h.join().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("failed after 13 bytes") || msg.contains("incomplete body"),
            "{msg}"
        );
        assert_untouched(dir.path(), &dest);
    }

    #[test]
    fn http_error_keeps_the_old_file() {
        let (dir, dest) = setup();
        let (url, h) = serve("404 Not Found", 9, b"not found".to_vec());
        let err = download_to(&url, &dest, None, true).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("404"), "{err:#}");
        assert_untouched(dir.path(), &dest);
    }

    #[test]
    fn invalid_content_keeps_the_old_file() {
        let (dir, dest) = setup();
        let (url, h) = serve("200 OK", 9, b"<html>x</".to_vec());
        let err = download_validated(&url, &dest, None, true, is_json).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("invalid content"), "{err:#}");
        assert_untouched(dir.path(), &dest);
    }

    #[test]
    fn empty_body_and_unreachable_server_fail() {
        let (dir, dest) = setup();
        let (url, h) = serve("200 OK", 0, Vec::new());
        let err = download_to(&url, &dest, None, true).unwrap_err();
        h.join().unwrap();
        assert!(format!("{err:#}").contains("empty response"), "{err:#}");
        // A port nobody listens on (bound, then released).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err =
            download_to(&format!("http://127.0.0.1:{port}/x"), &dest, None, true).unwrap_err();
        assert!(
            format!("{err:#}").contains("downloading http://127.0.0.1"),
            "{err:#}"
        );
        assert_untouched(dir.path(), &dest);
    }

    #[test]
    fn checks_arguments() {
        assert!(normalize_sha256("abc").is_err());
        assert!(normalize_sha256(&"g".repeat(64)).is_err());
        assert_eq!(normalize_sha256(&"AB".repeat(32)).unwrap(), "ab".repeat(32));
        assert!(attack_url_for_version("18.1")
            .unwrap()
            .ends_with("/enterprise-attack-18.1.json"));
        assert!(attack_url_for_version("v17.0")
            .unwrap()
            .ends_with("/enterprise-attack-17.0.json"));
        for bad in ["", "latest", "18..1", "18.1/../x", "1.2.3.4"] {
            assert!(attack_url_for_version(bad).is_err(), "{bad}");
        }
    }
}
