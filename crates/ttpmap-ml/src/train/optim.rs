//! AdamW (Loshchilov & Hutter 2019, <https://arxiv.org/abs/1711.05101>) fused over raw f32
//! buffers, parameter groups with layer-wise learning-rate decay (Sun et al. 2019, How to
//! Fine-Tune BERT for Text Classification, <https://arxiv.org/abs/1905.05583>) and gradient
//! clipping by global norm.
//!
//! [`FusedAdamW`] keeps the first and second moments of each parameter as `Vec<f32>` and updates
//! each parameter in one pass over its gradient, moments and values, then writes it back with
//! one `Var::set`; it builds no candle temporaries (candle's `AdamW` builds about ten per
//! parameter per step, see CANDLE_NOTES). The update is PyTorch's `torch.optim.AdamW`
//! (`foreach=False`, `amsgrad=False`): per-parameter step count `t`,
//! `p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//! p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::raw::{tensor_like, with_f32};
use crate::{Error, Result};

/// A named trainable variable and the index of its [`ParamGroup`].
#[derive(Debug, Clone)]
pub struct Param {
    /// Variable name (as in the `VarMap`), e.g. `encoder.encoder.layer.5.attention.self.query.weight`.
    pub name: String,
    /// The variable (f32).
    pub var: Var,
    /// Index into the optimizer's groups.
    pub group: usize,
}

/// Hyperparameters shared by a set of parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamGroup {
    /// Group name, e.g. `layer5`, `layer5.no_decay`, `embeddings`, `head`.
    pub name: String,
    /// Peak learning rate (multiplied by the schedule's factor each step).
    pub lr: f64,
    /// Decoupled weight decay coefficient.
    pub weight_decay: f64,
}

/// AdamW moment hyperparameters (PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// First-moment decay; default 0.9.
    pub beta1: f64,
    /// Second-moment decay; default 0.999.
    pub beta2: f64,
    /// Denominator term; default 1e-8.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Layer-wise learning-rate decay settings for [`llrd_groups`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlrdConfig {
    /// Learning rate of the top encoder layer; default 5e-5.
    pub encoder_lr: f64,
    /// Learning rate of everything outside the encoder (the head); default 1e-3.
    pub head_lr: f64,
    /// Factor per layer going down from the top; default 0.85.
    pub decay: f64,
    /// Weight decay of weights (biases and LayerNorm get 0); default 0.01.
    pub weight_decay: f64,
    /// Leave `*word_embeddings.weight` out of the trained parameters; default false.
    pub freeze_word_embeddings: bool,
}

impl Default for LlrdConfig {
    fn default() -> Self {
        Self {
            encoder_lr: 5e-5,
            head_lr: 1e-3,
            decay: 0.85,
            weight_decay: 0.01,
            freeze_word_embeddings: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    Embeddings,
    Layer(usize),
    Head,
}

fn depth_of(name: &str, num_layers: usize) -> Result<Depth> {
    let parts: Vec<&str> = name.split('.').collect();
    let top = || {
        num_layers.checked_sub(1).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "llrd_groups: {name} is an encoder layer but num_layers is 0"
            ))
        })
    };
    for w in parts.windows(2) {
        if w[0] == "layer" {
            if let Ok(i) = w[1].parse::<usize>() {
                top()?;
                if i >= num_layers {
                    return Err(Error::InvalidArgument(format!(
                        "llrd_groups: {name} is layer {i} but num_layers is {num_layers}"
                    )));
                }
                return Ok(Depth::Layer(i));
            }
        }
    }
    // Whole dot-separated components, so that e.g. `head.label_embeddings.weight` stays in the head.
    let has = |c: &str| parts[..parts.len().saturating_sub(1)].contains(&c);
    if has("pooler") {
        return Ok(Depth::Layer(top()?));
    }
    if has("embeddings") {
        return Ok(Depth::Embeddings);
    }
    Ok(Depth::Head)
}

fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name == "bias" || name.contains("LayerNorm")
}

