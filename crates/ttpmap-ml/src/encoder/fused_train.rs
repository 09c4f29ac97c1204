//! Training's encoder layers in one piece, forward and backward, over packed tokens.
//!
//! The composed training path ([`super::bert`]'s `Layer::forward` in [`super::Mode::Train`])
//! is some forty candle operations per layer, each a new tensor and a pass over memory, and
//! as many again in the backward pass; with the products on fast kernels those maps (mostly
//! single-threaded) were two thirds of a training step. Here a stack of BERT layers is one
//! candle operation ([`TrainLayers`], a `CustomOp2`) whose forward and backward passes are
//! written out on plain vectors, on the real tokens of the batch only (sequences one after
//! another, as in [`super::fused`]):
//! - forward: the fused query/key/value product, attention per sequence (scores, softmax,
//!   dropout, context), the output product, dropout, residual and layer norm, the
//!   intermediate product and GELU, the output product, dropout, residual and layer norm;
//! - backward: the same in reverse, by hand: layer-norm and GELU derivatives, the softmax
//!   derivative per row, and three products per linear layer (`y = x W^T + b`, `dx = dy W`,
//!   `dW = dy^T x`).
//!
//! Products are bf16 with f32 sums on AMX tiles where the CPU has them
//! ([`super::bf16::train_bf16`]), else f32 (the `gemm` crate candle itself uses, called on our
//! slices; `TTPMAP_TRAIN_PRECISION=fp32` on any CPU).
//! Element-wise loops run on the thread pool and are written so that each lane is independent
//! (no vectorised reductions), so their values do not depend on the SIMD width.
//!
//! Candle sees two arguments (the hidden states and one weight, so that its graph walk knows
//! the op depends on the weights); the gradients of every weight are handed over on the
//! calling thread and added to the gradient store by [`backward`], which replaces
//! `loss.backward()` wherever an encoder is trained.
//!
//! Invariants: inputs are f32 on the CPU, every sequence has at least one token, the
//! activation is exact GELU; padding positions of the output are zeros and get no gradient
//! (every consumer masks them). Dropout masks come from a counter-based generator
//! ([`dropout_mask`]) seeded per call, so a run's masks are reproducible. Without dropout the
//! result equals the composed path up to f32 summation order, which the tests check.

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;

use super::bert::{f32_input, gelu_erf_f32, gelu_grad_f32, softmax_row, with_f32};
use super::bf16::{Bf16Linear, Input, PANEL};
use crate::{Error, Result};

thread_local! {
    /// Weight gradients computed by [`TrainLayers::bwd`] on this thread, waiting for
    /// [`backward`] to add them to the gradient store.
    static PENDING: RefCell<Vec<(Tensor, Tensor)>> = const { RefCell::new(Vec::new()) };
}

/// `loss.backward()` with the weight gradients of fused training layers added: use it
/// wherever an encoder is trained (candle's own backward alone leaves those weights out).
pub fn backward(loss: &Tensor) -> Result<GradStore> {
    PENDING.with(|p| p.borrow_mut().clear());
    let mut grads = loss.backward()?;
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (t, g) in pending {
        let sum = match grads.remove(&t) {
            Some(old) => (old + g)?,
            None => g,
        };
        grads.insert(&t, sum);
    }
    Ok(grads)
}

/// How the products run: f32 (`gemm`) or bf16 with f32 sums (AMX tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Products {
    F32,
    Bf16,
}

impl Products {
    fn bf16_fits(self, n: usize, k: usize) -> bool {
        self == Products::Bf16 && n.is_multiple_of(PANEL) && k.is_multiple_of(PANEL)
    }

    /// `x` `[m, k]` times `w` `[n, k]` transposed, plus `bias` `[n]`: `[m, n]`.
    fn nt(self, x: &[f32], w: &[f32], n: usize, k: usize, bias: &[f32]) -> Result<Vec<f32>> {
        let m = rows(x, k)?;
        check(w, n * k, "weights")?;
        check(bias, n, "bias")?;
        if self.bf16_fits(n, k) {
            return Bf16Linear::from_rows(w, n, k, bias.to_vec())?.forward_rows(x, None);
        }
        let mut out = Vec::with_capacity(m * n);
        for _ in 0..m {
            out.extend_from_slice(bias);
        }
        // SAFETY: `out` is `[m, n]`, `x` `[m, k]`, `w` `[n, k]` read as its transpose
        // (`[k, n]`, row stride 1, column stride k); the lengths are checked above.
        unsafe {
            gemm_f32(
                m,
                n,
                k,
                out.as_mut_ptr(),
                true,
                x,
                1,
                k as isize,
                w,
                k as isize,
                1,
            )
        };
        Ok(out)
    }

    /// `g` `[m, n]` times `w` `[n, k]`: `[m, k]`.
    fn nn(self, g: &[f32], w: &[f32], n: usize, k: usize) -> Result<Vec<f32>> {
        let m = rows(g, n)?;
        check(w, n * k, "weights")?;
        if self.bf16_fits(n, k) {
            return Bf16Linear::from_columns(w, n, k)?.forward_rows(g, None);
        }
        // SAFETY: `out` `[m, k]` (written whole, never read), `g` `[m, n]`, `w` `[n, k]`, all
        // row-major, lengths checked.
        Ok(unsafe { gemm_new(m, k, n, g, 1, n as isize, w, 1, k as isize) })
    }

