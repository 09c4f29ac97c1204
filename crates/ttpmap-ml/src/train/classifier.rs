//! Training of the label-attention classifier (the CASSANDRA recipe): per seed, the shared
//! loop ([`crate::train::fit`]) with AdamW, layer-wise LR decay, warmup + linear decay,
//! gradient clipping, EMA and SWA; the best of {base, EMA, SWA} by validation macro-F1 at 0.5
//! is kept per seed; the global threshold is tuned on the ensemble's validation probabilities.
//!
//! Owns [`ClassifierTrainConfig`] (serde, every recipe value as default), [`TrainData`],
//! [`fit`], the progress events ([`TrainEvent`]) and the classifier's [`Trainee`] (batches of
//! labelled plus resampled unlabelled sentences grouped by length, the configured loss, the
//! frozen lower layers' cached states). Checkpoints are the loop's, one run per seed:
//! `<checkpoint_dir>/seed-<n>.ckpt.safetensors` on interrupt ([`Error::Interrupted`]; `resume`
//! continues it, refusing another config or data); finished seeds are kept as
//! `seed-<n>.done.safetensors` (selected weights, validation probabilities, result) and reused
//! on resume. The library never prints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use ttpmap_core::eval::{self, ScoredSentence};
use ttpmap_core::protocol::sentences;
use ttpmap_core::TechniqueId;

use crate::artifact::NamedTensors;
use crate::classifier::{predict_encoded, Classifier, TrainableClassifier};
use crate::encoder::bert::Mode;
use crate::head::{queries_from_vectors, HeadConfig, HeadInit};
use crate::tokenize::{Encoded, TextTokenizer};
use crate::train::fit::{self, LoopConfig, LoopEvent, LoopSetup, Selection, Trainee};
use crate::train::{checkpoint, AdamWConfig, LlrdConfig, LossConfig};
use crate::{Error, Result};

/// Training settings; every default is the recipe's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierTrainConfig {
    /// Loss. Default ASL (gamma_neg 4, gamma_pos 0, clip 0.05).
    pub loss: LossConfig,
    /// Learning rates and layer-wise decay. Default encoder 5e-5, head 1e-3, decay 0.85.
    pub llrd: LlrdConfig,
    /// AdamW moments. Default betas (0.9, 0.999), eps 1e-8.
    pub adamw: AdamWConfig,
    /// Fraction of the steps spent warming up. Default 0.1.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm. Default 1.0.
    pub clip_norm: f64,
    /// EMA decay. Default 0.999.
    pub ema_beta: f64,
    /// SWA averages the weights at the end of the last this fraction of epochs. Default 0.25.
    pub swa_fraction: f64,
    /// Epochs. Default 10.
    pub epochs: usize,
    /// Sentences per step. Default 16.
    pub batch_size: usize,
    /// Tokens per sentence. Default 64.
    pub max_length: usize,
    /// Seeds of the ensemble. Default [42, 123, 456].
    pub seeds: Vec<u64>,
    /// Share of the training sentences held out for validation (sentence-level). Default 0.2.
    pub validation_fraction: f64,
    /// Seed of the validation split. Default 42.
    pub split_seed: u64,
    /// Unlabelled sentences used per epoch, as a multiple of the labelled ones (resampled each
    /// epoch); `None` keeps all. Default Some(1.0).
    pub unlabelled_ratio: Option<f64>,
    /// Initialise label queries from the encoder's embedding of each label's text. Default true.
    pub init_queries_from_text: bool,
    /// L2 norm of each initial query; `None`: sqrt(hidden_size). Default None.
    pub query_norm: Option<f64>,
    /// Dropout on the head's label representations. Default 0.1.
    pub head_dropout: f64,
    /// Add ATT&CK procedure examples (up to this many per label) to the training data.
    /// Default 0.
    pub augment_procedures: usize,
    /// Add each label's technique description as a training sentence. Default false.
    pub augment_descriptions: bool,
    /// Sentences per forward pass at validation. Default 64.
    pub eval_batch_size: usize,
    /// Freeze the embeddings and this many lowest transformer layers: their output is computed
    /// once per sentence (eval mode, no dropout) and cached, and only the layers above and the
    /// head are trained, which makes a step several times cheaper on a CPU. 0 trains the whole
    /// encoder (the recipe); the encoder's layer count freezes it entirely (head only).
    /// Default 0.
    pub frozen_layers: usize,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::default(),
            llrd: LlrdConfig::default(),
            adamw: AdamWConfig::default(),
            warmup_fraction: 0.1,
            clip_norm: 1.0,
            ema_beta: 0.999,
            swa_fraction: 0.25,
            epochs: 10,
            batch_size: 16,
            max_length: 64,
            seeds: vec![42, 123, 456],
            validation_fraction: 0.2,
            split_seed: 42,
            unlabelled_ratio: Some(1.0),
            init_queries_from_text: true,
            query_norm: None,
            head_dropout: 0.1,
            augment_procedures: 0,
            augment_descriptions: false,
            eval_batch_size: 64,
            frozen_layers: 0,
        }
    }
}

