//! A local Hugging Face model folder: `config.json`, `tokenizer.json` (or `vocab.txt`), and
//! `model.safetensors` (or `pytorch_model.bin`).
//!
//! Invariant: a [`ModelDir`] returned by [`ModelDir::open`] has been validated: the config
//! parses and is consistent, the tokenizer loads and produces no id beyond the embedding matrix,
//! and every encoder tensor the config implies is in the weights file with the implied shape
//! (names with or without a `bert.` prefix; LayerNorm `gamma`/`beta` accepted). Errors name the
//! folder and the missing file or tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::encoder::bert::{
    detect_prefix, encoder_tensor_shapes, legacy_layer_norm_name, pooler_tensor_shapes,
    BertEncoder, Config, LoadReport, TrainableOptions,
};
use crate::tokenize::TextTokenizer;
use crate::{Error, Result};

/// Format of the weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `model.safetensors`, memory-mapped.
    Safetensors,
    /// `pytorch_model.bin` (PyTorch pickle / zip), read through `candle_core::pickle`.
    PyTorch,
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenizerSource {
    Json(PathBuf),
    Vocab { path: PathBuf, lowercase: bool },
}

/// A validated Hugging Face model folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    dir: PathBuf,
    config: Config,
    weights: PathBuf,
    format: WeightsFormat,
    tokenizer: TokenizerSource,
    tokenizer_vocab: usize,
    prefix: &'static str,
    has_pooler: bool,
}

impl ModelDir {
    /// Opens and validates the folder at `path` (see the module invariants).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let dir = path.as_ref().to_path_buf();
        let meta = std::fs::metadata(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::MissingFile {
                dir,
                expected: "folder (the path is a file)".to_string(),
            });
        }
        let missing = |expected: &str| Error::MissingFile {
            dir: dir.clone(),
            expected: expected.to_string(),
        };

        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(missing("config.json"));
        }
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: Config = serde_json::from_str(&text).map_err(|source| Error::Config {
            path: config_path.clone(),
            source,
        })?;
        config.validate()?;

        let tokenizer = if dir.join("tokenizer.json").is_file() {
            TokenizerSource::Json(dir.join("tokenizer.json"))
        } else if dir.join("vocab.txt").is_file() {
            TokenizerSource::Vocab {
                path: dir.join("vocab.txt"),
                lowercase: read_do_lower_case(&dir.join("tokenizer_config.json"))?,
            }
        } else {
            return Err(missing("tokenizer.json or vocab.txt"));
        };

        let (weights, format) = if dir.join("model.safetensors").is_file() {
            (dir.join("model.safetensors"), WeightsFormat::Safetensors)
        } else if dir.join("pytorch_model.bin").is_file() {
            (dir.join("pytorch_model.bin"), WeightsFormat::PyTorch)
        } else {
            return Err(missing("model.safetensors or pytorch_model.bin"));
        };
        let shapes = tensor_shapes(&weights, format)?;
        let prefix = detect_prefix(|n| shapes.contains_key(n));
        let check = |name: &str, expected: &[usize]| -> Result<bool> {
            let full = format!("{prefix}{name}");
            let found = shapes.get(&full).map(|s| (full.clone(), s)).or_else(|| {
                legacy_layer_norm_name(name)
                    .map(|n| format!("{prefix}{n}"))
                    .and_then(|n| shapes.get(&n).map(|s| (n, s)))
            });
            match found {
                None => Ok(false),
                Some((n, s)) if s.as_slice() != expected => Err(Error::TensorShape {
                    file: weights.clone(),
                    name: n,
                    expected: expected.to_vec(),
                    found: s.clone(),
                }),
                Some(_) => Ok(true),
            }
        };
        for (name, shape) in encoder_tensor_shapes(&config) {
            if !check(&name, &shape)? {
                return Err(Error::MissingTensor {
                    file: weights.clone(),
                    name: format!("{prefix}{name}"),
                });
            }
        }
        let mut has_pooler = true;
        for (name, shape) in pooler_tensor_shapes(&config) {
            has_pooler &= check(&name, &shape)?;
        }

        let mut md = Self {
            dir,
            config,
            weights,
            format,
            tokenizer,
            tokenizer_vocab: 0,
            prefix,
            has_pooler,
        };
        let tok = md.tokenizer(2)?;
        md.tokenizer_vocab = tok.vocab_size();
        let rows = md.config.vocab_size;
        if md.tokenizer_vocab > rows {
            return Err(Error::VocabMismatch {
                dir: md.dir.clone(),
                tokenizer: md.tokenizer_vocab,
                embeddings: rows,
            });
        }
        if md.tokenizer_vocab < rows {
            tracing::warn!(
                dir = %md.dir.display(),
                "tokenizer has {} tokens, word embeddings {} rows (unused rows)",
                md.tokenizer_vocab,
                rows
            );
        }
        Ok(md)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The weights file.
    pub fn weights_path(&self) -> &Path {
        &self.weights
    }

    /// The weights file's format.
    pub fn weights_format(&self) -> WeightsFormat {
        self.format
    }

    /// `"bert."` when the checkpoint's names carry that prefix, else `""`.
    pub fn weight_prefix(&self) -> &'static str {
        self.prefix
    }

    /// Whether the checkpoint has a pooler (`pooler.dense.*`).
    pub fn has_pooler(&self) -> bool {
        self.has_pooler
    }

    /// Vocabulary size of the tokenizer, added tokens included.
    pub fn tokenizer_vocab_size(&self) -> usize {
        self.tokenizer_vocab
    }

    /// The tokenizer, truncating to `max_length` tokens capped at `max_position_embeddings`,
    /// padding with the config's `pad_token_id`.
    pub fn tokenizer(&self, max_length: usize) -> Result<TextTokenizer> {
        let max_length = max_length.min(self.config.max_position_embeddings);
        match &self.tokenizer {
            TokenizerSource::Json(path) => {
                TextTokenizer::from_file(path, max_length, self.config.pad_token_id)
            }
            TokenizerSource::Vocab { path, lowercase } => {
                let t = TextTokenizer::from_vocab(path, *lowercase, max_length)?;
                TextTokenizer::new(t.inner().clone(), max_length, self.config.pad_token_id)
            }
        }
    }

    /// A `VarBuilder` over the frozen weights: memory-mapped safetensors, or the PyTorch file
    /// read into memory.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        Ok(match self.format {
            WeightsFormat::Safetensors => {
                // SAFETY: the file is memory-mapped read-only; like every mmap-based loader
                // (candle, safetensors), this assumes no other process truncates or rewrites
                // the weights file while the model is loaded.
                unsafe { VarBuilder::from_mmaped_safetensors(&[&self.weights], dtype, device)? }
            }
            WeightsFormat::PyTorch => VarBuilder::from_pth(&self.weights, dtype, device)?,
        })
    }

    /// The encoder on frozen weights, for inference.
    pub fn load_encoder(&self, dtype: DType, device: &Device) -> Result<BertEncoder> {
        BertEncoder::load(self.var_builder(dtype, device)?, &self.config)
    }

    /// The encoder on trainable variables in `varmap`, initialised from this checkpoint (see
    /// [`BertEncoder::trainable`]). `opts.with_pooler` is honoured; the pooler keeps its seeded
    /// initialisation when the checkpoint has none.
    pub fn load_trainable(
        &self,
        varmap: &VarMap,
        opts: &TrainableOptions,
    ) -> Result<(BertEncoder, LoadReport)> {
        let vb = self.var_builder(opts.dtype, &opts.device)?;
        BertEncoder::trainable(varmap, &self.config, opts, Some(&vb))
    }
}

