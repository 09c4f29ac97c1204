//! Report ingestion: bytes or files (text, Markdown, HTML, PDF) -> normalised text -> sentences.
//!
//! Owns format detection ([`Format`]), input limits ([`IngestOptions`]), decoding and the
//! checks on it, and building a [`Document`]. Submodules: [`normalize`] (canonical text form,
//! refanging), [`segment`] (CTI sentence splitter), `markdown`/`html`/`pdf` (converters to
//! plain lines), [`indicators`] (IOC rows and indicator-only lines, which the pipeline does not
//! score).
//!
//! Invariants of every `Document` returned:
//! - `text` is in the form [`normalize()`] produces (for text and PDF also [`reflow`]ed), so
//!   defanged indicators (`hxxps://evil[.]com`) are kept as the report wrote them; scoring
//!   refangs its own copy ([`refang_text`]);
//! - `sentences` is non-empty, indexed from 0 in order, and for each sentence
//!   `&doc.text[s.span.start..s.span.end] == s.text` (spans are byte offsets, on `char`
//!   boundaries, ordered and non-overlapping; see [`segment`]);
//! - `source` is the path as given (or the caller's source name).
//!
//! Hostile input: no converter recurses on the input's structure (HTML is walked with an
//! explicit stack and its nesting is capped before parsing, see [`html`]), and each stage
//! (decoding, conversion, [`normalize()`], [`reflow`], [`split_sentences`]) does work linear in
//! its input; unit tests check that a 4x larger adversarial input costs at most about 4x the
//! operations (`work` counter, compiled in tests only). What a converter left out is listed in
//! `Document::warnings`.
//!
//! Decoding: text, Markdown and HTML must be UTF-8 (a UTF-8 BOM is accepted, and UTF-16 with a
//! BOM is decoded); any other encoding, including an HTML `<meta charset>` other than UTF-8,
//! is rejected with the byte offset of the first invalid sequence. Convert such files first.

pub mod html;
pub mod indicators;
pub mod markdown;
pub mod normalize;
#[cfg(feature = "pdf")]
pub mod pdf;
pub mod segment;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use normalize::{normalize, refang, refang_text, reflow, Reflow};
pub use segment::{split_sentences, MAX_SENTENCE_BYTES};

use crate::error::{Error, Result};
use crate::types::{Block, Document, Sentence};

/// Operation counter for the linear-time tests: `add(n)` counts `n` units of work (bytes
/// scanned, nodes visited). Compiled to nothing outside tests.
pub(crate) mod work {
    #[cfg(test)]
    thread_local! {
        static OPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Counts `n` units of work on this thread.
    #[cfg(test)]
    pub(crate) fn add(n: u64) {
        OPS.with(|c| c.set(c.get().saturating_add(n)));
    }

    /// No-op outside tests.
    #[cfg(not(test))]
    #[inline(always)]
    pub(crate) fn add(_n: u64) {}

    /// Runs `f` and returns the work it counted on this thread.
    #[cfg(test)]
    pub(crate) fn count<T>(f: impl FnOnce() -> T) -> u64 {
        let before = OPS.with(std::cell::Cell::get);
        let out = f();
        std::hint::black_box(out);
        OPS.with(std::cell::Cell::get) - before
    }

    /// Asserts that the input `make(4 * n)` costs at most 6x the work of `make(n)` when run
    /// through `run` (linear work gives 4x, n log n a little more, quadratic 16x).
    #[cfg(test)]
    pub(crate) fn assert_linear<T>(
        name: &str,
        n: usize,
        make: impl Fn(usize) -> String,
        run: impl Fn(&str) -> T,
    ) {
        let (small, large) = (make(n), make(4 * n));
        let a = count(|| run(&small));
        let b = count(|| run(&large));
        assert!(a > 0, "{name}: no work counted");
        let ratio = b as f64 / a as f64;
        assert!(
            ratio <= 6.0,
            "{name}: {} bytes cost {a} operations, {} bytes cost {b} ({ratio:.1}x for 4x the input)",
            small.len(),
            large.len()
        );
    }
}

/// Default [`IngestOptions::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    /// By file extension (case-insensitive): `txt`/`text`/`log` -> Text, `md`/`markdown`/`mdown`/
    /// `mkd` -> Markdown, `html`/`htm`/`xhtml` -> Html, `pdf` -> Pdf; anything else -> `None`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" | "log" => Some(Format::Text),
            "md" | "markdown" | "mdown" | "mkd" => Some(Format::Markdown),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    /// By content: `%PDF-` -> Pdf; `<!doctype html` or `<html` (case-insensitive, after
    /// a BOM and leading whitespace/comments) -> Html; otherwise `None`.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let start = b
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len());
        let b = &b[start..];
        // The header must start the file; readers tolerate a little junk before it, so a
        // `%PDF-` within the first 1024 bytes also counts when the file starts with a comment.
        let head_pdf = bytes[..bytes.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-");
        if b.starts_with(b"%PDF-") || (head_pdf && b.first() == Some(&b'%')) {
            return Some(Format::Pdf);
        }
        let head: Vec<u8> = b.iter().take(512).map(u8::to_ascii_lowercase).collect();
        let mut h = &head[..];
        // Skip `<?xml ...?>` and comments before the doctype.
        loop {
            if h.starts_with(b"<?xml") || h.starts_with(b"<!--") {
                let end: &[u8] = if h.starts_with(b"<?") { b"?>" } else { b"-->" };
                match h.windows(end.len()).position(|w| w == end) {
                    Some(p) => {
                        h = &h[p + end.len()..];
                        let ws = h
                            .iter()
                            .position(|c| !c.is_ascii_whitespace())
                            .unwrap_or(h.len());
                        h = &h[ws..];
                    }
                    None => break,
                }
            } else {
                break;
            }
        }
        if h.starts_with(b"<!doctype html") || h.starts_with(b"<html") {
            return Some(Format::Html);
        }
        None
    }

    /// From a MIME type (parameters such as `; charset=utf-8` are ignored): `text/plain` ->
    /// Text, `text/markdown`/`text/x-markdown` -> Markdown, `text/html`/`application/xhtml+xml`
    /// -> Html, `application/pdf`/`application/x-pdf` -> Pdf.
    pub fn from_mime(mime: &str) -> Option<Format> {
        let essence = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/plain" => Some(Format::Text),
            "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Format::Html),
            "application/pdf" | "application/x-pdf" => Some(Format::Pdf),
            _ => None,
        }
    }
}

