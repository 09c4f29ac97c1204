//! Cross-encoder reranker: BERT on a (query, candidate) pair (`[CLS] q [SEP] c [SEP]`, token
//! type ids 0 then 1), the pooler (`tanh(dense(h[CLS]))`), dropout and a `Linear(H, 1)`
//! classifier: Hugging Face's `BertForSequenceClassification` with `num_labels = 1`; the score
//! is `sigmoid(logit)`, as sentence-transformers' `CrossEncoder` computes it for one label.
//! The design follows Nogueira & Cho 2019, Passage Re-ranking with BERT,
//! <https://arxiv.org/abs/1901.04085>.
//!
//! Owns [`CrossEncoderNet`] (the network on frozen or trainable weights), [`CrossEncoder`]
//! (inference: tokenizer, length-sorted batches, a text-embeddings-inference `/rerank`-shaped
//! [`CrossEncoder::rerank`]), [`TrainableCrossEncoder`] (variables named as Hugging Face saves
//! them: `bert.*` and `classifier.*`), [`RerankerMetadata`] (the typed, versioned
//! [`METADATA_FILE`] a trained reranker carries) and [`save_model_dir`], which writes the
//! Hugging Face layout through the one atomic folder writer (`artifact::write_folder_atomic`).
//!
//! Invariants: a folder loads either as a `BertForSequenceClassification` checkpoint (`bert.*`
//! with pooler + `classifier.weight` `[1, H]` + `classifier.bias` `[1]`) or as a plain encoder
//! (e.g. all-MiniLM-L6-v2): then the classifier is drawn N(0, `initializer_range`) from the
//! seed with bias 0 (and a missing pooler is initialised the same way), and
//! [`CrossEncoder::head_trained`] is false. Scores are returned in input order by
//! [`CrossEncoder::score_pairs`] and best first by [`CrossEncoder::rerank`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use ttpmap_core::rerank_data::{CandidateSetConfig, CandidateTextConfig};

use crate::encoder::bert::{BertEncoder, Config, Mode, TrainableOptions};
use crate::model_dir::ModelDir;
use crate::tokenize::{Batch, Encoded, TextTokenizer};
use crate::{Error, Result};

/// Pairs per forward pass by default.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Tokens per pair by default (query and candidate together, special tokens included).
pub const DEFAULT_MAX_LENGTH: usize = 256;
/// File with ttpmap's own metadata in a saved reranker folder (training config, candidate text
/// format, validation results); Hugging Face loaders ignore it.
pub const METADATA_FILE: &str = "ttpmap_reranker.json";

/// Value of `format` in [`METADATA_FILE`].
pub const METADATA_FORMAT: &str = "ttpmap-reranker";
/// Current `format_version` of [`RerankerMetadata`].
pub const METADATA_FORMAT_VERSION: u32 = 1;

/// [`METADATA_FILE`]: provenance, data drawing, training config and results of a trained
/// reranker. Read back by [`CrossEncoder::reranker_metadata`] (and, for the candidate text
/// format, [`CrossEncoder::candidate_text_config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankerMetadata {
    /// Always [`METADATA_FORMAT`].
    pub format: String,
    /// [`METADATA_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The folder fine-tuned from.
    pub base_model: String,
    /// ATT&CK version of the candidate texts (e.g. `"18.1"`).
    pub attack_version: String,
    /// Fingerprint of the ATT&CK bundle.
    pub attack: String,
    /// Dataset of the queries (`emulation`).
    pub dataset: String,
    /// The query split.
    pub split: MetadataSplit,
    /// Candidate sets trained and validated on.
    pub candidates: CandidateSetConfig,
    /// How candidates are rendered (ranking with the model renders them the same way).
    pub candidate_text: CandidateTextConfig,
    /// Procedure-example queries added to training.
    pub augment_procedures: MetadataAugment,
    /// The resolved training config.
    pub training: crate::train::reranker::RerankerTrainConfig,
    /// Training results.
    pub results: MetadataResults,
}

/// The query split recorded in [`RerankerMetadata`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataSplit {
    /// (train, validation, test).
    pub fractions: (f64, f64, f64),
    pub seed: u64,
    /// What is split, e.g. `"unique query text, stratified by actor"`.
    pub unit: String,
}

/// Procedure-example augmentation recorded in [`RerankerMetadata`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataAugment {
    /// Examples per technique asked for.
    pub per_technique: usize,
    /// Queries that gave.
    pub queries: usize,
}

