//! Ranks passages with a shipped default model, for `scripts/validation_passages.py`: reads
//! JSON lines `{"id", "text"}` on stdin and writes `{"id", "top", "tokens"}` (the 20 best
//! techniques with their confidences, and the text's length in tokens) on stdout. By default a
//! passage is read the way `rank` reads it (`ttpmap_core::pipeline::score_passages`: whole when
//! it fits in the model's 64 tokens, otherwise sentence by sentence); `--whole` reads every
//! passage whole (truncated to 64 tokens), as before 2026-12-03.
//!
//! `cargo run --release -p ttpmap-ml --example score_passages -- [--whole] [--model DIR]
//! [--shared DIR] < passages.jsonl > ranked.jsonl` (`--model` defaults to `models/default`,
//! `--shared` to `$TTPMAP_SHARED` or `../shared`).

use std::error::Error as StdError;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use candle_core::Device;
use ttpmap_core::attack::Catalog;
use ttpmap_ml::model_dir::ModelDir;
use ttpmap_ml::trained::{Mentions, TrainedModel, TrainedScorer, CANDIDATES_PER_SENTENCE};

type BoxResult<T> = Result<T, Box<dyn StdError>>;

fn main() -> BoxResult<()> {
    let mut whole = false;
    let mut model = PathBuf::from("models/default");
    let mut shared = std::env::var_os("TTPMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--whole" => whole = true,
            "--model" => model = it.next().ok_or("--model needs a folder")?.into(),
            "--shared" => shared = it.next().ok_or("--shared needs a folder")?.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let catalog = Catalog::open_cached(
        &shared.join("data/attack/enterprise-attack-18.1.json"),
        None,
    )?;
    let base_dir = shared.join("models/all-MiniLM-L6-v2");
    let base = ModelDir::open(&base_dir)?;
    let scorer = TrainedScorer::new(
        TrainedModel::open(&model, &base, &Device::Cpu)?,
        Mentions::from_catalog(&catalog),
    );
    let tokens = ttpmap_ml::tokenize::TextTokenizer::from_file(
        &base_dir.join("tokenizer.json"),
        usize::MAX / 2,
        0,
    )?;
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(&line?)
            .map_err(|e| format!("stdin line {}: not JSON: {e}", n + 1))?;
        let text = v["text"]
            .as_str()
            .ok_or_else(|| format!("stdin line {}: no \"text\" string", n + 1))?;
        ids.push(v["id"].clone());
        texts.push(text.to_string());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    let mut done = 0;
    for chunk in refs.chunks(256) {
        let ranked: Vec<Vec<(String, f32)>> = if whole {
            scorer
                .label_scores(chunk)?
                .into_iter()
                .map(|r| r.into_iter().map(|(t, p)| (t.to_string(), p)).collect())
                .collect()
        } else {
            let mut rows = ttpmap_core::pipeline::score_passages(&scorer, chunk)?;
            rows.iter_mut()
                .for_each(|r| ttpmap_core::pipeline::sort_predictions(r));
            rows.into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|p| (p.technique.to_string(), p.score))
                        .collect()
                })
                .collect()
        };
        for (row, text) in ranked.into_iter().zip(chunk) {
            let top: Vec<_> = row.into_iter().take(CANDIDATES_PER_SENTENCE).collect();
            let n = tokens.encode(text)?.ids.len();
            let line = serde_json::json!({"id": ids[done], "top": top, "tokens": n});
            writeln!(out, "{line}")?;
            done += 1;
        }
    }
    eprintln!("{done} passages ranked");
    Ok(())
}
