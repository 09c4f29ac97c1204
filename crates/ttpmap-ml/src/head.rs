//! Label-attention classification head (the CASSANDRA recipe's head; label-wise attention as in
//! [Mullenbach et al. 2018, "Explainable Prediction of Medical Codes from Clinical
//! Text"](https://arxiv.org/abs/1802.05695)).
//!
//! Owns [`LabelAttentionHead`]: `L` label queries `[L, H]` attend over the encoder's
//! `last_hidden_state` `[B, S, H]` (scaled dot product, padding masked); each label's
//! representation is the attention-weighted sum of the hidden states, and one shared
//! `Linear(H -> 1)` scores every label: logits `[B, L]`.
//!
//! Invariants:
//! - Variable names: `head.queries` `[L, H]`, `head.score.weight` `[1, H]`, `head.score.bias`
//!   `[1]` (relative to the builder given to [`LabelAttentionHead::load`]: `queries`,
//!   `score.weight`, `score.bias`).
//! - [`Mode::Train`] uses a composed (differentiable) softmax and dropout on the label
//!   representations; [`Mode::Eval`] the fused softmax and no dropout. With dropout 0 both
//!   compute the same function.
//! - Padding keys get a large negative score, so they receive zero attention.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::encoder::bert::{softmax_last_dim_composed, Mode};
use crate::{Error, Result};

/// Shape and dropout of a [`LabelAttentionHead`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Number of labels `L`.
    pub num_labels: usize,
    /// Width `H` of the encoder's hidden states.
    pub hidden_size: usize,
    /// Dropout on the label representations in [`Mode::Train`]. Default 0.1 (BERT's hidden
    /// dropout).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_dropout() -> f64 {
    0.1
}

