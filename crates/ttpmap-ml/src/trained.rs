//! The default pipeline's trained model as it ships: the full-catalog label-attention
//! classifier (`ttpmap train default`) stored as a small delta over the base encoder, with its
//! calibration, software evidence weight and decision threshold, and its scorer.
//!
//! Layout of the shipped folder (`models/default/` in the repository, also compiled into the
//! binary):
//! ```text
//! manifest.json               DeltaManifest: format + version, the base encoder it applies to
//!                             (name and sha256 of its weights file), the classifier manifest
//!                             (labels, encoder config, seeds), calibration, software boost,
//!                             threshold, validation figures, the command that made it
//! delta-seed-<n>.safetensors  the tensors that differ from the base (trained layers and the
//!                             head), f16
//! ```
//! Loading ([`TrainedModel::from_files`]) checks the base's sha256, rebuilds the full weights
//! (base tensors overlaid by the delta) and builds an ordinary [`Artifact`].
//!
//! Scores ([`TrainedScorer`]): per sentence and label, the ensemble probability `p` becomes
//! the logit `z = ln(p / (1 - p))`, plus `software_boost` when a tool or malware named in the
//! sentence uses the technique ([`ttpmap_core::software`]) and `name_boost` when the sentence
//! names the technique ("PowerShell", "scheduled task"), then the calibrated probability
//! `sigmoid(a * z + b)` (Platt scaling fitted on the validation reports). A technique id the
//! sentence cites ("T1059.001", a revoked id as its replacement) raises that technique to at
//! least [`CITED_CONFIDENCE`] (a cited id outside the model's labels raises its parent when the
//! parent is one); implied parents follow. That calibrated probability is the one score
//! `rank`, `extract`, the API and the UI show.
//!
//! [`package`] makes the folder from a full training output: delta, then the validation
//! reports scored with the delta as it ships, the two boosts chosen on a grid, calibration fitted,
//! threshold tuned for per-document F1 (all gold labels).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ttpmap_core::eval::{self, DocF1Variant, Objective, ScoredSentence};
use ttpmap_core::pipeline::{DocumentRule, ScoreOptions, SentenceScorer};
use ttpmap_core::software::{Citation, CitedIds, Software, SoftwareIndex};
use ttpmap_core::{Evidence, Prediction, TechniqueId};

use crate::artifact::{write_folder_atomic, write_json, Artifact, Manifest, SeedEntry};
use crate::classifier::{Classifier, ClassifierModel, ClassifierScorer};
use crate::encoder::bert::{BertEncoder, Config as BertConfig, TrainableOptions};
use crate::model_dir::ModelDir;
use crate::train::classifier::Example;
use crate::{Error, Result};

/// Value of `format` in manifest.json.
pub const FORMAT: &str = "ttpmap-trained-delta";
/// Current `format_version`.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest file.
pub const MANIFEST: &str = "manifest.json";
/// The base encoder every shipped delta applies to.
pub const BASE_NAME: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Techniques a sentence proposes (its best, after calibration) before the document rule and
/// the threshold: what `extract` keeps by default, what `eval` scores (`--top-k` 20) and what
/// [`package`] tunes the threshold on, so the three see the same candidates.
pub const CANDIDATES_PER_SENTENCE: usize = 20;

/// The base encoder a delta applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// Hugging Face id, e.g. [`BASE_NAME`].
    pub name: String,
    /// Hex sha256 of its weights file (`model.safetensors`).
    pub weights_sha256: String,
}

/// Platt scaling: `p = sigmoid(a * z + b)` for a logit `z`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub a: f32,
    pub b: f32,
}

impl Calibration {
    /// No change.
    pub const IDENTITY: Calibration = Calibration { a: 1.0, b: 0.0 };

    /// The calibrated probability of logit `z`.
    pub fn apply(&self, z: f32) -> f32 {
        sigmoid(self.a * z + self.b)
    }

