//! The reduced-precision inference layer in one piece, over packed tokens and plain vectors:
//! bf16 products ([`super::bf16`], AMX tiles) or int8 products ([`super::int8`], AVX512_VNNI).
//!
//! With bf16 weights ([`super::bf16`]), candle is no longer where the time goes in its matmuls
//! but around them: every residual add, layer norm, head split and the attention's small
//! batched products is an operation of its own, with a new tensor, a pass over memory and a
//! hand-off to the thread pool (about 70% of a length-sorted batch on AMX tiles). Here a
//! BERT layer is five passes over the packed tokens of a batch (`[tokens, hidden]`, sequences
//! one after another, no padding anywhere):
//! 1. the fused query/key/value projection;
//! 2. attention, one task per sequence, every head in L1 (scores, [`softmax_row`], context);
//! 3. the attention output projection, whose epilogue adds the residual and layer-normalises
//!    each row while the worker still holds it;
//! 4. the intermediate projection with GELU as its epilogue;
//! 5. the output projection, residual and layer norm again in the epilogue.
//!
//! Invariants: the query weights arrive pre-scaled by `1/sqrt(head_dim)` (as for every
//! inference path); every sequence has at least one token; the result equals the reference
//! layer ([`super::bert`]'s `Layer::forward` in bf16) up to f32 summation order, which the
//! tests check. The embeddings of the real tokens are computed straight into the packed rows
//! ([`embed_packed`]). Element-wise loops run through [`wide_simd`], so they are the same
//! operations on every SIMD level; attention is AVX-512 intrinsics ([`simd`]), which every CPU
//! that runs bf16 has.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::bert::{gelu_erf_f32, softmax_row, wide_simd, ChunkKernel, Map};
use super::bf16::{Bf16Linear, Epilogue};
use super::int8::Int8Linear;
use crate::{Error, Result};

/// A layer norm's weight, bias and epsilon as plain values.
#[derive(Debug, Clone)]
pub(super) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(super) fn new(weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Self> {
        let weight = weight.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if weight.len() != bias.len() || weight.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "layer norm with {} weights and {} biases",
                weight.len(),
                bias.len()
            )));
        }
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }
}

/// A linear layer of the fused inference layer: bf16 products ([`Bf16Linear`], on AMX tiles
/// where the CPU has them) or int8 products ([`Int8Linear`], AVX512_VNNI).
#[derive(Debug, Clone)]
pub(super) enum Products {
    Bf16(Bf16Linear),
    Int8(Int8Linear),
}

impl Products {
    pub(super) fn out_dim(&self) -> usize {
        match self {
            Products::Bf16(l) => l.out_dim(),
            Products::Int8(l) => l.out_dim(),
        }
    }

    /// Rows of inputs `xs` to rows of outputs, `epilogue` on each worker's rows.
    pub(super) fn forward_rows(
        &self,
        xs: &[f32],
        epilogue: Option<&Epilogue<'_>>,
    ) -> Result<Vec<f32>> {
        match self {
            Products::Bf16(l) => l.forward_rows(xs, epilogue),
            Products::Int8(l) => l.forward_rows(xs, epilogue),
        }
    }

    /// `x` `[.., k]` -> `[.., n]` (f32), `epilogue` on each worker's rows.
    pub(super) fn forward_then(
        &self,
        x: &Tensor,
        epilogue: Option<&Epilogue<'_>>,
    ) -> Result<Tensor> {
        if let (Products::Bf16(l), None) = (self, epilogue) {
            return l.forward(x);
        }
        let mut dims = x.dims().to_vec();
        let x = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let y = self.forward_rows(&x, epilogue)?;
        if let Some(last) = dims.last_mut() {
            *last = self.out_dim();
        }
        Ok(Tensor::from_vec(y, dims, &candle_core::Device::Cpu)?)
    }
}

/// One encoder layer's inference weights in reduced precision: the fused query/key/value,
/// attention output, intermediate and output projections, and the two layer norms.
#[derive(Debug, Clone)]
pub(super) struct FusedLayer {
    pub(super) lin: [Products; 4],
    attn_norm: Norm,
    out_norm: Norm,
    heads: usize,
    /// Exact (erf) GELU, the only activation the fused layer runs; other activations keep
    /// the reference path.
    gelu: bool,
}

