//! The integration tests of `ttpmap-core`: one test binary (`cargo test -p ttpmap-core --test
//! it`), one module per area. Data from ../shared (or `$TTPMAP_SHARED`) is read at run time;
//! golden files are under `snapshots/` (insta names them `it__<module>__<name>.snap`), fixtures
//! under `../fixtures/`.

mod attack;
mod dataset;
mod export;
mod ingest;
mod retrieve;