    /// Fits `a`, `b` by Newton's method on the log-loss of `(logit, is_gold)` pairs (a tiny L2
    /// term keeps it finite on separable data). The logits are first binned to 0.01 (clamped
    /// to +-20), so millions of (sentence, label) pairs cost a few thousand terms per step.
    /// Identity when there are no positives or no negatives.
    pub fn fit(pairs: &[(f32, bool)]) -> Calibration {
        let pos = pairs.iter().filter(|p| p.1).count();
        if pos == 0 || pos == pairs.len() {
            return Calibration::IDENTITY;
        }
        let mut bins: BTreeMap<i32, (f64, f64)> = BTreeMap::new();
        for &(z, y) in pairs {
            let k = (z.clamp(-20.0, 20.0) * 100.0).round() as i32;
            let e = bins.entry(k).or_default();
            if y {
                e.0 += 1.0;
            } else {
                e.1 += 1.0;
            }
        }
        let bins: Vec<(f64, f64, f64)> = bins
            .into_iter()
            .map(|(k, (p, n))| (k as f64 / 100.0, p, n))
            .collect();
        let (mut a, mut b) = (1.0f64, 0.0f64);
        let l2 = 1e-6 * pairs.len() as f64;
        let loss = |a: f64, b: f64| -> f64 {
            let mut total = 0.5 * l2 * ((a - 1.0).powi(2) + b * b);
            for &(z, npos, nneg) in &bins {
                let s = a * z + b;
                // -log sigmoid(s) and -log(1 - sigmoid(s)), computed stably.
                let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
                total += npos * softplus(-s) + nneg * softplus(s);
            }
            total
        };
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (l2 * (a - 1.0), l2 * b, l2, 0.0, l2);
            for &(z, npos, nneg) in &bins {
                let p = 1.0 / (1.0 + (-(a * z + b)).exp());
                // d/ds of the log-loss summed over the bin: n * p - npos.
                let d = (npos + nneg) * p - npos;
                let w = (npos + nneg) * (p * (1.0 - p)).max(1e-12);
                ga += d * z;
                gb += d;
                haa += w * z * z;
                hab += w * z;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Damped Newton: halve the step until the loss does not grow (a full step can
            // overshoot far from the optimum).
            let before = loss(a, b);
            let mut step = 1.0;
            while step > 1e-9 && loss(a - step * da, b - step * db) > before {
                step *= 0.5;
            }
            a -= step * da;
            b -= step * db;
            if (step * da).abs() < 1e-7 && (step * db).abs() < 1e-7 {
                break;
            }
        }
        Calibration {
            a: a as f32,
            b: b as f32,
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The logit of a probability, clamped away from 0 and 1.
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// What [`package`] measured on the validation reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaValidation {
    /// Held-out reports per dataset.
    pub reports: BTreeMap<String, usize>,
    pub sentences: usize,
    /// Per-document F1 at `threshold`, with the boost and calibration: all gold labels, each
    /// report scored on the labels its dataset annotates (all of ATT&CK but for TRAM2's 50
    /// when the model was trained with `fixed_label_space`).
    pub per_document_f1: f64,
    /// `per_document_f1` of each dataset's held-out reports alone.
    #[serde(default)]
    pub per_dataset: BTreeMap<String, f64>,
    /// Per-document F1 of each (implied parents, document rule) tried, calibrated, each at
    /// its own best threshold: `(implied_parents, document_rule, threshold, F1)`; the manifest
    /// keeps the best.
    #[serde(default)]
    pub decision_grid: Vec<(bool, DocumentRule, f32, f64)>,
    /// Per-document F1 of the uncalibrated model without software or name evidence (its own
    /// best threshold), for comparison.
    pub per_document_f1_without_software: f64,
    /// Per-document F1 (uncalibrated, best threshold) for each (software boost, name boost)
    /// tried.
    pub boost_grid: Vec<(f32, f32, f64)>,
    /// Mean log-loss over (sentence, label) pairs before and after calibration.
    pub log_loss_uncalibrated: f64,
    pub log_loss_calibrated: f64,
}

/// manifest.json of a shipped delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The encoder the delta applies to.
    pub base: BaseModel,
    /// The classifier (labels, encoder config, max_length, seeds: their delta files).
    pub classifier: Manifest,
    pub calibration: Calibration,
    /// Added to a technique's logit when software named in the sentence uses it.
    pub software_boost: f32,
    /// Added to a technique's logit when the sentence names it (whole words, as
    /// [`SoftwareIndex::technique_names`] matches).
    #[serde(default)]
    pub name_boost: f32,
    /// Whether a sub-technique implies its parent: a parent's calibrated probability is at
    /// least that of its most probable sub-technique (ATT&CK's hierarchy: PowerShell is a
    /// Command and Scripting Interpreter). Chosen on validation; absent in older manifests
    /// (false).
    #[serde(default)]
    pub implied_parents: bool,
    /// How the document's techniques follow from its sentences (any sentence at the
    /// threshold, or noisy-OR over a technique's best sentences). Chosen on validation; absent
    /// in older manifests (any sentence).
    #[serde(default)]
    pub document_rule: DocumentRule,
    /// Calibrated threshold, tuned for per-document F1 on validation.
    pub threshold: f32,
    pub validation: DeltaValidation,
    /// The command that made the model.
    pub command: String,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Artifact {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The base encoder's tensors under the classifier's names (`encoder.*`).
fn base_tensors(base: &ModelDir, cfg: &BertConfig) -> Result<HashMap<String, Tensor>> {
    let varmap = VarMap::new();
    let opts = TrainableOptions {
        prefix: "encoder".into(),
        ..TrainableOptions::default()
    };
    let vb = base.var_builder(DType::F32, &Device::Cpu)?;
    let (_, report) = BertEncoder::trainable(&varmap, cfg, &opts, Some(&vb))?;
    if !report.initialised.is_empty() {
        return Err(bad(
            base.weights_path(),
            format!("base weights lack {:?}", report.initialised),
        ));
    }
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::InvalidArgument("VarMap lock poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect())
}

/// A loaded shipped model.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    manifest: DeltaManifest,
    artifact: Artifact,
    source: PathBuf,
}

impl TrainedModel {
    /// Loads the folder `dir` over `base`.
    pub fn open(dir: &Path, base: &ModelDir, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(bad(dir, "not a folder"));
        }
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Err(bad(&p, "file is missing"));
            }
            std::fs::read(&p).map_err(|source| Error::Io { path: p, source })
        };
        Self::from_files(dir, &read, base, device)
    }

    /// Loads a shipped model whose files `read` returns by name (from a folder, or compiled
    /// into the binary); `source` names it in errors.
    pub fn from_files(
        source: &Path,
        read: &dyn Fn(&str) -> Result<Vec<u8>>,
        base: &ModelDir,
        device: &Device,
    ) -> Result<Self> {
        let mpath = source.join(MANIFEST);
        let raw: serde_json::Value =
            serde_json::from_slice(&read(MANIFEST)?).map_err(|source| Error::Json {
                path: mpath.clone(),
                source,
            })?;
        match raw.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            other => {
                return Err(bad(
                    &mpath,
                    format!("format is {other:?}, expected {FORMAT:?}"),
                ))
            }
        }
        match raw.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            other => {
                return Err(bad(
                    &mpath,
                    format!(
                    "format_version {other:?} is not supported (this build reads {FORMAT_VERSION})"
                ),
                ))
            }
        }
        let manifest: DeltaManifest =
            serde_json::from_value(raw).map_err(|source| Error::Json {
                path: mpath.clone(),
                source,
            })?;
        let clf = &manifest.classifier;
        if clf.labels.is_empty() || clf.seeds.is_empty() {
            return Err(bad(&mpath, "no labels or no seeds"));
        }
        let got = sha256_file(base.weights_path())?;
        if got != manifest.base.weights_sha256 {
            return Err(bad(
                base.weights_path(),
                format!(
                    "sha256 {got} is not that of the base model this model was trained on ({} \
                     with sha256 {}); point --model / TTPMAP_MODEL at that model",
                    manifest.base.name, manifest.base.weights_sha256
                ),
            ));
        }
        let base_map = base_tensors(base, &clf.encoder)?;
        let tokenizer = base.tokenizer(clf.max_length.min(clf.encoder.max_position_embeddings))?;
        let head = clf.head_config();
        let mut deltas = Vec::with_capacity(clf.seeds.len());
        let mut shared = clf.encoder.num_hidden_layers;
        for seed in &clf.seeds {
            let path = source.join(&seed.weights);
            let bytes = read(&seed.weights)?;
            let delta = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| bad(&path, format!("not a readable safetensors file: {e}")))?;
            shared = shared.min(first_changed_layer(
                delta.keys(),
                clf.encoder.num_hidden_layers,
            ));
            deltas.push((path, delta));
        }
        let mut models = Vec::with_capacity(clf.seeds.len());
        for (i, (path, delta)) in deltas.into_iter().enumerate() {
            let mut map = base_map.clone();
            for (name, t) in delta {
                if let Some(b) = map.get(&name) {
                    if b.dims() != t.dims() {
                        return Err(bad(
                            &path,
                            format!("{name} has shape {:?}, the base {:?}", t.dims(), b.dims()),
                        ));
                    }
                }
                map.insert(name, t.to_dtype(DType::F32)?);
            }
            let map: HashMap<String, Tensor> = map
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_device(device)?)))
                .collect::<Result<_>>()?;
            let vb = VarBuilder::from_tensors(map, DType::F32, device);
            let net = Classifier::load(vb, &clf.encoder, &head)
                .map_err(|e| bad(&path, format!("weights do not match the manifest: {e}")))?;
            // The shared lower layers run on the first seed's copies only (`predict_shared`),
            // so the others skip their inference copies (packing, memory).
            let skip = if i == 0 || clf.seeds.len() == 1 {
                0
            } else {
                shared
            };
            models.push(ClassifierModel::from_network_above(
                net,
                tokenizer.clone(),
                device,
                skip,
            )?);
        }
        // Seeds that left the lower layers at the base share them: the ensemble runs them once.
        let artifact = Artifact::from_parts(source.to_path_buf(), clf.clone(), models)
            .with_shared_layers(shared);
        Ok(Self {
            manifest,
            artifact,
            source: source.to_path_buf(),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &DeltaManifest {
        &self.manifest
    }

    /// The classifier ensemble.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Calibrated probabilities `[sentence][label]` (label order of the manifest), with the
    /// software and technique names in each sentence as evidence.
    pub fn predict(&self, sentences: &[&str], mentions: &Mentions) -> Result<Vec<Vec<f32>>> {
        let scans: Vec<SentenceMentions> = sentences.iter().map(|t| mentions.scan(t)).collect();
        self.predict_scanned(sentences, &scans)
    }

    /// [`Self::predict`] with each sentence's mentions already found.
    fn predict_scanned(
        &self,
        sentences: &[&str],
        scans: &[SentenceMentions],
    ) -> Result<Vec<Vec<f32>>> {
        let probs = self.artifact.predict_proba(sentences)?;
        let index = label_index(self.artifact.labels());
        let boosts = Boosts {
            software: self.manifest.software_boost,
            names: self.manifest.name_boost,
        };
        let pairs = if self.manifest.implied_parents {
            parent_pairs(self.artifact.labels())
        } else {
            Vec::new()
        };
        Ok(probs
            .into_iter()
            .zip(scans)
            .map(|(row, scan)| {
                let mut out = adjust(&row, &scan.found(&index), boosts, self.manifest.calibration);
                imply_parents(&mut out, &pairs);
                out
            })
            .collect())
    }
}

/// The first encoder layer a delta's tensor names change (`encoder.encoder.layer.<i>.*`); 0 when
/// it changes the embeddings or any other encoder tensor, `layers` when it changes none (a
/// head-only delta).
fn first_changed_layer<'a>(names: impl Iterator<Item = &'a String>, layers: usize) -> usize {
    names
        .filter(|n| n.starts_with("encoder."))
        .map(|n| {
            n.strip_prefix("encoder.encoder.layer.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .fold(layers, usize::min)
}

fn label_index(labels: &[TechniqueId]) -> HashMap<TechniqueId, usize> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i))
        .collect()
}

