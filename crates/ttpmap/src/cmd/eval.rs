//! `ttpmap eval --method M --dataset D`: scores a method with the published metrics.
//!
//! - Sentence datasets (TRAM2, AnnoCTR): per-document F1 (in-vocabulary, CASSANDRA's protocol,
//!   and all gold labels) with bootstrap 95% CIs, sentence micro/macro P/R/F1, per technique.
//!   The threshold is tuned on the training split (no test data is used to choose it) unless
//!   `--threshold` fixes it.
//! - Emulation plans: each step's description is a query; P@1, Hit@3, Hit@5, MRR overall and
//!   per actor, exact id and parent-collapsed.
//!
//! The protocols themselves (threshold policy, metrics, per-seed scores, ranking) are in
//! `ttpmap_core::protocol`; this command picks the data and the scorer, calls them and prints
//! the report.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, Dataset};
use ttpmap_core::eval;
use ttpmap_core::pipeline::ScoreOptions;
use ttpmap_core::protocol::{self, Bootstrap, SentenceEvalReport, SentenceEvalSetup};
use ttpmap_core::TechniqueId;
use ttpmap_ml::ClassifierScorer;

use crate::assets::Assets;
use crate::methods::MethodArgs;

/// Datasets `eval` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetName {
    /// TRAM2 sentence split (train 120 reports / test 31).
    Tram2,
    /// AnnoCTR sentence split (train 70 reports / test 34).
    Annoctr,
    /// MITRE CTID emulation plans: step description -> technique, per actor.
    Emulation,
}

/// Which techniques a retrieval method may propose on a sentence dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSpace {
    /// Every active technique of the catalog.
    Catalog,
    /// Only techniques labelled in the training split (what a trained classifier can output).
    Train,
}

/// Extra labelled neighbours for dense methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Neighbours {
    /// Only ATT&CK's procedure examples and technique descriptions.
    None,
    /// Also the labelled sentences of the training split.
    Train,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub method: MethodArgs,
    /// Dataset to score on.
    #[arg(long, value_enum)]
    pub dataset: DatasetName,
    /// Fixed threshold instead of one tuned on the training split.
    #[arg(long, value_name = "P")]
    pub threshold: Option<f32>,
    /// Techniques a retrieval method may propose on sentence datasets.
    #[arg(long, value_enum, default_value_t = LabelSpace::Catalog)]
    pub label_space: LabelSpace,
    /// Candidates ranked per query (emulation) or proposed per sentence (by default as many
    /// as the default model proposes to `extract`).
    #[arg(long, default_value_t = ttpmap_ml::trained::CANDIDATES_PER_SENTENCE)]
    pub top_k: usize,
    /// Bootstrap resamples for the 95% confidence intervals.
    #[arg(long, default_value_t = eval::DEFAULT_BOOTSTRAP_RESAMPLES)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Dense/hybrid on TRAM2/AnnoCTR: add labelled training sentences as neighbours that vote
    /// next to ATT&CK's examples. The training split is then divided 80:20 (seeded by
    /// `--seed`): the 80% become neighbours and the threshold is tuned on the 20%.
    #[arg(long, value_enum, default_value_t = Neighbours::None)]
    pub neighbours: Neighbours,
    /// Results JSON (default: results/<method>-<dataset>.json; rerank:
    /// results/rerank-<dataset>-<protocol>-<split>.json).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Emulation (methods other than rerank): score only this part of the 80/10/10 query split
    /// (seed `--split-seed`); `all` scores every step. Use `test` for a method trained on the
    /// training part (the default method is).
    #[arg(long, value_enum, default_value_t = crate::rerank::QuerySplitName::All)]
    pub emulation_split: crate::rerank::QuerySplitName,
    #[command(flatten)]
    pub rerank: crate::cmd::eval_rerank::RerankEvalArgs,
}

pub fn run(assets: &Assets, args: EvalArgs) -> anyhow::Result<()> {
    let catalog = assets.catalog()?;
    let rerank = args.method.is(crate::methods::rerank::SPEC.name);
    let (results, default_name) = match args.dataset {
        DatasetName::Emulation if rerank => {
            let r = &args.rerank;
            let name = format!(
                "rerank-emulation-{}-{}",
                crate::output::enum_name(r.protocol),
                crate::output::enum_name(r.split)
            );
            (crate::cmd::eval_rerank::run(assets, &catalog, &args)?, name)
        }
        _ if rerank => anyhow::bail!("--method rerank is scored on --dataset emulation"),
        DatasetName::Emulation => {
            let report = crate::cmd::eval_emulation::run(assets, &catalog, &args)?;
            print!("{}", report.render());
            (serde_json::to_value(report)?, String::new())
        }
        DatasetName::Tram2 | DatasetName::Annoctr => {
            let report = eval_sentences(assets, &catalog, &args)?;
            print!("{}", report.render());
            (serde_json::to_value(report)?, String::new())
        }
    };
    let out = args.output.clone().unwrap_or_else(|| {
        let name = if default_name.is_empty() {
            format!(
                "{}-{}",
                args.method.method,
                crate::output::enum_name(args.dataset)
            )
        } else {
            default_name
        };
        PathBuf::from(format!("results/{name}.json"))
    });
    crate::output::write_atomic(&out, serde_json::to_string_pretty(&results)?.as_bytes())?;
    eprintln!("results written to {}", out.display());
    Ok(())
}

