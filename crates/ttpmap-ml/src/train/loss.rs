//! Multi-label losses on logits: binary cross-entropy with logits and the Asymmetric Loss
//! (ASL, Ridnik et al. 2021, <https://arxiv.org/abs/2009.14119>).
//!
//! Both take `logits` and `targets` of the same shape (`[batch, labels]`, targets 0/1, float) and
//! return a scalar: the mean over all elements. Both are composed of differentiable candle ops
//! and stay finite for any finite logit: `log(sigmoid(x))` is computed as `-softplus(-x)` with
//! `softplus(x) = relu(x) + log(1 + exp(-|x|))`, never as `log` of a rounded probability
//! (candle's `binary_cross_entropy_with_logit` does the latter; see CANDLE_NOTES point 2).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Asymmetric Loss hyperparameters (defaults are the paper's multi-label settings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AslConfig {
    /// Focusing exponent on negatives; default 4.
    pub gamma_neg: f64,
    /// Focusing exponent on positives; default 0 (plain log-likelihood on positives).
    pub gamma_pos: f64,
    /// Probability margin for negatives (`p_m = max(p - clip, 0)`); default 0.05. 0 disables it.
    pub clip: f64,
    /// Lower clamp of the probabilities inside the logs; default 1e-8.
    pub eps: f64,
}

impl Default for AslConfig {
    fn default() -> Self {
        Self {
            gamma_neg: 4.0,
            gamma_pos: 0.0,
            clip: 0.05,
            eps: 1e-8,
        }
    }
}

impl AslConfig {
    fn validate(&self) -> Result<()> {
        let ok = self.gamma_neg.is_finite()
            && self.gamma_neg >= 0.0
            && self.gamma_pos.is_finite()
            && self.gamma_pos >= 0.0
            && (0.0..1.0).contains(&self.clip)
            && self.eps > 0.0
            && self.eps < 1.0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "ASL config needs gamma_neg, gamma_pos >= 0, 0 <= clip < 1, 0 < eps < 1; got {self:?}"
            )))
        }
    }
}

/// Which loss to train with. Default: ASL with its default settings.
///
/// TOML: `kind = "bce"` (optional `pos_weight`) or `kind = "asl"` with the [`AslConfig`] fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossConfig {
    /// Binary cross-entropy with logits; `pos_weight` scales the positive term (default none = 1).
    Bce {
        /// Weight of the positive term (PyTorch's `pos_weight`, one value for all labels).
        #[serde(default)]
        pos_weight: Option<f64>,
    },
    /// Asymmetric Loss.
    Asl(AslConfig),
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::Asl(AslConfig::default())
    }
}

impl LossConfig {
    /// The configured loss of `logits` against `targets`; a scalar (mean over elements).
    pub fn compute(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.compute_masked(logits, targets, None)
    }

    /// As [`Self::compute`], with the elements where `mask` is 0 left out (labels a sentence
    /// was not annotated for). The sum is still divided by the number of all elements, so a
    /// batch without masked elements has the same loss as [`Self::compute`] and a masked
    /// element adds nothing instead of re-weighting the others.
    pub fn compute_masked(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let per = match self {
            Self::Bce { pos_weight } => bce_elements(logits, targets, *pos_weight)?,
            Self::Asl(cfg) => asl_elements(logits, targets, cfg)?,
        };
        match mask {
            None => Ok(per.mean_all()?),
            Some(m) => {
                if m.dims() != per.dims() {
                    return Err(Error::InvalidArgument(format!(
                        "loss: mask has shape {:?} but logits {:?}",
                        m.dims(),
                        per.dims()
                    )));
                }
                let n = per.elem_count() as f64;
                Ok((per * m.to_dtype(logits.dtype())?)?
                    .sum_all()?
                    .affine(1.0 / n, 0.0)?)
            }
        }
    }
}

fn check_inputs(logits: &Tensor, targets: &Tensor) -> Result<()> {
    if logits.dims() != targets.dims() {
        return Err(Error::InvalidArgument(format!(
            "loss: logits have shape {:?} but targets {:?}",
            logits.dims(),
            targets.dims()
        )));
    }
    if !matches!(logits.dtype(), DType::F32 | DType::F64) || logits.dtype() != targets.dtype() {
        return Err(Error::InvalidArgument(format!(
            "loss: logits and targets must both be f32 or f64, got {:?} and {:?}",
            logits.dtype(),
            targets.dtype()
        )));
    }
    if logits.elem_count() == 0 {
        return Err(Error::InvalidArgument("loss: empty logits".to_string()));
    }
    Ok(())
}

