//! The integration tests of `ttpmap-core`: one test binary (`cargo test -p ttpmap-core --test
//! it`), one module per area. Data from ../shared (or `$TTPMAP_SHARED`) is read at run time;
//! golden files are under `snapshots/` (insta names them `it__<module>__<name>.snap`), fixtures
//! under `../fixtures/`.

mod attack;
mod dataset;
mod export;
mod ingest;
mod retrieve;

use std::path::{Path, PathBuf};

/// The shared data folder: `$TTPMAP_SHARED`, else `../shared` beside the repository.
fn shared_dir() -> PathBuf {
    std::env::var_os("TTPMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// `rel` under the shared `data/` folder; fails naming it when it is missing.
fn data(rel: &str) -> PathBuf {
    let p = shared_dir().join("data").join(rel);
    assert!(
        p.exists(),
        "shared data missing: {} (set TTPMAP_SHARED to the shared folder)",
        p.display()
    );
    p
}
