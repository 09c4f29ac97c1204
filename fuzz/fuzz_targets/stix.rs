//! STIX bundles: the ATT&CK catalog loader (JSON, markup cleaning, revocation chains).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use ttpmap_core::attack::Catalog;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Catalog::from_slice(data, Path::new("fuzz.json")) {
        for t in c.techniques() {
            let _ = c.resolve(&t.id);
        }
    }
});
