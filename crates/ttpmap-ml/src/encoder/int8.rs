//! int8 linear layers for inference on CPUs with AVX512_VNNI and no AMX (`vpdpbusd`: 64
//! byte products summed four at a time into 16 i32 lanes per instruction).
//!
//! Why: on the CPUs we measured, `vpdpbusd` issues as often as an f32 FMA (two per cycle on
//! a 2-vCPU Xeon: 5.85 G instructions/s against 6.35 G for `vfmadd` and 1.66 G for
//! `vdpbf16ps`, one thread, `docs/results.md`, "Speed"), so it does four times the products
//! of f32, where the AVX512_BF16 kernel does none more ([`super::bf16`]).
//!
//! Quantisation: the weights per output (row `j` of `W`, symmetric, `s_j = max|W_j| / 127`,
//! rounded to nearest), done once; the activations per input row (token), symmetric, at every
//! call (`s_r = max|x_r| / 127`), stored as `q + 128` in unsigned bytes because `vpdpbusd`
//! multiplies unsigned by signed bytes. The shift is taken out exactly with the weights' sums:
//! `y_rj = s_r s_j (sum_t (q_rt + 128) w_jt - 128 sum_t w_jt) + b_j`. Sums are exact in i32
//! (|sum| <= 1536 * 255 * 127 < 2^31 for k up to 66,000), so the only error is the two
//! roundings to 8 bits (relative 1/254 of each row's largest value).

use crate::{Error, Result};

use super::bf16::Epilogue;

/// Columns per packed weight panel (two zmm registers of i32 accumulators).
const PANEL: usize = 32;
/// Rows of the output computed together (6 x 2 accumulators + 2 weight registers).
const ROWS: usize = 6;
/// The shift that makes a signed activation byte unsigned.
const SHIFT: i32 = 128;