impl FusedLayer {
    pub(super) fn new(
        lin: [Products; 4],
        attn_norm: Norm,
        out_norm: Norm,
        heads: usize,
        gelu: bool,
    ) -> Result<Self> {
        let h = attn_norm.weight.len();
        let dims = [
            (&lin[0], 3 * h),
            (&lin[1], h),
            (&lin[2], lin[2].out_dim()),
            (&lin[3], h),
        ];
        if heads == 0 || !h.is_multiple_of(heads) || out_norm.weight.len() != h {
            return Err(Error::InvalidArgument(format!(
                "fused layer: hidden size {h} over {heads} heads"
            )));
        }
        if dims.iter().any(|(l, n)| l.out_dim() != *n) {
            return Err(Error::InvalidArgument(
                "fused layer: projections do not match the hidden size".into(),
            ));
        }
        Ok(Self {
            lin,
            attn_norm,
            out_norm,
            heads,
            gelu,
        })
    }

    /// Whether [`FusedLayer::forward`] can run this layer.
    pub(super) fn fusable(&self) -> bool {
        self.gelu
    }

    /// The layer on packed tokens `x` (`[tokens, hidden]`; sequence `i` is the next
    /// `lengths[i]` rows), returning the same shape.
    pub(super) fn forward(&self, x: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        let h = self.attn_norm.weight.len();
        if !self.gelu || lengths.contains(&0) || lengths.iter().sum::<usize>() * h != x.len() {
            return Err(Error::InvalidArgument(format!(
                "fused layer: {} values for sequences of {lengths:?} tokens of {h}",
                x.len()
            )));
        }
        let qkv = self.lin[0].forward_rows(x, None)?;
        let ctx = self.attention(&qkv, lengths, h);
        let x1 = self.lin[1].forward_rows(&ctx, Some(&residual_norm(&self.attn_norm, x)))?;
        let gelu = |_row0: usize, rows: &mut [f32]| gelu_in_place(rows);
        let inter = self.lin[2].forward_rows(&x1, Some(&gelu))?;
        let out = self.lin[3].forward_rows(&inter, Some(&residual_norm(&self.out_norm, &x1)))?;
        Ok(out)
    }

    /// Multi-head attention of each sequence over its own tokens: `qkv` is `[tokens, 3h]`
    /// (query, key, value; the query pre-scaled), the result `[tokens, h]`.
    fn attention(&self, qkv: &[f32], lengths: &[usize], h: usize) -> Vec<f32> {
        let mut ctx = vec![0f32; qkv.len() / 3];
        let mut tasks = Vec::with_capacity(lengths.len());
        let (mut dst, mut src) = (ctx.as_mut_slice(), qkv);
        for &len in lengths {
            let (d, rest) = dst.split_at_mut(len * h);
            let (s, rest_src) = src.split_at(len * 3 * h);
            tasks.push((d, s));
            (dst, src) = (rest, rest_src);
        }
        let heads = self.heads;
        tasks
            .into_par_iter()
            .for_each(|(dst, src)| attend(dst, src, heads, h));
        ctx
    }
}

/// An embedding model's tables as plain rows of `hidden` values.
pub(super) struct Tables<'a> {
    pub(super) words: &'a [f32],
    pub(super) kinds: &'a [f32],
    pub(super) positions: &'a [f32],
}

/// The embeddings of the first `lengths[i]` tokens of each row of `ids` / `types`, packed:
/// `(word + token type) + position`, then layer norm, per token. An id past its table is an
/// error.
pub(super) fn embed_packed(
    tables: Tables<'_>,
    norm: &Norm,
    ids: &[Vec<u32>],
    types: &[Vec<u32>],
    lengths: &[usize],
) -> Result<Vec<f32>> {
    let h = norm.weight.len();
    let total: usize = lengths.iter().sum();
    let mut out = vec![0f32; total * h];
    let mut rows = out.as_mut_slice();
    for ((ids, types), &len) in ids.iter().zip(types).zip(lengths) {
        let (seq, rest) = rows.split_at_mut(len * h);
        rows = rest;
        for (t, row) in seq.chunks_exact_mut(h).enumerate() {
            let word = lookup(tables.words, h, ids[t], "token")?;
            let kind = lookup(tables.kinds, h, types[t], "token type")?;
            for ((y, &w), &k) in row.iter_mut().zip(word).zip(kind) {
                *y = w + k;
            }
        }
        // The positions 0..len are one contiguous block of the table: added as the
        // "residual" of the layer norm's kernel.
        wide_simd(&ResidualNorm(norm), seq, &tables.positions[..len * h]);
    }
    Ok(out)
}

