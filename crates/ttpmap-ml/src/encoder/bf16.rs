//! bf16 linear layers for inference on CPUs with AVX512_BF16 (`vdpbf16ps`: 32 bf16 products
//! summed pairwise into 16 f32 lanes per instruction: twice the products of an f32 FMA).
//!
//! candle 0.11 has no bf16 GEMM on the CPU (it widens to f32), its int8 `QMatMul` is slower
//! than f32 at our shapes, and the distribution's OpenBLAS has no `sbgemm`, so the kernel is
//! ours: weights are rounded to bf16 once and packed in 32-column panels of k-pairs; each call
//! rounds the activations to bf16 (`vcvtne2ps2bf16`) and accumulates in f32, so the only error
//! is the two roundings (8-bit mantissas).
//!
//! Measured (docs/results.md, "Speed"): on our 2-vCPU Xeon with AVX512_BF16 this path is
//! *slower* than candle's f32 GEMM (75-85 vs 118 sentences/s): there `vdpbf16ps` issues at
//! the rate of the two f32 FMA ports together, so bf16 doubles nothing, and gemm's f32 kernel is
//! the better tuned one. f32 therefore stays the default ([`Precision::detect`]); bf16 is
//! opt-in (`TTPMAP_PRECISION=bf16`) for CPUs where it pays, with its own parity tolerance.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Arithmetic of the encoder's linear layers at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// candle's f32 GEMM (the reference).
    Fp32,
    /// bf16 inputs and weights, f32 accumulation ([`Bf16Linear`]); needs AVX512_BF16.
    Bf16,
}

impl Precision {
    /// The inference precision: bf16 when `TTPMAP_PRECISION=bf16` and this CPU has
    /// AVX512_BF16, else f32 (the default: the faster one on the CPUs we measured).
    pub fn detect() -> Precision {
        static P: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
        *P.get_or_init(|| {
            let asked_bf16 =
                std::env::var("TTPMAP_PRECISION").is_ok_and(|v| v.eq_ignore_ascii_case("bf16"));
            if asked_bf16 && bf16_supported() {
                Precision::Bf16
            } else {
                Precision::Fp32
            }
        })
    }
}

/// Whether this CPU can run [`Bf16Linear`].
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns per packed weight panel (two zmm registers of f32 accumulators).
const PANEL: usize = 32;
/// Rows of the output computed together (6 x 2 accumulators + 2 weight registers).
const ROWS: usize = 6;

/// `y = x W^T + b` with `W` `[n, k]` stored as bf16 panels.
#[derive(Debug, Clone)]
pub struct Bf16Linear {
    /// Panel `p` holds columns `32p..32p+32`: for each k-pair `q`, 32 `u32` words, word `c`
    /// = (bf16 `W[32p+c, 2q]` low, bf16 `W[32p+c, 2q+1]` high); zero-padded in n and k.
    packed: Vec<u32>,
    n: usize,
    k: usize,
    /// `k` rounded up to even.
    k2: usize,
    bias: Vec<f32>,
}

/// f32 -> bf16 bits, round to nearest even (NaN stays NaN).
fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

