//! PDF text extraction (behind the `pdf` feature, with `pdf-extract`/`lopdf`).
//!
//! Owns [`pdf_to_text`]. Invariants: never panics and never prints on its own account. Errors
//! name the source and say what is wrong: damaged or truncated file, encrypted (a password is
//! needed), no text layer (scanned images need OCR first).
//!
//! `pdf-extract` can panic on malformed input; every call into it runs under
//! [`std::panic::catch_unwind`] and a panic becomes an `InvalidInput` error. The process-global
//! panic hook is deliberately left alone (swapping it is racy with other threads), so the
//! default hook may still write the panic message to stderr once; the error returned is what
//! callers should report. `pdf-extract` also logs through the `log` facade, which is silent
//! unless the application installs a logger.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pdf_extract::{Document, Object, PlainTextOutput};

use crate::error::{Error, Result};

/// Extracts `(title, text)` from PDF bytes. `source` names the input in errors.
pub fn pdf_to_text(source: &str, bytes: &[u8]) -> Result<(Option<String>, String)> {
    let invalid = |msg: String| Error::InvalidInput {
        path: PathBuf::from(source),
        message: msg,
    };
    let has_encrypt_key = contains(bytes, b"/Encrypt");
    let loaded = catch_unwind(AssertUnwindSafe(|| Document::load_mem(bytes)));
    let mut doc = match loaded {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) if has_encrypt_key => {
            return Err(invalid(format!("encrypted PDF that cannot be opened without a password ({e}); decrypt it first (e.g. qpdf --decrypt)")));
        }
        Ok(Err(e)) => {
            return Err(invalid(format!("damaged or truncated PDF: {e}")));
        }
        Err(_) => return Err(invalid("damaged PDF (the PDF parser panicked)".to_string())),
    };
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err(invalid(
            "encrypted PDF that cannot be opened without a password; decrypt it first (e.g. qpdf --decrypt)"
                .to_string(),
        ));
    }
    if doc.get_pages().is_empty() {
        return Err(invalid(
            "damaged or truncated PDF: no pages found".to_string(),
        ));
    }
    let title = info_title(&doc);
    let extracted = catch_unwind(AssertUnwindSafe(|| {
        let mut s = String::new();
        let r = {
            let mut output = PlainTextOutput::new(&mut s);
            pdf_extract::output_doc(&doc, &mut output)
        };
        r.map(|()| s)
    }));
    let text = match extracted {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Err(invalid(format!("could not extract text from PDF: {e}"))),
        Err(_) => {
            return Err(invalid(
                "could not extract text from PDF (the PDF text extractor panicked)".to_string(),
            ))
        }
    };
    if !text.chars().any(char::is_alphanumeric) {
        return Err(invalid(
            "PDF has no text layer (scanned pages?); run OCR on it first (e.g. ocrmypdf)"
                .to_string(),
        ));
    }
    Ok((title, text))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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