/// Training results recorded in [`RerankerMetadata`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataResults {
    /// Training queries (emulation and procedure examples).
    pub train_queries: usize,
    /// Emulation queries among them.
    pub train_emulation_queries: usize,
    pub validation_queries: usize,
    /// Epoch (0-based) whose weights were kept.
    pub best_epoch: usize,
    pub best_validation_p_at_1: f64,
    /// Validation P@1 per epoch run in the last call (a resumed run lacks the earlier ones).
    pub validation_p_at_1: BTreeMap<usize, f64>,
    /// Mean training loss per epoch run in the last call.
    pub mean_loss: BTreeMap<usize, f64>,
    /// Seconds of training in the last call.
    pub seconds: f64,
}

/// Encoder + pooler + one-logit classifier.
#[derive(Debug, Clone)]
pub struct CrossEncoderNet {
    encoder: BertEncoder,
    classifier: Linear,
    dropout: f64,
}

impl CrossEncoderNet {
    /// The encoder.
    pub fn encoder(&self) -> &BertEncoder {
        &self.encoder
    }

    /// Logits `[batch]` of a padded batch of pairs.
    pub fn forward(&self, batch: &Batch, mode: Mode) -> Result<Tensor> {
        let hidden = self.encoder.forward(
            &batch.input_ids,
            Some(&batch.token_type_ids),
            Some(&batch.attention_mask),
            mode,
        )?;
        let mut pooled = self.encoder.pooler(&hidden)?;
        if mode == Mode::Train && self.dropout > 0.0 {
            pooled = candle_nn::ops::dropout(&pooled, self.dropout as f32)?;
        }
        Ok(self.classifier.forward(&pooled)?.squeeze(1)?)
    }
}

/// The classifier's initial weight `[1, hidden]` ~ N(0, `std`) from a ChaCha8 stream seeded
/// with `seed` (Box-Muller), and bias `[1]` = 0, as Hugging Face's `_init_weights`.
pub fn init_classifier(
    hidden: usize,
    std: f64,
    seed: u64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let w: Vec<f32> = (0..hidden)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    Ok((
        Tensor::from_vec(w, (1, hidden), device)?,
        Tensor::zeros(1, DType::F32, device)?,
    ))
}

/// The classifier tensors of a checkpoint when it has them (`classifier.weight` must be
/// `[1, hidden]`: a reranker has one label).
fn checkpoint_classifier(
    vb: &VarBuilder,
    hidden: usize,
    file: &Path,
) -> Result<Option<(Tensor, Tensor)>> {
    if !vb.contains_tensor("classifier.weight") {
        return Ok(None);
    }
    let w = vb.get_unchecked_dtype("classifier.weight", DType::F32)?;
    if w.dims() != [1, hidden] {
        return Err(Error::TensorShape {
            file: file.to_path_buf(),
            name: "classifier.weight".into(),
            expected: vec![1, hidden],
            found: w.dims().to_vec(),
        });
    }
    let b = if vb.contains_tensor("classifier.bias") {
        vb.get_unchecked_dtype("classifier.bias", DType::F32)?
            .reshape(1)?
    } else {
        Tensor::zeros(1, DType::F32, w.device())?
    };
    Ok(Some((w, b)))
}

/// Options of [`CrossEncoder::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossEncoderOptions {
    /// Tokens per pair (capped by the model's position embeddings). Default 256.
    pub max_length: usize,
    /// Pairs per forward pass. Default 32.
    pub batch_size: usize,
    /// Seed of the classifier (and pooler) of a folder without one. Default 42.
    pub seed: u64,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            max_length: DEFAULT_MAX_LENGTH,
            batch_size: DEFAULT_BATCH_SIZE,
            seed: 42,
        }
    }
}

/// One reranked text: its index in the input and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub index: usize,
    pub score: f32,
}

/// A cross-encoder ready for inference (fused eval-mode kernels).
#[derive(Debug, Clone)]
pub struct CrossEncoder {
    net: CrossEncoderNet,
    tokenizer: TextTokenizer,
    device: Device,
    batch_size: usize,
    head_trained: bool,
    dir: PathBuf,
    metadata: Option<serde_json::Value>,
}

impl CrossEncoder {
    /// Opens a model folder (see the module invariants).
    pub fn open(
        path: impl AsRef<Path>,
        opts: &CrossEncoderOptions,
        device: &Device,
    ) -> Result<Self> {
        Self::from_model_dir(&ModelDir::open(path)?, opts, device)
    }