impl ClassifierTrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.epochs == 0 || self.batch_size == 0 || self.seeds.is_empty() {
            return bad("epochs, batch_size and seeds must be non-zero / non-empty".into());
        }
        if !(0.0..=1.0).contains(&self.swa_fraction) || !(0.0..1.0).contains(&self.warmup_fraction)
        {
            return bad(format!(
                "swa_fraction {} must be in [0, 1] and warmup_fraction {} in [0, 1)",
                self.swa_fraction, self.warmup_fraction
            ));
        }
        if !(0.0..1.0).contains(&self.ema_beta) {
            return bad(format!("ema_beta {} must be in [0, 1)", self.ema_beta));
        }
        Ok(())
    }
}

/// One training or validation sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Document id (validation per-document F1 groups by it).
    pub doc: String,
    /// The sentence.
    pub text: String,
    /// Its techniques (empty: unlabelled).
    pub labels: Vec<TechniqueId>,
    /// The labels its annotators assigned from, when their source was annotated for a fixed
    /// label set (TRAM2's 50 techniques): the sentence is a negative only for these, other
    /// labels are unknown (no loss, and not scored in validation). `None`: every label.
    pub label_space: Option<Arc<BTreeSet<TechniqueId>>>,
    /// Labels left out of this sentence's training loss although its source annotated them:
    /// its gold cannot say no to them (a parent technique's sub-techniques when only the
    /// parent is labelled; [`crate::train::data::CatalogDataConfig`]). Validation ignores it.
    /// `None`: none.
    pub unknown: Option<Arc<BTreeSet<TechniqueId>>>,
}

impl Example {
    /// An example whose source was annotated over every label.
    pub fn new(doc: impl Into<String>, text: impl Into<String>, labels: Vec<TechniqueId>) -> Self {
        Self {
            doc: doc.into(),
            text: text.into(),
            labels,
            label_space: None,
            unknown: None,
        }
    }

    /// Whether `label` was annotated for this sentence (its gold says yes or no for it).
    pub fn annotates(&self, label: &TechniqueId) -> bool {
        self.label_space.as_ref().is_none_or(|s| s.contains(label))
    }
}

/// Prepared data: the label set, one text per label (for query initialisation), the training
/// sentences (augmentation included) and the validation sentences.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// Labels in output order.
    pub labels: Vec<TechniqueId>,
    /// One text per label, e.g. `"T1059.001 PowerShell. <first sentence>"`.
    pub label_texts: Vec<String>,
    /// Training sentences.
    pub train: Vec<Example>,
    /// Validation sentences.
    pub validation: Vec<Example>,
}

/// Progress of [`fit`] (and of `job::train_classifier`, which sends `Prepared` first).
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// The data is ready: training and validation sentences, labels.
    Prepared {
        train: usize,
        validation: usize,
        labels: usize,
    },
    /// Frozen lower layers: `done` of `total` sentences' hidden states cached.
    Cache {
        seed: u64,
        done: usize,
        total: usize,
    },
    /// Seed `seed` (`index` of `of`) in the shared loop: its start (steps planned), each
    /// step, each epoch (the score is the validation macro-F1 at 0.5 of the current weights).
    Seed {
        seed: u64,
        index: usize,
        of: usize,
        event: LoopEvent,
    },
    /// A seed ended.
    SeedDone(SeedResult),
}

