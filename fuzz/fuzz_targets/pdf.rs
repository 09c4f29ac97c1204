//! PDF: the text extractor behind `from_bytes` with `Format::Pdf`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ttpmap_core::ingest::Format;

fuzz_target!(|data: &[u8]| {
    ttpmap_fuzz::ingest(data, Format::Pdf, "fuzz.pdf");
});
