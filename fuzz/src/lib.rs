//! Shared checks of the fuzz targets: what every ingested document must satisfy.

use ttpmap_core::ingest::{self, Format, IngestOptions};
use ttpmap_core::Document;

/// Ingests `data` as `format` (errors are fine: they are the clear refusals the library
/// promises); an accepted document must keep the invariants of `ttpmap_core::ingest`.
pub fn ingest(data: &[u8], format: Format, source: &str) {
    if let Ok(doc) = ingest::from_bytes(source, data, Some(format), &IngestOptions::default()) {
        check(&doc);
    }
}

/// The `Document` invariants stated in `ttpmap_core::ingest` (spans index the text, in order,
/// non-empty, no longer than `MAX_SENTENCE_BYTES`).
pub fn check(doc: &Document) {
    assert!(!doc.sentences.is_empty(), "a document has sentences");
    let mut end = 0;
    for (i, s) in doc.sentences.iter().enumerate() {
        assert_eq!(s.index, i);
        assert!(
            s.span.start >= end && s.span.start < s.span.end,
            "ordered, non-empty spans"
        );
        assert_eq!(&doc.text[s.span.start..s.span.end], s.text);
        assert!(s.text.len() <= ingest::MAX_SENTENCE_BYTES);
        end = s.span.end;
    }
}
