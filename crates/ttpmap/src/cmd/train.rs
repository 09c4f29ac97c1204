//! `ttpmap train classifier|reranker`: the one training driver. Each model's command
//! (`cmd::train_classifier`, `cmd::train_reranker`) parses its flags, resolves its config (a
//! TOML file, or JSON when the name ends in `.json`; `configs/<model>.toml` lists every
//! default; flags override), loads the inputs and calls one library function
//! (`ttpmap_ml::train::job`: prepare the data, train, write the model folder) through
//! [`drive`]. This module owns what they share: config reading, Ctrl-C, progress rendering.
//!
//! Ctrl-C is the same for every model: the first one asks the library to stop at the next step
//! with a resumable checkpoint (the command then says where it wrote it; `--resume`
//! continues), a second one (e.g. during caching or validation, where no step comes soon)
//! kills the process at once. The model folder is written only at the end (temporary folder,
//! then rename).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;
use serde::Serialize;
use ttpmap_ml::train::LoopEvent;
use ttpmap_ml::ModelDir;

use crate::assets::Assets;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub what: TrainWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrainWhat {
    /// The label-attention classifier (CASSANDRA recipe) on a sentence dataset.
    Classifier(crate::cmd::train_classifier::ClassifierArgs),
    /// The cross-encoder reranker on emulation-plan queries.
    Reranker(crate::cmd::train_reranker::RerankerArgs),
    /// The default pipeline's full-catalog model on every labelled source in the data folder.
    Default(crate::cmd::train_default::DefaultArgs),
}