/// The probability a technique whose id a sentence cites gets at least (core's constant, which
/// every other method gets through `CitingScorer`).
pub use ttpmap_core::software::CITED_CONFIDENCE;

/// What the default model takes as evidence besides the text itself: software (tools and
/// malware, with the techniques they use), technique names and technique ids mentioned in a
/// sentence.
#[derive(Clone, Debug, Default)]
pub struct Mentions {
    pub software: SoftwareIndex,
    pub names: SoftwareIndex,
    pub ids: CitedIds,
}

impl Mentions {
    /// The three indexes over `catalog`.
    pub fn from_catalog(catalog: &ttpmap_core::attack::Catalog) -> Self {
        Self {
            software: SoftwareIndex::from_catalog(catalog),
            names: SoftwareIndex::technique_names(catalog),
            ids: CitedIds::from_catalog(catalog),
        }
    }

    /// The software, technique names and technique ids `text` mentions.
    fn scan<'a>(&'a self, text: &str) -> SentenceMentions<'a> {
        SentenceMentions {
            software: self.software.mentions(text),
            names: self.names.mentions(text),
            cited: self.ids.find(text),
        }
    }

    /// Label indexes raised by software in `text`, and by technique names in `text`.
    fn found(&self, text: &str, index: &HashMap<TechniqueId, usize>) -> Found {
        self.scan(text).found(index)
    }
}

