//! Benchmark of the cross-encoder reranker on CPU: scores N (sentence, candidate text) pairs
//! (TRAM2 test sentences, each paired with the candidate text of an ATT&CK technique) with a
//! model folder (all-MiniLM-L6-v2 by default: the speed of a fine-tuned MiniLM reranker is the
//! same) in length-sorted batches, and prints pairs/s, mean tokens per pair, the time a
//! 150-sentence report with 20 candidates each would take, and peak RSS. It asserts that every
//! pair got a probability in [0, 1]. Not a timed test.
//!
//! `cargo run --release -p ttpmap-ml --example bench_rerank -- [--pairs 1000] [--batch 32]
//! [--threads 2] [--model DIR] [--shared DIR]`

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use ttpmap_core::attack::Catalog;
use ttpmap_core::rerank_data::{candidate_text, CandidateTextConfig};
use ttpmap_ml::{CrossEncoder, CrossEncoderOptions};

type BoxResult<T> = Result<T, Box<dyn StdError>>;

struct Args {
    pairs: usize,
    batch: usize,
    threads: usize,
    model: Option<PathBuf>,
    shared: PathBuf,
}

fn parse_args() -> BoxResult<Args> {
    let mut args = Args {
        pairs: 1000,
        batch: 32,
        threads: 2,
        model: None,
        shared: std::env::var_os("TTPMAP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pairs" => args.pairs = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--threads" => args.threads = value.parse()?,
            "--model" => args.model = Some(PathBuf::from(value)),
            "--shared" => args.shared = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// The labelled-or-not sentences of a TRAM2 column-format file, in key order.
fn tram2_sentences(path: &Path) -> BoxResult<Vec<String>> {
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
    Ok(rows.into_iter().map(|(_, s)| s).collect())
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
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| args.shared.join("models/all-MiniLM-L6-v2"));
    let catalog = Catalog::from_path(&args.shared.join("data/attack/enterprise-attack-18.1.json"))?;
    let cfg = CandidateTextConfig::default();
    let texts: Vec<String> = catalog
        .active_techniques()
        .map(|t| candidate_text(t, &cfg))
        .collect();
    let sentences = tram2_sentences(&args.shared.join("data/tram2/test.json"))?;
    if sentences.is_empty() || texts.is_empty() {
        return Err("no sentences or techniques".into());
    }
    let pairs: Vec<(&str, &str)> = (0..args.pairs)
        .map(|i| {
            (
                sentences[i % sentences.len()].as_str(),
                texts[(i * 7) % texts.len()].as_str(),
            )
        })
        .collect();
    let opts = CrossEncoderOptions {
        batch_size: args.batch,
        ..CrossEncoderOptions::default()
    };
    let ce = CrossEncoder::open(&model, &opts, &Device::Cpu)?;
    let tokens: usize = pairs
        .iter()
        .map(|(a, b)| ce.tokenizer().encode_pair(a, b).map(|e| e.ids.len()))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    println!(
        "{} pairs, model {} (trained head: {}), batch {}, {} threads, gemm x86-v4: {}",
        pairs.len(),
        model.display(),
        ce.head_trained(),
        args.batch,
        candle_core::utils::get_num_threads(),
        cfg!(feature = "x86-v4")
    );
    // Warm-up (page in the weights, size the allocator).
    ce.score_pairs(&pairs[..pairs.len().min(args.batch)])?;
    let start = Instant::now();
    let scores = ce.score_pairs(&pairs)?;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(scores.len(), pairs.len(), "every pair is scored");
    assert!(
        scores
            .iter()
            .all(|p| p.is_finite() && (0.0..=1.0).contains(p)),
        "probabilities in [0, 1]"
    );
    let rate = pairs.len() as f64 / secs;
    println!(
        "{rate:.1} pairs/s ({secs:.2} s), mean tokens per pair {:.1}; a 150-sentence report with 20 candidates each (3000 pairs): {:.1} s; peak RSS {} MiB",
        tokens as f64 / pairs.len().max(1) as f64,
        3000.0 / rate,
        peak_rss_kib().map_or_else(|| "?".to_string(), |k| (k / 1024).to_string())
    );
    Ok(())
}
