//! Integration tests for `ttpmap_core::ingest`: golden sentences of our own example reports
//! and tricky paragraphs (insta), bad inputs, PDFs built at run time, and a property test over
//! the 400 raw AnnoCTR reports in the shared data directory (read at run time, never copied).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;

use crate::shared_dir;
use regex::Regex;
use ttpmap_core::ingest::{self, Format, IngestOptions};
use ttpmap_core::{Document, Error};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reports")
}

/// `[index] sentence` lines, the form the golden files hold.
fn listing(doc: &Document) -> String {
    let mut s = format!("title: {}\n", doc.title.as_deref().unwrap_or("-"));
    for sent in &doc.sentences {
        s.push_str(&format!("[{}] {}\n", sent.index, sent.text));
    }
    s
}

/// Checks the span invariants every document must satisfy.
fn check_spans(doc: &Document) {
    assert!(!doc.sentences.is_empty(), "{}: no sentences", doc.source);
    let mut prev_end = 0;
    for (i, s) in doc.sentences.iter().enumerate() {
        assert_eq!(s.index, i, "{}", doc.source);
        assert!(
            s.span.start >= prev_end,
            "{}: overlapping or unordered spans at {i}",
            doc.source
        );
        assert!(
            s.span.start < s.span.end,
            "{}: empty span at {i}",
            doc.source
        );
        let slice = doc
            .text
            .get(s.span.start..s.span.end)
            .unwrap_or_else(|| panic!("{}: span {i} not on char boundaries", doc.source));
        assert_eq!(slice, s.text, "{}", doc.source);
        assert_eq!(
            slice.trim(),
            slice,
            "{}: untrimmed sentence {i}",
            doc.source
        );
        assert!(
            !slice.contains('\n'),
            "{}: sentence {i} crosses a line",
            doc.source
        );
        assert!(
            slice.len() <= ingest::MAX_SENTENCE_BYTES,
            "{}: sentence {i} too long",
            doc.source
        );
        prev_end = s.span.end;
    }
}

mod examples {
    use super::*;

    #[test]
    fn glass_lantern_markdown() {
        let path = examples_dir().join("operation-glass-lantern.md");
        let doc = ingest::load_path(&path, &IngestOptions::default()).expect("load");
        check_spans(&doc);
        assert_eq!(doc.title.as_deref(), Some("Operation Glass Lantern"));
        assert!(
            (40..=90).contains(&doc.sentences.len()),
            "{} sentences",
            doc.sentences.len()
        );
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        // Defanged indicators kept as written, table rows, list items and Markdown stripped.
        assert!(texts.contains(&"Domain | invoices-portal[.]net | Phishing sender domain"));
        assert!(texts.contains(&"Email | billing[@]invoices-portal[.]net | Sender address"));
        assert!(texts
            .iter()
            .any(|t| t.starts_with("Block macros in documents")));
        assert!(texts.iter().all(|t| !t.contains("](") && !t.contains("**")));
        insta::assert_snapshot!(listing(&doc));
    }

    #[test]
    fn ransomware_brief_html() {
        let path = examples_dir().join("ransomware-brief.html");
        let doc = ingest::load_path(&path, &IngestOptions::default()).expect("load");
        check_spans(&doc);
        assert_eq!(
            doc.title.as_deref(),
            Some("Brief: EMBERCRYPT Ransomware Intrusion")
        );
        let all = doc.text.as_str();
        for dropped in [
            "dataLayer",
            "Related posts",
            "All rights reserved",
            "Home",
            "fictional research blog",
        ] {
            assert!(!all.contains(dropped), "{dropped:?} should be dropped");
        }
        assert!(all.contains("IPv4 | 203.0.113.77"));
        // Defanged indicators are shown as the analyst wrote them.
        assert!(all.contains("hxxp://emberxyz[.]onion"));
        assert!(!all.contains("http://emberxyz.onion"));
        insta::assert_snapshot!(listing(&doc));
    }

    #[test]
    fn quiet_harbor_text() {
        let path = examples_dir().join("quiet-harbor-loader.txt");
        let doc = ingest::load_path(&path, &IngestOptions::default()).expect("load");
        check_spans(&doc);
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        // Hard-wrapped lines are joined; underlines are not sentences; bullets are dropped.
        assert!(texts.contains(&"When opened, update.js ran under wscript.exe and collected basic host information with the commands systeminfo, whoami and nltest /domain_trusts."));
        assert!(texts.contains(&"harbor-cdn[.]example"));
        assert!(texts.iter().all(|t| !t.starts_with("---")));
        insta::assert_snapshot!(listing(&doc));
    }
}

