//! Transformer encoders. Each model file follows candle-transformers' shape: a module doc linking
//! the paper, a `Config` mirroring Hugging Face's `config.json`, and `load(vb, &cfg)`.

pub mod bert;
pub mod bf16;
mod fused;
mod fused_train;
pub mod int8;

pub use bert::{BertEncoder, Config, HiddenAct, LoadReport, Mode, TrainableOptions};
pub use bf16::Precision;
pub use fused_train::backward;
pub(crate) use fused_train::{dropout_mask, splitmix};