/// One sentence's mentions: found once, used for the boosts and shown as evidence.
struct SentenceMentions<'a> {
    software: Vec<&'a Software>,
    names: Vec<&'a Software>,
    cited: Vec<Citation>,
}

impl SentenceMentions<'_> {
    fn found(&self, index: &HashMap<TechniqueId, usize>) -> Found {
        Found {
            software: labels_used(&self.software, index),
            names: labels_used(&self.names, index),
            cited: self
                .cited
                .iter()
                .filter_map(|c| cited_label(&c.current, index))
                .collect(),
        }
    }

    /// The citation that names `technique` (itself, or a sub-technique of it that is not a
    /// label of the model), if any.
    fn citation_of(
        &self,
        technique: &TechniqueId,
        index: &HashMap<TechniqueId, usize>,
    ) -> Option<&Citation> {
        self.cited.iter().find(|c| {
            c.current == *technique
                || (c.current.parent() == *technique && !index.contains_key(&c.current))
        })
    }
}

/// The label a cited technique raises: itself, else its parent (both must be labels).
fn cited_label(current: &TechniqueId, index: &HashMap<TechniqueId, usize>) -> Option<usize> {
    index
        .get(current)
        .or_else(|| index.get(&current.parent()))
        .copied()
}

/// Label indexes a sentence's mentions raise.
#[derive(Clone, Debug, Default, PartialEq)]
struct Found {
    software: BTreeSet<usize>,
    names: BTreeSet<usize>,
    /// Labels whose technique id the sentence cites.
    cited: BTreeSet<usize>,
}

/// Logit increments for software and technique-name mentions.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Boosts {
    software: f32,
    names: f32,
}

/// Label indexes of the techniques the mentioned software (or technique names) use.
fn labels_used(mentioned: &[&Software], index: &HashMap<TechniqueId, usize>) -> BTreeSet<usize> {
    mentioned
        .iter()
        .flat_map(|s| s.uses.iter())
        .filter_map(|t| index.get(t).copied())
        .collect()
}

/// The logit of label `j` with its mention boosts.
fn boosted_logit(p: f32, j: usize, found: &Found, boosts: Boosts) -> f32 {
    let mut z = logit(p);
    if found.software.contains(&j) {
        z += boosts.software;
    }
    if found.names.contains(&j) {
        z += boosts.names;
    }
    z
}

/// `(sub-technique, parent)` label index pairs of `labels` (both must be labels).
fn parent_pairs(labels: &[TechniqueId]) -> Vec<(usize, usize)> {
    let index = label_index(labels);
    labels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_subtechnique())
        .filter_map(|(j, l)| index.get(&l.parent()).map(|&p| (j, p)))
        .collect()
}

/// Raises each parent to its most probable sub-technique (see
/// [`DeltaManifest::implied_parents`]).
fn imply_parents(row: &mut [f32], pairs: &[(usize, usize)]) {
    for &(sub, parent) in pairs {
        if row[sub] > row[parent] {
            row[parent] = row[sub];
        }
    }
}

/// Calibrated probabilities of one sentence: boosted logits through the calibration, then the
/// cited techniques raised to [`CITED_CONFIDENCE`].
fn adjust(row: &[f32], found: &Found, boosts: Boosts, cal: Calibration) -> Vec<f32> {
    row.iter()
        .enumerate()
        .map(|(j, &p)| {
            let q = cal.apply(boosted_logit(p, j, found, boosts));
            if found.cited.contains(&j) {
                q.max(CITED_CONFIDENCE)
            } else {
                q
            }
        })
        .collect()
}

/// [`SentenceScorer`] of the default pipeline (see the module docs).
pub struct TrainedScorer {
    model: TrainedModel,
    mentions: Mentions,
    /// Label mapping, `top_k`, label space and evidence switch.
    clf: ClassifierScorer,
    /// Label index of each of the model's labels.
    index: HashMap<TechniqueId, usize>,
}

impl TrainedScorer {
    /// A scorer over `model`, with `mentions` as evidence.
    pub fn new(model: TrainedModel, mentions: Mentions) -> Self {
        let mut clf = ClassifierScorer::new(model.artifact.clone());
        clf.top_k = CANDIDATES_PER_SENTENCE;
        let index = label_index(model.artifact.labels());
        Self {
            model,
            mentions,
            clf,
            index,
        }
    }

    /// The model.
    pub fn model(&self) -> &TrainedModel {
        &self.model
    }

    /// The model's two operating points (0.5 and the tuned threshold).
    pub fn operating_points(&self) -> ttpmap_core::protocol::OperatingPoints {
        ttpmap_core::protocol::OperatingPoints {
            default: 0.5,
            tuned: self.model.manifest.threshold,
        }
    }

    /// The sub-technique whose probability `p` (a parent's, in `row`) was raised to, if any.
    fn implied_by(&self, parent: &TechniqueId, row: &[f32], p: f32) -> Option<TechniqueId> {
        self.model
            .artifact
            .labels()
            .iter()
            .zip(row)
            .find(|(l, q)| l.is_subtechnique() && l.parent() == *parent && **q == p)
            .map(|(l, _)| l.clone())
    }

