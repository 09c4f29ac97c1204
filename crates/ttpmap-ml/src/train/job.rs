//! One call from loaded inputs (catalog, dataset, base model, config) to a written model
//! folder, for each model: [`train_classifier`] and [`train_reranker`]. Each prepares the data
//! ([`crate::train::data`]), refuses an output folder that is not a model of its kind before
//! any training, fits (resumable, interruptible: see [`crate::train::fit`]), writes the folder
//! atomically with its typed, versioned metadata, then deletes the checkpoints
//! ([`checkpoint_dir`]). Interrupted runs return [`Error::Interrupted`] and keep them.
//!
//! The CLI (`ttpmap train classifier|reranker`) parses flags, loads the inputs, calls one of
//! these and renders the progress events.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use sha2::{Digest, Sha256};
use ttpmap_core::attack::Catalog;
use ttpmap_core::dataset::{Dataset, EmulationStep};
use ttpmap_core::retrieve::Bm25Index;

use crate::artifact::{write_artifact_with, Manifest, TrainingResults};
use crate::crossencoder::{
    save_model_dir, MetadataAugment, MetadataResults, MetadataSplit, RerankerMetadata, SaveSpec,
    METADATA_FORMAT, METADATA_FORMAT_VERSION,
};
use crate::model_dir::ModelDir;
use crate::tokenize::TextTokenizer;
use crate::train::classifier::TrainData;
use crate::train::classifier::{self, ClassifierTrainConfig, TrainEvent};
use crate::train::data::{
    catalog_data, classifier_data, reranker_data, CatalogData, CatalogDataConfig, CatalogSources,
    RerankerDataConfig,
};
use crate::train::fit::FitSetup;
use crate::train::reranker::{self, RerankerTrainConfig, RerankerTrainEvent};
use crate::{Error, Result};

/// Folder of the resumable checkpoints of a run writing `out`: its hidden sibling
/// `.<name>.checkpoints`.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.checkpoints",
        out.file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    ))
}

/// Where a job writes its model folder and how it runs.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Output model folder (checkpoints go to [`checkpoint_dir`] of it).
    pub out: &'a Path,
    /// Continue from the checkpoints of an interrupted run with the same `out`.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to stop at the next step with a checkpoint.
    pub interrupt: &'a AtomicBool,
}

impl<'a> Target<'a> {
    /// A target writing `out`.
    pub fn new(out: &'a Path, resume: bool, interrupt: &'a AtomicBool) -> Self {
        Self {
            out,
            resume,
            interrupt,
        }
    }

    fn fit_setup<'b>(&self, model: &'b ModelDir, tokenizer: &'b TextTokenizer) -> FitSetup<'b>
    where
        'a: 'b,
    {
        FitSetup {
            model: Some(model),
            encoder_config: model.config().clone(),
            tokenizer,
            checkpoint_dir: checkpoint_dir(self.out),
            resume: self.resume,
            interrupt: self.interrupt,
        }
    }
}

/// Inputs of [`train_classifier`].
pub struct ClassifierJob<'a> {
    /// ATT&CK catalog (label texts, augmentation, provenance).
    pub catalog: &'a Catalog,
    /// Training sentences, labels remapped to `catalog`.
    pub dataset: &'a Dataset,
    /// The file `dataset` was read from (its sha256 goes into the manifest).
    pub data_file: &'a Path,
    /// Base encoder folder.
    pub model: &'a ModelDir,
    /// Resolved training config.
    pub config: &'a ClassifierTrainConfig,
    /// Output folder and run control.
    pub target: Target<'a>,
    /// Extra files written into the folder (e.g. the resolved config as TOML).
    pub extra_files: &'a [(&'a str, &'a [u8])],
}

/// What [`train_classifier`] wrote.
#[derive(Debug, Clone)]
pub struct ClassifierReport {
    /// The model folder.
    pub out: PathBuf,
    /// Its results.json.
    pub results: TrainingResults,
}

/// Trains the classifier of `job` and writes its artifact (see the module docs).
pub fn train_classifier(
    job: &ClassifierJob,
    progress: &mut dyn FnMut(&TrainEvent),
) -> Result<ClassifierReport> {
    let data = classifier_data(job.catalog, job.dataset, job.config)?;
    fit_and_write(
        &FitJob {
            catalog: job.catalog,
            data: &data,
            data_files: std::slice::from_ref(&job.data_file),
            model: job.model,
            config: job.config,
            target: job.target,
            extra_files: job.extra_files,
        },
        progress,
    )
}