/// Outcome of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    /// `base`, `ema` or `swa`.
    pub selected: String,
    /// Validation macro-F1 at 0.5 of each variant evaluated.
    pub val_macro_f1: BTreeMap<String, f64>,
    /// Seconds of training.
    pub seconds: f64,
    /// The selected weights alone on the validation split (their own tuned threshold).
    pub validation: ValidationMetrics,
}

/// Scores of validation probabilities: per-document F1 (in-vocabulary over the model's labels)
/// and sentence micro/macro F1, at 0.5 and at the threshold tuned on these probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationMetrics {
    /// Threshold maximising per-document F1 over [`eval::default_grid`].
    pub tuned_threshold: f32,
    pub per_document_f1_in_vocabulary_tuned: f64,
    pub per_document_f1_in_vocabulary_at_0_5: f64,
    pub micro_f1_tuned: f64,
    pub macro_f1_tuned: f64,
    pub micro_f1_at_0_5: f64,
    pub macro_f1_at_0_5: f64,
}

/// [`ValidationMetrics`] of `probs` (`[sentence][label]`) on `data`: the evaluation protocol's
/// own threshold tuning and metrics ([`sentences::point_metrics_at`]), on the model's labels.
pub fn validation_metrics(
    probs: &[Vec<f32>],
    data: &[Example],
    labels: &[TechniqueId],
) -> Result<ValidationMetrics> {
    let samples = scored(probs, data, labels);
    let vocab: BTreeSet<TechniqueId> = labels.iter().cloned().collect();
    let tuned = sentences::tune_document_threshold(&samples, &vocab)?;
    let at_tuned = sentences::point_metrics_at(&samples, tuned.threshold, labels)?;
    let at_half = sentences::point_metrics_at(&samples, 0.5, labels)?;
    Ok(ValidationMetrics {
        tuned_threshold: tuned.threshold,
        per_document_f1_in_vocabulary_tuned: at_tuned.per_document_f1_in_vocabulary.mean_f1,
        per_document_f1_in_vocabulary_at_0_5: at_half.per_document_f1_in_vocabulary.mean_f1,
        micro_f1_tuned: at_tuned.sentence.micro.f1,
        macro_f1_tuned: at_tuned.sentence.macro_.f1,
        micro_f1_at_0_5: at_half.sentence.micro.f1,
        macro_f1_at_0_5: at_half.sentence.macro_.f1,
    })
}

/// Everything [`fit`] produced.
#[derive(Debug, Clone)]
pub struct FitOutcome {
    /// Per seed: result and the selected weights (named, sorted).
    pub seeds: Vec<(SeedResult, Vec<(String, Tensor)>)>,
    /// Ensemble validation probabilities `[sentence][label]`.
    pub validation_probs: Vec<Vec<f32>>,
    /// Global threshold tuned on validation (per-document F1, in-vocabulary).
    pub tuned_threshold: f32,
    /// The ensemble on the validation split (`tuned_threshold` is its threshold).
    pub validation: ValidationMetrics,
}

pub use crate::train::fit::FitSetup;

/// The batch's 0/1 targets, and its loss mask when a member was annotated for a fixed label
/// set (1 where the label was annotated, 0 where it is unknown).
fn targets(
    examples: &[&Example],
    index: &HashMap<&TechniqueId, usize>,
    l: usize,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut t = vec![0f32; examples.len() * l];
    for (i, e) in examples.iter().enumerate() {
        for lab in &e.labels {
            if let Some(&j) = index.get(lab) {
                t[i * l + j] = 1.0;
            }
        }
    }
    let mask = if examples
        .iter()
        .any(|e| e.label_space.is_some() || e.unknown.is_some())
    {
        let mut m = vec![1f32; examples.len() * l];
        for (i, e) in examples.iter().enumerate() {
            let row = &mut m[i * l..(i + 1) * l];
            if let Some(space) = &e.label_space {
                row.fill(0.0);
                for lab in space.iter().chain(&e.labels) {
                    if let Some(&j) = index.get(lab) {
                        row[j] = 1.0;
                    }
                }
            }
            for lab in e.unknown.iter().flat_map(|u| u.iter()) {
                if let Some(&j) = index.get(lab) {
                    if !e.labels.contains(lab) {
                        row[j] = 0.0;
                    }
                }
            }
        }
        Some(Tensor::from_vec(m, (examples.len(), l), &Device::Cpu)?)
    } else {
        None
    };
    Ok((
        Tensor::from_vec(t, (examples.len(), l), &Device::Cpu)?,
        mask,
    ))
}

