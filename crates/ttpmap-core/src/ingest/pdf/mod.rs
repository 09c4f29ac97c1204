//! PDF text extraction (behind the `pdf` feature): [`pdf_to_text`] and [`extract`].
//!
//! Invariants: never panics, never aborts and never prints on its own account, on any
//! bytes; time and memory are linear in the input and bounded by [`PdfLimits`]: decoded
//! stream bytes ([`MAX_INFLATED_BYTES`], enforced inside the decoders) and content bytes the
//! extractor runs through, forms counted each time they are drawn ([`MAX_CONTENT_BYTES`],
//! counted before it runs). Errors name the source and say what is wrong: damaged or
//! truncated beyond repair, encrypted (a password is needed), no text layer (scanned images
//! need OCR first), a decompression bomb.
//! What was recovered from (a rebuilt cross-reference table, a page that could not be read)
//! comes back as warnings, each naming the page where there is one.
//!
//! How (submodules): `load` rebuilds the document from the file's bytes the way readers
//! repair a damaged file (scanning `N G obj` headers; the cross-reference table, often the
//! damaged part, is only checked to warn), decrypts it when the empty password opens it,
//! and decodes every stream itself with the budgeted decoders of `filters`, one budget of
//! [`MAX_INFLATED_BYTES`] decoded bytes per document, so lopdf and pdf-extract never
//! decompress anything (they see no filter they implement). Object streams are expanded from
//! their decoded bytes; cross-reference streams are not needed. `syntax` parses objects
//! iteratively with a nesting cap. Pages are then extracted one at a time by `pdf-extract`,
//! each under [`std::panic::catch_unwind`]: a page or font that makes it fail or panic loses
//! that page only, with a warning; the document fails only when no page yields text. The
//! process-global panic hook is deliberately left alone (swapping it is racy with other
//! threads), so the default hook may still write a panic message to stderr; `pdf-extract`
//! also logs through the `log` facade, silent unless the application installs a logger.
//!
//! Why this engine: `pdf-extract` 0.12 (on lopdf 0.42) is pure Rust, builds in seconds and
//! reads every producer of the regression corpus (Ghostscript Type1 and Type3 fonts, pdfTeX
//! Type1, Chromium CID TrueType, LibreOffice TrueType, MuPDF base-14, qpdf object streams /
//! linearized / encrypted) once wrapped as above. Its gaps are what this module closes
//! around it: lopdf has no repair mode (a bad `startxref`, or `%%EOF`
//! not in the last 512 bytes, fails the load with "invalid start value"), decompresses
//! object streams, cross-reference streams and contents with no size limit, and
//! pdf-extract panics on some fonts and page dictionaries, ignores the `'` and `"` text
//! operators (rewritten here), recurses through form XObjects without a cycle check, and
//! splits some words of CID fonts. Not chosen: MuPDF (`mupdf` crate: builds MuPDF's C
//! sources, minutes on two cores) and poppler (`poppler-rs`: needs libpoppler-glib and
//! glib at build and run time), pdfium (`pdfium-render`: a pdfium shared library at run
//! time), because the default build and CI must stay pure Rust and fast; a poppler/MuPDF
//! engine could come later behind a non-default cargo feature as a fallback for pages that
//! fail. The newer pure-Rust extractors on crates.io (`pdf` / pdf-rs, and 0.x crates such as
//! `pdfraw`, `pdfsink-rs`) were not evaluated hands-on; moving to one would still need the
//! budgeted decoding and repair here. `pdftotext -layout` (poppler) is the reference in
//! `scripts/make_pdf_corpus.sh compare`, which tables words recovered per corpus file.

mod filters;
mod load;
mod syntax;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pdf_extract::{Document, Object, PlainTextOutput};

use crate::error::{Error, Result};

pub use load::{LoadStats, MAX_FORM_DEPTH};

/// Most bytes all streams of one PDF may decode to, every filter stage counted (256 MiB).
pub const MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;

/// Most content bytes the text extractor may run through for one PDF, form XObjects counted
/// each time they are drawn (256 MiB).
pub const MAX_CONTENT_BYTES: u64 = 256 * 1024 * 1024;

