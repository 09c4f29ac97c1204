//! Markdown: the hand-written converter and its inline passes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ttpmap_core::ingest::Format;

fuzz_target!(|data: &[u8]| {
    ttpmap_fuzz::ingest(data, Format::Markdown, "fuzz.md");
});
