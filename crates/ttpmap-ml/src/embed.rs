//! Sentence embeddings in the sentence-transformers style: BERT `last_hidden_state`,
//! mean-pooled over real tokens, L2-normalised.
//!
//! Invariants: [`Embedder::encode`] returns one vector per input, in input order, each of length
//! [`Embedder::dim`] and unit norm (an empty string still yields the `[CLS] [SEP]` embedding).
//! Inputs are sorted by token count before batching (less padding) and the order is restored;
//! weights are frozen and memory-mapped.

use std::path::Path;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::encoder::bert::{l2_normalize, mean_pool, BertEncoder, Mode};
use crate::model_dir::ModelDir;
use crate::tokenize::{TextTokenizer, DEFAULT_MAX_LENGTH};
use crate::{Error, Result};

/// Batching settings of an [`Embedder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Sentences per forward pass. Default 32.
    pub batch_size: usize,
    /// Maximum tokens per sentence (special tokens included), capped at the model's
    /// `max_position_embeddings`. Default 256.
    pub max_length: usize,
    /// Sort by token count before batching. Default true.
    pub sort_by_length: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_length: DEFAULT_MAX_LENGTH,
            sort_by_length: true,
        }
    }
}

/// A frozen BERT sentence embedder.
#[derive(Debug, Clone)]
pub struct Embedder {
    encoder: BertEncoder,
    tokenizer: TextTokenizer,
    device: Device,
    cfg: EmbedderConfig,
}

impl Embedder {
    /// Opens the model folder at `path` (see [`ModelDir::open`]) with f32 weights on `device`.
    pub fn open(path: impl AsRef<Path>, cfg: EmbedderConfig, device: &Device) -> Result<Self> {
        Self::from_model_dir(&ModelDir::open(path)?, cfg, device)
    }

    /// Builds the embedder from an opened model folder.
    pub fn from_model_dir(md: &ModelDir, cfg: EmbedderConfig, device: &Device) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(Error::InvalidArgument("batch_size must be > 0".to_string()));
        }
        let mut encoder = md.load_encoder(DType::F32, device)?;
        encoder.fuse_for_inference()?;
        let tokenizer = md.tokenizer(cfg.max_length)?;
        Ok(Self {
            encoder,
            tokenizer,
            device: device.clone(),
            cfg,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The batching settings.
    pub fn config(&self) -> &EmbedderConfig {
        &self.cfg
    }

    /// Embeds `texts`: one unit-norm vector per text, in input order.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self.tokenizer.encode_all(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        if self.cfg.sort_by_length {
            order.sort_by_key(|&i| encodings[i].ids.len());
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(self.cfg.batch_size) {
            let members: Vec<_> = chunk.iter().map(|&i| encodings[i].clone()).collect();
            let batch = self.tokenizer.pad(&members, &self.device)?;
            let hidden = self.encoder.forward(
                &batch.input_ids,
                Some(&batch.token_type_ids),
                Some(&batch.attention_mask),
                Mode::Eval,
            )?;
            let pooled = l2_normalize(&mean_pool(&hidden, &batch.attention_mask)?)?;
            for (&i, v) in chunk.iter().zip(pooled.to_vec2::<f32>()?) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Cosine similarity of two unit-norm vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An encoder that was not trained for pair scoring, as a baseline [`PairScorer`]: the cosine
/// of the mean-pooled embeddings of query and candidate (each distinct text embedded once).
///
/// [`PairScorer`]: ttpmap_core::pipeline::PairScorer
pub struct CosinePairs<'a> {
    pub embedder: &'a Embedder,
    /// The model folder, for errors.
    pub model: std::path::PathBuf,
}

impl ttpmap_core::pipeline::PairScorer for CosinePairs<'_> {
    fn name(&self) -> &str {
        "untuned_cosine"
    }

    fn score_pairs(&self, pairs: &[(&str, &str)]) -> ttpmap_core::Result<Vec<f32>> {
        let unique: std::collections::BTreeSet<&str> =
            pairs.iter().flat_map(|(q, c)| [*q, *c]).collect();
        let unique: Vec<&str> = unique.into_iter().collect();
        let vectors = self
            .embedder
            .encode(&unique)
            .map_err(|e| ttpmap_core::Error::model(&self.model, "embedding pair texts", e))?;
        let index: std::collections::BTreeMap<&str, &Vec<f32>> =
            unique.iter().copied().zip(&vectors).collect();
        Ok(pairs
            .iter()
            .map(|(q, c)| cosine(index[q], index[c]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::bert::{init_tensors, Config};

    /// A tiny generated model folder (hidden 16) with a WordPiece vocabulary `w0..w59`.
    fn tiny_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            vocab_size: 60,
            hidden_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 32,
            max_position_embeddings: 32,
            initializer_range: 0.5,
            ..Config::default()
        };
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_string(&cfg).unwrap(),
        )
        .unwrap();
        let tensors: std::collections::HashMap<String, candle_core::Tensor> =
            init_tensors(&cfg, false, 5, DType::F32, &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect();
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
        let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        vocab.extend((4..60).map(|i| format!("w{i}")));
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        dir
    }

    #[test]
    fn sorted_batches_restore_input_order() {
        let dir = tiny_dir();
        let texts = ["w5 w6 w7 w8 w9 w10", "w11", "", "w12 w13 w14", "w15 w16"];
        let sorted = Embedder::open(
            dir.path(),
            EmbedderConfig {
                batch_size: 2,
                ..EmbedderConfig::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        let out = sorted.encode(&texts).unwrap();
        assert_eq!(out.len(), texts.len());
        for (text, v) in texts.iter().zip(&out) {
            let alone = sorted.encode(&[text]).unwrap();
            let sim = cosine(v, &alone[0]);
            assert!((sim - 1.0).abs() < 1e-5, "{text:?}: {sim}");
        }
        assert!(cosine(&out[0], &out[1]) < 0.9999);
    }

    #[test]
    fn zero_batch_size_is_rejected() {
        let dir = tiny_dir();
        let cfg = EmbedderConfig {
            batch_size: 0,
            ..EmbedderConfig::default()
        };
        assert!(matches!(
            Embedder::open(dir.path(), cfg, &Device::Cpu),
            Err(Error::InvalidArgument(_))
        ));
    }
}