/// Limits for reading one PDF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdfLimits {
    /// Decoded bytes one document may produce; past it the file is refused as a
    /// decompression bomb. Default [`MAX_INFLATED_BYTES`].
    pub max_decoded_bytes: u64,
    /// Content bytes the extractor may run through, forms counted each time they are drawn
    /// (a small form drawn a million times is the content-stream form of a bomb); pages past
    /// it are skipped with a warning. Default [`MAX_CONTENT_BYTES`].
    pub max_content_bytes: u64,
}

impl Default for PdfLimits {
    fn default() -> Self {
        PdfLimits {
            max_decoded_bytes: MAX_INFLATED_BYTES,
            max_content_bytes: MAX_CONTENT_BYTES,
        }
    }
}

/// What [`extract`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct PdfText {
    /// `/Title` of the document information dictionary, when there is one.
    pub title: Option<String>,
    /// The text of the pages that could be read, in page order, one line break between pages.
    pub text: String,
    /// What was recovered from or skipped; empty for a clean file.
    pub warnings: Vec<String>,
    /// Pages in the document, and pages that yielded text.
    pub pages: usize,
    pub pages_read: usize,
    /// Work counters (for tests of linear cost).
    pub stats: LoadStats,
}

/// Extracts `(title, text)` from PDF bytes with the default limits. `source` names the input
/// in errors. See [`extract`] for the warnings as well.
pub fn pdf_to_text(source: &str, bytes: &[u8]) -> Result<(Option<String>, String)> {
    let out = extract(source, bytes, &PdfLimits::default())?;
    Ok((out.title, out.text))
}

/// Extracts the text, title and warnings of a PDF under `limits`.
pub fn extract(source: &str, bytes: &[u8], limits: &PdfLimits) -> Result<PdfText> {
    let invalid = |msg: String| Error::InvalidInput {
        path: PathBuf::from(source),
        message: msg,
    };
    let loaded = match load::load(bytes, limits.max_decoded_bytes) {
        Ok(l) => l,
        Err(load::LoadError::Bomb { limit }) => {
            return Err(invalid(format!(
                "refused: its streams decode to more than {limit} bytes (the limit); a \
                 decompression bomb or an unusually large PDF"
            )))
        }
        Err(load::LoadError::Encrypted(e)) => {
            let why = e.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(invalid(format!(
                "encrypted PDF that cannot be opened without a password{why}; decrypt it \
                 first (e.g. qpdf --decrypt)"
            )));
        }
        Err(load::LoadError::Damaged(what)) => {
            return Err(invalid(format!("damaged or truncated PDF: {what}")))
        }
        Err(load::LoadError::TooIrregular) => {
            return Err(invalid(
                "damaged PDF: its structure is too irregular to rebuild in linear time".to_string(),
            ))
        }
    };
    let load::Loaded {
        mut doc,
        pages,
        page_costs,
        pages_node,
        mut warnings,
        stats,
    } = loaded;
    let title = info_title(&doc);
    let mut page_texts: Vec<String> = Vec::new();
    let mut read = 0;
    let mut failed = Vec::new();
    let mut spent = 0u64;
    for (i, &page) in pages.iter().enumerate() {
        let n = i + 1;
        let cost = page_costs.get(i).copied().unwrap_or(0);
        if spent.saturating_add(cost) > limits.max_content_bytes {
            failed.extend(n..=pages.len());
            warnings.push(format!(
                "pages {n}-{}: skipped: drawing them would run the text extractor through more \
                 than {} bytes of content (the limit; forms drawn many times?)",
                pages.len(),
                limits.max_content_bytes
            ));
            break;
        }
        spent += cost;
        // Point the flat page tree at this page only: pdf-extract then reads one page, and
        // its page lookup costs O(1) instead of O(pages).
        if let Some(Object::Dictionary(node)) = doc.objects.get_mut(&pages_node) {
            node.set("Kids", Object::Array(vec![Object::Reference(page)]));
            node.set("Count", 1);
        }
        let mut page_text = String::new();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut output = PlainTextOutput::new(&mut page_text);
            pdf_extract::output_doc(&doc, &mut output)
        }));
        match r {
            Ok(Ok(())) => {
                if page_text.chars().any(char::is_alphanumeric) {
                    read += 1;
                }
                page_texts.push(page_text);
            }
            Ok(Err(e)) => {
                failed.push(n);
                warnings.push(format!(
                    "page {n}: could not extract text ({e}); page skipped"
                ));
            }
            Err(_) => {
                failed.push(n);
                warnings.push(format!(
                    "page {n}: the PDF text extractor failed (panicked) on this page; page skipped"
                ));
            }
        }
    }
    let running = strip_running_lines(&mut page_texts);
    if !running.is_empty() {
        tracing::debug!(source, lines = ?running, "running headers and footers removed");
    }
    let mut text = String::new();
    for page in &page_texts {
        text.push_str(page);
        text.push('\n');
    }
    if !text.chars().any(char::is_alphanumeric) {
        if !failed.is_empty() {
            return Err(invalid(format!(
                "could not extract text from PDF: {} of {} page(s) failed ({})",
                failed.len(),
                pages.len(),
                warnings.join("; ")
            )));
        }
        return Err(invalid(
            "PDF has no text layer (scanned pages?); run OCR on it first (e.g. ocrmypdf)"
                .to_string(),
        ));
    }
    Ok(PdfText {
        title,
        text,
        warnings,
        pages: pages.len(),
        pages_read: read,
        stats,
    })
}

