//! Fine-tuning loop of the cross-encoder reranker: binary cross-entropy on the logit of each
//! (query, candidate) pair, AdamW (lr 2e-5, weight decay 0.01, none on biases and LayerNorm),
//! batch 16, 3 epochs, 10% linear warmup then linear decay, gradient clipping at 1.0; each epoch
//! resamples the negatives of every query at positives:negatives = 1:2.5 (seeded); the weights
//! of the epoch with the best validation P@1 (the validation queries' candidate sets) are kept.
//!
//! Owns [`RerankerTrainConfig`] (serde, every recipe value as default), [`RerankerTrainData`],
//! [`fit`], the progress events and the cross-encoder's [`Trainee`]; training runs in the
//! shared loop ([`crate::train::fit`]) with best-epoch selection. Checkpoints are the loop's:
//! on interrupt `<checkpoint_dir>/reranker.ckpt.safetensors` ([`Error::Interrupted`]; `resume`
//! continues it, the epoch's pairs and batch order re-derived from the seed; a checkpoint of
//! another config or data is refused); the best epoch's weights so far are kept in
//! `<checkpoint_dir>/reranker.best.safetensors`. The library never prints.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::crossencoder::{logits_encoded, TrainableCrossEncoder};
use crate::encoder::bert::Mode;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::train::fit::{self, FitSetup, LoopConfig, LoopEvent, LoopSetup, Selection, Trainee};
use crate::train::{bce_with_logits, AdamWConfig, LlrdConfig};
use crate::{Error, Result};

/// Training settings; every default is the recipe's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerankerTrainConfig {
    /// Peak learning rate of the encoder. Default 2e-5.
    pub lr: f64,
    /// Peak learning rate of the classification head (`classifier.*`); `None` (default, the
    /// recipe) uses `lr`. A head that starts from random weights on top of a plain encoder
    /// (no pretrained cross-encoder) learns far faster with its own, larger rate.
    pub head_lr: Option<f64>,
    /// Decoupled weight decay of weights (biases and LayerNorm get 0). Default 0.01.
    pub weight_decay: f64,
    /// AdamW moments. Default betas (0.9, 0.999), eps 1e-8.
    pub adamw: AdamWConfig,
    /// Pairs per optimizer step. Default 16.
    pub batch_size: usize,
    /// Epochs. Default 3.
    pub epochs: usize,
    /// Fraction of the steps spent warming up. Default 0.1.
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm. Default 1.0.
    pub clip_norm: f64,
    /// Negatives per positive, resampled each epoch (`round(positives * ratio)` per query).
    /// Default 2.5.
    pub neg_ratio: f64,
    /// Seed of the head initialisation, negative sampling and batch order. Default 42.
    pub seed: u64,
    /// Tokens per pair. Default 256.
    pub max_length: usize,
    /// Pairs per forward pass at validation. Default 32.
    pub eval_batch_size: usize,
}

impl Default for RerankerTrainConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            head_lr: None,
            weight_decay: 0.01,
            adamw: AdamWConfig::default(),
            batch_size: 16,
            epochs: 3,
            warmup_fraction: 0.1,
            clip_norm: 1.0,
            neg_ratio: 2.5,
            seed: 42,
            max_length: 256,
            eval_batch_size: 32,
        }
    }
}

impl RerankerTrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.epochs == 0 || self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("epochs, batch_size and eval_batch_size must be > 0".into());
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad(format!(
                "warmup_fraction {} must be in [0, 1)",
                self.warmup_fraction
            ));
        }
        let lrs = [Some(self.lr), self.head_lr];
        if let Some(bad_lr) = lrs
            .into_iter()
            .flatten()
            .find(|l| !(l.is_finite() && *l > 0.0))
        {
            return bad(format!("learning rate {bad_lr} must be > 0"));
        }
        if !(self.neg_ratio.is_finite() && self.neg_ratio >= 0.0) {
            return bad(format!("neg_ratio {} must be >= 0", self.neg_ratio));
        }
        Ok(())
    }
}