/// `do_lower_case` from `tokenizer_config.json`; true when the file or the key is absent.
fn read_do_lower_case(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Config {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(value
        .get("do_lower_case")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true))
}

/// Names and shapes of every tensor in a weights file, read from its header only.
fn tensor_shapes(path: &Path, format: WeightsFormat) -> Result<HashMap<String, Vec<usize>>> {
    Ok(match format {
        WeightsFormat::Safetensors => {
            // SAFETY: read-only map of a file we only read; see `ModelDir::var_builder`.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path)? };
            st.tensors()
                .into_iter()
                .map(|(name, view)| (name, view.shape().to_vec()))
                .collect()
        }
        WeightsFormat::PyTorch => candle_core::pickle::read_pth_tensor_info(path, false, None)?
            .into_iter()
            .map(|info| (info.name, info.layout.shape().dims().to_vec()))
            .collect(),
    })
}

/// Writes a model folder with seeded random BERT weights (our initialisation, no pooler),
/// `config.json` and a WordPiece `vocab.txt` of the special tokens, `words`, and filler tokens
/// up to `cfg.vocab_size`: small stand-in models for tests and examples of the training
/// commands (a real run uses all-MiniLM-L6-v2).
pub fn write_random_model(dir: &Path, cfg: &Config, seed: u64, words: &[&str]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(cfg).map_err(|source| Error::Json {
        path: cfg_path.clone(),
        source,
    })?;
    std::fs::write(&cfg_path, text).map_err(io(&cfg_path))?;
    let tensors: HashMap<String, candle_core::Tensor> =
        crate::encoder::bert::init_tensors(cfg, false, seed, DType::F32, &Device::Cpu)?
            .into_iter()
            .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .chain(words)
        .map(|s| s.to_string())
        .collect();
    let filler = vocab.len()..cfg.vocab_size;
    vocab.extend(filler.map(|i| format!("w{i}")));
    vocab.truncate(cfg.vocab_size);
    let vpath = dir.join("vocab.txt");
    std::fs::write(&vpath, vocab.join("\n")).map_err(io(&vpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn do_lower_case_defaults_to_true() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer_config.json");
        assert!(read_do_lower_case(&path).unwrap());
        std::fs::write(&path, r#"{"do_lower_case": false}"#).unwrap();
        assert!(!read_do_lower_case(&path).unwrap());
        std::fs::write(&path, r#"{"model_max_length": 512}"#).unwrap();
        assert!(read_do_lower_case(&path).unwrap());
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            read_do_lower_case(&path),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn a_file_is_not_a_model_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            ModelDir::open(&file),
            Err(Error::MissingFile { .. })
        ));
    }
}