/// Limits and overrides for ingestion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestOptions {
    /// Largest accepted input in bytes; larger inputs are refused with [`Error::TooLarge`]
    /// before they are read. Default [`DEFAULT_MAX_BYTES`] (64 MiB).
    pub max_bytes: u64,
    /// Format override; `None` (the default) detects it from the extension, then the content.
    pub format: Option<Format>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            format: None,
        }
    }
}

/// Reads, decodes, normalises and segments a report file. The size is checked from the file's
/// metadata before reading, and reading stops at `max_bytes + 1` bytes (a file that grows
/// meanwhile is still refused), so memory stays bounded. The format is `opts.format`, else the
/// extension, else sniffed from the content, else plain text.
pub fn load_path(path: &Path, opts: &IngestOptions) -> Result<Document> {
    let too_large = |size: u64| Error::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: opts.max_bytes,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::invalid(
            path,
            "is a directory, expected a report file",
        ));
    }
    if meta.len() > opts.max_bytes {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(opts.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > opts.max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    let format = opts.format.or_else(|| Format::from_path(path));
    let source = path.to_string_lossy();
    from_bytes(&source, &bytes, format, opts)
}

/// Decodes, normalises and segments `bytes` (an upload, a fetched URL). `format` (or
/// `opts.format` when `format` is `None`) overrides sniffing; without either the content is
/// sniffed and defaults to plain text.
pub fn from_bytes(
    source: &str,
    bytes: &[u8],
    format: Option<Format>,
    opts: &IngestOptions,
) -> Result<Document> {
    let _span = tracing::info_span!("ingest", source, bytes = bytes.len()).entered();
    if bytes.len() as u64 > opts.max_bytes {
        return Err(Error::TooLarge {
            path: PathBuf::from(source),
            size: bytes.len() as u64,
            limit: opts.max_bytes,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(source, "empty (no text)"));
    }
    let format = format
        .or(opts.format)
        .or_else(|| Format::sniff(bytes))
        .unwrap_or(Format::Text);
    match format {
        Format::Pdf => pdf_document(source, bytes),
        _ => {
            let text = decode_text(source, bytes, format)?;
            from_text(source, &text, format)
        }
    }
}

#[cfg(feature = "pdf")]
fn pdf_document(source: &str, bytes: &[u8]) -> Result<Document> {
    if !bytes.starts_with(b"%PDF-") && Format::sniff(bytes) != Some(Format::Pdf) {
        return Err(Error::invalid(
            source,
            "not a PDF (it does not start with %PDF-)",
        ));
    }
    let out = pdf::extract(source, bytes, &pdf::PdfLimits::default())?;
    let mut doc = build(source, out.title, &out.text, None, Some(Reflow::Aggressive))?;
    doc.warnings.extend(out.warnings);
    Ok(doc)
}

#[cfg(not(feature = "pdf"))]
fn pdf_document(source: &str, _bytes: &[u8]) -> Result<Document> {
    Err(Error::Unsupported {
        path: PathBuf::from(source),
        message: "PDF input needs ttpmap built with the `pdf` feature".to_string(),
    })
}

/// Normalises and segments already-decoded text in the given format (`Format::Pdf` is
/// treated as text extracted from a PDF: wrapped lines are joined).
pub fn from_text(source: &str, text: &str, format: Format) -> Result<Document> {
    if text.trim().is_empty() {
        return Err(Error::invalid(source, "empty (no text)"));
    }
    match format {
        Format::Text => build(source, None, text, None, Some(Reflow::Conservative)),
        Format::Pdf => build(source, None, text, None, Some(Reflow::Aggressive)),
        Format::Markdown => {
            let (title, body, kinds) = markdown::markdown_to_blocks(text);
            build(source, title, &body, Some(&kinds), None)
        }
        Format::Html => {
            let html = html::convert(text);
            if !html.text.chars().any(char::is_alphanumeric) {
                return Err(Error::invalid(
                    source,
                    "HTML has no readable text (only scripts, styles or navigation)",
                ));
            }
            let mut doc = build(source, html.title, &html.text, Some(&html.blocks), None)?;
            doc.warnings = html.warnings;
            Ok(doc)
        }
    }
}

/// Normalises (and reflows) `raw` and splits it into sentences. `raw_kinds` is the converter's
/// kind of each line of `raw`; without it lines are classified by their look.
fn build(
    source: &str,
    title: Option<String>,
    raw: &str,
    raw_kinds: Option<&[Block]>,
    flow: Option<Reflow>,
) -> Result<Document> {
    let mut text = normalize(raw);
    if let Some(mode) = flow {
        text = reflow(&text, mode);
    }
    let kinds = line_kinds(raw, raw_kinds, &text);
    let mut line_starts = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .zip(kinds.iter().skip(1).copied())
        .peekable();
    let mut kind = kinds.first().copied().unwrap_or_default();
    let sentences: Vec<Sentence> = split_sentences(&text)
        .into_iter()
        .enumerate()
        .map(|(index, span)| {
            // Spans are ordered and never cross a line break: advance to the span's line.
            while let Some(&(_, k)) = line_starts.peek().filter(|(at, _)| *at <= span.start) {
                kind = k;
                line_starts.next();
            }
            Sentence {
                index,
                span,
                text: text[span.start..span.end].to_string(),
                block: kind,
            }
        })
        .collect();
    if sentences.is_empty() {
        return Err(Error::invalid(
            source,
            "no sentences found (the document has no readable text)",
        ));
    }
    let title = title.map(|t| normalize(&t)).filter(|t| !t.is_empty());
    Ok(Document {
        source: source.to_string(),
        title,
        text,
        sentences,
        warnings: Vec::new(),
    })
}

/// The kind of each line of `text` (the normalised form of `raw`). With the converter's kinds
/// (one per line of `raw`), each line of `raw` is normalised on its own and matched, in order,
/// to the lines of `text` (normalising keeps lines, but drops blank ones; a line that matches
/// nothing within a few lines is a paragraph). Without them (plain text, PDF) a line that
/// starts with a bullet or a list number is a list item and one with two ` | ` a table row.
fn line_kinds(raw: &str, raw_kinds: Option<&[Block]>, text: &str) -> Vec<Block> {
    const WINDOW: usize = 4;
    let Some(raw_kinds) = raw_kinds else {
        return text.split('\n').map(kind_by_look).collect();
    };
    let known: Vec<(String, Block)> = raw
        .split('\n')
        .zip(raw_kinds.iter().copied())
        .map(|(line, kind)| (normalize(line), kind))
        .filter(|(line, _)| !line.is_empty())
        .collect();
    let mut next = 0;
    text.split('\n')
        .map(|line| {
            if line.is_empty() {
                return Block::Paragraph;
            }
            let end = known.len().min(next + WINDOW);
            match known[next.min(end)..end]
                .iter()
                .position(|(l, _)| l == line)
            {
                Some(k) => {
                    next += k + 1;
                    known[next - 1].1
                }
                None => Block::Paragraph,
            }
        })
        .collect()
}

/// A plain-text line's kind by its look: bullets and list numbers, table rows.
fn kind_by_look(line: &str) -> Block {
    let l = line.trim_start();
    let numbered = {
        let digits = l.bytes().take_while(u8::is_ascii_digit).count();
        (1..=3).contains(&digits)
            && matches!(l.as_bytes().get(digits), Some(b'.' | b')'))
            && l.as_bytes().get(digits + 1) == Some(&b' ')
    };
    if numbered
        || ["- ", "* ", "\u{2022} ", "\u{2023} ", "\u{25E6} "]
            .iter()
            .any(|b| l.starts_with(b))
    {
        Block::ListItem
    } else if l.matches(" | ").count() >= 2 {
        Block::TableRow
    } else {
        Block::Paragraph
    }
}

/// Decodes text formats: UTF-8 (BOM stripped) or UTF-16 with a BOM; rejects binary data and
/// invalid UTF-8 with the offset of the problem.
fn decode_text(source: &str, bytes: &[u8], format: Format) -> Result<String> {
    if let Some(rest) = bytes
        .strip_prefix(b"\xFF\xFE")
        .or_else(|| bytes.strip_prefix(b"\xFE\xFF"))
    {
        let le = bytes.starts_with(b"\xFF\xFE");
        if rest.len() % 2 != 0 {
            return Err(Error::invalid(
                source,
                "invalid UTF-16: odd number of bytes after the byte-order mark",
            ));
        }
        let units = rest.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        return char::decode_utf16(units)
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|_| {
                    Error::invalid(
                        source,
                        format!("invalid UTF-16 (unpaired surrogate) at character {i}"),
                    )
                })
            })
            .collect();
    }
    let bom = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let bytes = &bytes[bom..];
    if let Some(pos) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::invalid(
            source,
            format!("binary data (NUL byte at offset {}); expected a text, Markdown, HTML or PDF report", bom + pos),
        ));
    }
    let head = &bytes[..bytes.len().min(8192)];
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C) || b == 0x7F)
        .count();
    if controls * 10 > head.len() {
        return Err(Error::invalid(
            source,
            format!("binary data ({controls} control bytes in the first {} bytes); expected a text, Markdown, HTML or PDF report", head.len()),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let offset = bom + e.valid_up_to(); // offset in the input, BOM included
            let mut msg = format!("invalid UTF-8 at byte offset {offset}; only UTF-8 (or UTF-16 with a BOM) is supported, convert the file first (e.g. iconv -t UTF-8)");
            if format == Format::Html {
                if let Some(cs) = declared_charset(bytes) {
                    msg.push_str(&format!(
                        "; the page declares charset {cs:?}, which is not supported"
                    ));
                }
            }
            Err(Error::invalid(source, msg))
        }
    }
}