/// Groups named variables for layer-wise LR decay.
///
/// Naming rule (matched on whole dot-separated components): a name with components
/// `layer.{i}` is encoder layer `i` (lr = `encoder_lr * decay^(num_layers-1-i)`); a name with a
/// component `pooler` counts as the top layer; a name with a component `embeddings` (and no
/// layer) is the embeddings (lr = `encoder_lr * decay^num_layers`); anything else is the head
/// (lr = `head_lr`). Names ending in `.bias` or containing `LayerNorm` get weight decay 0. With
/// `freeze_word_embeddings`, names ending in `word_embeddings.weight` are left out of the
/// returned params. One group per (depth, decay / no decay) pair that has parameters, ordered
/// embeddings, layer0..layerN-1, head, each as `name` then `name.no_decay`.
pub fn llrd_groups(
    named: &[(String, Var)],
    num_layers: usize,
    cfg: &LlrdConfig,
) -> Result<(Vec<ParamGroup>, Vec<Param>)> {
    let valid = [cfg.encoder_lr, cfg.head_lr, cfg.decay, cfg.weight_decay]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "llrd_groups: learning rates, decay and weight decay must be finite and >= 0: {cfg:?}"
        )));
    }
    let mut seen = HashSet::new();
    let mut keyed = Vec::with_capacity(named.len());
    for (name, var) in named {
        if !seen.insert(name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "llrd_groups: variable {name} is listed twice"
            )));
        }
        if cfg.freeze_word_embeddings && name.ends_with("word_embeddings.weight") {
            continue;
        }
        keyed.push(((depth_of(name, num_layers)?, is_no_decay(name)), name, var));
    }
    let keys: std::collections::BTreeSet<(Depth, bool)> = keyed.iter().map(|k| k.0).collect();
    let mut index = BTreeMap::new();
    let mut groups = Vec::with_capacity(keys.len());
    for (depth, no_decay) in keys {
        let (base, lr) = match depth {
            Depth::Embeddings => (
                "embeddings".to_string(),
                cfg.encoder_lr * cfg.decay.powi(num_layers as i32),
            ),
            Depth::Layer(i) => (
                format!("layer{i}"),
                cfg.encoder_lr * cfg.decay.powi((num_layers - 1 - i) as i32),
            ),
            Depth::Head => ("head".to_string(), cfg.head_lr),
        };
        let (name, weight_decay) = if no_decay {
            (format!("{base}.no_decay"), 0.0)
        } else {
            (base, cfg.weight_decay)
        };
        index.insert((depth, no_decay), groups.len());
        groups.push(ParamGroup {
            name,
            lr,
            weight_decay,
        });
    }
    let params = keyed
        .into_iter()
        .map(|(key, name, var)| Param {
            name: name.clone(),
            var: var.clone(),
            group: index[&key],
        })
        .collect();
    Ok((groups, params))
}

#[derive(Debug, Clone)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

/// AdamW over raw f32 buffers; see the module docs for the exact update.
#[derive(Debug)]
pub struct FusedAdamW {
    params: Vec<Param>,
    groups: Vec<ParamGroup>,
    cfg: AdamWConfig,
    state: Vec<Moments>,
    steps: u64,
}

