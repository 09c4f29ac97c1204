//! The trained classifier's model directory ("artifact"), versioned.
//!
//! Layout:
//! ```text
//! DIR/manifest.json                    format name + version, labels in order, ATT&CK version,
//!                                      encoder config, max_length, thresholds, seeds (with the
//!                                      selected weights variant), training config, data
//!                                      fingerprints
//! DIR/tokenizer.json                   Hugging Face tokenizer
//! DIR/seeds/seed-<n>/model.safetensors encoder.* + head.* of seed n (f32)
//! DIR/results.json                     per-seed and ensemble validation metrics
//!                                      ([`TrainingResults`], with its own format_version)
//! DIR/training.toml                    the resolved training config (written by the CLI)
//! ```
//!
//! Owns [`Manifest`], [`TrainingResults`], [`write_artifact`] and [`Artifact`] (loads every
//! seed; ensemble probability = mean of the per-seed probabilities), and the one atomic folder
//! writer of every model format, [`write_folder_atomic`] (writes into a temporary sibling
//! folder, then renames: a crash never leaves a half-written folder at `DIR`; the reranker's
//! `crossencoder::save_model_dir` uses it too), with [`check_replaceable_by`] (never replace a
//! folder that is not a model of that kind). A missing, corrupt or mismatched file is an
//! [`Error::Artifact`] / [`Error::Json`] naming that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use ttpmap_core::TechniqueId;

use crate::classifier::ClassifierModel;
use crate::encoder::bert::{Config as BertConfig, Mode};
use crate::head::HeadConfig;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::train::classifier::{SeedResult, ValidationMetrics};
use crate::{Error, Result};

/// Value of `format` in manifest.json.
pub const FORMAT: &str = "ttpmap-label-attention-classifier";
/// Current `format_version`; older versions that still load are listed in [`Artifact::open`].
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest file.
pub const MANIFEST: &str = "manifest.json";

/// Global decision thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// The untuned threshold (0.5).
    pub default: f32,
    /// Tuned on validation (equal to `default` when not tuned).
    pub tuned: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            default: 0.5,
            tuned: 0.5,
        }
    }
}

/// One trained seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    /// The seed.
    pub seed: u64,
    /// Weights file relative to the artifact folder (`seeds/seed-<n>/model.safetensors`).
    pub weights: String,
    /// Which weights were kept: `base`, `ema` or `swa`.
    pub selected: String,
}

/// manifest.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Labels in output order.
    pub labels: Vec<TechniqueId>,
    /// ATT&CK version the labels were remapped to (e.g. `"18.1"`).
    pub attack_version: Option<String>,
    /// Where the encoder came from (model folder or id), for provenance.
    pub base_model: String,
    /// Encoder config (shapes; dropout as trained).
    pub encoder: BertConfig,
    /// Head dropout as trained (not used at inference).
    pub head_dropout: f64,
    /// Tokens per sentence, special tokens included.
    pub max_length: usize,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// The trained seeds (the ensemble).
    pub seeds: Vec<SeedEntry>,
    /// The resolved training configuration.
    pub training: serde_json::Value,
    /// Fingerprints (e.g. sha256) of the data trained on, by name.
    pub data: BTreeMap<String, String>,
}

impl Manifest {
    /// A manifest of the current format with no seeds yet.
    pub fn new(labels: Vec<TechniqueId>, encoder: BertConfig, max_length: usize) -> Self {
        Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            labels,
            attack_version: None,
            base_model: String::new(),
            encoder,
            head_dropout: 0.1,
            max_length,
            thresholds: Thresholds::default(),
            seeds: Vec::new(),
            training: serde_json::Value::Null,
            data: BTreeMap::new(),
        }
    }

    /// The head config implied by the labels and the encoder.
    pub fn head_config(&self) -> HeadConfig {
        HeadConfig {
            num_labels: self.labels.len(),
            hidden_size: self.encoder.hidden_size,
            dropout: self.head_dropout,
        }
    }

    /// Weights path of a seed, relative to the artifact folder.
    pub fn seed_weights_path(seed: u64) -> String {
        format!("seeds/seed-{seed}/model.safetensors")
    }
}

