//! Times one `FusedAdamW` step (and one `clip_grad_norm`) over MiniLM-L6-sized parameters
//! (22.7M f32 values in the shapes of all-MiniLM-L6-v2) on the CPU and prints ms per step.
//!
//! The workspace crates build unoptimised in the dev profile, so time with
//! `CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo run -p ttpmap-ml --example bench_optim` (that rebuilds
//! only the workspace crates) or in a release build. Optional argument: number of steps (default 10).

use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use ttpmap_ml::train::{clip_grad_norm, llrd_groups, AdamWConfig, FusedAdamW, LlrdConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let (h, ff, vocab, layers) = (384usize, 1536usize, 30522usize, 6usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "encoder.embeddings.word_embeddings.weight".into(),
            vec![vocab, h],
        ),
        (
            "encoder.embeddings.position_embeddings.weight".into(),
            vec![512, h],
        ),
        (
            "encoder.embeddings.token_type_embeddings.weight".into(),
            vec![2, h],
        ),
        ("encoder.embeddings.LayerNorm.weight".into(), vec![h]),
        ("encoder.embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for i in 0..layers {
        let p = format!("encoder.encoder.layer.{i}");
        for (n, s) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![ff, h]),
            ("intermediate.dense.bias", vec![ff]),
            ("output.dense.weight", vec![h, ff]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            shapes.push((format!("{p}.{n}"), s));
        }
    }
    let dev = Device::Cpu;
    let mut named = Vec::with_capacity(shapes.len());
    let mut grads = GradStore::default();
    let mut total = 0usize;
    for (name, shape) in shapes {
        let var = Var::from_tensor(&Tensor::randn(0f32, 0.02, shape.as_slice(), &dev)?)?;
        grads.insert(
            var.as_tensor(),
            Tensor::randn(0f32, 1e-3, shape.as_slice(), &dev)?,
        );
        total += var.elem_count();
        named.push((name, var));
    }
    let (groups, params) = llrd_groups(&named, layers, &LlrdConfig::default())?;
    let vars: Vec<Var> = params.iter().map(|p| p.var.clone()).collect();
    let mut opt = FusedAdamW::new(params, groups, AdamWConfig::default())?;
    let before: f32 = named[0].1.as_tensor().flatten_all()?.get(0)?.to_scalar()?;

    opt.step(&grads, 1.0)?; // warm-up: first touch of the moment buffers
    let t0 = Instant::now();
    for _ in 0..steps {
        opt.step(&grads, 1.0)?;
    }
    let adamw_ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let t0 = Instant::now();
    let mut norm = 0.0;
    for _ in 0..steps {
        norm = clip_grad_norm(&mut grads, &vars, 1e9)?;
    }
    let clip_ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;

    // Check that the work was done: parameters moved, every step counted.
    let after: f32 = named[0].1.as_tensor().flatten_all()?.get(0)?.to_scalar()?;
    assert_ne!(before, after, "parameters did not change");
    assert_eq!(opt.steps(), steps as u64 + 1);
    assert_eq!(named[0].1.dtype(), DType::F32);
    println!(
        "{total} params in {} tensors: FusedAdamW {adamw_ms:.1} ms/step, clip_grad_norm {clip_ms:.1} ms (norm {norm:.3}), {steps} steps, one thread",
        named.len()
    );
    Ok(())
}
