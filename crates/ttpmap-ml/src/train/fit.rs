//! The one training loop: every model (the label-attention classifier, the cross-encoder, the
//! next ones) describes what differs in a [`Trainee`] (its variables, an epoch's batches, the
//! loss of a batch, a validation score, its weights) and [`run`] does the rest the same way for
//! all of them:
//!
//! - AdamW ([`FusedAdamW`]) over the trainee's trainable variables in layer-wise LR decay
//!   groups ([`llrd_groups`]; Sun et al. 2019, <https://arxiv.org/abs/1905.05583>), the
//!   warmup + linear-decay schedule ([`WarmupLinear`]) and gradient clipping by global norm
//!   (a step with a non-finite norm is skipped with a warning);
//! - weight selection ([`Selection`]): either the best of the final, EMA and SWA weights
//!   (Izmailov et al. 2018, <https://arxiv.org/abs/1803.05407>) on validation after the last
//!   epoch, or the epoch with the best validation score (kept in `<stem>.best.safetensors`);
//!   ties keep the earlier candidate. The final weights reuse the last epoch's validation, and
//!   an SWA equal to them bit for bit (one snapshot, the last epoch's) takes their score, so a
//!   run validates `epochs + 1` times (`+ 2` when SWA averages more than one epoch);
//! - interrupt checkpoints: when the caller's flag is set (e.g. by Ctrl-C), the loop writes
//!   `<dir>/<stem>.ckpt.safetensors` (`w.<name>` weights, `opt.*` optimizer state, `ema.<i>`
//!   when averaging, metadata `epoch`, `step_in_epoch`, `step`, `seed`, `fingerprint`) before
//!   the next step and returns [`Error::Interrupted`];
//! - resume: with `resume`, a checkpoint whose fingerprint differs from the caller's (a hash of
//!   config and data) is refused; otherwise training continues at the saved step (the trainee
//!   re-derives the epoch's batches from its seed, so the remaining batches are the same). SWA
//!   restarts when a run is resumed inside its window. The checkpoint is deleted once the epoch
//!   it was written in completes;
//! - progress as [`LoopEvent`]s through a callback. The library never prints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};

use crate::artifact::NamedTensors;
use crate::encoder::bert::Config as BertConfig;
use crate::model_dir::ModelDir;
use crate::tokenize::TextTokenizer;
use crate::train::{
    checkpoint, clip_grad_norm, llrd_groups, restore, snapshot, AdamWConfig, Ema, FusedAdamW,
    LlrdConfig, Swa, WarmupLinear,
};
use crate::{Error, Result};

/// What a model contributes to [`run`].
pub trait Trainee {
    /// One optimizer step's worth of training data.
    type Batch;
    /// What validation yields besides its score (e.g. the validation probabilities); the one
    /// of the selected weights is returned when [`Selection::Averages`] selects.
    type Validation;

    /// Every variable, named (checkpoints save them all as `w.<name>`).
    fn variables(&self) -> Result<Vec<(String, Var)>>;

    /// The variables the optimizer updates (default: all of them).
    fn trainable(&self) -> Result<Vec<(String, Var)>> {
        self.variables()
    }

    /// The batches of `epoch`, derived from the trainee's seed and `epoch` alone (a resumed run
    /// skips the ones already done).
    fn batches(&self, epoch: usize) -> Result<Vec<Self::Batch>>;

    /// Differentiable scalar loss of one batch (training mode).
    fn loss(&self, batch: &Self::Batch) -> Result<Tensor>;

    /// Validation score of the current weights (higher is better) and its by-product.
    fn validate(&self) -> Result<(f64, Self::Validation)>;

    /// The weights to save, named and sorted.
    fn weights(&self) -> Result<Vec<(String, Tensor)>>;
}

/// How [`run`] picks the weights it returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// Track an EMA (decay `ema_beta`) and an SWA (the weights at the end of each of the last
    /// `ceil(epochs * swa_fraction)` epochs); after the last epoch keep the best of `base`
    /// (the final weights), `ema` and `swa` on validation.
    Averages { ema_beta: f64, swa_fraction: f64 },
    /// Keep the weights of the epoch with the best validation score.
    BestEpoch,
}

