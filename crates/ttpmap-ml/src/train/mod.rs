//! Training of the label-attention classifier ([`classifier`]) and the cross-encoder
//! ([`reranker`]): both describe themselves as a [`fit::Trainee`] and run the one loop,
//! [`fit::run`] (resume and fingerprints, interrupt checkpoints, EMA/SWA or best-epoch
//! selection, layer-wise LR decay, schedule, clipping, progress). [`data`] prepares their
//! training data (no tensors); [`job`] is one call per model from loaded inputs to a written
//! model folder. The primitives the loop is built from: losses ([`loss`]), the fused AdamW
//! optimizer with layer-wise LR decay and gradient clipping ([`optim`]), the warmup +
//! linear-decay schedule ([`schedule`]), weight averaging (EMA / SWA, [`average`]) and atomic
//! safetensors checkpoints ([`checkpoint`]).
//!
//! Optimizer and averaging state live in plain `Vec<f32>` buffers, never in candle graphs
//! (see `shared/docs/CANDLE_NOTES.md`, point 3): nothing here records a backprop graph except the
//! losses, which are meant to be differentiated.

pub mod average;
pub mod checkpoint;
pub mod classifier;
pub mod data;
pub mod fit;
pub mod job;
pub mod loss;
pub mod optim;
pub mod reranker;
pub mod schedule;

pub(crate) mod raw;

pub use average::{restore, snapshot, Ema, Swa};
pub use checkpoint::{load_safetensors, save_safetensors_atomic};
pub use fit::{LoopConfig, LoopEvent, LoopOutcome, LoopSetup, Selection, Trainee};
pub use loss::{asymmetric_loss, bce_with_logits, AslConfig, LossConfig};
pub use optim::{
    clip_grad_norm, llrd_groups, AdamWConfig, FusedAdamW, LlrdConfig, Param, ParamGroup,
};
pub use schedule::WarmupLinear;