    /// Builds the cross-encoder from an opened model folder.
    pub fn from_model_dir(
        md: &ModelDir,
        opts: &CrossEncoderOptions,
        device: &Device,
    ) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument("batch_size must be > 0".into()));
        }
        let cfg = md.config();
        let vb = md.var_builder(DType::F32, device)?;
        let mut encoder = if md.has_pooler() {
            md.load_encoder(DType::F32, device)?
        } else {
            let varmap = VarMap::new();
            let topts = TrainableOptions {
                prefix: String::new(),
                seed: opts.seed,
                with_pooler: true,
                dtype: DType::F32,
                device: device.clone(),
            };
            BertEncoder::trainable(&varmap, cfg, &topts, Some(&vb))?.0
        };
        encoder.fuse_for_inference()?;
        let (head_trained, (w, b)) =
            match checkpoint_classifier(&vb, cfg.hidden_size, md.weights_path())? {
                Some(t) => (true, t),
                None => (
                    false,
                    init_classifier(cfg.hidden_size, cfg.initializer_range, opts.seed, device)?,
                ),
            };
        let metadata_path = md.path().join(METADATA_FILE);
        let metadata = if metadata_path.is_file() {
            let text = std::fs::read_to_string(&metadata_path).map_err(|source| Error::Io {
                path: metadata_path.clone(),
                source,
            })?;
            Some(serde_json::from_str(&text).map_err(|source| Error::Json {
                path: metadata_path.clone(),
                source,
            })?)
        } else {
            None
        };
        Ok(Self {
            net: CrossEncoderNet {
                encoder,
                classifier: Linear::new(w, Some(b)),
                dropout: 0.0,
            },
            tokenizer: md.tokenizer(opts.max_length)?,
            device: device.clone(),
            batch_size: opts.batch_size,
            head_trained,
            dir: md.path().to_path_buf(),
            metadata,
        })
    }

    /// Wraps a (trained) network for inference. Call only on weights that will not change.
    pub fn from_network(
        mut net: CrossEncoderNet,
        tokenizer: TextTokenizer,
        device: &Device,
    ) -> Result<Self> {
        net.encoder.fuse_for_inference()?;
        Ok(Self {
            net,
            tokenizer,
            device: device.clone(),
            batch_size: DEFAULT_BATCH_SIZE,
            head_trained: true,
            dir: PathBuf::new(),
            metadata: None,
        })
    }

    /// Whether the classifier came from the checkpoint (false: seeded random head, so the
    /// scores carry no meaning until the model is fine-tuned).
    pub fn head_trained(&self) -> bool {
        self.head_trained
    }

    /// The model folder (empty for [`CrossEncoder::from_network`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Contents of [`METADATA_FILE`] when the folder has one.
    pub fn metadata(&self) -> Option<&serde_json::Value> {
        self.metadata.as_ref()
    }

    /// [`METADATA_FILE`] as [`RerankerMetadata`]; `None` when the folder has none (e.g. a
    /// Hugging Face cross-encoder). Another format or a newer version is an error naming the
    /// file.
    pub fn reranker_metadata(&self) -> Result<Option<RerankerMetadata>> {
        let Some(value) = &self.metadata else {
            return Ok(None);
        };
        let path = self.dir.join(METADATA_FILE);
        let m: RerankerMetadata =
            serde_json::from_value(value.clone()).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?;
        if m.format != METADATA_FORMAT || m.format_version > METADATA_FORMAT_VERSION {
            return Err(Error::Artifact {
                path,
                message: format!(
                    "format {:?} version {} is not supported (this build reads {METADATA_FORMAT:?} up to {METADATA_FORMAT_VERSION})",
                    m.format, m.format_version
                ),
            });
        }
        Ok(Some(m))
    }

    /// The candidate text format the model was trained with (the default when unrecorded).
    pub fn candidate_text_config(&self) -> CandidateTextConfig {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("candidate_text"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Logits of each pair, in input order (length-sorted batches of `batch_size`).
    pub fn logits(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let enc = pairs
            .iter()
            .map(|(a, b)| self.tokenizer.encode_pair(a, b))
            .collect::<Result<Vec<_>>>()?;
        logits_encoded(
            &self.net,
            &self.tokenizer,
            &enc,
            self.batch_size,
            &self.device,
        )
    }

    /// `sigmoid(logit)` of each pair, in input order.
    pub fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        Ok(self.logits(pairs)?.into_iter().map(sigmoid).collect())
    }

    /// text-embeddings-inference's `/rerank`: every text scored against `query`, best first
    /// (ties keep input order).
    pub fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<Ranked>> {
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
        let scores = self.score_pairs(&pairs)?;
        let mut out: Vec<Ranked> = scores
            .into_iter()
            .enumerate()
            .map(|(index, score)| Ranked { index, score })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        Ok(out)
    }
}