    /// `g` `[m, n]` transposed times `x` `[m, k]`: `[n, k]`.
    fn tn(self, g: &[f32], n: usize, x: &[f32], k: usize) -> Result<Vec<f32>> {
        let m = rows(g, n)?;
        check(x, m * k, "inputs")?;
        if self.bf16_fits(n, k) {
            let l = Bf16Linear::from_columns(x, m, k)?;
            return l.rows_with(Input::Columns(g, n), l.uses_amx(), None);
        }
        // SAFETY: `out` `[n, k]`; `g` `[m, n]` read as its transpose (`[n, m]`: row stride 1,
        // column stride n); `x` `[m, k]` row-major; lengths checked.
        Ok(unsafe { gemm_new(n, k, m, g, n as isize, 1, x, 1, k as isize) })
    }
}

fn rows(x: &[f32], k: usize) -> Result<usize> {
    if k == 0 || !x.len().is_multiple_of(k) {
        return Err(Error::InvalidArgument(format!(
            "fused training layer: {} values are not rows of {k}",
            x.len()
        )));
    }
    Ok(x.len() / k)
}

fn check(x: &[f32], len: usize, what: &str) -> Result<()> {
    if x.len() != len {
        return Err(Error::InvalidArgument(format!(
            "fused training layer: {what} have {} values, expected {len}",
            x.len()
        )));
    }
    Ok(())
}

/// A new `[m, n]` (row-major) `= lhs [m, k] rhs [k, n]` ([`gemm_f32`] into memory that is
/// never zeroed: the product writes every element before anything reads it).
///
/// # Safety
/// As [`gemm_f32`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_new(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(m * n);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f32>();
    gemm_f32(
        m, n, k, dst, false, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
    );
    // SAFETY: gemm wrote all m * n values (`read_dst` false: it reads none).
    out.set_len(m * n);
    out
}

/// `dst` `[m, n]` (row-major) `= lhs [m, k] rhs [k, n]`, plus `dst` when `read_dst`; strides
/// in elements (`cs` between columns, `rs` between rows).
///
/// # Safety
/// `dst` must hold `m * n` values (initialised when `read_dst`); every element the strides
/// address must lie inside its slice.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    read_dst: bool,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
) {
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        read_dst,
        lhs.as_ptr(),
        lhs_cs,
        lhs_rs,
        rhs.as_ptr(),
        rhs_cs,
        rhs_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    )
}

/// Rows per task of the row-wise passes.
const ROW_CHUNK: usize = 16;

#[inline(always)]
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Inverted-dropout factors for `len` elements: 0 with probability `p` (to 1/65536), else
/// `1 / (1 - p)`. Counter-based (element `i` draws 16 bits of `splitmix(seed + i / 4)`), so
/// the mask depends only on `seed` and not on how the work is split.
pub(crate) fn dropout_mask(seed: u64, len: usize, p: f32) -> Vec<f32> {
    const QUADS: usize = 1024;
    let keep = 1.0 / (1.0 - p);
    let threshold = (p * 65536.0).round() as u64;
    let mut out = vec![0f32; len];
    out.par_chunks_mut(4 * QUADS)
        .enumerate()
        .for_each(|(c, chunk)| {
            wide(Mask {
                out: chunk,
                seed,
                first: c * QUADS,
                threshold,
                keep,
            })
        });
    out
}

/// Sequences of a packed batch: token offsets and the offsets of their attention
/// probabilities (`heads * len * len` each).
struct Seqs {
    lengths: Vec<usize>,
    starts: Vec<usize>,
    prob_starts: Vec<usize>,
    probs: usize,
}

impl Seqs {
    fn new(lengths: &[usize], heads: usize) -> Self {
        let (mut starts, mut prob_starts) = (Vec::new(), Vec::new());
        let (mut t, mut p) = (0, 0);
        for &l in lengths {
            starts.push(t);
            prob_starts.push(p);
            t += l;
            p += heads * l * l;
        }
        Self {
            lengths: lengths.to_vec(),
            starts,
            prob_starts,
            probs: p,
        }
    }

    fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// `data` cut into consecutive pieces of `sizes` values.
fn split_mut(mut data: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for s in sizes {
        let (head, rest) = std::mem::take(&mut data).split_at_mut(s);
        out.push(head);
        data = rest;
    }
    out
}

/// `dst` `[m, n]` (row stride `dst_rs`) `= lhs [m, k] rhs [k, n]` on this thread, for the
/// attention's per-head products; strides in elements, as in [`gemm_f32`].
///
/// # Safety
/// Every element the strides address must lie inside its slice.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn gemm_small(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
) {
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    gemm::gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        dst_rs as isize,
        false,
        lhs.as_ptr(),
        lhs_cs as isize,
        lhs_rs as isize,
        rhs.as_ptr(),
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// The probabilities `p` after dropout (`p * mask` in `buf`), or `p` itself without.
#[inline(always)]
fn dropped_out<'a>(p: &'a [f32], mask: Option<&[f32]>, buf: &'a mut [f32]) -> &'a [f32] {
    match mask {
        Some(m) => {
            for ((d, &p), &f) in buf.iter_mut().zip(p).zip(m) {
                *d = p * f;
            }
            buf
        }
        None => p,
    }
}

/// One sequence's attention, forward: `qkv` its rows (`[len, 3h]`, queries pre-scaled),
/// `probs` its softmax probabilities (`[heads, len, len]`, before dropout), `ctx` its context
/// rows (`[len, h]`), with dropout factors `mask` on the probabilities. Per head: the scores
/// `q k^T`, softmax by row, dropout, the context `p v`.
#[inline(always)]
fn attend_forward(
    qkv: &[f32],
    h: usize,
    heads: usize,
    mask: Option<&[f32]>,
    probs: &mut [f32],
    ctx: &mut [f32],
) {
    let len = ctx.len() / h;
    let hd = h / heads;
    let w = 3 * h;
    let mut scores = vec![0f32; len * len];
    let mut dropped = vec![0f32; if mask.is_some() { len * len } else { 0 }];
    for head in 0..heads {
        let (q0, k0, v0) = (head * hd, h + head * hd, 2 * h + head * hd);
        let block = head * len * len..(head + 1) * len * len;
        // SAFETY: rows of `w` values with the head's `hd` columns at q0/k0 < w - hd + 1;
        // `scores` is `[len, len]`.
        unsafe {
            gemm_small(
                (len, len, hd),
                &mut scores,
                len,
                &qkv[q0..],
                (1, w),
                &qkv[k0..],
                (w, 1),
            )
        };
        let p = &mut probs[block.clone()];
        for (src, dst) in scores.chunks_exact(len).zip(p.chunks_exact_mut(len)) {
            softmax_row(src, dst);
        }
        let p = dropped_out(p, mask.map(|m| &m[block]), &mut dropped);
        // SAFETY: `ctx` rows of `h` with the head's columns at q0; `p` is `[len, len]`; `v`
        // rows of `w` at v0.
        unsafe {
            gemm_small(
                (len, hd, len),
                &mut ctx[q0..],
                h,
                p,
                (1, len),
                &qkv[v0..],
                (1, w),
            )
        };
    }
}

/// One sequence's attention, backward: from the context's gradient `dctx` (`[len, h]`) to
/// the gradient of the query/key/value rows `dqkv` (`[len, 3h]`, with respect to the
/// pre-scaled queries). Per head: `dp' = dctx v^T`, `dv = p'^T dctx`, the softmax
/// derivative by row, `dq = ds k`, `dk = ds^T q` (`p'` the probabilities after dropout).
#[inline(always)]
fn attend_backward(
    qkv: &[f32],
    probs: &[f32],
    mask: Option<&[f32]>,
    dctx: &[f32],
    h: usize,
    heads: usize,
    dqkv: &mut [f32],
) {
    let len = dctx.len() / h;
    let hd = h / heads;
    let w = 3 * h;
    let mut ds = vec![0f32; len * len];
    let mut dropped = vec![0f32; if mask.is_some() { len * len } else { 0 }];
    for head in 0..heads {
        let (q0, k0, v0) = (head * hd, h + head * hd, 2 * h + head * hd);
        let block = head * len * len..(head + 1) * len * len;
        let p = &probs[block.clone()];
        let m = mask.map(|m| &m[block]);
        // SAFETY (all products): rows of `w` (qkv, dqkv) or `h` (dctx) values with the
        // head's `hd` columns at q0/k0/v0; `ds` and `dropped` are `[len, len]`.
        unsafe {
            gemm_small(
                (len, len, hd),
                &mut ds,
                len,
                &dctx[q0..],
                (1, h),
                &qkv[v0..],
                (w, 1),
            )
        };
        let pd = dropped_out(p, m, &mut dropped);
        if let Some(m) = m {
            for (g, &f) in ds.iter_mut().zip(m) {
                *g *= f;
            }
        }
        unsafe {
            gemm_small(
                (len, hd, len),
                &mut dqkv[v0..],
                w,
                pd,
                (len, 1),
                &dctx[q0..],
                (1, h),
            )
        };
        // Softmax: ds_ij = p_ij (dp_ij - sum_j' dp_ij' p_ij').
        for (g, p) in ds.chunks_exact_mut(len).zip(p.chunks_exact(len)) {
            let mut dot = 0f32;
            for (&x, &pj) in g.iter().zip(p) {
                dot += x * pj;
            }
            for (x, &pj) in g.iter_mut().zip(p) {
                *x = pj * (*x - dot);
            }
        }
        unsafe {
            gemm_small(
                (len, hd, len),
                &mut dqkv[q0..],
                w,
                &ds,
                (1, len),
                &qkv[k0..],
                (1, w),
            );
            gemm_small(
                (len, hd, len),
                &mut dqkv[k0..],
                w,
                &ds,
                (len, 1),
                &qkv[q0..],
                (1, w),
            );
        }
    }
}

/// Work that [`wide`] compiles for the CPU's widest vectors. `run` is `#[inline(always)]` in
/// every impl, so that its loops are compiled inside the AVX-512 (or AVX2) function; a closure
/// there is a function of its own, compiled for baseline x86-64.
trait Kernel {
    fn run(self);
}

/// Runs `k` compiled for AVX-512 or AVX2 when the CPU has them, else as built.
fn wide(k: impl Kernel) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2")]
        fn avx512(k: impl Kernel) {
            k.run()
        }
        #[target_feature(enable = "avx2")]
        fn avx2(k: impl Kernel) {
            k.run()
        }
        match super::bert::simd_level() {
            // SAFETY: the CPU has every feature `avx512` is compiled for (`simd_level`).
            2 => return unsafe { avx512(k) },
            // SAFETY: the CPU has AVX2.
            1 => return unsafe { avx2(k) },
            _ => {}
        }
    }
    k.run()
}