/// Optimisation settings of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Epochs (> 0).
    pub epochs: usize,
    /// Fraction of the steps spent warming up, in [0, 1).
    pub warmup_fraction: f64,
    /// Gradient clipping by global norm.
    pub clip_norm: f64,
    /// Learning rates, layer-wise decay and weight decay.
    pub llrd: LlrdConfig,
    /// AdamW moments.
    pub adamw: AdamWConfig,
    /// Transformer layers of the encoder (for the decay groups).
    pub num_layers: usize,
    /// How the returned weights are picked.
    pub selection: Selection,
}

/// Where a run checkpoints and what identifies it.
#[derive(Debug, Clone)]
pub struct LoopSetup<'a> {
    /// Folder of the checkpoint files.
    pub dir: &'a Path,
    /// File stem of this run's checkpoints (e.g. `seed-42`, `reranker`).
    pub stem: String,
    /// The run's seed (recorded in checkpoints).
    pub seed: u64,
    /// Hash of everything a checkpoint depends on (config and data).
    pub fingerprint: String,
    /// Continue from `<stem>.ckpt.safetensors` when it exists.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to stop before the next step with a checkpoint.
    pub interrupt: &'a AtomicBool,
}

impl LoopSetup<'_> {
    /// `<dir>/<stem>.<kind>.safetensors`.
    pub fn path(&self, kind: &str) -> PathBuf {
        self.dir.join(format!("{}.{kind}.safetensors", self.stem))
    }
}

/// What a model's `fit` (classifier, reranker) starts from: where the encoder comes from and
/// where checkpoints go.
pub struct FitSetup<'a> {
    /// Pretrained model folder (`None`: random encoder of `encoder_config`, for tests).
    pub model: Option<&'a ModelDir>,
    /// Encoder config (dropout as trained).
    pub encoder_config: BertConfig,
    /// Tokenizer (its max length is used as is).
    pub tokenizer: &'a TextTokenizer,
    /// Folder of resumable checkpoints.
    pub checkpoint_dir: PathBuf,
    /// Continue from checkpoints in `checkpoint_dir`.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to stop at the next step with a checkpoint.
    pub interrupt: &'a AtomicBool,
}

/// Progress of [`run`].
#[derive(Debug, Clone, PartialEq)]
pub enum LoopEvent {
    /// The loop starts (after any resume): `total_steps` optimizer steps in all.
    Start { total_steps: usize },
    /// One optimizer step done.
    Step {
        epoch: usize,
        step: usize,
        total_steps: usize,
        loss: f64,
        eta_seconds: f64,
    },
    /// An epoch ended: mean training loss and validation score of the current weights.
    Epoch {
        epoch: usize,
        mean_loss: f64,
        val_score: f64,
    },
}

/// What [`run`] returns.
#[derive(Debug, Clone)]
pub struct LoopOutcome<V> {
    /// The selected weights ([`Trainee::weights`]).
    pub weights: Vec<(String, Tensor)>,
    /// `base`, `ema` or `swa` ([`Selection::Averages`]); `epoch` ([`Selection::BestEpoch`]).
    pub selected: String,
    /// Validation score of each averaged variant evaluated (empty for `BestEpoch`).
    pub variant_scores: BTreeMap<String, f64>,
    /// Epoch (0-based) of the selected weights (the last one for `Averages`).
    pub best_epoch: usize,
    /// Validation score of the selected weights.
    pub best_score: f64,
    /// Validation by-product of the selected weights (`Averages` only).
    pub validation: Option<V>,
    /// Validation score after each epoch run in this call (resumed epochs before it are absent).
    pub val_scores: BTreeMap<usize, f64>,
    /// Mean training loss of each epoch run in this call.
    pub mean_loss: BTreeMap<usize, f64>,
}