/// Lines within this many non-empty lines of a page's top or bottom can be running headers or
/// footers.
const RUNNING_EDGE: usize = 3;

/// Removes running headers and footers: a line near the top or bottom of a page
/// ([`RUNNING_EDGE`]) whose text, with digits taken as equal ("Page 3 of 20", "ACME | April
/// 2026 | 7"), recurs near the top or bottom of at least half of the pages (and at least 3).
/// Extracted as text they would be scored on every page (and counted as repeated evidence) and
/// split the sentences that run across a page break. Returns the distinct lines removed (first
/// occurrence). Documents of fewer than 3 pages are left as they are; lines over 150
/// characters never count as running. Linear in the text.
fn strip_running_lines(pages: &mut [String]) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    if pages.len() < 3 {
        return Vec::new();
    }
    let key = |line: &str| -> Option<String> {
        let k: String = line
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .flat_map(char::to_lowercase)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        (!k.is_empty() && k.chars().count() <= 150).then_some(k)
    };
    // Indices (into the page's lines) of the edge lines of a page.
    let edges = |lines: &[&str]| -> Vec<usize> {
        let filled: Vec<usize> = (0..lines.len())
            .filter(|&i| !lines[i].trim().is_empty())
            .collect();
        let mut e: Vec<usize> = filled.iter().take(RUNNING_EDGE).copied().collect();
        e.extend(filled.iter().rev().take(RUNNING_EDGE).copied());
        e.sort_unstable();
        e.dedup();
        e
    };
    let mut pages_with: HashMap<String, usize> = HashMap::new();
    for page in pages.iter() {
        let lines: Vec<&str> = page.split('\n').collect();
        let keys: HashSet<String> = edges(&lines)
            .into_iter()
            .filter_map(|i| key(lines[i]))
            .collect();
        for k in keys {
            *pages_with.entry(k).or_default() += 1;
        }
    }
    let needed = pages.len().div_ceil(2).max(3);
    let running: HashSet<&String> = pages_with
        .iter()
        .filter(|(_, &n)| n >= needed)
        .map(|(k, _)| k)
        .collect();
    if running.is_empty() {
        return Vec::new();
    }
    let mut removed: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for page in pages.iter_mut() {
        let lines: Vec<&str> = page.split('\n').collect();
        let drop: HashSet<usize> = edges(&lines)
            .into_iter()
            .filter(|&i| key(lines[i]).is_some_and(|k| running.contains(&k)))
            .collect();
        if drop.is_empty() {
            continue;
        }
        let mut first: Vec<usize> = drop.iter().copied().collect();
        first.sort_unstable();
        for i in first {
            if seen.insert(key(lines[i]).unwrap_or_default()) {
                removed.push(lines[i].trim().to_string());
            }
        }
        let kept: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, l)| *l)
            .collect();
        *page = kept.join("\n");
    }
    removed
}