/// Training config of the full-catalog model: how the data is drawn and how the classifier is
/// fitted. `configs/default.toml` lists every value; the defaults fit a 2-core, one-hour
/// budget (one seed, 4 epochs, the 4 lowest encoder layers frozen).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogTrainConfig {
    pub data: CatalogDataConfig,
    /// Note: a `[classifier]` table given in a file starts from the recipe's defaults
    /// (`ClassifierTrainConfig::default()`), not from these; list every field you need.
    pub classifier: ClassifierTrainConfig,
}

impl Default for CatalogTrainConfig {
    fn default() -> Self {
        Self {
            data: CatalogDataConfig::default(),
            classifier: ClassifierTrainConfig {
                epochs: 4,
                // Three seeds averaged (validation +0.90 over seed 42 alone, docs/results.md).
                seeds: vec![42, 123, 456],
                frozen_layers: 4,
                // Weighted BCE: the best loss in the few-shot regime (AnnoCTR, README), which
                // most of the catalog's ~600 labels are in.
                loss: crate::train::loss::LossConfig::Bce {
                    pos_weight: Some(5.0),
                },
                // Twice the classifier recipe's rates: only the top layers and the head train
                // (validation +2.28 points, docs/results.md).
                llrd: crate::train::optim::LlrdConfig {
                    encoder_lr: 1e-4,
                    head_lr: 2e-3,
                    ..crate::train::optim::LlrdConfig::default()
                },
                ..ClassifierTrainConfig::default()
            },
        }
    }
}

/// Inputs of [`train_catalog_classifier`]: the full-catalog model of the default pipeline.
pub struct CatalogJob<'a> {
    /// ATT&CK catalog (labels, procedure examples, descriptions, provenance).
    pub catalog: &'a Catalog,
    /// The labelled data, remapped to `catalog`.
    pub sources: CatalogSources<'a>,
    /// The files the sources were read from (their sha256 go into the manifest).
    pub data_files: &'a [&'a Path],
    /// How the data is drawn.
    pub data: &'a CatalogDataConfig,
    /// Base encoder folder.
    pub model: &'a ModelDir,
    /// Resolved training config.
    pub config: &'a ClassifierTrainConfig,
    /// Output folder and run control.
    pub target: Target<'a>,
    /// Extra files written into the folder (e.g. the resolved config as TOML).
    pub extra_files: &'a [(&'a str, &'a [u8])],
}

/// Trains the full-catalog classifier of `job` ([`catalog_data`]) and writes its artifact;
/// also returns the data's make-up.
pub fn train_catalog_classifier(
    job: &CatalogJob,
    progress: &mut dyn FnMut(&TrainEvent),
) -> Result<(ClassifierReport, CatalogData)> {
    let prepared = catalog_data(job.catalog, &job.sources, job.data)?;
    let report = fit_and_write(
        &FitJob {
            catalog: job.catalog,
            data: &prepared.data,
            data_files: job.data_files,
            model: job.model,
            config: job.config,
            target: job.target,
            extra_files: job.extra_files,
        },
        progress,
    )?;
    Ok((report, prepared))
}

/// What [`fit_and_write`] needs: prepared data and where it came from.
struct FitJob<'a> {
    catalog: &'a Catalog,
    data: &'a TrainData,
    data_files: &'a [&'a Path],
    model: &'a ModelDir,
    config: &'a ClassifierTrainConfig,
    target: Target<'a>,
    extra_files: &'a [(&'a str, &'a [u8])],
}

fn fit_and_write(job: &FitJob, progress: &mut dyn FnMut(&TrainEvent)) -> Result<ClassifierReport> {
    let cfg = job.config;
    let data = job.data;
    let tokenizer = job.model.tokenizer(cfg.max_length)?;
    // Refuse a folder that is not a previous model before hours of training, not after.
    crate::artifact::check_replaceable(job.target.out)?;
    let ckpt_dir = checkpoint_dir(job.target.out);
    progress(&TrainEvent::Prepared {
        train: data.train.len(),
        validation: data.validation.len(),
        labels: data.labels.len(),
    });
    let setup = job.target.fit_setup(job.model, &tokenizer);
    let outcome = classifier::fit(&setup, data, cfg, progress)?;
    let mut manifest = Manifest::new(
        data.labels.clone(),
        job.model.config().clone(),
        cfg.max_length,
    );
    manifest.attack_version = Some(job.catalog.version().to_string());
    manifest.base_model = job.model.path().display().to_string();
    manifest.head_dropout = cfg.head_dropout;
    manifest.thresholds.tuned = outcome.tuned_threshold;
    manifest.training = serde_json::to_value(cfg).map_err(|source| Error::Json {
        path: job.target.out.join(crate::artifact::MANIFEST),
        source,
    })?;
    for file in job.data_files {
        manifest.data.insert(
            format!("train:{}", file.display()),
            format!("sha256:{}", file_sha256(file)?),
        );
    }
    manifest
        .data
        .insert("attack".into(), job.catalog.fingerprint().to_string());
    let results = TrainingResults::new(
        outcome.seeds.iter().map(|(r, _)| r.clone()).collect(),
        outcome.validation,
        data.validation.len(),
    );
    let weights: Vec<_> = outcome
        .seeds
        .into_iter()
        .map(|(r, w)| (r.seed, r.selected, w))
        .collect();
    write_artifact_with(
        job.target.out,
        &manifest,
        &tokenizer,
        &weights,
        &results,
        job.extra_files,
    )?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    Ok(ClassifierReport {
        out: job.target.out.to_path_buf(),
        results,
    })
}