/// Name of the training results file.
pub const RESULTS: &str = "results.json";
/// Current `format_version` of [`TrainingResults`]; files written before it had the field are
/// version 1.
pub const RESULTS_FORMAT_VERSION: u32 = 1;

fn results_version_1() -> u32 {
    1
}

/// results.json as `ttpmap train classifier` writes it: each seed's outcome and the ensemble's
/// validation figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingResults {
    /// [`RESULTS_FORMAT_VERSION`] when written (absent, i.e. 1, in older files).
    #[serde(default = "results_version_1")]
    pub format_version: u32,
    /// Per seed, in training order.
    pub seeds: Vec<SeedResult>,
    /// The ensemble (mean of the seeds' probabilities) on the validation split; its
    /// `tuned_threshold` is the manifest's tuned threshold.
    pub validation: EnsembleValidation,
}

/// The ensemble's [`ValidationMetrics`] and the number of validation sentences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnsembleValidation {
    #[serde(flatten)]
    pub metrics: ValidationMetrics,
    /// Validation sentences scored.
    pub sentences: usize,
}

impl TrainingResults {
    /// Results of the current format.
    pub fn new(seeds: Vec<SeedResult>, validation: ValidationMetrics, sentences: usize) -> Self {
        Self {
            format_version: RESULTS_FORMAT_VERSION,
            seeds,
            validation: EnsembleValidation {
                metrics: validation,
                sentences,
            },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn artifact_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Artifact {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether `dir` looks like a classifier artifact (has a manifest.json naming [`FORMAT`]).
pub fn is_artifact(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("format")
                .and_then(|f| f.as_str())
                .map(|f| f == FORMAT)
        })
        .unwrap_or(false)
}

/// Named tensors of one seed's weights.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Writes an artifact at `dir`: `manifest` (its `seeds[].weights` are set from `weights`),
/// the tokenizer, one weights file per `(seed, selected variant, tensors)` and `results`.
/// Everything goes to a temporary sibling folder first, which then replaces `dir`.
pub fn write_artifact(
    dir: &Path,
    manifest: &Manifest,
    tokenizer: &TextTokenizer,
    weights: &[(u64, String, NamedTensors)],
    results: &impl Serialize,
) -> Result<()> {
    write_artifact_with(dir, manifest, tokenizer, weights, results, &[])
}

/// Whether `dir` may be replaced by a new artifact: it does not exist, is an empty folder, or
/// is an artifact (has `manifest.json`). Anything else (a folder of other files, a file) is
/// refused, so a mistaken `--out` never deletes unrelated data.
pub fn check_replaceable(dir: &Path) -> Result<()> {
    check_replaceable_by(
        dir,
        is_artifact,
        "ttpmap classifier folder (no manifest.json)",
    )
}

/// Whether `dir` may be replaced by a model folder: it does not exist, is an empty folder, or
/// `is_ours` recognises it; otherwise an [`Error::Artifact`] saying it is not a `what`.
pub fn check_replaceable_by(dir: &Path, is_ours: impl Fn(&Path) -> bool, what: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if dir.is_dir() {
        let empty = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .next()
            .is_none();
        if empty || is_ours(dir) {
            return Ok(());
        }
    }
    Err(artifact_err(
        dir,
        format!("exists and is not a {what}; choose another output folder"),
    ))
}

/// The one atomic folder writer of every model format: `fill` writes the folder's files into a
/// temporary sibling folder (`.<name>.tmp-<pid>`), which then replaces `dir` (the old folder is
/// renamed aside and removed only after the rename). A failing `fill` removes the temporary
/// folder and leaves `dir` as it was: a crash never leaves a half-written folder at `dir`.
/// Callers check that `dir` may be replaced first ([`check_replaceable_by`]).
pub fn write_folder_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| artifact_err(dir, "output path has no folder name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(write_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(write_err(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(write_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(write_err(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(write_err(&old))?;
    }
    Ok(())
}

/// [`write_artifact`] plus extra files (name inside the folder, contents) written into the
/// folder before it is published, e.g. the resolved training config.
pub fn write_artifact_with(
    dir: &Path,
    manifest: &Manifest,
    tokenizer: &TextTokenizer,
    weights: &[(u64, String, NamedTensors)],
    results: &impl Serialize,
    extra_files: &[(&str, &[u8])],
) -> Result<()> {
    check_replaceable(dir)?;
    if weights.is_empty() {
        return Err(artifact_err(dir, "no seeds to write"));
    }
    write_folder_atomic(dir, |tmp| {
        let mut manifest = manifest.clone();
        manifest.format = FORMAT.into();
        manifest.format_version = FORMAT_VERSION;
        manifest.seeds.clear();
        for (seed, selected, tensors) in weights {
            let rel = Manifest::seed_weights_path(*seed);
            let path = tmp.join(&rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).map_err(io_err(p))?;
            }
            let map: std::collections::HashMap<String, Tensor> = tensors
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            candle_core::safetensors::save(&map, &path)?;
            manifest.seeds.push(SeedEntry {
                seed: *seed,
                weights: rel,
                selected: selected.clone(),
            });
        }
        let tok_path = tmp.join("tokenizer.json");
        tokenizer
            .inner()
            .save(&tok_path, false)
            .map_err(|source| Error::Tokenizer {
                path: Some(tok_path.clone()),
                source,
            })?;
        write_json(&tmp.join(MANIFEST), &manifest)?;
        // Through a JSON value, as before results.json was typed: sorted keys, f32 as f64.
        let results = serde_json::to_value(results).map_err(|source| Error::Json {
            path: tmp.join(RESULTS),
            source,
        })?;
        write_json(&tmp.join(RESULTS), &results)?;
        for (file, bytes) in extra_files {
            let p = tmp.join(file);
            std::fs::write(&p, bytes).map_err(io_err(&p))?;
        }
        Ok(())
    })
}

