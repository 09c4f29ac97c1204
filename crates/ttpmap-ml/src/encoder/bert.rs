//! BERT encoder ([Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
//! Language Understanding"](https://arxiv.org/abs/1810.04805)), written on candle so that it can
//! be both fine-tuned and run fast.
//!
//! Owns: [`Config`] (mirrors Hugging Face `config.json`), the embeddings, self-attention with a
//! padding mask, the feed-forward blocks, the pooler, mean pooling and L2 normalisation.
//!
//! Invariants:
//! - [`Mode::Train`] uses only differentiable, composed operations (LayerNorm and softmax built
//!   from basic ops) and real dropout with the config's probabilities; [`Mode::Eval`] uses candle's
//!   fused LayerNorm / softmax kernels (which have no backward pass) and no dropout. With dropout
//!   probabilities of 0 both modes compute the same function.
//! - Tensor names follow Hugging Face's `BertModel` (`embeddings.*`, `encoder.layer.N.*`,
//!   `pooler.*`); a `bert.` prefix (as saved by `BertForSequenceClassification`) is detected and
//!   accepted. The pooler is optional.
//! - Inputs are `[batch, seq]` token ids (u32 or i64), optional token type ids of the same shape
//!   (zeros when absent) and an optional attention mask of the same shape (1 = token, 0 = padding;
//!   all ones when absent). The output is `last_hidden_state`, `[batch, seq, hidden]`.

use candle_core::{DType, Device, IndexOp, Module, Tensor, Var, D};
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::bf16::{Bf16Linear, Precision};
use super::fused::{embed_packed, gelu_in_place, FusedLayer, Norm, Products, Tables};
use super::fused_train::{Dropout, LayerWeights, TrainLayers, LAYER_TENSORS};
use super::int8::Int8Linear;
use crate::{Error, Result};

/// Activation of the feed-forward block, as named by `hidden_act` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// Exact GELU with erf (Hugging Face `"gelu"`). The default.
    #[default]
    Gelu,
    /// GELU with the tanh approximation (Hugging Face `"gelu_new"`, also `"gelu_pytorch_tanh"`).
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    /// ReLU.
    Relu,
}

impl HiddenAct {
    fn apply(self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(match self {
            HiddenAct::Gelu if x.dtype() == DType::F32 && x.device().is_cpu() => match mode {
                Mode::Eval => x.contiguous()?.apply_op1_no_bwd(&FastGeluErf)?,
                // Same values, with the gradient from the same fast erf (candle's `gelu_erf`
                // runs erf in f64 element by element, forward and backward).
                Mode::Train => x.contiguous()?.apply_op1(FastGeluErf)?,
            },
            HiddenAct::Gelu => x.gelu_erf()?,
            HiddenAct::GeluNew => x.gelu()?,
            HiddenAct::Relu => x.relu()?,
        })
    }
}

/// Exact (erf) GELU in f32 for inference on CPU, with erf from the rational approximation of
/// Eigen's `generic_fast_erf_float` (x clamped to [-4, 4], odd degree-13 numerator over even
/// degree-8 denominator; error a few ulp). candle's `gelu_erf` evaluates erf in f64 one element
/// at a time, which costs as much as a third of MiniLM's matmuls; this loop vectorises.
struct FastGeluErf;

#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Exact GELU with the erf of [`erf_f32`].
#[inline(always)]
pub(super) fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// d/dx GELU(x) = Phi(x) + x phi(x), with the erf of [`erf_f32`].
struct FastGeluErfGrad;

/// d/dx GELU(x) = Phi(x) + x phi(x) ([`FastGeluErfGrad`] on one value).
#[inline(always)]
pub(super) fn gelu_grad_f32(x: f32) -> f32 {
    // 1 / sqrt(2 pi).
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
        + x * INV_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// Elements per parallel task of the element-wise maps (smaller inputs run on one thread).
const MAP_CHUNK: usize = 1 << 14;

/// The contiguous f32 values of a custom op's input.
pub(crate) fn f32_input<'a>(
    name: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{name}: input not contiguous")))?;
    match storage {
        candle_core::CpuStorage::F32(data) => Ok(&data[start..end]),
        _ => Err(candle_core::Error::Msg(format!("{name}: f32 only"))),
    }
}

/// `f` on the values of `t`, a contiguous f32 tensor on the CPU ([`f32_input`] for a
/// tensor rather than a custom op's storage).
pub(crate) fn with_f32<R>(
    name: &str,
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(cpu) => Ok(f(f32_input(name, cpu, layout)?)),
        _ => candle_core::bail!("{name}: a CPU tensor was expected"),
    }
}

fn map_f32(
    name: &str,
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    f: impl Fn(f32) -> f32 + Sync,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let src = f32_input(name, storage, layout)?;
    let out = par_chunks(src, MAP_CHUNK, &Map(f));
    Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
}

/// What [`par_chunks`] runs on each chunk. `run` is `#[inline(always)]` in every impl, so that
/// its loops are compiled inside [`wide_simd`]'s AVX-512 function (a closure there is inlined
/// only when LLVM finds it cheap enough, and the softmax's was not).
pub(super) trait ChunkKernel: Sync {
    fn run(&self, dst: &mut [f32], src: &[f32]);
}

/// `dst[i] = f(src[i])`.
pub(super) struct Map<F>(pub(super) F);

impl<F: Fn(f32) -> f32 + Sync> ChunkKernel for Map<F> {
    #[inline(always)]
    fn run(&self, dst: &mut [f32], src: &[f32]) {
        for (y, &x) in dst.iter_mut().zip(src) {
            *y = (self.0)(x);
        }
    }
}

/// A new vector the length of `src`, filled by `kernel` over chunks of `chunk` values, on the
/// thread pool when there is more than one chunk.
fn par_chunks(src: &[f32], chunk: usize, kernel: &impl ChunkKernel) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; src.len()];
    if src.len() > chunk {
        out.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(dst, src)| wide_simd(kernel, dst, src));
    } else {
        wide_simd(kernel, &mut out, src);
    }
    out
}

/// Runs `kernel` compiled for the widest vectors this CPU has ([`simd_level`]: AVX-512, else
/// AVX2; the build targets baseline x86-64, where our loops vectorise 4 floats wide). Same
/// operations in the same order (Rust does not fuse multiply-adds on its own), so the results
/// do not depend on the path.
pub(super) fn wide_simd(kernel: &impl ChunkKernel, dst: &mut [f32], src: &[f32]) {
    let ceiling = SIMD_CEILING.load(std::sync::atomic::Ordering::Relaxed);
    run_at(simd_level().min(ceiling), kernel, dst, src)
}

/// A ceiling on the level [`wide_simd`] runs at, for tests that force the narrower paths a
/// CPU without AVX-512 (or AVX2) takes; `u8::MAX` is none. The paths give the same values, so
/// a ceiling never changes a result, only its speed.
static SIMD_CEILING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// 2 with AVX-512 (F, DQ, VL, BW), 1 with AVX2, 0 otherwise; `TTPMAP_SIMD=avx2` or
/// `=baseline` caps it (the path a CPU without AVX-512, or without AVX2, takes).
pub(super) fn simd_level() -> u8 {
    static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("TTPMAP_SIMD").ok().as_deref() {
            Some("baseline") => 0,
            Some("avx2") => 1,
            _ => 2,
        };
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
                return cap.min(2);
            }
            if has!("avx2") {
                return cap.min(1);
            }
        }
        0
    })
}

/// `kernel` compiled for `level` (at most [`simd_level`]; a lower one forces a narrower path).
fn run_at(level: u8, kernel: &impl ChunkKernel, dst: &mut [f32], src: &[f32]) {
    assert!(
        level <= simd_level(),
        "SIMD level {level} is not available here"
    );
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2")]
        fn avx512(kernel: &impl ChunkKernel, dst: &mut [f32], src: &[f32]) {
            kernel.run(dst, src)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(kernel: &impl ChunkKernel, dst: &mut [f32], src: &[f32]) {
            kernel.run(dst, src)
        }
        match level {
            // SAFETY: the CPU has every feature `avx512` is compiled for (`simd_level`).
            2 => return unsafe { avx512(kernel, dst, src) },
            // SAFETY: the CPU has AVX2 (`simd_level`).
            1 => return unsafe { avx2(kernel, dst, src) },
            _ => {}
        }
    }
    kernel.run(dst, src)
}

/// `exp(x)` in f32 without a libm call, so that a loop over it vectorises: `x = n ln2 + r`,
/// `|r| <= ln2 / 2`, `exp(r)` by its degree-7 Taylor polynomial (relative error under 2e-7
/// there, about one f32 ulp) and `2^n` written into the exponent bits. 0 below -87.3 (where
/// f32 turns subnormal), and x is capped at 88.3 (f32's largest `exp` is at 88.72).
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.3);
    let k = xc * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let ni = (k.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        p * scale
    }
}

/// Softmax over the last dimension for inference: candle's fused kernel calls libm's `expf`
/// once per element (7% of the encoder's time at batch 32); this one uses [`exp_f32`], which
/// vectorises. Same arithmetic otherwise (row max subtracted, sum, divide). Not differentiable.
struct FastSoftmaxLastDim;

