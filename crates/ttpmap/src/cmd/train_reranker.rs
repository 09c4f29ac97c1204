//! `ttpmap train reranker`: fine-tunes the cross-encoder on the emulation-plan training queries
//! (gold + BM25 hard negatives from 20-candidate sets, resampled 1:2.5 each epoch), keeps the
//! epoch with the best validation P@1 and writes a Hugging Face `BertForSequenceClassification`
//! folder with its typed metadata (`ttpmap_ml::crossencoder::RerankerMetadata`).
//!
//! Parses flags, resolves the config (`configs/reranker.toml` lists every default), loads the
//! inputs and calls `ttpmap_ml::train::job::train_reranker` through the shared training driver
//! (`cmd::train`: same config formats, same Ctrl-C behaviour as the classifier).

use std::path::PathBuf;

use ttpmap_core::rerank_data::{CandidateSetConfig, CandidateTextConfig};
use ttpmap_ml::train::data::RerankerDataConfig;
use ttpmap_ml::train::job::{train_reranker, RerankerJob, Target};
use ttpmap_ml::train::reranker::{RerankerTrainConfig, RerankerTrainEvent};
use ttpmap_ml::train::LoopEvent;

use crate::assets::Assets;
use crate::cmd::pairs::NegativesArg;
use crate::cmd::train::{drive, open_model, read_config, Progress};
use crate::methods::{bm25_index, MethodArgs};
use crate::rerank::{self, PairDataset};

#[derive(Debug, clap::Args)]
pub struct RerankerArgs {
    /// Dataset of queries (its train split is learnt, its validation split picks the epoch).
    #[arg(long, value_enum, default_value_t = PairDataset::Emulation)]
    pub dataset: PairDataset,
    /// Base model folder: a plain encoder (default all-MiniLM-L6-v2) or a Hugging Face
    /// cross-encoder.
    #[arg(long, env = "TTPMAP_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Output model folder (default: models/reranker-<dataset>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Training config: TOML (or JSON when the name ends in .json) with any fields of
    /// `RerankerTrainConfig`; missing fields keep the recipe's defaults
    /// (configs/reranker.toml lists them all).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Epochs (overrides the config file).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Peak learning rate of the encoder (overrides the config file; recipe 2e-5).
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Peak learning rate of the classification head (overrides the config file; the recipe
    /// uses --lr for every parameter).
    #[arg(long, value_name = "LR")]
    pub head_lr: Option<f64>,
    /// Append the technique's tactics to each candidate text (recorded in the model folder,
    /// so ranking with it renders candidates the same way).
    #[arg(long)]
    pub candidate_tactic: bool,
    /// Leading description sentences appended to each candidate text.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub candidate_sentences: usize,
    /// Seed of the head, negative sampling and batch order (overrides the config file).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Seed of the 80/10/10 query split.
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,
    /// How the negatives of each query's 20 candidates are drawn.
    #[arg(long, value_enum, default_value_t = NegativesArg::Bm25)]
    pub negatives: NegativesArg,
    /// Also learn from up to N ATT&CK procedure examples per technique (query: the example;
    /// gold: its technique; negatives: BM25's top non-gold techniques). 0 (default) is the
    /// recipe: emulation-plan queries only.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub augment_procedures: usize,
    /// Continue from the checkpoint of an interrupted run with the same output folder.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(assets: &Assets, args: RerankerArgs) -> anyhow::Result<()> {
    let mut cfg: RerankerTrainConfig = read_config(args.config.as_deref())?;
    cfg.epochs = args.epochs.unwrap_or(cfg.epochs);
    cfg.seed = args.seed.unwrap_or(cfg.seed);
    cfg.lr = args.lr.unwrap_or(cfg.lr);
    cfg.head_lr = args.head_lr.or(cfg.head_lr);
    let data_cfg = RerankerDataConfig {
        split_seed: args.split_seed,
        candidates: CandidateSetConfig {
            negatives: args.negatives.into(),
            ..CandidateSetConfig::default()
        },
        candidate_text: CandidateTextConfig {
            tactic: args.candidate_tactic,
            description_sentences: args.candidate_sentences,
        },
        augment_procedures: args.augment_procedures,
    };
    let catalog = assets.catalog()?;
    let steps = rerank::emulation_steps(assets, &catalog)?;
    let index = bm25_index(&catalog, &MethodArgs::default())?;
    let md = open_model(assets, args.model.clone())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("models/reranker-emulation"));
    let dataset = serde_json::to_value(args.dataset)?;
    let metadata = drive(assets.quiet(), |interrupt, p| {
        let job = RerankerJob {
            catalog: &catalog,
            dataset: dataset.as_str().unwrap_or("emulation"),
            steps: &steps,
            index: &index,
            data: &data_cfg,
            model: &md,
            config: &cfg,
            target: Target::new(&out, args.resume, interrupt),
        };
        let mut pairs = 0;
        train_reranker(&job, &mut |e| render(p, &mut pairs, e, &md, &cfg))
    })?;
    let r = &metadata.results;
    println!(
        "reranker written to {} (epoch {} kept, validation P@1 {:.2}, {:.0} s)",
        out.display(),
        r.best_epoch + 1,
        100.0 * r.best_validation_p_at_1,
        r.seconds
    );
    Ok(())
}

fn render(
    p: &mut Progress,
    pairs: &mut usize,
    e: &RerankerTrainEvent,
    md: &ttpmap_ml::ModelDir,
    cfg: &RerankerTrainConfig,
) {
    match e {
        RerankerTrainEvent::Prepared {
            train_queries,
            procedure_queries,
            validation_queries,
        } => eprintln!(
            "training the reranker from {} on {train_queries} queries ({procedure_queries} ATT&CK \
             procedure examples; {validation_queries} validation), {} epochs, seed {}",
            md.path().display(),
            cfg.epochs,
            cfg.seed
        ),
        RerankerTrainEvent::Encoded { pairs_per_epoch } => *pairs = *pairs_per_epoch,
        RerankerTrainEvent::Loop(event) => {
            p.loop_event(event, "reranker", None, "P@1");
            if let LoopEvent::Start { total_steps } = event {
                p.line(&format!("{pairs} pairs an epoch, {total_steps} steps"));
            }
        }
    }
}