/// One training query: its positive and negative candidate texts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainGroup {
    pub query: String,
    pub positives: Vec<String>,
    pub negatives: Vec<String>,
}

/// One validation query: its candidate set and which candidates are relevant.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationQuery {
    pub query: String,
    pub candidates: Vec<String>,
    pub relevant: Vec<bool>,
}

/// Training and validation queries.
#[derive(Debug, Clone, Default)]
pub struct RerankerTrainData {
    pub train: Vec<TrainGroup>,
    pub validation: Vec<ValidationQuery>,
}

/// Progress of [`fit`] (and of `job::train_reranker`, which sends `Prepared` first).
#[derive(Debug, Clone, PartialEq)]
pub enum RerankerTrainEvent {
    /// The data is ready: training queries (procedure examples included) and validation ones.
    Prepared {
        train_queries: usize,
        procedure_queries: usize,
        validation_queries: usize,
    },
    /// The pairs are encoded: `pairs_per_epoch` (query, candidate) pairs make one epoch.
    Encoded { pairs_per_epoch: usize },
    /// The shared loop: its start, each step, each epoch (the score is the validation P@1 of
    /// the current weights).
    Loop(LoopEvent),
}

/// Everything [`fit`] produced.
#[derive(Debug, Clone)]
pub struct RerankerFitOutcome {
    /// The best epoch's weights, named as Hugging Face names them, sorted.
    pub weights: Vec<(String, Tensor)>,
    /// Epoch (0-based) whose weights were kept.
    pub best_epoch: usize,
    /// Validation P@1 after each epoch run in this call (resumed epochs before it are absent).
    pub val_p_at_1: BTreeMap<usize, f64>,
    /// Mean training loss of each epoch run in this call.
    pub mean_loss: BTreeMap<usize, f64>,
    /// Best validation P@1.
    pub best_val_p_at_1: f64,
    /// Seconds of training in this call.
    pub seconds: f64,
}

/// Where the model comes from and where checkpoints go (the classifier's [`FitSetup`]).
pub type RerankerFitSetup<'a> = FitSetup<'a>;

/// Pre-tokenised training pairs: per group, positive then negative encodings.
struct Encodings {
    pos: Vec<Vec<Encoded>>,
    neg: Vec<Vec<Encoded>>,
}

/// (encoding, label) of one epoch's pairs, cut into batches: every positive plus
/// `round(positives * neg_ratio)` negatives per group (seeded by seed and epoch), grouped by
/// token length (sorted with random tie-breaks), batch order shuffled.
fn epoch_batches<'a>(
    enc: &'a Encodings,
    cfg: &RerankerTrainConfig,
    epoch: usize,
) -> Vec<Vec<(&'a Encoded, f32)>> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut pairs: Vec<(&Encoded, f32)> = Vec::new();
    for (pos, neg) in enc.pos.iter().zip(&enc.neg) {
        pairs.extend(pos.iter().map(|e| (e, 1.0)));
        let n = ((pos.len() as f64) * cfg.neg_ratio).round() as usize;
        let mut idx: Vec<usize> = (0..neg.len()).collect();
        idx.shuffle(&mut rng);
        pairs.extend(idx.into_iter().take(n).map(|i| (&neg[i], 0.0)));
    }
    pairs.shuffle(&mut rng);
    pairs.sort_by_key(|(e, _)| e.ids.len());
    let mut batches: Vec<Vec<(&Encoded, f32)>> =
        pairs.chunks(cfg.batch_size).map(<[_]>::to_vec).collect();
    batches.shuffle(&mut rng);
    batches
}

/// P@1 over validation queries from per-pair logits (a query counts when its highest-scoring
/// candidate, first on ties, is relevant).
pub fn p_at_1(validation: &[ValidationQuery], logits: &[f32]) -> f64 {
    let mut offset = 0;
    let mut hits = 0usize;
    for q in validation {
        let n = q.candidates.len();
        let scores = &logits[offset..offset + n];
        let best = scores
            .iter()
            .enumerate()
            .fold(None::<(usize, f32)>, |acc, (i, &s)| match acc {
                Some((_, b)) if b >= s => acc,
                _ => Some((i, s)),
            });
        if best.is_some_and(|(i, _)| q.relevant.get(i).copied().unwrap_or(false)) {
            hits += 1;
        }
        offset += n;
    }
    hits as f64 / validation.len().max(1) as f64
}