/// Row `id` of `table` (rows of `h`), or an error naming `what` when there is none.
fn lookup<'t>(table: &'t [f32], h: usize, id: u32, what: &str) -> Result<&'t [f32]> {
    table
        .get(id as usize * h..(id as usize + 1) * h)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what} id {id} is outside the embedding table ({} rows)",
                table.len() / h
            ))
        })
}

/// The epilogue that adds `residual`'s rows to the output's and layer-normalises them.
fn residual_norm<'a>(
    norm: &'a Norm,
    residual: &'a [f32],
) -> impl Fn(usize, &mut [f32]) + Sync + 'a {
    let h = norm.weight.len();
    move |row0, rows| {
        let res = &residual[row0 * h..row0 * h + rows.len()];
        wide_simd(&ResidualNorm(norm), rows, res)
    }
}

/// [`gelu_erf_f32`] over `v` in place, on the widest SIMD path (through a small buffer: the
/// kernels read one slice and write another).
pub(super) fn gelu_in_place(v: &mut [f32]) {
    const BLOCK: usize = 256;
    let gelu = Map(gelu_erf_f32);
    let mut tmp = [0f32; BLOCK];
    for block in v.chunks_mut(BLOCK) {
        let src = &mut tmp[..block.len()];
        src.copy_from_slice(block);
        wide_simd(&gelu, block, src);
    }
}

/// Lanes of the row sums (independent partial sums, so that they vectorise).
const LANES: usize = 16;

/// The sum of `f(v)` over `v`, in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (s, &x) in lanes.iter_mut().zip(c) {
            *s += f(x);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&x| f(x)).sum::<f32>()
}

/// `dst` row += `src` row, then layer norm of the row (mean, then the variance around it).
struct ResidualNorm<'a>(&'a Norm);

impl ChunkKernel for ResidualNorm<'_> {
    #[inline(always)]
    fn run(&self, dst: &mut [f32], src: &[f32]) {
        let Norm { weight, bias, eps } = self.0;
        let h = weight.len();
        for (row, res) in dst.chunks_exact_mut(h).zip(src.chunks_exact(h)) {
            for (y, &r) in row.iter_mut().zip(res) {
                *y += r;
            }
            let mean = lane_sum(row, |x| x) / h as f32;
            let var = lane_sum(row, |x| (x - mean) * (x - mean)) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((y, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
                *y = (*y - mean) * inv * w + b;
            }
        }
    }
}

/// Attention of one sequence: `src` its `[len, 3h]` query/key/value rows, `dst` its
/// `[len, h]` context rows. Per head, the keys are transposed once (`[head_dim, len]`, `len`
/// padded to whole vectors) and the values copied into rows of whole vectors, so that the
/// kernels of [`simd`] keep [`QUERIES`] queries' sums in registers and load each key and
/// value vector once for all of them.
fn attend(dst: &mut [f32], src: &[f32], heads: usize, h: usize) {
    let hd = h / heads;
    let len = src.len() / (3 * h);
    let lenp = len.div_ceil(LANES) * LANES;
    let hdp = hd.div_ceil(LANES) * LANES;
    let mut kt = vec![0f32; hd * lenp];
    let mut v = vec![0f32; len * hdp];
    let mut scores = vec![0f32; QUERIES * lenp];
    let mut probs = vec![0f32; QUERIES * lenp];
    for head in 0..heads {
        let (q0, k0, v0) = (head * hd, h + head * hd, 2 * h + head * hd);
        for t in 0..len {
            let row = &src[t * 3 * h..][..3 * h];
            for (d, &k) in row[k0..k0 + hd].iter().enumerate() {
                kt[d * lenp + t] = k;
            }
            v[t * hdp..t * hdp + hd].copy_from_slice(&row[v0..v0 + hd]);
        }
        let mut i = 0;
        while i < len {
            let take = (len - i).min(QUERIES);
            let block = Block {
                kt: &kt,
                v: &v,
                len,
                lenp,
                hd,
                hdp,
                queries: &src[i * 3 * h + q0..],
                query_stride: 3 * h,
            };
            let out = &mut dst[i * h + q0..];
            // SAFETY: the fused layer runs only where the CPU has AVX-512
            // (`bf16_supported`); the kernels stay within the slices (asserted inside).
            unsafe {
                match take {
                    8 => simd::block::<8>(&block, &mut scores, &mut probs, out, h),
                    7 => simd::block::<7>(&block, &mut scores, &mut probs, out, h),
                    6 => simd::block::<6>(&block, &mut scores, &mut probs, out, h),
                    5 => simd::block::<5>(&block, &mut scores, &mut probs, out, h),
                    4 => simd::block::<4>(&block, &mut scores, &mut probs, out, h),
                    3 => simd::block::<3>(&block, &mut scores, &mut probs, out, h),
                    2 => simd::block::<2>(&block, &mut scores, &mut probs, out, h),
                    _ => simd::block::<1>(&block, &mut scores, &mut probs, out, h),
                }
            }
            i += take;
        }
    }
}