impl candle_core::CustomOp1 for FastSoftmaxLastDim {
    fn name(&self) -> &'static str {
        "fast-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let src = f32_input(self.name(), storage, layout)?;
        let dim = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        // Whole rows per chunk.
        let chunk = (MAP_CHUNK / dim).max(1) * dim;
        let out = par_chunks(src, chunk, &SoftmaxRows(dim));
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Rows of this many values, each through [`softmax_row`].
struct SoftmaxRows(usize);

impl ChunkKernel for SoftmaxRows {
    #[inline(always)]
    fn run(&self, dst: &mut [f32], src: &[f32]) {
        for (dst, src) in dst.chunks_exact_mut(self.0).zip(src.chunks_exact(self.0)) {
            softmax_row(src, dst);
        }
    }
}

/// One row of [`FastSoftmaxLastDim`]. The max and the sum run in 8 lanes and the exponentials
/// in a loop of their own, so that each vectorises (a running sum beside the exponential
/// would keep the loop scalar).
#[inline(always)]
pub(super) fn softmax_row(src: &[f32], dst: &mut [f32]) {
    const L: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; L];
    let chunks = src.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = exp_f32(x - max);
    }
    let mut sums = [0f32; L];
    let chunks = dst.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let sum: f32 = sums.iter().chain(rest).sum();
    let inv = 1.0 / sum;
    for y in dst.iter_mut() {
        *y *= inv;
    }
}

/// Inference softmax over the last dimension: [`FastSoftmaxLastDim`] for f32 on the CPU,
/// candle's fused kernel otherwise.
fn softmax_last_dim_eval(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::F32 && x.device().is_cpu() {
        Ok(x.contiguous()?.apply_op1_no_bwd(&FastSoftmaxLastDim)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(x)?)
    }
}

impl candle_core::CustomOp1 for FastGeluErfGrad {
    fn name(&self) -> &'static str {
        "fast-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        map_f32(self.name(), storage, layout, gelu_grad_f32)
    }
}

impl candle_core::CustomOp1 for FastGeluErf {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let d = arg.contiguous()?.apply_op1_no_bwd(&FastGeluErfGrad)?;
        Ok(Some(grad_res.mul(&d)?))
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        map_f32(self.name(), storage, layout, gelu_erf_f32)
    }
}

/// BERT hyper-parameters, mirroring Hugging Face's `config.json` (`BertConfig`).
///
/// Every field has Hugging Face's default, so a partial file parses. Unknown fields are ignored
/// (not denied, unlike this project's own configs): real `config.json` files carry many keys that
/// do not concern the encoder (`use_cache`, `transformers_version`, `id2label`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Rows of the word-embedding matrix. Default 30522.
    pub vocab_size: usize,
    /// Width of every hidden state. Default 768.
    pub hidden_size: usize,
    /// Number of transformer layers. Default 12.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`. Default 12.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block. Default 3072.
    pub intermediate_size: usize,
    /// Feed-forward activation. Default `gelu` (exact, erf).
    pub hidden_act: HiddenAct,
    /// Dropout on embeddings and on each sub-layer's output in training mode. Default 0.1.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities in training mode. Default 0.1.
    pub attention_probs_dropout_prob: f64,
    /// Longest sequence the position embeddings cover. Default 512.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding matrix. Default 2.
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initialisation of new weights. Default 0.02.
    pub initializer_range: f64,
    /// LayerNorm epsilon. Default 1e-12.
    pub layer_norm_eps: f64,
    /// Id of the padding token. Default 0.
    pub pad_token_id: u32,
    /// Only `"absolute"` is supported. Default `"absolute"`.
    pub position_embedding_type: String,
    /// Hugging Face model type, e.g. `"bert"`. Default none.
    pub model_type: Option<String>,
    /// Hugging Face architectures, e.g. `["BertModel"]`. Default empty.
    pub architectures: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".to_string(),
            model_type: None,
            architectures: Vec::new(),
        }
    }
}

impl Config {
    /// Checks the invariants the encoder relies on; the message says which field is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidArgument(format!("config {name} must be > 0")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::InvalidArgument(format!(
                "config hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::InvalidArgument(format!(
                    "config {name} must be in [0, 1), got {p}"
                )));
            }
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::InvalidArgument(format!(
                "config position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            )));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// A copy with both dropout probabilities set to `p` (0 disables dropout in training mode).
    pub fn with_dropout(&self, p: f64) -> Self {
        Self {
            hidden_dropout_prob: p,
            attention_probs_dropout_prob: p,
            ..self.clone()
        }
    }
}

/// Names and shapes of the encoder's tensors (without pooler and without any `bert.` prefix),
/// in a fixed order, as implied by `cfg`.
pub fn encoder_tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![cfg.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![h]),
        ("embeddings.LayerNorm.bias".to_string(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out
}

/// Names and shapes of the pooler's tensors.
pub fn pooler_tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    vec![
        ("pooler.dense.weight".to_string(), vec![h, h]),
        ("pooler.dense.bias".to_string(), vec![h]),
    ]
}

/// Old TensorFlow-converted checkpoints name LayerNorm parameters `gamma` / `beta`.
pub(crate) fn legacy_layer_norm_name(name: &str) -> Option<String> {
    if let Some(stem) = name.strip_suffix("LayerNorm.weight") {
        Some(format!("{stem}LayerNorm.gamma"))
    } else {
        name.strip_suffix("LayerNorm.bias")
            .map(|stem| format!("{stem}LayerNorm.beta"))
    }
}

/// The prefix under which a checkpoint stores the encoder: `"bert."` when its names carry it
/// (`BertForSequenceClassification`), otherwise `""` (`BertModel`, sentence-transformers).
pub fn detect_prefix(has: impl Fn(&str) -> bool) -> &'static str {
    if !has("embeddings.word_embeddings.weight") && has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

/// Forward mode: training (differentiable composed ops, dropout) or inference (fused kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Composed, differentiable LayerNorm / softmax and dropout with the config's probabilities.
    Train,
    /// Fused LayerNorm / softmax kernels, no dropout. Not differentiable.
    Eval,
}

fn dropout(x: Tensor, p: f64, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Train && p > 0.0 {
        Ok(candle_nn::ops::dropout(&x, p as f32)?)
    } else {
        Ok(x)
    }
}

/// Softmax over the last dimension built from basic (differentiable) ops. The row maximum is
/// subtracted for stability and detached: softmax is shift invariant, so gradients are exact.
pub fn softmax_last_dim_composed(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&sum)?)
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, h: usize, eps: f64) -> Result<Self> {
        let (w, b) = if !vb.contains_tensor("weight") && vb.contains_tensor("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Self {
            weight: vb.get_with_hints(h, w, Init::Const(1.0))?,
            bias: vb.get_with_hints(h, b, Init::Const(0.0))?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match mode {
            Mode::Eval => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?),
            Mode::Train => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
            }
        }
    }
}

/// `l` on `x`: in [`Mode::Train`] on bf16 AMX tiles when asked for
/// ([`super::bf16::train_bf16`]), else candle's f32 `Linear`.
fn train_linear(l: &Linear, x: &Tensor, mode: Mode) -> Result<Tensor> {
    if mode == Mode::Train && super::bf16::train_bf16() {
        let y = super::bf16::linear_train(x, l.weight())?;
        return Ok(match l.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        });
    }
    Ok(l.forward(x)?)
}

