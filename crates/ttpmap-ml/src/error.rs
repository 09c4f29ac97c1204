//! The crate's error type: one `#[non_exhaustive]` enum that keeps every source error
//! (candle, tokenizers, I/O, JSON) and names the file or model folder an input error is about.

use std::path::PathBuf;

/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shapes, dtypes, device, or a tensor missing from a checkpoint).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading a file or folder failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A model's `config.json` could not be parsed.
    #[error("invalid model config {}: {source}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error{}: {source}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Tokenizer {
        /// The tokenizer file, when the error is about loading it.
        path: Option<PathBuf>,
        /// The underlying error (`tokenizers::Error` is a boxed error).
        #[source]
        source: tokenizers::Error,
    },

    /// A model folder lacks a required file.
    #[error("model folder {} has no {expected}", dir.display())]
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// What was looked for, e.g. `config.json` or `model.safetensors or pytorch_model.bin`.
        expected: String,
    },

    /// A weights file lacks a tensor the config requires.
    #[error("weights file {} has no tensor {name}", file.display())]
    MissingTensor {
        /// The weights file.
        file: PathBuf,
        /// The tensor name looked for (without the optional `bert.` prefix).
        name: String,
    },

    /// A tensor in a weights file does not have the shape the config implies.
    #[error("tensor {name} in {} has shape {found:?}, expected {expected:?} from config.json", file.display())]
    TensorShape {
        /// The weights file.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape implied by `config.json`.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },

    /// The tokenizer can produce ids that the embedding matrix has no row for.
    #[error(
        "model folder {}: tokenizer vocabulary has {tokenizer} tokens but the word embeddings have {embeddings} rows",
        dir.display()
    )]
    VocabMismatch {
        /// The model folder.
        dir: PathBuf,
        /// Vocabulary size of the tokenizer (with added tokens).
        tokenizer: usize,
        /// Rows of `embeddings.word_embeddings.weight`.
        embeddings: usize,
    },

    /// Writing a file failed (checkpoints are written to a temporary file, then renamed).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written (the final path, not the temporary one).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file is not a valid safetensors file (truncated, garbage, inconsistent header).
    #[error("invalid safetensors file {}: {source}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// A tensor in a checkpoint cannot be saved or loaded (e.g. an unsupported dtype).
    #[error("checkpoint {}: tensor {name}: {problem}", path.display())]
    CheckpointTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// Optimizer state given to `load_state` lacks an entry or has one of the wrong shape.
    #[error("optimizer state entry {name}: {problem}")]
    OptimizerState {
        /// The state entry, e.g. `head.queries.m` or `__step`.
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// The global gradient norm is NaN or infinite (the step must be skipped).
    #[error("gradient norm is not finite ({norm})")]
    NonFiniteGradNorm {
        /// The norm computed.
        norm: f64,
    },

    /// A classifier artifact (model directory) is incomplete, corrupt or does not match its
    /// manifest; `path` is the offending file or folder.
    #[error("invalid classifier artifact {}: {message}", path.display())]
    Artifact {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A JSON file of an artifact (manifest.json, results.json) could not be parsed.
    #[error("invalid JSON in {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// An error from ttpmap-core (evaluation, datasets).
    #[error(transparent)]
    Core(#[from] ttpmap_core::Error),

    /// Training was interrupted; a resumable checkpoint was written.
    #[error("training interrupted; checkpoint written to {}", checkpoint.display())]
    Interrupted {
        /// The checkpoint file.
        checkpoint: PathBuf,
    },

    /// An argument is outside what the model supports (e.g. a sequence longer than the
    /// position embeddings, or mismatched batch shapes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
