//! Sentence classifier: BERT encoder + [`LabelAttentionHead`](crate::head::LabelAttentionHead)
//! (the CASSANDRA recipe's model), multi-label with a sigmoid per label.
//!
//! Owns [`Classifier`] (the network, either on frozen weights or on a `VarMap`),
//! [`ClassifierModel`] (inference: memory-mapped weights, fused eval-mode kernels, tokenizer,
//! length-sorted batches) and [`TrainableClassifier`] (variables in a `VarMap` with names
//! `encoder.*` and `head.*`), and [`ClassifierScorer`], the pipeline's
//! [`SentenceScorer`] over a trained artifact.
//!
//! Invariants: weights files hold the encoder under `encoder.` (Hugging Face `BertModel` names,
//! no pooler) and the head under `head.`; [`ClassifierModel::predict_proba`] returns one vector
//! of `num_labels` probabilities per sentence, in input order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use ttpmap_core::eval::ScoredSentence;
use ttpmap_core::pipeline::{ScoreOptions, SentenceScorer};
use ttpmap_core::{Evidence, Prediction, TechniqueId};

use crate::artifact::Artifact;

use crate::encoder::bert::{BertEncoder, Config as BertConfig, Mode, TrainableOptions};
use crate::head::{HeadConfig, HeadInit, LabelAttentionHead};
use crate::model_dir::ModelDir;
use crate::tokenize::{Batch, Encoded, TextTokenizer};
use crate::{Error, Result};

/// Encoder + label-attention head.
#[derive(Debug, Clone)]
pub struct Classifier {
    encoder: BertEncoder,
    head: LabelAttentionHead,
}

impl Classifier {
    /// Builds the network from `vb` holding `encoder.*` and `head.*` tensors.
    pub fn load(vb: VarBuilder, encoder: &BertConfig, head: &HeadConfig) -> Result<Self> {
        check_widths(encoder, head)?;
        Ok(Self {
            encoder: BertEncoder::load(vb.pp("encoder"), encoder)?,
            head: LabelAttentionHead::load(vb.pp("head"), head)?,
        })
    }

    /// The encoder.
    pub fn encoder(&self) -> &BertEncoder {
        &self.encoder
    }

    /// The head.
    pub fn head(&self) -> &LabelAttentionHead {
        &self.head
    }

    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.head.config().num_labels
    }

    /// Logits `[batch, labels]` of a padded batch.
    pub fn forward(&self, batch: &Batch, mode: Mode) -> Result<Tensor> {
        let hidden = self.encoder.forward(
            &batch.input_ids,
            Some(&batch.token_type_ids),
            Some(&batch.attention_mask),
            mode,
        )?;
        self.head.forward(&hidden, &batch.attention_mask, mode)
    }

    /// Hidden states after the embeddings and the first `layers` transformer layers of a padded
    /// batch, in eval mode and detached from the weights: the cache of a run that freezes those
    /// layers (see [`Classifier::forward_from`]).
    pub fn lower_states(&self, batch: &Batch, layers: usize) -> Result<Tensor> {
        let x = self
            .encoder
            .embed(&batch.input_ids, &batch.token_type_ids, Mode::Eval)?;
        Ok(self
            .encoder
            .forward_layers(&x, Some(&batch.attention_mask), 0..layers, Mode::Eval)?
            .detach())
    }

    /// Logits `[batch, labels]` from hidden states `[batch, seq, hidden]` entering layer
    /// `layer` (e.g. [`Classifier::lower_states`] with `layers = layer`), padding masked by
    /// `attention_mask`. With `layer = 0` and the embeddings output this equals
    /// [`Classifier::forward`].
    pub fn forward_from(
        &self,
        hidden: &Tensor,
        attention_mask: &Tensor,
        layer: usize,
        mode: Mode,
    ) -> Result<Tensor> {
        let n = self.encoder.config().num_hidden_layers;
        let top = self
            .encoder
            .forward_layers(hidden, Some(attention_mask), layer..n, mode)?;
        self.head.forward(&top, attention_mask, mode)
    }
}

fn check_widths(encoder: &BertConfig, head: &HeadConfig) -> Result<()> {
    if encoder.hidden_size != head.hidden_size {
        return Err(Error::InvalidArgument(format!(
            "head hidden_size {} differs from the encoder's {}",
            head.hidden_size, encoder.hidden_size
        )));
    }
    Ok(())
}