/// Reads `key` of a checkpoint's metadata as a number.
fn meta_usize(path: &Path, meta: &BTreeMap<String, String>, key: &str) -> Result<usize> {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Artifact {
            path: path.to_path_buf(),
            message: format!("metadata has no {key}"),
        })
}

fn tensor(path: &Path, t: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    t.get(name).cloned().ok_or_else(|| Error::Artifact {
        path: path.to_path_buf(),
        message: format!("no tensor {name}"),
    })
}

/// (epoch, validation score, weights) of an epoch.
type Best = (usize, f64, NamedTensors);

/// Optimizer, averages and the position of a run.
struct State {
    vars: Vec<Var>,
    opt: FusedAdamW,
    ema: Option<Ema>,
    swa: Option<Swa>,
    start_epoch: usize,
    skip: usize,
    /// The best epoch so far (`BestEpoch`).
    best: Option<Best>,
}

impl State {
    fn new(trainable: &[(String, Var)], cfg: &LoopConfig) -> Result<Self> {
        let (groups, params) = llrd_groups(trainable, cfg.num_layers, &cfg.llrd)?;
        let vars: Vec<Var> = params.iter().map(|p| p.var.clone()).collect();
        let opt = FusedAdamW::new(params, groups, cfg.adamw)?;
        let (ema, swa) = match cfg.selection {
            Selection::Averages { ema_beta, .. } => {
                (Some(Ema::new(&vars, ema_beta)?), Some(Swa::new(&vars)?))
            }
            Selection::BestEpoch => (None, None),
        };
        Ok(Self {
            vars,
            opt,
            ema,
            swa,
            start_epoch: 0,
            skip: 0,
            best: None,
        })
    }

    /// Loads the interrupt checkpoint (and the best epoch so far) of `setup`.
    fn resume(&mut self, named: &[(String, Var)], setup: &LoopSetup) -> Result<()> {
        let ckpt = setup.path("ckpt");
        let (t, meta) = checkpoint::load_safetensors(&ckpt, &Device::Cpu)?;
        checkpoint::check_fingerprint(&ckpt, &meta, &setup.fingerprint)?;
        self.start_epoch = meta_usize(&ckpt, &meta, "epoch")?;
        self.skip = meta_usize(&ckpt, &meta, "step_in_epoch")?;
        for (name, var) in named {
            var.set(&tensor(&ckpt, &t, &format!("w.{name}"))?)?;
        }
        let opt_state: HashMap<String, Tensor> = t
            .iter()
            .filter_map(|(n, v)| n.strip_prefix("opt.").map(|s| (s.to_string(), v.clone())))
            .collect();
        self.opt.load_state(&opt_state)?;
        if let Some(ema) = self.ema.as_mut() {
            let values: Vec<Tensor> = (0..self.vars.len())
                .map(|i| tensor(&ckpt, &t, &format!("ema.{i}")))
                .collect::<Result<_>>()?;
            let current = snapshot(&self.vars)?;
            restore(&self.vars, &values)?;
            *ema = Ema::new(&self.vars, ema.beta())?;
            restore(&self.vars, &current)?;
        }
        let best_path = setup.path("best");
        if self.ema.is_none() && best_path.is_file() {
            let (t, meta) = checkpoint::load_safetensors(&best_path, &Device::Cpu)?;
            checkpoint::check_fingerprint(&best_path, &meta, &setup.fingerprint)?;
            let epoch = meta.get("epoch").and_then(|v| v.parse().ok());
            // `val_p_at_1`: the key of checkpoints written before the loop was shared.
            let score = ["val_score", "val_p_at_1"]
                .iter()
                .find_map(|k| meta.get(*k).and_then(|v| v.parse().ok()));
            if let (Some(e), Some(s)) = (epoch, score) {
                let mut w: Vec<(String, Tensor)> = t.into_iter().collect();
                w.sort_by(|a, b| a.0.cmp(&b.0));
                self.best = Some((e, s, w));
            }
        }
        Ok(())
    }