mod tricky {
    use super::*;

    const PARAGRAPHS: &str = "\
The implant beacons to 10.0.0.1 and evil.example.com every 60 s. It then runs cmd.exe /c whoami, rundll32.exe payload.dll,Start and a.b.ps1.
Version v2.2.1 replaced 1.0. The new build (SHA-256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855) is signed.
Persistence uses HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run. The value is named Updater.
See https://example.com/report.html?id=4. Contact soc@example.org for samples.
This maps to T1059.001 and T1547.001. Several tools, e.g. Mimikatz, i.e. the usual kit, etc. were used vs. the DC.
Fig. 3 shows No. 5 of the samples from Acme Inc. and Foo Ltd. (a U.S. firm) after approx. 2 hours.
The report by J. R. Smith and Dr. Jones is below... It was later confirmed.
1. Open the file.
2. Enable the content.
The dropper wrote update.exe. Then it deleted itself! Why? Nobody knows.
The string \"Invoice.\" was used. \"Pay now\" was the subject line.
hxxps://bad[.]example[.]net/gate.php served the payload to user[@]victim[.]com.";

    #[test]
    fn tricky_paragraphs() {
        let doc = ingest::from_text("<tricky>", PARAGRAPHS, Format::Text).expect("doc");
        check_spans(&doc);
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        assert!(texts.contains(&"The dropper wrote update.exe."));
        assert!(texts.contains(&"1. Open the file."));
        assert!(texts.contains(&"Version v2.2.1 replaced 1.0."));
        assert!(texts.contains(
            &"hxxps://bad[.]example[.]net/gate.php served the payload to user[@]victim[.]com."
        ));
        insta::assert_snapshot!(listing(&doc));
    }

    #[test]
    fn markdown_inline_markup() {
        let md = "# Title with `code`\n\nThe actor used **[Cobalt Strike](https://attack.mitre.org/software/S0154/)** and `__init__.py`.\nIt wrote to _C:\\Users\\Public_. Then:\n\n* item one\n* item **two**\n\n> quoted text here.\n";
        let doc = ingest::from_text("<md>", md, Format::Markdown).expect("doc");
        check_spans(&doc);
        insta::assert_snapshot!(listing(&doc));
    }
}

mod bad_input {
    use super::*;

    fn err_text(r: ttpmap_core::Result<Document>) -> String {
        r.expect_err("must fail").to_string()
    }

    #[test]
    fn empty_whitespace_binary_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = IngestOptions::default();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let p = write("empty.txt", b"");
        let e = err_text(ingest::load_path(&p, &o));
        assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
        let e = err_text(ingest::load_path(&write("ws.md", b"  \n\n\t  \n"), &o));
        assert!(e.contains("empty"), "{e}");
        let e = err_text(ingest::load_path(
            &write("bin.txt", b"MZ\x90\x00\x03\x00\x00\x00"),
            &o,
        ));
        assert!(e.contains("binary") && e.contains("bin.txt"), "{e}");
        let e = err_text(ingest::load_path(
            &write("latin1.txt", b"Caf\xe9 au lait."),
            &o,
        ));
        assert!(e.contains("invalid UTF-8 at byte offset 3"), "{e}");
        let e = err_text(ingest::load_path(
            &write("latin1.html", b"<html><head><meta charset=\"iso-8859-1\"></head><body><p>Caf\xe9.</p></body></html>"),
            &o,
        ));
        assert!(
            e.contains("invalid UTF-8") && e.contains("iso-8859-1"),
            "{e}"
        );
        let e = err_text(ingest::load_path(
            &write(
                "scripts.html",
                b"<!doctype html><script>a()</script><style>p{}</style>",
            ),
            &o,
        ));
        assert!(e.contains("no readable text"), "{e}");
        let e = err_text(ingest::load_path(dir.path(), &o));
        assert!(e.contains("directory"), "{e}");
        let e = err_text(ingest::load_path(&dir.path().join("missing.txt"), &o));
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn too_large_is_refused_before_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big.txt");
        std::fs::write(&p, "A sentence. ".repeat(100)).expect("write");
        let o = IngestOptions {
            max_bytes: 100,
            format: None,
        };
        match ingest::load_path(&p, &o) {
            Err(Error::TooLarge { path, size, limit }) => {
                assert_eq!(path, p);
                assert_eq!((size, limit), (1200, 100));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(IngestOptions::default().max_bytes, 64 * 1024 * 1024);
        let e = ingest::from_bytes("upload", &[b'a'; 101], None, &o).expect_err("too large");
        assert!(matches!(e, Error::TooLarge { size: 101, .. }));
    }

    /// A sparse 200 MB file: refused from its metadata, nothing is read.
    #[test]
    fn sparse_200_mb_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("huge.txt");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(200_000_000).expect("set_len");
        let e = ingest::load_path(&p, &IngestOptions::default()).expect_err("too large");
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    size: 200_000_000,
                    limit: 67_108_864,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("huge.txt"), "{e}");
    }

    #[cfg(not(feature = "pdf"))]
    #[test]
    fn pdf_without_feature_is_unsupported() {
        let e = ingest::from_bytes("a.pdf", b"%PDF-1.4\n", None, &IngestOptions::default())
            .expect_err("unsupported");
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }

    #[test]
    fn format_override_and_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("report.dat");
        std::fs::write(&p, "# Heading\n\nBody text here.").expect("write");
        let doc = ingest::load_path(
            &p,
            &IngestOptions {
                format: Some(Format::Markdown),
                ..Default::default()
            },
        )
        .expect("md");
        assert_eq!(doc.title.as_deref(), Some("Heading"));
        assert_eq!(doc.source, p.to_string_lossy());
        // Unknown extension, no override: sniffed, then plain text.
        let doc = ingest::load_path(&p, &IngestOptions::default()).expect("txt");
        assert_eq!(doc.title, None);
        assert_eq!(doc.sentences[0].text, "# Heading");
    }
}

