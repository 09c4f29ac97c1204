//! `ttpmap eval --method M --dataset D`: scores a method with the published metrics.
//!
//! - Sentence datasets (TRAM2, AnnoCTR): per-document F1 (in-vocabulary, CASSANDRA's protocol,
//!   and all gold labels) with bootstrap 95% CIs, sentence micro/macro P/R/F1, per technique.
//!   The threshold is tuned on the training split (no test data is used to choose it) unless
//!   `--threshold` fixes it.
//! - Emulation plans: each step's description is a query; P@1, Hit@3, Hit@5, MRR overall and
//!   per actor, exact id and parent-collapsed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{self, Dataset};
use ttpmap_core::eval::{
    self, bootstrap_mean_ci, per_document_f1, rank_metrics, render_table, DocF1Variant, Objective,
    RankOptions, RankReport, RankedQuery, ScoredSentence,
};
use ttpmap_core::pipeline::{sort_predictions, SentenceScorer};
use ttpmap_core::TechniqueId;
use ttpmap_ml::ClassifierScorer;

use crate::assets::Assets;
use crate::methods::MethodArgs;
use ttpmap_core::pipeline::{find_scorer_mut, ScoreOptions};
use ttpmap_ml::dense::DenseScorer;

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
    /// Candidates ranked per query (emulation) or proposed per sentence.
    #[arg(long, default_value_t = 20)]
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
    #[command(flatten)]
    pub rerank: crate::cmd::eval_rerank::RerankEvalArgs,
}

pub fn run(assets: &Assets, args: EvalArgs) -> anyhow::Result<()> {
    let catalog = assets.catalog()?;
    let rerank = args.method.is(crate::methods::rerank::SPEC.name);
    let results = match args.dataset {
        DatasetName::Emulation if rerank => crate::cmd::eval_rerank::run(assets, &catalog, &args)?,
        _ if rerank => anyhow::bail!("--method rerank is scored on --dataset emulation"),
        DatasetName::Emulation => eval_emulation(assets, &catalog, &args)?,
        DatasetName::Tram2 | DatasetName::Annoctr => eval_sentences(assets, &catalog, &args)?,
    };
    let name = serde_json::to_value(args.dataset)?;
    let method = serde_json::to_value(args.method.method)?;
    let out = args.output.clone().unwrap_or_else(|| {
        if rerank {
            let v = |x: serde_json::Value| x.as_str().unwrap_or("x").to_string();
            return PathBuf::from(format!(
                "results/rerank-{}-{}-{}.json",
                v(name.clone()),
                v(serde_json::to_value(args.rerank.protocol).unwrap_or_default()),
                v(serde_json::to_value(args.rerank.split).unwrap_or_default()),
            ));
        }
        PathBuf::from(format!(
            "results/{}-{}.json",
            method.as_str().unwrap_or("method"),
            name.as_str().unwrap_or("dataset")
        ))
    });
    crate::output::write_atomic(&out, serde_json::to_string_pretty(&results)?.as_bytes())?;
    eprintln!("results written to {}", out.display());
    Ok(())
}

/// Resolves dataset labels to current ATT&CK ids, warning about what could not be mapped.
fn remap(ds: &mut Dataset, catalog: &Catalog) {
    let report = ds.remap(|id| catalog.resolve(id).current().cloned());
    if !report.remapped.is_empty() {
        tracing::info!("{} {}: remapped {:?}", ds.name, ds.split, report.remapped);
    }
    if !report.unknown.is_empty() {
        tracing::warn!(
            "{} {}: labels not in ATT&CK {} dropped: {:?}",
            ds.name,
            ds.split,
            catalog.version(),
            report.unknown
        );
    }
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
    remap(&mut ds, catalog);
    Ok(ds)
}