fn linear(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

#[derive(Debug, Clone)]
struct Embeddings {
    word: Embedding,
    position: Tensor,
    token_type: Embedding,
    layer_norm: LayerNorm,
    dropout: f64,
    hidden: usize,
}

impl Embeddings {
    fn load(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        let get = |rows: usize, name: &str| vb.get_with_hints((rows, h), name, Init::Const(0.0));
        Ok(Self {
            word: Embedding::new(get(cfg.vocab_size, "word_embeddings.weight")?, h),
            position: get(cfg.max_position_embeddings, "position_embeddings.weight")?,
            token_type: Embedding::new(
                get(cfg.type_vocab_size, "token_type_embeddings.weight")?,
                h,
            ),
            layer_norm: LayerNorm::load(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
            hidden: h,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, mode: Mode) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let max_pos = self.position.dim(0)?;
        if seq > max_pos {
            return Err(Error::InvalidArgument(format!(
                "sequence of {seq} tokens is longer than max_position_embeddings {max_pos}"
            )));
        }
        let words = self.word.forward(input_ids)?;
        let types = self.token_type.forward(token_type_ids)?;
        let pos = self.position.narrow(0, 0, seq)?;
        let x = (words + types)?.broadcast_add(&pos)?;
        debug_assert_eq!(x.dim(D::Minus1).ok(), Some(self.hidden));
        let x = self.layer_norm.forward(&x, mode)?;
        dropout(x, self.dropout, mode)
    }

    /// Inference embeddings of the first `lengths[i]` tokens of each row of `input_ids`, one
    /// after another (`[tokens, hidden]` as plain rows, for the fused layers): the same sum
    /// and layer norm as [`Embeddings::forward`], with no work on padding.
    fn packed(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        lengths: &[usize],
    ) -> Result<Vec<f32>> {
        let (_, seq) = input_ids.dims2()?;
        let max_pos = self.position.dim(0)?;
        if seq > max_pos {
            return Err(Error::InvalidArgument(format!(
                "sequence of {seq} tokens is longer than max_position_embeddings {max_pos}"
            )));
        }
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let types = token_type_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let norm = Norm::new(
            &self.layer_norm.weight,
            &self.layer_norm.bias,
            self.layer_norm.eps,
        )?;
        let words = self.word.embeddings().to_dtype(DType::F32)?;
        let kinds = self.token_type.embeddings().to_dtype(DType::F32)?;
        let pos = self.position.to_dtype(DType::F32)?;
        let name = "embeddings";
        with_f32(name, &words, |words| {
            with_f32(name, &kinds, |kinds| {
                with_f32(name, &pos, |pos| {
                    embed_packed(
                        Tables {
                            words,
                            kinds,
                            positions: pos,
                        },
                        &norm,
                        &ids,
                        &types,
                        lengths,
                    )
                })
            })
        })???
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    /// `[3h, h]` / `[3h]` concatenation of query, key, value, set by
    /// [`BertEncoder::fuse_for_inference`] and used only in [`Mode::Eval`].
    fused_qkv: Option<Linear>,
    /// Reduced-precision copies of the inference weights (fused qkv, attention output,
    /// intermediate, output) and the layer norms, set by
    /// [`BertEncoder::fuse_for_inference_with`] with [`Precision::Bf16`] or [`Precision::Int8`].
    reduced: Option<Box<FusedLayer>>,
    heads: usize,
    act: HiddenAct,
    hidden_dropout: f64,
    attn_dropout: f64,
}

impl Layer {
    fn load(vb: &VarBuilder, cfg: &Config) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let a = vb.pp("attention");
        Ok(Self {
            query: linear(&a.pp("self").pp("query"), h, h)?,
            key: linear(&a.pp("self").pp("key"), h, h)?,
            value: linear(&a.pp("self").pp("value"), h, h)?,
            attn_out: linear(&a.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::load(&a.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            intermediate: linear(&vb.pp("intermediate").pp("dense"), h, i)?,
            output: linear(&vb.pp("output").pp("dense"), i, h)?,
            out_norm: LayerNorm::load(&vb.pp("output").pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            fused_qkv: None,
            reduced: None,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
            hidden_dropout: cfg.hidden_dropout_prob,
            attn_dropout: cfg.attention_probs_dropout_prob,
        })
    }

    /// Whether every weight is an f32 CPU tensor (what the fused training layers read).
    fn weights_f32_cpu(&self) -> bool {
        let linears = [
            &self.query,
            &self.key,
            &self.value,
            &self.attn_out,
            &self.intermediate,
            &self.output,
        ];
        linears.iter().all(|l| {
            l.bias().is_some()
                && [Some(l.weight()), l.bias()]
                    .into_iter()
                    .flatten()
                    .all(|t| t.dtype() == DType::F32 && t.device().is_cpu())
        }) && [&self.attn_norm, &self.out_norm]
            .iter()
            .all(|n| n.weight.dtype() == DType::F32 && n.bias.dtype() == DType::F32)
    }

    /// The weights as the fused training layers read them ([`LayerWeights`]): current values,
    /// query rows pre-scaled, and the tensors their gradients belong to.
    fn train_weights(&self) -> Result<LayerWeights> {
        let values = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let bias = |l: &Linear| -> Result<Tensor> {
            l.bias()
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("a linear layer without bias".into()))
        };
        let scale = self.scale() as f32;
        let mut qkv = values(self.query.weight())?;
        let mut qkv_bias = values(&bias(&self.query)?)?;
        for v in qkv.iter_mut().chain(qkv_bias.iter_mut()) {
            *v *= scale;
        }
        for l in [&self.key, &self.value] {
            qkv.extend(values(l.weight())?);
            qkv_bias.extend(values(&bias(l)?)?);
        }
        let norm = |n: &LayerNorm| -> Result<(Vec<f32>, Vec<f32>, f32)> {
            Ok((values(&n.weight)?, values(&n.bias)?, n.eps as f32))
        };
        let mut tensors = Vec::with_capacity(LAYER_TENSORS.len());
        for l in [&self.query, &self.key, &self.value, &self.attn_out] {
            tensors.extend([l.weight().clone(), bias(l)?]);
        }
        tensors.extend([self.attn_norm.weight.clone(), self.attn_norm.bias.clone()]);
        for l in [&self.intermediate, &self.output] {
            tensors.extend([l.weight().clone(), bias(l)?]);
        }
        tensors.extend([self.out_norm.weight.clone(), self.out_norm.bias.clone()]);
        Ok(LayerWeights {
            qkv,
            qkv_bias,
            attn_out: values(self.attn_out.weight())?,
            attn_out_bias: values(&bias(&self.attn_out)?)?,
            attn_norm: norm(&self.attn_norm)?,
            inter: values(self.intermediate.weight())?,
            inter_bias: values(&bias(&self.intermediate)?)?,
            out: values(self.output.weight())?,
            out_bias: values(&bias(&self.output)?)?,
            out_norm: norm(&self.out_norm)?,
            scale,
            tensors,
        })
    }

    /// Query rows are pre-multiplied by `1/sqrt(head_dim)`, so the fused path skips that scaling.
    fn fuse(&mut self) -> Result<()> {
        let scale = self.scale();
        let wq = (self.query.weight() * scale)?;
        let w = Tensor::cat(&[&wq, self.key.weight(), self.value.weight()], 0)?.detach();
        let biases = [&self.query, &self.key, &self.value]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.bias()
                    .map(|b| if i == 0 { b * scale } else { Ok(b.clone()) })
            })
            .collect::<Option<candle_core::Result<Vec<Tensor>>>>()
            .transpose()?;
        let b = match biases {
            Some(b) => Some(Tensor::cat(&b, 0)?.detach()),
            None => None,
        };
        self.fused_qkv = Some(Linear::new(w, b));
        Ok(())
    }

    /// The reduced-precision copies of the inference weights (after [`Layer::fuse`]), bf16
    /// or int8.
    fn make_reduced(&mut self, precision: Precision) -> Result<()> {
        let qkv = self.fused_qkv.as_ref().ok_or_else(|| {
            Error::InvalidArgument("reduced-precision weights are made from the fused layer".into())
        })?;
        let b = |l: &Linear| -> Result<Products> {
            Ok(match precision {
                Precision::Int8 => {
                    let (n, k) = l.weight().dims2()?;
                    let w = l
                        .weight()
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let bias = match l.bias() {
                        Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
                        None => vec![0.0; n],
                    };
                    Products::Int8(Int8Linear::from_rows(&w, n, k, bias)?)
                }
                _ => Products::Bf16(Bf16Linear::new(l.weight(), l.bias())?),
            })
        };
        let norm = |n: &LayerNorm| Norm::new(&n.weight, &n.bias, n.eps);
        self.reduced = Some(Box::new(FusedLayer::new(
            [
                b(qkv)?,
                b(&self.attn_out)?,
                b(&self.intermediate)?,
                b(&self.output)?,
            ],
            norm(&self.attn_norm)?,
            norm(&self.out_norm)?,
            self.heads,
            self.act == HiddenAct::Gelu,
        )?));
        Ok(())
    }

    /// Linear `i` of the inference path (0 fused qkv, 1 attention output, 2 intermediate,
    /// 3 output) in the layer's inference precision.
    fn infer_linear(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        if let Some(b) = &self.reduced {
            return b.lin[i].forward_then(x, None);
        }
        let l = match i {
            0 => self.fused_qkv.as_ref().ok_or_else(|| {
                Error::InvalidArgument("the inference path needs fused weights".into())
            })?,
            1 => &self.attn_out,
            2 => &self.intermediate,
            _ => &self.output,
        };
        Ok(l.forward(x)?)
    }

    /// The activated intermediate layer of the inference path; in bf16 with exact GELU, the
    /// activation runs as the layer's epilogue ([`gelu_in_place`]).
    fn infer_intermediate(&self, x: &Tensor) -> Result<Tensor> {
        match (&self.reduced, self.act) {
            (Some(b), HiddenAct::Gelu) => {
                b.lin[2].forward_then(x, Some(&|_: usize, v: &mut [f32]| gelu_in_place(v)))
            }
            _ => self.act.apply(&self.infer_linear(2, x)?, Mode::Eval),
        }
    }

    fn scale(&self) -> f64 {
        let hd = self.query.weight().dim(0).unwrap_or(1) / self.heads.max(1);
        1.0 / (hd.max(1) as f64).sqrt()
    }

    fn forward(&self, x: &Tensor, mask_bias: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = match (&self.fused_qkv, mode) {
            (Some(_), Mode::Eval) => {
                // [b, s, 3h] -> [3, b, heads, s, hd] in one copy; query already scaled.
                let all = self
                    .infer_linear(0, x)?
                    .reshape((b, s, 3, self.heads, hd))?
                    .permute((2, 0, 3, 1, 4))?
                    .contiguous()?;
                (all.get(0)?, all.get(1)?, all.get(2)?)
            }
            _ => (
                (split(train_linear(&self.query, x, mode)?)? * self.scale())?,
                split(train_linear(&self.key, x, mode)?)?,
                split(train_linear(&self.value, x, mode)?)?,
            ),
        };
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = mask_bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = match mode {
            Mode::Eval => softmax_last_dim_eval(&scores)?,
            Mode::Train => softmax_last_dim_composed(&scores)?,
        };
        let probs = dropout(probs, self.attn_dropout, mode)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
        if mode == Mode::Eval && self.reduced.is_some() {
            let x = self
                .attn_norm
                .forward(&(self.infer_linear(1, &ctx)? + x)?, mode)?;
            let inter = self.infer_intermediate(&x)?;
            return self
                .out_norm
                .forward(&(self.infer_linear(3, &inter)? + x)?, mode);
        }
        let attn = train_linear(&self.attn_out, &ctx, mode)?;
        let attn = dropout(attn, self.hidden_dropout, mode)?;
        let x = self.attn_norm.forward(&(attn + x)?, mode)?;
        let inter = self
            .act
            .apply(&train_linear(&self.intermediate, &x, mode)?, mode)?;
        let out = dropout(
            train_linear(&self.output, &inter, mode)?,
            self.hidden_dropout,
            mode,
        )?;
        self.out_norm.forward(&(out + x)?, mode)
    }
}

impl Layer {
    /// Inference on packed tokens: `x` is `[n, hidden]`, the real tokens of every sequence one
    /// after another. The linear layers see only real tokens; attention runs per
    /// [`AttentionGroup`] (sequences of similar length, padded to the group's longest and
    /// masked), so padding costs next to nothing. Equals [`Layer::forward`] on those tokens.
    fn forward_packed(&self, x: &Tensor, plan: &PackPlan) -> Result<Tensor> {
        let (n, h) = x.dims2()?;
        let hd = h / self.heads;
        // One projection for the whole batch; the query is pre-scaled in the fused weights.
        let qkv = match &self.fused_qkv {
            Some(_) => self.infer_linear(0, x)?,
            None => Tensor::cat(
                &[
                    &(self.query.forward(x)? * self.scale())?,
                    &self.key.forward(x)?,
                    &self.value.forward(x)?,
                ],
                1,
            )?,
        };
        // Row `n` is zeros: what padding slots gather.
        let qkv = Tensor::cat(
            &[&qkv, &Tensor::zeros((1, 3 * h), qkv.dtype(), qkv.device())?],
            0,
        )?;
        let mut ctx = Vec::with_capacity(plan.groups.len());
        for g in &plan.groups {
            let (rows, len) = (g.rows, g.len);
            let all = qkv
                .index_select(&g.gather, 0)?
                .reshape((rows, len, 3, self.heads, hd))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (all.get(0)?, all.get(1)?, all.get(2)?);
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(bias) = &g.mask_bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probs = softmax_last_dim_eval(&scores)?;
            ctx.push(
                probs
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .reshape((rows * len, h))?,
            );
        }
        // The groups' padded slots back to the real tokens, in packed order.
        let ctx = Tensor::cat(&ctx, 0)?.index_select(&plan.unpermute, 0)?;
        debug_assert_eq!(ctx.dims(), [n, h]);
        let attn = self.infer_linear(1, &ctx)?;
        let x = self.attn_norm.forward(&(attn + x)?, Mode::Eval)?;
        let inter = self.infer_intermediate(&x)?;
        let out = self.infer_linear(3, &inter)?;
        self.out_norm.forward(&(out + x)?, Mode::Eval)
    }
}

/// Sequences whose attention runs together: padded to the longest of them.
struct AttentionGroup {
    rows: usize,
    len: usize,
    /// `[rows * len]` packed-token index per padded slot (`n`, the zero row, for padding).
    gather: Tensor,
    /// `[rows, 1, 1, len]` large negative on padding keys; `None` when nothing is padded.
    mask_bias: Option<Tensor>,
}

/// How a right-padded batch is packed: token index, attention groups, and the permutation
/// from the groups' order back to packed order.
struct PackPlan {
    /// Flat `[batch * seq]` position of each packed token.
    index: Tensor,
    groups: Vec<AttentionGroup>,
    /// For each packed token, its slot among all groups' padded slots (concatenated).
    unpermute: Tensor,
}

/// Padding a group may carry, relative to its real tokens, before a new group starts. More
/// groups mean more (small) operations; fewer mean attention over more padding.
const GROUP_PADDING: f64 = 0.25;

impl PackPlan {
    fn new(lengths: &[usize], seq: usize, dtype: DType, device: &Device) -> Result<Self> {
        let mut offsets = Vec::with_capacity(lengths.len());
        let mut index = Vec::new();
        for (row, &len) in lengths.iter().enumerate() {
            offsets.push(index.len());
            index.extend((0..len).map(|t| (row * seq + t) as u32));
        }
        let n = index.len();
        // Longest first; a group grows while its padding stays under GROUP_PADDING.
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for r in order {
            match groups.last_mut() {
                Some(g)
                    if {
                        let longest = lengths[g[0]];
                        let real: usize = g.iter().map(|&x| lengths[x]).sum::<usize>() + lengths[r];
                        (longest * (g.len() + 1)) as f64 <= (1.0 + GROUP_PADDING) * real as f64
                    } =>
                {
                    g.push(r)
                }
                _ => groups.push(vec![r]),
            }
        }
        let mut unpermute = vec![0u32; n];
        let mut slot = 0u32;
        let mut built = Vec::with_capacity(groups.len());
        for g in groups {
            let len = lengths[g[0]];
            let mut gather = Vec::with_capacity(g.len() * len);
            let mut bias = Vec::with_capacity(g.len() * len);
            for &r in &g {
                for t in 0..len {
                    if t < lengths[r] {
                        gather.push((offsets[r] + t) as u32);
                        unpermute[offsets[r] + t] = slot;
                        bias.push(0f32);
                    } else {
                        gather.push(n as u32);
                        bias.push(MASK_NEG as f32);
                    }
                    slot += 1;
                }
            }
            let padded = bias.iter().any(|&b| b != 0.0);
            let rows = g.len();
            built.push(AttentionGroup {
                rows,
                len,
                gather: Tensor::from_vec(gather, rows * len, device)?,
                mask_bias: if padded {
                    Some(Tensor::from_vec(bias, (rows, 1, 1, len), device)?.to_dtype(dtype)?)
                } else {
                    None
                },
            });
        }
        Ok(Self {
            index: Tensor::from_vec(index, n, device)?,
            groups: built,
            unpermute: Tensor::from_vec(unpermute, n, device)?,
        })
    }
}

/// Packed inference is on unless `TTPMAP_PADDED_INFERENCE` is set (read once): the padded path
/// stays available for comparison (`examples/bench_encode`) and as the reference.
fn packing_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TTPMAP_PADDED_INFERENCE").is_none())
}

/// Each row's number of real tokens when `mask` `[batch, seq]` pads on the right (ones, then
/// zeros), or `None` when some row has a gap or a left pad (the padded path handles those).
fn right_padded_lengths(mask: &Tensor) -> Result<Option<Vec<usize>>> {
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut lengths = Vec::with_capacity(rows.len());
    for row in rows {
        let len = row.iter().take_while(|&&m| m != 0.0).count();
        if len == 0 || row[len..].iter().any(|&m| m != 0.0) {
            return Ok(None);
        }
        lengths.push(len);
    }
    Ok(Some(lengths))
}

/// The BERT encoder: embeddings, `num_hidden_layers` transformer layers and an optional pooler.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    cfg: Config,
    prefix: &'static str,
    training: Training,
}

/// How [`Mode::Train`] runs the layers: fused ([`super::fused_train`]) or composed, and the
/// counter that seeds the fused layers' dropout masks.
#[derive(Debug, Clone)]
struct Training {
    fused: bool,
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Training {
    /// Fused unless `TTPMAP_TRAIN_FUSED=0`.
    fn from_env() -> Self {
        let fused = std::env::var("TTPMAP_TRAIN_FUSED").map_or(true, |v| v.trim() != "0");
        Self {
            fused,
            calls: Default::default(),
        }
    }
}

/// Large negative added to attention scores of padding keys (Hugging Face adds the dtype's
/// minimum; any value that makes `exp` underflow to 0 gives the same probabilities).
const MASK_NEG: f64 = -1e9;

impl BertEncoder {
    /// Builds the encoder from `vb`, which holds tensors named as in Hugging Face's `BertModel`,
    /// with or without a `bert.` prefix. The pooler is loaded when `pooler.dense.weight` exists
    /// (see [`BertEncoder::has_pooler`]); other extra tensors (`embeddings.position_ids`) are
    /// ignored. Dropout probabilities come from `cfg`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let prefix = detect_prefix(|n| vb.contains_tensor(n));
        let vb = if prefix.is_empty() { vb } else { vb.pp("bert") };
        let embeddings = Embeddings::load(&vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Layer::load(&vb.pp(format!("encoder.layer.{l}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if vb.contains_tensor("pooler.dense.weight") {
            Some(linear(
                &vb.pp("pooler").pp("dense"),
                cfg.hidden_size,
                cfg.hidden_size,
            )?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            cfg: cfg.clone(),
            prefix,
            training: Training::from_env(),
        })
    }

    /// Creates the encoder's variables in `varmap` (names prefixed by `opts.prefix`) with BERT's
    /// initialisation drawn from `opts.seed` (see [`init_tensors`]), overwrites them by name from
    /// `pretrained` when given (a checkpoint with or without `bert.` prefix; every encoder tensor
    /// must be there, the pooler may be missing), and builds the encoder on those variables so
    /// that gradients reach every weight in [`Mode::Train`]. Variables already in `varmap` under
    /// the same names are reused and overwritten.
    pub fn trainable(
        varmap: &VarMap,
        cfg: &Config,
        opts: &TrainableOptions,
        pretrained: Option<&VarBuilder>,
    ) -> Result<(Self, LoadReport)> {
        cfg.validate()?;
        let mut shapes = encoder_tensor_shapes(cfg);
        if opts.with_pooler {
            shapes.extend(pooler_tensor_shapes(cfg));
        }
        let mut report = LoadReport::default();
        let trimmed = opts.prefix.trim_end_matches('.');
        // Checkpoint tensors first; the seeded initialisation (22M normal draws for MiniLM, a
        // quarter of a second) is drawn only when the checkpoint lacks one, and then whole, so
        // that a tensor's initial values never depend on what the checkpoint held.
        let mut loaded: Vec<Option<Tensor>> = vec![None; shapes.len()];
        if let Some(src) = pretrained {
            let src_prefix = detect_prefix(|n| src.contains_tensor(n));
            for ((name, shape), slot) in shapes.iter().zip(loaded.iter_mut()) {
                match load_named(src, src_prefix, name, shape, opts.dtype)? {
                    Some(t) => {
                        report.loaded += 1;
                        if name.starts_with("pooler.") {
                            report.pooler_loaded = true;
                        }
                        *slot = Some(t);
                    }
                    None if name.starts_with("pooler.") => {}
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "pretrained weights have no tensor {src_prefix}{name}"
                        )))
                    }
                }
            }
        }
        let init = if loaded.iter().any(Option::is_none) {
            init_tensors(cfg, opts.with_pooler, opts.seed, opts.dtype, &opts.device)?
                .into_iter()
                .map(|(_, t)| Some(t))
                .collect()
        } else {
            vec![None; shapes.len()]
        };
        {
            let mut data = varmap.data().lock().map_err(|_| {
                Error::InvalidArgument("VarMap lock poisoned by a panicked thread".to_string())
            })?;
            for (((name, _), from_checkpoint), initial) in shapes.into_iter().zip(loaded).zip(init)
            {
                let value = match from_checkpoint {
                    Some(t) => t,
                    None => {
                        report.initialised.push(name.clone());
                        initial.ok_or_else(|| {
                            Error::InvalidArgument(format!("no initial value for {name}"))
                        })?
                    }
                };
                let full = if trimmed.is_empty() {
                    name
                } else {
                    format!("{trimmed}.{name}")
                };
                match data.get(&full) {
                    Some(var) => var.set(&value)?,
                    None => {
                        data.insert(full, Var::from_tensor(&value)?);
                    }
                }
            }
        }
        let mut vb = VarBuilder::from_varmap(varmap, opts.dtype, &opts.device);
        if !trimmed.is_empty() {
            vb = vb.pp(trimmed);
        }
        let enc = Self::load(vb, cfg)?;
        Ok((enc, report))
    }

    /// Whether [`Mode::Train`] on f32 CPU tensors runs the fused training layers
    /// ([`super::fused_train`]: forward and backward written out on the batch's real tokens,
    /// the default unless `TTPMAP_TRAIN_FUSED=0`) or candle's composed operations. With the
    /// fused layers, gradients come from [`super::backward`], not `loss.backward()`.
    pub fn set_fused_training(&mut self, on: bool) {
        self.training.fused = on;
    }

    /// Restarts the counter the fused training layers draw their dropout masks from: the
    /// same seed and the same calls give the same masks.
    pub fn set_dropout_seed(&self, seed: u64) {
        self.training
            .calls
            .store(seed, std::sync::atomic::Ordering::Relaxed);
    }

    /// The config this encoder was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the checkpoint had a pooler (`pooler.dense.*`).
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The name prefix detected in the weights (`""` or `"bert."`).
    pub fn weight_prefix(&self) -> &'static str {
        self.prefix
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Prepares inference: concatenates each layer's query/key/value projections into one matrix
    /// used by [`Mode::Eval`] (one larger matmul instead of three). The copies are detached
    /// snapshots, so call this only on frozen weights; [`Mode::Train`] never uses them.
    pub fn fuse_for_inference(&mut self) -> Result<()> {
        self.fuse_for_inference_with(Precision::detect())
    }

    /// [`BertEncoder::fuse_for_inference`] for the layers from `first` up only; the layers
    /// below keep (or return to) the unfused f32 path.
    pub fn fuse_for_inference_from(&mut self, first: usize) -> Result<()> {
        self.fuse_layers(Precision::detect(), first)
    }

    /// [`BertEncoder::fuse_for_inference`] in a given precision: [`Precision::Bf16`] and
    /// [`Precision::Int8`] also keep reduced-precision copies of every layer's inference
    /// weights (an error on a CPU without AVX512_BF16, or AVX512_VNNI for int8);
    /// [`Precision::Fp32`] is the reference path.
    pub fn fuse_for_inference_with(&mut self, precision: Precision) -> Result<()> {
        self.fuse_layers(precision, 0)
    }

    /// Inference copies in `precision` for layers `first..`; none below.
    fn fuse_layers(&mut self, precision: Precision, first: usize) -> Result<()> {
        if precision == Precision::Bf16 && !super::bf16::bf16_supported() {
            return Err(Error::InvalidArgument(
                "bf16 inference needs a CPU with AVX512_BF16".into(),
            ));
        }
        if precision == Precision::Int8 && !super::int8::int8_supported() {
            return Err(Error::InvalidArgument(
                "int8 inference needs a CPU with AVX512_VNNI".into(),
            ));
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.reduced = None;
            if i < first {
                layer.fused_qkv = None;
                continue;
            }
            layer.fuse()?;
            if precision != Precision::Fp32 {
                layer.make_reduced(precision)?;
            }
        }
        Ok(())
    }

    /// The precision of the inference path: the one it was fused in.
    pub fn precision(&self) -> Precision {
        match self.layers.iter().find_map(|l| l.reduced.as_ref()) {
            Some(l) => match l.lin[0] {
                Products::Bf16(_) => Precision::Bf16,
                Products::Int8(_) => Precision::Int8,
            },
            None => Precision::Fp32,
        }
    }

    /// Runs the encoder and returns `last_hidden_state`, `[batch, seq, hidden]`.
    ///
    /// `input_ids`: `[batch, seq]` u32/i64. `token_type_ids`: same shape, zeros when `None`.
    /// `attention_mask`: same shape, 1 for tokens and 0 for padding, all ones when `None`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        for (what, t) in [
            ("token_type_ids", token_type_ids),
            ("attention_mask", attention_mask),
        ] {
            if let Some(t) = t {
                if t.dims() != [b, s] {
                    return Err(Error::InvalidArgument(format!(
                        "{what} has shape {:?}, input_ids {:?}",
                        t.dims(),
                        [b, s]
                    )));
                }
            }
        }
        let zeros;
        let token_type_ids = match token_type_ids {
            Some(t) => t,
            None => {
                zeros = Tensor::zeros((b, s), DType::U32, input_ids.device())?;
                &zeros
            }
        };
        let all = 0..self.layers.len();
        if mode == Mode::Eval
            && packing_enabled()
            && self.fusable(&all)
            && input_ids.device().is_cpu()
        {
            let lengths = match attention_mask {
                Some(m) => right_padded_lengths(m)?,
                None => Some(vec![s; b]),
            };
            if let Some(lengths) = lengths {
                // Embeddings of the real tokens only, straight into the packed rows.
                let packed = self
                    .embeddings
                    .packed(input_ids, token_type_ids, &lengths)?;
                let packed = self.run_fused(packed, &lengths, all)?;
                return self.unpack(&packed, &lengths, s, self.embeddings.position.dtype());
            }
        }
        let x = self.embeddings.forward(input_ids, token_type_ids, mode)?;
        self.forward_layers(&x, attention_mask, all, mode)
    }

    /// Runs the transformer layers `layers` (a sub-range of `0..num_hidden_layers`) on hidden
    /// states `x` `[batch, seq, hidden]`: the input of layer `layers.start` (the embeddings
    /// output when it is 0). With [`BertEncoder::forward_layers`] over `0..k` on frozen weights
    /// and then `k..n`, a trainer can cache the first `k` layers' output once per sentence and
    /// fine-tune only the top layers. `attention_mask` as in [`BertEncoder::forward`].
    pub fn forward_layers(
        &self,
        x: &Tensor,
        attention_mask: Option<&Tensor>,
        layers: std::ops::Range<usize>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        if layers.start > layers.end || layers.end > self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "layer range {layers:?} outside 0..{}",
                self.layers.len()
            )));
        }
        if let Some(m) = attention_mask {
            if m.dims() != [b, s] {
                return Err(Error::InvalidArgument(format!(
                    "attention_mask has shape {:?}, hidden states {:?}",
                    m.dims(),
                    x.dims()
                )));
            }
        }
        if mode == Mode::Train && self.train_fusable(x, &layers) {
            let lengths = match attention_mask {
                Some(m) => right_padded_lengths(m)?,
                None => Some(vec![s; b]),
            };
            if let Some(lengths) = lengths {
                return self.forward_layers_train_fused(x, lengths, layers);
            }
        }
        if mode == Mode::Eval && packing_enabled() && self.fusable(&layers) {
            let lengths = match attention_mask {
                Some(m) => right_padded_lengths(m)?,
                None => Some(vec![s; b]),
            };
            if let Some(lengths) = lengths {
                return self.forward_layers_fused(x, &lengths, layers);
            }
        }
        if let (Mode::Eval, Some(m), true) = (mode, attention_mask, packing_enabled()) {
            if let Some(lengths) = right_padded_lengths(m)? {
                // Packing pays when padding is more than a group may carry (a length-sorted
                // batch has little: the padded path is faster there).
                let real: usize = lengths.iter().sum();
                if (b * s) as f64 > (1.0 + GROUP_PADDING) * real as f64 {
                    return self.forward_layers_packed(x, &lengths, layers);
                }
            }
        }
        let dtype = self.embeddings.position.dtype();
        let mask_bias = match attention_mask {
            Some(m) => {
                Some(((m.to_dtype(dtype)?.affine(-1.0, 1.0))? * MASK_NEG)?.reshape((b, 1, 1, s))?)
            }
            None => None,
        };
        let mut x = x.clone();
        for layer in &self.layers[layers] {
            x = layer.forward(&x, mask_bias.as_ref(), mode)?;
        }
        Ok(x)
    }

    /// Inference without work on padding: the real tokens of `x` `[batch, seq, hidden]` (row
    /// `i` has `lengths[i]` of them, then padding) are packed into one `[tokens, hidden]`
    /// matrix for the layers and scattered back at the end; padding positions come out as
    /// zeros (every consumer masks them).
    fn forward_layers_packed(
        &self,
        x: &Tensor,
        lengths: &[usize],
        layers: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let plan = PackPlan::new(lengths, s, x.dtype(), x.device())?;
        let mut packed = x.reshape((b * s, h))?.index_select(&plan.index, 0)?;
        for layer in &self.layers[layers] {
            packed = layer.forward_packed(&packed, &plan)?;
        }
        let zeros = Tensor::zeros((b * s, h), packed.dtype(), packed.device())?;
        Ok(zeros
            .index_add(&plan.index, &packed, 0)?
            .reshape((b, s, h))?)
    }

    /// Whether [`Mode::Train`] runs `layers` on `x` with the fused training layers.
    fn train_fusable(&self, x: &Tensor, layers: &std::ops::Range<usize>) -> bool {
        self.training.fused
            && !layers.is_empty()
            && x.dtype() == DType::F32
            && x.device().is_cpu()
            && self.layers[layers.clone()]
                .iter()
                .all(|l| l.act == HiddenAct::Gelu && l.weights_f32_cpu())
    }

    /// [`Mode::Train`] through the fused training layers ([`super::fused_train`]): one
    /// differentiable operation for the whole range, with padding out of every pass.
    fn forward_layers_train_fused(
        &self,
        x: &Tensor,
        lengths: Vec<usize>,
        layers: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let first = &self.layers[layers.start];
        let weights = self.layers[layers.clone()]
            .iter()
            .map(Layer::train_weights)
            .collect::<Result<Vec<_>>>()?;
        let seed = self
            .training
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dropout = Dropout {
            attention: first.attn_dropout as f32,
            hidden: first.hidden_dropout as f32,
            seed,
        };
        let op = TrainLayers::new(weights, lengths, first.heads, dropout);
        // The second argument only ties the op to the weights in candle's graph.
        Ok(x.contiguous()?.apply_op2(first.query.weight(), op)?)
    }

    /// Whether every layer of `layers` has bf16 weights the fused layer runs
    /// ([`super::fused`]).
    fn fusable(&self, layers: &std::ops::Range<usize>) -> bool {
        self.layers[layers.clone()]
            .iter()
            .all(|l| l.reduced.as_ref().is_some_and(|b| b.fusable()))
    }

    /// Inference in bf16 with the fused layer ([`super::fused`]): the real tokens of `x`
    /// `[batch, seq, hidden]` (row `i` has `lengths[i]`, then padding) packed into plain
    /// rows, every layer run on them, then put back in place ([`BertEncoder::unpack`]).
    fn forward_layers_fused(
        &self,
        x: &Tensor,
        lengths: &[usize],
        layers: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let (_, s, h) = x.dims3()?;
        let flat = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut packed = Vec::with_capacity(lengths.iter().sum::<usize>() * h);
        for (row, &len) in lengths.iter().enumerate() {
            packed.extend_from_slice(&flat[row * s * h..(row * s + len) * h]);
        }
        let packed = self.run_fused(packed, lengths, layers)?;
        self.unpack(&packed, lengths, s, x.dtype())
    }

    /// The fused layers `layers` on packed tokens.
    fn run_fused(
        &self,
        mut packed: Vec<f32>,
        lengths: &[usize],
        layers: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        for layer in &self.layers[layers] {
            let fused = layer.reduced.as_ref().ok_or_else(|| {
                Error::InvalidArgument("the fused path needs reduced-precision weights".into())
            })?;
            packed = fused.forward(&packed, lengths)?;
        }
        Ok(packed)
    }

    /// Packed token rows back to `[batch, seq, hidden]` in `dtype`; padding positions are
    /// zeros, as on the packed path.
    fn unpack(&self, packed: &[f32], lengths: &[usize], s: usize, dtype: DType) -> Result<Tensor> {
        let (b, h) = (lengths.len(), self.cfg.hidden_size);
        let mut out = vec![0f32; b * s * h];
        let mut from = 0;
        for (row, &len) in lengths.iter().enumerate() {
            out[row * s * h..(row * s + len) * h].copy_from_slice(&packed[from..from + len * h]);
            from += len * h;
        }
        Ok(Tensor::from_vec(out, (b, s, h), &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// The embeddings output (input of layer 0), `[batch, seq, hidden]`.
    pub fn embed(&self, input_ids: &Tensor, token_type_ids: &Tensor, mode: Mode) -> Result<Tensor> {
        self.embeddings.forward(input_ids, token_type_ids, mode)
    }

    /// The pooler output: `tanh(dense(hidden[:, 0]))`, `[batch, hidden]`. Errors when the
    /// checkpoint had no pooler.
    pub fn pooler(&self, hidden: &Tensor) -> Result<Tensor> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::InvalidArgument("the encoder's weights have no pooler (pooler.dense.*)".into())
        })?;
        let cls = hidden.i((.., 0))?;
        Ok(pooler.forward(&cls)?.tanh()?)
    }
}

