//! `ttpmap train classifier`: trains the label-attention classifier (CASSANDRA recipe) on a
//! sentence dataset and writes a versioned model folder (see `ttpmap_ml::artifact`).
//!
//! Parses flags, resolves the config (`configs/classifier.toml` lists every default), loads the
//! catalog, dataset and base model, and calls `ttpmap_ml::train::job::train_classifier`
//! through the shared training driver (`cmd::train`: config formats, Ctrl-C, progress).

use std::path::{Path, PathBuf};

use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, Dataset};
use ttpmap_ml::train::classifier::{ClassifierTrainConfig, TrainEvent};
use ttpmap_ml::train::job::{train_classifier, ClassifierJob, Target};
use ttpmap_ml::train::{AslConfig, LossConfig};

use crate::assets::Assets;
use crate::cmd::train::{config_toml, drive, open_model, read_config, Progress};

/// `--loss` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossName {
    /// Asymmetric loss (gamma_neg 4, gamma_pos 0, clip 0.05).
    Asl,
    /// Binary cross-entropy (pos_weight from the config, none by default).
    Bce,
}

#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    /// `tram2`, `annoctr` (train split of the data folder), a TRAM2-format JSON file, or a
    /// sentence JSONL file (`.jsonl`, e.g. from `ttpmap data export-reviews --format jsonl`).
    #[arg(long, value_name = "tram2|annoctr|FILE")]
    pub dataset: String,
    /// Loss (overrides the config file).
    #[arg(long, value_enum)]
    pub loss: Option<LossName>,
    /// Comma-separated seeds (overrides the config file).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub seeds: Option<Vec<u64>>,
    /// Training config: TOML (or JSON when the name ends in .json) with any fields of
    /// `ClassifierTrainConfig`; missing fields keep the recipe's defaults
    /// (configs/classifier.toml lists them all). The resolved config is saved with the model.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Epochs (overrides the config file).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Freeze the embeddings and the N lowest encoder layers, caching their output (overrides
    /// the config file; 0 = the recipe, all layers trained).
    #[arg(long, value_name = "N")]
    pub frozen_layers: Option<usize>,
    /// Base encoder folder (default: the dense methods' model, all-MiniLM-L6-v2).
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output model folder (default: models/classifier-<dataset>-<loss>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue from the checkpoints of an interrupted run with the same output folder.
    #[arg(long)]
    pub resume: bool,
}

/// `tram2`, `annoctr`, a `.jsonl` sentence file or a TRAM2 JSON file, remapped to `catalog`.
fn load_dataset(
    assets: &Assets,
    name: &str,
    catalog: &Catalog,
) -> anyhow::Result<(Dataset, PathBuf)> {
    let dir = assets.data_dir();
    let (mut ds, path) = match name {
        "tram2" | "annoctr" => {
            let p = dir.join(name).join("train.json");
            let ds = if name == "tram2" {
                dataset::load_tram2(&p)?
            } else {
                dataset::load_annoctr(&p)?
            };
            (ds, p)
        }
        file if file.ends_with(".jsonl") => {
            (dataset::load_sentences_jsonl(Path::new(file))?, file.into())
        }
        file => (dataset::load_tram2(Path::new(file))?, file.into()),
    };
    crate::assets::remap_labels(&mut ds, catalog);
    Ok((ds, path))
}

pub fn run(assets: &Assets, args: ClassifierArgs) -> anyhow::Result<()> {
    let mut cfg: ClassifierTrainConfig = read_config(args.config.as_deref())?;
    match args.loss {
        Some(LossName::Asl) => cfg.loss = LossConfig::Asl(AslConfig::default()),
        Some(LossName::Bce) if !matches!(cfg.loss, LossConfig::Bce { .. }) => {
            cfg.loss = LossConfig::Bce { pos_weight: None }
        }
        _ => {}
    }
    cfg.seeds = args.seeds.clone().unwrap_or(cfg.seeds);
    cfg.epochs = args.epochs.unwrap_or(cfg.epochs);
    cfg.frozen_layers = args.frozen_layers.unwrap_or(cfg.frozen_layers);
    let loss_name = match cfg.loss {
        LossConfig::Asl(_) => "asl",
        LossConfig::Bce { .. } => "bce",
    };
    let catalog = assets.catalog()?;
    let (ds, data_path) = load_dataset(assets, &args.dataset, &catalog)?;
    let md = open_model(assets, args.model.clone())?;
    let out = args.out.clone().unwrap_or_else(|| {
        let name = Path::new(&args.dataset)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        PathBuf::from(format!("models/classifier-{name}-{loss_name}"))
    });
    let resolved = config_toml(&cfg, "ttpmap train classifier")?;
    let report = drive(assets.quiet(), |interrupt, p| {
        let job = ClassifierJob {
            catalog: &catalog,
            dataset: &ds,
            data_file: &data_path,
            model: &md,
            config: &cfg,
            target: Target::new(&out, args.resume, interrupt),
            extra_files: &[("training.toml", resolved.as_bytes())],
        };
        train_classifier(&job, &mut |e| render_classifier(p, e, &cfg))
    })?;
    println!(
        "classifier written to {} (threshold tuned on validation: {:.2})",
        report.out.display(),
        report.results.validation.metrics.tuned_threshold
    );
    Ok(())
}

pub fn render_classifier(p: &mut Progress, e: &TrainEvent, cfg: &ClassifierTrainConfig) {
    match e {
        TrainEvent::Prepared { train, validation, labels } => eprintln!(
            "training on {train} sentences ({validation} validation), {labels} labels, seeds {:?}, {} epochs",
            cfg.seeds, cfg.epochs
        ),
        TrainEvent::Cache { seed, done, total } => {
            if *done == 0 || p.current().length() != Some(*total as u64) {
                p.bar(*total, &format!("seed {seed}: caching frozen layers"));
            }
            p.current().set_position(*done as u64);
        }
        TrainEvent::Seed { seed, index, of, event } => {
            let run = format!("seed {seed} ({}/{of})", index + 1);
            p.loop_event(event, &run, Some(&format!("seed {seed}")), "macro-F1");
        }
        TrainEvent::SeedDone(r) => {
            p.current().finish_and_clear();
            eprintln!(
                "seed {}: kept {} weights (validation macro-F1 {:?}); validation per-document \
                 F1 {:.2} at its tuned threshold {:.2}, {:.2} at 0.5; {:.0} s",
                r.seed,
                r.selected,
                r.val_macro_f1,
                100.0 * r.validation.per_document_f1_in_vocabulary_tuned,
                r.validation.tuned_threshold,
                100.0 * r.validation.per_document_f1_in_vocabulary_at_0_5,
                r.seconds
            );
        }
    }
}
