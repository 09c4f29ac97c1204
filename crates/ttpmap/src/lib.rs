//! The ttpmap application as a library: the command-line interface ([`cli`], [`cmd`]), the
//! HTTP service and review UI ([`serve`]), the scoring-method registry ([`methods`]) and asset
//! resolution ([`assets`], [`hub`], [`download`]). The `ttpmap` binary (`main.rs`) only parses
//! the command line, runs one command and maps the result to an exit code; tests and other
//! programs call the same functions in-process (e.g. [`serve::router`]).

pub mod assets;
pub mod cli;
pub mod cmd;
pub mod download;
pub mod hub;
pub mod methods;
pub mod output;
pub mod progress;
pub mod render;
pub mod rerank;
pub mod serve;

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers of the crate's unit tests.
    use std::path::{Path, PathBuf};

    /// The shared data folder: `$TTPMAP_SHARED`, else `../shared` beside the checkout.
    pub fn shared_dir() -> PathBuf {
        std::env::var_os("TTPMAP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
    }
}
