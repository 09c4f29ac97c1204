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
//!
//! Decompression bombs: before the PDF parser sees the file, every `stream ... endstream`
//! body is inflated (zlib, and again while the output is itself zlib data) with a running
//! budget of [`MAX_INFLATED_BYTES`] for the whole file; a file past it is refused. The parser
//! would otherwise inflate object streams and page contents fully into memory (a few MB of
//! zeros deflate about 1000:1).

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pdf_extract::{Document, Object, PlainTextOutput};

use crate::error::{Error, Result};

/// Most bytes all streams of one PDF may inflate to (256 MiB).
pub const MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;

/// Extracts `(title, text)` from PDF bytes. `source` names the input in errors.
pub fn pdf_to_text(source: &str, bytes: &[u8]) -> Result<(Option<String>, String)> {
    let invalid = |msg: String| Error::InvalidInput {
        path: PathBuf::from(source),
        message: msg,
    };
    if let Err(total) = check_inflation(bytes, MAX_INFLATED_BYTES) {
        return Err(invalid(format!(
            "refused: its compressed streams inflate to more than {total} bytes (the limit is \
             {MAX_INFLATED_BYTES}); a decompression bomb or an unusually large PDF"
        )));
    }
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

/// Inflates every stream body under a shared budget; `Err(bytes inflated)` once the budget
/// is spent. Bodies that are not zlib data cost nothing (inflating stops at the first error).
fn zlib_header(d: &[u8]) -> bool {
    d.len() >= 2 && d[0] & 0x0f == 8 && (u16::from(d[0]) << 8 | u16::from(d[1])) % 31 == 0
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got
}

/// The direct integer value of the last `/Length` in `dict` (the bytes before a `stream`
/// keyword); `None` when absent or indirect (`/Length 12 0 R`).
fn direct_length(dict: &[u8]) -> Option<usize> {
    let at = dict.windows(7).rposition(|w| w == b"/Length")?;
    let rest = &dict[at + 7..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let after = &rest[digits..];
    let after = &after[after
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(after.len())..];
    // `12 0 R` is a reference: the value is elsewhere.
    if after.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

pub fn check_inflation(bytes: &[u8], budget: u64) -> std::result::Result<u64, u64> {
    let mut total = 0u64;
    let mut pos = 0;
    while let Some(off) = find(&bytes[pos..], b"stream") {
        let mut start = pos + off + b"stream".len();
        pos = start;
        // `endstream` contains `stream`: skip it; a body starts after CRLF or LF.
        if bytes[..start].ends_with(b"endstream") {
            continue;
        }
        if bytes[start..].starts_with(b"\r\n") {
            start += 2;
        } else if bytes[start..].starts_with(b"\n") {
            start += 1;
        } else {
            continue;
        }
        // The body's extent is the dictionary's direct /Length (what the parser uses, so a
        // body that contains the bytes `endstream` cannot hide the rest of a bomb); the first
        // `endstream` only when the length is indirect or out of range.
        let kw = pos - b"stream".len();
        let window = &bytes[kw.saturating_sub(4096)..kw];
        // This object's dictionary: from its `obj` keyword on.
        let dict = window
            .windows(3)
            .rposition(|w| w == b"obj")
            .map_or(window, |o| &window[o..]);
        let end = direct_length(dict)
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= bytes.len())
            .unwrap_or_else(|| {
                find(&bytes[start..], b"endstream").map_or(bytes.len(), |e| start + e)
            });
        let mut data: Vec<u8> = bytes[start..end].to_vec();
        // Nested filters (/Filter [/FlateDecode /FlateDecode]) inflate again.
        for _ in 0..4 {
            if !zlib_header(&data) {
                break;
            }
            let left = budget.saturating_sub(total);
            let mut decoder = flate2::read::ZlibDecoder::new(&data[..]).take(left + 1);
            // Keep the output only when it is zlib data itself (a nested filter); otherwise
            // count it without holding it in memory.
            let mut head = [0u8; 2];
            let got = read_up_to(&mut decoder, &mut head);
            let (n, next) = if zlib_header(&head[..got]) {
                let mut out = head[..got].to_vec();
                let _ = decoder.read_to_end(&mut out);
                (out.len() as u64, Some(out))
            } else {
                let rest = std::io::copy(&mut decoder, &mut std::io::sink()).unwrap_or(0);
                (got as u64 + rest, None)
            };
            total += n;
            if total > budget {
                return Err(total);
            }
            match next {
                Some(out) => data = out,
                None => break,
            }
        }
        pos = end;
    }
    Ok(total)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn pdf_with_stream(body: &[u8]) -> Vec<u8> {
        let mut pdf = format!(
            "%PDF-1.4\n1 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
            body.len()
        )
        .into_bytes();
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        pdf
    }

    #[test]
    fn decompression_bombs_are_refused() {
        // 4 MiB of zeros deflate to about 4 KiB; with a 1 MiB budget the file is a bomb.
        let bomb = pdf_with_stream(&deflate(&vec![0u8; 4 << 20]));
        assert!(bomb.len() < 64 * 1024);
        assert!(check_inflation(&bomb, 1 << 20).is_err());
        assert_eq!(check_inflation(&bomb, 8 << 20), Ok(4 << 20));
        // Nested: a deflated deflate stream is inflated twice.
        let nested = pdf_with_stream(&deflate(&deflate(&vec![0u8; 4 << 20])));
        assert!(check_inflation(&nested, 1 << 20).is_err());
        // Plain (unfiltered) streams cost nothing.
        assert_eq!(
            check_inflation(&pdf_with_stream(b"BT (hi) Tj ET"), 10),
            Ok(0)
        );
        // The budget is per file: 100 streams of 3 MiB each pass 256 MiB together.
        let one = deflate(&vec![0u8; 3 << 20]);
        let mut many = Vec::new();
        for _ in 0..100 {
            many.extend_from_slice(&pdf_with_stream(&one));
        }
        let err = pdf_to_text("bomb.pdf", &many).unwrap_err().to_string();
        assert!(
            err.contains("bomb.pdf") && err.contains("decompression bomb"),
            "{err}"
        );
    }

    /// A zlib stream that starts with a stored block holding the bytes `endstream`, then
    /// 4 MiB of deflated zeros: the body's extent comes from /Length, so the bytes that look
    /// like the end of the stream do not hide the bomb.
    #[test]
    fn a_fake_endstream_inside_the_data_does_not_hide_a_bomb() {
        let payload = b"endstream";
        let zeros = vec![0u8; 4 << 20];
        let mut z = vec![0x78, 0x01, 0x00];
        let len = payload.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(payload);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        raw.write_all(&zeros).unwrap();
        z.extend_from_slice(&raw.finish().unwrap());
        // Adler-32 of everything inflated (RFC 1950).
        let (mut a, mut b) = (1u32, 0u32);
        for &x in payload.iter().chain(zeros.iter()) {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());
        let pdf = pdf_with_stream(&z);
        assert!(check_inflation(&pdf, 1 << 20).is_err());
        assert_eq!(check_inflation(&pdf, 8 << 20), Ok((4 << 20) + 9));
        assert_eq!(direct_length(b"<< /Length 12 0 R >>"), None);
        assert_eq!(
            direct_length(b"<< /Filter /FlateDecode /Length 42 >>"),
            Some(42)
        );
    }
}