/// [`attend_forward`] for [`wide`].
struct AttendForward<'a> {
    qkv: &'a [f32],
    h: usize,
    heads: usize,
    mask: Option<&'a [f32]>,
    probs: &'a mut [f32],
    ctx: &'a mut [f32],
}

impl Kernel for AttendForward<'_> {
    #[inline(always)]
    fn run(self) {
        attend_forward(
            self.qkv, self.h, self.heads, self.mask, self.probs, self.ctx,
        )
    }
}

/// [`attend_backward`] for [`wide`].
struct AttendBackward<'a> {
    qkv: &'a [f32],
    probs: &'a [f32],
    mask: Option<&'a [f32]>,
    dctx: &'a [f32],
    h: usize,
    heads: usize,
    dqkv: &'a mut [f32],
}

impl Kernel for AttendBackward<'_> {
    #[inline(always)]
    fn run(self) {
        attend_backward(
            self.qkv, self.probs, self.mask, self.dctx, self.h, self.heads, self.dqkv,
        )
    }
}

/// `f(&mut dst[i], src[i])` over a chunk, for [`wide`] (`f` is small and inlined).
struct Each<'a, F> {
    dst: &'a mut [f32],
    src: &'a [f32],
    f: F,
}

impl<F: Fn(&mut f32, f32)> Kernel for Each<'_, F> {
    #[inline(always)]
    fn run(self) {
        for (d, &s) in self.dst.iter_mut().zip(self.src) {
            (self.f)(d, s);
        }
    }
}

/// Dropout factors of quads `first..` for [`dropout_mask`], for [`wide`].
struct Mask<'a> {
    out: &'a mut [f32],
    seed: u64,
    first: usize,
    threshold: u64,
    keep: f32,
}

impl Kernel for Mask<'_> {
    #[inline(always)]
    fn run(self) {
        let full = (self.out.len() / 4) as u64;
        let mut quads = self.out.chunks_exact_mut(4);
        for (i, quad) in (&mut quads).enumerate() {
            let r = splitmix(self.seed.wrapping_add((self.first + i) as u64));
            for (j, v) in quad.iter_mut().enumerate() {
                let draw = (r >> (16 * j)) & 0xFFFF;
                *v = if draw < self.threshold {
                    0.0
                } else {
                    self.keep
                };
            }
        }
        let rest = quads.into_remainder();
        if !rest.is_empty() {
            let r = splitmix(self.seed.wrapping_add(self.first as u64 + full));
            for (j, v) in rest.iter_mut().enumerate() {
                let draw = (r >> (16 * j)) & 0xFFFF;
                *v = if draw < self.threshold {
                    0.0
                } else {
                    self.keep
                };
            }
        }
    }
}

/// A layer norm applied to `a * mask + res` row by row: the output, the normalised rows
/// (`xhat`) and each row's `1 / sqrt(var + eps)`.
struct Normed {
    y: Vec<f32>,
    xhat: Vec<f32>,
    rstd: Vec<f32>,
}

fn add_norm(
    a: &[f32],
    mask: Option<&[f32]>,
    res: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Normed {
    let h = weight.len();
    let n = a.len() / h;
    let mut out = Normed {
        y: vec![0f32; n * h],
        xhat: vec![0f32; n * h],
        rstd: vec![0f32; n],
    };
    out.y
        .par_chunks_mut(ROW_CHUNK * h)
        .zip(out.xhat.par_chunks_mut(ROW_CHUNK * h))
        .zip(out.rstd.par_chunks_mut(ROW_CHUNK))
        .enumerate()
        .for_each(|(c, ((y, xhat), rstd))| {
            let from = c * ROW_CHUNK * h;
            for (r, ((y, x), rs)) in y
                .chunks_mut(h)
                .zip(xhat.chunks_mut(h))
                .zip(rstd.iter_mut())
                .enumerate()
            {
                let at = from + r * h;
                let (a, res) = (&a[at..at + h], &res[at..at + h]);
                match mask {
                    Some(m) => {
                        for (((x, &a), &m), &r) in x.iter_mut().zip(a).zip(&m[at..at + h]).zip(res)
                        {
                            *x = a * m + r;
                        }
                    }
                    None => {
                        for ((x, &a), &r) in x.iter_mut().zip(a).zip(res) {
                            *x = a + r;
                        }
                    }
                }
                let mean = x.iter().sum::<f32>() / h as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                *rs = 1.0 / (var + eps).sqrt();
                for ((x, y), (&w, &b)) in
                    x.iter_mut().zip(y.iter_mut()).zip(weight.iter().zip(bias))
                {
                    *x = (*x - mean) * *rs;
                    *y = *x * w + b;
                }
            }
        });
    out
}

/// [`norm_backward`] on a chunk of rows, for [`wide`]: the input's gradient into `dr`, the
/// weight and bias gradients added to `dw` and `db`.
struct NormBackward<'a> {
    dy: &'a [f32],
    xhat: &'a [f32],
    rstd: &'a [f32],
    weight: &'a [f32],
    dr: &'a mut [f32],
    dw: &'a mut [f32],
    db: &'a mut [f32],
}