/// Queries whose scores and context are computed together (sharing each key and value load).
const QUERIES: usize = 8;

/// One head's keys and values and the queries of a block, for [`simd::block`].
struct Block<'a> {
    /// Keys transposed, `[hd, lenp]`, zero past `len`.
    kt: &'a [f32],
    /// Values, `[len, hdp]`, zero past `hd`.
    v: &'a [f32],
    len: usize,
    lenp: usize,
    hd: usize,
    hdp: usize,
    /// The block's first query (its `hd` values), the next ones `query_stride` further.
    queries: &'a [f32],
    query_stride: usize,
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{softmax_row, Block, LANES};
    use std::arch::x86_64::*;

    /// `R` queries of `b`: their scores over the `lenp` keys (the `hd` products summed in
    /// order, fused multiply-adds), [`softmax_row`] over the `len` real ones, and the context,
    /// `hd` values written at the start of each of `R` rows of `out` (rows of `h`).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block<const R: usize>(
        b: &Block,
        scores: &mut [f32],
        probs: &mut [f32],
        out: &mut [f32],
        h: usize,
    ) {
        let Block {
            kt,
            v,
            len,
            lenp,
            hd,
            hdp,
            queries,
            query_stride,
        } = *b;
        assert!(R <= super::QUERIES && lenp.is_multiple_of(LANES) && hdp.is_multiple_of(LANES));
        assert!(kt.len() >= hd * lenp && v.len() >= len * hdp && scores.len() >= R * lenp);
        assert!(probs.len() >= R * lenp && queries.len() >= (R - 1) * query_stride + hd);
        assert!(out.len() >= (R - 1) * h + hd);
        let q = queries.as_ptr();
        let mut tb = 0;
        while tb < lenp {
            let mut acc = [_mm512_setzero_ps(); R];
            for d in 0..hd {
                let k = _mm512_loadu_ps(kt.as_ptr().add(d * lenp + tb));
                for (r, a) in acc.iter_mut().enumerate() {
                    let qd = _mm512_set1_ps(*q.add(r * query_stride + d));
                    *a = _mm512_fmadd_ps(qd, k, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(scores.as_mut_ptr().add(r * lenp + tb), *a);
            }
            tb += LANES;
        }
        for r in 0..R {
            softmax_row(&scores[r * lenp..][..len], &mut probs[r * lenp..][..len]);
        }
        let mut db = 0;
        while db < hdp {
            let mut acc = [_mm512_setzero_ps(); R];
            for t in 0..len {
                let vv = _mm512_loadu_ps(v.as_ptr().add(t * hdp + db));
                for (r, a) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(*probs.as_ptr().add(r * lenp + t));
                    *a = _mm512_fmadd_ps(p, vv, *a);
                }
            }
            let width = LANES.min(hd - db);
            let mask: __mmask16 = if width == LANES { !0 } else { (1 << width) - 1 };
            for (r, a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(r * h + db), mask, *a);
            }
            db += LANES;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::Block;

    /// Never called: the fused layer runs only where bf16 does (x86-64 with AVX-512).
    pub(super) unsafe fn block<const R: usize>(
        _: &Block,
        _: &mut [f32],
        _: &mut [f32],
        _: &mut [f32],
        _: usize,
    ) {
        unreachable!("the fused layer needs AVX-512")
    }
}
