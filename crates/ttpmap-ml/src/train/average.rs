//! Weight averaging for evaluation and export: exponential moving average (Polyak averaging) and
//! stochastic weight averaging (SWA, Izmailov et al. 2018, <https://arxiv.org/abs/1803.05407>),
//! plus detached snapshots of variables to swap averaged weights in and out.
//!
//! Averages live in plain `Vec<f32>` buffers: arithmetic on a `Var`'s tensor would record a
//! backprop graph and keep every previous step alive (CANDLE_NOTES point 3). The usual use:
//! `let saved = snapshot(&vars)?; restore(&vars, &ema.tensors()?)?; evaluate; restore(&vars, &saved)?`.

use candle_core::{Tensor, Var};

use super::raw::{tensor_like, with_f32};
use crate::{Error, Result};

/// Detached copies of the variables' current values.
pub fn snapshot(vars: &[Var]) -> Result<Vec<Tensor>> {
    vars.iter()
        .map(|v| Ok(v.as_detached_tensor().copy()?))
        .collect()
}

/// Sets each variable to the matching value (`Var::set`); shapes and dtypes are checked first,
/// so on error no variable has changed.
pub fn restore(vars: &[Var], values: &[Tensor]) -> Result<()> {
    if vars.len() != values.len() {
        return Err(Error::InvalidArgument(format!(
            "restore: {} variables but {} values",
            vars.len(),
            values.len()
        )));
    }
    for (i, (var, value)) in vars.iter().zip(values).enumerate() {
        if var.dims() != value.dims() || var.dtype() != value.dtype() {
            return Err(Error::InvalidArgument(format!(
                "restore: variable {i} is {:?} {:?}, value {:?} {:?}",
                var.dtype(),
                var.dims(),
                value.dtype(),
                value.dims()
            )));
        }
    }
    for (var, value) in vars.iter().zip(values) {
        var.set(value)?;
    }
    Ok(())
}

fn copy_values(vars: &[Var], what: &str) -> Result<Vec<Vec<f32>>> {
    vars.iter()
        .map(|v| with_f32(v.as_tensor(), what, |s| s.to_vec()))
        .collect()
}

fn check_same(vars: &[Var], buffers: &[Vec<f32>], what: &str) -> Result<()> {
    if vars.len() != buffers.len() {
        return Err(Error::InvalidArgument(format!(
            "{what}: created over {} variables, updated with {}",
            buffers.len(),
            vars.len()
        )));
    }
    for (i, (v, b)) in vars.iter().zip(buffers).enumerate() {
        if v.elem_count() != b.len() {
            return Err(Error::InvalidArgument(format!(
                "{what}: variable {i} has {} values, the average {}",
                v.elem_count(),
                b.len()
            )));
        }
    }
    Ok(())
}

/// Exponential moving average: `shadow = beta * shadow + (1 - beta) * param`, starting from a
/// copy of the parameters.
#[derive(Debug, Clone)]
pub struct Ema {
    beta: f64,
    templates: Vec<Tensor>,
    shadow: Vec<Vec<f32>>,
}

impl Ema {
    /// Starts the average at the current values; `beta` in [0, 1] (typically 0.999).
    pub fn new(vars: &[Var], beta: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&beta) {
            return Err(Error::InvalidArgument(format!(
                "EMA beta must be in [0, 1], got {beta}"
            )));
        }
        Ok(Self {
            beta,
            templates: vars.iter().map(|v| v.as_detached_tensor()).collect(),
            shadow: copy_values(vars, "EMA")?,
        })
    }

    /// The decay factor.
    pub fn beta(&self) -> f64 {
        self.beta
    }

    /// Folds the current values of `vars` (same order as in `new`) into the average.
    pub fn update(&mut self, vars: &[Var]) -> Result<()> {
        check_same(vars, &self.shadow, "EMA")?;
        let b = self.beta as f32;
        let a = (1.0 - self.beta) as f32;
        for (v, shadow) in vars.iter().zip(self.shadow.iter_mut()) {
            with_f32(v.as_tensor(), "EMA", |p| {
                for (s, &x) in shadow.iter_mut().zip(p) {
                    *s = b * *s + a * x;
                }
            })?;
        }
        Ok(())
    }

    /// The averages as new tensors (shape and device of each variable).
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        self.templates
            .iter()
            .zip(&self.shadow)
            .map(|(t, s)| tensor_like(t, s.clone()))
            .collect()
    }
}

/// Stochastic weight averaging: the running mean of the values passed to `update`.
#[derive(Debug, Clone)]
pub struct Swa {
    templates: Vec<Tensor>,
    mean: Vec<Vec<f32>>,
    count: usize,
}

impl Swa {
    /// An empty average (count 0) over variables shaped like `vars`.
    pub fn new(vars: &[Var]) -> Result<Self> {
        for (i, v) in vars.iter().enumerate() {
            if v.dtype() != candle_core::DType::F32 {
                return Err(Error::InvalidArgument(format!(
                    "SWA: variable {i} is {:?}; only f32 is averaged",
                    v.dtype()
                )));
            }
        }
        Ok(Self {
            templates: vars.iter().map(|v| v.as_detached_tensor()).collect(),
            mean: vars.iter().map(|v| vec![0.0; v.elem_count()]).collect(),
            count: 0,
        })
    }

