//! `ttpmap train reranker`: fine-tunes the cross-encoder on the emulation-plan training queries
//! (gold + BM25 hard negatives from 20-candidate sets, resampled 1:2.5 each epoch), keeps the
//! epoch with the best validation P@1 and writes a Hugging Face `BertForSequenceClassification`
//! folder (see `ttpmap_ml::crossencoder`).
//!
//! Ctrl-C stops at the next step with a resumable checkpoint (`--resume` continues); the model
//! folder is written only at the end (temporary folder, then rename).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use ttpmap_core::rerank_data::{
    CandidateSet, CandidateSetConfig, CandidateTextConfig, RerankQuery,
};
use ttpmap_core::TechniqueId;
use ttpmap_ml::crossencoder::{save_model_dir, SaveSpec};
use ttpmap_ml::train::reranker::{
    fit, RerankerFitSetup, RerankerTrainConfig, RerankerTrainData, RerankerTrainEvent, TrainGroup,
    ValidationQuery,
};
use ttpmap_ml::ModelDir;

use crate::assets::Assets;
use crate::cmd::pairs::NegativesArg;
use crate::methods::{bm25_index, MethodArgs};
use crate::rerank::{self, PairDataset, QuerySplitName};

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
    /// Training config (JSON with the fields of `RerankerTrainConfig`; defaults = recipe).
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

/// Up to `per_technique` procedure examples of each active technique as training queries,
/// in catalog order.
fn procedure_queries(
    catalog: &ttpmap_core::attack::Catalog,
    texts: &BTreeMap<TechniqueId, String>,
    per_technique: usize,
) -> Vec<RerankQuery> {
    let mut taken: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, p) in catalog.procedures().iter().enumerate() {
        if !texts.contains_key(&p.technique) || p.description.trim().is_empty() {
            continue;
        }
        let n = taken.entry(&p.technique).or_default();
        if *n < per_technique {
            *n += 1;
            out.push(RerankQuery {
                id: format!("attack:procedure/{i}"),
                actor: "ATT&CK".into(),
                query: p.description.clone(),
                gold: std::collections::BTreeSet::from([p.technique.clone()]),
            });
        }
    }
    out
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn text_of(texts: &BTreeMap<TechniqueId, String>, t: &TechniqueId) -> String {
    texts.get(t).cloned().unwrap_or_else(|| t.to_string())
}

fn groups(sets: &[CandidateSet], texts: &BTreeMap<TechniqueId, String>) -> Vec<TrainGroup> {
    sets.iter()
        .map(|s| {
            let (pos, neg): (Vec<&TechniqueId>, Vec<&TechniqueId>) =
                s.candidates.iter().partition(|t| s.query.gold.contains(*t));
            TrainGroup {
                query: s.query.query.clone(),
                positives: pos.into_iter().map(|t| text_of(texts, t)).collect(),
                negatives: neg.into_iter().map(|t| text_of(texts, t)).collect(),
            }
        })
        .collect()
}

fn validation(
    sets: &[CandidateSet],
    texts: &BTreeMap<TechniqueId, String>,
) -> Vec<ValidationQuery> {
    sets.iter()
        .map(|s| ValidationQuery {
            query: s.query.query.clone(),
            candidates: s.candidates.iter().map(|t| text_of(texts, t)).collect(),
            relevant: s
                .candidates
                .iter()
                .map(|t| s.query.gold.contains(t))
                .collect(),
        })
        .collect()
}