    /// Writes the interrupt checkpoint before batch `bi` of `epoch` (global step `step`).
    fn save_interrupt(
        &self,
        named: &[(String, Var)],
        setup: &LoopSetup,
        (epoch, bi, step): (usize, usize, usize),
    ) -> Result<PathBuf> {
        let mut tensors: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, v)| (format!("w.{n}"), v.as_tensor().detach()))
            .collect();
        tensors.extend(
            self.opt
                .state_tensors()?
                .into_iter()
                .map(|(n, t)| (format!("opt.{n}"), t)),
        );
        if let Some(ema) = &self.ema {
            tensors.extend(
                ema.tensors()?
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (format!("ema.{i}"), t)),
            );
        }
        let meta = BTreeMap::from([
            ("seed".to_string(), setup.seed.to_string()),
            ("fingerprint".to_string(), setup.fingerprint.clone()),
            ("epoch".to_string(), epoch.to_string()),
            ("step_in_epoch".to_string(), bi.to_string()),
            ("step".to_string(), step.to_string()),
        ]);
        let ckpt = setup.path("ckpt");
        checkpoint::save_safetensors_atomic(&ckpt, &tensors, &meta)?;
        Ok(ckpt)
    }
}

/// Trains `model` for `cfg.epochs` and returns the selected weights (see the module docs).
pub fn run<T: Trainee>(
    model: &T,
    cfg: &LoopConfig,
    setup: &LoopSetup,
    progress: &mut dyn FnMut(&LoopEvent),
) -> Result<LoopOutcome<T::Validation>> {
    if cfg.epochs == 0 {
        return Err(Error::InvalidArgument("epochs must be > 0".into()));
    }
    std::fs::create_dir_all(setup.dir).map_err(|source| Error::Io {
        path: setup.dir.to_path_buf(),
        source,
    })?;
    let named = model.variables()?;
    let mut st = State::new(&model.trainable()?, cfg)?;
    if setup.resume && setup.path("ckpt").is_file() {
        st.resume(&named, setup)?;
    }
    let steps_per_epoch = model.batches(0)?.len();
    let total = steps_per_epoch * cfg.epochs;
    let sched = WarmupLinear::new(total, cfg.warmup_fraction);
    let swa_start = match cfg.selection {
        Selection::Averages { swa_fraction, .. } => {
            let swa_epochs = ((cfg.epochs as f64) * swa_fraction).ceil() as usize;
            cfg.epochs - swa_epochs.min(cfg.epochs)
        }
        Selection::BestEpoch => cfg.epochs,
    };
    progress(&LoopEvent::Start { total_steps: total });
    let started = Instant::now();
    let mut step = st.start_epoch * steps_per_epoch + st.skip;
    let first_step = step;
    let (mut val_scores, mut mean_losses) = (BTreeMap::new(), BTreeMap::new());
    let mut final_validation = None;
    for epoch in st.start_epoch..cfg.epochs {
        let batches = model.batches(epoch)?;
        let (mut loss_sum, mut n) = (0.0, 0usize);
        for (bi, batch) in batches.iter().enumerate() {
            if epoch == st.start_epoch && bi < st.skip {
                continue;
            }
            if setup.interrupt.load(Ordering::SeqCst) {
                let checkpoint = st.save_interrupt(&named, setup, (epoch, bi, step))?;
                return Err(Error::Interrupted { checkpoint });
            }
            let loss = model.loss(batch)?;
            let loss_v = f64::from(loss.to_scalar::<f32>()?);
            let mut grads = crate::encoder::backward(&loss)?;
            match clip_grad_norm(&mut grads, &st.vars, cfg.clip_norm) {
                Ok(_) => {
                    st.opt.step(&grads, sched.factor(step))?;
                    if let Some(ema) = st.ema.as_mut() {
                        ema.update(&st.vars)?;
                    }
                }
                Err(Error::NonFiniteGradNorm { .. }) => {
                    tracing::warn!("{} step {step}: non-finite gradient, skipped", setup.stem);
                }
                Err(e) => return Err(e),
            }
            step += 1;
            loss_sum += loss_v;
            n += 1;
            let per_step = started.elapsed().as_secs_f64() / ((step - first_step) as f64).max(1.0);
            progress(&LoopEvent::Step {
                epoch,
                step,
                total_steps: total,
                loss: loss_v,
                eta_seconds: per_step * total.saturating_sub(step) as f64,
            });
        }
        if let Some(swa) = st.swa.as_mut().filter(|_| epoch >= swa_start) {
            swa.update(&st.vars)?;
        }
        let (score, by_product) = model.validate()?;
        if epoch + 1 == cfg.epochs {
            // The final weights as they stand: the `base` variant below, not validated twice.
            final_validation = Some((score, by_product));
        }
        let mean_loss = loss_sum / n.max(1) as f64;
        val_scores.insert(epoch, score);
        mean_losses.insert(epoch, mean_loss);
        progress(&LoopEvent::Epoch {
            epoch,
            mean_loss,
            val_score: score,
        });
        if cfg.selection == Selection::BestEpoch && st.best.as_ref().is_none_or(|b| score > b.1) {
            let w = model.weights()?;
            let meta = BTreeMap::from([
                ("epoch".to_string(), epoch.to_string()),
                ("val_score".to_string(), score.to_string()),
                ("fingerprint".to_string(), setup.fingerprint.clone()),
            ]);
            checkpoint::save_safetensors_atomic(&setup.path("best"), &w, &meta)?;
            st.best = Some((epoch, score, w));
        }
        // The epoch is complete: a later resume starts at the next one.
        st.skip = 0;
        let ckpt = setup.path("ckpt");
        if ckpt.is_file() {
            let _ = std::fs::remove_file(&ckpt);
        }
    }
    let mut outcome = LoopOutcome {
        weights: Vec::new(),
        selected: String::new(),
        variant_scores: BTreeMap::new(),
        best_epoch: cfg.epochs - 1,
        best_score: f64::NEG_INFINITY,
        validation: None,
        val_scores,
        mean_loss: mean_losses,
    };
    match (st.ema.as_ref(), st.swa.as_ref()) {
        (Some(ema), Some(swa)) => {
            let mut variants = vec![("base", snapshot(&st.vars)?), ("ema", ema.tensors()?)];
            if swa.count() > 0 {
                variants.push(("swa", swa.tensors()?));
            }
            let base = variants[0].1.clone();
            let mut best: Option<(&str, Vec<Tensor>)> = None;
            for (name, values) in variants {
                let (score, by_product) = if name == "base" && final_validation.is_some() {
                    final_validation.take().expect("checked")
                } else if name != "base" && same_values(&values, &base)? {
                    // SWA over the last epoch alone is the final weights, bit for bit: its
                    // score is theirs, and a tie keeps `base`.
                    let score = outcome.variant_scores["base"];
                    outcome.variant_scores.insert(name.to_string(), score);
                    continue;
                } else {
                    restore(&st.vars, &values)?;
                    model.validate()?
                };
                outcome.variant_scores.insert(name.to_string(), score);
                if best.is_none() || score > outcome.best_score {
                    outcome.best_score = score;
                    outcome.validation = Some(by_product);
                    best = Some((name, values));
                }
            }
            let (name, values) =
                best.ok_or_else(|| Error::InvalidArgument("no weights variant evaluated".into()))?;
            restore(&st.vars, &values)?;
            outcome.selected = name.to_string();
            outcome.weights = model.weights()?;
        }
        _ => {
            let (epoch, score, weights) = st
                .best
                .ok_or_else(|| Error::InvalidArgument("no epoch was trained".into()))?;
            outcome.selected = "epoch".into();
            outcome.best_epoch = epoch;
            outcome.best_score = score;
            outcome.weights = weights;
        }
    }
    Ok(outcome)
}

