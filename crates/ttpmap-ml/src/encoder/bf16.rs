//! bf16 linear layers for inference on CPUs with AVX512_BF16 (`vdpbf16ps`: 32 bf16 products
//! summed pairwise into 16 f32 lanes per instruction: twice the products of an f32 FMA).
//!
//! candle 0.11 has no bf16 GEMM on the CPU (it widens to f32), its int8 `QMatMul` is slower
//! than f32 at our shapes, and the distribution's OpenBLAS has no `sbgemm`, so the kernel is
//! ours: weights are rounded to bf16 once and packed in 32-column panels of k-pairs; each call
//! rounds the activations to bf16 (`vcvtne2ps2bf16`) and accumulates in f32, so the only error
//! is the two roundings (8-bit mantissas).
//!
//! Where the CPU has AMX (Sapphire Rapids and later) and the OS grants the tile state, the
//! same panels feed AMX tiles (`tdpbf16ps`, [`amx`]), and that is the default there
//! ([`Precision::detect`]): with the fused layer (`encoder/fused.rs`), 3.3-3.7x the f32 encoder
//! with per-document F1 and P@1 within 0.5 points (0.41 at most; docs/results.md, "Speed").
//! The AVX512_BF16 kernel alone is *slower* than candle's f32 GEMM (75-85 vs 118 sentences/s
//! on a 2-vCPU Xeon: `vdpbf16ps` issues at the rate of the two f32 FMA ports together, so bf16
//! doubles nothing), so without AMX f32 stays the default and that kernel is opt-in
//! (`TTPMAP_PRECISION=bf16`); bf16 has its own parity tolerance. Training runs bf16 products
//! on the tiles too where the CPU has them, unless `TTPMAP_TRAIN_PRECISION=fp32`
//! ([`train_bf16`], [`linear_train`]).

use candle_core::{DType, Device, Tensor};

use super::bert::{f32_input, with_f32};
use crate::{Error, Result};

/// Arithmetic of the encoder's linear layers at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// candle's f32 GEMM (the reference).
    Fp32,
    /// bf16 inputs and weights, f32 accumulation ([`Bf16Linear`]); needs AVX512_BF16.
    Bf16,
    /// int8 inputs (per token) and weights (per output), i32 sums
    /// ([`super::int8::Int8Linear`]); needs AVX512_VNNI.
    Int8,
}