impl Kernel for NormBackward<'_> {
    #[inline(always)]
    fn run(self) {
        let h = self.weight.len();
        let mut g = vec![0f32; h];
        for (r, dr) in self.dr.chunks_exact_mut(h).enumerate() {
            let (dy, xh) = (&self.dy[r * h..(r + 1) * h], &self.xhat[r * h..(r + 1) * h]);
            for ((((g, &d), &x), &w), (dw, db)) in g
                .iter_mut()
                .zip(dy)
                .zip(xh)
                .zip(self.weight)
                .zip(self.dw.iter_mut().zip(self.db.iter_mut()))
            {
                *g = d * w;
                *dw += d * x;
                *db += d;
            }
            let mean_g = g.iter().sum::<f32>() / h as f32;
            let mean_gx = g.iter().zip(xh).map(|(g, x)| g * x).sum::<f32>() / h as f32;
            let rs = self.rstd[r];
            for ((d, &g), &x) in dr.iter_mut().zip(&g).zip(xh) {
                *d = rs * (g - mean_g - x * mean_gx);
            }
        }
    }
}

/// Layer-norm backward: from the output's gradient `dy` to the input's (`dr`), and the
/// weight and bias gradients.
fn norm_backward(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    weight: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let h = weight.len();
    let n = dy.len() / h;
    let mut dr = vec![0f32; n * h];
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dr
        .par_chunks_mut(ROW_CHUNK * h)
        .enumerate()
        .map(|(c, dr)| {
            let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
            let rows = c * ROW_CHUNK * h..c * ROW_CHUNK * h + dr.len();
            wide(NormBackward {
                dy: &dy[rows.clone()],
                xhat: &xhat[rows],
                rstd: &rstd[c * ROW_CHUNK..],
                weight,
                dr,
                dw: &mut dw,
                db: &mut db,
            });
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
    for (pw, pb) in partial {
        for (a, b) in dw.iter_mut().zip(pw) {
            *a += b;
        }
        for (a, b) in db.iter_mut().zip(pb) {
            *a += b;
        }
    }
    (dr, dw, db)
}

/// Sums of the rows of a chunk into `sums`, for [`wide`].
struct RowSum<'a> {
    rows: &'a [f32],
    sums: &'a mut [f32],
}

impl Kernel for RowSum<'_> {
    #[inline(always)]
    fn run(self) {
        for row in self.rows.chunks_exact(self.sums.len()) {
            for (a, &b) in self.sums.iter_mut().zip(row) {
                *a += b;
            }
        }
    }
}

/// Column sums of `d` `[n, cols]` (a bias's gradient), in a fixed order.
fn col_sums(d: &[f32], cols: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = d
        .par_chunks(ROW_CHUNK * 4 * cols)
        .map(|rows| {
            let mut sums = vec![0f32; cols];
            wide(RowSum {
                rows,
                sums: &mut sums,
            });
            sums
        })
        .collect();
    let mut s = vec![0f32; cols];
    for p in partial {
        for (a, b) in s.iter_mut().zip(p) {
            *a += b;
        }
    }
    s
}

/// `f(&mut dst[i], src[i])` on the thread pool, on the widest vectors.
fn par_each(dst: &mut [f32], src: &[f32], f: impl Fn(&mut f32, f32) + Sync + Copy) {
    const CHUNK: usize = 1 << 14;
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(dst, src)| wide(Each { dst, src, f }));
}

/// One layer's weights as read at the forward pass (the query rows of `qkv` pre-scaled).
pub(super) struct LayerWeights {
    pub(super) qkv: Vec<f32>,
    pub(super) qkv_bias: Vec<f32>,
    pub(super) attn_out: Vec<f32>,
    pub(super) attn_out_bias: Vec<f32>,
    pub(super) attn_norm: (Vec<f32>, Vec<f32>, f32),
    pub(super) inter: Vec<f32>,
    pub(super) inter_bias: Vec<f32>,
    pub(super) out: Vec<f32>,
    pub(super) out_bias: Vec<f32>,
    pub(super) out_norm: (Vec<f32>, Vec<f32>, f32),
    /// `1 / sqrt(head_dim)`, folded into the query rows.
    pub(super) scale: f32,
    /// The candle tensors the gradients belong to, in [`LAYER_TENSORS`] order.
    pub(super) tensors: Vec<Tensor>,
}

/// The order of [`LayerWeights::tensors`].
pub(super) const LAYER_TENSORS: [&str; 16] = [
    "query.weight",
    "query.bias",
    "key.weight",
    "key.bias",
    "value.weight",
    "value.bias",
    "attention.output.weight",
    "attention.output.bias",
    "attention.norm.weight",
    "attention.norm.bias",
    "intermediate.weight",
    "intermediate.bias",
    "output.weight",
    "output.bias",
    "output.norm.weight",
    "output.norm.bias",
];