impl FusedAdamW {
    /// Checks the parameters (f32, unique names, valid group indices) and allocates zero moments.
    pub fn new(params: Vec<Param>, groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        let ok =
            (0.0..1.0).contains(&cfg.beta1) && (0.0..1.0).contains(&cfg.beta2) && cfg.eps > 0.0;
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "AdamW needs 0 <= beta1, beta2 < 1 and eps > 0: {cfg:?}"
            )));
        }
        for g in &groups {
            if !(g.lr.is_finite()
                && g.lr >= 0.0
                && g.weight_decay.is_finite()
                && g.weight_decay >= 0.0)
            {
                return Err(Error::InvalidArgument(format!(
                    "AdamW group {} has lr {} and weight_decay {}; both must be finite and >= 0",
                    g.name, g.lr, g.weight_decay
                )));
            }
        }
        let mut seen = HashSet::new();
        let mut state = Vec::with_capacity(params.len());
        for p in &params {
            if !seen.insert(p.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "AdamW: parameter {} is listed twice",
                    p.name
                )));
            }
            if p.group >= groups.len() {
                return Err(Error::InvalidArgument(format!(
                    "AdamW: parameter {} is in group {} but there are {} groups",
                    p.name,
                    p.group,
                    groups.len()
                )));
            }
            if p.var.dtype() != DType::F32 {
                return Err(Error::InvalidArgument(format!(
                    "AdamW: parameter {} is {:?}; the fused optimizer handles f32 only",
                    p.name,
                    p.var.dtype()
                )));
            }
            let n = p.var.elem_count();
            state.push(Moments {
                m: vec![0.0; n],
                v: vec![0.0; n],
                step: 0,
            });
        }
        Ok(Self {
            params,
            groups,
            cfg,
            state,
            steps: 0,
        })
    }

    /// One update; the effective lr of a group is `group.lr * lr_factor`. Parameters with no
    /// gradient in `grads` are skipped (moments and step count unchanged).
    pub fn step(&mut self, grads: &GradStore, lr_factor: f64) -> Result<()> {
        if !(lr_factor.is_finite() && lr_factor >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "AdamW: lr_factor must be finite and >= 0, got {lr_factor}"
            )));
        }
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        for (p, st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            if grad.elem_count() != st.m.len() {
                return Err(Error::InvalidArgument(format!(
                    "AdamW: gradient of {} has shape {:?}, parameter {:?}",
                    p.name,
                    grad.dims(),
                    p.var.dims()
                )));
            }
            let group = &self.groups[p.group];
            let lr = group.lr * lr_factor;
            st.step += 1;
            let t = st.step as i32;
            let bc1 = 1.0 - b1.powi(t);
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
            let decay = (1.0 - lr * group.weight_decay) as f32;
            let step_size = (lr / bc1) as f32;
            let inv_bc2_sqrt = (1.0 / bc2_sqrt) as f32;
            let (b1f, b2f, epsf) = (b1 as f32, b2 as f32, eps as f32);
            let (one_b1, one_b2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
            let Moments { m, v, .. } = st;
            let updated = with_f32(grad, &p.name, |g| {
                with_f32(p.var.as_tensor(), &p.name, |values| {
                    let mut out = Vec::with_capacity(values.len());
                    out.extend(
                        m.iter_mut()
                            .zip(v.iter_mut())
                            .zip(g.iter().zip(values))
                            .map(|((m, v), (&g, &x))| {
                                *m = b1f * *m + one_b1 * g;
                                *v = b2f * *v + one_b2 * (g * g);
                                let denom = v.sqrt() * inv_bc2_sqrt + epsf;
                                x * decay - step_size * (*m / denom)
                            }),
                    );
                    out
                })
            })??;
            p.var.set(&tensor_like(p.var.as_tensor(), updated)?)?;
        }
        self.steps += 1;
        Ok(())
    }

    /// Number of `step` calls so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, in the order given to [`FusedAdamW::new`].
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Mutable groups, e.g. to change a group's learning rate.
    pub fn groups_mut(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }

    /// Moments as named CPU tensors (`{param}.m`, `{param}.v`, f32 in the parameter's shape;
    /// `{param}.step`, i64 `[1]`) plus `__step` (i64 `[1]`) for checkpoints.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let cpu = Device::Cpu;
        let mut out = Vec::with_capacity(3 * self.params.len() + 1);
        for (p, st) in self.params.iter().zip(&self.state) {
            let shape = p.var.shape();
            out.push((
                format!("{}.m", p.name),
                Tensor::from_slice(&st.m, shape, &cpu)?,
            ));
            out.push((
                format!("{}.v", p.name),
                Tensor::from_slice(&st.v, shape, &cpu)?,
            ));
            out.push((
                format!("{}.step", p.name),
                Tensor::new(&[st.step as i64], &cpu)?,
            ));
        }
        out.push((
            "__step".to_string(),
            Tensor::new(&[self.steps as i64], &cpu)?,
        ));
        Ok(out)
    }

    /// Restores moments and step counts from [`FusedAdamW::state_tensors`]' output. A missing
    /// `{param}.step` falls back to `__step`. Errors name the missing or mis-shaped entry; on
    /// error the optimizer is unchanged.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let read_step = |name: &str| -> Result<Option<u64>> {
            let Some(t) = tensors.get(name) else {
                return Ok(None);
            };
            let bad = |problem: String| Error::OptimizerState {
                name: name.to_string(),
                problem,
            };
            if t.elem_count() != 1 {
                return Err(bad(format!(
                    "expected one value, found shape {:?}",
                    t.dims()
                )));
            }
            let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
            if !(v >= 0.0 && v.fract() == 0.0 && v < 9.0e15) {
                return Err(bad(format!("expected a step count, found {v}")));
            }
            Ok(Some(v as u64))
        };
        let steps = read_step("__step")?.ok_or_else(|| Error::OptimizerState {
            name: "__step".to_string(),
            problem: "missing".to_string(),
        })?;
        let mut state = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let moment = |suffix: &str| -> Result<Vec<f32>> {
                let name = format!("{}.{suffix}", p.name);
                let t = tensors.get(&name).ok_or_else(|| Error::OptimizerState {
                    name: name.clone(),
                    problem: "missing".to_string(),
                })?;
                if t.dims() != p.var.dims() || t.dtype() != DType::F32 {
                    return Err(Error::OptimizerState {
                        name,
                        problem: format!(
                            "has {:?} {:?}, the parameter is f32 {:?}",
                            t.dtype(),
                            t.dims(),
                            p.var.dims()
                        ),
                    });
                }
                Ok(t.flatten_all()?.to_vec1::<f32>()?)
            };
            let m = moment("m")?;
            let v = moment("v")?;
            let step = read_step(&format!("{}.step", p.name))?.unwrap_or(steps);
            state.push(Moments { m, v, step });
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars` (those present in `grads`), computed in f64; when
/// it exceeds `max_norm` every such gradient is multiplied by `max_norm / (norm + 1e-6)` (as
/// PyTorch's `clip_grad_norm_`). Returns the norm before clipping. A NaN or infinite norm is an
/// error and leaves `grads` unchanged.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "clip_grad_norm: max_norm must be finite and > 0, got {max_norm}"
        )));
    }
    let mut sum_sq = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum_sq += if g.dtype() == DType::F32 {
                with_f32(g, "clip_grad_norm", |s| {
                    // f32 partial sums over short chunks (vectorised), accumulated in f64.
                    s.chunks(256)
                        .map(|c| c.iter().map(|x| x * x).sum::<f32>() as f64)
                        .sum::<f64>()
                })?
            } else {
                g.to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?
            };
        }
    }
    let norm = sum_sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::NonFiniteGradNorm { norm });
    }
    if norm > max_norm {
        let coef = max_norm / (norm + 1e-6);
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::Optimizer;

    fn var(v: &[f32], shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::from_slice(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn grads_for(pairs: &[(&Var, &[f32])]) -> GradStore {
        let mut g = GradStore::default();
        for (v, vals) in pairs {
            g.insert(
                v.as_tensor(),
                Tensor::from_slice(vals, v.shape(), &Device::Cpu).unwrap(),
            );
        }
        g
    }

    /// f64 reference of PyTorch's AdamW (torch/optim/adamw.py, single-tensor path).
    fn adamw_ref(
        p: &mut [f64],
        m: &mut [f64],
        v: &mut [f64],
        g: &[f64],
        t: i32,
        (lr, wd): (f64, f64),
        c: &AdamWConfig,
    ) {
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let denom = v[i].sqrt() / bc2.sqrt() + c.eps;
            p[i] -= lr / bc1 * m[i] / denom;
        }
    }

    const P0: [f32; 6] = [0.5, -1.0, 2.0, 0.0, -0.25, 3.0];
    const GRADS: [[f32; 6]; 3] = [
        [0.1, -0.2, 0.3, 0.0, 1.5, -0.05],
        [-0.3, 0.1, 0.2, 0.4, -1.0, 0.02],
        [0.05, 0.05, -0.6, 0.1, 0.5, 0.0],
    ];

    #[test]
    fn matches_f64_reference_over_three_steps() {
        let cfg = AdamWConfig::default();
        let (lr, wd) = (1e-2, 0.1);
        let w = var(&P0, &[2, 3]);
        let groups = vec![ParamGroup {
            name: "all".into(),
            lr,
            weight_decay: wd,
        }];
        let params = vec![Param {
            name: "w".into(),
            var: w.clone(),
            group: 0,
        }];
        let mut opt = FusedAdamW::new(params, groups, cfg).unwrap();
        let mut p: Vec<f64> = P0.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0; 6], vec![0.0; 6]);
        // lr_factor 0.5 on the second step: effective lr halves.
        for (t, (g, factor)) in GRADS.iter().zip([1.0, 0.5, 1.0]).enumerate() {
            opt.step(&grads_for(&[(&w, g)]), factor).unwrap();
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            adamw_ref(
                &mut p,
                &mut m,
                &mut v,
                &g64,
                t as i32 + 1,
                (lr * factor, wd),
                &cfg,
            );
        }
        assert_eq!(opt.steps(), 3);
        for (a, b) in values(&w).iter().zip(&p) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn matches_candle_adamw() {
        let (lr, wd) = (1e-3, 0.01);
        let w_fused = var(&P0, &[6]);
        let w_candle = var(&P0, &[6]);
        let mut fused = FusedAdamW::new(
            vec![Param {
                name: "w".into(),
                var: w_fused.clone(),
                group: 0,
            }],
            vec![ParamGroup {
                name: "g".into(),
                lr,
                weight_decay: wd,
            }],
            AdamWConfig::default(),
        )
        .unwrap();
        let mut reference = candle_nn::AdamW::new(
            vec![w_candle.clone()],
            candle_nn::ParamsAdamW {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
            },
        )
        .unwrap();
        for g in &GRADS {
            fused.step(&grads_for(&[(&w_fused, g)]), 1.0).unwrap();
            reference.step(&grads_for(&[(&w_candle, g)])).unwrap();
        }
        for (a, b) in values(&w_fused).iter().zip(values(&w_candle)) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn skips_params_without_gradient_and_round_trips_state() {
        let a = var(&P0, &[6]);
        let b = var(&[1.0, 2.0], &[2]);
        let params = vec![
            Param {
                name: "a".into(),
                var: a.clone(),
                group: 0,
            },
            Param {
                name: "b".into(),
                var: b.clone(),
                group: 0,
            },
        ];
        let groups = vec![ParamGroup {
            name: "g".into(),
            lr: 0.1,
            weight_decay: 0.0,
        }];
        let mut opt =
            FusedAdamW::new(params.clone(), groups.clone(), AdamWConfig::default()).unwrap();
        opt.step(&grads_for(&[(&a, &GRADS[0])]), 1.0).unwrap();
        assert_eq!(values(&b), vec![1.0, 2.0]);
        let state = opt.state_tensors().unwrap();
        let map: HashMap<String, Tensor> = state.into_iter().collect();
        assert_eq!(map["b.m"].to_vec1::<f32>().unwrap(), vec![0.0, 0.0]);
        assert_eq!(map["b.step"].to_vec1::<i64>().unwrap(), vec![0]);
        assert_eq!(map["a.step"].to_vec1::<i64>().unwrap(), vec![1]);

        // A second optimizer restored from the state makes the same next step.
        let a2 = var(&values(&a), &[6]);
        let b2 = var(&values(&b), &[2]);
        let params2 = vec![
            Param {
                name: "a".into(),
                var: a2.clone(),
                group: 0,
            },
            Param {
                name: "b".into(),
                var: b2.clone(),
                group: 0,
            },
        ];
        let mut opt2 = FusedAdamW::new(params2, groups, AdamWConfig::default()).unwrap();
        opt2.load_state(&map).unwrap();
        assert_eq!(opt2.steps(), 1);
        opt.step(&grads_for(&[(&a, &GRADS[1]), (&b, &[0.5, -0.5])]), 1.0)
            .unwrap();
        opt2.step(&grads_for(&[(&a2, &GRADS[1]), (&b2, &[0.5, -0.5])]), 1.0)
            .unwrap();
        assert_eq!(values(&a), values(&a2));
        assert_eq!(values(&b), values(&b2));

        // Missing and mis-shaped entries are named.
        let mut broken = map.clone();
        broken.remove("a.v");
        let err = opt2.load_state(&broken).unwrap_err().to_string();
        assert!(err.contains("a.v") && err.contains("missing"), "{err}");
        let mut broken = map;
        broken.insert(
            "b.m".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = opt2.load_state(&broken).unwrap_err().to_string();
        assert!(err.contains("b.m"), "{err}");
    }

    #[test]
    fn llrd_groups_lrs_decay_and_freezing() {
        let names = [
            "encoder.encoder.layer.5.attention.self.query.weight",
            "encoder.encoder.layer.5.attention.self.query.bias",
            "encoder.encoder.layer.0.output.LayerNorm.weight",
            "encoder.encoder.layer.3.intermediate.dense.weight",
            "encoder.embeddings.word_embeddings.weight",
            "encoder.embeddings.LayerNorm.weight",
            "encoder.embeddings.position_embeddings.weight",
            "encoder.pooler.dense.weight",
            "head.queries",
            "head.score.bias",
            "head.label_embeddings.weight",
        ];
        let named: Vec<(String, Var)> = names
            .iter()
            .map(|n| (n.to_string(), var(&[0.0], &[1])))
            .collect();
        let cfg = LlrdConfig::default();
        let (groups, params) = llrd_groups(&named, 6, &cfg).unwrap();
        let group_of = |name: &str| {
            let p = params.iter().find(|p| p.name == name).unwrap();
            groups[p.group].clone()
        };
        let lr = |k: i32| 5e-5 * 0.85f64.powi(k);
        let expect = [
            // (name, group, lr, weight decay)
            (names[0], "layer5", lr(0), 0.01),
            (names[1], "layer5.no_decay", lr(0), 0.0),
            (names[2], "layer0.no_decay", lr(5), 0.0),
            (names[3], "layer3", lr(2), 0.01),
            (names[4], "embeddings", lr(6), 0.01),
            (names[5], "embeddings.no_decay", lr(6), 0.0),
            (names[6], "embeddings", lr(6), 0.01),
            (names[7], "layer5", lr(0), 0.01),
            (names[8], "head", 1e-3, 0.01),
            (names[9], "head.no_decay", 1e-3, 0.0),
            (names[10], "head", 1e-3, 0.01),
        ];
        for (name, group, lr, wd) in expect {
            let g = group_of(name);
            assert_eq!((g.name.as_str(), g.weight_decay), (group, wd), "{name}");
            // powi may round differently in an optimised build (constant folding).
            assert!(
                (g.lr - lr).abs() <= 1e-12 * lr,
                "{name}: lr {} vs {lr}",
                g.lr
            );
        }
        let order: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "embeddings",
                "embeddings.no_decay",
                "layer0.no_decay",
                "layer3",
                "layer5",
                "layer5.no_decay",
                "head",
                "head.no_decay"
            ]
        );
        assert_eq!(params.len(), names.len());

        let frozen = LlrdConfig {
            freeze_word_embeddings: true,
            ..cfg
        };
        let (_, params) = llrd_groups(&named, 6, &frozen).unwrap();
        assert_eq!(params.len(), names.len() - 1);
        assert!(params
            .iter()
            .all(|p| !p.name.ends_with("word_embeddings.weight")));

        // Layer index beyond num_layers, duplicate names: errors.
        assert!(llrd_groups(&named, 4, &cfg).is_err());
        let dup = vec![named[0].clone(), named[0].clone()];
        assert!(llrd_groups(&dup, 6, &cfg).is_err());
    }

    #[test]
    fn clip_grad_norm_known_values() {
        let a = var(&[0.0, 0.0], &[2]);
        let b = var(&[0.0], &[1]);
        let absent = var(&[0.0], &[1]);
        // Norm of (3, 4, 12) = 13.
        let mut g = grads_for(&[(&a, &[3.0, 4.0]), (&b, &[12.0])]);
        let vars = [a.clone(), b.clone(), absent];
        let norm = clip_grad_norm(&mut g, &vars, 100.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-12);
        assert_eq!(
            g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0]
        );
        // Clipped to 1.3: every value times 1.3 / (13 + 1e-6).
        let norm = clip_grad_norm(&mut g, &vars, 1.3).unwrap();
        assert!((norm - 13.0).abs() < 1e-12);
        let coef = 1.3 / (13.0 + 1e-6);
        let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let gb = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!((ga[0] as f64 - 3.0 * coef).abs() < 1e-6);
        assert!((ga[1] as f64 - 4.0 * coef).abs() < 1e-6);
        assert!((gb[0] as f64 - 12.0 * coef).abs() < 1e-6);
        let norm = clip_grad_norm(&mut g, &vars, 100.0).unwrap();
        assert!((norm - 1.3).abs() < 1e-6);
        // Non-finite gradient: error, grads untouched.
        let mut g = grads_for(&[(&a, &[f32::NAN, 1.0])]);
        assert!(matches!(
            clip_grad_norm(&mut g, &vars, 1.0),
            Err(Error::NonFiniteGradNorm { .. })
        ));
    }
}