/// Whether this CPU can run [`Int8Linear`] (AVX-512 with VNNI).
pub fn int8_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y = x W^T + b` with `W` `[n, k]` stored as int8 panels, one scale per output.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    /// Panel `p` holds outputs `32p..32p+32`: for each group `g` of four inputs, 32 words,
    /// word `c` the four signed bytes `W_q[32p+c, 4g..4g+4]` (input `4g` in the low byte);
    /// zero-padded in n and k.
    packed: Vec<u32>,
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4.
    k4: usize,
    /// The weights' scale per output (padded to whole panels with zeros).
    scale: Vec<f32>,
    /// `SHIFT * sum_t W_q[j, t]` per output (padded likewise).
    shift_sum: Vec<i32>,
    /// Bias per output (padded likewise).
    bias: Vec<f32>,
}

/// `v / scale` rounded to nearest even and clamped to the signed byte range.
fn quantise(v: f32, inv: f32) -> i32 {
    ((v * inv).round_ties_even() as i32).clamp(-127, 127)
}

impl Int8Linear {
    /// Quantises and packs `w`, `n` rows of `k` (f32), and `bias` (`n` values).
    pub fn from_rows(w: &[f32], n: usize, k: usize, bias: Vec<f32>) -> Result<Self> {
        if bias.len() != n || w.len() != n * k || k == 0 {
            return Err(Error::InvalidArgument(format!(
                "int8 linear: {} weights and {} biases for {n} x {k}",
                w.len(),
                bias.len()
            )));
        }
        if w.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "int8 linear: weights or biases that are not finite".into(),
            ));
        }
        let k4 = k.div_ceil(4) * 4;
        let groups = k4 / 4;
        let panels = n.div_ceil(PANEL);
        let np = panels * PANEL;
        let mut scale = vec![0f32; np];
        let mut shift_sum = vec![0i32; np];
        let mut padded_bias = vec![0f32; np];
        padded_bias[..n].copy_from_slice(&bias);
        let mut q = vec![0i8; n * k4];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[j] = s;
            let inv = 1.0 / s;
            let mut sum = 0i32;
            for (t, &v) in row.iter().enumerate() {
                let b = quantise(v, inv);
                q[j * k4 + t] = b as i8;
                sum += b;
            }
            shift_sum[j] = SHIFT * sum;
        }
        let mut packed = vec![0u32; panels * groups * PANEL];
        for p in 0..panels {
            for g in 0..groups {
                for c in 0..PANEL.min(n - p * PANEL) {
                    let j = p * PANEL + c;
                    let b = &q[j * k4 + 4 * g..j * k4 + 4 * g + 4];
                    packed[(p * groups + g) * PANEL + c] =
                        u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
                }
            }
        }
        Ok(Self {
            packed,
            n,
            k,
            k4,
            scale,
            shift_sum,
            bias: padded_bias,
        })
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `xs` (rows of `k` f32, one after another) times the weights plus the bias, rows of
    /// `n`, with `epilogue` on each worker's block of rows while it is in cache. Errors on a
    /// CPU without AVX512_VNNI ([`int8_supported`]) or on a length that is not whole rows.
    pub fn forward_rows(&self, xs: &[f32], epilogue: Option<&Epilogue<'_>>) -> Result<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if !xs.len().is_multiple_of(k) {
            return Err(Error::InvalidArgument(format!(
                "int8 linear expects rows of {k} input features, got {} values",
                xs.len()
            )));
        }
        if !int8_supported() {
            return Err(Error::InvalidArgument(
                "int8 linear layers need AVX512_VNNI (use the f32 path)".into(),
            ));
        }
        let m = xs.len() / k;
        if m == 0 {
            return Ok(Vec::new());
        }
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        let threads = candle_core::utils::get_num_threads().clamp(1, m.div_ceil(ROWS));
        let rows_per = m.div_ceil(threads).div_ceil(ROWS) * ROWS;
        rayon::scope(|s| {
            for (c, (chunk, x)) in out.spare_capacity_mut()[..m * n]
                .chunks_mut(rows_per * n)
                .zip(xs.chunks(rows_per * k))
                .enumerate()
            {
                s.spawn(move |_| {
                    let rows = x.len() / k;
                    let (a, scales) = self.quantise_rows(x);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: int8_supported() checked above; `a` holds `rows` rows of k4
                    // bytes, `scales` `rows` values and `chunk` `rows * n` values, every one
                    // of which the kernel writes.
                    unsafe {
                        kernel::gemm(self, &a, &scales, rows, chunk.as_mut_ptr().cast::<f32>())
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("int8_supported() is false off x86-64");
                    if let Some(epilogue) = epilogue {
                        // SAFETY: the kernel wrote every value of the chunk.
                        let chunk = unsafe {
                            &mut *(chunk as *mut [std::mem::MaybeUninit<f32>] as *mut [f32])
                        };
                        epilogue(c * rows_per, chunk);
                    }
                });
            }
        });
        // SAFETY: the chunks cover `m * n` values and the kernel wrote every one.
        unsafe { out.set_len(m * n) };
        Ok(out)
    }

    /// The rows of `x` (f32, rows of `k`) quantised: `q + 128` as bytes, rows of `k4`
    /// (padding `128`, a zero), and each row's scale.
    fn quantise_rows(&self, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (k, k4) = (self.k, self.k4);
        let rows = x.len() / k;
        let mut a = vec![SHIFT as u8; rows * k4];
        let mut scales = vec![0f32; rows];
        for ((row, dst), s) in x
            .chunks_exact(k)
            .zip(a.chunks_exact_mut(k4))
            .zip(scales.iter_mut())
        {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forward_rows checked AVX-512 (F, BW); slices of k and k4 >= k.
            unsafe {
                *s = kernel::quantise_row(row, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            {
                *s = quantise_row_scalar(row, dst);
            }
        }
        (a, scales)
    }
}

/// The scalar definition of the activation rounding ([`kernel::quantise_row`] gives the same
/// bytes): `row` into `dst` as `q + 128`, returning the scale.
#[allow(dead_code)]
fn quantise_row_scalar(row: &[f32], dst: &mut [u8]) -> f32 {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    for (d, &v) in dst.iter_mut().zip(row) {
        *d = (quantise(v, inv) + SHIFT) as u8;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{Int8Linear, PANEL, ROWS, SHIFT};
    use std::arch::x86_64::*;

    /// [`super::quantise_row_scalar`] on AVX-512: the same bytes (round to nearest even,
    /// clamped to -127..=127, shifted by 128).
    ///
    /// # Safety
    /// AVX-512 F and BW; `dst.len() >= row.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantise_row(row: &[f32], dst: &mut [u8]) -> f32 {
        debug_assert!(dst.len() >= row.len());
        let whole = row.len() / 16 * 16;
        let mut m = _mm512_setzero_ps();
        for i in (0..whole).step_by(16) {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(row.as_ptr().add(i))));
        }
        let mut max = _mm512_reduce_max_ps(m);
        for &v in &row[whole..] {
            max = max.max(v.abs());
        }
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        let inv = 1.0 / s;
        let vinv = _mm512_set1_ps(inv);
        let (lo, hi, shift) = (
            _mm512_set1_epi32(-127),
            _mm512_set1_epi32(127),
            _mm512_set1_epi32(SHIFT),
        );
        for i in (0..whole).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(i)), vinv);
            // The default rounding (MXCSR): to nearest even.
            let q = _mm512_cvtps_epi32(v);
            let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), shift);
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(q),
            );
        }
        for (d, &v) in dst[whole..].iter_mut().zip(&row[whole..]) {
            *d = (super::quantise(v, inv) + SHIFT) as u8;
        }
        s
    }

    /// `out` (`rows` x n) = the product of `a` (`rows` rows of k4 shifted bytes, scales
    /// `scales`) and the packed weights, dequantised, plus the bias.
    ///
    /// Every value of `out` is written.
    ///
    /// # Safety
    /// AVX-512 F, BW and VNNI; `a.len() >= rows * k4`, `scales.len() >= rows`, `out` points
    /// to `rows * n` writable values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm(
        l: &Int8Linear,
        a: &[u8],
        scales: &[f32],
        rows: usize,
        out: *mut f32,
    ) {
        debug_assert!(a.len() >= rows * l.k4 && scales.len() >= rows);
        let groups = l.k4 / 4;
        crate::encoder::bf16::row_tiles(rows, l.n.div_ceil(PANEL), ROWS, |p, r, take| {
            let t = Tile {
                l,
                a,
                scales,
                r0: r,
                groups,
                panel: l.packed.as_ptr().add(p * groups * PANEL),
                p,
            };
            match take {
                6 => t.run::<6>(out),
                5 => t.run::<5>(out),
                4 => t.run::<4>(out),
                3 => t.run::<3>(out),
                2 => t.run::<2>(out),
                _ => t.run::<1>(out),
            }
        });
    }

    /// Up to [`ROWS`] rows of the output against one panel of 32 outputs.
    struct Tile<'a> {
        l: &'a Int8Linear,
        a: &'a [u8],
        scales: &'a [f32],
        r0: usize,
        groups: usize,
        panel: *const u32,
        p: usize,
    }

    impl Tile<'_> {
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[inline]
        unsafe fn run<const R: usize>(&self, out: *mut f32) {
            let Tile {
                l,
                a,
                scales,
                r0,
                groups,
                panel,
                p,
            } = *self;
            let mut acc0 = [_mm512_setzero_si512(); R];
            let mut acc1 = [_mm512_setzero_si512(); R];
            let arow = |i: usize| a.as_ptr().add((r0 + i) * l.k4) as *const u32;
            for g in 0..groups {
                let w0 = _mm512_loadu_si512(panel.add(g * PANEL) as *const _);
                let w1 = _mm512_loadu_si512(panel.add(g * PANEL + 16) as *const _);
                for i in 0..R {
                    let x = _mm512_set1_epi32(arow(i).add(g).read_unaligned() as i32);
                    acc0[i] = _mm512_dpbusd_epi32(acc0[i], x, w0);
                    acc1[i] = _mm512_dpbusd_epi32(acc1[i], x, w1);
                }
            }
            let j0 = p * PANEL;
            let whole = j0 + PANEL <= l.n;
            let mut lane = [0f32; PANEL];
            for i in 0..R {
                let sx = _mm512_set1_ps(scales[r0 + i]);
                let row = out.add((r0 + i) * l.n);
                for (half, acc) in [acc0[i], acc1[i]].into_iter().enumerate() {
                    let j = j0 + 16 * half;
                    let sum = _mm512_sub_epi32(
                        acc,
                        _mm512_loadu_si512(l.shift_sum.as_ptr().add(j) as *const _),
                    );
                    let s = _mm512_mul_ps(sx, _mm512_loadu_ps(l.scale.as_ptr().add(j)));
                    let y = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(sum),
                        s,
                        _mm512_loadu_ps(l.bias.as_ptr().add(j)),
                    );
                    if whole {
                        _mm512_storeu_ps(row.add(j), y);
                    } else {
                        _mm512_storeu_ps(lane.as_mut_ptr().add(16 * half), y);
                    }
                }
                if !whole {
                    let end = l.n - j0;
                    std::ptr::copy_nonoverlapping(lane.as_ptr(), row.add(j0), end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by its definition: both operands rounded as the layer rounds them, the
    /// sums in i64.
    fn reference(l: &Int8Linear, w: &[f32], x: &[f32]) -> Vec<f32> {
        let (n, k) = (l.n, l.k);
        let mut y = vec![0f32; x.len() / k * n];
        for (r, row) in x.chunks_exact(k).enumerate() {
            let mut q = vec![0u8; k];
            let sx = quantise_row_scalar(row, &mut q);
            for j in 0..n {
                let wr = &w[j * k..(j + 1) * k];
                let max = wr.iter().fold(0f32, |m, v| m.max(v.abs()));
                let sw = if max > 0.0 { max / 127.0 } else { 1.0 };
                let dot: i64 = q
                    .iter()
                    .zip(wr)
                    .map(|(&a, &b)| (i64::from(a) - 128) * i64::from(quantise(b, 1.0 / sw)))
                    .sum();
                y[r * n + j] = sx * sw * dot as f32 + l.bias[j];
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        // A deterministic spread of values in (-2, 2), some exact zeros.
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 37 == 0 {
                    0.0
                } else {
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                }
            })
            .collect()
    }

    #[test]
    fn int8_products_match_the_definition_and_stay_close_to_f32() {
        if !int8_supported() {
            eprintln!("SKIPPED: this CPU has no AVX512_VNNI");
            return;
        }
        // Shapes with ragged edges: n not a whole panel, k not a whole group of four, row
        // counts around the tile height and the thread split.
        for (m, k, n) in [(1, 5, 3), (7, 384, 40), (13, 66, 1152), (40, 1536, 384)] {
            let w = values(n * k, 1 + k as u64);
            let bias = values(n, 7);
            let mut x = values(m * k, 3 + m as u64);
            // One all-zero row: scale 1, every byte the shift, output the bias.
            x[..k].fill(0.0);
            let l = Int8Linear::from_rows(&w, n, k, bias.clone()).unwrap();
            let y = l.forward_rows(&x, None).unwrap();
            assert_eq!(y.len(), m * n);
            let want = reference(&l, &w, &x);
            for (a, b) in y.iter().zip(&want) {
                // Same integer sums; only the f32 dequantisation's rounding differs.
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
            }
            assert_eq!(&y[..n], &bias[..], "a zero row gives the bias");
            // Against f32: the roundings to 8 bits cost at most a few hundredths of the
            // products' scale here (sum of k terms of size <= 4).
            for r in 0..m {
                for j in 0..n {
                    let exact: f32 =
                        (0..k).map(|t| x[r * k + t] * w[j * k + t]).sum::<f32>() + bias[j];
                    let tol = 0.02 * (k as f32).sqrt() * 4.0 / 2.0;
                    assert!(
                        (y[r * n + j] - exact).abs() <= tol,
                        "{} vs {exact}",
                        y[r * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn vector_rounding_gives_the_scalar_bytes() {
        if !int8_supported() {
            eprintln!("SKIPPED: this CPU has no AVX512_VNNI");
            return;
        }
        let mut row = values(100, 5);
        // Ties at the scale's half steps round to even in both.
        row[3] = 2.0;
        row[4] = 2.0 * 0.5 / 127.0 * 3.0;
        let mut a = vec![0u8; 100];
        let mut b = vec![0u8; 100];
        let sa = quantise_row_scalar(&row, &mut a);
        // SAFETY: int8_supported() checked (AVX-512 F and BW).
        let sb = unsafe { kernel::quantise_row(&row, &mut b) };
        assert_eq!(sa, sb);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Int8Linear::from_rows(&[1.0; 6], 2, 4, vec![0.0; 2]).is_err());
        assert!(Int8Linear::from_rows(&[f32::NAN; 4], 1, 4, vec![0.0]).is_err());
        let l = Int8Linear::from_rows(&[1.0; 8], 2, 4, vec![0.0; 2]).unwrap();
        assert!(l.forward_rows(&[1.0; 5], None).is_err());
    }
}