/// What the backward pass of a layer needs from its forward pass.
struct Saved {
    x: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    probs_mask: Option<Vec<f32>>,
    ctx: Vec<f32>,
    attn_mask: Option<Vec<f32>>,
    norm1: Normed,
    inter: Vec<f32>,
    act: Vec<f32>,
    out_mask: Option<Vec<f32>>,
    norm2: Normed,
}

/// Dropout probabilities and the seed of one forward call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dropout {
    pub(super) attention: f32,
    pub(super) hidden: f32,
    pub(super) seed: u64,
}

impl Dropout {
    fn mask(&self, layer: usize, site: u64, len: usize, p: f32) -> Option<Vec<f32>> {
        (p > 0.0).then(|| {
            let seed = splitmix(splitmix(self.seed) ^ ((layer as u64) << 8 | site));
            dropout_mask(seed, len, p)
        })
    }
}

fn layer_forward(
    lw: &LayerWeights,
    x: Vec<f32>,
    seqs: &Seqs,
    heads: usize,
    drop: &Dropout,
    layer: usize,
    prod: Products,
) -> Result<(Vec<f32>, Saved)> {
    let h = lw.attn_norm.0.len();
    let n = seqs.tokens();
    let inter_dim = lw.inter_bias.len();
    let qkv = prod.nt(&x, &lw.qkv, 3 * h, h, &lw.qkv_bias)?;
    let probs_mask = drop.mask(layer, 0, seqs.probs, drop.attention);
    let mut probs = vec![0f32; seqs.probs];
    let mut ctx = vec![0f32; n * h];
    {
        let prob_parts = split_mut(&mut probs, seqs.lengths.iter().map(|l| heads * l * l));
        let ctx_parts = split_mut(&mut ctx, seqs.lengths.iter().map(|l| l * h));
        let mask = probs_mask.as_deref();
        prob_parts
            .into_par_iter()
            .zip(ctx_parts)
            .enumerate()
            .for_each(|(s, (p, c))| {
                let (t0, len, p0) = (seqs.starts[s], seqs.lengths[s], seqs.prob_starts[s]);
                let rows = &qkv[t0 * 3 * h..(t0 + len) * 3 * h];
                let m = mask.map(|m| &m[p0..p0 + heads * len * len]);
                wide(AttendForward {
                    qkv: rows,
                    h,
                    heads,
                    mask: m,
                    probs: p,
                    ctx: c,
                });
            });
    }
    let attn = prod.nt(&ctx, &lw.attn_out, h, h, &lw.attn_out_bias)?;
    let attn_mask = drop.mask(layer, 1, n * h, drop.hidden);
    let (w1, b1, eps1) = &lw.attn_norm;
    let norm1 = add_norm(&attn, attn_mask.as_deref(), &x, w1, b1, *eps1);
    let inter = prod.nt(&norm1.y, &lw.inter, inter_dim, h, &lw.inter_bias)?;
    let mut act = vec![0f32; inter.len()];
    par_each(&mut act, &inter, |y, x| *y = gelu_erf_f32(x));
    let out = prod.nt(&act, &lw.out, h, inter_dim, &lw.out_bias)?;
    let out_mask = drop.mask(layer, 2, n * h, drop.hidden);
    let (w2, b2, eps2) = &lw.out_norm;
    let mut norm2 = add_norm(&out, out_mask.as_deref(), &norm1.y, w2, b2, *eps2);
    // The layer's output; the backward pass needs only the normalised rows and `rstd`.
    let y = std::mem::take(&mut norm2.y);
    Ok((
        y,
        Saved {
            x,
            qkv,
            probs,
            probs_mask,
            ctx,
            attn_mask,
            norm1,
            inter,
            act,
            out_mask,
            norm2,
        },
    ))
}

/// A layer's gradients: its input's (when asked for) and its weights' in [`LAYER_TENSORS`]
/// order.
struct LayerGrads {
    input: Option<Vec<f32>>,
    weights: Vec<Vec<f32>>,
}