/// Writes `value` as pretty JSON with a final newline.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(io_err(path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    if !path.is_file() {
        return Err(artifact_err(path, "file is missing"));
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A loaded artifact: the manifest and one inference model per seed.
#[derive(Debug, Clone)]
pub struct Artifact {
    dir: PathBuf,
    manifest: Manifest,
    models: Vec<ClassifierModel>,
    /// Transformer layers (with the embeddings) every seed has the same weights for: run once
    /// per batch for the whole ensemble (see [`Artifact::with_shared_layers`]).
    shared_layers: usize,
}

impl Artifact {
    /// Loads the artifact at `dir` (format version 1). Every seed's weights are checked
    /// against the manifest's shapes.
    pub fn open(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(artifact_err(&dir, "not a folder"));
        }
        let mpath = dir.join(MANIFEST);
        let raw: serde_json::Value = read_json(&mpath)?;
        match raw.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(artifact_err(
                    &mpath,
                    format!("format is {other:?}, expected {FORMAT:?}"),
                ))
            }
        }
        match raw.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            other => {
                return Err(artifact_err(
                    &mpath,
                    format!(
                    "format_version {other:?} is not supported (this build reads {FORMAT_VERSION})"
                ),
                ))
            }
        }
        let manifest: Manifest = serde_json::from_value(raw).map_err(|source| Error::Json {
            path: mpath.clone(),
            source,
        })?;
        if manifest.labels.is_empty() {
            return Err(artifact_err(&mpath, "no labels"));
        }
        if manifest.seeds.is_empty() {
            return Err(artifact_err(&mpath, "no seeds"));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = manifest.labels.iter().find(|l| !seen.insert(*l)) {
            return Err(artifact_err(&mpath, format!("label {dup} listed twice")));
        }
        manifest
            .encoder
            .validate()
            .map_err(|e| artifact_err(&mpath, format!("encoder config: {e}")))?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(artifact_err(&tok_path, "file is missing"));
        }
        let tokenizer = TextTokenizer::from_file(
            &tok_path,
            manifest
                .max_length
                .min(manifest.encoder.max_position_embeddings),
            manifest.encoder.pad_token_id,
        )?;
        if tokenizer.vocab_size() > manifest.encoder.vocab_size {
            return Err(artifact_err(
                &tok_path,
                format!(
                    "tokenizer has {} tokens but the encoder has {} word embeddings",
                    tokenizer.vocab_size(),
                    manifest.encoder.vocab_size
                ),
            ));
        }
        let head = manifest.head_config();
        let models = manifest
            .seeds
            .iter()
            .map(|s| {
                let rel = Path::new(&s.weights);
                if rel.is_absolute()
                    || rel
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(artifact_err(
                        &mpath,
                        format!(
                            "seed {} weights path {:?} leaves the folder",
                            s.seed, s.weights
                        ),
                    ));
                }
                let path = dir.join(rel);
                if !path.is_file() {
                    return Err(artifact_err(&path, "weights file is missing"));
                }
                ClassifierModel::load(&path, &manifest.encoder, &head, tokenizer.clone(), device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dir,
            manifest,
            models,
            shared_layers: 0,
        })
    }

    /// An artifact from parts already loaded (e.g. a shipped delta rebuilt over its base by
    /// `crate::trained`); `dir` names it in messages.
    pub fn from_parts(dir: PathBuf, manifest: Manifest, models: Vec<ClassifierModel>) -> Self {
        Self {
            dir,
            manifest,
            models,
            shared_layers: 0,
        }
    }

    /// Declares that every seed has the same embeddings and first `layers` transformer layers
    /// (seeds fine-tuned with those layers frozen over one base, as `ttpmap train default`
    /// does): the ensemble then runs them once per batch and only the layers above and the head
    /// per seed. The caller vouches for the sameness (`crate::trained` checks it from the
    /// deltas); clamped to the encoder's depth.
    pub fn with_shared_layers(mut self, layers: usize) -> Self {
        self.shared_layers = layers.min(self.manifest.encoder.num_hidden_layers);
        self
    }

    /// See [`Artifact::with_shared_layers`] (0: each seed runs its whole encoder).
    pub fn shared_layers(&self) -> usize {
        self.shared_layers
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Labels in output order.
    pub fn labels(&self) -> &[TechniqueId] {
        &self.manifest.labels
    }

    /// One model per seed, in manifest order.
    pub fn models(&self) -> &[ClassifierModel] {
        &self.models
    }

    /// results.json, when present, as training wrote it; a file of another shape or a newer
    /// `format_version` is an error naming the file.
    pub fn training_results(&self) -> Result<Option<TrainingResults>> {
        let p = self.dir.join(RESULTS);
        if !p.is_file() {
            return Ok(None);
        }
        let r: TrainingResults = read_json(&p)?;
        if r.format_version > RESULTS_FORMAT_VERSION {
            return Err(artifact_err(
                &p,
                format!(
                    "format_version {} is not supported (this build reads up to {RESULTS_FORMAT_VERSION})",
                    r.format_version
                ),
            ));
        }
        Ok(Some(r))
    }

    /// Tokenises `sentences` once for every seed (all seeds share the artifact's
    /// tokenizer.json); truncations are reported once, as a count.
    pub fn encode(&self, sentences: &[&str]) -> Result<Vec<Encoded>> {
        match self.models.first() {
            Some(m) => m.tokenizer().encode_all(sentences),
            None => Ok(Vec::new()),
        }
    }

    /// Per-seed probabilities: `[seed][sentence][label]`.
    pub fn predict_per_seed(&self, sentences: &[&str]) -> Result<Vec<Vec<Vec<f32>>>> {
        self.predict_per_seed_encoded(&self.encode(sentences)?)
    }

    /// Per-seed probabilities of inputs tokenised with [`Self::encode`].
    pub fn predict_per_seed_encoded(&self, encodings: &[Encoded]) -> Result<Vec<Vec<Vec<f32>>>> {
        match self.models.first() {
            Some(first) if self.models.len() > 1 && self.shared_layers > 0 => {
                self.predict_shared(first, encodings)
            }
            _ => self
                .models
                .iter()
                .map(|m| m.predict_tokenized(encodings))
                .collect(),
        }
    }

    /// [`Self::predict_per_seed_encoded`] running the shared lower layers once per batch
    /// (length-sorted batches, as [`crate::classifier::predict_encoded`]).
    fn predict_shared(
        &self,
        first: &ClassifierModel,
        encodings: &[Encoded],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let k = self.shared_layers;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].ids.len());
        let mut out = vec![vec![Vec::new(); encodings.len()]; self.models.len()];
        for chunk in order.chunks(first.batch_size()) {
            let members: Vec<Encoded> = chunk.iter().map(|&i| encodings[i].clone()).collect();
            let batch = first.tokenizer().pad(&members, first.device())?;
            let lower = first.network().lower_states(&batch, k)?;
            for (m, seed_out) in self.models.iter().zip(out.iter_mut()) {
                let logits =
                    m.network()
                        .forward_from(&lower, &batch.attention_mask, k, Mode::Eval)?;
                let probs = candle_nn::ops::sigmoid(&logits)?;
                for (&i, row) in chunk.iter().zip(probs.to_vec2::<f32>()?) {
                    seed_out[i] = row;
                }
            }
        }
        Ok(out)
    }

    /// Whether `text` is read in full: it fits in the seeds' `max_length` tokens with its
    /// special tokens (true for an artifact without seeds).
    pub fn fits(&self, text: &str) -> Result<bool> {
        match self.models.first() {
            Some(m) => m.tokenizer().fits(text),
            None => Ok(true),
        }
    }

    /// Ensemble probabilities: the mean over seeds, `[sentence][label]`.
    pub fn predict_proba(&self, sentences: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(ensemble_mean(&self.predict_per_seed(sentences)?))
    }
}