/// The logistic function.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Logits of pre-tokenised pairs in length-sorted batches, in input order (eval mode).
pub fn logits_encoded(
    net: &CrossEncoderNet,
    tokenizer: &TextTokenizer,
    encodings: &[Encoded],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let mut out = vec![0f32; encodings.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let members: Vec<Encoded> = chunk.iter().map(|&i| encodings[i].clone()).collect();
        let batch = tokenizer.pad(&members, device)?;
        let logits = net.forward(&batch, Mode::Eval)?.to_vec1::<f32>()?;
        for (&i, l) in chunk.iter().zip(logits) {
            out[i] = l;
        }
    }
    Ok(out)
}

/// A cross-encoder on trainable variables named as Hugging Face saves
/// `BertForSequenceClassification`: `bert.*` (pooler included) and `classifier.*`.
pub struct TrainableCrossEncoder {
    varmap: VarMap,
    net: CrossEncoderNet,
    cfg: Config,
}

impl std::fmt::Debug for TrainableCrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableCrossEncoder")
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl TrainableCrossEncoder {
    /// Weights from `pretrained` (a plain encoder or a cross-encoder folder; seeded random when
    /// `None`, for tests); a missing pooler or classifier is initialised from `seed`. `cfg`
    /// supplies the dropout (the classifier's dropout is `hidden_dropout_prob`) and must match
    /// `pretrained`'s shapes.
    pub fn new(cfg: &Config, pretrained: Option<&ModelDir>, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let opts = TrainableOptions {
            prefix: "bert".into(),
            seed,
            with_pooler: true,
            dtype: DType::F32,
            device: Device::Cpu,
        };
        let (encoder, head) = match pretrained {
            Some(md) => {
                let vb = md.var_builder(DType::F32, &Device::Cpu)?;
                let enc = BertEncoder::trainable(&varmap, cfg, &opts, Some(&vb))?.0;
                let head = checkpoint_classifier(&vb, cfg.hidden_size, md.weights_path())?;
                (enc, head)
            }
            None => (BertEncoder::trainable(&varmap, cfg, &opts, None)?.0, None),
        };
        let (w, b) = match head {
            Some((w, b)) => (w.detach(), b.detach()),
            None => init_classifier(cfg.hidden_size, cfg.initializer_range, seed, &Device::Cpu)?,
        };
        let (wv, bv) = (Var::from_tensor(&w)?, Var::from_tensor(&b)?);
        let classifier = Linear::new(wv.as_tensor().clone(), Some(bv.as_tensor().clone()));
        {
            let mut data = varmap.data().lock().map_err(|_| {
                Error::InvalidArgument("VarMap lock poisoned by a panicked thread".to_string())
            })?;
            data.insert("classifier.weight".into(), wv);
            data.insert("classifier.bias".into(), bv);
        }
        Ok(Self {
            varmap,
            net: CrossEncoderNet {
                encoder,
                classifier,
                dropout: cfg.hidden_dropout_prob,
            },
            cfg: cfg.clone(),
        })
    }

    /// The network ([`Mode::Train`] for steps; [`Mode::Eval`] sees the current weights).
    pub fn network(&self) -> &CrossEncoderNet {
        &self.net
    }

    /// The encoder config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Every variable with its name, sorted by name.
    pub fn named_vars(&self) -> Result<Vec<(String, Var)>> {
        let data = self.varmap.data().lock().map_err(|_| {
            Error::InvalidArgument("VarMap lock poisoned by a panicked thread".to_string())
        })?;
        let mut named: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    }

    /// Detached copies of every variable, named as Hugging Face names them, sorted by name.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .named_vars()?
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect())
    }
}

/// What [`save_model_dir`] writes besides the weights.
#[derive(Debug, Clone)]
pub struct SaveSpec<'a> {
    /// Encoder config (written with the sequence-classification keys added).
    pub config: &'a Config,
    /// Folder the model was fine-tuned from: its `config.json` keys are kept and its
    /// tokenizer files (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
    /// `vocab.txt`) are copied. `None`: `tokenizer` is saved instead.
    pub base: Option<&'a Path>,
    /// Tokenizer saved as `tokenizer.json` when the base folder has none.
    pub tokenizer: &'a TextTokenizer,
    /// Written as [`METADATA_FILE`].
    pub metadata: &'a RerankerMetadata,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    crate::artifact::write_json(path, value)
}