/// Batches of one epoch: labelled sentences plus a seeded sample of unlabelled ones, grouped
/// by token length (sorted with random tie-breaks, cut into batches), batch order shuffled.
fn epoch_batches(
    data: &[Example],
    enc: &[Encoded],
    cfg: &ClassifierTrainConfig,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
    let (mut labelled, mut unlabelled): (Vec<usize>, Vec<usize>) =
        (0..data.len()).partition(|&i| !data[i].labels.is_empty());
    if let Some(r) = cfg.unlabelled_ratio {
        unlabelled.shuffle(&mut rng);
        unlabelled.truncate((labelled.len() as f64 * r).ceil() as usize);
    }
    labelled.extend(unlabelled);
    labelled.shuffle(&mut rng);
    labelled.sort_by_key(|&i| enc[i].ids.len());
    let mut batches: Vec<Vec<usize>> = labelled
        .chunks(cfg.batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    batches.shuffle(&mut rng);
    batches
}

fn macro_f1(probs: &[Vec<f32>], data: &[Example], labels: &[TechniqueId], t: f32) -> Result<f64> {
    let gold: Vec<BTreeSet<TechniqueId>> = data
        .iter()
        .map(|e| e.labels.iter().cloned().collect())
        .collect();
    let pred: Vec<BTreeSet<TechniqueId>> = probs
        .iter()
        .zip(data)
        .map(|(row, e)| {
            row.iter()
                .zip(labels)
                .filter(|(p, l)| **p >= t && e.annotates(l))
                .map(|(_, l)| l.clone())
                .collect()
        })
        .collect();
    Ok(eval::multilabel_prf(&gold, &pred, Some(labels))?.macro_.f1)
}

fn scored(probs: &[Vec<f32>], data: &[Example], labels: &[TechniqueId]) -> Vec<ScoredSentence> {
    probs
        .iter()
        .zip(data)
        .map(|(row, e)| ScoredSentence {
            doc: e.doc.clone(),
            gold: e.labels.iter().cloned().collect(),
            scores: labels
                .iter()
                .cloned()
                .zip(row.iter().copied())
                .filter(|(l, _)| e.annotates(l))
                .collect(),
        })
        .collect()
}

/// Hidden states entering layer `layers` of every encoding (unpadded `[len, hidden]`, detached),
/// computed in length-sorted eval batches.
fn cache_states(
    net: &Classifier,
    tokenizer: &TextTokenizer,
    encodings: &[Encoded],
    layers: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Tensor>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let mut out: Vec<Option<Tensor>> = vec![None; encodings.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size.max(1)) {
        let members: Vec<Encoded> = chunk.iter().map(|&i| encodings[i].clone()).collect();
        let batch = tokenizer.pad(&members, &Device::Cpu)?;
        let hidden = net.lower_states(&batch, layers)?;
        for (j, &i) in chunk.iter().enumerate() {
            let len = encodings[i].ids.len();
            out[i] = Some(hidden.get(j)?.narrow(0, 0, len)?.contiguous()?);
        }
        done += chunk.len();
        progress(done);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Cached states of `idx` zero-padded to the longest: `[batch, longest, hidden]`.
fn stack_states(cache: &[Tensor], idx: &[usize]) -> Result<Tensor> {
    let longest = idx.iter().map(|&i| cache[i].dims()[0]).max().unwrap_or(0);
    let padded = idx
        .iter()
        .map(|&i| {
            let t = &cache[i];
            Ok(t.pad_with_zeros(0, 0, longest - t.dims()[0])?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&padded, 0)?)
}

/// Validation probabilities: the full network, or the top layers over cached states.
fn predict_validation(
    net: &Classifier,
    tokenizer: &TextTokenizer,
    encodings: &[Encoded],
    cache: Option<(&[Tensor], usize)>,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let Some((states, layer)) = cache else {
        return predict_encoded(net, tokenizer, encodings, batch_size, &Device::Cpu);
    };
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].ids.len());
    let mut out = vec![Vec::new(); encodings.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let members: Vec<Encoded> = chunk.iter().map(|&i| encodings[i].clone()).collect();
        let batch = tokenizer.pad(&members, &Device::Cpu)?;
        let hidden = stack_states(states, chunk)?;
        let logits = net.forward_from(&hidden, &batch.attention_mask, layer, Mode::Eval)?;
        let probs = candle_nn::ops::sigmoid(&logits)?;
        for (&i, row) in chunk.iter().zip(probs.to_vec2::<f32>()?) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// Whether variable `name` (as named by [`TrainableClassifier`]) lies in the embeddings or the
/// first `frozen` transformer layers.
fn is_frozen(name: &str, frozen: usize) -> bool {
    if frozen == 0 {
        return false;
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.first() != Some(&"encoder") {
        return false;
    }
    if parts.contains(&"embeddings") {
        return true;
    }
    parts
        .windows(2)
        .find(|w| w[0] == "layer")
        .and_then(|w| w[1].parse::<usize>().ok())
        .is_some_and(|l| l < frozen)
}

/// sha256 of what a checkpoint depends on: the config (seeds aside: each checkpoint is one
/// seed's), the labels and every training and validation sentence with its labels. Resuming
/// from a checkpoint with another fingerprint would mix runs, so it is refused.
fn fingerprint(cfg: &ClassifierTrainConfig, data: &TrainData) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut c = cfg.clone();
    c.seeds.clear();
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&c).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    for l in &data.labels {
        h.update(l.to_string().as_bytes());
        h.update([0]);
    }
    for (tag, set) in [(1u8, &data.train), (2u8, &data.validation)] {
        for e in set {
            h.update([tag]);
            h.update(e.text.as_bytes());
            for l in &e.labels {
                h.update([0]);
                h.update(l.to_string().as_bytes());
            }
            if let Some(space) = &e.label_space {
                h.update([1]);
                for l in space.iter() {
                    h.update([0]);
                    h.update(l.to_string().as_bytes());
                }
            }
            if let Some(unknown) = &e.unknown {
                h.update([2]);
                for l in unknown.iter() {
                    h.update([0]);
                    h.update(l.to_string().as_bytes());
                }
            }
            h.update([0xff]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn ckpt_path(dir: &Path, seed: u64, kind: &str) -> PathBuf {
    dir.join(format!("seed-{seed}.{kind}.safetensors"))
}

/// One seed's classifier as a [`Trainee`] of the shared loop.
struct SeedTrainee<'a> {
    tc: TrainableClassifier,
    seed: u64,
    cfg: &'a ClassifierTrainConfig,
    data: &'a TrainData,
    tokenizer: &'a TextTokenizer,
    enc: &'a [Encoded],
    venc: &'a [Encoded],
    index: &'a HashMap<&'a TechniqueId, usize>,
    /// Cached training and validation states below layer `cfg.frozen_layers`.
    cache: Option<(&'a [Tensor], &'a [Tensor])>,
}

impl Trainee for SeedTrainee<'_> {
    type Batch = Vec<usize>;
    /// Validation probabilities `[sentence][label]`.
    type Validation = Vec<Vec<f32>>;

    fn variables(&self) -> Result<Vec<(String, Var)>> {
        self.tc.named_vars()
    }

    fn trainable(&self) -> Result<Vec<(String, Var)>> {
        let mut named = self.tc.named_vars()?;
        named.retain(|(n, _)| !is_frozen(n, self.cfg.frozen_layers));
        Ok(named)
    }

    fn batches(&self, epoch: usize) -> Result<Vec<Vec<usize>>> {
        Ok(epoch_batches(
            &self.data.train,
            self.enc,
            self.cfg,
            self.seed,
            epoch,
        ))
    }

    fn loss(&self, batch_idx: &Vec<usize>) -> Result<Tensor> {
        let net = self.tc.network();
        let members: Vec<Encoded> = batch_idx.iter().map(|&i| self.enc[i].clone()).collect();
        let ex: Vec<&Example> = batch_idx.iter().map(|&i| &self.data.train[i]).collect();
        let batch = self.tokenizer.pad(&members, &Device::Cpu)?;
        let logits = match self.cache {
            Some((states, _)) => net.forward_from(
                &stack_states(states, batch_idx)?,
                &batch.attention_mask,
                self.cfg.frozen_layers,
                Mode::Train,
            )?,
            None => net.forward(&batch, Mode::Train)?,
        };
        let l = self.data.labels.len();
        let (t, mask) = targets(&ex, self.index, l)?;
        self.cfg.loss.compute_masked(&logits, &t, mask.as_ref())
    }

    /// Validation macro-F1 at 0.5.
    fn validate(&self) -> Result<(f64, Vec<Vec<f32>>)> {
        let probs = predict_validation(
            self.tc.network(),
            self.tokenizer,
            self.venc,
            self.cache.map(|(_, v)| (v, self.cfg.frozen_layers)),
            self.cfg.eval_batch_size,
        )?;
        let f = macro_f1(&probs, &self.data.validation, &self.data.labels, 0.5)?;
        Ok((f, probs))
    }

    fn weights(&self) -> Result<Vec<(String, Tensor)>> {
        self.tc.tensors()
    }
}

/// Reads a finished seed (`seed-<n>.done.safetensors`): its result and selected weights, and
/// its validation probabilities.
fn load_done(
    path: &Path,
    seed: u64,
    fp: &str,
    data: &TrainData,
) -> Result<(SeedResult, NamedTensors, Vec<Vec<f32>>)> {
    let l = data.labels.len();
    let (tensors, meta) = checkpoint::load_safetensors(path, &Device::Cpu)?;
    checkpoint::check_fingerprint(path, &meta, fp)?;
    let probs: Vec<Vec<f32>> = tensors
        .get("__val_probs")
        .ok_or_else(|| Error::Artifact {
            path: path.to_path_buf(),
            message: "no __val_probs".into(),
        })?
        .to_vec2()?;
    if probs.len() != data.validation.len() || probs.iter().any(|r| r.len() != l) {
        return Err(Error::Artifact {
            path: path.to_path_buf(),
            message: format!(
                "validation probabilities are not {} x {l}",
                data.validation.len()
            ),
        });
    }
    let mut w: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(n, _)| n != "__val_probs")
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    let result = SeedResult {
        seed,
        selected: meta.get("selected").cloned().unwrap_or_default(),
        val_macro_f1: meta
            .get("val_macro_f1")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        seconds: meta
            .get("seconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
        validation: validation_metrics(&probs, &data.validation, &data.labels)?,
    };
    Ok((result, w, probs))
}

/// Writes a finished seed: its selected weights, validation probabilities and result.
fn save_done(
    path: &Path,
    fp: &str,
    result: &SeedResult,
    weights: &[(String, Tensor)],
    probs: &[Vec<f32>],
    l: usize,
) -> Result<()> {
    let mut done_tensors = weights.to_vec();
    let vp = Tensor::from_vec(
        probs.iter().flatten().copied().collect::<Vec<f32>>(),
        (probs.len(), l),
        &Device::Cpu,
    )?;
    done_tensors.push(("__val_probs".into(), vp));
    let meta = BTreeMap::from([
        ("selected".to_string(), result.selected.clone()),
        ("fingerprint".to_string(), fp.to_string()),
        (
            "val_macro_f1".to_string(),
            serde_json::to_string(&result.val_macro_f1).unwrap_or_default(),
        ),
        ("seconds".to_string(), result.seconds.to_string()),
    ]);
    checkpoint::save_safetensors_atomic(path, &done_tensors, &meta)
}

/// Label queries from the encoder's embedding of each label text (`None`: random init).
fn initial_queries(
    setup: &FitSetup,
    data: &TrainData,
    cfg: &ClassifierTrainConfig,
) -> Result<Option<Tensor>> {
    if !cfg.init_queries_from_text {
        return Ok(None);
    }
    let l = data.labels.len();
    if data.label_texts.len() != l {
        return Err(Error::InvalidArgument(format!(
            "{} label texts for {l} labels",
            data.label_texts.len()
        )));
    }
    let Some(md) = setup.model else {
        return Ok(None);
    };
    let emb = crate::Embedder::from_model_dir(
        md,
        crate::EmbedderConfig {
            max_length: 128,
            ..Default::default()
        },
        &Device::Cpu,
    )?;
    let t: Vec<&str> = data.label_texts.iter().map(String::as_str).collect();
    let vectors = emb.encode(&t)?;
    if vectors.is_empty() {
        return Ok(None);
    }
    let h = setup.encoder_config.hidden_size as f64;
    Ok(Some(queries_from_vectors(
        &vectors,
        cfg.query_norm.unwrap_or(h.sqrt()),
    )?))
}

/// Hidden states entering layer `cfg.frozen_layers` of the training and validation sentences.
fn frozen_states(
    net: &Classifier,
    tokenizer: &TextTokenizer,
    (enc, venc): (&[Encoded], &[Encoded]),
    cfg: &ClassifierTrainConfig,
    seed: u64,
    progress: &mut dyn FnMut(&TrainEvent),
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let total = enc.len() + venc.len();
    let t = cache_states(
        net,
        tokenizer,
        enc,
        cfg.frozen_layers,
        cfg.eval_batch_size,
        &mut |done| progress(&TrainEvent::Cache { seed, done, total }),
    )?;
    let v = cache_states(
        net,
        tokenizer,
        venc,
        cfg.frozen_layers,
        cfg.eval_batch_size,
        &mut |done| {
            progress(&TrainEvent::Cache {
                seed,
                done: enc.len() + done,
                total,
            })
        },
    )?;
    Ok((t, v))
}

/// Trains every seed of `cfg` on `data` and tunes the threshold on the validation sentences.
pub fn fit(
    setup: &FitSetup,
    data: &TrainData,
    cfg: &ClassifierTrainConfig,
    progress: &mut dyn FnMut(&TrainEvent),
) -> Result<FitOutcome> {
    cfg.validate()?;
    if data.labels.is_empty() || data.train.is_empty() || data.validation.is_empty() {
        return Err(Error::InvalidArgument(
            "training needs labels, training sentences and validation sentences".into(),
        ));
    }
    let l = data.labels.len();
    let h = setup.encoder_config.hidden_size;
    let frozen = cfg.frozen_layers;
    if frozen > setup.encoder_config.num_hidden_layers {
        return Err(Error::InvalidArgument(format!(
            "frozen_layers {frozen} exceeds the encoder's {} layers",
            setup.encoder_config.num_hidden_layers
        )));
    }
    // Frozen states depend only on the pretrained weights, so seeds share them; a random
    // encoder (tests) is drawn per seed and gets its own.
    let mut shared_cache: Option<(Vec<Tensor>, Vec<Tensor>)> = None;
    let index: HashMap<&TechniqueId, usize> = data
        .labels
        .iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let texts: Vec<&str> = data.train.iter().map(|e| e.text.as_str()).collect();
    let enc = setup.tokenizer.encode_all(&texts)?;
    let vtexts: Vec<&str> = data.validation.iter().map(|e| e.text.as_str()).collect();
    let venc = setup.tokenizer.encode_all(&vtexts)?;
    let queries = initial_queries(setup, data, cfg)?;
    let head_cfg = HeadConfig {
        num_labels: l,
        hidden_size: h,
        dropout: cfg.head_dropout,
    };
    let fp = fingerprint(cfg, data)?;
    let loop_cfg = LoopConfig {
        epochs: cfg.epochs,
        warmup_fraction: cfg.warmup_fraction,
        clip_norm: cfg.clip_norm,
        llrd: cfg.llrd,
        adamw: cfg.adamw,
        num_layers: setup.encoder_config.num_hidden_layers,
        selection: Selection::Averages {
            ema_beta: cfg.ema_beta,
            swa_fraction: cfg.swa_fraction,
        },
    };
    let mut seeds_out = Vec::new();
    let mut per_seed_probs = Vec::new();
    for (si, &seed) in cfg.seeds.iter().enumerate() {
        let done_path = ckpt_path(&setup.checkpoint_dir, seed, "done");
        if setup.resume && done_path.is_file() {
            let (result, w, probs) = load_done(&done_path, seed, &fp, data)?;
            per_seed_probs.push(probs);
            progress(&TrainEvent::SeedDone(result.clone()));
            seeds_out.push((result, w));
            continue;
        }
        let started = Instant::now();
        let tc = TrainableClassifier::new(
            &setup.encoder_config,
            &head_cfg,
            setup.model,
            seed,
            &HeadInit {
                seed,
                queries: queries.clone(),
            },
        )?;
        if frozen > 0 && (shared_cache.is_none() || setup.model.is_none()) {
            shared_cache = Some(frozen_states(
                tc.network(),
                setup.tokenizer,
                (&enc, &venc),
                cfg,
                seed,
                progress,
            )?);
        }
        let trainee = SeedTrainee {
            tc,
            seed,
            cfg,
            data,
            tokenizer: setup.tokenizer,
            enc: &enc,
            venc: &venc,
            index: &index,
            cache: shared_cache
                .as_ref()
                .filter(|_| frozen > 0)
                .map(|(t, v)| (t.as_slice(), v.as_slice())),
        };
        let loop_setup = LoopSetup {
            dir: &setup.checkpoint_dir,
            stem: format!("seed-{seed}"),
            seed,
            fingerprint: fp.clone(),
            resume: setup.resume,
            interrupt: setup.interrupt,
        };
        let out = fit::run(&trainee, &loop_cfg, &loop_setup, &mut |e| {
            progress(&TrainEvent::Seed {
                seed,
                index: si,
                of: cfg.seeds.len(),
                event: e.clone(),
            })
        })?;
        let probs = out
            .validation
            .ok_or_else(|| Error::InvalidArgument("no weights variant evaluated".into()))?;
        let result = SeedResult {
            seed,
            selected: out.selected,
            val_macro_f1: out.variant_scores,
            seconds: started.elapsed().as_secs_f64(),
            validation: validation_metrics(&probs, &data.validation, &data.labels)?,
        };
        save_done(&done_path, &fp, &result, &out.weights, &probs, l)?;
        progress(&TrainEvent::SeedDone(result.clone()));
        per_seed_probs.push(probs);
        seeds_out.push((result, out.weights));
    }
    let validation_probs = crate::artifact::ensemble_mean(&per_seed_probs);
    let validation = validation_metrics(&validation_probs, &data.validation, &data.labels)?;
    Ok(FitOutcome {
        seeds: seeds_out,
        validation_probs,
        tuned_threshold: validation.tuned_threshold,
        validation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_mask_only_the_labels_outside_a_sentences_label_space() {
        let labels: Vec<TechniqueId> = ["T1003", "T1059", "T1566"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let index: HashMap<&TechniqueId, usize> =
            labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
        let plain = Example::new("a", "x", vec![labels[1].clone()]);
        let (t, mask) = targets(&[&plain], &index, 3).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), vec![vec![0.0, 1.0, 0.0]]);
        assert!(mask.is_none(), "no fixed label space: no mask");
        let mut fixed = Example::new("b", "y", vec![]);
        fixed.label_space = Some(Arc::new([labels[0].clone(), labels[2].clone()].into()));
        let (t, mask) = targets(&[&plain, &fixed], &index, 3).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 0.0]]
        );
        assert_eq!(
            mask.unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 1.0], vec![1.0, 0.0, 1.0]]
        );
    }

    #[test]
    fn unknown_labels_leave_the_loss_unless_they_are_gold() {
        let labels: Vec<TechniqueId> = ["T1059", "T1059.001", "T1059.003", "T1105"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let index: HashMap<&TechniqueId, usize> =
            labels.iter().enumerate().map(|(i, l)| (l, i)).collect();
        let mut parent = Example::new("a", "x", vec![labels[0].clone()]);
        parent.unknown = Some(Arc::new([labels[1].clone(), labels[2].clone()].into()));
        // A gold label listed as unknown still counts (as a positive).
        let mut both = Example::new("b", "y", vec![labels[2].clone()]);
        both.unknown = Some(Arc::new([labels[1].clone(), labels[2].clone()].into()));
        // With a fixed label space too: the space's rule, then the unknown ones out.
        let mut fixed = Example::new("c", "z", vec![]);
        fixed.label_space = Some(Arc::new([labels[1].clone(), labels[3].clone()].into()));
        fixed.unknown = Some(Arc::new([labels[1].clone()].into()));
        let (t, mask) = targets(&[&parent, &both, &fixed], &index, 4).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![
                vec![1.0, 0.0, 0.0, 0.0],
                vec![0.0, 0.0, 1.0, 0.0],
                vec![0.0, 0.0, 0.0, 0.0]
            ]
        );
        assert_eq!(
            mask.unwrap().to_vec2::<f32>().unwrap(),
            vec![
                vec![1.0, 0.0, 0.0, 1.0],
                vec![1.0, 0.0, 1.0, 1.0],
                vec![0.0, 0.0, 0.0, 1.0]
            ]
        );
    }
}