fn load_named(
    src: &VarBuilder,
    src_prefix: &str,
    name: &str,
    shape: &[usize],
    dtype: DType,
) -> Result<Option<Tensor>> {
    let direct = format!("{src_prefix}{name}");
    let found = if src.contains_tensor(&direct) {
        Some(direct)
    } else {
        legacy_layer_norm_name(name)
            .map(|n| format!("{src_prefix}{n}"))
            .filter(|n| src.contains_tensor(n))
    };
    match found {
        Some(n) => Ok(Some(
            src.get_unchecked_dtype(&n, dtype)?
                .reshape(shape)
                .map_err(|_| {
                    Error::InvalidArgument(format!("tensor {n} does not have shape {shape:?}"))
                })?
                .detach(),
        )),
        None => Ok(None),
    }
}

/// Options for [`BertEncoder::trainable`].
#[derive(Debug, Clone)]
pub struct TrainableOptions {
    /// Prefix of the variable names in the `VarMap`, e.g. `"encoder"` (a trailing `.` is
    /// optional). Default `""`.
    pub prefix: String,
    /// Seed of the initialisation of tensors not loaded from a checkpoint. Default 0.
    pub seed: u64,
    /// Create a pooler. Default false.
    pub with_pooler: bool,
    /// Dtype of the variables. Default f32.
    pub dtype: DType,
    /// Device of the variables. Default CPU.
    pub device: Device,
}