/// The layer's backward pass from its output's gradient `dy`.
fn layer_backward(
    lw: &LayerWeights,
    s: &Saved,
    dy: &[f32],
    seqs: &Seqs,
    heads: usize,
    prod: Products,
    input_grad: bool,
) -> Result<LayerGrads> {
    let h = lw.attn_norm.0.len();
    let inter_dim = lw.inter_bias.len();
    // Output layer norm, dropout, output product.
    let (dr2, dw_n2, db_n2) = norm_backward(dy, &s.norm2.xhat, &s.norm2.rstd, &lw.out_norm.0);
    let mut d_out = dr2.clone();
    if let Some(m) = &s.out_mask {
        par_each(&mut d_out, m, |g, m| *g *= m);
    }
    let dw_out = prod.tn(&d_out, h, &s.act, inter_dim)?;
    let db_out = col_sums(&d_out, h);
    let mut d_inter = prod.nn(&d_out, &lw.out, h, inter_dim)?;
    par_each(&mut d_inter, &s.inter, |g, u| *g *= gelu_grad_f32(u));
    let dw_inter = prod.tn(&d_inter, inter_dim, &s.norm1.y, h)?;
    let db_inter = col_sums(&d_inter, inter_dim);
    let mut dy1 = prod.nn(&d_inter, &lw.inter, inter_dim, h)?;
    par_each(&mut dy1, &dr2, |a, b| *a += b);
    // Attention layer norm, dropout, attention output product.
    let (dr1, dw_n1, db_n1) = norm_backward(&dy1, &s.norm1.xhat, &s.norm1.rstd, &lw.attn_norm.0);
    let mut d_attn = dr1.clone();
    if let Some(m) = &s.attn_mask {
        par_each(&mut d_attn, m, |g, m| *g *= m);
    }
    let dw_attn = prod.tn(&d_attn, h, &s.ctx, h)?;
    let db_attn = col_sums(&d_attn, h);
    let dctx = prod.nn(&d_attn, &lw.attn_out, h, h)?;
    // Attention, per sequence.
    let n = seqs.tokens();
    let mut dqkv = vec![0f32; n * 3 * h];
    {
        let parts = split_mut(&mut dqkv, seqs.lengths.iter().map(|l| l * 3 * h));
        let mask = s.probs_mask.as_deref();
        parts.into_par_iter().enumerate().for_each(|(q, part)| {
            let (t0, len, p0) = (seqs.starts[q], seqs.lengths[q], seqs.prob_starts[q]);
            let block = p0..p0 + heads * len * len;
            let rows = &s.qkv[t0 * 3 * h..(t0 + len) * 3 * h];
            let probs = &s.probs[block.clone()];
            let m = mask.map(|m| &m[block]);
            let dc = &dctx[t0 * h..(t0 + len) * h];
            wide(AttendBackward {
                qkv: rows,
                probs,
                mask: m,
                dctx: dc,
                h,
                heads,
                dqkv: part,
            });
        });
    }
    let mut dw_q = prod.tn(&dqkv, 3 * h, &s.x, h)?;
    let mut db_q = col_sums(&dqkv, 3 * h);
    let dx = if input_grad {
        let mut dx = prod.nn(&dqkv, &lw.qkv, 3 * h, h)?;
        par_each(&mut dx, &dr1, |a, b| *a += b);
        Some(dx)
    } else {
        None
    };
    // Query, key and value rows apart; the query rows were pre-scaled, so the gradient of
    // the unscaled ones is scaled too.
    let (dw_v, db_v) = (dw_q.split_off(2 * h * h), db_q.split_off(2 * h));
    let (dw_k, db_k) = (dw_q.split_off(h * h), db_q.split_off(h));
    for g in dw_q.iter_mut().chain(db_q.iter_mut()) {
        *g *= lw.scale;
    }
    let grads = vec![
        dw_q, db_q, dw_k, db_k, dw_v, db_v, dw_attn, db_attn, dw_n1, db_n1, dw_inter, db_inter,
        dw_out, db_out, dw_n2, db_n2,
    ];
    Ok(LayerGrads {
        input: dx,
        weights: grads,
    })
}

/// A stack of encoder layers as one differentiable candle operation on padded hidden states
/// `[batch, seq, hidden]` (f32, CPU) with right padding of `lengths`; its second argument is
/// one of the layers' weights (see the module documentation).
pub(super) struct TrainLayers {
    pub(super) layers: Vec<LayerWeights>,
    pub(super) lengths: Vec<usize>,
    pub(super) heads: usize,
    pub(super) dropout: Dropout,
    pub(super) products: Products,
    saved: Mutex<Vec<Saved>>,
}

impl TrainLayers {
    pub(super) fn new(
        layers: Vec<LayerWeights>,
        lengths: Vec<usize>,
        heads: usize,
        dropout: Dropout,
    ) -> Self {
        let products = if super::bf16::train_bf16() {
            Products::Bf16
        } else {
            Products::F32
        };
        Self {
            layers,
            lengths,
            heads,
            dropout,
            products,
            saved: Mutex::new(Vec::new()),
        }
    }

    fn hidden(&self) -> usize {
        self.layers.first().map_or(0, |l| l.attn_norm.0.len())
    }

    fn forward(&self, x: &[f32], seq: usize) -> Result<Vec<f32>> {
        let h = self.hidden();
        let seqs = Seqs::new(&self.lengths, self.heads);
        if x.len() != self.lengths.len() * seq * h
            || self.lengths.iter().any(|&l| l == 0 || l > seq)
        {
            return Err(Error::InvalidArgument(format!(
                "fused training layers: {} values for lengths {:?} of at most {seq} tokens of {h}",
                x.len(),
                self.lengths
            )));
        }
        let mut packed = pack(x, &self.lengths, seq, h);
        let mut saved = Vec::with_capacity(self.layers.len());
        for (l, lw) in self.layers.iter().enumerate() {
            let (y, s) = layer_forward(
                lw,
                packed,
                &seqs,
                self.heads,
                &self.dropout,
                l,
                self.products,
            )?;
            saved.push(s);
            packed = y;
        }
        *self.saved.lock().map_err(|_| poisoned())? = saved;
        Ok(unpack(&packed, &self.lengths, seq, h))
    }