impl Precision {
    /// The inference precision. `TTPMAP_PRECISION=fp32`, `=bf16` or `=int8` chooses (bf16
    /// only where the CPU has AVX512_BF16, int8 only with AVX512_VNNI, else f32); otherwise
    /// bf16 where this CPU and OS offer AMX tiles ([`amx_supported`]: 3.3-3.7x the f32
    /// encoder with the fused layer), int8 where the CPU has AVX512_VNNI and no AMX, and f32
    /// everywhere else (the AVX512_BF16 kernel alone was slower than f32 on the CPUs we
    /// measured). Per-document F1 and P@1 of each within 0.5 points of f32 (docs/results.md,
    /// "Speed").
    pub fn detect() -> Precision {
        static P: std::sync::OnceLock<Precision> = std::sync::OnceLock::new();
        *P.get_or_init(|| {
            let asked = std::env::var("TTPMAP_PRECISION").ok();
            match asked.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("fp32" | "f32") => Precision::Fp32,
                Some("bf16") if bf16_supported() => Precision::Bf16,
                Some("bf16") => {
                    tracing::warn!("TTPMAP_PRECISION=bf16: this CPU has no AVX512_BF16, using f32");
                    Precision::Fp32
                }
                Some("int8") if super::int8::int8_supported() => Precision::Int8,
                Some("int8") => {
                    tracing::warn!("TTPMAP_PRECISION=int8: this CPU has no AVX512_VNNI, using f32");
                    Precision::Fp32
                }
                Some(other) if !other.is_empty() => {
                    tracing::warn!(
                        "TTPMAP_PRECISION={other} is not a precision (fp32, bf16 or int8); \
                         choosing by CPU"
                    );
                    Self::by_cpu()
                }
                _ => Self::by_cpu(),
            }
        })
    }

    /// bf16 where AMX tiles run it, else int8 where AVX512_VNNI does (four times the
    /// products of an f32 FMA per instruction), else f32.
    fn by_cpu() -> Precision {
        if amx_supported() {
            Precision::Bf16
        } else if super::int8::int8_supported() {
            Precision::Int8
        } else {
            Precision::Fp32
        }
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

/// Whether this CPU has AMX bf16 tiles (`tdpbf16ps`: a 16x32 by 32x16 bf16 product into
/// 16x16 f32 per instruction) and the OS lets this process use them (Linux asks each process
/// to request the tile state, `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
/// `TTPMAP_AMX=0` turns the tiles off (the AVX512_BF16 kernel is used instead).
pub fn amx_supported() -> bool {
    static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        if std::env::var("TTPMAP_AMX").is_ok_and(|v| v == "0") || !bf16_supported() {
            return false;
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a request for a permission; it changes no memory of ours.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// Columns per packed weight panel (two zmm registers of f32 accumulators).
pub(super) const PANEL: usize = 32;
/// Rows of the output computed together (6 x 2 accumulators + 2 weight registers).
const ROWS: usize = 6;

/// What [`Bf16Linear::forward_then`] runs on each worker's block of output rows, in place:
/// called with the index of the block's first row and its rows (real rows only, never the
/// padding of a tile).
pub type Epilogue<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// `values` as the f32 they hold.
///
/// # Safety
/// Every value of `values` has been written.
unsafe fn assume_init(values: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has f32's layout; the caller vouches every value is written.
    unsafe { &mut *(values as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// `y = x W^T + b` with `W` `[n, k]` stored as bf16 panels.
#[derive(Debug, Clone)]
pub struct Bf16Linear {
    /// Panel `p` holds columns `32p..32p+32`: for each k-pair `q`, 32 `u32` words, word `c`
    /// = (bf16 `W[32p+c, 2q]` low, bf16 `W[32p+c, 2q+1]` high); zero-padded in n and k.
    packed: Vec<u32>,
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 32 (whole AMX tiles; the rest is zeros).
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

/// Weight panel of outputs `j0..` (at most [`PANEL`] of `n`): the pair `q` of inputs of
/// output `j0 + c` at `panel[q * PANEL + c]`, `value(j, t)` the weight of output `j`, input
/// `t` (of `k`).
fn fill_panel(
    panel: &mut [u32],
    j0: usize,
    n: usize,
    k: usize,
    value: impl Fn(usize, usize) -> f32,
) {
    for q in 0..k.div_ceil(2) {
        for c in 0..PANEL.min(n - j0) {
            let lo = to_bf16(value(j0 + c, 2 * q));
            let hi = if 2 * q + 1 < k {
                to_bf16(value(j0 + c, 2 * q + 1))
            } else {
                0
            };
            panel[q * PANEL + c] = u32::from(lo) | (u32::from(hi) << 16);
        }
    }
}

/// The left operand of a bf16 product: `k` values per input.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// Inputs one after another (`[m, k]`).
    Rows(&'a [f32]),
    /// The transpose of `src` (`[k, m]`; the second value is `m`): input `r` is column `r`.
    Columns(&'a [f32], usize),
}

impl Bf16Linear {
    /// Packs `weight` `[n, k]` (f32) and `bias` `[n]`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = match bias {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; n],
        };
        Self::from_rows(&w, n, k, bias)
    }

    /// Packs `w`, `n` rows of `k` (f32), and `bias` (`n` values), on the thread pool.
    pub fn from_rows(w: &[f32], n: usize, k: usize, bias: Vec<f32>) -> Result<Self> {
        if bias.len() != n {
            return Err(Error::InvalidArgument(format!(
                "bias has {} values for {n} outputs",
                bias.len()
            )));
        }
        if w.len() != n * k {
            return Err(Error::InvalidArgument(format!(
                "{} weights for {n} x {k}",
                w.len()
            )));
        }
        Ok(Self::pack(n, k, bias, |j, t| w[j * k + t]))
    }

    /// Packs the transpose of `src` (`rows` x `cols`, f32) as the weights: `n = cols`
    /// outputs of `k = rows` inputs, no bias. No transposed copy is made.
    pub fn from_columns(src: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if src.len() != rows * cols {
            return Err(Error::InvalidArgument(format!(
                "{} values for {rows} x {cols}",
                src.len()
            )));
        }
        #[cfg(target_arch = "x86_64")]
        if bf16_supported() {
            return Ok(Self::pack_with(cols, rows, vec![0.0; cols], |j0, panel| {
                if j0 + PANEL <= cols {
                    // SAFETY: AVX512_BF16 checked; whole panel of 32 columns inside `src`.
                    unsafe { kernel::pack_columns(src, rows, cols, j0, panel) };
                    if rows % 2 == 1 {
                        // The last input alone in its pair.
                        let q = rows / 2;
                        for c in 0..PANEL {
                            panel[q * PANEL + c] =
                                u32::from(to_bf16(src[(rows - 1) * cols + j0 + c]));
                        }
                    }
                } else {
                    fill_panel(panel, j0, cols, rows, |j, t| src[t * cols + j]);
                }
            }));
        }
        Ok(Self::pack(cols, rows, vec![0.0; cols], |j, t| {
            src[t * cols + j]
        }))
    }

    /// The layer whose weight `W[j, t]` (`n` outputs of `k` inputs) is `value(j, t)`: packed
    /// panel by panel on the thread pool, `k` padded with zeros to whole tiles.
    fn pack(
        n: usize,
        k: usize,
        bias: Vec<f32>,
        value: impl Fn(usize, usize) -> f32 + Sync,
    ) -> Self {
        Self::pack_with(n, k, bias, |j0, panel| fill_panel(panel, j0, n, k, &value))
    }

    /// [`Bf16Linear::pack`] with `fill(j0, panel)` writing the panel of outputs `j0..`
    /// (zeroed before) as [`fill_panel`] does.
    fn pack_with(
        n: usize,
        k: usize,
        bias: Vec<f32>,
        fill: impl Fn(usize, &mut [u32]) + Sync,
    ) -> Self {
        use rayon::prelude::*;
        let k2 = k.div_ceil(32) * 32;
        let pairs = k2 / 2;
        let mut packed = vec![0u32; n.div_ceil(PANEL) * pairs * PANEL];
        packed
            .par_chunks_mut(pairs * PANEL)
            .enumerate()
            .for_each(|(p, panel)| fill(p * PANEL, panel));
        Self {
            packed,
            n,
            k,
            k2,
            bias,
        }
    }

    /// Output features.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// `x` `[.., k]` (f32) -> `[.., n]`. Errors on a CPU without AVX512_BF16.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, self.uses_amx(), None)
    }

    /// [`Bf16Linear::forward`], then `epilogue` on each worker's block of output rows while
    /// they are in cache (an activation, in place).
    pub fn forward_then(&self, x: &Tensor, epilogue: &Epilogue<'_>) -> Result<Tensor> {
        self.forward_with(x, self.uses_amx(), Some(epilogue))
    }

    /// [`Bf16Linear::forward`] on AMX tiles (`tiles`, which needs [`Bf16Linear::uses_amx`])
    /// or on the AVX512_BF16 kernel, with an optional epilogue.
    fn forward_with(
        &self,
        x: &Tensor,
        tiles: bool,
        epilogue: Option<&Epilogue<'_>>,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.k {
            return Err(Error::InvalidArgument(format!(
                "bf16 linear expects {} input features, got {k}",
                self.k
            )));
        }
        // The input's own memory when it is a contiguous f32 CPU tensor (the encoder's always
        // are: these conversions are then no-ops), else a copy.
        let x = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        let out = with_f32("bf16 linear", &x, |xs| {
            self.rows_with(Input::Rows(xs), tiles, epilogue)
        })??;
        let mut shape = dims;
        *shape.last_mut().unwrap() = self.n;
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
    }

    /// `xs` (rows of `k` f32, one after another) times the weights plus the bias, rows of
    /// `n`, with `epilogue` on each worker's rows; on AMX tiles where
    /// [`Bf16Linear::uses_amx`]. The slice form of [`Bf16Linear::forward_then`], for the
    /// fused inference layer.
    pub fn forward_rows(&self, xs: &[f32], epilogue: Option<&Epilogue<'_>>) -> Result<Vec<f32>> {
        self.rows_with(Input::Rows(xs), self.uses_amx(), epilogue)
    }

    pub(super) fn rows_with(
        &self,
        input: Input<'_>,
        tiles: bool,
        epilogue: Option<&Epilogue<'_>>,
    ) -> Result<Vec<f32>> {
        let k = self.k;
        let values = match input {
            Input::Rows(xs) | Input::Columns(xs, _) => xs.len(),
        };
        if k == 0 || !values.is_multiple_of(k) {
            return Err(Error::InvalidArgument(format!(
                "bf16 linear expects rows of {k} input features, got {values} values"
            )));
        }
        if !bf16_supported() {
            return Err(Error::InvalidArgument(
                "bf16 linear layers need AVX512_BF16 (use the f32 path)".into(),
            ));
        }
        if tiles && !self.uses_amx() {
            return Err(Error::InvalidArgument(
                "AMX tiles are not available for this layer (use the AVX512_BF16 kernel)".into(),
            ));
        }
        let m = match input {
            Input::Rows(xs) => xs.len() / k,
            Input::Columns(_, columns) => columns,
        };
        if m * k != values {
            return Err(Error::InvalidArgument(format!(
                "bf16 linear: {values} values are not {m} inputs of {k}"
            )));
        }
        // AMX works on whole 16-row tiles, two at a time: rows are padded to 32 with zeros
        // and the padding's output dropped.
        let (unit, m_pad) = if tiles {
            (amx::ROWS, m.div_ceil(amx::ROWS) * amx::ROWS)
        } else {
            (ROWS, m)
        };
        let n = self.n;
        let mut out: Vec<f32> = Vec::with_capacity(m_pad * n);
        let threads = candle_core::utils::get_num_threads().clamp(1, m_pad.div_ceil(unit).max(1));
        let rows_per = m_pad.div_ceil(threads).div_ceil(unit) * unit;
        // On the thread pool candle runs on (warm threads, no spawn per call).
        rayon::scope(|s| {
            let mut rest = &mut out.spare_capacity_mut()[..m_pad * n];
            let mut start = 0;
            while start < m_pad {
                let rows = rows_per.min(m_pad - start);
                let (chunk, tail) = rest.split_at_mut(rows * n);
                rest = tail;
                // The real rows of this chunk (the rest is padding).
                let real = rows.min(m.saturating_sub(start));
                s.spawn(move |_| {
                    let a = self.round_input(input, start, real, rows);
                    // Both kernels write every value of their rows (AMX stores whole tiles,
                    // the AVX512_BF16 kernel every column j < n of every row), so the
                    // chunk is initialised after `rows_into`; zeroed first all the same for
                    // the AVX512_BF16 kernel, which writes through a `&mut [f32]`.
                    if !tiles {
                        chunk.fill(std::mem::MaybeUninit::new(0.0));
                    }
                    self.rows_into(&a, rows, chunk, tiles);
                    if let Some(epilogue) = epilogue {
                        // SAFETY: `rows_into` wrote every value of the chunk.
                        epilogue(start, unsafe { assume_init(&mut chunk[..real * n]) });
                    }
                });
                start += rows;
            }
        });
        // SAFETY: the chunks cover `m_pad * n` values and every one was written above.
        unsafe { out.set_len(m_pad * n) };
        out.truncate(m * n);
        Ok(out)
    }

    /// Inputs `start..start + real` of `input` (f32) as rows of bf16 pairs, each padded to
    /// `k2`, then zero rows up to `rows`.
    fn round_input(&self, input: Input<'_>, start: usize, real: usize, rows: usize) -> Vec<u32> {
        let x = match input {
            Input::Rows(xs) => &xs[start * self.k..(start + real) * self.k],
            Input::Columns(src, columns) => {
                // Input r is column r of `src` (k rows of `columns`): two rows of `src` at a
                // time, each read contiguously over the inputs.
                let pairs = self.k2 / 2;
                let mut a = vec![0u32; rows * pairs];
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: rows_with checked AVX512_BF16 and that `src` holds k columns of
                    // `columns`; `start + real <= columns`; `a` has `rows >= real` rows of
                    // `pairs >= k / 2` pairs.
                    unsafe {
                        kernel::round_columns(src, columns, self.k, start, real, pairs, &mut a)
                    };
                    return a;
                }
                #[allow(unreachable_code)]
                for (q, two) in src.chunks(2 * columns).enumerate() {
                    let (lo, hi) = two.split_at(columns.min(two.len()));
                    for r in 0..real {
                        let l = to_bf16(lo[start + r]);
                        let h = hi.get(start + r).map_or(0, |v| to_bf16(*v));
                        a[r * pairs + q] = u32::from(l) | (u32::from(h) << 16);
                    }
                }
                return a;
            }
        };
        self.round_rows(x, rows)
    }

    /// The `x.len() / k` rows of `x` (f32) as bf16 pairs, each row padded to `k2`, and then
    /// zero rows up to `rows`.
    fn round_rows(&self, x: &[f32], rows: usize) -> Vec<u32> {
        let pairs = self.k2 / 2;
        let mut a = vec![0u32; rows * pairs];
        for (row, dst) in x.chunks_exact(self.k).zip(a.chunks_exact_mut(pairs)) {
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

    /// Whether [`Bf16Linear::forward`] runs on AMX tiles: the CPU and OS allow them and the
    /// shape is whole tiles (n a multiple of 32; MiniLM's 384, 1152 and 1536 are; k is
    /// padded).
    pub fn uses_amx(&self) -> bool {
        self.k2.is_multiple_of(32) && self.n.is_multiple_of(PANEL) && amx_supported()
    }

    /// `rows` rows of bf16 pairs `a` into `out` (`rows` x `n`), bias added; on AMX tiles
    /// when `tiles` (then `rows` is a multiple of [`amx::ROWS`]).
    fn rows_into(
        &self,
        a: &[u32],
        rows: usize,
        out: &mut [std::mem::MaybeUninit<f32>],
        tiles: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if tiles {
            // SAFETY: `tiles` comes from `uses_amx` (AMX-BF16 present, permission granted,
            // k2 and n whole tiles); `rows` is whole tiles; the kernel reads within `a`
            // (`rows` x k2/2 words) and the packed panels and writes the `rows` x n values
            // of `out`, every one of them (whole tiles).
            unsafe { amx::gemm(self, a, rows, out.as_mut_ptr().cast::<f32>()) };
        } else {
            // SAFETY: `forward_with` zeroed `out` before this call.
            let out = unsafe { assume_init(out) };
            // SAFETY: forward checked AVX512_BF16 + AVX512F; the kernel indexes within the
            // packed panels (zero-padded to whole panels and k-pairs) and the given slices.
            unsafe { kernel::gemm(self, a, rows, out) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, rows, out, tiles);
    }
}

/// Set by [`force_f32_training`]: training's products in f32 whatever the CPU and the
/// environment say.
static FORCE_F32_TRAINING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Makes (or stops making) [`train_bf16`] false for this process: for checks that compare
/// training against f32 references (PyTorch, candle's autograd, finite differences).
pub fn force_f32_training(on: bool) {
    FORCE_F32_TRAINING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether training runs its encoder's linear layers in bf16 on AMX tiles
/// ([`linear_train`], and the fused training layers' products): by default wherever the CPU
/// and OS offer AMX ([`amx_supported`]), as inference does: 1.4x the f32 examples/s and
/// 1.5-1.75x PyTorch's, with validation per-document F1 within the spread of f32 runs
/// (docs/results.md, "Speed"). `TTPMAP_TRAIN_PRECISION=fp32` keeps training in f32 (weights,
/// gradients and the optimiser are f32 either way); `=bf16` on a CPU without AMX warns and
/// trains in f32.
pub fn train_bf16() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| {
        let asked = std::env::var("TTPMAP_TRAIN_PRECISION")
            .ok()
            .map(|v| v.to_ascii_lowercase());
        match asked.as_deref() {
            Some("fp32" | "f32") => false,
            Some("bf16") if !amx_supported() => {
                tracing::warn!("TTPMAP_TRAIN_PRECISION=bf16 needs AMX tiles; training in f32");
                false
            }
            Some(other) if !other.is_empty() && other != "bf16" => {
                tracing::warn!(
                    "TTPMAP_TRAIN_PRECISION={other} is not a precision (fp32 or bf16); \
                     choosing by CPU"
                );
                amx_supported()
            }
            _ => amx_supported(),
        }
    });
    on && !FORCE_F32_TRAINING.load(std::sync::atomic::Ordering::Relaxed)
}

/// `x W^T` for training (`x` `[.., k]`, `w` `[n, k]`), differentiable, with bf16 products and
/// f32 sums forward and backward (mixed precision: the weights, their gradients and the
/// optimiser stay f32). On AMX tiles where `n` and `k` are multiples of 32 (every linear layer
/// of MiniLM), else candle's f32 matmul.
pub fn linear_train(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let fits = n.is_multiple_of(PANEL) && k.is_multiple_of(PANEL) && amx_supported();
    if !fits || x.dtype() != DType::F32 || !x.device().is_cpu() {
        return Ok(x.broadcast_matmul(&w.t()?)?);
    }
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, MatmulNt)?)
}

/// `a` `[.., k]` times `b` `[n, k]` transposed in bf16 on AMX tiles ([`linear_train`]); its
/// gradients are products of the same kind: `da = g b`, `db = g^T a`.
struct MatmulNt;

impl candle_core::CustomOp2 for MatmulNt {
    fn name(&self) -> &'static str {
        "bf16-matmul-nt"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let a = f32_input(self.name(), s1, l1)?;
        let b = f32_input(self.name(), s2, l2)?;
        let (n, k) = l2.shape().dims2()?;
        let mut dims = l1.shape().dims().to_vec();
        if dims.last() != Some(&k) {
            candle_core::bail!("bf16 matmul: {:?} times [{n}, {k}] transposed", dims);
        }
        let out = Bf16Linear::from_rows(b, n, k, vec![0.0; n])
            .and_then(|l| l.forward_rows(a, None))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        *dims.last_mut().unwrap() = n;
        Ok((candle_core::CpuStorage::F32(out), dims.into()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = b.dims2()?;
        let m = a.elem_count() / k.max(1);
        let (a, b, g) = (a.contiguous()?, b.contiguous()?, grad.contiguous()?);
        let err = |e: Error| candle_core::Error::Msg(e.to_string());
        let (da, db) = with_f32(self.name(), &a, |xs| {
            with_f32(self.name(), &b, |ws| {
                with_f32(self.name(), &g, |gs| {
                    // da = g b: b's transpose packed as the weights.
                    let da = Bf16Linear::from_columns(ws, n, k)
                        .and_then(|l| l.forward_rows(gs, None))
                        .map_err(err)?;
                    // db = g^T a: the inputs are g's columns, a's transpose the weights.
                    let db = Bf16Linear::from_columns(xs, m, k)
                        .and_then(|l| l.rows_with(Input::Columns(gs, n), l.uses_amx(), None))
                        .map_err(err)?;
                    Ok::<_, candle_core::Error>((da, db))
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(da, a.shape(), a.device())?),
            Some(Tensor::from_vec(db, (n, k), b.device())?),
        ))
    }
}

/// The order in which the AVX-512 kernels (bf16 here, int8 in [`super::int8`]) visit an
/// output of `rows` rows and `panels` weight panels: blocks of rows small enough for L2 (24
/// tiles); within a block, each panel is read once from L2 and reused by every tile of at most
/// `tile` rows. `f(panel, first_row, rows)` computes one tile.
pub(super) fn row_tiles(
    rows: usize,
    panels: usize,
    tile: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let block = tile * 24;
    let mut b0 = 0;
    while b0 < rows {
        let b1 = (b0 + block).min(rows);
        for p in 0..panels {
            let mut r = b0;
            while r < b1 {
                let take = (b1 - r).min(tile);
                f(p, r, take);
                r += take;
            }
        }
        b0 = b1;
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

    /// Sixteen values at `lo` and sixteen at `hi` as sixteen bf16 pairs (`lo` in the low
    /// half of each 32-bit lane), rounded to nearest even.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pairs16(lo: *const f32, hi: *const f32) -> __m512i {
        let l = _mm512_cvtneps_pbh(_mm512_loadu_ps(lo));
        let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(hi));
        let l = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(l));
        let h = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(h));
        _mm512_or_si512(l, _mm512_slli_epi32::<16>(h))
    }

    /// [`Bf16Linear::from_columns`]'s panel of the 32 outputs `j0..j0 + 32` (columns of
    /// `src`, `rows` x `cols`): every whole pair of inputs (rows `2q`, `2q + 1`).
    ///
    /// # Safety
    /// `j0 + 32 <= cols`, `src.len() == rows * cols`, `panel` holds `rows / 2` pairs of 32.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pack_columns(
        src: &[f32],
        rows: usize,
        cols: usize,
        j0: usize,
        panel: &mut [u32],
    ) {
        debug_assert!(j0 + PANEL <= cols && src.len() == rows * cols);
        debug_assert!(panel.len() >= rows / 2 * PANEL);
        for q in 0..rows / 2 {
            let lo = src.as_ptr().add(2 * q * cols + j0);
            let hi = lo.add(cols);
            for half in 0..2 {
                let v = pairs16(lo.add(16 * half), hi.add(16 * half));
                _mm512_storeu_si512(
                    panel.as_mut_ptr().add(q * PANEL + 16 * half) as *mut __m512i,
                    v,
                );
            }
        }
    }

    /// [`super::Input::Columns`] rounded: input `r` (of `real`, from column `start + r` of
    /// `src`, `k` rows of `columns`) as `pairs` bf16 pairs at `a[r * pairs..]`.
    ///
    /// # Safety
    /// `src.len() == k * columns`, `start + real <= columns`, `a.len() >= real * pairs`,
    /// `2 * pairs >= k`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_columns(
        src: &[f32],
        columns: usize,
        k: usize,
        start: usize,
        real: usize,
        pairs: usize,
        a: &mut [u32],
    ) {
        debug_assert!(src.len() == k * columns && start + real <= columns);
        debug_assert!(a.len() >= real * pairs && 2 * pairs >= k);
        let stride = _mm512_set1_epi32(pairs as i32);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let index = _mm512_mullo_epi32(lanes, stride);
        let whole = real / 16 * 16;
        // Blocks of 16 inputs, all their pairs: the 16 rows of `a` being written stay in
        // cache while `src` is read down its columns.
        for r in (0..whole).step_by(16) {
            for q in 0..k / 2 {
                let lo = src.as_ptr().add(2 * q * columns + start + r);
                let v = pairs16(lo, lo.add(columns));
                _mm512_i32scatter_epi32::<4>(a.as_mut_ptr().add(r * pairs + q) as *mut _, index, v);
            }
        }
        for q in 0..k.div_ceil(2) {
            let lo = src.as_ptr().add(2 * q * columns + start);
            if 2 * q + 1 < k {
                let hi = lo.add(columns);
                for r in whole..real {
                    a[r * pairs + q] =
                        u32::from(to_bf16(*lo.add(r))) | (u32::from(to_bf16(*hi.add(r))) << 16);
                }
            } else {
                for r in 0..real {
                    a[r * pairs + q] = u32::from(to_bf16(*lo.add(r)));
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm(l: &Bf16Linear, a: &[u32], rows: usize, out: &mut [f32]) {
        let pairs = l.k2 / 2;
        super::row_tiles(rows, l.n.div_ceil(PANEL), ROWS, |p, r, take| {
            let panel = l.packed.as_ptr().add(p * pairs * PANEL);
            match take {
                6 => tile::<6>(l, a, r, pairs, panel, p, out),
                5 => tile::<5>(l, a, r, pairs, panel, p, out),
                4 => tile::<4>(l, a, r, pairs, panel, p, out),
                3 => tile::<3>(l, a, r, pairs, panel, p, out),
                2 => tile::<2>(l, a, r, pairs, panel, p, out),
                _ => tile::<1>(l, a, r, pairs, panel, p, out),
            }
        });
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

/// The AMX kernel: 2x2 tiles of 16x16 f32 (a 32-row by 32-column block of the output) per
/// pass over k, 32 bf16 of k per `tdpbf16ps`. The weight panels of [`Bf16Linear`] are already
/// AMX's layout for the second operand (rows of k-pairs, 16 columns of 2 bf16 per row): a
/// panel's left and right halves are two tiles with a 128-byte row stride.
#[cfg(not(target_arch = "x86_64"))]
mod amx {
    pub(super) const ROWS: usize = 32;
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{Bf16Linear, PANEL};
    use std::arch::asm;

    /// Output rows per block (two tiles of 16).
    pub(super) const ROWS: usize = 32;
    /// Rows of the output computed against one weight panel before the next panel (64: the
    /// input rows stay in L1/L2 across the panels; 64-256 measured within 5% of each other).
    const BLOCK: usize = 2 * ROWS;

    /// The tile configuration (palette 1): tmm0-3 accumulators, tmm4-5 rows of the input,
    /// tmm6-7 the weight panel's halves; all 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn new() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t] = 64; // bytes per row (little-endian u16)
                c[48 + t] = 16; // rows
            }
            Config(c)
        }
    }

    /// `out` (`rows` x n, `rows` a multiple of [`ROWS`]) = `a` (`rows` x k2/2 bf16 pairs)
    /// times the packed weights plus the bias; every value of `out` is written.
    ///
    /// # Safety
    /// The CPU has AMX-BF16 and the process has the tile permission ([`super::amx_supported`]);
    /// `l.k2` is a multiple of 32 and `l.n` of 32; `a` holds `rows * k2/2` words and `out`
    /// points to `rows * n` writable values.
    pub(super) unsafe fn gemm(l: &Bf16Linear, a: &[u32], rows: usize, out: *mut f32) {
        let pairs = l.k2 / 2;
        let panels = l.n / PANEL;
        debug_assert!(
            rows.is_multiple_of(ROWS) && pairs.is_multiple_of(16) && l.n.is_multiple_of(PANEL)
        );
        debug_assert!(a.len() >= rows * pairs);
        let cfg = Config::new();
        let a_stride = pairs * 4;
        let c_stride = l.n * 4;
        let b_stride = PANEL * 4;
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let mut b0 = 0;
        while b0 < rows {
            let b1 = (b0 + BLOCK).min(rows);
            for p in 0..panels {
                let panel = l.packed.as_ptr().add(p * pairs * PANEL);
                let mut r = b0;
                while r < b1 {
                    // The accumulators start at the bias: its 16 values for each tile's
                    // columns, loaded into all 16 rows (row stride 0).
                    let bias = l.bias.as_ptr().add(p * PANEL);
                    asm!(
                        "tileloadd tmm0, [{b0} + {zero}*1]",
                        "tileloadd tmm1, [{b1} + {zero}*1]",
                        "tileloadd tmm2, [{b0} + {zero}*1]",
                        "tileloadd tmm3, [{b1} + {zero}*1]",
                        b0 = in(reg) bias,
                        b1 = in(reg) bias.add(16),
                        zero = in(reg) 0usize,
                        options(nostack, readonly)
                    );
                    let a0 = a.as_ptr().add(r * pairs);
                    let a1 = a.as_ptr().add((r + 16) * pairs);
                    let mut q = 0;
                    while q < pairs {
                        asm!(
                            "tileloadd tmm4, [{a0} + {sa}*1]",
                            "tileloadd tmm5, [{a1} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0.add(q),
                            a1 = in(reg) a1.add(q),
                            b0 = in(reg) panel.add(q * PANEL),
                            b1 = in(reg) panel.add(q * PANEL + 16),
                            sa = in(reg) a_stride,
                            sb = in(reg) b_stride,
                            options(nostack, readonly)
                        );
                        q += 16;
                    }
                    let c0 = out.add(r * l.n + p * PANEL);
                    let c1 = out.add((r + 16) * l.n + p * PANEL);
                    asm!(
                        "tilestored [{c0} + {sc}*1], tmm0",
                        "tilestored [{c0x} + {sc}*1], tmm1",
                        "tilestored [{c1} + {sc}*1], tmm2",
                        "tilestored [{c1x} + {sc}*1], tmm3",
                        c0 = in(reg) c0,
                        c0x = in(reg) c0.add(16),
                        c1 = in(reg) c1,
                        c1x = in(reg) c1.add(16),
                        sc = in(reg) c_stride,
                        options(nostack)
                    );
                    r += ROWS;
                }
            }
            b0 = b1;
        }
        asm!("tilerelease", options(nostack, nomem));
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
    fn bf16_training_product_has_the_f32_gradients_within_bf16_rounding() {
        if !bf16_supported() {
            eprintln!("SKIPPED: this CPU has no AVX512_BF16");
            return;
        }
        let dev = Device::Cpu;
        // [2, 20, 64] x [96, 64]^T: whole AMX tiles in n and k, rows not a multiple of 32;
        // [13, 48] x [70, 48]^T: k padded, n a partial panel (the AVX512_BF16 kernel).
        for (dims, n) in [(vec![2usize, 20, 64], 96usize), (vec![13, 48], 70)] {
            let k = *dims.last().unwrap();
            let m: usize = dims.iter().product::<usize>() / k;
            let wave = |len: usize, a: usize, b: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i * a % b) as f32 - b as f32 / 2.0) / b as f32)
                    .collect()
            };
            let x = candle_core::Var::from_vec(wave(m * k, 37, 101), dims.clone(), &dev).unwrap();
            let w = candle_core::Var::from_vec(wave(n * k, 53, 97), (n, k), &dev).unwrap();
            let mut out_dims = dims.clone();
            *out_dims.last_mut().unwrap() = n;
            let r = Tensor::from_vec(wave(m * n, 29, 89), out_dims, &dev).unwrap();
            let grads = |bf16: bool| {
                let y = if bf16 {
                    x.as_tensor().apply_op2(w.as_tensor(), MatmulNt).unwrap()
                } else {
                    x.as_tensor()
                        .broadcast_matmul(&w.as_tensor().t().unwrap())
                        .unwrap()
                };
                let loss = (y.clone() * &r).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (
                    flat(&y),
                    flat(g.get(x.as_tensor()).unwrap()),
                    flat(g.get(w.as_tensor()).unwrap()),
                )
            };
            let (want, got) = (grads(false), grads(true));
            for (what, a, b) in [
                ("y", &got.0, &want.0),
                ("dx", &got.1, &want.1),
                ("dw", &got.2, &want.2),
            ] {
                assert_eq!(a.len(), b.len(), "{what}");
                let scale = b.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                // Two bf16 roundings (2^-9 relative each) over the summed products.
                assert!(
                    worst / scale < 1e-2,
                    "{dims:?} x {n}: {what} off by {worst} of {scale}"
                );
                assert!(
                    worst > 0.0,
                    "{what}: bf16 products should differ from f32 somewhere"
                );
            }
        }
    }

    /// The vectorised packing of a transpose and rounding of columns give the scalar
    /// definition's bits (odd and whole numbers of rows, columns past whole panels).
    #[test]
    fn transposed_packing_and_rounding_match_the_scalar_definition() {
        if !bf16_supported() {
            return;
        }
        for (rows, cols) in [(37, 70), (64, 96), (5, 33)] {
            let src: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 1009) as f32 / 97.0 - 5.0 + 1e-3 * i as f32)
                .collect();
            let fast = Bf16Linear::from_columns(&src, rows, cols).unwrap();
            let slow = Bf16Linear::pack(cols, rows, vec![0.0; cols], |j, t| src[t * cols + j]);
            assert_eq!(fast.packed, slow.packed, "{rows} x {cols} packing");
            // Inputs = columns of `src`: a layer of k = rows inputs.
            let l = Bf16Linear::from_rows(&vec![0.5; 32 * rows], 32, rows, vec![0.0; 32]).unwrap();
            let pairs = l.k2 / 2;
            for (start, real, padded) in [(0, cols, cols), (3, cols - 3, cols + 5)] {
                let got = l.round_input(Input::Columns(&src, cols), start, real, padded);
                let mut want = vec![0u32; padded * pairs];
                for r in 0..real {
                    for q in 0..rows.div_ceil(2) {
                        let lo = to_bf16(src[2 * q * cols + start + r]);
                        let hi = if 2 * q + 1 < rows {
                            to_bf16(src[(2 * q + 1) * cols + start + r])
                        } else {
                            0
                        };
                        want[r * pairs + q] = u32::from(lo) | (u32::from(hi) << 16);
                    }
                }
                assert_eq!(got, want, "{rows} x {cols} columns from {start}");
            }
        }
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
        // (45, 64, 96) and (64, 384, 384) are whole AMX tiles in k and n, with a partial row block.
        for (m, n, k) in [(13, 70, 33), (1, 32, 2), (45, 64, 96), (64, 384, 384)] {
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
            // An epilogue sees every real output once (padding rows aside): a map in place.
            let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
            let shifted = lin
                .forward_then(&xt, &|row0: usize, v: &mut [f32]| {
                    assert_eq!(v.len() % n, 0);
                    assert!(row0 * n + v.len() <= m * n, "an epilogue saw padding rows");
                    v.iter_mut().for_each(|y| *y = 2.0 * *y + 1.0)
                })
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .concat();
            assert_eq!(shifted.len(), y.len());
            for (a, b) in shifted.iter().zip(&y) {
                assert_eq!(*a, 2.0 * b + 1.0, "{m}x{n}x{k}");
            }
            if lin.uses_amx() {
                // The same roundings on the AVX512_BF16 kernel: only the order of the f32
                // sums differs.
                let x = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
                let fallback = lin
                    .forward_with(&x, false, None)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                let diff = y
                    .iter()
                    .zip(fallback.concat())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    diff / scale < 1e-5,
                    "{m}x{n}x{k}: AMX vs AVX512_BF16 {diff}"
                );
            } else {
                eprintln!("{m}x{n}x{k}: AVX512_BF16 kernel (no AMX tiles here or partial tiles)");
            }
        }
    }
}