pub fn run(assets: &Assets, args: RerankerArgs) -> anyhow::Result<()> {
    let mut cfg: RerankerTrainConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the config {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("invalid training config {}", p.display()))?
        }
        None => RerankerTrainConfig::default(),
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    if let Some(lr) = args.head_lr {
        cfg.head_lr = Some(lr);
    }
    let catalog = assets.catalog()?;
    let steps = rerank::emulation_steps(assets, &catalog)?;
    let train_q = rerank::split_queries(&steps, QuerySplitName::Train, args.split_seed)?;
    let val_q = rerank::split_queries(&steps, QuerySplitName::Validation, args.split_seed)?;
    let index = bm25_index(&catalog, &MethodArgs::default())?;
    let pool = rerank::active_pool(&catalog);
    let set_cfg = CandidateSetConfig {
        negatives: args.negatives.into(),
        ..CandidateSetConfig::default()
    };
    let text_cfg = CandidateTextConfig {
        tactic: args.candidate_tactic,
        description_sentences: args.candidate_sentences,
    };
    let texts = rerank::candidate_texts(&catalog, &text_cfg);
    let mut train_sets = rerank::candidate_sets(&train_q, &index, &pool, &set_cfg);
    let procedures = procedure_queries(&catalog, &texts, args.augment_procedures);
    train_sets.extend(rerank::candidate_sets(&procedures, &index, &pool, &set_cfg));
    let val_sets = rerank::candidate_sets(&val_q, &index, &pool, &set_cfg);
    let data = RerankerTrainData {
        train: groups(&train_sets, &texts),
        validation: validation(&val_sets, &texts),
    };
    let model_path = crate::methods::model_path(
        assets,
        &MethodArgs {
            model: args.model.clone(),
            ..Default::default()
        },
    )?;
    let md = ModelDir::open(&model_path)
        .with_context(|| format!("opening the model folder {}", model_path.display()))?;
    let tokenizer = md.tokenizer(cfg.max_length)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("models/reranker-emulation"));
    let ckpt_dir = out.with_file_name(format!(
        ".{}.checkpoints",
        out.file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    ));
    // SAFETY: installs an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    eprintln!(
        "training the reranker from {} on {} queries ({} ATT&CK procedure examples; {} validation), {} epochs, seed {}",
        model_path.display(),
        data.train.len(),
        procedures.len(),
        data.validation.len(),
        cfg.epochs,
        cfg.seed
    );
    let setup = RerankerFitSetup {
        model: Some(&md),
        encoder_config: md.config().clone(),
        tokenizer: &tokenizer,
        checkpoint_dir: ckpt_dir.clone(),
        resume: args.resume,
        interrupt: &INTERRUPTED,
    };
    let quiet = assets.quiet();
    let mut pb = crate::progress::bar(0, "", quiet);
    let result = fit(&setup, &data, &cfg, &mut |e| match e {
        RerankerTrainEvent::Start {
            total_steps,
            pairs_per_epoch,
        } => {
            pb = crate::progress::bar(*total_steps as u64, "reranker", quiet);
            let line = format!("{pairs_per_epoch} pairs an epoch, {total_steps} steps");
            if !quiet {
                eprintln!("{line}");
            }
        }
        RerankerTrainEvent::Step {
            step,
            total_steps,
            loss,
            eta_seconds,
            ..
        } => crate::progress::training_step(&pb, quiet, *step, *total_steps, *loss, || {
            format!("step {step}/{total_steps}, loss {loss:.4}, ETA {eta_seconds:.0} s")
        }),
        RerankerTrainEvent::Epoch {
            epoch,
            mean_loss,
            val_p_at_1,
        } => {
            let line = format!(
                "epoch {}: loss {mean_loss:.4}, validation P@1 {:.2}",
                epoch + 1,
                100.0 * val_p_at_1
            );
            if quiet {
                tracing::info!("{line}");
            } else if pb.is_hidden() {
                // No terminal: the bar is hidden and would swallow the line.
                eprintln!("{line}");
            } else {
                pb.println(line);
            }
        }
    });
    let outcome = match result {
        Ok(o) => o,
        Err(ttpmap_ml::Error::Interrupted { checkpoint }) => {
            pb.abandon();
            anyhow::bail!(
                "interrupted; checkpoint at {} (rerun with --resume to continue)",
                checkpoint.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    pb.finish_and_clear();
    let metadata = serde_json::json!({
        "format": "ttpmap-reranker",
        "format_version": 1,
        "base_model": model_path.display().to_string(),
        "attack_version": catalog.version(),
        "attack": catalog.fingerprint(),
        "dataset": args.dataset,
        "split": {
            "fractions": rerank::SPLIT_FRACTIONS,
            "seed": args.split_seed,
            "unit": "unique query text, stratified by actor",
        },
        "candidates": set_cfg,
        "candidate_text": text_cfg,
        "augment_procedures": {"per_technique": args.augment_procedures, "queries": procedures.len()},
        "training": cfg,
        "results": {
            "train_queries": data.train.len(),
            "train_emulation_queries": train_q.len(),
            "validation_queries": data.validation.len(),
            "best_epoch": outcome.best_epoch,
            "best_validation_p_at_1": outcome.best_val_p_at_1,
            "validation_p_at_1": outcome.val_p_at_1,
            "mean_loss": outcome.mean_loss,
            "seconds": outcome.seconds,
        },
    });
    save_model_dir(
        &out,
        &outcome.weights,
        &SaveSpec {
            config: md.config(),
            base: Some(md.path()),
            tokenizer: &tokenizer,
            metadata: &metadata,
        },
    )
    .with_context(|| format!("writing the model folder {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    println!(
        "reranker written to {} (epoch {} kept, validation P@1 {:.2}, {:.0} s)",
        out.display(),
        outcome.best_epoch + 1,
        100.0 * outcome.best_val_p_at_1,
        outcome.seconds
    );
    Ok(())
}
