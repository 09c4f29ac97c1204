//! The integration tests of the `ttpmap` application: one test binary (`cargo test -p ttpmap
//! --test it`), one module per area. Each runs the built `ttpmap` binary (the CLI, or `ttpmap
//! serve` on loopback through [`support`]) with the ATT&CK bundle from ../shared (or
//! `$TTPMAP_SHARED`); nothing is downloaded.

mod cli;
mod default_model;
mod dense_cli;
mod rerank_cli;
mod serve_attacks;
mod serve_browser;
mod serve_crash;
mod support;