/// `log(1 + exp(-|x|))`, in (0, ln 2]: the part of softplus that never overflows.
fn log1p_exp_neg_abs(x: &Tensor) -> Result<Tensor> {
    Ok(x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)
}

/// `softplus(x) = log(1 + exp(x)) = relu(x) + log(1 + exp(-|x|))`; `-log(sigmoid(x)) =
/// softplus(-x)` and `-log(1 - sigmoid(x)) = softplus(x)`.
fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + log1p_exp_neg_abs(x)?)?)
}

/// Binary cross-entropy with logits, mean over all elements.
///
/// Per element, without `pos_weight`: `relu(x) - x*y + log(1 + exp(-|x|))`; with it (as
/// PyTorch's `BCEWithLogitsLoss`): `(1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x)`,
/// which is `-(pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`.
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<f64>,
) -> Result<Tensor> {
    Ok(bce_elements(logits, targets, pos_weight)?.mean_all()?)
}

/// [`bce_with_logits`] per element.
fn bce_elements(logits: &Tensor, targets: &Tensor, pos_weight: Option<f64>) -> Result<Tensor> {
    check_inputs(logits, targets)?;
    let per = match pos_weight {
        None => ((logits.relu()? - (logits * targets)?)? + log1p_exp_neg_abs(logits)?)?,
        Some(pw) => {
            if !(pw.is_finite() && pw > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "bce: pos_weight must be finite and > 0, got {pw}"
                )));
            }
            let neg_term = (targets.affine(-1.0, 1.0)? * logits)?;
            let weight = targets.affine(pw - 1.0, 1.0)?;
            (neg_term + (weight * softplus(&logits.neg()?)?)?)?
        }
    };
    Ok(per)
}

/// Lower clamp for `p_m` before `log` in `p_m^gamma = exp(gamma * log p_m)`: below it the weight
/// underflows to 0 anyway (1e-30^gamma), and `log 0` would give a NaN gradient.
const POW_FLOOR: f64 = 1e-30;

/// Asymmetric Loss, mean over all elements (the paper's code sums; the mean keeps BCE and ASL
/// on the same scale).
///
/// Per element with `p = sigmoid(x)` and `p_m = max(p - clip, 0)`:
/// `-y * (1 - p)^gamma_pos * log(max(p, eps)) - (1 - y) * p_m^gamma_neg * log(max(1 - p_m, eps))`.
/// `log p = -softplus(-x)`, `(1 - p)^g = exp(-g * softplus(x))`; with `clip = 0`,
/// `log(1 - p) = -softplus(x)` and `p^g = exp(-g * softplus(-x))`.
pub fn asymmetric_loss(logits: &Tensor, targets: &Tensor, cfg: &AslConfig) -> Result<Tensor> {
    Ok(asl_elements(logits, targets, cfg)?.mean_all()?)
}

