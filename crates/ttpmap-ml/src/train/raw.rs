//! Raw f32 access to tensors for the optimizer and the weight averages: a borrowed slice of a
//! contiguous CPU f32 tensor (no copy), a copied `Vec<f32>` on other devices or layouts.

use candle_core::{DType, Storage, Tensor};

use crate::{Error, Result};

/// Calls `f` with the values of `t` (row-major, `t.elem_count()` of them). Borrowed from the CPU
/// storage when possible, so `f` must not write to `t`'s storage (e.g. `Var::set` on it).
pub(crate) fn with_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() != DType::F32 {
        return Err(Error::InvalidArgument(format!(
            "{what}: expected an f32 tensor, found {:?}",
            t.dtype()
        )));
    }
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let all = cpu.as_slice::<f32>()?;
            return Ok(f(&all[start..end]));
        }
    }
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(f(&v))
}

/// A tensor of `t`'s shape and device holding `values` (moved, not copied, on the CPU).
pub(crate) fn tensor_like(t: &Tensor, values: Vec<f32>) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, t.shape(), t.device())?)
}