/// Whether two weight lists hold the same values, bit for bit.
fn same_values(a: &[Tensor], b: &[Tensor]) -> Result<bool> {
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter().zip(b) {
        if x.shape() != y.shape() || x.dtype() != y.dtype() {
            return Ok(false);
        }
        let (x, y) = (
            x.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
            y.flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
        );
        if x.iter().zip(&y).any(|(p, q)| p.to_bits() != q.to_bits()) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fits `w` (4 values, starting at 0) to `target`: 3 batches an epoch, squared error, the
    /// score is minus the squared error. Deterministic, so interrupted + resumed runs must end
    /// where an uninterrupted one does.
    struct Toy {
        w: Var,
        target: Vec<f32>,
        /// Steps after which `interrupt` is set (for tests of the checkpoint).
        interrupt_after: Option<(usize, &'static AtomicBool)>,
        steps: std::cell::Cell<usize>,
        validations: std::cell::Cell<usize>,
    }

    impl Toy {
        fn new(target: f32) -> Self {
            Self {
                w: Var::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
                target: vec![target; 4],
                interrupt_after: None,
                steps: std::cell::Cell::new(0),
                validations: std::cell::Cell::new(0),
            }
        }

        fn error(&self) -> Result<Tensor> {
            let t = Tensor::new(self.target.as_slice(), &Device::Cpu)?;
            Ok(self.w.as_tensor().sub(&t)?.sqr()?.mean_all()?)
        }
    }

    impl Trainee for Toy {
        type Batch = usize;
        type Validation = f32;

        fn variables(&self) -> Result<Vec<(String, Var)>> {
            Ok(vec![("head.w".into(), self.w.clone())])
        }

        fn batches(&self, _epoch: usize) -> Result<Vec<usize>> {
            Ok(vec![0, 1, 2])
        }

        fn loss(&self, _batch: &usize) -> Result<Tensor> {
            self.steps.set(self.steps.get() + 1);
            if let Some((n, flag)) = self.interrupt_after {
                if self.steps.get() == n {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            self.error()
        }

        fn validate(&self) -> Result<(f64, f32)> {
            self.validations.set(self.validations.get() + 1);
            let e = self.error()?.to_scalar::<f32>()?;
            Ok((-f64::from(e), self.w.as_tensor().to_vec1::<f32>()?[0]))
        }

        fn weights(&self) -> Result<Vec<(String, Tensor)>> {
            Ok(vec![("head.w".into(), self.w.as_tensor().detach())])
        }
    }

    fn config(selection: Selection) -> LoopConfig {
        LoopConfig {
            epochs: 4,
            warmup_fraction: 0.1,
            clip_norm: 1.0,
            llrd: LlrdConfig {
                head_lr: 0.1,
                ..LlrdConfig::default()
            },
            adamw: AdamWConfig::default(),
            num_layers: 1,
            selection,
        }
    }

    fn setup<'a>(dir: &'a Path, resume: bool, flag: &'a AtomicBool) -> LoopSetup<'a> {
        LoopSetup {
            dir,
            stem: "toy".into(),
            seed: 1,
            fingerprint: "fp".into(),
            resume,
            interrupt: flag,
        }
    }

    fn w0(o: &LoopOutcome<f32>) -> f32 {
        o.weights[0].1.to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn best_epoch_keeps_the_best_and_reports_every_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let toy = Toy::new(1.0);
        let mut events = Vec::new();
        let out = run(
            &toy,
            &config(Selection::BestEpoch),
            &setup(tmp.path(), false, &flag),
            &mut |e| events.push(e.clone()),
        )
        .unwrap();
        assert_eq!(events[0], LoopEvent::Start { total_steps: 12 });
        assert_eq!(out.val_scores.len(), 4);
        assert_eq!(out.selected, "epoch");
        let best = out.val_scores.values().cloned().fold(f64::MIN, f64::max);
        assert_eq!(out.best_score, best);
        assert_eq!(out.val_scores[&out.best_epoch], best);
        assert!(tmp.path().join("toy.best.safetensors").is_file());
        assert!(out.validation.is_none());
    }

    #[test]
    fn averages_pick_the_best_variant_with_its_validation() {
        let tmp = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let toy = Toy::new(1.0);
        let sel = Selection::Averages {
            ema_beta: 0.5,
            swa_fraction: 0.5,
        };
        let out = run(
            &toy,
            &config(sel),
            &setup(tmp.path(), false, &flag),
            &mut |_| {},
        )
        .unwrap();
        let keys: Vec<&str> = out.variant_scores.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["base", "ema", "swa"]);
        assert_eq!(out.best_score, out.variant_scores[&out.selected]);
        // The by-product is the selected weights' own.
        assert_eq!(out.validation, Some(w0(&out)));
        // 4 epochs, then EMA and SWA (over 2 epochs); the final weights reuse epoch 4's.
        assert_eq!(toy.validations.get(), 6);
        assert_eq!(out.variant_scores["base"], out.val_scores[&3]);
    }

    #[test]
    fn an_swa_of_the_last_epoch_alone_is_the_final_weights_and_not_validated_again() {
        let tmp = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let toy = Toy::new(1.0);
        let sel = Selection::Averages {
            ema_beta: 0.99,
            swa_fraction: 0.25,
        };
        let out = run(
            &toy,
            &config(sel),
            &setup(tmp.path(), false, &flag),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(toy.validations.get(), 5, "4 epochs and the EMA");
        assert_eq!(out.variant_scores["swa"], out.variant_scores["base"]);
        assert_eq!(out.variant_scores["base"], out.val_scores[&3]);
        // EMA at 0.99 lags far behind the fitted weights, so the final ones win, not the
        // identical SWA (a tie keeps the earlier candidate).
        assert_eq!(out.selected, "base");
        assert_eq!(out.validation, Some(w0(&out)));
        // The selected weights are the final ones, restored after the EMA was validated.
        assert_eq!(toy.w.as_tensor().to_vec1::<f32>().unwrap()[0], w0(&out));
    }

    #[test]
    fn interrupt_checkpoints_and_resume_ends_where_a_straight_run_does() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        for sel in [
            Selection::BestEpoch,
            Selection::Averages {
                ema_beta: 0.5,
                swa_fraction: 0.5,
            },
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let never = AtomicBool::new(false);
            let straight = run(
                &Toy::new(1.0),
                &config(sel),
                &setup(tmp.path(), false, &never),
                &mut |_| {},
            )
            .unwrap();
            let dir = tmp.path().join("interrupted");
            FLAG.store(false, Ordering::SeqCst);
            let mut toy = Toy::new(1.0);
            // Stop before the 6th step (epoch 1, batch 2).
            toy.interrupt_after = Some((5, &FLAG));
            let err = run(&toy, &config(sel), &setup(&dir, false, &FLAG), &mut |_| {}).unwrap_err();
            let Error::Interrupted { checkpoint } = err else {
                panic!("expected Interrupted, got {err}");
            };
            assert_eq!(checkpoint, dir.join("toy.ckpt.safetensors"));
            // Another fingerprint is refused and the checkpoint kept.
            FLAG.store(false, Ordering::SeqCst);
            let fresh = Toy::new(1.0);
            let mut other = setup(&dir, true, &FLAG);
            other.fingerprint = "other".into();
            let err = run(&fresh, &config(sel), &other, &mut |_| {}).unwrap_err();
            assert!(
                err.to_string().contains("different training config"),
                "{err}"
            );
            assert!(checkpoint.is_file());
            let mut steps = Vec::new();
            let resumed = run(&fresh, &config(sel), &setup(&dir, true, &FLAG), &mut |e| {
                if let LoopEvent::Step { step, .. } = e {
                    steps.push(*step);
                }
            })
            .unwrap();
            assert_eq!(steps, (6..=12).collect::<Vec<_>>());
            assert!(!checkpoint.exists());
            assert_eq!(resumed.selected, straight.selected);
            if sel == Selection::BestEpoch {
                assert_eq!(resumed.best_epoch, straight.best_epoch);
                assert_eq!(w0(&resumed), w0(&straight));
            } else {
                // SWA restarts on resume inside its window; base and EMA continue exactly.
                assert_eq!(
                    resumed.variant_scores["base"],
                    straight.variant_scores["base"]
                );
                assert_eq!(
                    resumed.variant_scores["ema"],
                    straight.variant_scores["ema"]
                );
            }
        }
    }
}
