//! `ttpmap data stats DATASET`: documents, sentences, labels and positives per technique.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use ttpmap_core::dataset::{self, Dataset};
use ttpmap_core::eval::render_table;

use crate::assets::Assets;
use crate::serve::db::Db;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Statistics of a dataset split.
    Stats(StatsArgs),
    /// Reviewed reports of a `ttpmap serve` database -> training data (the feedback loop).
    ExportReviews(ExportReviewsArgs),
    /// Reranker pair set (JSONL): each query of a split with its candidate set.
    Pairs(crate::cmd::pairs::PairsArgs),
}

/// Datasets `data stats` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsDataset {
    /// TRAM2 (column format, train/test).
    Tram2,
    /// AnnoCTR (column format, train/test).
    Annoctr,
    /// AnnoCTR in its own format (raw/: train/dev/test/ext).
    AnnoctrRaw,
    /// Emulation plans (steps per actor).
    Emulation,
    /// ATT&CK procedure examples of the catalog.
    Procedures,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[arg(value_enum)]
    pub dataset: StatsDataset,
    /// Split(s) to describe (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ["train".to_string(), "test".to_string()])]
    pub split: Vec<String>,
    /// Remap labels to the current ATT&CK through revoked-by (needs the catalog).
    #[arg(long)]
    pub remap: bool,
}

pub fn run(assets: &Assets, args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Stats(a) => stats(assets, a),
        DataCommand::ExportReviews(a) => export_reviews(assets, a),
        DataCommand::Pairs(a) => crate::cmd::pairs::run(assets, a),
    }
}

fn stats(assets: &Assets, args: StatsArgs) -> anyhow::Result<()> {
    let dir = assets.data_dir();
    match args.dataset {
        StatsDataset::Emulation => {
            let steps = dataset::load_emulation(dir.join("emulation"))?.steps;
            let mut per_actor: BTreeMap<&str, (usize, std::collections::BTreeSet<&str>)> =
                BTreeMap::new();
            for s in &steps {
                let e = per_actor.entry(s.actor.as_str()).or_default();
                e.0 += 1;
                e.1.insert(s.technique.as_str());
            }
            let mut rows: Vec<Vec<String>> = per_actor
                .iter()
                .map(|(a, (n, t))| vec![a.to_string(), n.to_string(), t.len().to_string()])
                .collect();
            let all: std::collections::BTreeSet<&str> =
                steps.iter().map(|s| s.technique.as_str()).collect();
            rows.push(vec![
                "all".into(),
                steps.len().to_string(),
                all.len().to_string(),
            ]);
            print!("{}", render_table(&["actor", "steps", "techniques"], &rows));
            return Ok(());
        }
        StatsDataset::Procedures => {
            let catalog = assets.catalog()?;
            let mut per_tech: BTreeMap<String, usize> = BTreeMap::new();
            for p in catalog.procedures() {
                *per_tech.entry(p.technique.to_string()).or_default() += 1;
            }
            let mut counts: Vec<usize> = per_tech.values().copied().collect();
            counts.sort_unstable();
            let median = counts.get(counts.len() / 2).copied().unwrap_or(0);
            println!(
                "ATT&CK {} procedure examples: {} over {} techniques (median {} per technique, {} with fewer than 10)",
                catalog.version(),
                catalog.procedures().len(),
                per_tech.len(),
                median,
                counts.iter().filter(|&&c| c < 10).count()
            );
            return Ok(());
        }
        _ => {}
    }
    let catalog = if args.remap {
        Some(assets.catalog()?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for split in &args.split {
        let mut ds: Dataset = match args.dataset {
            StatsDataset::Tram2 => {
                dataset::load_tram2(dir.join("tram2").join(format!("{split}.json")))?
            }
            StatsDataset::Annoctr => {
                dataset::load_annoctr(dir.join("annoctr").join(format!("{split}.json")))?
            }
            StatsDataset::AnnoctrRaw => {
                dataset::load_annoctr_raw(dir.join("annoctr").join("raw"), split)?.0
            }
            StatsDataset::Emulation | StatsDataset::Procedures => unreachable!("handled above"),
        };
        if let Some(c) = &catalog {
            ds.remap(|id| c.resolve(id).current().cloned());
        }
        let s = ds.stats();
        rows.push(vec![
            split.clone(),
            s.documents.to_string(),
            s.sentences.to_string(),
            s.labelled_sentences.to_string(),
            s.techniques.to_string(),
            s.total_positives.to_string(),
            format!("{:.1}", s.positives_per_technique_mean),
            format!("{:.1}", s.positives_per_technique_median),
            s.under_10.to_string(),
        ]);
        if !ds.other_labels.is_empty() {
            let n: usize = ds.other_labels.values().sum();
            eprintln!(
                "{split}: {n} non-technique labels not kept ({} distinct, e.g. {})",
                ds.other_labels.len(),
                ds.other_labels
                    .keys()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    print!(
        "{}",
        render_table(
            &[
                "split",
                "documents",
                "sentences",
                "labelled",
                "techniques",
                "positives",
                "mean/tech",
                "median/tech",
                "<10"
            ],
            &rows
        )
    );
    Ok(())
}

/// Training-data formats of `data export-reviews`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReviewFormat {
    /// TRAM2 column JSON, what `ttpmap train classifier --dataset FILE` reads.
    Tram2,
    /// One `{"doc_id", "sentence", "labels"}` object per line.
    Jsonl,
}

#[derive(Debug, clap::Args)]
pub struct ExportReviewsArgs {
    /// The `ttpmap serve` database (default: ttpmap.db in the cache folder, as `serve` uses).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Output file (written only when complete); stdout without it.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: jsonl when the output ends in .jsonl, else tram2).
    #[arg(long, value_enum)]
    pub format: Option<ReviewFormat>,
}

/// `ttpmap data export-reviews`: see `serve::training` for what becomes a label.
pub fn export_reviews(assets: &Assets, args: ExportReviewsArgs) -> anyhow::Result<()> {
    let path = args.db.clone().unwrap_or_else(|| assets.review_db());
    if !path.is_file() {
        anyhow::bail!("{}: no such database file (pass --db FILE)", path.display());
    }
    let db = Db::open(&path).context("opening the report database")?;
    let docs = crate::serve::training::reviewed_documents(&db)
        .with_context(|| format!("reading reviews from {}", path.display()))?;
    let format = args
        .format
        .unwrap_or(match args.output.as_ref().and_then(|p| p.extension()) {
            Some(e) if e == "jsonl" => ReviewFormat::Jsonl,
            _ => ReviewFormat::Tram2,
        });
    let text = match format {
        ReviewFormat::Jsonl => crate::serve::training::to_jsonl(&docs),
        ReviewFormat::Tram2 => {
            let mut s =
                serde_json::to_string_pretty(&ttpmap_core::dataset::to_tram2_columns(&docs))?;
            s.push('\n');
            s
        }
    };
    let sentences: usize = docs.iter().map(|d| d.sentences.len()).sum();
    let labelled = docs
        .iter()
        .flat_map(|d| d.sentences.iter())
        .filter(|s| !s.labels.is_empty())
        .count();
    crate::output::write_output(args.output.as_deref(), text.as_bytes())?;
    eprintln!(
        "{} reviewed reports, {sentences} sentences ({labelled} with labels)",
        docs.len()
    );
    Ok(())
}
