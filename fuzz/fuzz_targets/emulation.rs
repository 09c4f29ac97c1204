//! Emulation plans (YAML, serde_norway / libyaml).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use ttpmap_core::dataset;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = dataset::emulation_plan_from_str(s, Path::new("fuzz/plan.yaml"), "fuzz");
    }
});
