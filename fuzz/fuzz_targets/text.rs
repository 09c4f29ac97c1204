//! Plain text: decoding, normalisation, refanging, reflow and sentence segmentation, also
//! called directly on text that is not normalised first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ttpmap_core::ingest::{self, Format, Reflow};

fuzz_target!(|data: &[u8]| {
    ttpmap_fuzz::ingest(data, Format::Text, "fuzz.txt");
    if let Ok(s) = std::str::from_utf8(data) {
        for span in ingest::split_sentences(s) {
            assert!(s.is_char_boundary(span.start) && s.is_char_boundary(span.end));
            assert!(span.len() <= ingest::MAX_SENTENCE_BYTES);
        }
        let _ = ingest::reflow(s, Reflow::Conservative);
        let _ = ingest::refang(s);
        let _ = ingest::refang_text(s);
    }
});