/// sha256 of what a checkpoint depends on: the config and every training and validation query
/// with its candidates. Resuming from a checkpoint with another fingerprint would mix runs, so
/// it is refused.
fn fingerprint(cfg: &RerankerTrainConfig, data: &RerankerTrainData) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(cfg).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    let mut text = |tag: u8, t: &str| {
        h.update([tag]);
        h.update(t.as_bytes());
    };
    for g in &data.train {
        text(1, &g.query);
        g.positives.iter().for_each(|t| text(2, t));
        g.negatives.iter().for_each(|t| text(3, t));
    }
    for q in &data.validation {
        text(4, &q.query);
        for (c, r) in q.candidates.iter().zip(&q.relevant) {
            text(if *r { 5 } else { 6 }, c);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The cross-encoder as a [`Trainee`] of the shared loop.
struct CrossEncoderTrainee<'a> {
    tc: TrainableCrossEncoder,
    enc: &'a Encodings,
    venc: &'a [Encoded],
    tok: &'a TextTokenizer,
    cfg: &'a RerankerTrainConfig,
    validation: &'a [ValidationQuery],
}

impl<'a> Trainee for CrossEncoderTrainee<'a> {
    type Batch = Vec<(&'a Encoded, f32)>;
    type Validation = ();

    fn variables(&self) -> Result<Vec<(String, Var)>> {
        self.tc.named_vars()
    }

    fn batches(&self, epoch: usize) -> Result<Vec<Self::Batch>> {
        Ok(epoch_batches(self.enc, self.cfg, epoch))
    }

    fn loss(&self, batch: &Self::Batch) -> Result<Tensor> {
        let members: Vec<Encoded> = batch.iter().map(|(e, _)| (*e).clone()).collect();
        let labels: Vec<f32> = batch.iter().map(|(_, y)| *y).collect();
        let padded = self.tok.pad(&members, &Device::Cpu)?;
        let logits = self.tc.network().forward(&padded, Mode::Train)?;
        let targets = Tensor::from_vec(labels, members.len(), &Device::Cpu)?;
        bce_with_logits(&logits, &targets, None)
    }

    fn validate(&self) -> Result<(f64, ())> {
        let net = self.tc.network();
        let logits = logits_encoded(
            net,
            self.tok,
            self.venc,
            self.cfg.eval_batch_size,
            &Device::Cpu,
        )?;
        Ok((p_at_1(self.validation, &logits), ()))
    }

    fn weights(&self) -> Result<Vec<(String, Tensor)>> {
        self.tc.tensors()
    }
}

/// Fine-tunes a cross-encoder on `data` (see the module docs).
pub fn fit(
    setup: &RerankerFitSetup,
    data: &RerankerTrainData,
    cfg: &RerankerTrainConfig,
    progress: &mut dyn FnMut(&RerankerTrainEvent),
) -> Result<RerankerFitOutcome> {
    cfg.validate()?;
    if data.train.iter().all(|g| g.positives.is_empty()) || data.validation.is_empty() {
        return Err(Error::InvalidArgument(
            "reranker training needs queries with positives and validation queries".into(),
        ));
    }
    for q in &data.validation {
        if q.candidates.len() != q.relevant.len() {
            return Err(Error::InvalidArgument(format!(
                "validation query {:?}: {} candidates but {} relevance flags",
                q.query,
                q.candidates.len(),
                q.relevant.len()
            )));
        }
    }
    let tok = setup.tokenizer;
    let encode_all = |q: &str, texts: &[String]| -> Result<Vec<Encoded>> {
        texts.iter().map(|t| tok.encode_pair(q, t)).collect()
    };
    let enc = Encodings {
        pos: data
            .train
            .iter()
            .map(|g| encode_all(&g.query, &g.positives))
            .collect::<Result<_>>()?,
        neg: data
            .train
            .iter()
            .map(|g| encode_all(&g.query, &g.negatives))
            .collect::<Result<_>>()?,
    };
    let mut venc = Vec::new();
    for q in &data.validation {
        venc.extend(encode_all(&q.query, &q.candidates)?);
    }
    let started = Instant::now();
    let trainee = CrossEncoderTrainee {
        tc: TrainableCrossEncoder::new(&setup.encoder_config, setup.model, cfg.seed)?,
        enc: &enc,
        venc: &venc,
        tok,
        cfg,
        validation: &data.validation,
    };
    let loop_cfg = LoopConfig {
        epochs: cfg.epochs,
        warmup_fraction: cfg.warmup_fraction,
        clip_norm: cfg.clip_norm,
        llrd: LlrdConfig {
            encoder_lr: cfg.lr,
            head_lr: cfg.head_lr.unwrap_or(cfg.lr),
            decay: 1.0,
            weight_decay: cfg.weight_decay,
            freeze_word_embeddings: false,
        },
        adamw: cfg.adamw,
        num_layers: setup.encoder_config.num_hidden_layers,
        selection: Selection::BestEpoch,
    };
    let loop_setup = LoopSetup {
        dir: &setup.checkpoint_dir,
        stem: "reranker".into(),
        seed: cfg.seed,
        fingerprint: fingerprint(cfg, data)?,
        resume: setup.resume,
        interrupt: setup.interrupt,
    };
    let pairs_per_epoch: usize = epoch_batches(&enc, cfg, 0).iter().map(Vec::len).sum();
    progress(&RerankerTrainEvent::Encoded { pairs_per_epoch });
    let out = fit::run(&trainee, &loop_cfg, &loop_setup, &mut |e| {
        progress(&RerankerTrainEvent::Loop(e.clone()))
    })?;
    Ok(RerankerFitOutcome {
        weights: out.weights,
        best_epoch: out.best_epoch,
        val_p_at_1: out.val_scores,
        mean_loss: out.mean_loss,
        best_val_p_at_1: out.best_score,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_at_1_takes_the_first_best_candidate() {
        let v = vec![
            ValidationQuery {
                query: "a".into(),
                candidates: vec!["x".into(), "y".into()],
                relevant: vec![false, true],
            },
            ValidationQuery {
                query: "b".into(),
                candidates: vec!["x".into(), "y".into(), "z".into()],
                relevant: vec![true, false, false],
            },
        ];
        // Query a: y (1.0) beats x (0.5): hit. Query b: tie 2.0 / 2.0, first (relevant) wins.
        assert_eq!(p_at_1(&v, &[0.5, 1.0, 2.0, 2.0, -1.0]), 1.0);
        // Query a misses, b hits: 1/2.
        assert_eq!(p_at_1(&v, &[1.5, 1.0, 2.0, 2.0, -1.0]), 0.5);
    }

    #[test]
    fn non_positive_learning_rates_are_refused() {
        for (lr, head_lr) in [(0.0, None), (2e-5, Some(-1e-3)), (2e-5, Some(f64::NAN))] {
            let c = RerankerTrainConfig {
                lr,
                head_lr,
                ..RerankerTrainConfig::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("learning rate"), "{err}");
        }
        let ok = RerankerTrainConfig {
            head_lr: Some(1e-3),
            ..RerankerTrainConfig::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn config_defaults_are_the_recipe_and_unknown_fields_are_refused() {
        let c: RerankerTrainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RerankerTrainConfig::default());
        assert_eq!((c.lr, c.batch_size, c.epochs), (2e-5, 16, 3));
        // The recipe has one learning rate: the head uses `lr` unless told otherwise.
        assert_eq!(c.head_lr, None);
        assert!(serde_json::from_str::<RerankerTrainConfig>(r#"{"lr_typo": 1}"#).is_err());
    }
}
