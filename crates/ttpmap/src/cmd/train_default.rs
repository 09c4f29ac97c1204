//! `ttpmap train default`: trains the default pipeline's full-catalog model on every labelled
//! source in the data folder (TRAM2 and AnnoCTR training reports, ATT&CK procedure examples
//! and descriptions, the emulation plans' training queries, optional analyst reviews) and
//! writes it (see `ttpmap_ml::train::job::train_catalog_classifier`).
//!
//! Parses flags, resolves the config (`configs/default.toml` lists every value), loads the
//! sources and calls the library through the shared training driver (`cmd::train`).

use std::path::{Path, PathBuf};

use ttpmap_core::dataset::{self, Dataset};
use ttpmap_ml::train::job::{train_catalog_classifier, CatalogJob, CatalogTrainConfig, Target};

use crate::assets::Assets;
use crate::cmd::train::{config_toml, drive, open_model, read_config};

#[derive(Debug, clap::Args)]
pub struct DefaultArgs {
    /// Training config (TOML, or JSON when the name ends in .json); configs/default.toml lists
    /// every value. The resolved config is saved with the model.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Analyst reviews to train on as well (`ttpmap data export-reviews --format jsonl`);
    /// repeatable.
    #[arg(long, value_name = "FILE.jsonl")]
    pub reviews: Vec<PathBuf>,
    /// Epochs (overrides the config file).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Base encoder folder (default: all-MiniLM-L6-v2 as the dense methods resolve it).
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output model folder (the full weights; --ship gets the shipped delta made from them).
    #[arg(long, value_name = "DIR", default_value = "models/default-full")]
    pub out: PathBuf,
    /// Continue from the checkpoints of an interrupted run with the same output folder.
    #[arg(long)]
    pub resume: bool,
    /// The shipped model folder made from the full weights: the delta over the base encoder,
    /// calibration and threshold (see `ttpmap_ml::trained`). Commit it to ship it.
    #[arg(long, value_name = "DIR", default_value = "models/default")]
    pub ship: PathBuf,
    /// Skip training: package the existing full weights in --out into --ship again.
    #[arg(long)]
    pub package_only: bool,
    /// Also write the validation sentences' scores (JSON lines) to FILE when packaging, for
    /// scripts/validation_bootstrap.py.
    #[arg(long, value_name = "FILE")]
    pub dump_validation: Option<PathBuf>,
}

fn report_dataset(assets: &Assets, name: &str) -> anyhow::Result<(Dataset, PathBuf)> {
    let p = assets.data_dir().join(name).join("train.json");
    let ds = if name == "tram2" {
        dataset::load_tram2(&p)?
    } else {
        dataset::load_annoctr(&p)?
    };
    Ok((ds, p))
}