/// The charset in `<meta charset=...>` or `content="...; charset=..."` within the first 4 KiB.
fn declared_charset(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let value: String = head[at..]
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            Format::from_path(Path::new("a/B.MD")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_path(Path::new("x.htm")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("x.pdf")), Some(Format::Pdf));
        assert_eq!(Format::from_path(Path::new("x.txt")), Some(Format::Text));
        assert_eq!(Format::from_path(Path::new("x")), None);
        assert_eq!(Format::sniff(b"%PDF-1.4\n"), Some(Format::Pdf));
        assert_eq!(
            Format::sniff(b"\xEF\xBB\xBF  <!DOCTYPE html><html>"),
            Some(Format::Html)
        );
        assert_eq!(
            Format::sniff(b"<?xml version=\"1.0\"?>\n<!-- x --><html>"),
            Some(Format::Html)
        );
        assert_eq!(Format::sniff(b"# Title"), None);
        assert_eq!(
            Format::from_mime("text/html; charset=utf-8"),
            Some(Format::Html)
        );
        assert_eq!(Format::from_mime("Application/PDF"), Some(Format::Pdf));
        assert_eq!(Format::from_mime("image/png"), None);
    }

    #[test]
    fn spans_index_the_text() {
        let doc = from_text(
            "<text>",
            "First one.  Second\u{00A0}one!\n\n- third",
            Format::Text,
        )
        .expect("doc");
        assert_eq!(doc.text, "First one. Second one!\n\n- third");
        let texts: Vec<&str> = doc.sentences.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, vec!["First one.", "Second one!", "third"]);
        for (i, s) in doc.sentences.iter().enumerate() {
            assert_eq!(s.index, i);
            assert_eq!(&doc.text[s.span.start..s.span.end], s.text);
        }
    }

    #[test]
    fn sentences_know_their_block() {
        let kinds = |doc: &Document| -> Vec<(String, Block)> {
            doc.sentences
                .iter()
                .map(|s| (s.text.clone(), s.block))
                .collect()
        };
        let md = "# Title\n\nFirst one. Second one.\n\n- item one\n  continued\n2. item two\n\n\
                  | Type | Indicator |\n|---|---|\n| IPv4 | 10.0.0.1 |\n\n```\ncmd.exe /c whoami\n```\n";
        let doc = from_text("a.md", md, Format::Markdown).expect("md");
        use Block::*;
        let want: Vec<(String, Block)> = [
            ("Title", Heading),
            ("First one.", Paragraph),
            ("Second one.", Paragraph),
            ("item one continued", ListItem),
            ("item two", ListItem),
            ("Type | Indicator", TableRow),
            ("IPv4 | 10.0.0.1", TableRow),
            ("cmd.exe /c whoami", Code),
        ]
        .into_iter()
        .map(|(t, k)| (t.to_string(), k))
        .collect();
        assert_eq!(kinds(&doc), want);

        let html =
            "<html><body><h2>Sub\u{00A0}title</h2><p>Para.</p><ul><li>An <b>item</b></li></ul>\
                    <table><tr><td>a</td><td>b</td></tr></table><pre>x = 1</pre></body></html>";
        let doc = from_text("a.html", html, Format::Html).expect("html");
        let want: Vec<(String, Block)> = [
            ("Sub title", Heading),
            ("Para.", Paragraph),
            ("An item", ListItem),
            ("a | b", TableRow),
            ("x = 1", Code),
        ]
        .into_iter()
        .map(|(t, k)| (t.to_string(), k))
        .collect();
        assert_eq!(kinds(&doc), want);

        let doc = from_text(
            "a.txt",
            "Intro line.\n\n- bullet one\n3) third\nA | B | C\n",
            Format::Text,
        )
        .expect("txt");
        let got: Vec<Block> = doc.sentences.iter().map(|s| s.block).collect();
        assert_eq!(got, [Paragraph, ListItem, ListItem, TableRow]);
        // Serialised sentences name their block unless it is a paragraph.
        let json = serde_json::to_value(&doc.sentences[1]).unwrap();
        assert_eq!(json["block"], "list_item");
        assert!(serde_json::to_value(&doc.sentences[0])
            .unwrap()
            .get("block")
            .is_none());
    }

    #[test]
    fn rejects_bad_text() {
        let o = IngestOptions::default();
        let err = |b: &[u8]| {
            from_bytes("in.txt", b, None, &o)
                .expect_err("must fail")
                .to_string()
        };
        assert!(err(b"").contains("empty"));
        assert!(err(b" \n\t \r\n").contains("empty"));
        assert!(err(b"abc\0def").contains("binary"));
        assert!(err(&[1, 2, 3, 4, 5, 6, 7, 8, b'a', b'b']).contains("binary"));
        let e = err(b"caf\xC3\xA9 ok \xFF\xFE bad");
        assert!(e.contains("invalid UTF-8 at byte offset 9"), "{e}");
        assert!(err(b"----\n====\n").contains("no sentences"));
        let e = from_bytes(
            "big.txt",
            b"0123456789",
            None,
            &IngestOptions {
                max_bytes: 5,
                format: None,
            },
        )
        .expect_err("too large");
        assert!(matches!(
            e,
            Error::TooLarge {
                size: 10,
                limit: 5,
                ..
            }
        ));
    }

    #[test]
    fn decodes_utf16_with_bom() {
        let mut b = vec![0xFF, 0xFE];
        for u in "Hello there. Bye.".encode_utf16() {
            b.extend(u.to_le_bytes());
        }
        let doc = from_bytes("u16.txt", &b, None, &IngestOptions::default()).expect("utf16");
        assert_eq!(doc.sentences.len(), 2);
    }

    #[test]
    fn html_only_scripts_is_an_error() {
        let e = from_bytes(
            "x.html",
            b"<html><head><script>var a=1;</script></head><body><script>go()</script></body></html>",
            None,
            &IngestOptions::default(),
        )
        .expect_err("no text");
        assert!(e.to_string().contains("no readable text"), "{e}");
    }
}