/// Hex sha256 of a file, or of every file below a folder in path order (emulation plans).
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    files.sort();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
        if path.is_dir() {
            hasher.update(
                f.strip_prefix(path)
                    .unwrap_or(f)
                    .to_string_lossy()
                    .as_bytes(),
            );
        }
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
            collect_files(&entry.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Inputs of [`train_reranker`].
pub struct RerankerJob<'a> {
    /// ATT&CK catalog (candidate texts, procedure examples, provenance).
    pub catalog: &'a Catalog,
    /// Name of the query dataset (recorded), e.g. `emulation`.
    pub dataset: &'a str,
    /// Its steps, remapped to `catalog`.
    pub steps: &'a [EmulationStep],
    /// BM25 over the catalog (hard negatives).
    pub index: &'a Bm25Index,
    /// How the data is drawn.
    pub data: &'a RerankerDataConfig,
    /// Base folder (plain encoder or cross-encoder).
    pub model: &'a ModelDir,
    /// Resolved training config.
    pub config: &'a RerankerTrainConfig,
    /// Output folder and run control.
    pub target: Target<'a>,
}

/// Trains the reranker of `job` and writes its folder (see the module docs); returns the
/// metadata written.
pub fn train_reranker(
    job: &RerankerJob,
    progress: &mut dyn FnMut(&RerankerTrainEvent),
) -> Result<RerankerMetadata> {
    let cfg = job.config;
    let prepared = reranker_data(job.catalog, job.steps, job.index, job.data)?;
    let data = &prepared.data;
    let tokenizer = job.model.tokenizer(cfg.max_length)?;
    crate::crossencoder::check_replaceable(job.target.out)?;
    let ckpt_dir = checkpoint_dir(job.target.out);
    progress(&RerankerTrainEvent::Prepared {
        train_queries: data.train.len(),
        procedure_queries: prepared.procedure_queries,
        validation_queries: data.validation.len(),
    });
    let setup = job.target.fit_setup(job.model, &tokenizer);
    let outcome = reranker::fit(&setup, data, cfg, progress)?;
    let metadata = RerankerMetadata {
        format: METADATA_FORMAT.into(),
        format_version: METADATA_FORMAT_VERSION,
        base_model: job.model.path().display().to_string(),
        attack_version: job.catalog.version().to_string(),
        attack: job.catalog.fingerprint().to_string(),
        dataset: job.dataset.to_string(),
        split: MetadataSplit {
            fractions: ttpmap_core::rerank_data::SPLIT_FRACTIONS,
            seed: job.data.split_seed,
            unit: "unique query text, stratified by actor".into(),
        },
        candidates: job.data.candidates,
        candidate_text: job.data.candidate_text,
        augment_procedures: MetadataAugment {
            per_technique: job.data.augment_procedures,
            queries: prepared.procedure_queries,
        },
        training: cfg.clone(),
        results: MetadataResults {
            train_queries: data.train.len(),
            train_emulation_queries: prepared.train_emulation_queries,
            validation_queries: data.validation.len(),
            best_epoch: outcome.best_epoch,
            best_validation_p_at_1: outcome.best_val_p_at_1,
            validation_p_at_1: outcome.val_p_at_1.clone(),
            mean_loss: outcome.mean_loss.clone(),
            seconds: outcome.seconds,
        },
    };
    save_model_dir(
        job.target.out,
        &outcome.weights,
        &SaveSpec {
            config: job.model.config(),
            base: Some(job.model.path()),
            tokenizer: &tokenizer,
            metadata: &metadata,
        },
    )?;
    let _ = std::fs::remove_dir_all(&ckpt_dir);
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_sit_in_a_hidden_sibling_folder() {
        assert_eq!(
            checkpoint_dir(Path::new("models/reranker-emulation")),
            Path::new("models/.reranker-emulation.checkpoints")
        );
        assert_eq!(checkpoint_dir(Path::new("m")), Path::new(".m.checkpoints"));
    }
}