impl Default for TrainableOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            seed: 0,
            with_pooler: false,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// What [`BertEncoder::trainable`] took from the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors copied from the checkpoint.
    pub loaded: usize,
    /// Whether the pooler came from the checkpoint.
    pub pooler_loaded: bool,
    /// Tensors left at their seeded initialisation.
    pub initialised: Vec<String>,
}

/// BERT's initialisation of the encoder (and pooler) tensors, as Hugging Face's
/// `BertPreTrainedModel._init_weights`: weights and embeddings N(0, `initializer_range`), the
/// padding row of the word embeddings zero, biases zero, LayerNorm weight one. Values come from a
/// ChaCha8 stream seeded with `seed`, drawn in the order of [`encoder_tensor_shapes`], so equal
/// seeds give equal tensors.
pub fn init_tensors(
    cfg: &Config,
    with_pooler: bool,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Vec<(String, Tensor)>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut shapes = encoder_tensor_shapes(cfg);
    if with_pooler {
        shapes.extend(pooler_tensor_shapes(cfg));
    }
    let std = cfg.initializer_range;
    let mut out = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = if name.ends_with("LayerNorm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let mut v: Vec<f64> = (0..n).map(|_| std * standard_normal(&mut rng)).collect();
            if name == "embeddings.word_embeddings.weight" {
                let h = cfg.hidden_size;
                let start = cfg.pad_token_id as usize * h;
                if let Some(row) = v.get_mut(start..start + h) {
                    row.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            v
        };
        let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        out.push((name, t));
    }
    Ok(out)
}

/// One N(0, 1) draw (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Mean of `hidden` (`[batch, seq, hidden]`) over the positions where `mask` (`[batch, seq]`)
/// is 1: sentence-transformers' mean pooling. Rows with an all-zero mask give zeros.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}

/// Divides each row of `x` (`[batch, dim]`) by its L2 norm, clamped below at 1e-12 as
/// `torch.nn.functional.normalize` does.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest absolute element-wise difference of two tensors of the same shape.
    /// The largest value of `batch[row, from..]` in absolute value (0 when that padding is
    /// zeros, as consumers expect).
    fn padding_max(batch: &Tensor, row: usize, from: usize) -> f32 {
        let s = batch.dim(1).unwrap();
        let pad = batch
            .narrow(0, row, 1)
            .unwrap()
            .narrow(1, from, s - from)
            .unwrap();
        pad.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn tiny() -> Config {
        Config {
            vocab_size: 50,
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 32,
            max_position_embeddings: 20,
            ..Config::default()
        }
    }

    #[test]
    fn config_parses_hf_json_with_unknown_fields() {
        let cfg: Config = serde_json::from_str(
            r#"{"hidden_size": 384, "hidden_act": "gelu_new", "use_cache": true, "id2label": {"0": "a"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.hidden_size, 384);
        assert_eq!(cfg.hidden_act, HiddenAct::GeluNew);
        assert_eq!(cfg.num_hidden_layers, 12);
        assert!(serde_json::from_str::<Config>(r#"{"hidden_act": "swish"}"#).is_err());
    }

    #[test]
    fn validate_rejects_bad_heads() {
        let cfg = Config {
            num_attention_heads: 5,
            ..tiny()
        };
        assert!(matches!(cfg.validate(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn composed_softmax_and_layer_norm_match_fused() {
        let x = Tensor::new(
            &[[1.0f32, -2.0, 3.5, 0.25], [0.0, 0.0, 0.0, 1e-3]],
            &Device::Cpu,
        )
        .unwrap();
        let a = softmax_last_dim_composed(&x).unwrap();
        let b = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-6, "{d}");
        let ln = LayerNorm {
            weight: Tensor::new(&[1.0f32, 2.0, 0.5, -1.0], &Device::Cpu).unwrap(),
            bias: Tensor::new(&[0.1f32, 0.0, -0.2, 0.3], &Device::Cpu).unwrap(),
            eps: 1e-12,
        };
        let a = ln
            .forward(&x.narrow(0, 0, 1).unwrap(), Mode::Train)
            .unwrap();
        let b = ln.forward(&x.narrow(0, 0, 1).unwrap(), Mode::Eval).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn fast_exp_and_softmax_match_libm() {
        // Relative error of exp_f32 against f64 exp over the range softmax uses (x <= 0) and
        // above; exactly 0 where f32 would go subnormal.
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * (i as f32) / 200_000.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e4), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        // The inference softmax against candle's, on rows with a masked (MASK_NEG) slot and
        // over the parallel chunk size.
        let dim = 37;
        let rows = 2 * MAP_CHUNK / dim + 3;
        let v: Vec<f32> = (0..rows * dim)
            .map(|i| {
                if i % dim == 5 {
                    MASK_NEG as f32
                } else {
                    ((i * 7919 % 1000) as f32 - 500.0) / 60.0
                }
            })
            .collect();
        let x = Tensor::from_vec(v, (rows, dim), &Device::Cpu).unwrap();
        let a = softmax_last_dim_eval(&x).unwrap();
        let b = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn wide_simd_path_gives_the_baseline_values() {
        // The AVX-512 and AVX2 copies of the element-wise kernels (those this CPU can run)
        // against the baseline build of the same code, called directly: equal to the bit.
        let src: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919 % 2000) as f32 - 1000.0) / 97.0)
            .collect();
        fn same(kernel: &impl ChunkKernel, src: &[f32]) {
            let mut base = vec![0f32; src.len()];
            kernel.run(&mut base, src);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for level in 0..=simd_level() {
                let mut wide = vec![0f32; src.len()];
                run_at(level, kernel, &mut wide, src);
                assert_eq!(bits(&wide), bits(&base), "SIMD level {level}");
            }
        }
        same(&Map(gelu_erf_f32), &src);
        same(&SoftmaxRows(64), &src);
    }

    #[test]
    fn seeded_init_is_deterministic_and_pads_zero() {
        let cfg = tiny();
        let a = init_tensors(&cfg, true, 7, DType::F32, &Device::Cpu).unwrap();
        let b = init_tensors(&cfg, true, 7, DType::F32, &Device::Cpu).unwrap();
        let c = init_tensors(&cfg, true, 8, DType::F32, &Device::Cpu).unwrap();
        let w = |v: &Vec<(String, Tensor)>| v[0].1.to_vec2::<f32>().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        assert!(w(&a)[0].iter().all(|&x| x == 0.0), "pad row must be zero");
        assert_eq!(a.len(), 5 + 16 * 2 + 2);
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let varmap = VarMap::new();
        let (enc, _) =
            BertEncoder::trainable(&varmap, &tiny(), &TrainableOptions::default(), None).unwrap();
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[2u32, 7, 9]], &dev).unwrap();
        let single = enc.forward(&ids, None, None, Mode::Eval).unwrap();
        let padded_ids = Tensor::new(&[[2u32, 7, 9, 0, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0, 0]], &dev).unwrap();
        let padded = enc
            .forward(&padded_ids, None, Some(&mask), Mode::Eval)
            .unwrap();
        let d = max_abs_diff(&padded.narrow(1, 0, 3).unwrap(), &single);
        assert!(d < 1e-5, "{d}");
        let too_long = Tensor::zeros((1, 21), DType::U32, &dev).unwrap();
        assert!(enc.forward(&too_long, None, None, Mode::Eval).is_err());
    }

    #[test]
    fn packed_inference_matches_each_sequence_alone() {
        let varmap = VarMap::new();
        let (mut enc, _) =
            BertEncoder::trainable(&varmap, &tiny(), &TrainableOptions::default(), None).unwrap();
        let dev = Device::Cpu;
        let rows: [&[u32]; 3] = [&[2, 7, 9], &[2, 5, 6, 8, 3, 4], &[2, 11]];
        let s = 6;
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for r in rows {
            ids.extend(r.iter().copied().chain(std::iter::repeat_n(0, s - r.len())));
            mask.extend((0..s).map(|t| u32::from(t < r.len())));
        }
        let ids = Tensor::from_vec(ids, (3, s), &dev).unwrap();
        let mask = Tensor::from_vec(mask, (3, s), &dev).unwrap();
        for fused in [false, true] {
            if fused {
                enc.fuse_for_inference().unwrap();
            }
            let batch = enc.forward(&ids, None, Some(&mask), Mode::Eval).unwrap();
            for (i, r) in rows.iter().enumerate() {
                let one = Tensor::new(*r, &dev).unwrap().unsqueeze(0).unwrap();
                let alone = enc.forward(&one, None, None, Mode::Eval).unwrap();
                let got = batch
                    .narrow(0, i, 1)
                    .unwrap()
                    .narrow(1, 0, r.len())
                    .unwrap();
                let d = max_abs_diff(&got, &alone);
                assert!(d < 1e-5, "row {i} (fused {fused}): {d}");
                // Padding positions are zeros (consumers mask them).
                if r.len() < s {
                    assert_eq!(padding_max(&batch, i, r.len()), 0.0);
                }
            }
        }
    }

    #[test]
    fn fused_bf16_layers_match_the_reference_layers() {
        if !super::super::bf16::bf16_supported() {
            eprintln!("SKIPPED: this CPU has no AVX512_BF16 (the fused layer is bf16 only)");
            return;
        }
        // Hidden 64: whole AMX tiles (the tiles where the CPU has them); hidden 48, 4 heads of
        // 12: the AVX512_BF16 kernel and a head size that is no whole vector.
        for hidden in [64, 48] {
            let cfg = Config {
                vocab_size: 60,
                hidden_size: hidden,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                intermediate_size: 2 * hidden,
                max_position_embeddings: 40,
                ..Config::default()
            };
            let varmap = VarMap::new();
            let (mut enc, _) =
                BertEncoder::trainable(&varmap, &cfg, &TrainableOptions::default(), None).unwrap();
            let dev = Device::Cpu;
            // Lengths 5, 33, 1, 17: unsorted, one of a single token.
            let lengths = [5usize, 33, 1, 17];
            let s = 33;
            let mut ids = Vec::new();
            let mut mask = Vec::new();
            for (r, &len) in lengths.iter().enumerate() {
                ids.extend((0..s).map(|t| {
                    if t < len {
                        ((r * 7 + t * 3) % 57 + 2) as u32
                    } else {
                        0
                    }
                }));
                mask.extend((0..s).map(|t| u32::from(t < len)));
            }
            let ids = Tensor::from_vec(ids, (4, s), &dev).unwrap();
            let mask = Tensor::from_vec(mask, (4, s), &dev).unwrap();
            enc.fuse_for_inference_with(Precision::Fp32).unwrap();
            let f32_out = enc.forward(&ids, None, Some(&mask), Mode::Eval).unwrap();
            enc.fuse_for_inference_with(Precision::Bf16).unwrap();
            assert!(enc.fusable(&(0..2)));
            // Embeddings are looked up for the packed tokens: an id past the table is an error.
            let bad = Tensor::new(&[[2u32, 60]], &dev).unwrap();
            let err = enc
                .forward(&bad, None, None, Mode::Eval)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("token id 60 is outside the embedding table"),
                "{err}"
            );
            let fused = enc.forward(&ids, None, Some(&mask), Mode::Eval).unwrap();
            // The reference: each layer's own bf16 path on the padded batch.
            let zeros = Tensor::zeros((4, s), DType::U32, &dev).unwrap();
            let mut reference = enc.embed(&ids, &zeros, Mode::Eval).unwrap();
            let bias = ((mask
                .to_dtype(DType::F32)
                .unwrap()
                .affine(-1.0, 1.0)
                .unwrap()
                * MASK_NEG)
                .unwrap())
            .reshape((4, 1, 1, s))
            .unwrap();
            for layer in &enc.layers {
                reference = layer.forward(&reference, Some(&bias), Mode::Eval).unwrap();
            }
            for (r, &len) in lengths.iter().enumerate() {
                let real = |t: &Tensor| t.narrow(0, r, 1).unwrap().narrow(1, 0, len).unwrap();
                let to_ref = max_abs_diff(&real(&fused), &real(&reference));
                let to_f32 = max_abs_diff(&real(&fused), &real(&f32_out));
                let ref_to_f32 = max_abs_diff(&real(&reference), &real(&f32_out));
                // Same roundings into bf16; only f32 summation orders differ (and, rarely,
                // which way a value near a bf16 boundary rounds).
                assert!(
                    to_ref < 1e-3,
                    "hidden {hidden} row {r}: fused vs reference {to_ref}"
                );
                assert!(
                    to_f32 < 2.0 * ref_to_f32 + 1e-3,
                    "hidden {hidden} row {r}: fused {to_f32} from f32, reference {ref_to_f32}"
                );
                if len < s {
                    assert_eq!(
                        padding_max(&fused, r, len),
                        0.0,
                        "padding positions are zeros"
                    );
                }
            }
        }
    }

    #[test]
    fn encoder_gives_the_same_values_on_the_paths_of_cpus_without_avx512() {
        // The f32 inference path (the default on CPUs without AMX) with the element-wise
        // kernels forced down to AVX2 and to baseline x86-64, as on CPUs without AVX-512 or
        // AVX2: the same hidden states to the bit, so the PyTorch parity the other tests check
        // on this CPU holds on those paths too.
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                SIMD_CEILING.store(u8::MAX, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _restore = Restore;
        let varmap = VarMap::new();
        let cfg = Config {
            hidden_size: 32,
            intermediate_size: 64,
            ..tiny()
        };
        let (mut enc, _) =
            BertEncoder::trainable(&varmap, &cfg, &TrainableOptions::default(), None).unwrap();
        enc.fuse_for_inference_with(Precision::Fp32).unwrap();
        let dev = Device::Cpu;
        // Unsorted lengths (the packed path) and a full batch (the padded path).
        let ids = Tensor::new(&[[2u32, 7, 9, 0, 0, 0], [2, 5, 6, 8, 3, 4]], &dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], &dev).unwrap();
        let run = |level: u8| {
            SIMD_CEILING.store(level, std::sync::atomic::Ordering::Relaxed);
            let packed = enc.forward(&ids, None, Some(&mask), Mode::Eval).unwrap();
            let full = enc.forward(&ids, None, None, Mode::Eval).unwrap();
            [packed, full].map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let widest = run(u8::MAX);
        for level in 0..simd_level() {
            let narrow = run(level);
            for (a, b) in widest.iter().zip(&narrow) {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "SIMD level {level}");
            }
        }
        if simd_level() == 0 {
            eprintln!("this CPU runs the baseline path only: nothing narrower to compare");
        }
    }

    #[test]
    fn fast_gelu_gradient_matches_candles_exact_gelu_gradient() {
        let xs: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.01).collect();
        let n = xs.len();
        let dev = Device::Cpu;
        let grad_of = |fast: bool| -> Vec<f32> {
            let v = Var::from_vec(xs.clone(), n, &dev).unwrap();
            let y = if fast {
                HiddenAct::Gelu.apply(v.as_tensor(), Mode::Train).unwrap()
            } else {
                v.as_tensor().gelu_erf().unwrap()
            };
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        };
        let (fast, exact) = (grad_of(true), grad_of(false));
        let worst = fast
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn fast_gelu_matches_exact_gelu() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let fast = HiddenAct::Gelu.apply(&x, Mode::Eval).unwrap();
        let exact = HiddenAct::Gelu.apply(&x, Mode::Train).unwrap();
        let d = max_abs_diff(&fast, &exact);
        assert!(d < 1e-6, "{d}");
        assert!((erf_f32(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((erf_f32(10.0) - 1.0).abs() < 1e-6 && (erf_f32(-10.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn mean_pool_and_normalize() {
        let dev = Device::Cpu;
        let h = Tensor::new(&[[[1.0f32, 2.0], [3.0, 4.0], [100.0, 100.0]]], &dev).unwrap();
        let m = Tensor::new(&[[1u32, 1, 0]], &dev).unwrap();
        let p = mean_pool(&h, &m).unwrap();
        assert_eq!(p.to_vec2::<f32>().unwrap(), vec![vec![2.0, 3.0]]);
        let n = l2_normalize(&p).unwrap().to_vec2::<f32>().unwrap();
        let norm: f32 = n[0].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    /// A trainable tiny encoder with weights larger than BERT's 0.02, so that every path
    /// carries a sizeable signal.
    fn tiny_trainable(dropout: f64) -> (VarMap, BertEncoder) {
        let varmap = VarMap::new();
        let mut cfg = tiny().with_dropout(dropout);
        cfg.initializer_range = 0.2;
        let opts = TrainableOptions {
            seed: 5,
            ..TrainableOptions::default()
        };
        let (enc, _) = BertEncoder::trainable(&varmap, &cfg, &opts, None).unwrap();
        (varmap, enc)
    }

    /// Hidden states `[4, 7, 16]` entering layer 0 (a variable, so its gradient is checked
    /// too), a right-padded mask of lengths 5, 3, 7, 1, and weights for the loss.
    fn fused_inputs() -> (Var, Tensor, Tensor) {
        let dev = Device::Cpu;
        let n = 4 * 7 * 16;
        let wave = |k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * k) % 23) as f32 / 23.0 - 0.5) * 2.0)
                .collect()
        };
        let x = Var::from_tensor(&Tensor::from_vec(wave(7919), (4, 7, 16), &dev).unwrap()).unwrap();
        let lengths = [5usize, 3, 7, 1];
        let mask: Vec<u32> = lengths
            .iter()
            .flat_map(|&l| (0..7).map(move |j| u32::from(j < l)))
            .collect();
        let mask = Tensor::from_vec(mask, (4, 7), &dev).unwrap();
        let w = Tensor::from_vec(wave(104_729), (4, 7, 16), &dev).unwrap();
        (x, mask, w)
    }

    /// A scalar of the real tokens of both layers' output, in f64.
    fn fused_loss(enc: &BertEncoder, x: &Var, mask: &Tensor, w: &Tensor) -> Tensor {
        let out = enc
            .forward_layers(x.as_tensor(), Some(mask), 0..2, Mode::Train)
            .unwrap();
        let m = mask
            .to_dtype(DType::F32)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
            .broadcast_as(out.shape())
            .unwrap();
        let real = (out * m).unwrap();
        let lin = (&real * w).unwrap().sum_all().unwrap();
        let sq = (real.sqr().unwrap().sum_all().unwrap() * 0.1).unwrap();
        (lin + sq).unwrap().to_dtype(DType::F64).unwrap()
    }

    fn grad_values(g: &candle_core::backprop::GradStore, t: &Tensor) -> Option<Vec<f32>> {
        g.get(t)
            .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    }

    #[test]
    fn fused_training_layers_match_the_composed_path() {
        // f32 products (the reference; bf16 on AMX by default).
        super::super::bf16::force_f32_training(true);
        let (varmap, mut enc) = tiny_trainable(0.0);
        let (x, mask, w) = fused_inputs();
        let vars = varmap.all_vars();
        let run = |enc: &BertEncoder| {
            let loss = fused_loss(enc, &x, &mask, &w);
            let grads = super::super::backward(&loss).unwrap();
            (loss.to_scalar::<f64>().unwrap(), grads)
        };
        enc.set_fused_training(true);
        let (fused_loss_value, fused) = run(&enc);
        // candle's own backward does not see the weights inside the fused op: the fused path
        // really ran.
        let candle_only = fused_loss(&enc, &x, &mask, &w).backward().unwrap();
        let layer_weight = enc.layers[1].intermediate.weight();
        assert!(candle_only.get(layer_weight).is_none());
        enc.set_fused_training(false);
        let (composed_loss_value, composed) = run(&enc);
        assert!(
            (fused_loss_value - composed_loss_value).abs() < 1e-5 * composed_loss_value.abs(),
            "{fused_loss_value} vs {composed_loss_value}"
        );
        let mut compared = 0;
        for t in vars
            .iter()
            .map(|v| v.as_tensor())
            .chain(std::iter::once(x.as_tensor()))
        {
            let (a, b) = (grad_values(&fused, t), grad_values(&composed, t));
            let (Some(a), Some(b)) = (a, b) else {
                // The embeddings are not in this computation: neither path gives them one.
                assert!(grad_values(&fused, t).is_none() && grad_values(&composed, t).is_none());
                continue;
            };
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            let diff = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "gradient differs by {diff} (scale {scale})"
            );
            compared += 1;
        }
        // 16 tensors per layer, and the input.
        assert_eq!(compared, 2 * 16 + 1);
    }

    #[test]
    fn fused_training_dropout_is_seeded_and_in_the_gradient() {
        // f32 products (the reference; bf16 on AMX by default).
        super::super::bf16::force_f32_training(true);
        let (varmap, enc) = tiny_trainable(0.3);
        let (x, mask, w) = fused_inputs();
        let at = |seed: u64| -> f64 {
            enc.set_dropout_seed(seed);
            fused_loss(&enc, &x, &mask, &w).to_scalar::<f64>().unwrap()
        };
        assert_eq!(at(3), at(3));
        assert_ne!(at(3), at(4));
        enc.set_dropout_seed(3);
        let grads = super::super::backward(&fused_loss(&enc, &x, &mask, &w)).unwrap();
        let named = varmap.data().lock().unwrap().clone();
        let mut checked: Vec<(String, Tensor)> = [
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.attention.self.value.bias",
            "encoder.layer.0.output.LayerNorm.weight",
            "encoder.layer.1.intermediate.dense.weight",
            "encoder.layer.1.attention.output.dense.bias",
        ]
        .iter()
        .map(|n| (n.to_string(), named[*n].as_tensor().clone()))
        .collect();
        checked.push(("input".into(), x.as_tensor().clone()));
        let eps = 1e-2f32;
        for (name, t) in checked {
            let var = if name == "input" {
                x.clone()
            } else {
                named[&name].clone()
            };
            let original = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grad = grad_values(&grads, &t).unwrap_or_else(|| panic!("{name}: no gradient"));
            let mut idx: Vec<usize> = (0..grad.len()).collect();
            idx.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
            for &i in &idx[..3] {
                let shifted = |d: f32| {
                    let mut v = original.clone();
                    v[i] += d;
                    var.set(&Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    at(3)
                };
                let numeric = ((shifted(eps) - shifted(-eps)) / (2.0 * f64::from(eps))) as f32;
                var.set(&Tensor::from_vec(original.clone(), t.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let analytic = grad[i];
                let err = (numeric - analytic).abs();
                assert!(
                    err <= 2e-2 * analytic.abs().max(numeric.abs()) + 2e-3,
                    "{name}[{i}]: finite difference {numeric} vs fused backward {analytic}"
                );
            }
        }
    }
}
