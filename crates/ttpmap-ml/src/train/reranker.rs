//! Fine-tuning loop of the cross-encoder reranker: binary cross-entropy on the logit of each
//! (query, candidate) pair, AdamW (lr 2e-5, weight decay 0.01, none on biases and LayerNorm),
//! batch 16, 3 epochs, 10% linear warmup then linear decay, gradient clipping at 1.0; each epoch
//! resamples the negatives of every query at positives:negatives = 1:2.5 (seeded); the weights
//! of the epoch with the best validation P@1 (the validation queries' candidate sets) are kept.
//!
//! Owns [`RerankerTrainConfig`] (serde, every recipe value as default), [`RerankerTrainData`],
//! [`fit`], the progress events and resumable checkpoints: when the interrupt flag is set,
//! [`fit`] writes `<checkpoint_dir>/reranker.ckpt.safetensors` (weights, optimizer state,
//! epoch/step) and returns [`Error::Interrupted`]; a later call with `resume` continues from it
//! (the epoch's pairs and batch order are re-derived from the seed; a checkpoint of another
//! config or data is refused). The best weights so far
//! are kept in `<checkpoint_dir>/reranker.best.safetensors`. The library never prints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::crossencoder::{logits_encoded, TrainableCrossEncoder};
use crate::encoder::bert::{Config as BertConfig, Mode};
use crate::model_dir::ModelDir;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::train::{
    bce_with_logits, checkpoint, clip_grad_norm, llrd_groups, AdamWConfig, FusedAdamW, LlrdConfig,
    WarmupLinear,
};
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

/// Progress of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub enum RerankerTrainEvent {
    /// Training starts: `total_steps` optimizer steps of `pairs_per_epoch` pairs an epoch.
    Start {
        total_steps: usize,
        pairs_per_epoch: usize,
    },
    /// One optimizer step done.
    Step {
        epoch: usize,
        step: usize,
        total_steps: usize,
        loss: f64,
        eta_seconds: f64,
    },
    /// An epoch ended: mean training loss and validation P@1 of the current weights.
    Epoch {
        epoch: usize,
        mean_loss: f64,
        val_p_at_1: f64,
    },
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

/// Where the model comes from and where checkpoints go.
pub struct RerankerFitSetup<'a> {
    /// Pretrained folder (plain encoder or cross-encoder; `None`: random, for tests).
    pub model: Option<&'a ModelDir>,
    /// Encoder config (dropout as trained).
    pub encoder_config: BertConfig,
    /// Tokenizer (its max length is used as is).
    pub tokenizer: &'a TextTokenizer,
    /// Folder of resumable checkpoints.
    pub checkpoint_dir: PathBuf,
    /// Continue from the checkpoint in `checkpoint_dir`.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to stop at the next step with a checkpoint.
    pub interrupt: &'a AtomicBool,
}

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

