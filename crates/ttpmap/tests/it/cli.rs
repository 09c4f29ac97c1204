//! Runs the built `ttpmap` binary end to end: the main job, every output format, and bad input.
//! Uses the ATT&CK bundle from ../shared (or $TTPMAP_SHARED); nothing is downloaded.

use crate::support::shared_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bundle() -> PathBuf {
    let p = shared_dir().join("data/attack/enterprise-attack-18.1.json");
    assert!(
        p.is_file(),
        "missing {}: set TTPMAP_SHARED to the shared folder",
        p.display()
    );
    p
}

/// The binary with a private cache folder, offline, with the shared bundle.
fn ttpmap(cache: &Path) -> Command {
    let mut c = ttpmap_without_bundle(cache);
    c.env("TTPMAP_ATTACK", bundle());
    c
}

fn ttpmap_without_bundle(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ttpmap"));
    c.env_remove("TTPMAP_ATTACK")
        .env("TTPMAP_CACHE", cache)
        .env("TTPMAP_OFFLINE", "1")
        .env("TTPMAP_DATA", shared_dir().join("data"));
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn example_report() -> PathBuf {
    repo_root().join("examples/reports/operation-glass-lantern.md")
}

mod extract {
    use super::*;

    #[test]
    fn json_output_has_sentences_and_document_summary() {
        let cache = tempfile::tempdir().unwrap();
        let (code, out, err) = run(ttpmap(cache.path())
            .args(["extract", "--format", "json"])
            .arg(example_report()));
        assert_eq!(code, 0, "stderr: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        let doc = &v[0];
        assert!(doc["sentence_count"].as_u64().unwrap() > 20);
        let techniques = doc["techniques"].as_array().unwrap();
        assert!(
            !techniques.is_empty(),
            "the example report describes techniques"
        );
        let ids: Vec<&str> = techniques
            .iter()
            .map(|t| t["technique"].as_str().unwrap())
            .collect();
        // The report describes LSASS dumping and a scheduled task in plain words; the BM25
        // baseline at its default threshold must find both.
        for want in ["T1003.001", "T1053.005"] {
            assert!(ids.contains(&want), "{want} missing from {ids:?}");
        }
        for s in doc["sentences"].as_array().unwrap() {
            assert!(!s["predictions"].as_array().unwrap().is_empty());
        }
    }

    #[test]
    fn every_format_renders() {
        let cache = tempfile::tempdir().unwrap();
        for format in [
            "table",
            "json",
            "jsonl",
            "csv",
            "markdown",
            "navigator",
            "stix",
            "misp",
        ] {
            let (code, out, err) = run(ttpmap(cache.path())
                .args(["extract", "--format", format])
                .arg(example_report()));
            assert_eq!(code, 0, "{format}: {err}");
            assert!(!out.trim().is_empty(), "{format} printed nothing");
            if matches!(format, "json" | "navigator" | "stix" | "misp") {
                serde_json::from_str::<serde_json::Value>(&out)
                    .unwrap_or_else(|e| panic!("{format} is not JSON: {e}"));
            }
        }
    }

    #[test]
    fn output_file_is_written_only_when_complete_and_a_bad_input_does_not_stop_the_batch() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("layer.json");
        let (code, _, err) = run(ttpmap(cache.path())
            .args(["extract", "--format", "navigator", "-o"])
            .arg(&out)
            .arg(example_report()));
        assert_eq!(code, 0, "{err}");
        let layer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(layer["versions"]["layer"], "4.5");

        // A bad input among good ones: the good one's result is still written, and every
        // failure is reported at the end with exit code 1.
        let bad = dir.path().join("empty.txt");
        std::fs::write(&bad, "").unwrap();
        let out2 = dir.path().join("partial.json");
        let (code, _, err) = run(ttpmap(cache.path())
            .args(["extract", "--format", "json", "-o"])
            .arg(&out2)
            .arg(&bad)
            .arg(example_report())
            .arg("/nonexistent/missing.md"));
        assert_eq!(code, 1, "{err}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out2).unwrap()).unwrap();
        let sources: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["source"].as_str().unwrap())
            .collect();
        assert_eq!(sources.len(), 1, "{sources:?}");
        assert!(sources[0].ends_with("operation-glass-lantern.md"));
        assert!(err.contains("2 of 3 inputs failed"), "{err}");
        assert!(
            err.contains("empty.txt") && err.contains("/nonexistent/missing.md"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "layer.json, empty.txt, partial.json; no temp files left"
        );
    }

    #[test]
    fn a_missing_file_does_not_stop_the_batch_on_stdout() {
        let cache = tempfile::tempdir().unwrap();
        let (code, out, err) = run(ttpmap(cache.path())
            .args(["extract", "--format", "jsonl"])
            .arg(example_report())
            .arg("/nonexistent/missing.md"));
        assert_eq!(code, 1, "{err}");
        assert!(out.contains("operation-glass-lantern.md"), "{out}");
        assert!(err.contains("/nonexistent/missing.md"), "{err}");
    }

    #[test]
    fn defanged_indicators_are_output_as_written() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("defanged.txt");
        std::fs::write(
            &report,
            "The loader used PowerShell to download the payload from hxxps://update-cdn[.]top/a.ps1.\n",
        )
        .unwrap();
        for format in ["json", "csv", "markdown", "stix"] {
            let (code, out, err) = run(ttpmap(cache.path())
                .args([
                    "extract",
                    "--method",
                    "bm25",
                    "--threshold",
                    "0",
                    "--format",
                    format,
                ])
                .arg(&report));
            assert_eq!(code, 0, "{format}: {err}");
            // Markdown escapes the brackets (`\[.\]` renders as `[.]`).
            let as_written = if format == "markdown" {
                r"hxxps://update-cdn\[.\]top"
            } else {
                "hxxps://update-cdn[.]top"
            };
            assert!(out.contains(as_written), "{format}: {out}");
            assert!(!out.contains("https://update-cdn.top"), "{format}: {out}");
        }
    }
}

mod bad_input {
    use super::*;

    /// Runs `extract` on `file` and returns stderr, asserting exit code 1 and no panic.
    fn extract_fails(name: &str, content: &[u8], extra: &[&str]) -> String {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let (code, out, err) = run(ttpmap(cache.path()).arg("extract").args(extra).arg(&p));
        assert_eq!(code, 1, "{name}: expected failure, got stdout {out}");
        assert!(!err.contains("panicked"), "{name} panicked: {err}");
        assert!(
            err.contains(name),
            "{name}: the error must name the file: {err}"
        );
        assert!(out.is_empty(), "{name}: no partial output on stdout");
        err.to_lowercase()
    }

    #[test]
    fn empty_file() {
        let err = extract_fails("empty.txt", b"", &[]);
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn binary_file() {
        let mut bytes = vec![0u8, 1, 2, 3, 0xff, 0xfe];
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        let err = extract_fails("blob.txt", &bytes, &[]);
        assert!(err.contains("binary"), "{err}");
    }

    #[test]
    fn invalid_utf8() {
        let err = extract_fails(
            "latin1.txt",
            b"The actor used caf\xe9 malware to run PowerShell.",
            &[],
        );
        assert!(err.contains("utf-8"), "{err}");
    }

    #[test]
    fn too_large() {
        let err = extract_fails(
            "big.txt",
            &b"The actor ran PowerShell. ".repeat(100),
            &["--max-bytes", "1000"],
        );
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn truncated_pdf() {
        let err = extract_fails(
            "report.pdf",
            b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R",
            &[],
        );
        assert!(err.contains("pdf"), "{err}");
    }

    #[test]
    fn missing_file() {
        let cache = tempfile::tempdir().unwrap();
        let (code, _, err) = run(ttpmap(cache.path()).args(["extract", "/nonexistent/report.txt"]));
        assert_eq!(code, 1);
        assert!(err.contains("/nonexistent/report.txt"), "{err}");
    }

    #[test]
    fn malformed_stix_bundle() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("attack.json");
        std::fs::write(
            &bad,
            br#"{"type": "bundle", "objects": [ {"type": "attack-pattern""#,
        )
        .unwrap();
        let (code, _, err) = run(ttpmap_without_bundle(cache.path())
            .arg("--attack")
            .arg(&bad)
            .arg("extract")
            .arg(example_report()));
        assert_eq!(code, 1);
        assert!(err.contains("attack.json"), "{err}");
        assert!(err.contains("malformed JSON"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        // Each cause is printed once.
        assert_eq!(err.matches("EOF while parsing").count(), 1, "{err}");
    }

    #[test]
    fn usage_error_exits_2() {
        let cache = tempfile::tempdir().unwrap();
        let (code, _, _) = run(ttpmap(cache.path()).args(["extract", "--format", "nope", "x.txt"]));
        assert_eq!(code, 2);
    }
}

mod serve_defaults {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    #[test]
    fn port_listens_on_loopback_and_the_database_goes_to_the_cache_folder() {
        let cache = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let mut child = ttpmap(cache.path())
            .current_dir(cwd.path())
            .env_remove("TTPMAP_TOKEN")
            .env_remove("TTPMAP_TOKEN_FILE")
            .env_remove("TTPMAP_MODEL")
            .args(["serve", "--method", "bm25", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        let mut listening = None;
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(addr) = line.split("listening on ").nth(1) {
                listening = Some(addr.trim().to_string());
                break;
            }
            lines.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        let addr = listening.unwrap_or_else(|| panic!("did not listen: {lines:#?}"));
        assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
        let db = cache.path().join("ttpmap.db");
        assert!(db.is_file(), "no database in the cache folder");
        assert!(
            lines.iter().any(|l| l.contains(&db.display().to_string())),
            "the database path is printed: {lines:#?}"
        );
        assert!(
            !cwd.path().join("ttpmap.db").exists(),
            "nothing in the working folder"
        );
        // export-reviews reads the same database without --db.
        let (code, _, err) = run(ttpmap(cache.path()).args(["data", "export-reviews"]));
        assert!(!err.contains("no such database file"), "{err}");
        assert_eq!(code, 0, "--db is optional: {err}");
        let empty = tempfile::tempdir().unwrap();
        let (code, _, err) = run(ttpmap(empty.path()).args(["data", "export-reviews"]));
        assert_eq!(code, 1, "{err}");
        let expected = empty.path().join("ttpmap.db");
        assert!(
            err.contains(&expected.display().to_string()) && err.contains("pass --db FILE"),
            "{err}"
        );
    }

    #[test]
    fn port_conflicts_with_addr_and_help_names_the_database_folder() {
        let cache = tempfile::tempdir().unwrap();
        let (code, _, err) =
            run(ttpmap(cache.path()).args(["serve", "--port", "18650", "--addr", "127.0.0.1:1"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--addr") && err.contains("--port"), "{err}");
        let (code, out, err) = run(ttpmap(cache.path()).args(["serve", "--help"]));
        assert_eq!(code, 0, "{err}");
        let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(out.contains("--port <PORT>"), "{out}");
        assert!(out.contains("ttpmap.db in the cache folder"), "{out}");
    }
}

mod help {
    use super::*;

    #[test]
    fn global_options_are_listed_apart_in_command_help() {
        let cache = tempfile::tempdir().unwrap();
        let (code, out, err) = run(ttpmap(cache.path()).args(["extract", "--help"]));
        assert_eq!(code, 0, "{err}");
        let (own, global) = out
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("no Global options section: {out}"));
        assert!(own.contains("--format"), "{own}");
        for flag in ["--cache-dir", "--attack", "--offline", "--data-dir"] {
            assert!(
                !own.contains(flag),
                "{flag} mixed into the command's options"
            );
            assert!(global.contains(flag), "{flag} missing: {global}");
        }
        // Still accepted after the command.
        let (code, _, err) = run(ttpmap(cache.path())
            .args(["extract", "--quiet", "--method", "bm25", "--format", "json"])
            .arg(example_report()));
        assert_eq!(code, 0, "{err}");
    }
}