/// A classifier ready for inference: frozen, memory-mapped weights, fused kernels.
#[derive(Debug, Clone)]
pub struct ClassifierModel {
    net: Classifier,
    tokenizer: TextTokenizer,
    device: Device,
    batch_size: usize,
    weights: PathBuf,
}

impl ClassifierModel {
    /// Loads `weights` (safetensors with `encoder.*` and `head.*`), memory-mapped. Missing or
    /// mis-shaped tensors are errors naming the file.
    pub fn load(
        weights: &Path,
        encoder: &BertConfig,
        head: &HeadConfig,
        tokenizer: TextTokenizer,
        device: &Device,
    ) -> Result<Self> {
        if !weights.is_file() {
            return Err(Error::Io {
                path: weights.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        // SAFETY: read-only map of a weights file that is not modified while loaded (as
        // `ModelDir::var_builder`).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }
            .map_err(|e| Error::Artifact {
                path: weights.to_path_buf(),
                message: format!("not a readable safetensors file: {e}"),
            })?;
        let mut net = Classifier::load(vb, encoder, head).map_err(|e| Error::Artifact {
            path: weights.to_path_buf(),
            message: format!("weights do not match the manifest: {e}"),
        })?;
        net.encoder.fuse_for_inference()?;
        Ok(Self {
            net,
            tokenizer,
            device: device.clone(),
            batch_size: 32,
            weights: weights.to_path_buf(),
        })
    }

    /// Wraps a network (e.g. a trained one) for inference. Call only on weights that will not
    /// change (the eval-mode kernels use fused snapshots of them).
    pub fn from_network(
        net: Classifier,
        tokenizer: TextTokenizer,
        device: &Device,
    ) -> Result<Self> {
        Self::from_network_above(net, tokenizer, device, 0)
    }

    /// [`ClassifierModel::from_network`] preparing inference only for the encoder layers from
    /// `first` up ([`crate::encoder::BertEncoder::fuse_for_inference_from`]): for an ensemble
    /// member whose lower layers another member runs for it ([`crate::Artifact`]'s shared
    /// layers). Its own full forward pass still works, on the unprepared (f32) lower layers.
    pub fn from_network_above(
        mut net: Classifier,
        tokenizer: TextTokenizer,
        device: &Device,
        first: usize,
    ) -> Result<Self> {
        net.encoder.fuse_for_inference_from(first)?;
        Ok(Self {
            net,
            tokenizer,
            device: device.clone(),
            batch_size: 32,
            weights: PathBuf::new(),
        })
    }

    /// Sentences per forward pass (default 32; 0 is treated as 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The network.
    pub fn network(&self) -> &Classifier {
        &self.net
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Sentences per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights file (empty for [`ClassifierModel::from_network`]).
    pub fn weights_path(&self) -> &Path {
        &self.weights
    }

    /// Per-label probabilities for each sentence, in input order.
    pub fn predict_proba(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self.tokenizer.encode_all(sentences)?;
        self.predict_tokenized(&encodings)
    }

    /// Per-label probabilities of inputs already tokenised with [`Self::tokenizer`].
    pub fn predict_tokenized(&self, encodings: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        predict_encoded(
            &self.net,
            &self.tokenizer,
            encodings,
            self.batch_size,
            &self.device,
        )
    }
}

/// Probabilities of pre-tokenised inputs in length-sorted batches, in input order (eval mode).
pub fn predict_encoded(
    net: &Classifier,
    tokenizer: &TextTokenizer,
    encodings: &[Encoded],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let mut out = vec![Vec::new(); encodings.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let members: Vec<Encoded> = chunk.iter().map(|&i| encodings[i].clone()).collect();
        let batch = tokenizer.pad(&members, device)?;
        let probs = candle_nn::ops::sigmoid(&net.forward(&batch, Mode::Eval)?)?;
        for (&i, row) in chunk.iter().zip(probs.to_vec2::<f32>()?) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// A classifier on trainable variables: encoder variables `encoder.*`, head `head.*`.
pub struct TrainableClassifier {
    varmap: VarMap,
    net: Classifier,
    encoder_cfg: BertConfig,
}

impl std::fmt::Debug for TrainableClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableClassifier")
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl TrainableClassifier {
    /// A trainable classifier: the encoder from `pretrained` (a model folder; seeded random
    /// initialisation when `None`, for tests) and a new head initialised by `head_init`.
    /// `encoder_cfg` supplies the dropout probabilities and must match `pretrained`'s shapes.
    pub fn new(
        encoder_cfg: &BertConfig,
        head: &HeadConfig,
        pretrained: Option<&ModelDir>,
        encoder_seed: u64,
        head_init: &HeadInit,
    ) -> Result<Self> {
        check_widths(encoder_cfg, head)?;
        let varmap = VarMap::new();
        let opts = TrainableOptions {
            prefix: "encoder".into(),
            seed: encoder_seed,
            with_pooler: false,
            dtype: DType::F32,
            device: Device::Cpu,
        };
        let encoder = match pretrained {
            Some(md) => {
                let vb = md.var_builder(DType::F32, &Device::Cpu)?;
                BertEncoder::trainable(&varmap, encoder_cfg, &opts, Some(&vb))?.0
            }
            None => BertEncoder::trainable(&varmap, encoder_cfg, &opts, None)?.0,
        };
        let head = LabelAttentionHead::trainable(&varmap, head, head_init)?;
        Ok(Self {
            varmap,
            net: Classifier { encoder, head },
            encoder_cfg: encoder_cfg.clone(),
        })
    }

    /// The network (use [`Mode::Train`] for training steps, [`Mode::Eval`] for validation; the
    /// eval mode here uses unfused projections, so it sees the current weights).
    pub fn network(&self) -> &Classifier {
        &self.net
    }

    /// The encoder config.
    pub fn encoder_config(&self) -> &BertConfig {
        &self.encoder_cfg
    }

    /// The variable map.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
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

    /// Detached copies of every variable, named, sorted by name (for saving).
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .named_vars()?
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect())
    }
}

/// [`SentenceScorer`] over a trained classifier artifact (the seeds' ensemble).
///
/// Per sentence: the ensemble probability of every label, best first, at most `top_k`.
/// Confidence and `raw_score` are the probability. With a `label_space`, a label outside it
/// counts as its parent when the parent is in it (as the other scorers), else it is dropped.
pub struct ClassifierScorer {
    artifact: Artifact,
    /// At most this many techniques per sentence. Default 10.
    pub top_k: usize,
    /// When set, only these techniques are proposed.
    pub label_space: Option<BTreeSet<TechniqueId>>,
    /// Name the seeds' agreement as evidence. Default true.
    pub with_evidence: bool,
}

impl ClassifierScorer {
    /// A scorer over `artifact`.
    pub fn new(artifact: Artifact) -> Self {
        Self {
            artifact,
            top_k: 10,
            label_space: None,
            with_evidence: true,
        }
    }

    /// The artifact.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// The threshold tuned on validation when the artifact was trained.
    pub fn tuned_threshold(&self) -> f32 {
        self.artifact.manifest().thresholds.tuned
    }

    /// Every label's probability from one row of `probs` (the artifact's label order), mapped
    /// into `label_space` as [`SentenceScorer::score`] does (a label outside it counts as its
    /// parent, keeping the higher probability, or is dropped), best first, without `top_k`.
    pub fn label_scores(&self, probs: &[f32]) -> Vec<(TechniqueId, f32)> {
        let labels = self.artifact.labels();
        let mut best: Vec<(TechniqueId, f32)> = Vec::new();
        // Position of each id in `best` (labels are unique, but two may map to one parent).
        let mut at: std::collections::HashMap<TechniqueId, usize> =
            std::collections::HashMap::with_capacity(labels.len());
        for (label, &p) in labels.iter().zip(probs) {
            let Some(id) = ttpmap_core::pipeline::in_label_space(label, self.label_space.as_ref())
            else {
                continue;
            };
            match at.get(&id) {
                Some(&i) => best[i].1 = best[i].1.max(p),
                None => {
                    at.insert(id.clone(), best.len());
                    best.push((id, p));
                }
            }
        }
        best.sort_by(|a, b| ttpmap_core::pipeline::rank_order((&a.0, a.1), (&b.0, b.1)));
        best
    }

    /// The ensemble's two thresholds as core's operating points.
    pub fn operating_points(&self) -> ttpmap_core::protocol::OperatingPoints {
        let t = self.artifact.manifest().thresholds;
        ttpmap_core::protocol::OperatingPoints {
            default: t.default,
            tuned: t.tuned,
        }
    }

    /// What the artifact records about each seed: kept weights (manifest), training time and
    /// own tuned threshold (results.json read typed, [`Artifact::training_results`]). Without a
    /// results.json, or with one that is not [`crate::artifact::TrainingResults`] (written
    /// before per-seed figures were kept, or by a newer ttpmap), the seeds have neither, and
    /// a warning names the file's problem: the per-seed scores then use the ensemble's
    /// threshold.
    pub fn seed_infos(&self) -> Result<Vec<ttpmap_core::protocol::SeedInfo>> {
        let results = self.artifact.training_results().unwrap_or_else(|e| {
            tracing::warn!("{e}; each seed is scored at the ensemble's threshold");
            None
        });
        let recorded = |seed: u64| {
            results
                .as_ref()
                .and_then(|r| r.seeds.iter().find(|s| s.seed == seed))
        };
        Ok(self
            .artifact
            .manifest()
            .seeds
            .iter()
            .map(|entry| {
                let recorded = recorded(entry.seed);
                ttpmap_core::protocol::SeedInfo {
                    seed: entry.seed,
                    selected: entry.selected.clone(),
                    train_seconds: recorded.map(|r| r.seconds),
                    own_threshold: recorded.map(|r| r.validation.tuned_threshold),
                }
            })
            .collect())
    }

    /// The ensemble's scores of every sentence of `ds` and, with more than one seed, each
    /// seed's own (`[seed][sentence]`, empty for one seed). Every label is scored (no top-k
    /// cut), mapped into the label space; tokenised once for all seeds. `progress` gets the
    /// sentences done.
    pub fn score_dataset_per_seed(
        &self,
        ds: &ttpmap_core::dataset::Dataset,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<ScoredSentence>, Vec<Vec<ScoredSentence>>)> {
        let sentences: Vec<_> = ds.documents.iter().flat_map(|d| &d.sentences).collect();
        let seeds = self.artifact.models().len();
        let mut ensemble = Vec::with_capacity(sentences.len());
        let mut per_seed =
            vec![Vec::with_capacity(sentences.len()); if seeds > 1 { seeds } else { 0 }];
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        let encodings = self.artifact.encode(&texts)?;
        for (chunk, enc) in sentences.chunks(256).zip(encodings.chunks(256)) {
            let probs = self.artifact.predict_per_seed_encoded(enc)?;
            let mean = crate::artifact::ensemble_mean(&probs);
            for (i, s) in chunk.iter().enumerate() {
                let row = |p: &[f32]| ScoredSentence {
                    doc: s.doc.clone(),
                    gold: s.labels.iter().cloned().collect(),
                    scores: self.label_scores(p),
                };
                ensemble.push(row(&mean[i]));
                for (out, seed_probs) in per_seed.iter_mut().zip(&probs) {
                    out.push(row(&seed_probs[i]));
                }
            }
            progress(ensemble.len());
        }
        Ok((ensemble, per_seed))
    }

    fn predictions(&self, probs: &[f32]) -> Vec<Prediction> {
        let seeds = self.artifact.models().len();
        self.label_scores(probs)
            .into_iter()
            .take(self.top_k)
            .map(|(technique, p)| Prediction {
                technique,
                score: p.clamp(0.0, 1.0),
                raw_score: p,
                evidence: Evidence {
                    method: "classifier".into(),
                    reasons: if self.with_evidence {
                        vec![format!("probability {p:.3} (mean of {seeds} seeds)")]
                    } else {
                        Vec::new()
                    },
                },
            })
            .collect()
    }
}

impl SentenceScorer for ClassifierScorer {
    fn name(&self) -> &str {
        "classifier"
    }

    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        let probs = self.artifact.predict_proba(sentences).map_err(|e| {
            ttpmap_core::Error::model(self.artifact.dir(), "classifying sentences", e)
        })?;
        Ok(probs.iter().map(|p| self.predictions(p)).collect())
    }

    /// The threshold tuned on the artifact's validation split.
    fn default_threshold(&self) -> f32 {
        self.tuned_threshold()
    }

    /// Trained on single sentences of at most `max_length` tokens, like the default model: a
    /// longer passage is read sentence by sentence (best sentence per technique, its document
    /// rule), one that fits whole.
    fn reads_whole(&self, passage: &str) -> bool {
        self.artifact.fits(passage).unwrap_or(true)
    }

    fn configure(&mut self, options: &ScoreOptions) {
        options.store(
            &mut self.top_k,
            &mut self.with_evidence,
            &mut self.label_space,
        );
    }

    ttpmap_core::impl_scorer_any!();
}