pub fn run(assets: &Assets, args: DefaultArgs) -> anyhow::Result<()> {
    let mut cfg: CatalogTrainConfig = read_config(args.config.as_deref())?;
    cfg.classifier.epochs = args.epochs.unwrap_or(cfg.classifier.epochs);
    let catalog = assets.catalog()?;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut reports = Vec::new();
    for name in ["tram2", "annoctr"] {
        let (mut ds, p) = report_dataset(assets, name)?;
        crate::assets::remap_labels(&mut ds, &catalog);
        reports.push(ds);
        files.push(p);
    }
    let mut extra = Vec::new();
    for p in &args.reviews {
        let mut ds = dataset::load_sentences_jsonl(p)?;
        ds.name = format!("reviews:{}", p.display());
        crate::assets::remap_labels(&mut ds, &catalog);
        extra.push(ds);
        files.push(p.clone());
    }
    let mut validation_only = Vec::new();
    if cfg.data.annoctr_dev {
        let raw = assets.data_dir().join("annoctr").join("raw");
        let (mut ds, _) = dataset::load_annoctr_raw(&raw, "dev")?;
        ds.name = "annoctr-dev".into();
        crate::assets::remap_labels(&mut ds, &catalog);
        // Fingerprint the dev reports' own files, not the folder (which holds the test split).
        files.push(raw.join("splits.tsv"));
        for d in &ds.documents {
            files.push(raw.join("text").join(format!("{}.txt", d.id)));
            files.push(
                raw.join("linking_mitre_only")
                    .join(format!("{}.json", d.id)),
            );
        }
        validation_only.push(ds);
    }
    let steps = if cfg.data.emulation {
        files.push(assets.data_dir().join("emulation"));
        crate::rerank::emulation_steps(assets, &catalog)?
    } else {
        Vec::new()
    };
    let md = open_model(assets, args.model.clone())?;
    let resolved = config_toml(&cfg, "ttpmap train default")?;
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let sources = ttpmap_ml::train::data::CatalogSources {
        reports: &reports,
        extra: &extra,
        validation_only: &validation_only,
        emulation: &steps,
    };
    let data =
        if args.package_only {
            ttpmap_ml::train::data::catalog_data(&catalog, &sources, &cfg.data)?
        } else {
            let (report, data) = drive(assets.quiet(), |interrupt, p| {
                let job = CatalogJob {
                    catalog: &catalog,
                    sources,
                    data_files: &file_refs,
                    data: &cfg.data,
                    model: &md,
                    config: &cfg.classifier,
                    target: Target::new(&args.out, args.resume, interrupt),
                    extra_files: &[("training.toml", resolved.as_bytes())],
                };
                train_catalog_classifier(&job, &mut |e| {
                    crate::cmd::train_classifier::render_classifier(p, e, &cfg.classifier)
                })
            })?;
            eprintln!(
            "full-catalog model ({} labels) written to {} (validation per-document F1 {:.2} at \
             its tuned threshold {:.2})",
            data.data.labels.len(),
            report.out.display(),
            100.0 * report.results.validation.metrics.per_document_f1_in_vocabulary_tuned,
            report.results.validation.metrics.tuned_threshold
        );
            data
        };
    eprintln!(
        "training sentences by source: {:?}; validation sentences {:?} from {:?} held-out reports",
        data.train_sources, data.validation_sources, data.validation_reports
    );
    if data.unknown.0 > 0 {
        eprintln!(
            "{} training sentences leave {} (sentence, technique) pairs out of the loss \
             (parent_labels_leave_subtechniques_unknown, fixed_label_space_families_unknown)",
            data.unknown.0, data.unknown.1
        );
    }
    let mentions = ttpmap_ml::trained::Mentions::from_catalog(&catalog);
    let command = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "ttpmap".to_string() } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    // The precision of training's products (chosen by CPU unless asked for) is part of how
    // the weights were made.
    let command = match (args.package_only, ttpmap_ml::encoder::bf16::train_bf16()) {
        (true, _) => command,
        (false, true) => format!("TTPMAP_TRAIN_PRECISION=bf16 {command}"),
        (false, false) => format!("TTPMAP_TRAIN_PRECISION=fp32 {command}"),
    };
    // Packaging again keeps the training command of the model it replaces.
    let previous = std::fs::read(args.ship.join(ttpmap_ml::trained::MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["command"].as_str().map(str::to_string));
    let trained_by = previous.map(|p| p.split("; packaged again").next().unwrap_or("").to_string());
    let command = match trained_by {
        Some(t) if args.package_only && !t.is_empty() && !t.contains("--package-only") => {
            format!("{t}; packaged again: {command}")
        }
        _ => command,
    };
    let job = ttpmap_ml::trained::PackageJob {
        full: &args.out,
        base: &md,
        validation: &data.data.validation,
        validation_reports: data.validation_reports.clone(),
        mentions: &mentions,
        out: &args.ship,
        command,
        dump_validation: args.dump_validation.as_deref(),
    };
    let quiet = assets.quiet();
    let m = ttpmap_ml::trained::package(&job, &mut |msg| {
        if !quiet {
            eprintln!("{msg}");
        }
    })?;
    println!(
        "default model written to {}: {} labels, validation per-document F1 {:.2} at threshold \
         {:.2} (calibrated), software boost {}, name boost {}",
        args.ship.display(),
        m.classifier.labels.len(),
        100.0 * m.validation.per_document_f1,
        m.threshold,
        m.software_boost,
        m.name_boost
    );
    Ok(())
}