/// Element-wise mean of per-seed probabilities `[seed][sentence][label]` (all the same shape).
/// Empty input gives an empty result.
pub fn ensemble_mean(per_seed: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    let Some(first) = per_seed.first() else {
        return Vec::new();
    };
    let n = per_seed.len() as f32;
    first
        .iter()
        .enumerate()
        .map(|(s, row)| {
            (0..row.len())
                .map(|l| per_seed.iter().map(|p| p[s][l]).sum::<f32>() / n)
                .collect()
        })
        .collect()
}

/// Indices of the labels with probability `>= threshold`, per sentence.
pub fn threshold_labels(probs: &[Vec<f32>], threshold: f32) -> Vec<Vec<usize>> {
    probs
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, p)| **p >= threshold)
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_mean_and_threshold() {
        // Hand computation: seeds [0.2, 0.9] and [0.6, 0.5] -> mean [0.4, 0.7].
        let per_seed = vec![vec![vec![0.2, 0.9]], vec![vec![0.6, 0.5]]];
        let m = ensemble_mean(&per_seed);
        assert!((m[0][0] - 0.4).abs() < 1e-6 && (m[0][1] - 0.7).abs() < 1e-6);
        assert_eq!(threshold_labels(&m, 0.5), vec![vec![1]]);
        assert_eq!(threshold_labels(&m, 0.4), vec![vec![0, 1]]);
        assert!(ensemble_mean(&[]).is_empty());
    }
}
