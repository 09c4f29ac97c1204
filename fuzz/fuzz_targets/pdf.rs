//! PDF: the text extractor behind `from_bytes` with `Format::Pdf`.
//!
//! pdf-extract panics on some broken files (e.g. a missing object); `ingest::pdf` contains
//! that with `catch_unwind` and returns an error. libfuzzer-sys's panic hook would abort even
//! on a caught panic, so this target installs a silent hook: a panic that escapes ttpmap is
//! still a crash (libfuzzer-sys aborts when the panic reaches it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ttpmap_core::ingest::Format;

fuzz_target!(|data: &[u8]| {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    ttpmap_fuzz::ingest(data, Format::Pdf, "fuzz.pdf");
});
