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
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The format of the input is known but not supported by this build (e.g. PDF without the
    /// `pdf` feature).
    #[error("{}: unsupported: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    /// A string is not an ATT&CK technique id (`T1234` or `T1234.001`).
    #[error(
        "not an ATT&CK technique id: {0:?} (expected T followed by 4 digits, optionally .NNN)"
    )]
    InvalidTechniqueId(String),
    /// A technique id is well formed but not in the loaded catalog.
    #[error("unknown ATT&CK technique {id} (not in ATT&CK {version})")]
    UnknownTechnique { id: String, version: String },
    /// A technique an analyst asked to add has no active form in the catalog (deprecated, or
    /// revoked without an active replacement); see [`crate::review::technique_to_add`].
    #[error("{}", why.message(id, version))]
    NotAddable {
        id: crate::TechniqueId,
        version: String,
        why: crate::review::NotAddable,
    },
    /// An argument given by the caller is out of its domain (e.g. a threshold outside [0, 1]).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A model backend failed while doing `task` (a tensor or tokenizer error in ttpmap-ml, a
    /// device failure): not the caller's input. `model` names the model folder; the backend's
    /// error is kept as the source. Servers answer it with a 5xx status and log it.
    #[error("{}: model failure while {task}", model.display())]
    Model {
        model: PathBuf,
        task: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Helper: an I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Helper: a model backend failure of the model in `model` while doing `task`.
    pub fn model(
        model: impl Into<PathBuf>,
        task: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Model {
            model: model.into(),
            task: task.into(),
            source: Box::new(source),
        }
    }

    /// Whether the error is a model backend failure ([`Error::Model`]) rather than a problem
    /// with the caller's input.
    pub fn is_model_failure(&self) -> bool {
        matches!(self, Error::Model { .. })
    }

    /// Helper: invalid content in `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            path: path.into(),
            message: message.into(),
        }
    }
}