impl HeadConfig {
    /// A config with the default dropout.
    pub fn new(num_labels: usize, hidden_size: usize) -> Self {
        Self {
            num_labels,
            hidden_size,
            dropout: default_dropout(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_labels == 0 || self.hidden_size == 0 {
            return Err(Error::InvalidArgument(format!(
                "label-attention head needs num_labels > 0 and hidden_size > 0, got {} and {}",
                self.num_labels, self.hidden_size
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!(
                "head dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// How [`LabelAttentionHead::trainable`] initialises its variables.
#[derive(Debug, Clone)]
pub struct HeadInit {
    /// Seed of the random parts (queries when not given, score weight). N(0, 0.02) as BERT.
    pub seed: u64,
    /// Initial label queries `[L, H]`, e.g. from [`queries_from_vectors`]. Random when `None`.
    pub queries: Option<Tensor>,
}

/// The label-attention head.
#[derive(Debug, Clone)]
pub struct LabelAttentionHead {
    queries: Tensor,
    score_weight: Tensor,
    score_bias: Tensor,
    cfg: HeadConfig,
    /// Counter of training forward calls (starting from the init seed's hash for a trainable
    /// head): each call draws its dropout mask from the next value.
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Large negative added to attention scores of padding positions.
const MASK_NEG: f64 = -1e9;
/// Standard deviation of random initialisation (BERT's `initializer_range`).
const INIT_STD: f64 = 0.02;

impl LabelAttentionHead {
    /// Builds the head from `vb` holding `queries`, `score.weight` and `score.bias` (shapes
    /// checked against `cfg`).
    pub fn load(vb: VarBuilder, cfg: &HeadConfig) -> Result<Self> {
        cfg.validate()?;
        let queries = vb.get((cfg.num_labels, cfg.hidden_size), "queries")?;
        let score_weight = vb.pp("score").get((1, cfg.hidden_size), "weight")?;
        let score_bias = vb.pp("score").get(1, "bias")?;
        Ok(Self {
            queries,
            score_weight,
            score_bias,
            cfg: *cfg,
            calls: Default::default(),
        })
    }

    /// Creates `head.queries`, `head.score.weight`, `head.score.bias` in `varmap` (overwriting
    /// variables of the same names) and builds the head on them. `init.queries` must be
    /// `[L, H]` when given.
    pub fn trainable(varmap: &VarMap, cfg: &HeadConfig, init: &HeadInit) -> Result<Self> {
        cfg.validate()?;
        let (l, h) = (cfg.num_labels, cfg.hidden_size);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(init.seed);
        let mut normal = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (INIT_STD * standard_normal(&mut rng)) as f32)
                .collect()
        };
        let dev = Device::Cpu;
        let random_queries = Tensor::from_vec(normal(l * h), (l, h), &dev)?;
        let score_w = Tensor::from_vec(normal(h), (1, h), &dev)?;
        let queries = match &init.queries {
            Some(q) => {
                if q.dims() != [l, h] {
                    return Err(Error::InvalidArgument(format!(
                        "initial label queries have shape {:?}, expected [{l}, {h}]",
                        q.dims()
                    )));
                }
                q.to_dtype(DType::F32)?.to_device(&dev)?.detach()
            }
            None => random_queries,
        };
        let values = [
            ("head.queries", queries),
            ("head.score.weight", score_w),
            ("head.score.bias", Tensor::zeros(1, DType::F32, &dev)?),
        ];
        {
            let mut data = varmap.data().lock().map_err(|_| {
                Error::InvalidArgument("VarMap lock poisoned by a panicked thread".to_string())
            })?;
            for (name, value) in values {
                match data.get(name) {
                    Some(var) => var.set(&value)?,
                    None => {
                        data.insert(name.to_string(), Var::from_tensor(&value)?);
                    }
                }
            }
        }
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &dev).pp("head");
        let head = Self::load(vb, cfg)?;
        // Each seed's dropout masks are its own stream.
        head.calls.store(
            crate::encoder::splitmix(init.seed),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(head)
    }

    /// The head's config.
    pub fn config(&self) -> &HeadConfig {
        &self.cfg
    }

    /// The label queries `[L, H]`.
    pub fn queries(&self) -> &Tensor {
        &self.queries
    }

    /// Attention of each label over the positions, `[B, L, S]` (rows sum to 1 over real tokens).
    pub fn attention(&self, hidden: &Tensor, mask: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, s, h) = hidden.dims3()?;
        if h != self.cfg.hidden_size {
            return Err(Error::InvalidArgument(format!(
                "hidden states have width {h}, the head expects {}",
                self.cfg.hidden_size
            )));
        }
        if mask.dims() != [b, s] {
            return Err(Error::InvalidArgument(format!(
                "attention mask has shape {:?}, hidden states {:?}",
                mask.dims(),
                [b, s]
            )));
        }
        let dtype = hidden.dtype();
        // [B, S, H] x [H, L] -> [B, S, L] -> [B, L, S]
        let q = self.queries.to_dtype(dtype)?;
        let scores = hidden
            .broadcast_matmul(&q.t()?)?
            .transpose(1, 2)?
            .affine(1.0 / (h as f64).sqrt(), 0.0)?;
        let bias = (mask.to_dtype(dtype)?.affine(-1.0, 1.0)? * MASK_NEG)?.reshape((b, 1, s))?;
        let scores = scores.broadcast_add(&bias)?;
        Ok(match mode {
            Mode::Train => softmax_last_dim_composed(&scores)?,
            Mode::Eval => candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?,
        })
    }

    /// Logits `[B, L]` from `hidden` `[B, S, H]` and `mask` `[B, S]` (1 = token, 0 = padding).
    ///
    /// Without dropout (inference, or `dropout` 0) the shared linear layer is applied before
    /// the attention-weighted sum, which it commutes with: `sum_h (sum_s a_ls x_sh) w_h =
    /// sum_s a_ls (x_s . w)`. That needs one `[B, S]` vector instead of the `[B, L, H]` label
    /// representations (606 x 384 values per sentence for the default model), the largest
    /// tensors of a training step, and one product of `[L, S]` by `[S, H]` fewer.
    pub fn forward(&self, hidden: &Tensor, mask: &Tensor, mode: Mode) -> Result<Tensor> {
        let attn = self.attention(hidden, mask, mode)?;
        let w = self.score_weight.to_dtype(hidden.dtype())?; // [1, H]
        let logits = if mode == Mode::Train && self.cfg.dropout > 0.0 {
            let rep = attn.matmul(&hidden.contiguous()?)?; // [B, L, H]
            if rep.dtype() == DType::F32 && rep.device().is_cpu() {
                let call = self
                    .calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let op = DroppedScore {
                    p: self.cfg.dropout as f32,
                    seed: crate::encoder::splitmix(HEAD_DROPOUT_SALT ^ call),
                };
                rep.apply_op2(&w.contiguous()?, op)?
            } else {
                let rep = candle_nn::ops::dropout(&rep, self.cfg.dropout as f32)?;
                rep.broadcast_mul(&w.reshape((1, 1, ()))?)?.sum(D::Minus1)?
            }
        } else {
            let xw = hidden.broadcast_matmul(&w.t()?)?; // [B, S, 1]
            attn.matmul(&xw)?.squeeze(D::Minus1)? // [B, L]
        };
        Ok(logits.broadcast_add(&self.score_bias.to_dtype(logits.dtype())?)?)
    }
}

/// Salt of the head's dropout seeds (the encoder's fused layers draw theirs from their own
/// counter), so the two never share masks.
const HEAD_DROPOUT_SALT: u64 = 0x4845_4144_4452_4f50;

/// Training's scores with dropout on the label representations, as one operation: `rep`
/// `[B, L, H]` and the score weight `w` `[1, H]` give `sum_h rep_blh m_blh w_h` `[B, L]`, the
/// mask `m` inverted dropout at rate `p` drawn from `seed` (counter-based, so the backward
/// draws the same one). It is what `dropout(rep) * w` summed over `H` computes, without the
/// half dozen `[B, L, H]` tensors (random numbers, mask, scaled mask, product, their
/// gradients) that candle's composed dropout writes: those were half of a training step of
/// the default model (606 labels).
struct DroppedScore {
    p: f32,
    seed: u64,
}

impl candle_core::CustomOp2 for DroppedScore {
    fn name(&self) -> &'static str {
        "head-dropped-score"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let rep = crate::encoder::bert::f32_input(self.name(), s1, l1)?;
        let w = crate::encoder::bert::f32_input(self.name(), s2, l2)?;
        let (b, l, h) = l1.shape().dims3()?;
        if w.len() != h {
            candle_core::bail!("{}: {} weights for width {h}", self.name(), w.len());
        }
        let mask = crate::encoder::dropout_mask(self.seed, b * l * h, self.p);
        let mut out = vec![0f32; b * l];
        out.par_chunks_mut(64)
            .zip(rep.par_chunks(64 * h).zip(mask.par_chunks(64 * h)))
            .for_each(|(o, (r, m))| {
                for ((o, r), m) in o.iter_mut().zip(r.chunks_exact(h)).zip(m.chunks_exact(h)) {
                    *o = r.iter().zip(m).zip(w).map(|((r, m), w)| r * m * w).sum();
                }
            });
        Ok((candle_core::CpuStorage::F32(out), (b, l).into()))
    }

    fn bwd(
        &self,
        rep: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let (b, l, h) = rep.dims3()?;
        let mask = crate::encoder::dropout_mask(self.seed, b * l * h, self.p);
        let grad = grad.contiguous()?;
        let name = self.name();
        let (d_rep, d_w) = crate::encoder::bert::with_f32(name, &grad, |g| {
            crate::encoder::bert::with_f32(name, w, |w| {
                crate::encoder::bert::with_f32(name, rep, |r| {
                    // d rep = g m w; d w = sum over (b, l) of g m rep, in per-task partial sums.
                    let mut d_rep = vec![0f32; b * l * h];
                    let d_w = d_rep
                        .par_chunks_mut(64 * h)
                        .zip(r.par_chunks(64 * h).zip(mask.par_chunks(64 * h)))
                        .zip(g.par_chunks(64))
                        .map(|((dr, (r, m)), g)| {
                            let mut dw = vec![0f32; h];
                            for (((dr, r), m), &g) in dr
                                .chunks_exact_mut(h)
                                .zip(r.chunks_exact(h))
                                .zip(m.chunks_exact(h))
                                .zip(g)
                            {
                                for j in 0..h {
                                    let gm = g * m[j];
                                    dr[j] = gm * w[j];
                                    dw[j] += gm * r[j];
                                }
                            }
                            dw
                        })
                        .reduce(
                            || vec![0f32; h],
                            |mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                                a
                            },
                        );
                    (d_rep, d_w)
                })
            })
        })???;
        Ok((
            Some(Tensor::from_vec(d_rep, (b, l, h), rep.device())?),
            Some(Tensor::from_vec(d_w, w.shape(), w.device())?),
        ))
    }
}

/// Label queries `[L, H]` from one vector per label (e.g. the encoder's mean-pooled embedding
/// of `"T1059.001 PowerShell. <first sentence of the description>"`), each scaled to L2 norm
/// `norm`. A zero vector stays zero.
pub fn queries_from_vectors(vectors: &[Vec<f32>], norm: f64) -> Result<Tensor> {
    let h = vectors.first().map(Vec::len).unwrap_or(0);
    if vectors.is_empty() || h == 0 {
        return Err(Error::InvalidArgument(
            "no label vectors to build queries from".into(),
        ));
    }
    let mut flat = Vec::with_capacity(vectors.len() * h);
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != h {
            return Err(Error::InvalidArgument(format!(
                "label vector {i} has {} values, the first has {h}",
                v.len()
            )));
        }
        let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let scale = if n > 0.0 { norm / n } else { 0.0 };
        flat.extend(v.iter().map(|x| (*x as f64 * scale) as f32));
    }
    Ok(Tensor::from_vec(flat, (vectors.len(), h), &Device::Cpu)?)
}

/// One N(0, 1) draw (Box-Muller).
fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gradient of `v` in `grads`, flattened.
    fn grad_of(grads: &candle_core::backprop::GradStore, v: &Var) -> Vec<f32> {
        grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn head_with(queries: Vec<f32>, w: Vec<f32>, b: f32, l: usize, h: usize) -> LabelAttentionHead {
        let dev = Device::Cpu;
        LabelAttentionHead {
            queries: Tensor::from_vec(queries, (l, h), &dev).unwrap(),
            score_weight: Tensor::from_vec(w, (1, h), &dev).unwrap(),
            score_bias: Tensor::from_vec(vec![b], 1, &dev).unwrap(),
            cfg: HeadConfig {
                num_labels: l,
                hidden_size: h,
                dropout: 0.0,
            },
            calls: Default::default(),
        }
    }

    /// Hand computation: H = 2 (scale 1/sqrt 2), one sentence of 3 positions, last padded.
    /// hidden = [[1,0],[0,1],[5,5]], query q = [sqrt2*ln3, 0]: scores over real tokens
    /// [ln3, 0] -> softmax [3/4, 1/4]; rep = [3/4, 1/4]; w = [1, 2], b = 0.5:
    /// logit = 3/4 + 2/4 + 0.5 = 1.75. The padded [5,5] gets no weight.
    #[test]
    fn forward_matches_hand_computation_and_masks_padding() {
        let q0 = 2f32.sqrt() * 3f32.ln();
        let head = head_with(vec![q0, 0.0], vec![1.0, 2.0], 0.5, 1, 2);
        let dev = Device::Cpu;
        let hidden = Tensor::from_vec(vec![1f32, 0., 0., 1., 5., 5.], (1, 3, 2), &dev).unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 0], (1, 3), &dev).unwrap();
        for mode in [Mode::Train, Mode::Eval] {
            let logits = head.forward(&hidden, &mask, mode).unwrap();
            let v = logits.to_vec2::<f32>().unwrap();
            assert!((v[0][0] - 1.75).abs() < 1e-5, "{mode:?}: {v:?}");
        }
    }

    /// The forward without dropout (the shared linear layer first) against the label
    /// representations it avoids, values and gradients.
    #[test]
    fn the_linear_layer_commutes_with_the_attention_sum() {
        let dev = Device::Cpu;
        let (b, s, l, h) = (2, 5, 3, 4);
        let vals = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<f32>>();
        let q = Var::from_vec(vals(l * h, 0.7), (l, h), &dev).unwrap();
        let w = Var::from_vec(vals(h, 1.3), (1, h), &dev).unwrap();
        let head = LabelAttentionHead {
            queries: q.as_tensor().clone(),
            score_weight: w.as_tensor().clone(),
            score_bias: Tensor::from_vec(vec![0.25f32], 1, &dev).unwrap(),
            cfg: HeadConfig {
                num_labels: l,
                hidden_size: h,
                dropout: 0.0,
            },
            calls: Default::default(),
        };
        let hidden = Var::from_vec(vals(b * s * h, 0.37), (b, s, h), &dev).unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 0, 1, 1, 0, 0, 0], (b, s), &dev).unwrap();
        let fast = head
            .forward(hidden.as_tensor(), &mask, Mode::Train)
            .unwrap();
        let attn = head
            .attention(hidden.as_tensor(), &mask, Mode::Train)
            .unwrap();
        let slow = attn
            .matmul(hidden.as_tensor())
            .unwrap()
            .broadcast_mul(&w.as_tensor().reshape((1, 1, h)).unwrap())
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .broadcast_add(&head.score_bias)
            .unwrap();
        let (f, sl) = (
            fast.to_vec2::<f32>().unwrap(),
            slow.to_vec2::<f32>().unwrap(),
        );
        for (x, y) in f.iter().flatten().zip(sl.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{f:?} vs {sl:?}");
        }
        let eval = head.forward(hidden.as_tensor(), &mask, Mode::Eval).unwrap();
        for (x, y) in eval
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .flatten()
            .zip(sl.iter().flatten())
        {
            assert!((x - y).abs() < 1e-5);
        }
        // The same gradients for the queries, the score weight and the hidden states.
        let weights = Tensor::from_vec(vals(b * l, 2.1), (b, l), &dev).unwrap();
        let gf = (fast * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (slow * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&q, &w, &hidden] {
            let a = grad_of(&gf, v);
            let c = grad_of(&gs, v);
            assert_eq!(a.len(), c.len());
            for (x, y) in a.iter().zip(&c) {
                assert!((x - y).abs() < 1e-5, "{a:?} vs {c:?}");
            }
        }
    }

    /// The dropped-score operation against candle's composed ops on the same mask: values
    /// and both gradients; and the head draws a new mask at each training call.
    #[test]
    fn dropped_scores_are_the_composed_dropout_with_its_gradients() {
        let dev = Device::Cpu;
        let (b, l, h) = (3, 70, 24);
        let vals = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<f32>>();
        let rep = Var::from_vec(vals(b * l * h, 0.31), (b, l, h), &dev).unwrap();
        let w = Var::from_vec(vals(h, 1.7), (1, h), &dev).unwrap();
        let (p, seed) = (0.25f32, 99u64);
        let mask = crate::encoder::dropout_mask(seed, b * l * h, p);
        assert!(mask.contains(&0.0) && mask.iter().any(|&m| m > 1.0));
        let mask = Tensor::from_vec(mask, (b, l, h), &dev).unwrap();
        let op = rep
            .as_tensor()
            .apply_op2(w.as_tensor(), DroppedScore { p, seed })
            .unwrap();
        let composed = (rep.as_tensor() * &mask)
            .unwrap()
            .broadcast_mul(&w.as_tensor().reshape((1, 1, h)).unwrap())
            .unwrap()
            .sum(D::Minus1)
            .unwrap();
        assert_eq!(op.dims(), [b, l]);
        let (x, y) = (
            op.to_vec2::<f32>().unwrap(),
            composed.to_vec2::<f32>().unwrap(),
        );
        for (x, y) in x.iter().flatten().zip(y.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        let weights = Tensor::from_vec(vals(b * l, 2.3), (b, l), &dev).unwrap();
        let go = (op * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (composed * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&rep, &w] {
            let a = grad_of(&go, v);
            let c = grad_of(&gc, v);
            assert_eq!(a.len(), c.len());
            for (x, y) in a.iter().zip(&c) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
        // Through the head: each training call draws another mask; inference none.
        let mut head = head_with(vals(l * h, 0.9), vals(h, 1.1), 0.0, l, h);
        head.cfg.dropout = 0.1;
        let hidden = Tensor::from_vec(vals(b * 5 * h, 0.4), (b, 5, h), &dev).unwrap();
        let mask = Tensor::ones((b, 5), DType::U32, &dev).unwrap();
        let t1 = head
            .forward(&hidden, &mask, Mode::Train)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let t2 = head
            .forward(&hidden, &mask, Mode::Train)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let e = head
            .forward(&hidden, &mask, Mode::Eval)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_ne!(t1, t2);
        assert_ne!(t1, e);
        assert_eq!(
            e,
            head.forward(&hidden, &mask, Mode::Eval)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn trainable_names_and_query_init() {
        let vm = VarMap::new();
        let q = queries_from_vectors(&[vec![3.0, 4.0], vec![0.0, 2.0]], 10.0).unwrap();
        assert_eq!(
            q.to_vec2::<f32>().unwrap(),
            vec![vec![6.0, 8.0], vec![0.0, 10.0]]
        );
        let cfg = HeadConfig::new(2, 2);
        let head = LabelAttentionHead::trainable(
            &vm,
            &cfg,
            &HeadInit {
                seed: 1,
                queries: Some(q.clone()),
            },
        )
        .unwrap();
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["head.queries", "head.score.bias", "head.score.weight"]
        );
        assert_eq!(
            head.queries().to_vec2::<f32>().unwrap(),
            q.to_vec2::<f32>().unwrap()
        );
        assert!(LabelAttentionHead::trainable(
            &vm,
            &HeadConfig::new(3, 2),
            &HeadInit {
                seed: 1,
                queries: Some(q)
            }
        )
        .is_err());
    }

    #[test]
    fn gradients_reach_every_head_variable() {
        let vm = VarMap::new();
        let mut cfg = HeadConfig::new(3, 4);
        cfg.dropout = 0.0;
        let head = LabelAttentionHead::trainable(
            &vm,
            &cfg,
            &HeadInit {
                seed: 7,
                queries: None,
            },
        )
        .unwrap();
        let dev = Device::Cpu;
        let hidden = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 0, 0, 1, 1, 1, 1, 1], (2, 5), &dev).unwrap();
        let loss = head
            .forward(&hidden, &mask, Mode::Train)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for var in vm.all_vars() {
            let g = grads.get(var.as_tensor()).expect("gradient");
            let n = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n > 0.0);
        }
    }
}