/// A minimal PDF writer for tests: one page per entry of `pages`, each a list of text lines
/// set in Helvetica; `encrypt` adds a standard-security-handler dictionary whose password is
/// not empty, so the file cannot be opened without one.
#[cfg(feature = "pdf")]
mod pdf {
    use super::*;

    fn escape(s: &str) -> String {
        s.replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)")
    }

    pub(super) fn build_pdf(pages: &[&[&str]], title: &str, encrypt: bool) -> Vec<u8> {
        let mut objects: Vec<String> = Vec::new();
        let n_pages = pages.len();
        // 1: catalog, 2: pages, 3: font, 4: info, then (page, content) pairs, then encrypt.
        objects.push("<< /Type /Catalog /Pages 2 0 R >>".to_string());
        let kids: Vec<String> = (0..n_pages).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
        objects.push(format!(
            "<< /Type /Pages /Kids [{}] /Count {n_pages} >>",
            kids.join(" ")
        ));
        objects.push(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .to_string(),
        );
        objects.push(format!(
            "<< /Title ({}) /Producer (ttpmap tests) >>",
            escape(title)
        ));
        for (i, lines) in pages.iter().enumerate() {
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                6 + 2 * i
            ));
            let mut content = String::from("BT /F1 11 Tf 14 TL 72 720 Td\n");
            for line in lines.iter() {
                content.push_str(&format!("({}) Tj T*\n", escape(line)));
            }
            content.push_str("ET\n");
            if lines.is_empty() {
                content = "0 0 1 rg 72 72 200 200 re f\n".to_string();
            }
            objects.push(format!(
                "<< /Length {} >>\nstream\n{content}endstream",
                content.len()
            ));
        }
        let encrypt_id = objects.len() + 1;
        if encrypt {
            objects.push(format!(
                "<< /Filter /Standard /V 1 /R 2 /Length 40 /P -44 /O <{}> /U <{}> >>",
                "7a".repeat(32),
                "3c".repeat(32)
            ));
        }
        let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::new();
        for (i, obj) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend(format!("{} 0 obj\n{obj}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for off in offsets {
            out.extend(format!("{off:010} 00000 n \n").as_bytes());
        }
        let enc = if encrypt {
            format!(
                " /Encrypt {encrypt_id} 0 R /ID [<{}> <{}>]",
                "01".repeat(16),
                "01".repeat(16)
            )
        } else {
            String::new()
        };
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R{enc} >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn report() -> Vec<u8> {
        build_pdf(
            &[
                &[
                    "Operation Paper Kite",
                    "The actor sent a spearphishing email with a malicious",
                    "attachment. The macro launched powershell.exe with an encoded",
                    "command and downloaded stage2.dll from 192.0.2.10.",
                ],
                &["Persistence was achieved with a scheduled task named KiteSync."],
            ],
            "Paper Kite (test)",
            false,
        )
    }

    #[test]
    fn extracts_text_layer() {
        let doc = ingest::from_bytes("kite.pdf", &report(), None, &IngestOptions::default())
            .expect("pdf");
        check_spans(&doc);
        assert_eq!(doc.title.as_deref(), Some("Paper Kite (test)"));
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        assert!(
            texts.contains(&"The actor sent a spearphishing email with a malicious attachment."),
            "{texts:#?}"
        );
        assert!(
            texts.contains(&"Persistence was achieved with a scheduled task named KiteSync."),
            "{texts:#?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("stage2.dll from 192.0.2.10.")),
            "{texts:#?}"
        );
        // The same through a file with a .pdf extension.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("kite.pdf");
        std::fs::write(&p, report()).expect("write");
        let from_file = ingest::load_path(&p, &IngestOptions::default()).expect("pdf file");
        assert_eq!(from_file.text, doc.text);
    }

    #[test]
    fn truncated_encrypted_and_textless_pdfs_fail_clearly() {
        let o = IngestOptions::default();
        let full = report();
        for cut in [full.len() / 2, 40, 9] {
            // Readers show what a truncated file still holds; so does ttpmap, with a warning.
            match ingest::from_bytes("cut.pdf", &full[..cut], Some(Format::Pdf), &o) {
                Ok(doc) => {
                    assert!(doc.text.contains("Operation Paper Kite"), "{}", doc.text);
                    assert!(
                        doc.warnings.iter().any(|w| w.contains("truncated")),
                        "{:?}",
                        doc.warnings
                    );
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("cut.pdf")
                            && (e.contains("damaged or truncated") || e.contains("no pages")),
                        "{e}"
                    );
                }
            }
        }
        let e = ingest::from_bytes("cut.pdf", &full[..40], Some(Format::Pdf), &o)
            .expect_err("nothing left")
            .to_string();
        assert!(
            e.contains("cut.pdf") && e.contains("damaged or truncated"),
            "{e}"
        );
        let enc = build_pdf(&[&["Secret text here."]], "enc", true);
        let e = ingest::from_bytes("enc.pdf", &enc, None, &o)
            .expect_err("encrypted")
            .to_string();
        assert!(e.contains("encrypted PDF"), "{e}");
        let blank = build_pdf(&[&[]], "scan", false);
        let e = ingest::from_bytes("scan.pdf", &blank, None, &o)
            .expect_err("textless")
            .to_string();
        assert!(e.contains("no text layer"), "{e}");
        let e = ingest::from_bytes("fake.pdf", b"hello, not a pdf", Some(Format::Pdf), &o)
            .expect_err("fake")
            .to_string();
        assert!(e.contains("not a PDF"), "{e}");
        // Garbage after a valid header must not panic the caller.
        let mut junk = b"%PDF-1.7\n".to_vec();
        junk.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        assert!(ingest::from_bytes("junk.pdf", &junk, None, &o).is_err());
    }

    fn fixtures_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf")
    }

    /// `(name, bytes, expected phrases)` of every committed corpus file.
    fn corpus() -> Vec<(String, Vec<u8>, Vec<String>)> {
        let mut out = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
            .expect("fixtures/pdf")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
            .collect();
        paths.sort();
        for p in paths {
            let expected = std::fs::read_to_string(p.with_extension("txt"))
                .expect("each fixture has a .txt of expected phrases");
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read fixture"),
                expected.lines().map(str::to_string).collect(),
            ));
        }
        assert!(out.len() >= 15, "corpus incomplete: {}", out.len());
        out
    }

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Every producer's file in the corpus (scripts/make_pdf_corpus.sh) gives its text.
    #[test]
    fn corpus_files_give_their_text() {
        for (name, bytes, expected) in corpus() {
            let doc = ingest::from_bytes(&name, &bytes, None, &IngestOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_spans(&doc);
            let text = squash(&doc.text);
            // Characters in order; where pdf-extract puts word breaks is measured against
            // pdftotext by `scripts/make_pdf_corpus.sh compare` (it splits some words of
            // Chromium's output, e.g. "Lanter nSync").
            let bare: String = text.split_whitespace().collect();
            for phrase in &expected {
                let p: String = phrase.split_whitespace().collect();
                assert!(bare.contains(&p), "{name}: {phrase:?} not in {text:?}");
            }
            let clean = !name.starts_with("xref_") && !name.starts_with("panic_");
            if clean {
                assert!(doc.warnings.is_empty(), "{name}: {:?}", doc.warnings);
            }
            if name.starts_with("incremental") {
                assert!(
                    !text.contains("Draft text"),
                    "{name}: the old revision shows"
                );
            }
        }
    }

    /// Real failure 1 (issue 11): lopdf refused these with "failed parsing cross reference
    /// table: invalid start value" (end-of-file marker not in the last 512 bytes) or a wrong
    /// startxref; readers rebuild the table, and so does ttpmap.
    #[test]
    fn broken_cross_reference_tables_are_rebuilt() {
        for name in [
            "xref_trailing_padding.pdf",
            "xref_wrong_offset.pdf",
            "xref_garbled_table.pdf",
        ] {
            let bytes = std::fs::read(fixtures_dir().join(name)).expect("fixture");
            let doc = ingest::from_bytes(name, &bytes, None, &IngestOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                squash(&doc.text).contains("scheduled task named LanternSync"),
                "{name}"
            );
        }
        let bytes = std::fs::read(fixtures_dir().join("xref_wrong_offset.pdf")).expect("fixture");
        let doc = ingest::from_bytes("w.pdf", &bytes, None, &IngestOptions::default()).unwrap();
        assert!(
            doc.warnings
                .iter()
                .any(|w| w.contains("cross-reference") && w.contains("rebuilt")),
            "{:?}",
            doc.warnings
        );
    }

    /// Real failure 2 (issue 11): a page whose font makes pdf-extract panic (a Type0 font
    /// with the predefined CMap /UniGB-UCS2-H) failed the whole report with "the PDF text
    /// extractor panicked"; now only that page is lost, and the warning names it.
    #[test]
    fn a_page_that_panics_the_extractor_loses_that_page_only() {
        let name = "panic_page_cjk_cmap.pdf";
        let bytes = std::fs::read(fixtures_dir().join(name)).expect("fixture");
        let doc = ingest::from_bytes(name, &bytes, None, &IngestOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(squash(&doc.text).contains("launched PowerShell with an encoded command"));
        assert!(
            doc.warnings
                .iter()
                .any(|w| w.starts_with("page 2:") && w.contains("skipped")),
            "{:?}",
            doc.warnings
        );
        // A document whose every page fails is an error that says so.
        let (from, to) = (
            &b"/Kids [4 0 R 6 0 R] /Count 2"[..],
            &b"/Kids [6 0 R 6 0 R] /Count 1"[..],
        );
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("page tree");
        let mut only_bad = bytes.clone();
        only_bad[at..at + from.len()].copy_from_slice(to);
        let e = ingest::from_bytes(name, &only_bad, None, &IngestOptions::default())
            .expect_err("no page readable")
            .to_string();
        assert!(
            e.contains(name) && e.contains("page 1") && e.contains("panicked"),
            "{e}"
        );
    }

    /// Work (bytes parsed and decoded, objects) grows linearly with the document: a file
    /// with 4x the pages costs at most 6x (operation counts, not time).
    #[test]
    fn pdf_cost_is_linear_in_pages() {
        use ttpmap_core::ingest::pdf::{extract, PdfLimits};
        let line = "The actor used PowerShell to download a second stage.";
        let lines = [line; 30];
        let small: Vec<&[&str]> = vec![&lines[..]; 100];
        let large: Vec<&[&str]> = vec![&lines[..]; 400];
        let a = extract(
            "a.pdf",
            &build_pdf(&small, "t", false),
            &PdfLimits::default(),
        )
        .unwrap();
        let b = extract(
            "b.pdf",
            &build_pdf(&large, "t", false),
            &PdfLimits::default(),
        )
        .unwrap();
        assert_eq!((a.pages, b.pages), (100, 400));
        assert_eq!(b.pages_read, 400);
        for (what, x, y) in [
            ("bytes parsed", a.stats.bytes_parsed, b.stats.bytes_parsed),
            ("objects", a.stats.objects, b.stats.objects),
            ("text bytes", a.text.len() as u64, b.text.len() as u64),
        ] {
            eprintln!(
                "{what}: 100 pages {x}, 400 pages {y} ({:.2}x)",
                y as f64 / x as f64
            );
            assert!(x > 0 && y <= 6 * x, "{what}: {x} -> {y}");
        }
    }

    /// Writes ttpmap's text of each corpus file to `$TTPMAP_PDF_TEXT_OUT/NAME.txt`, for the
    /// word comparison with pdftotext in `scripts/make_pdf_corpus.sh compare`.
    #[test]
    #[ignore = "run by scripts/make_pdf_corpus.sh compare"]
    fn dump_corpus_text() {
        let dir =
            PathBuf::from(std::env::var_os("TTPMAP_PDF_TEXT_OUT").expect("TTPMAP_PDF_TEXT_OUT"));
        for (name, bytes, _) in corpus() {
            if let Ok((_, text)) = ttpmap_core::ingest::pdf::pdf_to_text(&name, &bytes) {
                let stem = name.trim_end_matches(".pdf");
                std::fs::write(dir.join(format!("{stem}.txt")), text).expect("write");
            }
        }
    }

    /// Reads the PDF named by `$TTPMAP_PDF_FILE` and prints the outcome, for measuring by
    /// hand (e.g. peak memory on `scripts/make_pdf_corpus.sh bomb` output under
    /// `/usr/bin/time -v`).
    #[test]
    #[ignore = "a measuring helper, needs TTPMAP_PDF_FILE"]
    fn read_file_from_env() {
        let path = PathBuf::from(std::env::var_os("TTPMAP_PDF_FILE").expect("TTPMAP_PDF_FILE"));
        let bytes = std::fs::read(&path).expect("read");
        match ingest::from_bytes(
            &path.to_string_lossy(),
            &bytes,
            None,
            &IngestOptions::default(),
        ) {
            Ok(doc) => eprintln!(
                "read: {} sentences, warnings {:?}",
                doc.sentences.len(),
                doc.warnings
            ),
            Err(e) => eprintln!("refused: {e}"),
        }
    }

    /// Mutation smoke test: corpus files with random bytes changed, inserted, deleted or
    /// the file cut; `pdf_to_text` must return (text or error), never panic or abort.
    /// `TTPMAP_PDF_FUZZ_ITERS` sets the number of inputs (default 300).
    #[test]
    #[ignore = "slow: a mutation smoke loop; run with --ignored --release"]
    fn mutation_smoke() {
        use rand::{Rng, SeedableRng};
        let iters: usize = std::env::var("TTPMAP_PDF_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let seeds = corpus();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (mut ok, mut err) = (0, 0);
        for i in 0..iters {
            let (name, base, _) = &seeds[i % seeds.len()];
            let mut b = base.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..b.len().max(1));
                let last = b.len().saturating_sub(1);
                match rng.random_range(0..5) {
                    0 if !b.is_empty() => b[at.min(last)] = rng.random(),
                    1 => b.insert(at, rng.random()),
                    2 if b.len() > 10 => {
                        b.remove(at.min(last));
                    }
                    3 => b.truncate(at.max(16)),
                    _ => {
                        let tok: &[u8] = [
                            &b"<<"[..],
                            b">>",
                            b"[",
                            b"]",
                            b"(",
                            b")",
                            b" 0 R",
                            b"obj",
                            b"endobj",
                            b"stream",
                            b"endstream",
                            b"/Filter/FlateDecode",
                            b"/Kids[3 0 R]",
                        ][rng.random_range(0..13)];
                        let at = at.min(b.len());
                        b.splice(at..at, tok.iter().copied());
                    }
                }
            }
            match ttpmap_core::ingest::pdf::pdf_to_text(name, &b) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        eprintln!("mutation smoke: {iters} inputs, {ok} read, {err} refused");
    }
}

mod annoctr {
    use super::*;

    static TOKENS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
        [
            ("ipv4", r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
            ("url", r"(?i)\b(?:https?|ftp)://[^\s<>]+[^\s<>.,;:!?)\]]"),
            ("email", r"(?i)\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
            ("domain", r"(?i)\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:com|net|org|info|biz|ru|cn|io|de|uk|onion|xyz|top|co|us|gov|edu|me|tk|su)\b"),
            ("file", r"(?i)\b[\w-]+(?:\.[\w-]+)*\.(?:exe|dll|ps1|bat|vbs|js|docx?|docm|xlsx?|zip|rar|lnk|hta|sys|tmp|dat|bin|py|sh|jar|scr)\b"),
            ("hash", r"\b[a-fA-F0-9]{32,128}\b"),
            ("attack", r"\bT\d{4}(?:\.\d{3})?\b"),
            ("version", r"\bv?\d+(?:\.\d+)+\b"),
            ("registry", r"\bHK(?:LM|CU|EY_[A-Z_]+)\\[^\s,;]+[^\s,;.]"),
        ]
        .into_iter()
        .map(|(n, r)| (n, Regex::new(r).expect("test regex")))
        .collect()
    });

    fn raw_reports() -> Vec<PathBuf> {
        let dir = shared_dir().join("data/annoctr/raw/text");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| {
                panic!(
                    "AnnoCTR raw reports missing at {} ({e}); set TTPMAP_SHARED",
                    dir.display()
                )
            })
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        files
    }

    /// Every raw AnnoCTR report: spans valid, ordered, non-overlapping, and no sentence
    /// boundary falls strictly inside an IP, URL, e-mail, domain, file name, hash, ATT&CK id,
    /// version or registry path.
    #[test]
    fn property_over_all_raw_reports() {
        let files = raw_reports();
        assert_eq!(files.len(), 400, "expected the 400 AnnoCTR raw reports");
        let t0 = Instant::now();
        let docs: Vec<Document> = files
            .iter()
            .map(|p| {
                ingest::load_path(p, &IngestOptions::default()).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let elapsed = t0.elapsed();
        let n_sent: usize = docs.iter().map(|d| d.sentences.len()).sum();
        let n_bytes: usize = docs.iter().map(|d| d.text.len()).sum();
        eprintln!(
            "ingested {} reports ({n_bytes} bytes, {n_sent} sentences) in {elapsed:.2?}",
            docs.len()
        );
        let mut violations = Vec::new();
        for doc in &docs {
            check_spans(doc);
            let ends: Vec<usize> = doc.sentences.iter().map(|s| s.span.end).collect();
            let starts: Vec<usize> = doc.sentences.iter().map(|s| s.span.start).collect();
            for (name, re) in TOKENS.iter() {
                for m in re.find_iter(&doc.text) {
                    let inside = |x: &usize| m.start() < *x && *x < m.end();
                    if ends.iter().any(inside) || starts.iter().any(inside) {
                        violations.push(format!("{}: {name} {:?}", doc.source, m.as_str()));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "{} boundaries inside tokens, e.g. {:#?}",
            violations.len(),
            &violations[..violations.len().min(20)]
        );
        assert!(elapsed.as_secs() < 120, "segmentation took {elapsed:?}");
    }

    /// Specific behaviours on a real report: times written `p.m.` do not end a sentence,
    /// setext-style underlines are not sentences, and table rows stay whole.
    #[test]
    fn intel471_attempted_attack_report() {
        let p = shared_dir()
            .join("data/annoctr/raw/text/intel471_2020-03-26_analysis-of-an-attempted-attack.txt");
        let doc = ingest::load_path(&p, &IngestOptions::default())
            .unwrap_or_else(|e| panic!("{e} (set TTPMAP_SHARED)"));
        check_spans(&doc);
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        let pm = texts
            .iter()
            .find(|t| t.contains("p.m."))
            .expect("a sentence with p.m.");
        assert!(pm.contains("GMT"), "split after p.m.: {pm:?}");
        assert!(texts.contains(&"Background") && texts.contains(&"Summary"));
        assert!(texts.iter().all(|t| t.chars().any(char::is_alphanumeric)));
        let row = texts
            .iter()
            .find(|t| t.contains("SHA256 hash"))
            .expect("hash row");
        assert!(row.starts_with('|') && row.ends_with('|'), "{row:?}");
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("At no point was our employee's system")),
            "curly apostrophe normalised"
        );
    }
}

/// Hostile input (issue 11, rows 1 and 4): depth and size chosen by an attacker get a result
/// with a warning or a clear error naming the input, never a stack overflow. The linear-time
/// checks (operation counts for 4x larger inputs) are unit tests beside each converter.
mod hostile {
    use super::*;

    fn from(name: &str, bytes: &[u8], format: Format) -> ttpmap_core::Result<Document> {
        ingest::from_bytes(name, bytes, Some(format), &IngestOptions::default())
    }

    /// Runs `f` on a thread with a small stack (a tokio worker has 2 MiB): recursion on the
    /// input's depth would overflow it and abort the test binary.
    fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("no panic")
    }

    #[test]
    fn deeply_nested_html_keeps_its_text_and_warns() {
        for (open, close, n) in [("<div>", "</div>", 100_000), ("<span>", "</span>", 50_000)] {
            let html = format!(
                "<html><body>{}The actor used cmd.exe. It ran.{}</body></html>",
                open.repeat(n),
                close.repeat(n)
            );
            let doc = small_stack(move || from("deep.html", html.as_bytes(), Format::Html))
                .expect("deep HTML is read");
            check_spans(&doc);
            assert_eq!(doc.text, "The actor used cmd.exe. It ran.");
            assert_eq!(doc.warnings.len(), 1, "{:?}", doc.warnings);
            assert!(
                doc.warnings[0].contains("nested deeper than"),
                "{:?}",
                doc.warnings
            );
        }
        // 7,000 nested spans in 42 KB aborted the server (issue 11, row 1).
        let html = format!(
            "{}x y z.{}",
            "<span>".repeat(7_000),
            "</span>".repeat(7_000)
        );
        let doc =
            small_stack(move || from("spans.html", html.as_bytes(), Format::Html)).expect("read");
        assert_eq!(doc.text, "x y z.");
    }

    #[test]
    fn ordinary_html_has_no_warnings() {
        let doc = from(
            "ok.html",
            b"<html><body><div><p>One sentence here. Another one.</p></div></body></html>",
            Format::Html,
        )
        .expect("read");
        assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
    }

    #[test]
    fn adversarial_markdown_is_read() {
        // Quadratic in the old strip_emphasis (issue 11, row 4: 960 KB took 13.7 s).
        let n = 40_000;
        let line = " *a".repeat(n) + &" a_".repeat(n);
        let doc =
            small_stack(move || from("emph.md", line.as_bytes(), Format::Markdown)).expect("read");
        check_spans(&doc);
        let nested = ">".repeat(100_000)
            + " quoted text.\n"
            + &"  ".repeat(50_000)
            + "- deep item.\n"
            + &"[".repeat(50_000)
            + "x"
            + &"](u)".repeat(50_000);
        let doc = small_stack(move || from("nested.md", nested.as_bytes(), Format::Markdown))
            .expect("read");
        check_spans(&doc);
        assert!(doc.text.starts_with("quoted text."), "{}", &doc.text[..40]);
    }

    #[test]
    fn deeply_nested_json_is_an_error_naming_the_file() {
        use ttpmap_core::attack::Catalog;
        let n = 100_000;
        let arrays = "[".repeat(n) + &"]".repeat(n);
        let objects = format!(
            "{{\"type\": \"bundle\", \"objects\": [{{\"type\": \"x\", \"x_deep\": {}1{}}}]}}",
            "{\"a\": ".repeat(n),
            "}".repeat(n)
        );
        for (name, bytes) in [("arrays.json", arrays), ("objects.json", objects)] {
            let r = small_stack(move || {
                Catalog::from_slice(bytes.as_bytes(), Path::new(name))
                    .map(|c| c.techniques().len())
                    .map_err(|e| e.to_string())
            });
            // serde_json skips values the catalog does not read without recursion (so
            // arrays.json is "not a STIX bundle" and objects.json a bundle of nothing); typed
            // values stop at its recursion limit of 128. Either way: no overflow, and an error
            // names the file.
            match r {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => assert!(e.contains(name), "{e}"),
            }
        }
        let columns = format!("{{\"sentence\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        let e = small_stack(move || {
            ttpmap_core::dataset::tram2_from_str(&columns, Path::new("cols/train.json"))
                .err()
                .map(|e| e.to_string())
        })
        .expect("must fail");
        assert!(
            e.contains("cols/train.json") && e.contains("recursion limit"),
            "{e}"
        );
    }

    #[test]
    fn deeply_nested_yaml_is_an_error_naming_the_file() {
        let n = 100_000;
        for (name, text) in [
            ("flow.yaml", "[".repeat(n)),
            (
                "block.yaml",
                (0..2_000)
                    .map(|i| format!("{}- \n", " ".repeat(i * 2)))
                    .collect(),
            ),
            ("maps.yaml", "{a: ".repeat(n)),
            ("dashes.yaml", "- ".repeat(n) + "x\n"),
            ("keys.yaml", "? ".repeat(n) + "x\n"),
        ] {
            // serde_norway recurses to its limit of 128 levels (about 1 MiB of stack in a
            // debug build): run on a thread with a tokio worker's 2 MiB.
            let e = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    ttpmap_core::dataset::emulation_plan_from_str(&text, Path::new(name), "x")
                        .err()
                        .map(|e| e.to_string())
                })
                .expect("spawn")
                .join()
                .expect("no panic")
                .expect("must fail");
            assert!(e.contains(name), "{e}");
        }
    }
}