/// `/Title` of the document information dictionary, when it is a non-empty string.
fn info_title(doc: &Document) -> Option<String> {
    let info = match doc.trailer.get(b"Info").ok()? {
        Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        Object::Dictionary(d) => d,
        _ => return None,
    };
    let bytes = match info.get(b"Title").ok()? {
        Object::String(b, _) => b,
        _ => return None,
    };
    let title = if bytes.starts_with(&[0xFE, 0xFF]) {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        // PDFDocEncoding matches Latin-1 on printable ASCII and most of the upper half.
        bytes.iter().map(|&b| b as char).collect()
    };
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(super) fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn a85(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in data.chunks(4) {
            let mut g = [0u8; 4];
            g[..c.len()].copy_from_slice(c);
            let mut v = u32::from_be_bytes(g);
            if c.len() == 4 && v == 0 {
                out.push(b'z');
                continue;
            }
            let mut d = [0u8; 5];
            for x in d.iter_mut().rev() {
                *x = (v % 85) as u8 + b'!';
                v /= 85;
            }
            out.extend_from_slice(&d[..c.len() + 1]);
        }
        out.extend_from_slice(b"~>");
        out
    }

    /// A one-page PDF: the page shows "Hello bomb test" from an unfiltered content stream
    /// and has form `/X0` in its resources, whose stream is `extra` (dictionary entries, data).
    pub(super) fn pdf_with(extra_dict: &str, extra: &[u8]) -> Vec<u8> {
        // The form is drawn only when it has resources of its own (the cycle test); the
        // bombs are decoded all the same, as every stream is.
        let content: &[u8] = if extra_dict.contains("Resources") {
            b"BT /F1 12 Tf 72 720 Td (Hello bomb test) Tj ET /X0 Do"
        } else {
            b"BT /F1 12 Tf 72 720 Td (Hello bomb test) Tj ET"
        };
        let mut objs: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> /XObject << /X0 6 0 R >> >> >>".to_vec(),
        ];
        let mut c = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        c.extend_from_slice(content);
        c.extend_from_slice(b"\nendstream");
        objs.push(c);
        objs.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec());
        let mut x = format!(
            "<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Length {} {extra_dict} >>\nstream\n",
            extra.len()
        )
        .into_bytes();
        x.extend_from_slice(extra);
        x.extend_from_slice(b"\nendstream");
        objs.push(x);
        write_pdf(&objs, "")
    }

    pub(super) fn write_pdf(objs: &[Vec<u8>], trailer_extra: &str) -> Vec<u8> {
        let mut out = b"%PDF-1.5\n".to_vec();
        let mut offs = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            offs.push(out.len());
            out.extend(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(o);
            out.extend(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
        for o in offs {
            out.extend(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R{trailer_extra} >>\nstartxref\n{xref}\n%%EOF\n",
                objs.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn run(pdf: &[u8], budget: u64) -> Result<PdfText> {
        extract(
            "bomb.pdf",
            pdf,
            &PdfLimits {
                max_decoded_bytes: budget,
                ..PdfLimits::default()
            },
        )
    }

    fn assert_bomb(name: &str, pdf: &[u8]) {
        let e = run(pdf, 1 << 20).expect_err(name).to_string();
        assert!(
            e.contains("bomb.pdf") && e.contains("decompression bomb"),
            "{name}: {e}"
        );
        // The same file within a larger budget reads (the budget, not the form, decides).
        let ok = run(pdf, 64 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ok.text.contains("Hello bomb test"), "{name}: {}", ok.text);
        assert!(ok.stats.bytes_decoded >= 4 << 20, "{name}");
    }

    /// A PDF of `pages`, each a list of lines drawn top down in Helvetica.
    fn pdf_of_pages(pages: &[Vec<String>]) -> Vec<u8> {
        let n = pages.len();
        let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
        let mut objs: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")).into_bytes(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        ];
        for (i, lines) in pages.iter().enumerate() {
            objs.push(
                format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
                     /Resources << /Font << /F1 3 0 R >> >> >>",
                    5 + 2 * i
                )
                .into_bytes(),
            );
            let content: String = lines
                .iter()
                .enumerate()
                .map(|(j, l)| format!("BT /F1 10 Tf 72 {} Td ({l}) Tj ET\n", 760 - 20 * j))
                .collect();
            objs.push(
                format!(
                    "<< /Length {} >>\nstream\n{content}\nendstream",
                    content.len()
                )
                .into_bytes(),
            );
        }
        write_pdf(&objs, "")
    }

    /// Running headers and footers (digits aside) are removed from every page of a document of
    /// 3 or more pages; body lines, and lines that recur on fewer than half the pages, stay.
    #[test]
    fn running_headers_and_footers_are_removed() {
        let page = |i: usize, body: &[&str]| -> Vec<String> {
            let mut v = vec!["ACME Threat Intelligence | Spearphishing Campaign".to_string()];
            v.extend(body.iter().map(|b| b.to_string()));
            v.push(format!("Page {i} of 4"));
            v
        };
        let pages = vec![
            page(1, &["The actor sent emails with a macro.", "Summary"]),
            page(2, &["They ran PowerShell to download a payload."]),
            page(3, &["Summary", "A scheduled task kept it running."]),
            page(4, &["Indicators follow."]),
        ];
        let out = run(&pdf_of_pages(&pages), 1 << 20).unwrap();
        for body in [
            "The actor sent emails with a macro.",
            "They ran PowerShell to download a payload.",
            "A scheduled task kept it running.",
            "Indicators follow.",
        ] {
            assert!(out.text.contains(body), "{body}: {}", out.text);
        }
        // "Summary" is at an edge of 2 of the 4 pages: under the 3 needed.
        assert_eq!(out.text.matches("Summary").count(), 2, "{}", out.text);
        assert!(!out.text.contains("ACME"), "{}", out.text);
        assert!(!out.text.contains("Page "), "{}", out.text);
        // Two pages: nothing is taken for a running line.
        let out = run(&pdf_of_pages(&pages[..2]), 1 << 20).unwrap();
        assert_eq!(out.text.matches("ACME").count(), 2, "{}", out.text);
    }

    #[test]
    fn strip_running_lines_looks_at_page_edges_only() {
        let words = ["alpha", "bravo", "charlie", "delta"];
        let mut pages: Vec<String> = (1..=4)
            .map(|i| {
                let w = words[i - 1];
                format!(
                    "\n  Report  {i}\nOne {w}.\nTwo {w}.\nThree {w}.\nReport {i}\nFour {w}.\n\
                     Five {w}.\nSix {w}.\n{i}\n"
                )
            })
            .collect();
        let removed = strip_running_lines(&mut pages);
        assert_eq!(removed, ["Report  1", "1"]);
        // The "Report" line in the middle of each page (not within 3 lines of an edge) stays,
        // and so do the body lines.
        assert_eq!(
            pages[1],
            "\nOne bravo.\nTwo bravo.\nThree bravo.\nReport 2\nFour bravo.\nFive bravo.\n\
             Six bravo.\n"
        );
    }

    #[test]
    fn the_plain_file_reads() {
        let out = run(&pdf_with("", b"q Q"), 1 << 20).unwrap();
        assert!(out.text.contains("Hello bomb test"), "{}", out.text);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn bombs_in_every_filter_and_chain_are_refused() {
        let zeros = vec![0u8; 4 << 20];
        let z = zlib(&zeros);
        let mut nul_raw = b"\0\0".to_vec();
        nul_raw.extend(raw_deflate(&zeros));
        let lzw = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&zeros)
            .unwrap();
        let hex: Vec<u8> = z
            .iter()
            .flat_map(|b| format!("{b:02X}").into_bytes())
            .collect();
        let rl: Vec<u8> = [129u8, 0].repeat((4 << 20) / 128);
        let cases: Vec<(&str, String, Vec<u8>)> = vec![
            ("zlib", "/Filter /FlateDecode".into(), z.clone()),
            (
                "nul + raw deflate (issue row 2)",
                "/Filter /FlateDecode".into(),
                nul_raw.clone(),
            ),
            ("raw deflate", "/Filter /Fl".into(), raw_deflate(&zeros)),
            (
                "A85 + raw deflate",
                "/Filter [/ASCII85Decode /FlateDecode]".into(),
                a85(&nul_raw),
            ),
            (
                "flate twice",
                "/Filter [/FlateDecode /FlateDecode]".into(),
                zlib(&z),
            ),
            ("LZW", "/Filter /LZWDecode".into(), lzw),
            ("AHx + flate", "/Filter [/AHx /FlateDecode]".into(), hex),
            ("RunLength", "/Filter /RunLengthDecode".into(), rl),
            (
                "flate with a PNG predictor",
                "/Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 1023 >>".into(),
                z.clone(),
            ),
        ];
        for (name, dict, data) in cases {
            assert_bomb(name, &pdf_with(&dict, &data));
        }
        // The budget is per document: 8 streams of 1 MiB pass a budget of 4 MiB together.
        let one = zlib(&vec![b' '; 1 << 20]);
        let mut objs: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /Contents [4 0 R 5 0 R 6 0 R 7 0 R 8 0 R 9 0 R 10 0 R 11 0 R] >>".to_vec(),
        ];
        for _ in 0..8 {
            let mut s =
                format!("<< /Length {} /Filter /FlateDecode >>\nstream\n", one.len()).into_bytes();
            s.extend_from_slice(&one);
            s.extend_from_slice(b"\nendstream");
            objs.push(s);
        }
        let e = run(&write_pdf(&objs, ""), 4 << 20).unwrap_err().to_string();
        assert!(e.contains("decompression bomb"), "{e}");
    }

    /// Object streams are decoded under the budget too, and a bomb in a cross-reference
    /// stream is never decoded at all (the document is rebuilt without it).
    #[test]
    fn object_and_xref_stream_bombs() {
        let zeros = vec![b' '; 4 << 20];
        // An object stream holding the font, padded with 4 MiB of spaces.
        let mut body = b"5 0 ".to_vec();
        let first = body.len();
        body.extend_from_slice(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>");
        body.extend_from_slice(&zeros);
        let z = zlib(&body);
        let content = b"BT /F1 12 Tf 72 720 Td (Hello bomb test) Tj ET";
        let mut c = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        c.extend_from_slice(content);
        c.extend_from_slice(b"\nendstream");
        let mut objstm = format!(
            "<< /Type /ObjStm /N 1 /First {first} /Length {} /Filter /FlateDecode >>\nstream\n",
            z.len()
        )
        .into_bytes();
        objstm.extend_from_slice(&z);
        objstm.extend_from_slice(b"\nendstream");
        let objs = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
            c,
            b"null".to_vec(),
            objstm,
        ];
        let pdf = write_pdf(&objs, "");
        assert_bomb("object stream", &pdf);
        // Cross-reference stream: 4 MiB of zeros behind /Type /XRef, never inflated.
        let zx = zlib(&vec![0u8; 4 << 20]);
        let mut xs = format!(
            "<< /Type /XRef /Size 9 /W [1 4 2] /Root 1 0 R /Length {} /Filter /FlateDecode >>\nstream\n",
            zx.len()
        )
        .into_bytes();
        xs.extend_from_slice(&zx);
        xs.extend_from_slice(b"\nendstream");
        let mut objs = objs;
        objs.push(xs);
        let pdf = write_pdf(&objs, "");
        let out = run(&pdf, 6 << 20).unwrap();
        assert!(out.text.contains("Hello bomb test"));
        assert!(out.stats.bytes_decoded < 5 << 20, "{:?}", out.stats);
    }

    /// A zlib stream that starts with a stored block holding the bytes `endstream`, then
    /// 4 MiB of deflated zeros: whatever extent the scanner gives the stream, the decoder is
    /// what is budgeted, so the bytes that look like the end of the stream hide nothing.
    #[test]
    fn a_fake_endstream_inside_the_data_does_not_hide_a_bomb() {
        let payload = b"endstream";
        let zeros = vec![0u8; 4 << 20];
        let mut z = vec![0x78, 0x01, 0x00];
        let len = payload.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(payload);
        z.extend_from_slice(&raw_deflate(&zeros));
        assert_bomb("fake endstream", &pdf_with("/Filter /FlateDecode", &z));
    }

    /// A small form drawn many times (a content-stream "billion laughs"): the extractor's
    /// work is bounded by `max_content_bytes`, counted before it runs.
    #[test]
    fn forms_drawn_many_times_are_bounded() {
        // Form X1 draws X0 (1 KiB of text) 1000 times; the page draws X1 1000 times:
        // 1 GiB of content to run through, from a file of a few KiB.
        let x0 = "BT /F1 1 Tf (Hello bomb test) Tj ET ".repeat(28);
        let x1 = "/X0 Do ".repeat(1000);
        let page = format!(
            "BT /F1 12 Tf 72 720 Td (First page text) Tj ET {}",
            "/X1 Do ".repeat(1000)
        );
        let stream = |d: &str, c: &str| {
            format!("{d} /Length {} >>\nstream\n{c}\nendstream", c.len()).into_bytes()
        };
        let objs = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R 8 0 R] /Count 2 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources 7 0 R >>".to_vec(),
            stream("<<", &page),
            stream("<< /Type /XObject /Subtype /Form /BBox [0 0 1 1]", &x0),
            stream("<< /Type /XObject /Subtype /Form /BBox [0 0 1 1]", &x1),
            b"<< /Font << /F1 9 0 R >> /XObject << /X0 5 0 R /X1 6 0 R >> >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 10 0 R /Resources 7 0 R >>".to_vec(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
            stream("<<", "BT /F1 12 Tf 72 720 Td (Second page text) Tj ET"),
        ];
        let pdf = write_pdf(&objs, "");
        assert!(pdf.len() < 64 * 1024);
        let e = run(&pdf, 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("bomb.pdf") && e.contains("bytes of content"),
            "{e}"
        );
        // Without the first page's forms the second page reads.
        let mut objs = objs;
        objs[3] = stream("<<", "BT /F1 12 Tf 72 720 Td (First page text) Tj ET");
        let out = run(&write_pdf(&objs, ""), 1 << 20).unwrap();
        assert!(out.text.contains("Second page text"), "{}", out.text);
    }

    #[test]
    fn deep_and_cyclic_structures_do_not_recurse() {
        // A form that draws itself, and one nested 1000 levels deep through distinct forms.
        let out = run(
            &pdf_with("/Resources << /XObject << /X0 6 0 R >> >>", b"/X0 Do"),
            1 << 20,
        )
        .unwrap();
        assert!(out.text.contains("Hello bomb test"));
        assert!(
            out.warnings.iter().any(|w| w.contains("invoke themselves")),
            "{:?}",
            out.warnings
        );
        // A page tree whose node lists itself.
        let objs = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [2 0 R 3 0 R 2 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 3 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
            b"<< /Length 44 >>\nstream\nBT /F1 12 Tf 72 720 Td (Cyclic tree) Tj ET\nendstream".to_vec(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        ];
        let out = run(&write_pdf(&objs, ""), 1 << 20).unwrap();
        assert!(out.text.contains("Cyclic tree"), "{}", out.text);
        // Deeply nested arrays and strings in a content stream: lopdf's content parser caps
        // its own nesting (100); the page fails or reads, the process survives.
        let deep_content = format!(
            "BT /F1 12 Tf 72 720 Td (Deep content) Tj ET {} {}",
            "[".repeat(100_000),
            "(".repeat(100_000)
        );
        let mut deep_objs = objs.clone();
        deep_objs[3] = format!(
            "<< /Length {} >>\nstream\n{deep_content}\nendstream",
            deep_content.len()
        )
        .into_bytes();
        let _ = run(&write_pdf(&deep_objs, ""), 1 << 20);
        // Deeply nested arrays in an object are refused for that object, not the stack.
        let deep = format!(
            "<< /Type /Catalog /Pages 2 0 R /X {} >>",
            "[".repeat(200_000)
        );
        let mut objs = objs;
        objs[0] = deep.into_bytes();
        assert!(run(&write_pdf(&objs, ""), 1 << 20).is_err());
    }
}
