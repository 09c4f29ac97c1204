//! ttpmap-ml: models on candle for ttpmap.
//!
//! Owns the BERT encoder ([`encoder::bert`]), tokenisation ([`tokenize`]), Hugging Face model
//! folders ([`model_dir`]) and the sentence embedder ([`embed`]). Inference types hold frozen,
//! memory-mapped weights; training builds the same encoder on a `VarMap`.

pub mod embed;
pub mod encoder;
pub mod error;
pub mod model_dir;
pub mod tokenize;

pub use embed::{Embedder, EmbedderConfig};
pub use encoder::bert::{BertEncoder, Config as BertConfig, Mode};
pub use error::{Error, Result};
pub use model_dir::ModelDir;
pub use tokenize::TextTokenizer;
