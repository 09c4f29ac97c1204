//! Training throughput of the label-attention classifier on all-MiniLM-L6-v2: examples/s of
//! full steps (forward, ASL loss, backward, clipping, fused AdamW with LLRD, EMA) at batch 16,
//! with trainable and with frozen word embeddings.
//!
//! `cargo run -p ttpmap-ml --example bench_train -- [MODEL_DIR] [STEPS] [TOKENS]`
//! (defaults: ../shared/models/all-MiniLM-L6-v2, 8 steps after 2 warm-up steps, 64 tokens).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use ttpmap_ml::classifier::TrainableClassifier;
use ttpmap_ml::encoder::bert::Mode;
use ttpmap_ml::head::{HeadConfig, HeadInit};
use ttpmap_ml::train::{
    clip_grad_norm, llrd_groups, AdamWConfig, Ema, FusedAdamW, LlrdConfig, LossConfig,
};
use ttpmap_ml::ModelDir;

const LABELS: usize = 50;
const BATCH: usize = 16;

fn main() -> ttpmap_ml::Result<()> {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1") };
    }
    // As `ttpmap` itself does (main.rs): keep freed buffers instead of re-faulting them.
    // SAFETY: mallopt only changes glibc allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/all-MiniLM-L6-v2")
    });
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let tokens: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let md = ModelDir::open(&model)?;
    let tok = md.tokenizer(tokens)?;
    // Sentences long enough to fill `tokens` after truncation.
    let base = "The actor used PowerShell to download a second-stage payload from a remote server and created a scheduled task for persistence while dumping credentials from LSASS memory";
    let texts: Vec<String> = (0..BATCH).map(|i| format!("{i} {base} {base}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tok.batch(&refs, &Device::Cpu)?;
    let targets = Tensor::from_vec(
        (0..BATCH * LABELS)
            .map(|i| if i % 17 == 0 { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (BATCH, LABELS),
        &Device::Cpu,
    )?;
    println!(
        "MiniLM training throughput, batch {BATCH} x {} tokens, {LABELS} labels, {steps} timed steps",
        batch.input_ids.dims()[1]
    );
    for freeze in [false, true] {
        let tc = TrainableClassifier::new(
            md.config(),
            &HeadConfig::new(LABELS, md.config().hidden_size),
            Some(&md),
            1,
            &HeadInit {
                seed: 1,
                queries: None,
            },
        )?;
        let named = tc.named_vars()?;
        let llrd = LlrdConfig {
            freeze_word_embeddings: freeze,
            ..Default::default()
        };
        let (groups, params) = llrd_groups(&named, md.config().num_hidden_layers, &llrd)?;
        let vars: Vec<Var> = params.iter().map(|p| p.var.clone()).collect();
        let mut opt = FusedAdamW::new(params, groups, AdamWConfig::default())?;
        let mut ema = Ema::new(&vars, 0.999)?;
        let loss_cfg = LossConfig::default();
        let step = |opt: &mut FusedAdamW, ema: &mut Ema| -> ttpmap_ml::Result<()> {
            let logits = tc.network().forward(&batch, Mode::Train)?;
            let loss = loss_cfg.compute(&logits, &targets)?;
            let mut grads = ttpmap_ml::encoder::backward(&loss)?;
            clip_grad_norm(&mut grads, &vars, 1.0)?;
            opt.step(&grads, 1.0)?;
            ema.update(&vars)
        };
        for _ in 0..2 {
            step(&mut opt, &mut ema)?;
        }
        let t = Instant::now();
        for _ in 0..steps {
            step(&mut opt, &mut ema)?;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "word embeddings {}: {:.3} s/step, {:.1} examples/s",
            if freeze { "frozen   " } else { "trainable" },
            s / steps as f64,
            (steps * BATCH) as f64 / s
        );
    }
    Ok(())
}