impl Bf16Linear {
    /// Packs `weight` `[n, k]` (f32) and `bias` `[n]`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; n],
        };
        if bias.len() != n {
            return Err(Error::InvalidArgument(format!(
                "bias has {} values for {n} outputs",
                bias.len()
            )));
        }
        let k2 = k.div_ceil(2) * 2;
        let panels = n.div_ceil(PANEL);
        let pairs = k2 / 2;
        let mut packed = vec![0u32; panels * pairs * PANEL];
        for p in 0..panels {
            for q in 0..pairs {
                for c in 0..PANEL {
                    let j = p * PANEL + c;
                    if j >= n {
                        continue;
                    }
                    let lo = to_bf16(w[j][2 * q]);
                    let hi = if 2 * q + 1 < k {
                        to_bf16(w[j][2 * q + 1])
                    } else {
                        0
                    };
                    packed[(p * pairs + q) * PANEL + c] = u32::from(lo) | (u32::from(hi) << 16);
                }
            }
        }
        Ok(Self {
            packed,
            n,
            k,
            k2,
            bias,
        })
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// `x` `[.., k]` (f32) -> `[.., n]`. Errors on a CPU without AVX512_BF16.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.k {
            return Err(Error::InvalidArgument(format!(
                "bf16 linear expects {} input features, got {k}",
                self.k
            )));
        }
        if !bf16_supported() {
            return Err(Error::InvalidArgument(
                "bf16 linear layers need AVX512_BF16 (use the f32 path)".into(),
            ));
        }
        let m = x.elem_count() / k.max(1);
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let a = self.round_rows(&xs, m);
        let mut out = vec![0f32; m * self.n];
        let threads = candle_core::utils::get_num_threads().clamp(1, m.div_ceil(ROWS).max(1));
        let rows_per = m.div_ceil(threads).div_ceil(ROWS) * ROWS;
        std::thread::scope(|s| {
            let mut rest: &mut [f32] = &mut out;
            let mut start = 0;
            while start < m {
                let rows = rows_per.min(m - start);
                let (chunk, tail) = rest.split_at_mut(rows * self.n);
                rest = tail;
                let a = &a[start * self.k2 / 2..(start + rows) * self.k2 / 2];
                s.spawn(move || self.rows_into(a, rows, chunk));
                start += rows;
            }
        });
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.n;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }

    /// Rows of `x` (`m` x `k` f32) as bf16 pairs, each row padded to `k2`.
    fn round_rows(&self, x: &[f32], m: usize) -> Vec<u32> {
        let pairs = self.k2 / 2;
        let mut a = vec![0u32; m * pairs];
        for r in 0..m {
            let row = &x[r * self.k..(r + 1) * self.k];
            let dst = &mut a[r * pairs..(r + 1) * pairs];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forward checked AVX512_BF16 + AVX512F; slices are bounds-checked.
            unsafe {
                kernel::round_row(row, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (q, d) in dst.iter_mut().enumerate() {
                let lo = row.get(2 * q).map_or(0, |v| to_bf16(*v));
                let hi = row.get(2 * q + 1).map_or(0, |v| to_bf16(*v));
                *d = u32::from(lo) | (u32::from(hi) << 16);
            }
        }
        a
    }

    /// `rows` rows of bf16 pairs `a` into `out` (`rows` x `n`), bias added.
    fn rows_into(&self, a: &[u32], rows: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forward checked AVX512_BF16 + AVX512F; the kernel indexes within the packed
        // panels (zero-padded to whole panels and k-pairs) and the given slices.
        unsafe {
            kernel::gemm(self, a, rows, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, rows, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{to_bf16, Bf16Linear, PANEL, ROWS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_row(row: &[f32], dst: &mut [u32]) {
        let full = row.len() / 32;
        for b in 0..full {
            let lo = _mm512_loadu_ps(row.as_ptr().add(32 * b));
            let hi = _mm512_loadu_ps(row.as_ptr().add(32 * b + 16));
            // Lower half of the result from the second operand: elements in order.
            let v = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dst.as_mut_ptr().add(16 * b) as *mut __m512i,
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
        for (q, d) in dst.iter_mut().enumerate().skip(16 * full) {
            let lo = row.get(2 * q).map_or(0, |v| to_bf16(*v));
            let hi = row.get(2 * q + 1).map_or(0, |v| to_bf16(*v));
            *d = u32::from(lo) | (u32::from(hi) << 16);
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm(l: &Bf16Linear, a: &[u32], rows: usize, out: &mut [f32]) {
        let pairs = l.k2 / 2;
        let panels = l.n.div_ceil(PANEL);
        // Blocks of rows small enough for L2; within a block, each weight panel (at most
        // 32 x k bf16) is read once from L2 and reused by every row tile.
        let block = ROWS * 24;
        let mut b0 = 0;
        while b0 < rows {
            let b1 = (b0 + block).min(rows);
            for p in 0..panels {
                let panel = l.packed.as_ptr().add(p * pairs * PANEL);
                let mut r = b0;
                while r < b1 {
                    let take = (b1 - r).min(ROWS);
                    match take {
                        6 => tile::<6>(l, a, r, pairs, panel, p, out),
                        5 => tile::<5>(l, a, r, pairs, panel, p, out),
                        4 => tile::<4>(l, a, r, pairs, panel, p, out),
                        3 => tile::<3>(l, a, r, pairs, panel, p, out),
                        2 => tile::<2>(l, a, r, pairs, panel, p, out),
                        _ => tile::<1>(l, a, r, pairs, panel, p, out),
                    }
                    r += take;
                }
            }
            b0 = b1;
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn tile<const R: usize>(
        l: &Bf16Linear,
        a: &[u32],
        r0: usize,
        pairs: usize,
        panel: *const u32,
        p: usize,
        out: &mut [f32],
    ) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let arow = |i: usize| a.as_ptr().add((r0 + i) * pairs);
        for q in 0..pairs {
            let w0: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(panel.add(q * PANEL) as *const _));
            let w1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(panel.add(q * PANEL + 16) as *const _));
            for i in 0..R {
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(*arow(i).add(q) as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], x, w0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], x, w1);
            }
        }
        let j0 = p * PANEL;
        for i in 0..R {
            let row = &mut out[(r0 + i) * l.n..(r0 + i + 1) * l.n];
            let mut lane = [0f32; PANEL];
            _mm512_storeu_ps(lane.as_mut_ptr(), acc0[i]);
            _mm512_storeu_ps(lane.as_mut_ptr().add(16), acc1[i]);
            for (c, v) in lane.iter().enumerate() {
                let j = j0 + c;
                if j < l.n {
                    row[j] = v + l.bias[j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut s = b[j] as f64;
                for t in 0..k {
                    s += f64::from(x[r * k + t]) * f64::from(w[j * k + t]);
                }
                y[r * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert!(f32::from_bits(u32::from(to_bf16(f32::NAN)) << 16).is_nan());
    }

    #[test]
    fn bf16_linear_matches_f32_within_bf16_rounding() {
        if !bf16_supported() {
            eprintln!("SKIPPED: this CPU has no AVX512_BF16 (the f32 path is used here)");
            return;
        }
        // Odd sizes: partial row tiles, a partial panel and an odd k.
        for (m, n, k) in [(13, 70, 33), (1, 32, 2), (64, 384, 384)] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
                .collect();
            let b: Vec<f32> = (0..n).map(|j| j as f32 / 10.0).collect();
            let dev = Device::Cpu;
            let lin = Bf16Linear::new(
                &Tensor::from_vec(w.clone(), (n, k), &dev).unwrap(),
                Some(&Tensor::from_vec(b.clone(), n, &dev).unwrap()),
            )
            .unwrap();
            let y = lin
                .forward(&Tensor::from_vec(x.clone(), (m, k), &dev).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .concat();
            let want = reference(&x, &w, &b, m, n, k);
            let scale: f32 = want.iter().fold(1.0, |s, v| s.max(v.abs()));
            let worst = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Two bf16 roundings (2^-9 relative each) over k products.
            assert!(worst / scale < 2e-2, "{m}x{n}x{k}: {worst} of {scale}");
        }
    }
}