    fn backward(&self, grad: &[f32], seq: usize, input_grad: bool) -> Result<Option<Vec<f32>>> {
        let h = self.hidden();
        let seqs = Seqs::new(&self.lengths, self.heads);
        let saved = std::mem::take(&mut *self.saved.lock().map_err(|_| poisoned())?);
        if saved.len() != self.layers.len() {
            return Err(Error::InvalidArgument(
                "fused training layers: backward without its forward pass (or twice)".into(),
            ));
        }
        let mut dy = pack(grad, &self.lengths, seq, h);
        let mut pending = Vec::new();
        for (l, (lw, s)) in self.layers.iter().zip(&saved).enumerate().rev() {
            let need = l > 0 || input_grad;
            let grads = layer_backward(lw, s, &dy, &seqs, self.heads, self.products, need)?;
            for (t, g) in lw.tensors.iter().zip(grads.weights) {
                let g = Tensor::from_vec(g, t.shape(), t.device())?.to_dtype(t.dtype())?;
                pending.push((t.clone(), g));
            }
            match grads.input {
                Some(dx) => dy = dx,
                None => break,
            }
        }
        PENDING.with(|p| p.borrow_mut().extend(pending));
        Ok(input_grad.then(|| unpack(&dy, &self.lengths, seq, h)))
    }
}

fn poisoned() -> Error {
    Error::InvalidArgument("fused training layers: a panicked thread held their state".into())
}

/// The first `lengths[i]` rows of each sequence of `x` `[batch, seq, h]`, one after another.
fn pack(x: &[f32], lengths: &[usize], seq: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(lengths.iter().sum::<usize>() * h);
    for (row, &len) in lengths.iter().enumerate() {
        out.extend_from_slice(&x[row * seq * h..(row * seq + len) * h]);
    }
    out
}

/// Packed rows back to `[batch, seq, h]`, zeros at padding.
fn unpack(packed: &[f32], lengths: &[usize], seq: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; lengths.len() * seq * h];
    let mut from = 0;
    for (row, &len) in lengths.iter().enumerate() {
        out[row * seq * h..(row * seq + len) * h].copy_from_slice(&packed[from..from + len * h]);
        from += len * h;
    }
    out
}

impl candle_core::CustomOp2 for TrainLayers {
    fn name(&self) -> &'static str {
        "fused-train-layers"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        _s2: &candle_core::CpuStorage,
        _l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = f32_input(self.name(), s1, l1)?;
        let (_, seq, _) = l1.shape().dims3()?;
        let out = self
            .forward(x, seq)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((candle_core::CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, seq, _) = x.dims3()?;
        let grad = grad.contiguous()?;
        let dx = with_f32(self.name(), &grad, |g| self.backward(g, seq, x.track_op()))?
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), x.device()))
                .transpose()?,
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::amx_supported;
    use super::*;

    #[test]
    fn dropout_masks_drop_at_the_rate_and_repeat_with_the_seed() {
        let p = 0.1f32;
        let mask = dropout_mask(7, 100_003, p);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f32 / mask.len() as f32;
        assert!((dropped - p).abs() < 0.005, "dropped {dropped}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0 / (1.0 - p)));
        assert_eq!(mask, dropout_mask(7, 100_003, p));
        assert_ne!(mask, dropout_mask(8, 100_003, p));
        // A prefix of a longer mask is the shorter mask: it does not depend on the split.
        assert_eq!(&dropout_mask(7, 200_000, p)[..100_003], &mask[..]);
        assert!(dropout_mask(7, 1000, 0.0).iter().all(|&m| m == 1.0));
    }

    /// The three products against a plain triple loop: f32 within summation order, bf16 (on
    /// AMX tiles, where the CPU has them) within bf16 rounding of the inputs.
    #[test]
    fn products_match_the_definition() {
        let (m, n, k) = (37, 64, 96);
        let wave = |len: usize, s: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * s) % 29) as f32 / 29.0 - 0.5)
                .collect()
        };
        let (x, w, g) = (wave(m * k, 31), wave(n * k, 17), wave(m * n, 13));
        let bias = wave(n, 7);
        let mut nt = vec![0f32; m * n];
        let mut nn = vec![0f32; m * k];
        let mut tn = vec![0f32; n * k];
        for i in 0..m {
            for j in 0..n {
                nt[i * n + j] = bias[j] + (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum::<f32>();
                for t in 0..k {
                    nn[i * k + t] += g[i * n + j] * w[j * k + t];
                    tn[j * k + t] += g[i * n + j] * x[i * k + t];
                }
            }
        }
        let mut kinds = vec![(Products::F32, 1e-4)];
        if amx_supported() {
            kinds.push((Products::Bf16, 3e-2));
        }
        for (p, tol) in kinds {
            let close = |a: &[f32], b: &[f32], what: &str| {
                let d = a.iter().zip(b).fold(0f32, |d, (a, b)| d.max((a - b).abs()));
                assert!(d < tol, "{p:?} {what}: {d}");
            };
            close(&p.nt(&x, &w, n, k, &bias).unwrap(), &nt, "x W^T + b");
            close(&p.nn(&g, &w, n, k).unwrap(), &nn, "g W");
            close(&p.tn(&g, n, &x, k).unwrap(), &tn, "g^T x");
        }
        assert!(Products::F32.nt(&x[1..], &w, n, k, &bias).is_err());
    }
}
