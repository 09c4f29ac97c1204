//! HTML: html5ever via the depth cap and the iterative walk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ttpmap_core::ingest::Format;

fuzz_target!(|data: &[u8]| {
    ttpmap_fuzz::ingest(data, Format::Html, "fuzz.html");
});
