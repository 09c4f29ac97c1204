//! The one error type of ttpmap-core.
//!
//! Invariant: every error about input names the file (or the source it came from) and says
//! what was expected; sources are kept (`#[source]`), never flattened into strings.

use std::path::PathBuf;

/// Result alias for ttpmap-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by ttpmap-core. Library code never panics on input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be parsed (line and column are in the source).
    #[error("{}: malformed JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A YAML document could not be parsed.
    #[error("{}: malformed YAML: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// Input was read but its content is not what was expected (empty, binary, wrong shape...).
    /// `path` names the file or source (a URL, `<stdin>`, `<text>`).
    #[error("{}: {message}", path.display())]
    InvalidInput { path: PathBuf, message: String },
    /// Input is larger than the configured limit.
    #[error("{}: too large ({size} bytes; the limit is {limit} bytes)", path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    /// The format of the input is known but not supported by this build (e.g. PDF without the
    /// `pdf` feature).
    #[error("{}: unsupported: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    /// A string is not an ATT&CK technique id (`T1234` or `T1234.001`).
    #[error("not an ATT&CK technique id: {0:?} (expected T followed by 4 digits, optionally .NNN)")]
    InvalidTechniqueId(String),
    /// A technique id is well formed but not in the loaded catalog.
    #[error("unknown ATT&CK technique {id} (not in ATT&CK {version})")]
    UnknownTechnique { id: String, version: String },
    /// An argument given by the caller is out of its domain (e.g. a threshold outside [0, 1]).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Helper: an I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Helper: invalid content in `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidInput { path: path.into(), message: message.into() }
    }
}
