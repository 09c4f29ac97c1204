//! Learning-rate schedules as multiplicative factors of each group's peak rate.
//!
//! [`WarmupLinear`] is Hugging Face's `get_linear_schedule_with_warmup`
//! (transformers/optimization.py): `factor(step) = step / max(1, warmup)` while
//! `step < warmup`, then `max(0, (total - step) / max(1, total - warmup))`. `step` is the number
//! of optimizer steps already taken, so the first update uses `factor(0)` (0 with warmup, as in
//! Hugging Face, where `scheduler.step()` follows `optimizer.step()`).

/// Linear warmup from 0 to 1 over `warmup_steps`, then linear decay to 0 at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupLinear {
    /// Steps of linear warmup.
    pub warmup_steps: usize,
    /// Step at which the factor reaches 0.
    pub total_steps: usize,
}

impl WarmupLinear {
    /// `warmup_steps = ceil(total_steps * warmup_fraction)` (as Hugging Face's `warmup_ratio`);
    /// the fraction is clamped to [0, 1] (NaN counts as 0).
    pub fn new(total_steps: usize, warmup_fraction: f64) -> Self {
        let fraction = if warmup_fraction.is_nan() {
            0.0
        } else {
            warmup_fraction.clamp(0.0, 1.0)
        };
        let warmup_steps = ((total_steps as f64) * fraction).ceil() as usize;
        Self {
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
        }
    }

    /// The factor of the peak learning rate after `step` optimizer steps.
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let remaining = self.total_steps.saturating_sub(step) as f64;
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        (remaining / span).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hugging Face's lr_lambda, transcribed (transformers/optimization.py,
    /// `_get_linear_schedule_with_warmup_lr_lambda`).
    fn hf(current_step: usize, num_warmup_steps: usize, num_training_steps: usize) -> f64 {
        if current_step < num_warmup_steps {
            return current_step as f64 / 1usize.max(num_warmup_steps) as f64;
        }
        0f64.max(
            (num_training_steps as f64 - current_step as f64)
                / 1usize.max(num_training_steps - num_warmup_steps) as f64,
        )
    }

    #[test]
    fn equals_hugging_face() {
        for (total, frac) in [(100, 0.1), (10, 0.0), (7, 0.3), (1, 1.0), (50, 0.06)] {
            let s = WarmupLinear::new(total, frac);
            assert_eq!(s.warmup_steps, (total as f64 * frac).ceil() as usize);
            for step in 0..=total + 3 {
                assert_eq!(
                    s.factor(step),
                    hf(step, s.warmup_steps, total),
                    "{total} {frac} {step}"
                );
            }
        }
    }

    #[test]
    fn hand_values() {
        // 100 steps, 10 warmup: 0, 0.5 at 5, 1 at 10, (100-55)/90 = 0.5 at 55, 0 at 100.
        let s = WarmupLinear::new(100, 0.1);
        assert_eq!(s.warmup_steps, 10);
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(5), 0.5);
        assert_eq!(s.factor(10), 1.0);
        assert_eq!(s.factor(55), 0.5);
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(150), 0.0);
        // No warmup: starts at 1.
        assert_eq!(WarmupLinear::new(4, 0.0).factor(0), 1.0);
        assert_eq!(WarmupLinear::new(4, 0.0).factor(1), 0.75);
    }
}