fn ckpt_path(dir: &Path, kind: &str) -> PathBuf {
    dir.join(format!("reranker.{kind}.safetensors"))
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
    std::fs::create_dir_all(&setup.checkpoint_dir).map_err(|source| Error::Io {
        path: setup.checkpoint_dir.clone(),
        source,
    })?;
    let started = Instant::now();
    let tc = TrainableCrossEncoder::new(&setup.encoder_config, setup.model, cfg.seed)?;
    let named = tc.named_vars()?;
    let llrd = LlrdConfig {
        encoder_lr: cfg.lr,
        head_lr: cfg.head_lr.unwrap_or(cfg.lr),
        decay: 1.0,
        weight_decay: cfg.weight_decay,
        freeze_word_embeddings: false,
    };
    let (groups, params) = llrd_groups(&named, setup.encoder_config.num_hidden_layers, &llrd)?;
    let vars: Vec<Var> = params.iter().map(|p| p.var.clone()).collect();
    let mut opt = FusedAdamW::new(params, groups, cfg.adamw)?;
    let first = epoch_batches(&enc, cfg, 0);
    let steps_per_epoch = first.len();
    let pairs_per_epoch: usize = first.iter().map(Vec::len).sum();
    let total = steps_per_epoch * cfg.epochs;
    let sched = WarmupLinear::new(total, cfg.warmup_fraction);
    let ckpt = ckpt_path(&setup.checkpoint_dir, "ckpt");
    let best_path = ckpt_path(&setup.checkpoint_dir, "best");
    let fp = fingerprint(cfg, data)?;
    let (mut start_epoch, mut skip) = (0usize, 0usize);
    // (epoch, validation P@1, weights)
    type Best = (usize, f64, Vec<(String, Tensor)>);
    let mut best: Option<Best> = None;
    if setup.resume && ckpt.is_file() {
        let (t, meta) = checkpoint::load_safetensors(&ckpt, &Device::Cpu)?;
        checkpoint::check_fingerprint(&ckpt, &meta, &fp)?;
        let get = |k: &str| -> Result<usize> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Artifact {
                    path: ckpt.clone(),
                    message: format!("metadata has no {k}"),
                })
        };
        start_epoch = get("epoch")?;
        skip = get("step_in_epoch")?;
        for (name, var) in &named {
            let v = t.get(&format!("w.{name}")).ok_or_else(|| Error::Artifact {
                path: ckpt.clone(),
                message: format!("no tensor w.{name}"),
            })?;
            var.set(v)?;
        }
        let opt_state: HashMap<String, Tensor> = t
            .iter()
            .filter_map(|(n, v)| n.strip_prefix("opt.").map(|s| (s.to_string(), v.clone())))
            .collect();
        opt.load_state(&opt_state)?;
        if best_path.is_file() {
            let (t, meta) = checkpoint::load_safetensors(&best_path, &Device::Cpu)?;
            checkpoint::check_fingerprint(&best_path, &meta, &fp)?;
            let epoch = meta.get("epoch").and_then(|v| v.parse().ok());
            let p1 = meta.get("val_p_at_1").and_then(|v| v.parse().ok());
            if let (Some(e), Some(p)) = (epoch, p1) {
                let mut w: Vec<(String, Tensor)> = t.into_iter().collect();
                w.sort_by(|a, b| a.0.cmp(&b.0));
                best = Some((e, p, w));
            }
        }
    }
    progress(&RerankerTrainEvent::Start {
        total_steps: total,
        pairs_per_epoch,
    });
    let net = tc.network();
    let mut step = start_epoch * steps_per_epoch + skip;
    let first_step = step;
    let mut val_hist = BTreeMap::new();
    let mut loss_hist = BTreeMap::new();
    for epoch in start_epoch..cfg.epochs {
        let batches = epoch_batches(&enc, cfg, epoch);
        let (mut loss_sum, mut n) = (0.0, 0usize);
        for (bi, batch) in batches.iter().enumerate() {
            if epoch == start_epoch && bi < skip {
                continue;
            }
            if setup.interrupt.load(Ordering::SeqCst) {
                let mut tensors: Vec<(String, Tensor)> = named
                    .iter()
                    .map(|(n, v)| (format!("w.{n}"), v.as_tensor().detach()))
                    .collect();
                tensors.extend(
                    opt.state_tensors()?
                        .into_iter()
                        .map(|(n, t)| (format!("opt.{n}"), t)),
                );
                let meta = BTreeMap::from([
                    ("epoch".to_string(), epoch.to_string()),
                    ("step_in_epoch".to_string(), bi.to_string()),
                    ("step".to_string(), step.to_string()),
                    ("seed".to_string(), cfg.seed.to_string()),
                    ("fingerprint".to_string(), fp.clone()),
                ]);
                checkpoint::save_safetensors_atomic(&ckpt, &tensors, &meta)?;
                return Err(Error::Interrupted { checkpoint: ckpt });
            }
            let members: Vec<Encoded> = batch.iter().map(|(e, _)| (*e).clone()).collect();
            let labels: Vec<f32> = batch.iter().map(|(_, y)| *y).collect();
            let padded = tok.pad(&members, &Device::Cpu)?;
            let logits = net.forward(&padded, Mode::Train)?;
            let targets = Tensor::from_vec(labels, members.len(), &Device::Cpu)?;
            let loss = bce_with_logits(&logits, &targets, None)?;
            let loss_v = f64::from(loss.to_scalar::<f32>()?);
            let mut grads = loss.backward()?;
            match clip_grad_norm(&mut grads, &vars, cfg.clip_norm) {
                Ok(_) => opt.step(&grads, sched.factor(step))?,
                Err(Error::NonFiniteGradNorm { .. }) => {
                    tracing::warn!("reranker step {step}: non-finite gradient, skipped");
                }
                Err(e) => return Err(e),
            }
            step += 1;
            loss_sum += loss_v;
            n += 1;
            let per_step = started.elapsed().as_secs_f64() / ((step - first_step) as f64).max(1.0);
            progress(&RerankerTrainEvent::Step {
                epoch,
                step,
                total_steps: total,
                loss: loss_v,
                eta_seconds: per_step * total.saturating_sub(step) as f64,
            });
        }
        let logits = logits_encoded(net, tok, &venc, cfg.eval_batch_size, &Device::Cpu)?;
        let p1 = p_at_1(&data.validation, &logits);
        let mean_loss = loss_sum / n.max(1) as f64;
        val_hist.insert(epoch, p1);
        loss_hist.insert(epoch, mean_loss);
        progress(&RerankerTrainEvent::Epoch {
            epoch,
            mean_loss,
            val_p_at_1: p1,
        });
        if best.as_ref().is_none_or(|b| p1 > b.1) {
            let w = tc.tensors()?;
            let meta = BTreeMap::from([
                ("epoch".to_string(), epoch.to_string()),
                ("val_p_at_1".to_string(), p1.to_string()),
                ("fingerprint".to_string(), fp.clone()),
            ]);
            checkpoint::save_safetensors_atomic(&best_path, &w, &meta)?;
            best = Some((epoch, p1, w));
        }
        // The epoch is complete: a later resume starts at the next one.
        skip = 0;
        if ckpt.is_file() {
            let _ = std::fs::remove_file(&ckpt);
        }
    }
    let (best_epoch, best_val_p_at_1, weights) =
        best.ok_or_else(|| Error::InvalidArgument("no epoch was trained".into()))?;
    Ok(RerankerFitOutcome {
        weights,
        best_epoch,
        val_p_at_1: val_hist,
        mean_loss: loss_hist,
        best_val_p_at_1,
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