/// Scores every sentence of `ds` with `scorer`, with a progress bar.
fn score_dataset(
    ds: &Dataset,
    scorer: &dyn SentenceScorer,
    quiet: bool,
) -> anyhow::Result<Vec<ScoredSentence>> {
    let sentences: Vec<_> = ds
        .documents
        .iter()
        .flat_map(|d| d.sentences.iter())
        .collect();
    let pb = crate::progress::bar(
        sentences.len() as u64,
        &format!("scoring {} {}", ds.name, ds.split),
        quiet,
    );
    let mut out = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(256) {
        let texts: Vec<&str> = chunk.iter().map(|s| s.text.as_str()).collect();
        let preds = scorer.score(&texts)?;
        for (s, p) in chunk.iter().zip(preds) {
            out.push(ScoredSentence {
                doc: s.doc.clone(),
                gold: s.labels.iter().cloned().collect(),
                scores: p.into_iter().map(|p| (p.technique, p.score)).collect(),
            });
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

fn eval_sentences(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<serde_json::Value> {
    let train = load_split(assets, args.dataset, "train", catalog)?;
    let test = load_split(assets, args.dataset, "test", catalog)?;
    let vocab: BTreeSet<TechniqueId> = train
        .documents
        .iter()
        .flat_map(|d| d.sentences.iter().flat_map(|s| s.labels.iter().cloned()))
        .collect();
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
        Neighbours::Train => {
            let Some(dense) = find_scorer_mut::<DenseScorer>(scorer.as_mut()) else {
                anyhow::bail!("--neighbours train needs --method dense or hybrid");
            };
            let (fit, validation) = dataset::validation_split(&train, 0.2, args.seed)?;
            let entries = ttpmap_ml::dense::labelled_entries(
                fit.sentences()
                    .map(|s| (s.text.as_str(), s.labels.as_slice())),
            );
            let pb = crate::progress::bar(
                entries.len() as u64,
                &format!("embedding {} labelled training sentences", entries.len()),
                assets.quiet(),
            );
            let rows = ttpmap_ml::DenseIndex::build(dense.embedder(), &entries, &mut |d, _| {
                pb.set_position(d as u64)
            })?;
            pb.finish_and_clear();
            dense.add_rows(rows)?;
            validation
        }
    };
    let in_vocab = Objective::DocumentF1 {
        variant: DocF1Variant::InVocabulary,
        vocab: Some(vocab.clone()),
    };
    // A classifier artifact carries its thresholds (0.5 and one tuned on its validation split):
    // the training split is what it learnt from, so it is not used for tuning here.
    let classifier = scorer
        .as_any()
        .and_then(|a| a.downcast_ref::<ClassifierScorer>());
    let clf_thresholds = classifier.map(|c| c.artifact().manifest().thresholds);
    let (threshold, tuned_on_train) = match (args.threshold, clf_thresholds) {
        (Some(t), _) => (t, None),
        (None, Some(th)) => (th.tuned, None),
        (None, None) => {
            let train_scores = score_dataset(&tuning, scorer.as_ref(), assets.quiet())?;
            let tuned = eval::tune_threshold(&train_scores, &in_vocab, &eval::default_grid())?;
            (tuned.threshold, Some(tuned.objective_value))
        }
    };
    // The classifier alone: one pass per seed gives the ensemble (their mean, as the scorer
    // computes it, over every label) and each seed's own scores.
    let (test_scores, per_seed_scores) = match classifier {
        Some(clf) => score_classifier(&test, clf, assets.quiet())?,
        None => (
            score_dataset(&test, scorer.as_ref(), assets.quiet())?,
            Vec::new(),
        ),
    };
    let predicted = eval::apply_threshold(&test_scores, threshold);
    let golds: Vec<BTreeSet<TechniqueId>> = test_scores.iter().map(|s| s.gold.clone()).collect();
    let docs = eval::union_by_document(
        test_scores
            .iter()
            .zip(&predicted)
            .map(|(s, p)| (s.doc.as_str(), &s.gold, p)),
    );
    let iv = per_document_f1(&docs, DocF1Variant::InVocabulary, Some(&vocab))?;
    let all = per_document_f1(&docs, DocF1Variant::AllGold, None)?;
    let ci = |r: &eval::DocF1Report| {
        let f1s: Vec<f64> = r.per_document.iter().map(|d| d.f1).collect();
        bootstrap_mean_ci(&f1s, args.bootstrap, args.seed)
    };
    let (iv_ci, all_ci) = (ci(&iv)?, ci(&all)?);
    let vocab_labels: Vec<TechniqueId> = vocab.iter().cloned().collect();
    let prf = eval::multilabel_prf(&golds, &predicted, Some(&vocab_labels))?;
    let at_default = match clf_thresholds {
        Some(th) if args.threshold.is_none() => {
            Some(doc_f1_at(&test_scores, th.default, &vocab, args)?)
        }
        _ => None,
    };
    let per_seed = match classifier {
        Some(clf) if !per_seed_scores.is_empty() && args.threshold.is_none() => {
            per_seed_results(clf, &per_seed_scores, &vocab, args)?
        }
        _ => Vec::new(),
    };
    let elapsed = started.elapsed().as_secs_f64();

    println!(
        "{} test ({} documents, {} sentences), method {}, threshold {:.2}{}\n",
        test.name,
        test.documents.len(),
        test_scores.len(),
        test_scores.first().map(|_| scorer.name()).unwrap_or(""),
        threshold,
        match (tuned_on_train.is_some(), args.neighbours) {
            (true, Neighbours::Train) => " (tuned on 20% of train held out from the neighbours)",
            (true, Neighbours::None) => " (tuned on train)",
            (false, _) if at_default.is_some() => " (tuned on the classifier's validation split)",
            (false, _) => "",
        }
    );
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let mut rows = vec![
        vec![
            "per-document F1, in-vocabulary (CASSANDRA)".into(),
            pct(iv.mean_f1),
            format!("[{}, {}]", pct(iv_ci.lo), pct(iv_ci.hi)),
            iv.documents_scored.to_string(),
        ],
        vec![
            "per-document F1, all gold labels".into(),
            pct(all.mean_f1),
            format!("[{}, {}]", pct(all_ci.lo), pct(all_ci.hi)),
            all.documents_scored.to_string(),
        ],
        vec![
            "sentence micro F1 (train labels)".into(),
            pct(prf.micro.f1),
            String::new(),
            prf.samples.to_string(),
        ],
        vec![
            "sentence macro F1 (train labels)".into(),
            pct(prf.macro_.f1),
            String::new(),
            prf.samples.to_string(),
        ],
    ];
    if let Some(d) = &at_default {
        let t = d.threshold;
        for (name, r, ci) in [
            (
                "in-vocabulary",
                &d.per_document_f1_in_vocabulary,
                &d.per_document_f1_in_vocabulary_ci95,
            ),
            (
                "all gold labels",
                &d.per_document_f1_all_gold,
                &d.per_document_f1_all_gold_ci95,
            ),
        ] {
            rows.push(vec![
                format!("per-document F1, {name}, at {t:.2}"),
                pct(r.mean_f1),
                format!("[{}, {}]", pct(ci.lo), pct(ci.hi)),
                r.documents_scored.to_string(),
            ]);
        }
        for (name, f1) in [
            ("micro", d.sentence.micro.f1),
            ("macro", d.sentence.macro_.f1),
        ] {
            rows.push(vec![
                format!("sentence {name} F1 (train labels), at {t:.2}"),
                pct(f1),
                String::new(),
                d.sentence.samples.to_string(),
            ]);
        }
    }
    print!(
        "{}",
        render_table(&["metric", "value", "95% CI", "n"], &rows)
    );
    if !per_seed.is_empty() {
        let source = if per_seed
            .iter()
            .all(|r| r.threshold_source == "seed_validation")
        {
            "its own threshold tuned on validation"
        } else {
            "the ensemble's threshold: this artifact predates per-seed thresholds"
        };
        println!("\nEach seed alone (per-document F1 in-vocabulary; {source}):");
        let rows: Vec<Vec<String>> = per_seed
            .iter()
            .map(|r| {
                vec![
                    r.seed.to_string(),
                    r.selected.clone(),
                    format!("{:.2}", r.tuned.threshold),
                    pct(r.tuned.per_document_f1_in_vocabulary),
                    pct(r.at_default.per_document_f1_in_vocabulary),
                    pct(r.tuned.sentence_micro.f1),
                    pct(r.tuned.sentence_macro.f1),
                    r.train_seconds
                        .map(|t| format!("{t:.0}"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            render_table(
                &[
                    "seed",
                    "kept",
                    "threshold",
                    "doc F1 tuned",
                    "doc F1 at 0.5",
                    "micro F1",
                    "macro F1",
                    "train s"
                ],
                &rows
            )
        );
    }
    let mut per_label = prf.per_label.clone();
    per_label.sort_by(|a, b| b.support.cmp(&a.support).then(a.label.cmp(&b.label)));
    let rows: Vec<Vec<String>> = per_label
        .iter()
        .filter(|l| l.support > 0)
        .take(15)
        .map(|l| {
            vec![
                l.label.to_string(),
                l.support.to_string(),
                pct(l.precision),
                pct(l.recall),
                pct(l.f1),
            ]
        })
        .collect();
    println!("\nMost frequent test techniques:");
    print!(
        "{}",
        render_table(&["technique", "support", "P", "R", "F1"], &rows)
    );

    Ok(json!({
        "dataset": args.dataset,
        "split": "test",
        "method": args.method.method,
        "label_space": args.label_space,
        "top_k": args.top_k,
        "threshold": threshold,
        "threshold_tuned_on_train": tuned_on_train.is_some(),
        "neighbours": args.neighbours,
        "dense_vote": args.method.dense_vote,
        "train_objective_per_document_f1_in_vocabulary": tuned_on_train,
        "attack_version": catalog.version(),
        "per_document_f1_in_vocabulary": iv,
        "per_document_f1_in_vocabulary_ci95": iv_ci,
        "per_document_f1_all_gold": all,
        "per_document_f1_all_gold_ci95": all_ci,
        "sentence": prf,
        "classifier_thresholds": clf_thresholds,
        "at_default_threshold": at_default,
        "per_seed": per_seed,
        "seconds": elapsed,
    }))
}

/// The classifier's ensemble scores of every sentence of `ds` and, when it has more than one
/// seed, each seed's own (`[seed][sentence]`, empty for one seed). Every label is scored (no
/// top-k cut), mapped into the scorer's label space.
fn score_classifier(
    ds: &Dataset,
    clf: &ClassifierScorer,
    quiet: bool,
) -> anyhow::Result<(Vec<ScoredSentence>, Vec<Vec<ScoredSentence>>)> {
    let sentences: Vec<_> = ds
        .documents
        .iter()
        .flat_map(|d| d.sentences.iter())
        .collect();
    let artifact = clf.artifact();
    let seeds = artifact.models().len();
    let pb = crate::progress::bar(
        sentences.len() as u64,
        &format!("scoring {} {} ({seeds} seeds)", ds.name, ds.split),
        quiet,
    );
    let mut ensemble = Vec::with_capacity(sentences.len());
    let mut per_seed = vec![Vec::with_capacity(sentences.len()); if seeds > 1 { seeds } else { 0 }];
    // Tokenised once (one truncation warning for the split), scored in chunks for the bar.
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    let encodings = artifact.encode(&texts).with_context(|| {
        format!(
            "tokenising {} {} for {}",
            ds.name,
            ds.split,
            artifact.dir().display()
        )
    })?;
    for (chunk, enc) in sentences.chunks(256).zip(encodings.chunks(256)) {
        let probs = artifact.predict_per_seed_encoded(enc).with_context(|| {
            format!(
                "classifying {} {} with {}",
                ds.name,
                ds.split,
                artifact.dir().display()
            )
        })?;
        let mean = ttpmap_ml::artifact::ensemble_mean(&probs);
        for (i, s) in chunk.iter().enumerate() {
            let row = |p: &[f32]| ScoredSentence {
                doc: s.doc.clone(),
                gold: s.labels.iter().cloned().collect(),
                scores: clf.label_scores(p),
            };
            ensemble.push(row(&mean[i]));
            for (out, seed_probs) in per_seed.iter_mut().zip(&probs) {
                out.push(row(&seed_probs[i]));
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok((ensemble, per_seed))
}

/// One seed of a classifier ensemble scored alone on the test split.
#[derive(serde::Serialize)]
struct SeedTest {
    seed: u64,
    /// Which weights the seed kept (`base`, `ema`, `swa`).
    selected: String,
    /// Training seconds of the seed (from the artifact's results.json).
    train_seconds: Option<f64>,
    /// `seed_validation`: the seed's own threshold tuned on validation (results.json);
    /// `ensemble`: the artifact's (an artifact written before per-seed thresholds were kept).
    threshold_source: &'static str,
    tuned: SeedScores,
    at_default: SeedScores,
}

/// A seed's scores at one threshold (the headline figures of [`AtThreshold`], without the
/// per-document and per-label tables).
#[derive(serde::Serialize)]
struct SeedScores {
    threshold: f32,
    per_document_f1_in_vocabulary: f64,
    per_document_f1_in_vocabulary_ci95: eval::MeanCi,
    per_document_f1_all_gold: f64,
    documents_scored: usize,
    sentence_micro: eval::Prf,
    sentence_macro: eval::Prf,
}

impl From<AtThreshold> for SeedScores {
    fn from(a: AtThreshold) -> Self {
        SeedScores {
            threshold: a.threshold,
            per_document_f1_in_vocabulary: a.per_document_f1_in_vocabulary.mean_f1,
            per_document_f1_in_vocabulary_ci95: a.per_document_f1_in_vocabulary_ci95,
            per_document_f1_all_gold: a.per_document_f1_all_gold.mean_f1,
            documents_scored: a.per_document_f1_in_vocabulary.documents_scored,
            sentence_micro: a.sentence.micro,
            sentence_macro: a.sentence.macro_,
        }
    }
}

/// Each seed's test scores at its own tuned threshold and at the default one.
fn per_seed_results(
    clf: &ClassifierScorer,
    per_seed_scores: &[Vec<ScoredSentence>],
    vocab: &BTreeSet<TechniqueId>,
    args: &EvalArgs,
) -> anyhow::Result<Vec<SeedTest>> {
    let artifact = clf.artifact();
    let results = artifact.results()?.unwrap_or_default();
    let thresholds = artifact.manifest().thresholds;
    let mut out = Vec::new();
    for (entry, scores) in artifact.manifest().seeds.iter().zip(per_seed_scores) {
        let recorded = results["seeds"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["seed"].as_u64() == Some(entry.seed)));
        let own = recorded.and_then(|r| r["validation"]["tuned_threshold"].as_f64());
        out.push(SeedTest {
            seed: entry.seed,
            selected: entry.selected.clone(),
            train_seconds: recorded.and_then(|r| r["seconds"].as_f64()),
            threshold_source: if own.is_some() {
                "seed_validation"
            } else {
                "ensemble"
            },
            tuned: doc_f1_at(
                scores,
                own.map_or(thresholds.tuned, |t| t as f32),
                vocab,
                args,
            )?
            .into(),
            at_default: doc_f1_at(scores, thresholds.default, vocab, args)?.into(),
        });
    }
    Ok(out)
}

/// Scores at one threshold (the classifier's second operating point).
#[derive(serde::Serialize)]
struct AtThreshold {
    threshold: f32,
    per_document_f1_in_vocabulary: eval::DocF1Report,
    per_document_f1_in_vocabulary_ci95: eval::MeanCi,
    per_document_f1_all_gold: eval::DocF1Report,
    per_document_f1_all_gold_ci95: eval::MeanCi,
    sentence: eval::PrfReport,
}

/// Per-document F1 (both variants, with bootstrap CIs) and sentence P/R/F1 of `scores` at
/// `threshold`.
fn doc_f1_at(
    scores: &[ScoredSentence],
    threshold: f32,
    vocab: &BTreeSet<TechniqueId>,
    args: &EvalArgs,
) -> anyhow::Result<AtThreshold> {
    let predicted = eval::apply_threshold(scores, threshold);
    let golds: Vec<BTreeSet<TechniqueId>> = scores.iter().map(|s| s.gold.clone()).collect();
    let docs = eval::union_by_document(
        scores
            .iter()
            .zip(&predicted)
            .map(|(s, p)| (s.doc.as_str(), &s.gold, p)),
    );
    let iv = per_document_f1(&docs, DocF1Variant::InVocabulary, Some(vocab))?;
    let all = per_document_f1(&docs, DocF1Variant::AllGold, None)?;
    let ci = |r: &eval::DocF1Report| {
        let f1s: Vec<f64> = r.per_document.iter().map(|d| d.f1).collect();
        bootstrap_mean_ci(&f1s, args.bootstrap, args.seed)
    };
    let labels: Vec<TechniqueId> = vocab.iter().cloned().collect();
    let prf = eval::multilabel_prf(&golds, &predicted, Some(&labels))?;
    Ok(AtThreshold {
        threshold,
        per_document_f1_in_vocabulary_ci95: ci(&iv)?,
        per_document_f1_all_gold_ci95: ci(&all)?,
        per_document_f1_in_vocabulary: iv,
        per_document_f1_all_gold: all,
        sentence: prf,
    })
}

fn eval_emulation(
    assets: &Assets,
    catalog: &Catalog,
    args: &EvalArgs,
) -> anyhow::Result<serde_json::Value> {
    let dir = assets.data_dir().join("emulation");
    let mut steps = dataset::load_emulation(&dir)?.steps;
    let report = dataset::remap_steps(&mut steps, |id| catalog.resolve(id).current().cloned());
    if !report.unknown.is_empty() {
        tracing::warn!(
            "emulation steps with ids not in ATT&CK {}: {:?}",
            catalog.version(),
            report.unknown
        );
    }
    let mut scorer = crate::methods::build(assets, catalog, &args.method)?;
    scorer.configure(&ScoreOptions {
        top_k: args.top_k,
        with_evidence: false,
        label_space: None,
    });
    let texts: Vec<String> = steps.iter().map(|s| s.query()).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pb = crate::progress::bar(
        texts.len() as u64,
        "ranking emulation steps",
        assets.quiet(),
    );
    let mut queries = Vec::with_capacity(steps.len());
    for (chunk_steps, chunk) in steps.chunks(64).zip(texts.chunks(64)) {
        for (step, mut preds) in chunk_steps.iter().zip(scorer.score(chunk)?) {
            sort_predictions(&mut preds);
            queries.push(RankedQuery {
                gold: BTreeSet::from([step.technique.clone()]),
                ranked: preds.into_iter().map(|p| p.technique).collect(),
                group: step.actor.clone(),
            });
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let ks = vec![1, 3, 5, 10, args.top_k];
    let exact = rank_metrics(
        &queries,
        &RankOptions {
            ks: ks.clone(),
            collapse_to_parent: false,
        },
    );
    let parent = rank_metrics(
        &queries,
        &RankOptions {
            ks,
            collapse_to_parent: true,
        },
    );
    println!(
        "Emulation plans: {} steps, method {}, top {} candidates\n",
        queries.len(),
        scorer.name(),
        args.top_k
    );
    println!("Exact technique id:");
    print!("{}", rank_table(&exact, args.top_k));
    println!("\nParent-collapsed (sub-techniques count as their parent):");
    print!("{}", rank_table(&parent, args.top_k));
    Ok(json!({
        "dataset": "emulation",
        "method": args.method.method,
        "top_k": args.top_k,
        "attack_version": catalog.version(),
        "exact": exact,
        "parent_collapsed": parent,
    }))
}

pub(crate) fn rank_table(r: &RankReport, k: usize) -> String {
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let row = |name: &str, s: &eval::RankSummary| {
        vec![
            name.to_string(),
            s.n.to_string(),
            pct(s.p_at_1),
            pct(s.hit_at_3),
            pct(s.hit_at_5),
            format!("{:.3}", s.mrr),
            s.recall_at.get(&k).map(|v| pct(*v)).unwrap_or_default(),
        ]
    };
    let mut rows: Vec<Vec<String>> = r.by_group.iter().map(|(g, s)| row(g, s)).collect();
    rows.push(row("all", &r.overall));
    let recall = format!("recall@{k}");
    render_table(
        &["actor", "queries", "P@1", "Hit@3", "Hit@5", "MRR", &recall],
        &rows,
    )
}
