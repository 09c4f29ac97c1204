//! ttpmap-ml: models on candle for ttpmap.
//!
//! Owns the BERT encoder ([`encoder::bert`]), tokenisation ([`tokenize`]), Hugging Face model
//! folders ([`model_dir`]), the sentence embedder ([`embed`]), dense kNN retrieval ([`dense`], with shipped text embeddings in [`dense_store`]),
//! the label-attention classifier ([`head`], [`classifier`]) and its model directory
//! ([`artifact`]), the cross-encoder reranker ([`crossencoder`], [`rerank`]), and the training primitives ([`train`]: losses, fused AdamW with layer-wise
//! LR decay, schedules, EMA/SWA, atomic checkpoints). Inference types hold frozen,
//! memory-mapped weights; training builds the same encoder on a `VarMap`.

pub mod artifact;
pub mod classifier;
pub mod crossencoder;
pub mod dense;
pub mod dense_store;
pub mod embed;
pub mod encoder;
pub mod error;
pub mod head;
pub mod model_dir;
pub mod rerank;
pub mod tokenize;
pub mod train;
pub mod trained;

pub use artifact::{Artifact, Manifest};
pub use candle_core::Device;
pub use classifier::{Classifier, ClassifierModel, ClassifierScorer, TrainableClassifier};
pub use crossencoder::{CrossEncoder, CrossEncoderOptions, Ranked, TrainableCrossEncoder};
pub use dense::{DenseIndex, DenseScorer, IndexKey};
pub use embed::{Embedder, EmbedderConfig};
pub use encoder::bert::{BertEncoder, Config as BertConfig, Mode};
pub use error::{Error, Result};
pub use model_dir::ModelDir;
pub use tokenize::TextTokenizer;