/// `config.json` of a one-label `BertForSequenceClassification`: the base folder's keys (or
/// `cfg`'s) with `cfg`'s shapes, `architectures`, `model_type`, `num_labels`, `id2label` and
/// `label2id` set.
pub fn sequence_classification_config(
    cfg: &Config,
    base: Option<&Path>,
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(cfg).map_err(|source| Error::Json {
        path: PathBuf::from("config.json"),
        source,
    })?;
    if let Some(dir) = base {
        let path = dir.join("config.json");
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let base: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Config {
                    path: path.clone(),
                    source,
                })?;
            if let (Some(b), Some(v)) = (base.as_object(), value.as_object_mut()) {
                for (k, x) in b {
                    v.entry(k.clone()).or_insert_with(|| x.clone());
                }
            }
        }
    }
    let obj = value
        .as_object_mut()
        .ok_or_else(|| Error::InvalidArgument("config does not serialise to an object".into()))?;
    obj.insert(
        "architectures".into(),
        serde_json::json!(["BertForSequenceClassification"]),
    );
    obj.insert("model_type".into(), serde_json::json!("bert"));
    obj.insert("num_labels".into(), serde_json::json!(1));
    obj.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
    obj.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
    Ok(value)
}

/// Whether `dir` may be replaced by a reranker folder: absent, empty, or a previous ttpmap
/// reranker (has [`METADATA_FILE`]); never unrelated data.
pub fn check_replaceable(dir: &Path) -> Result<()> {
    crate::artifact::check_replaceable_by(
        dir,
        |d| d.join(METADATA_FILE).is_file(),
        &format!("ttpmap reranker folder (no {METADATA_FILE})"),
    )
}

/// Writes a reranker folder in Hugging Face's layout at `dir`: `config.json` (see
/// [`sequence_classification_config`]), the tokenizer files, `model.safetensors` with
/// `tensors` (names as [`TrainableCrossEncoder::tensors`]: `bert.*`, `classifier.*`) and
/// [`METADATA_FILE`], through the one atomic folder writer
/// ([`crate::artifact::write_folder_atomic`]).
pub fn save_model_dir(dir: &Path, tensors: &[(String, Tensor)], spec: &SaveSpec) -> Result<()> {
    for need in [
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
    ] {
        if !tensors.iter().any(|(n, _)| n == need) {
            return Err(Error::InvalidArgument(format!(
                "reranker weights for {} lack {need}",
                dir.display()
            )));
        }
    }
    check_replaceable(dir)?;
    crate::artifact::write_folder_atomic(dir, |tmp| {
        let map: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?;
        candle_core::safetensors::save(&map, tmp.join("model.safetensors"))?;
        write_json(
            &tmp.join("config.json"),
            &sequence_classification_config(spec.config, spec.base)?,
        )?;
        let mut have_tokenizer = false;
        if let Some(base) = spec.base {
            for f in [
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "vocab.txt",
            ] {
                let src = base.join(f);
                if src.is_file() {
                    std::fs::copy(&src, tmp.join(f)).map_err(io_err(&src))?;
                    have_tokenizer |= f == "tokenizer.json";
                }
            }
        }
        if !have_tokenizer {
            let path = tmp.join("tokenizer.json");
            spec.tokenizer
                .inner()
                .save(&path, false)
                .map_err(|source| Error::Tokenizer {
                    path: Some(path.clone()),
                    source,
                })?;
        }
        // Through a JSON value, as before the metadata was typed: sorted keys.
        let path = tmp.join(METADATA_FILE);
        let metadata = serde_json::to_value(spec.metadata).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        write_json(&path, &metadata)
    })
}

/// The cross-encoder as core's [`PairScorer`]: raw logits (monotone in the probability, and
/// without the ties a saturated sigmoid would make when ranking).
impl ttpmap_core::pipeline::PairScorer for CrossEncoder {
    fn name(&self) -> &str {
        "rerank"
    }

    fn score_pairs(&self, pairs: &[(&str, &str)]) -> ttpmap_core::Result<Vec<f32>> {
        self.logits(pairs)
            .map_err(|e| ttpmap_core::Error::model(self.dir(), "scoring pairs", e))
    }
}