fn load_split(
    assets: &Assets,
    name: DatasetName,
    split: &str,
    catalog: &Catalog,
) -> anyhow::Result<Dataset> {
    let dir = assets.data_dir();
    let mut ds = match name {
        DatasetName::Tram2 => dataset::load_tram2(dir.join("tram2").join(format!("{split}.json")))?,
        DatasetName::Annoctr => {
            dataset::load_annoctr(dir.join("annoctr").join(format!("{split}.json")))?
        }
        DatasetName::Emulation => unreachable!("emulation is not a sentence dataset"),
    };
    crate::assets::remap_labels(&mut ds, catalog);
    Ok(ds)
}

fn eval_sentences(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<SentenceEvalReport> {
    let train = load_split(assets, args.dataset, "train", catalog)?;
    let test = load_split(assets, args.dataset, "test", catalog)?;
    let vocab: BTreeSet<TechniqueId> = train.sentences().flat_map(|s| s.labels.clone()).collect();
    let mut scorer = crate::methods::build(assets, catalog, &args.method)?;
    scorer.configure(&ScoreOptions {
        top_k: args.top_k,
        with_evidence: false,
        label_space: (args.label_space == LabelSpace::Train).then(|| vocab.clone()),
    });
    let started = std::time::Instant::now();
    // The split the threshold is tuned on: the training split, or its held-out 20% when the
    // other 80% are neighbours (a sentence must not find itself).
    let tuning = match args.neighbours {
        Neighbours::None => train,
        Neighbours::Train => crate::methods::dense::add_training_neighbours(
            scorer.as_mut(),
            &train,
            args.seed,
            assets.quiet(),
        )?,
    };
    let classifier = scorer
        .as_any()
        .and_then(|a| a.downcast_ref::<ClassifierScorer>());
    // A trained model's threshold comes from its own validation data, never from this split.
    let points = crate::methods::operating_points(scorer.as_ref());
    let held_out = args.neighbours == Neighbours::Train;
    let (threshold, source, tuned) =
        protocol::choose_threshold(args.threshold, points, held_out, &vocab, || {
            crate::progress::score_dataset(&tuning, scorer.as_ref(), assets.quiet())
        })?;
    // The classifier alone: one pass per seed gives the ensemble and each seed's own scores.
    let (test_scores, per_seed_scores) = match classifier {
        Some(clf) => crate::methods::classifier::score_per_seed(clf, &test, assets.quiet())?,
        None => (
            crate::progress::score_dataset(&test, scorer.as_ref(), assets.quiet())?,
            Vec::new(),
        ),
    };
    let boot = Bootstrap {
        resamples: args.bootstrap,
        seed: args.seed,
    };
    let at_default = match points {
        Some(p) if args.threshold.is_none() => Some(protocol::metrics_at(
            &test_scores,
            p.default,
            &vocab,
            &boot,
        )?),
        _ => None,
    };
    let per_seed = match (classifier, points) {
        (Some(clf), Some(p)) if !per_seed_scores.is_empty() && args.threshold.is_none() => {
            protocol::per_seed_results(&clf.seed_infos()?, &per_seed_scores, p, &vocab, &boot)?
        }
        _ => Vec::new(),
    };
    Ok(SentenceEvalReport {
        setup: SentenceEvalSetup {
            dataset: crate::output::enum_name(args.dataset),
            split: "test".into(),
            method: scorer.name().to_string(),
            label_space: crate::output::enum_name(args.label_space),
            top_k: args.top_k,
            neighbours: crate::output::enum_name(args.neighbours),
            dense_vote: crate::output::enum_name(args.method.dense_vote),
            attack_version: catalog.version().to_string(),
        },
        headline: protocol::metrics_at(&test_scores, threshold, &vocab, &boot)?,
        threshold_source: source,
        threshold_tuned_on_train: tuned.is_some(),
        train_objective_per_document_f1_in_vocabulary: tuned.map(|t| t.objective_value),
        classifier_thresholds: points,
        at_default_threshold: at_default,
        candidate_recall: protocol::candidate_recall(&test_scores, args.top_k, &vocab),
        per_seed,
        sentences: test_scores.len(),
        documents: test.documents.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