pub fn run(assets: &Assets, args: TrainArgs) -> anyhow::Result<()> {
    match args.what {
        TrainWhat::Classifier(a) => crate::cmd::train_classifier::run(assets, a),
        TrainWhat::Reranker(a) => crate::cmd::train_reranker::run(assets, a),
        TrainWhat::Default(a) => crate::cmd::train_default::run(assets, a),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // The first Ctrl-C asks for a checkpoint at the next step; the next one kills the process.
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Progress rendering shared by every model: one bar at a time, status lines above it.
pub struct Progress {
    pb: ProgressBar,
    quiet: bool,
}

impl Progress {
    /// Replaces the bar with a new one of `len` items.
    pub fn bar(&mut self, len: usize, message: &str) {
        self.pb = crate::progress::bar(len as u64, message, self.quiet);
    }

    /// The current bar.
    pub fn current(&self) -> &ProgressBar {
        &self.pb
    }

    /// A training step (see `progress::training_step`).
    pub fn step(&self, step: usize, total: usize, loss: f64, status: impl FnOnce() -> String) {
        crate::progress::training_step(&self.pb, self.quiet, step, total, loss, status);
    }

    /// An event of the shared training loop: `run` names the run in the bar (`seed 42 (1/3)`)
    /// and `who` in status lines (`seed 42`); `score` names the validation score.
    pub fn loop_event(&mut self, e: &LoopEvent, run: &str, who: Option<&str>, score: &str) {
        match e {
            LoopEvent::Start { total_steps } => self.bar(*total_steps, run),
            LoopEvent::Step {
                step,
                total_steps,
                loss,
                eta_seconds,
                ..
            } => self.step(*step, *total_steps, *loss, || {
                let who = who.map(|w| format!("{w}: ")).unwrap_or_default();
                format!("{who}step {step}/{total_steps}, loss {loss:.4}, ETA {eta_seconds:.0} s")
            }),
            LoopEvent::Epoch {
                epoch,
                mean_loss,
                val_score,
            } => {
                let who = who.map(|w| format!("{w} ")).unwrap_or_default();
                self.line(&format!(
                    "{who}epoch {}: loss {mean_loss:.4}, validation {score} {:.2}",
                    epoch + 1,
                    100.0 * val_score
                ));
            }
        }
    }

    /// A status line above the bar (a log line with `--quiet`).
    pub fn line(&self, msg: &str) {
        if self.quiet {
            tracing::info!("{msg}");
        } else {
            crate::progress::line(&self.pb, false, msg);
        }
    }
}

/// Runs `train` with Ctrl-C armed (see the module docs) and a [`Progress`]; an interrupted run
/// becomes an error saying where the checkpoint is.
pub fn drive<O>(
    quiet: bool,
    train: impl FnOnce(&AtomicBool, &mut Progress) -> ttpmap_ml::Result<O>,
) -> anyhow::Result<O> {
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic and resets
    // the disposition.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let mut progress = Progress {
        pb: crate::progress::bar(0, "", quiet),
        quiet,
    };
    match train(&INTERRUPTED, &mut progress) {
        Ok(o) => {
            progress.pb.finish_and_clear();
            Ok(o)
        }
        Err(ttpmap_ml::Error::Interrupted { checkpoint }) => {
            progress.pb.abandon();
            anyhow::bail!(
                "interrupted; checkpoint at {} (rerun with --resume to continue)",
                checkpoint.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// A training config from TOML, or JSON when `path` ends in `.json`.
pub fn parse_config<T: DeserializeOwned>(text: &str, path: &Path) -> anyhow::Result<T> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(text)
            .with_context(|| format!("invalid training config {} (JSON)", path.display()))
    } else {
        toml::from_str(text)
            .with_context(|| format!("invalid training config {} (TOML)", path.display()))
    }
}

/// The config in `path` (see [`parse_config`]), or the defaults without one.
pub fn read_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(p) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading the config {}", p.display()))?;
    parse_config(&text, p)
}

/// The resolved config as TOML, with a header saying what it is.
pub fn config_toml(cfg: &impl Serialize, command: &str) -> anyhow::Result<String> {
    Ok(format!(
        "# Resolved training config of this model ({command} --config accepts it).\n{}",
        toml::to_string(cfg).context("serialising the training config as TOML")?
    ))
}

/// Opens the base model folder (`--model`, else the dense methods' model).
pub fn open_model(assets: &Assets, model: Option<PathBuf>) -> anyhow::Result<ModelDir> {
    let args = crate::methods::MethodArgs {
        model,
        ..Default::default()
    };
    let path = crate::methods::model_path(assets, &args)?;
    ModelDir::open(&path).with_context(|| format!("opening the model folder {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttpmap_ml::train::classifier::ClassifierTrainConfig;
    use ttpmap_ml::train::reranker::RerankerTrainConfig;

    fn shipped(name: &str) -> (String, PathBuf) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(name);
        (std::fs::read_to_string(&p).unwrap(), p)
    }

    /// configs/*.toml document every recipe default: each must parse and equal them.
    #[test]
    fn shipped_configs_are_the_recipe_defaults() {
        let (text, p) = shipped("classifier.toml");
        let c: ClassifierTrainConfig = parse_config(&text, &p).unwrap();
        assert_eq!(c, ClassifierTrainConfig::default());
        let (text, p) = shipped("reranker.toml");
        let r: RerankerTrainConfig = parse_config(&text, &p).unwrap();
        assert_eq!(r, RerankerTrainConfig::default());
        let (text, p) = shipped("default.toml");
        let d: ttpmap_ml::train::job::CatalogTrainConfig = parse_config(&text, &p).unwrap();
        assert_eq!(d, ttpmap_ml::train::job::CatalogTrainConfig::default());
    }

    #[test]
    fn toml_round_trips_and_overrides_merge_with_defaults() {
        let cfg = ClassifierTrainConfig {
            frozen_layers: 4,
            seeds: vec![7],
            ..Default::default()
        };
        let text = config_toml(&cfg, "x").unwrap();
        let back: ClassifierTrainConfig = parse_config(&text, Path::new("c.toml")).unwrap();
        assert_eq!(back, cfg);
        let partial: ClassifierTrainConfig =
            parse_config("epochs = 3\n", Path::new("c.toml")).unwrap();
        assert_eq!(partial.epochs, 3);
        assert_eq!(
            partial.batch_size,
            ClassifierTrainConfig::default().batch_size
        );
        let json: ClassifierTrainConfig =
            parse_config("{\"epochs\": 2}", Path::new("c.json")).unwrap();
        assert_eq!(json.epochs, 2);
        // The reranker takes the same two formats (JSON was its only one before).
        let r = RerankerTrainConfig {
            head_lr: Some(1e-3),
            ..Default::default()
        };
        let back: RerankerTrainConfig =
            parse_config(&config_toml(&r, "x").unwrap(), Path::new("r.toml")).unwrap();
        assert_eq!(back, r);
        let json: RerankerTrainConfig =
            parse_config("{\"lr\": 5e-5}", Path::new("r.json")).unwrap();
        assert_eq!(json.lr, 5e-5);
    }

    #[test]
    fn unknown_or_mistyped_fields_name_the_file() {
        let err =
            parse_config::<ClassifierTrainConfig>("epoch = 3\n", Path::new("my.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("my.toml") && msg.contains("epoch"), "{msg}");
        let err =
            parse_config::<RerankerTrainConfig>("lr_typo = 1\n", Path::new("r.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("r.toml"));
    }
}
