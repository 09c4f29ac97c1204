//! Dataset loaders in column JSON (TRAM2, AnnoCTR sentence split).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use ttpmap_core::dataset;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = dataset::tram2_from_str(s, Path::new("fuzz/train.json"));
        let _ = dataset::annoctr_from_str(s, Path::new("fuzz/test.json"));
    }
});
