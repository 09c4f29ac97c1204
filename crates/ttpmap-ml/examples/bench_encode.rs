//! Benchmark of sentence embedding on CPU: encodes the first N TRAM2 test sentences with
//! all-MiniLM-L6-v2, in the given order and sorted by length, and prints sentences/s, mean
//! tokens per sentence and peak RSS. It asserts that every sentence got a finite, unit-norm
//! vector. Not a timed test.
//!
//! `cargo run --release -p ttpmap-ml --example bench_encode -- [--sentences 2000] [--batch 32]
//! [--threads 2] [--order both|given|sorted] [--shared DIR]`

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use ttpmap_ml::{Embedder, EmbedderConfig};

type BoxResult<T> = Result<T, Box<dyn StdError>>;

struct Args {
    sentences: usize,
    batch: usize,
    threads: usize,
    /// Which orders to run: `both`, `given` or `sorted`.
    order: String,
    shared: PathBuf,
}

fn parse_args() -> BoxResult<Args> {
    let mut args = Args {
        sentences: 2000,
        batch: 32,
        threads: 2,
        order: "both".to_string(),
        shared: std::env::var_os("TTPMAP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sentences" => args.sentences = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--threads" => args.threads = value.parse()?,
            "--shared" => args.shared = PathBuf::from(value),
            "--order" if ["both", "given", "sorted"].contains(&value.as_str()) => {
                args.order = value
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// The first `n` sentences of a TRAM2 column-format file (`{"sentence": {"0": ...}}`).
fn tram2_sentences(path: &Path, n: usize) -> BoxResult<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let column = value
        .get("sentence")
        .and_then(|v| v.as_object())
        .ok_or_else(|| format!("{}: no \"sentence\" column", path.display()))?;
    let mut rows: Vec<(usize, String)> = column
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
        .collect();
    rows.sort_by_key(|(k, _)| *k);
    Ok(rows.into_iter().take(n).map(|(_, s)| s).collect())
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> BoxResult<()> {
    let args = parse_args()?;
    // Before the first tensor operation: see shared/docs/CANDLE_NOTES.md ("CPU speed").
    std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1");
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    // SAFETY: mallopt only changes glibc allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }

    let model = args.shared.join("models/all-MiniLM-L6-v2");
    let data = args.shared.join("data/tram2/test.json");
    let sentences = tram2_sentences(&data, args.sentences)?;
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    println!(
        "{} sentences from {}, batch {}, {} threads, gemm x86-v4: {}",
        texts.len(),
        data.display(),
        args.batch,
        candle_core::utils::get_num_threads(),
        cfg!(feature = "x86-v4")
    );

    let orders: &[bool] = match args.order.as_str() {
        "given" => &[false],
        "sorted" => &[true],
        _ => &[false, true],
    };
    for &sort_by_length in orders {
        let cfg = EmbedderConfig {
            batch_size: args.batch,
            sort_by_length,
            ..EmbedderConfig::default()
        };
        let embedder = Embedder::open(&model, cfg, &Device::Cpu)?;
        let tokens: usize = embedder
            .tokenizer()
            .encode_all(&texts)?
            .iter()
            .map(|e| e.ids.len())
            .sum();
        // Warm-up (page in the weights, size the allocator).
        embedder.encode(&texts[..texts.len().min(args.batch)])?;
        let start = Instant::now();
        let vectors = embedder.encode(&texts)?;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(vectors.len(), texts.len(), "every sentence is encoded");
        for (i, v) in vectors.iter().enumerate() {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                v.len() == embedder.dim()
                    && v.iter().all(|x| x.is_finite())
                    && (norm - 1.0).abs() < 1e-3,
                "sentence {i}: bad vector (norm {norm})"
            );
        }
        println!(
            "{:>13}: {:7.1} sentences/s ({:.2} s), mean tokens {:.1}, peak RSS {} MiB",
            if sort_by_length {
                "length-sorted"
            } else {
                "given order"
            },
            texts.len() as f64 / secs,
            secs,
            tokens as f64 / texts.len().max(1) as f64,
            peak_rss_kib().map_or_else(|| "?".to_string(), |k| (k / 1024).to_string())
        );
    }
    Ok(())
}