/// [`asymmetric_loss`] per element.
fn asl_elements(logits: &Tensor, targets: &Tensor, cfg: &AslConfig) -> Result<Tensor> {
    check_inputs(logits, targets)?;
    cfg.validate()?;
    let ln_eps = cfg.eps.ln();
    let sp_pos = softplus(logits)?; // -log(1 - p)
    let sp_neg = softplus(&logits.neg()?)?; // -log(p)

    // Positive part: y * (1 - p)^gamma_pos * log(max(p, eps)).
    let log_p = sp_neg.neg()?.maximum(ln_eps)?;
    let mut pos = (targets * log_p)?;
    if cfg.gamma_pos != 0.0 {
        pos = (pos * sp_pos.affine(-cfg.gamma_pos, 0.0)?.exp()?)?;
    }

    // Negative part: (1 - y) * p_m^gamma_neg * log(max(1 - p_m, eps)).
    let (log_one_minus_pm, weight_neg) = if cfg.clip > 0.0 {
        let p = sp_neg.neg()?.exp()?;
        let p_m = p.affine(1.0, -cfg.clip)?.relu()?;
        // 1 - p_m = min(1 - p + clip, 1) with 1 - p = exp(-softplus(x)).
        let one_minus_pm = sp_pos.neg()?.exp()?.affine(1.0, cfg.clip)?.minimum(1.0)?;
        let log_term = one_minus_pm.maximum(cfg.eps)?.log()?;
        let weight = if cfg.gamma_neg != 0.0 {
            Some(
                p_m.maximum(POW_FLOOR)?
                    .log()?
                    .affine(cfg.gamma_neg, 0.0)?
                    .exp()?,
            )
        } else {
            None
        };
        (log_term, weight)
    } else {
        let log_term = sp_pos.neg()?.maximum(ln_eps)?;
        let weight = if cfg.gamma_neg != 0.0 {
            Some(sp_neg.affine(-cfg.gamma_neg, 0.0)?.exp()?)
        } else {
            None
        };
        (log_term, weight)
    };
    let mut neg = (targets.affine(-1.0, 1.0)? * log_one_minus_pm)?;
    if let Some(w) = weight_neg {
        neg = (neg * w)?;
    }
    Ok((pos + neg)?.neg()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// f64 reference of one BCE element: -(pw*y*log p + (1-y)*log(1-p)), p = 1/(1+e^-x).
    fn bce_ref(x: f64, y: f64, pw: f64) -> f64 {
        // Stable f64 log-sigmoid: log p = -ln(1 + e^-x) = -(max(-x,0) + ln(1 + e^-|x|)).
        let log_p = -((-x).max(0.0) + (-x.abs()).exp().ln_1p());
        let log_1mp = -(x.max(0.0) + (-x.abs()).exp().ln_1p());
        -(pw * y * log_p + (1.0 - y) * log_1mp)
    }

    /// f64 reference of one ASL element, straight from the paper's formula.
    fn asl_ref(x: f64, y: f64, c: &AslConfig) -> f64 {
        let log_p = -((-x).max(0.0) + (-x.abs()).exp().ln_1p());
        let p = log_p.exp();
        let pm = (p - c.clip).max(0.0);
        let one_minus_pm = if c.clip > 0.0 {
            // 1 - p = sigmoid(-x), computed without cancellation.
            let one_minus_p = (-(x.max(0.0) + (-x.abs()).exp().ln_1p())).exp();
            (one_minus_p + c.clip).min(1.0)
        } else {
            (-(x.max(0.0) + (-x.abs()).exp().ln_1p())).exp()
        };
        let pos = y * (1.0 - p).powf(c.gamma_pos) * log_p.max(c.eps.ln());
        let log_neg = if c.clip > 0.0 {
            one_minus_pm.max(c.eps).ln()
        } else {
            (-(x.max(0.0) + (-x.abs()).exp().ln_1p())).max(c.eps.ln())
        };
        let neg = (1.0 - y) * pm.powf(c.gamma_neg) * log_neg;
        -(pos + neg)
    }

    fn t(v: &[f64], dtype: DType) -> Tensor {
        Tensor::new(v, &Device::Cpu)
            .unwrap()
            .reshape((1, v.len()))
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn scalar(x: &Tensor) -> f64 {
        x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    const XS: [f64; 8] = [-3.0, -0.5, 0.0, 0.25, 1.0, 2.5, -1.5, 4.0];
    const YS: [f64; 8] = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0];

    #[test]
    fn masked_elements_add_no_loss_and_no_gradient_and_a_full_mask_changes_nothing() {
        let dev = Device::Cpu;
        let y = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 1.0], [0.0, 1.0, 0.0]], &dev).unwrap();
        let ones = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
        for cfg in [
            LossConfig::Bce { pos_weight: None },
            LossConfig::Bce {
                pos_weight: Some(5.0),
            },
            LossConfig::Asl(AslConfig::default()),
        ] {
            let x = Var::new(&[[0.5f32, -1.0, 2.0], [3.0, 0.2, -0.7]], &dev).unwrap();
            let plain = scalar(&cfg.compute(x.as_tensor(), &y).unwrap());
            let full = scalar(&cfg.compute_masked(x.as_tensor(), &y, Some(&ones)).unwrap());
            assert!((plain - full).abs() < 1e-7, "{cfg:?}: {plain} vs {full}");
            let masked = cfg.compute_masked(x.as_tensor(), &y, Some(&mask)).unwrap();
            let grads = masked.backward().unwrap();
            let g = grads.get(&x).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!((g[1][0], g[1][2]), (0.0, 0.0), "{cfg:?}: {g:?}");
            assert!(g[0].iter().chain([&g[1][1]]).all(|v| *v != 0.0), "{g:?}");
            // A masked logit can be anything: the loss does not move.
            let moved = Tensor::new(&[[0.5f32, -1.0, 2.0], [-9.0, 0.2, 9.0]], &dev).unwrap();
            let a = scalar(&masked);
            let b = scalar(&cfg.compute_masked(&moved, &y, Some(&mask)).unwrap());
            assert!((a - b).abs() < 1e-7, "{cfg:?}: {a} vs {b}");
            // Still divided by all 6 elements: the 4 kept ones' mean times 4/6.
            assert!(a < plain, "{cfg:?}");
        }
        let bad = Tensor::ones((3, 2), DType::F32, &dev).unwrap();
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        assert!(LossConfig::default()
            .compute_masked(&x, &y, Some(&bad))
            .is_err());
    }

    #[test]
    fn bce_hand_values() {
        // x = 0, y = 1: -log(0.5) = ln 2. x = 2, y = 0: -log(1 - sigmoid(2)) = ln(1 + e^2).
        let l = bce_with_logits(&t(&[0.0], DType::F64), &t(&[1.0], DType::F64), None).unwrap();
        assert!((scalar(&l) - 2f64.ln()).abs() < 1e-12);
        let l = bce_with_logits(&t(&[2.0], DType::F64), &t(&[0.0], DType::F64), None).unwrap();
        assert!((scalar(&l) - (1.0 + 2f64.exp()).ln()).abs() < 1e-12);
        // pos_weight 3 triples the positive term: x = 0, y = 1 -> 3 ln 2.
        let l = bce_with_logits(&t(&[0.0], DType::F64), &t(&[1.0], DType::F64), Some(3.0)).unwrap();
        assert!((scalar(&l) - 3.0 * 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn bce_matches_reference_and_naive_form() {
        for pw in [None, Some(1.0), Some(2.5)] {
            let l = bce_with_logits(&t(&XS, DType::F32), &t(&YS, DType::F32), pw).unwrap();
            let want: f64 = XS
                .iter()
                .zip(YS)
                .map(|(&x, y)| bce_ref(x, y, pw.unwrap_or(1.0)))
                .sum::<f64>()
                / XS.len() as f64;
            assert!((scalar(&l) - want).abs() < 1e-6, "{pw:?}");
            // Naive sigmoid + log, fine on moderate logits.
            let naive: f64 = XS
                .iter()
                .zip(YS)
                .map(|(&x, y)| {
                    let p = 1.0 / (1.0 + (-x).exp());
                    -(pw.unwrap_or(1.0) * y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                })
                .sum::<f64>()
                / XS.len() as f64;
            assert!((scalar(&l) - naive).abs() < 1e-6, "{pw:?}");
        }
    }

    #[test]
    fn asl_matches_reference() {
        let cfgs = [
            AslConfig::default(),
            AslConfig {
                gamma_pos: 1.0,
                gamma_neg: 2.0,
                clip: 0.0,
                eps: 1e-8,
            },
            AslConfig {
                gamma_pos: 0.0,
                gamma_neg: 0.0,
                clip: 0.0,
                eps: 1e-8,
            },
        ];
        for c in cfgs {
            let l = asymmetric_loss(&t(&XS, DType::F64), &t(&YS, DType::F64), &c).unwrap();
            let want: f64 = XS
                .iter()
                .zip(YS)
                .map(|(&x, y)| asl_ref(x, y, &c))
                .sum::<f64>()
                / XS.len() as f64;
            assert!(
                (scalar(&l) - want).abs() < 1e-12,
                "{c:?}: {} vs {want}",
                scalar(&l)
            );
        }
        // With all gammas 0 and no clip, ASL is BCE.
        let c = AslConfig {
            gamma_neg: 0.0,
            gamma_pos: 0.0,
            clip: 0.0,
            eps: 1e-8,
        };
        let asl = asymmetric_loss(&t(&XS, DType::F64), &t(&YS, DType::F64), &c).unwrap();
        let bce = bce_with_logits(&t(&XS, DType::F64), &t(&YS, DType::F64), None).unwrap();
        assert!((scalar(&asl) - scalar(&bce)).abs() < 1e-12);
    }

    #[test]
    fn asl_hand_value() {
        // One negative, x = 0: p = 0.5, p_m = 0.45, loss = -0.45^4 * ln(0.55).
        let l = asymmetric_loss(
            &t(&[0.0], DType::F64),
            &t(&[0.0], DType::F64),
            &AslConfig::default(),
        )
        .unwrap();
        let want = -(0.45f64.powi(4)) * 0.55f64.ln();
        assert!((scalar(&l) - want).abs() < 1e-12);
        // A negative with p <= clip costs nothing: x = -3, p = 0.0474 < 0.05.
        let l = asymmetric_loss(
            &t(&[-3.0], DType::F64),
            &t(&[0.0], DType::F64),
            &AslConfig::default(),
        )
        .unwrap();
        assert_eq!(scalar(&l), 0.0);
        // One positive, x = 0, gamma_pos 0: -ln(0.5).
        let l = asymmetric_loss(
            &t(&[0.0], DType::F64),
            &t(&[1.0], DType::F64),
            &AslConfig::default(),
        )
        .unwrap();
        assert!((scalar(&l) - 2f64.ln()).abs() < 1e-12);
    }

    fn grads_finite(loss: impl Fn(&Tensor) -> Tensor, xs: &[f64], dtype: DType) {
        let var = Var::from_tensor(&t(xs, dtype)).unwrap();
        let l = loss(var.as_tensor());
        assert!(scalar(&l).is_finite(), "loss {}", scalar(&l));
        let g = l.backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap();
        let g: Vec<f64> = g
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let xs = [100.0, -100.0, 1e4, -1e4, 100.0, -100.0, 1e4, -1e4];
        let ys = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        for dtype in [DType::F32, DType::F64] {
            let y = t(&ys, dtype);
            grads_finite(|x| bce_with_logits(x, &y, None).unwrap(), &xs, dtype);
            grads_finite(|x| bce_with_logits(x, &y, Some(4.0)).unwrap(), &xs, dtype);
            grads_finite(
                |x| asymmetric_loss(x, &y, &AslConfig::default()).unwrap(),
                &xs,
                dtype,
            );
            let c = AslConfig {
                gamma_pos: 1.0,
                clip: 0.0,
                ..AslConfig::default()
            };
            grads_finite(|x| asymmetric_loss(x, &y, &c).unwrap(), &xs, dtype);
        }
        // BCE at x = +-1e4 is exactly the wrong-side logit: mean of (0, 1e4, 0, 1e4) etc.
        let l = bce_with_logits(
            &t(&[1e4, -1e4], DType::F32),
            &t(&[0.0, 1.0], DType::F32),
            None,
        )
        .unwrap();
        assert!((scalar(&l) - 1e4).abs() < 1e-2);
    }

    /// Central finite differences in f64 against the backward pass.
    fn check_gradient(loss: impl Fn(&Tensor) -> Tensor, xs: &[f64]) {
        let var = Var::from_tensor(&t(xs, DType::F64)).unwrap();
        let l = loss(var.as_tensor());
        let grads = l.backward().unwrap();
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let h = 1e-6;
        for i in 0..xs.len() {
            let mut plus = xs.to_vec();
            plus[i] += h;
            let mut minus = xs.to_vec();
            minus[i] -= h;
            let fd = (scalar(&loss(&t(&plus, DType::F64))) - scalar(&loss(&t(&minus, DType::F64))))
                / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-7,
                "element {i}: analytic {} vs fd {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // No logit sits on a kink (p - clip = 0 at x = ln(0.05/0.95) = -2.944).
        let y = t(&YS, DType::F64);
        check_gradient(|x| bce_with_logits(x, &y, None).unwrap(), &XS);
        check_gradient(|x| bce_with_logits(x, &y, Some(2.0)).unwrap(), &XS);
        check_gradient(
            |x| asymmetric_loss(x, &y, &AslConfig::default()).unwrap(),
            &XS,
        );
        let c = AslConfig {
            gamma_pos: 1.0,
            gamma_neg: 2.0,
            clip: 0.0,
            eps: 1e-8,
        };
        check_gradient(|x| asymmetric_loss(x, &y, &c).unwrap(), &XS);
    }

    #[test]
    fn bad_input_is_an_error() {
        let a = t(&[0.0, 1.0], DType::F32);
        let b = t(&[0.0], DType::F32);
        assert!(bce_with_logits(&a, &b, None).is_err());
        assert!(bce_with_logits(&a, &a, Some(-1.0)).is_err());
        let bad = AslConfig {
            clip: 1.5,
            ..AslConfig::default()
        };
        assert!(asymmetric_loss(&a, &a, &bad).is_err());
    }

    #[test]
    fn config_serde() {
        let c: LossConfig = serde_json::from_str(r#"{"kind":"bce","pos_weight":2.0}"#).unwrap();
        assert_eq!(
            c,
            LossConfig::Bce {
                pos_weight: Some(2.0)
            }
        );
        let c: LossConfig = serde_json::from_str(r#"{"kind":"asl","gamma_neg":2.0}"#).unwrap();
        assert_eq!(
            c,
            LossConfig::Asl(AslConfig {
                gamma_neg: 2.0,
                ..AslConfig::default()
            })
        );
        assert!(serde_json::from_str::<LossConfig>(r#"{"kind":"asl","gama":2.0}"#).is_err());
        assert_eq!(LossConfig::default(), LossConfig::Asl(AslConfig::default()));
    }
}