    /// Every label's calibrated probability for each sentence, mapped into the label space,
    /// best first (no top-k cut): what evaluation scores.
    pub fn label_scores(&self, sentences: &[&str]) -> Result<Vec<Vec<(TechniqueId, f32)>>> {
        Ok(self
            .model
            .predict(sentences, &self.mentions)?
            .iter()
            .map(|row| self.clf.label_scores(row))
            .collect())
    }
}

impl SentenceScorer for TrainedScorer {
    fn reads_citations(&self) -> bool {
        // Raised with the other evidence, before implied parents (see `adjust`).
        true
    }

    fn name(&self) -> &str {
        "trained"
    }

    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        // Each sentence's mentions are found once: for the boosts and for the evidence.
        let scans: Vec<SentenceMentions> =
            sentences.iter().map(|t| self.mentions.scan(t)).collect();
        let rows = self
            .model
            .predict_scanned(sentences, &scans)
            .map_err(|e| ttpmap_core::Error::model(self.model.source(), "scoring sentences", e))?;
        Ok(rows
            .iter()
            .zip(&scans)
            .map(|(row, scan)| {
                self.clf
                    .label_scores(row)
                    .into_iter()
                    .take(self.clf.top_k)
                    .map(|(technique, p)| {
                        let mut reasons = Vec::new();
                        if self.clf.with_evidence {
                            reasons.push(format!("calibrated probability {p:.3}"));
                            for s in &scan.software {
                                if let Some(t) = s
                                    .uses
                                    .iter()
                                    .find(|u| **u == technique || u.parent() == technique)
                                {
                                    reasons.push(format!("{}: {} uses {t}", s.name, s.id));
                                }
                            }
                            if scan.names.iter().any(|n| n.uses.contains(&technique)) {
                                reasons.push(format!("names the technique ({technique})"));
                            }
                            if let Some(c) = scan.citation_of(&technique, &self.index) {
                                reasons.push(c.reason());
                            }
                            if self.model.manifest.implied_parents && !technique.is_subtechnique() {
                                if let Some(sub) = self.implied_by(&technique, row, p) {
                                    reasons.push(format!("implied by its sub-technique {sub}"));
                                }
                            }
                        }
                        Prediction {
                            technique,
                            score: p.clamp(0.0, 1.0),
                            raw_score: p,
                            evidence: Evidence {
                                method: "trained".into(),
                                reasons,
                            },
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// The threshold tuned for per-document F1 on the validation reports.
    fn default_threshold(&self) -> f32 {
        self.model.manifest.threshold
    }

    /// The document rule chosen with that threshold.
    fn document_rule(&self) -> DocumentRule {
        self.model.manifest.document_rule
    }

    /// Trained on single sentences (and short descriptions) of at most `max_length` (64)
    /// tokens: a passage that fits is read whole, a longer one sentence by sentence (on
    /// passages of 3 / 5 consecutive sentences of the validation reports, P@1 68.2 / 69.1
    /// against 62.8 / 54.2 read whole, the emulation validation queries unchanged;
    /// docs/results.md).
    fn reads_whole(&self, passage: &str) -> bool {
        self.model.artifact.fits(passage).unwrap_or(true)
    }

    fn configure(&mut self, options: &ScoreOptions) {
        self.clf.configure(options);
    }

    ttpmap_core::impl_scorer_any!();
}

/// Inputs of [`package`].
pub struct PackageJob<'a> {
    /// The full training output (`ttpmap train default --out`).
    pub full: &'a Path,
    /// The base encoder it was trained from.
    pub base: &'a ModelDir,
    /// The validation sentences (the held-out reports, as [`crate::train::data::catalog_data`]
    /// made them).
    pub validation: &'a [Example],
    /// Held-out reports per dataset (recorded).
    pub validation_reports: BTreeMap<String, usize>,
    /// Software and technique-name evidence.
    pub mentions: &'a Mentions,
    /// Output folder.
    pub out: &'a Path,
    /// The command that made the model (recorded).
    pub command: String,
    /// Also write the validation sentences' scores here (JSON lines `{doc, text, gold, scores}`,
    /// calibrated, with the chosen evidence weights and implied parents, before the document
    /// rule; scores under 0.02 left out), for analyses such as
    /// `scripts/validation_bootstrap.py`.
    pub dump_validation: Option<&'a Path>,
}

/// Document rules tried by [`package`] (each with and without implied parents).
pub const DOCUMENT_RULES: [DocumentRule; 2] =
    [DocumentRule::AnySentence, DocumentRule::NoisyOr { top: 3 }];

/// Software and name boosts tried by [`package`] (every pair).
pub const BOOST_GRID: &[f32] = &[0.0, 0.5, 1.0, 1.5, 2.0, 3.0];

/// The classifier manifest of [`package`]'s source: a full model folder, or a shipped folder
/// (its delta over `base`, which must be the base it was made for), so that a shipped model can
/// be packaged again (new validation data, new tuning) without its full weights.
fn source_manifest(dir: &Path, base: &ModelDir) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).ok();
    let shipped = bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .is_some_and(|v| v["format"] == FORMAT);
    let Some(bytes) = bytes.filter(|_| shipped) else {
        // A full model folder (Artifact::open names what is missing or wrong).
        return Ok(Artifact::open(dir, &Device::Cpu)?.manifest().clone());
    };
    let m: DeltaManifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(&path, format!("not a shipped model manifest: {e}")))?;
    let sha = sha256_file(base.weights_path())?;
    if m.base.weights_sha256 != sha {
        return Err(bad(
            &path,
            format!(
                "the delta is over a base whose weights have sha256 {}, but {} has {sha}",
                m.base.weights_sha256,
                base.weights_path().display()
            ),
        ));
    }
    Ok(m.classifier)
}

/// Writes the shipped folder of `job` (see the module docs) and returns its manifest.
pub fn package(job: &PackageJob, progress: &mut dyn FnMut(&str)) -> Result<DeltaManifest> {
    let source = source_manifest(job.full, job.base)?;
    let cfg = source.encoder.clone();
    let base_map = base_tensors(job.base, &cfg)?;
    let mut deltas = Vec::new();
    for seed in &source.seeds {
        let path = job.full.join(&seed.weights);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let mut delta: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in tensors {
            // A shipped folder's delta is f16; a tensor it lacks equals the base.
            let t = t.to_dtype(DType::F32)?;
            let same = match base_map.get(&name) {
                Some(b) if b.dims() == t.dims() => {
                    b.sub(&t)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0
                }
                _ => false,
            };
            if !same {
                delta.insert(name, t.to_dtype(DType::F16)?);
            }
        }
        deltas.push((seed.clone(), delta));
    }
    // The head's tensors are in every delta and not in the base: counted apart.
    let (changed, added) = deltas.first().map_or((0, 0), |(_, d)| {
        let changed = d.keys().filter(|n| base_map.contains_key(*n)).count();
        (changed, d.len() - changed)
    });
    progress(&format!(
        "delta: {changed} of the base's {} tensors differ, and {added} are not in the base (the head)",
        base_map.len()
    ));
    let base = BaseModel {
        name: BASE_NAME.into(),
        weights_sha256: sha256_file(job.base.weights_path())?,
    };
    let mut classifier = source;
    classifier.seeds = deltas
        .iter()
        .map(|(s, _)| SeedEntry {
            seed: s.seed,
            weights: format!("delta-seed-{}.safetensors", s.seed),
            selected: s.selected.clone(),
        })
        .collect();
    let mut manifest = DeltaManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        base,
        classifier,
        calibration: Calibration::IDENTITY,
        software_boost: 0.0,
        name_boost: 0.0,
        implied_parents: false,
        document_rule: DocumentRule::AnySentence,
        threshold: 0.5,
        validation: DeltaValidation {
            reports: job.validation_reports.clone(),
            sentences: job.validation.len(),
            per_document_f1: 0.0,
            per_dataset: BTreeMap::new(),
            decision_grid: Vec::new(),
            per_document_f1_without_software: 0.0,
            boost_grid: Vec::new(),
            log_loss_uncalibrated: 0.0,
            log_loss_calibrated: 0.0,
        },
        command: job.command.clone(),
    };
    crate::artifact::check_replaceable_by(
        job.out,
        |p| p.join(MANIFEST).is_file(),
        "shipped default model",
    )?;
    write_folder_atomic(job.out, |tmp| {
        for (seed, delta) in &deltas {
            let p = tmp.join(format!("delta-seed-{}.safetensors", seed.seed));
            candle_core::safetensors::save(delta, &p)?;
        }
        write_json(&tmp.join(MANIFEST), &manifest)?;
        // Score validation with the weights as they ship (f16 delta over the base).
        let model = TrainedModel::open(tmp, job.base, &Device::Cpu)?;
        progress(&format!(
            "scoring {} validation sentences",
            job.validation.len()
        ));
        let texts: Vec<&str> = job.validation.iter().map(|e| e.text.as_str()).collect();
        let probs = model.artifact.predict_proba(&texts)?;
        let labels = model.artifact.labels().to_vec();
        let index = label_index(&labels);
        let boosted: Vec<Found> = texts
            .iter()
            .map(|t| job.mentions.found(t, &index))
            .collect();
        let objective = Objective::DocumentF1 {
            variant: DocF1Variant::AllGold,
            vocab: None,
        };
        let grid_thresholds = eval::default_grid();
        let floor = grid_thresholds.iter().copied().fold(f32::MAX, f32::min);
        let pairs = parent_pairs(&labels);
        // The scorer's ranking of a row (no label space): what extraction proposes.
        let ranking = ClassifierScorer::new(model.artifact.clone());
        let texts: Vec<&str> = job.validation.iter().map(|e| e.text.as_str()).collect();
        let samples = |boost: Boosts,
                       cal: Calibration,
                       implied: bool,
                       rule: DocumentRule|
         -> Vec<ScoredSentence> {
            let mut out: Vec<ScoredSentence> = probs
                .iter()
                .zip(&boosted)
                .map(|(row, b)| {
                    let mut p = adjust(row, b, boost, cal);
                    if implied {
                        imply_parents(&mut p, &pairs);
                    }
                    p
                })
                .zip(job.validation)
                .map(|(p, e)| ScoredSentence {
                    doc: e.doc.clone(),
                    gold: e.labels.iter().cloned().collect(),
                    // Each sentence's best, as the scorer proposes them to extraction.
                    scores: ranking
                        .label_scores(&p)
                        .into_iter()
                        .take(CANDIDATES_PER_SENTENCE)
                        .collect(),
                })
                .collect();
            ttpmap_core::protocol::sentences::apply_document_rule(&mut out, rule, &texts);
            for (s, e) in out.iter_mut().zip(job.validation) {
                // Scores under the lowest grid threshold can never be predicted.
                s.scores.retain(|(l, p)| *p >= floor && e.annotates(l));
            }
            out
        };
        let mut grid = Vec::new();
        for &software in BOOST_GRID {
            for &names in BOOST_GRID {
                let b = Boosts { software, names };
                let t = eval::tune_threshold(
                    &samples(b, Calibration::IDENTITY, false, DocumentRule::AnySentence),
                    &objective,
                    &grid_thresholds,
                )?;
                progress(&format!(
                    "software boost {software}, name boost {names}: validation per-document F1 \
                     {:.2}",
                    100.0 * t.objective_value
                ));
                grid.push((software, names, t.objective_value));
            }
        }
        let best = grid
            .iter()
            .copied()
            .fold((0.0f32, 0.0f32, f64::MIN), |acc, g| {
                if g.2 > acc.2 + 1e-9 {
                    g
                } else {
                    acc
                }
            });
        let best_boosts = Boosts {
            software: best.0,
            names: best.1,
        };
        let gold: Vec<BTreeSet<usize>> = job
            .validation
            .iter()
            .map(|e| {
                e.labels
                    .iter()
                    .filter_map(|l| index.get(l).copied())
                    .collect()
            })
            .collect();
        let mut pairs = Vec::with_capacity(probs.len() * labels.len());
        for (((row, b), g), e) in probs.iter().zip(&boosted).zip(&gold).zip(job.validation) {
            for (j, &p) in row.iter().enumerate() {
                // Labels the sentence's annotators did not consider say nothing either way.
                if e.annotates(&labels[j]) {
                    pairs.push((boosted_logit(p, j, b, best_boosts), g.contains(&j)));
                }
            }
        }
        let cal = Calibration::fit(&pairs);
        let log_loss = |c: Calibration| -> f64 {
            pairs
                .iter()
                .map(|&(z, y)| {
                    let p = (c.apply(z) as f64).clamp(1e-7, 1.0 - 1e-7);
                    -(if y { p.ln() } else { (1.0 - p).ln() })
                })
                .sum::<f64>()
                / pairs.len().max(1) as f64
        };
        let mut tuned: Option<(bool, DocumentRule, eval::TunedThreshold)> = None;
        for rule in DOCUMENT_RULES {
            for implied in [false, true] {
                let t = eval::tune_threshold(
                    &samples(best_boosts, cal, implied, rule),
                    &objective,
                    &grid_thresholds,
                )?;
                progress(&format!(
                    "implied parents {implied}, document rule {rule:?}: validation \
                     per-document F1 {:.2} at {:.2}",
                    100.0 * t.objective_value,
                    t.threshold
                ));
                manifest.validation.decision_grid.push((
                    implied,
                    rule,
                    t.threshold,
                    t.objective_value,
                ));
                if tuned
                    .as_ref()
                    .is_none_or(|b| t.objective_value > b.2.objective_value + 1e-9)
                {
                    tuned = Some((implied, rule, t));
                }
            }
        }
        let (implied, rule, tuned) = tuned.expect("candidates were tried");
        manifest.document_rule = rule;
        manifest.calibration = cal;
        manifest.software_boost = best.0;
        manifest.name_boost = best.1;
        manifest.implied_parents = implied;
        manifest.threshold = tuned.threshold;
        manifest.validation.per_document_f1 = tuned.objective_value;
        if let Some(path) = job.dump_validation {
            let mut out = String::new();
            let scored = samples(best_boosts, cal, implied, DocumentRule::AnySentence);
            for (s, e) in scored.iter().zip(job.validation) {
                let scores: Vec<_> = s.scores.iter().filter(|(_, p)| *p >= 0.02).collect();
                let line = serde_json::json!({
                    "doc": s.doc, "text": e.text, "gold": s.gold, "scores": scores
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
            std::fs::write(path, out).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let tuned_samples = samples(best_boosts, cal, implied, rule);
        for name in job.validation_reports.keys() {
            let prefix = format!("{name}:");
            let part: Vec<ScoredSentence> = tuned_samples
                .iter()
                .filter(|s| s.doc.starts_with(&prefix))
                .cloned()
                .collect();
            if part.is_empty() {
                continue;
            }
            let f = eval::tune_threshold(&part, &objective, &[tuned.threshold])?.objective_value;
            progress(&format!(
                "{name}: validation per-document F1 {:.2} at {:.2}",
                100.0 * f,
                tuned.threshold
            ));
            manifest.validation.per_dataset.insert(name.clone(), f);
        }
        manifest.validation.per_document_f1_without_software = grid[0].2;
        manifest.validation.boost_grid = grid.clone();
        manifest.validation.log_loss_uncalibrated = log_loss(Calibration::IDENTITY);
        manifest.validation.log_loss_calibrated = log_loss(cal);
        write_json(&tmp.join(MANIFEST), &manifest)
    })?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_is_raised_to_its_most_probable_sub_technique_only() {
        let labels: Vec<TechniqueId> = ["T1003", "T1059", "T1059.001", "T1059.003", "T1566.001"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // T1566.001's parent is not a label: nothing to raise.
        let pairs = parent_pairs(&labels);
        assert_eq!(pairs, vec![(2, 1), (3, 1)]);
        let mut row = vec![0.1, 0.2, 0.7, 0.4, 0.9];
        imply_parents(&mut row, &pairs);
        assert_eq!(row, vec![0.1, 0.7, 0.7, 0.4, 0.9]);
        // A parent above its sub-techniques keeps its own probability.
        let mut row = vec![0.1, 0.8, 0.7, 0.4, 0.9];
        imply_parents(&mut row, &pairs);
        assert_eq!(row[1], 0.8);
    }

    #[test]
    fn the_first_changed_layer_is_read_from_a_deltas_tensor_names() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let top = names(&[
            "head.queries",
            "encoder.encoder.layer.5.output.dense.weight",
            "encoder.encoder.layer.4.attention.self.query.bias",
        ]);
        assert_eq!(first_changed_layer(top.iter(), 6), 4);
        let emb = names(&[
            "encoder.embeddings.word_embeddings.weight",
            "encoder.encoder.layer.5.x",
        ]);
        assert_eq!(first_changed_layer(emb.iter(), 6), 0);
        assert_eq!(first_changed_layer(names(&["head.queries"]).iter(), 6), 6);
        // An encoder tensor of unknown place counts as changing everything.
        assert_eq!(
            first_changed_layer(names(&["encoder.pooler.dense.weight"]).iter(), 6),
            0
        );
    }

    #[test]
    fn platt_fit_recovers_a_known_scaling() {
        // Labels drawn deterministically so that P(y | z) = sigmoid(0.5 z - 1).
        let mut pairs = Vec::new();
        for i in 0..2000 {
            let z = -6.0 + 12.0 * (i as f32) / 2000.0;
            let p = sigmoid(0.5 * z - 1.0);
            for k in 0..20 {
                pairs.push((z, (k as f32 + 0.5) / 20.0 < p));
            }
        }
        let c = Calibration::fit(&pairs);
        assert!(
            (c.a - 0.5).abs() < 0.05 && (c.b + 1.0).abs() < 0.05,
            "{c:?}"
        );
        assert_eq!(Calibration::fit(&[(1.0, true)]), Calibration::IDENTITY);
    }

    #[test]
    fn software_evidence_raises_only_the_techniques_the_software_uses() {
        let mut sw = SoftwareIndex::default();
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        sw.add(
            "S0029",
            "PsExec",
            ["PsExec"].into_iter(),
            [t("T1021.002")].into(),
        );
        let labels = vec![t("T1021.002"), t("T1059.001")];
        let index = label_index(&labels);
        let b = labels_used(&sw.mentions("They ran PsExec."), &index);
        assert_eq!(b, [0].into());
        let found = Found {
            software: b,
            names: BTreeSet::new(),
            cited: BTreeSet::new(),
        };
        let boosts = Boosts {
            software: 1.0,
            names: 0.0,
        };
        let out = adjust(&[0.2, 0.2], &found, boosts, Calibration::IDENTITY);
        assert!(out[0] > 0.2 && (out[1] - 0.2).abs() < 1e-6);
        assert!((logit(0.5)).abs() < 1e-6 && logit(0.0).is_finite() && logit(1.0).is_finite());
    }

    #[test]
    fn a_named_technique_is_raised_by_the_name_boost_and_software_adds() {
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        let mut mentions = Mentions::default();
        mentions.names.add(
            "T1059.001",
            "PowerShell",
            ["PowerShell"].into_iter(),
            [t("T1059.001")].into(),
        );
        mentions.software.add(
            "S0029",
            "PsExec",
            ["PsExec"].into_iter(),
            [t("T1059.001")].into(),
        );
        let labels = vec![t("T1059.001"), t("T1053.005")];
        let index = label_index(&labels);
        let found = mentions.found("It ran powershell.exe -enc ...", &index);
        assert_eq!(found.names, [0].into());
        assert!(found.software.is_empty());
        let boosts = Boosts {
            software: 1.0,
            names: 2.0,
        };
        assert!((boosted_logit(0.5, 0, &found, boosts) - 2.0).abs() < 1e-6);
        assert!(boosted_logit(0.5, 1, &found, boosts).abs() < 1e-6);
        let both = mentions.found("PsExec launched PowerShell.", &index);
        assert!((boosted_logit(0.5, 0, &both, boosts) - 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_cited_id_is_kept_with_its_parent_and_says_why() {
        let t = |s: &str| TechniqueId::parse(s).unwrap();
        let mut mentions = Mentions::default();
        mentions.ids.add(t("T1059.001"), t("T1059.001"));
        mentions.ids.add(t("T1086"), t("T1059.001"));
        mentions.ids.add(t("T1547.014"), t("T1547.014"));
        // T1547.014 is not a label: its parent is raised instead.
        let labels = vec![t("T1059"), t("T1059.001"), t("T1547"), t("T1053.005")];
        let index = label_index(&labels);
        let scan = mentions.scan("Execution | T1086; Persistence | T1547.014 Active Setup");
        let found = scan.found(&index);
        assert_eq!(found.cited, [1, 2].into());
        let boosts = Boosts {
            software: 1.0,
            names: 1.0,
        };
        let mut out = adjust(
            &[0.01, 0.02, 0.03, 0.6],
            &found,
            boosts,
            Calibration::IDENTITY,
        );
        imply_parents(&mut out, &parent_pairs(&labels));
        assert_eq!(out[1], CITED_CONFIDENCE);
        assert_eq!(out[0], CITED_CONFIDENCE, "the parent is implied");
        assert_eq!(out[2], CITED_CONFIDENCE);
        assert!((out[3] - 0.6).abs() < 1e-6, "other labels keep their score");
        // A score above the floor is kept.
        let high = adjust(
            &[0.01, 0.999, 0.03, 0.6],
            &found,
            boosts,
            Calibration::IDENTITY,
        );
        assert!(high[1] > CITED_CONFIDENCE);
        let c = scan.citation_of(&t("T1059.001"), &index).unwrap();
        assert_eq!(
            (c.written.as_str(), c.current.as_str()),
            ("T1086", "T1059.001")
        );
        assert_eq!(
            scan.citation_of(&t("T1547"), &index)
                .unwrap()
                .written
                .as_str(),
            "T1547.014"
        );
        assert!(scan.citation_of(&t("T1053.005"), &index).is_none());
        // Nothing cited, nothing raised.
        assert!(mentions.found("No ids here.", &index).cited.is_empty());
    }
}
