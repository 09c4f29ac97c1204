//! Throughput of one bf16 linear layer (`Bf16Linear`: AMX tiles where the CPU has them, else
//! the AVX512_BF16 kernel), one int8 layer (`Int8Linear`, AVX512_VNNI) and candle's f32
//! matmul at MiniLM's shapes for a batch of 32 sentences of 40 tokens:
//! `cargo run --release -p ttpmap-ml --features x86-v4 --example bench_linear`
//! (`RAYON_NUM_THREADS` sets the threads). Random weights and inputs (the speed does not depend
//! on the values); prints ms per call and GFLOP/s (2 m k n per call, activation rounding
//! included). Each output is dropped before the next call, as in the encoder.

use candle_core::{Device, Tensor};
use ttpmap_ml::encoder::bf16::{amx_supported, bf16_supported, Bf16Linear};
use ttpmap_ml::encoder::int8::{int8_supported, Int8Linear};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Times `call` (50 calls after 3 warm-ups) and checks its last output is full and finite.
fn time(
    what: &str,
    m: usize,
    k: usize,
    n: usize,
    call: impl Fn() -> BoxResult<Tensor>,
) -> BoxResult<()> {
    for _ in 0..3 {
        call()?;
    }
    let calls = 50;
    let start = std::time::Instant::now();
    let mut last = None;
    for _ in 0..calls {
        // Each output dropped before the next is made, as in the encoder.
        last = Some(call()?);
    }
    let s = start.elapsed().as_secs_f64() / f64::from(calls);
    // The work was done: the full, finite, non-zero output.
    let y = last.ok_or("no call ran")?;
    assert_eq!(y.dims(), [m, n]);
    let checksum = y.abs()?.sum_all()?.to_scalar::<f32>()?;
    assert!(
        checksum.is_finite() && checksum > 0.0,
        "checksum {checksum}"
    );
    println!(
        "{what:>12} {m}x{k} by {k}x{n}: {:.3} ms/call, {:.0} GFLOP/s",
        s * 1e3,
        2.0 * (m * k * n) as f64 / s / 1e9
    );
    Ok(())
}

fn main() -> BoxResult<()> {
    if !bf16_supported() {
        return Err("this CPU has no AVX512_BF16: no bf16 linear layer to measure".into());
    }
    println!("AMX tiles: {}", amx_supported());
    let dev = Device::Cpu;
    // (rows, inputs, outputs): fused qkv, intermediate, output.
    for (m, k, n) in [
        (1280usize, 384usize, 1152usize),
        (1280, 384, 1536),
        (1280, 1536, 384),
    ] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let layer = Bf16Linear::new(&w, None)?;
        time("bf16", m, k, n, || Ok(layer.forward(&x)?))?;
        if int8_supported() {
            let wv = w.flatten_all()?.to_vec1::<f32>()?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let layer = Int8Linear::from_rows(&wv, n, k, vec![0.0; n])?;
            time("int8", m, k, n, || {
                Ok(Tensor::from_vec(
                    layer.forward_rows(&xv, None)?,
                    (m, n),
                    &dev,
                )?)
            })?;
        }
        let wt = w.t()?.contiguous()?;
        time("f32 (candle)", m, k, n, || Ok(x.matmul(&wt)?))?;
    }
    Ok(())
}