    /// Adds the current values: `mean += (param - mean) / count`.
    pub fn update(&mut self, vars: &[Var]) -> Result<()> {
        check_same(vars, &self.mean, "SWA")?;
        let n = (self.count + 1) as f64;
        let inv = (1.0 / n) as f32;
        for (v, mean) in vars.iter().zip(self.mean.iter_mut()) {
            with_f32(v.as_tensor(), "SWA", |p| {
                for (m, &x) in mean.iter_mut().zip(p) {
                    *m += (x - *m) * inv;
                }
            })?;
        }
        self.count += 1;
        Ok(())
    }

    /// Number of snapshots averaged.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The means as new tensors; an error before the first `update`.
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        if self.count == 0 {
            return Err(Error::InvalidArgument(
                "SWA has no snapshots yet (call update first)".to_string(),
            ));
        }
        self.templates
            .iter()
            .zip(&self.mean)
            .map(|(t, m)| tensor_like(t, m.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(v: &[f32]) -> Var {
        Var::from_tensor(&Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()).unwrap()
    }

    fn set(v: &Var, x: &[f32]) {
        v.set(&Tensor::from_slice(x, x.len(), &Device::Cpu).unwrap())
            .unwrap();
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.to_vec1().unwrap()
    }

    #[test]
    fn ema_hand_values() {
        let a = var(&[1.0, 2.0]);
        let mut ema = Ema::new(std::slice::from_ref(&a), 0.9).unwrap();
        set(&a, &[11.0, 2.0]);
        ema.update(std::slice::from_ref(&a)).unwrap();
        // 0.9 * 1 + 0.1 * 11 = 2.0; 0.9 * 2 + 0.1 * 2 = 2.0.
        let t = ema.tensors().unwrap();
        assert!((vals(&t[0])[0] - 2.0).abs() < 1e-6);
        assert!((vals(&t[0])[1] - 2.0).abs() < 1e-6);
        set(&a, &[0.0, 12.0]);
        ema.update(std::slice::from_ref(&a)).unwrap();
        // 0.9 * 2 + 0 = 1.8; 0.9 * 2 + 0.1 * 12 = 3.0.
        let t = ema.tensors().unwrap();
        assert!((vals(&t[0])[0] - 1.8).abs() < 1e-6);
        assert!((vals(&t[0])[1] - 3.0).abs() < 1e-6);
        // The tensors are not tied to the variable's graph.
        assert!(!t[0].is_variable());
        assert!(Ema::new(&[a], 1.5).is_err());
    }

    #[test]
    fn swa_running_mean() {
        let a = var(&[1.0]);
        let b = var(&[0.0, 0.0]);
        let vars = [a.clone(), b.clone()];
        let mut swa = Swa::new(&vars).unwrap();
        assert_eq!(swa.count(), 0);
        assert!(swa.tensors().is_err());
        for (x, y) in [(1.0, [2.0, -2.0]), (2.0, [4.0, 0.0]), (6.0, [0.0, 5.0])] {
            set(&a, &[x]);
            set(&b, &y);
            swa.update(&vars).unwrap();
        }
        // Means: (1 + 2 + 6) / 3 = 3; (2 + 4 + 0) / 3 = 2; (-2 + 0 + 5) / 3 = 1.
        assert_eq!(swa.count(), 3);
        let t = swa.tensors().unwrap();
        assert!((vals(&t[0])[0] - 3.0).abs() < 1e-6);
        assert!((vals(&t[1])[0] - 2.0).abs() < 1e-6);
        assert!((vals(&t[1])[1] - 1.0).abs() < 1e-6);
        assert!(swa.update(&vars[..1]).is_err());
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let a = var(&[1.0, 2.0]);
        let b = var(&[3.0]);
        let vars = [a.clone(), b.clone()];
        let saved = snapshot(&vars).unwrap();
        set(&a, &[9.0, 9.0]);
        set(&b, &[9.0]);
        // The snapshot is a copy, not a view of the variable.
        assert_eq!(vals(&saved[0]), vec![1.0, 2.0]);
        restore(&vars, &saved).unwrap();
        assert_eq!(vals(a.as_tensor()), vec![1.0, 2.0]);
        assert_eq!(vals(b.as_tensor()), vec![3.0]);
        // Swap an average in and back out.
        let mut swa = Swa::new(&vars).unwrap();
        swa.update(&vars).unwrap();
        set(&a, &[5.0, 6.0]);
        let live = snapshot(&vars).unwrap();
        restore(&vars, &swa.tensors().unwrap()).unwrap();
        assert_eq!(vals(a.as_tensor()), vec![1.0, 2.0]);
        restore(&vars, &live).unwrap();
        assert_eq!(vals(a.as_tensor()), vec![5.0, 6.0]);
        // Shape mismatch: error, nothing changed.
        let wrong = vec![saved[1].clone(), saved[0].clone()];
        assert!(restore(&vars, &wrong).is_err());
        assert_eq!(vals(a.as_tensor()), vec![5.0, 6.0]);
        assert!(restore(&vars, &saved[..1]).is_err());
    }
}
