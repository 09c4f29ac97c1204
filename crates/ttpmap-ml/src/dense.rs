//! Dense (embedding) retrieval of ATT&CK techniques: a [`DenseIndex`] of embedded procedure
//! examples and technique documents, its on-disk cache, and [`DenseScorer`], a k-nearest
//! neighbour [`SentenceScorer`].
//!
//! Invariants:
//! - a [`DenseIndex`] holds `labels.len() == texts.len()` rows of `dim` unit-norm f32 values,
//!   stored contiguously (row-major) in one `Vec<f32>`;
//! - a cache file is used only when its format, model fingerprint, catalog fingerprint, example
//!   cap and shape all match; otherwise (or when it is unreadable or truncated) it is rebuilt.
//!   Files are written atomically (temporary file in the same folder, then rename);
//! - scoring: the `k` nearest rows (cosine) vote ([`VoteRule`]): with [`VoteRule::Max`] a
//!   technique's confidence is the **maximum** cosine among its neighbours, clipped to [0, 1]
//!   (negative similarity means no evidence); with [`VoteRule::Weighted`] it is the
//!   similarity-weighted share of the `k` neighbours that carry the technique. Evidence lists
//!   the nearest neighbour texts, truncated.
//! - an index may be extended with labelled sentences (e.g. a training split: one row per
//!   (sentence, label) pair) so that analysts' own labelled data votes next to ATT&CK's
//!   procedure examples; rows appended this way are not cached.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ttpmap_core::attack::Catalog;
use ttpmap_core::pipeline::{ScoreOptions, SentenceScorer};
use ttpmap_core::types::{Evidence, Prediction, TechniqueId};

use crate::dense_store::EmbeddingStore;
use crate::embed::Embedder;
use crate::model_dir::ModelDir;
use crate::{Error, Result};

/// Version of the cache file layout; bump when it changes.
const CACHE_FORMAT: u32 = 1;
/// First bytes of a cache file.
const MAGIC: &[u8; 8] = b"TTPDENSE";
/// Sentences embedded between two progress callbacks.
const BUILD_CHUNK: usize = 64;
/// Evidence texts are cut to this many characters.
const EVIDENCE_CHARS: usize = 120;

/// Identity of a cached index: what it was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexKey {
    /// [`model_fingerprint`] of the embedding model.
    pub model: String,
    /// [`Catalog::fingerprint`] of the ATT&CK bundle.
    pub catalog: String,
    /// Procedure examples kept per technique ([`index_entries`]).
    pub max_examples: usize,
}

impl IndexKey {
    /// The cache file for this key under `cache_dir` (`dense/<model>-<catalog>-m<N>.bin`).
    pub fn cache_path(&self, cache_dir: &Path) -> PathBuf {
        let short = |s: &str| s.chars().take(16).collect::<String>();
        cache_dir.join("dense").join(format!(
            "{}-{}-m{}.bin",
            short(&self.model),
            short(&self.catalog),
            self.max_examples
        ))
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    key: IndexKey,
    dim: usize,
    labels: Vec<TechniqueId>,
    texts: Vec<String>,
}

/// Embedded texts, each labelled with the technique it illustrates.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseIndex {
    dim: usize,
    labels: Vec<TechniqueId>,
    texts: Vec<String>,
    data: Vec<f32>,
}

/// Sha256 (hex) of the model's `config.json`, the weights file size and its first MiB: cheap,
/// and changes whenever the weights or architecture do.
pub fn model_fingerprint(md: &ModelDir) -> Result<String> {
    use std::io::Read;
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let config = md.path().join("config.json");
    let mut h = Sha256::new();
    h.update(std::fs::read(&config).map_err(read_err(&config))?);
    let weights = md.weights_path();
    let file = std::fs::File::open(weights).map_err(read_err(weights))?;
    let size = file.metadata().map_err(read_err(weights))?.len();
    h.update(size.to_le_bytes());
    let mut head = Vec::with_capacity(1 << 20);
    file.take(1 << 20)
        .read_to_end(&mut head)
        .map_err(read_err(weights))?;
    h.update(&head);
    Ok(hex::encode(h.finalize()))
}

/// The texts to index: one document per active technique, `"Name: first sentence of the
/// description"` (a sub-technique's name prefixed with its parent's), then at most
/// `max_examples` procedure examples per technique, in catalog order (deterministic).
pub fn index_entries(catalog: &Catalog, max_examples: usize) -> Vec<(TechniqueId, String)> {
    let mut out = Vec::new();
    for t in catalog.active_techniques() {
        let name = match t.parent.as_ref().and_then(|p| catalog.technique(p)) {
            Some(parent) => format!("{}: {}", parent.name, t.name),
            None => t.name.clone(),
        };
        out.push((
            t.id.clone(),
            format!("{name}: {}", first_sentence(&t.description)),
        ));
    }
    let active: BTreeSet<&TechniqueId> = catalog.active_techniques().map(|t| &t.id).collect();
    let mut per: BTreeMap<&TechniqueId, usize> = BTreeMap::new();
    for p in catalog.procedures() {
        if !active.contains(&p.technique) || p.description.trim().is_empty() {
            continue;
        }
        let n = per.entry(&p.technique).or_insert(0);
        if *n < max_examples {
            *n += 1;
            out.push((p.technique.clone(), p.description.trim().to_string()));
        }
    }
    out
}

/// The text up to and including the first `". "` (or all of it).
fn first_sentence(text: &str) -> &str {
    let text = text.trim();
    match text.find(". ") {
        Some(i) => &text[..=i],
        None => text,
    }
}

/// Rows for labelled sentences: one `(label, text)` entry per label of each sentence with at
/// least one label (unlabelled sentences carry no vote), in input order.
pub fn labelled_entries<'a>(
    sentences: impl IntoIterator<Item = (&'a str, &'a [TechniqueId])>,
) -> Vec<(TechniqueId, String)> {
    let mut out = Vec::new();
    for (text, labels) in sentences {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let mut seen = BTreeSet::new();
        for l in labels {
            if seen.insert(l) {
                out.push((l.clone(), text.to_string()));
            }
        }
    }
    out
}

impl DenseIndex {
    /// Appends the rows of `other` (same embedding width), e.g. labelled training sentences
    /// built with [`DenseIndex::build`] from [`labelled_entries`].
    pub fn extend(&mut self, other: DenseIndex) -> Result<()> {
        if other.dim != self.dim && !other.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "cannot append a dense index of width {} to one of width {}",
                other.dim, self.dim
            )));
        }
        self.labels.extend(other.labels);
        self.texts.extend(other.texts);
        self.data.extend(other.data);
        Ok(())
    }

    /// Embeds `entries` with `embedder`, calling `progress(done, total)` after each chunk.
    pub fn build(
        embedder: &Embedder,
        entries: &[(TechniqueId, String)],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<DenseIndex> {
        Ok(Self::build_with_store(embedder, entries, None, progress)?.0)
    }

    /// [`DenseIndex::build`] taking the vectors of texts that `store` holds from it (the caller
    /// checks that the store was made by `embedder`'s model); only the other texts are encoded.
    /// Returns the index and how many texts were encoded. `progress(done, total)` counts the
    /// stored texts as done from the start.
    pub fn build_with_store(
        embedder: &Embedder,
        entries: &[(TechniqueId, String)],
        store: Option<&EmbeddingStore>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(DenseIndex, usize)> {
        let dim = embedder.dim();
        let store = store.filter(|s| s.header().dim == dim);
        let mut rows: Vec<Option<Vec<f32>>> = entries
            .iter()
            .map(|(_, t)| store.and_then(|s| s.get(t)))
            .collect();
        let missing: Vec<usize> = (0..entries.len()).filter(|&i| rows[i].is_none()).collect();
        let stored = entries.len() - missing.len();
        progress(stored, entries.len());
        for (i, chunk) in missing.chunks(BUILD_CHUNK).enumerate() {
            let texts: Vec<&str> = chunk.iter().map(|&r| entries[r].1.as_str()).collect();
            for (&r, v) in chunk.iter().zip(embedder.encode(&texts)?) {
                rows[r] = Some(v);
            }
            progress(
                stored + (i * BUILD_CHUNK + chunk.len()).min(missing.len()),
                entries.len(),
            );
        }
        let mut data = Vec::with_capacity(entries.len() * dim);
        for v in rows.into_iter().flatten() {
            data.extend_from_slice(&v);
        }
        let index = DenseIndex {
            dim,
            labels: entries.iter().map(|(t, _)| t.clone()).collect(),
            texts: entries.iter().map(|(_, t)| t.clone()).collect(),
            data,
        };
        Ok((index, missing.len()))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the index has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row labels.
    pub fn labels(&self) -> &[TechniqueId] {
        &self.labels
    }

    /// Row texts.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// Row `i`'s unit-norm vector (`dim` values). Panics when `i >= len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine of `query` (unit norm, length `dim`) to every row.
    pub fn similarities(&self, query: &[f32]) -> Vec<f32> {
        self.data
            .chunks_exact(self.dim.max(1))
            .map(|row| row.iter().zip(query).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// Writes the index atomically to `path`: `TTPDENSE`, u32 LE header length, the JSON
    /// header (format, key, dim, labels, texts), then the rows as f32 LE.
    pub fn save(&self, path: &Path, key: &IndexKey) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let header = serde_json::to_vec(&Header {
            format: CACHE_FORMAT,
            key: key.clone(),
            dim: self.dim,
            labels: self.labels.clone(),
            texts: self.texts.clone(),
        })
        .map_err(|e| Error::InvalidArgument(format!("serialising the dense index: {e}")))?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| Error::InvalidArgument("dense index header over 4 GiB".into()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("dense"),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            f.write_all(&header_len.to_le_bytes())?;
            f.write_all(&header)?;
            for x in &self.data {
                f.write_all(&x.to_le_bytes())?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// Reads an index written by [`DenseIndex::save`], checking it was built for `key`.
    /// A missing, corrupt or mismatched file is an error (callers rebuild).
    pub fn load(path: &Path, key: &IndexKey) -> Result<DenseIndex> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |m: &str| Error::InvalidArgument(format!("dense cache {}: {m}", path.display()));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not a dense index file"));
        }
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(&bytes[8..12]);
        let hlen = u32::from_le_bytes(len4) as usize;
        let body = bytes.get(12..).unwrap_or_default();
        let Some(hbytes) = body.get(..hlen) else {
            return Err(bad("truncated header"));
        };
        let header: Header =
            serde_json::from_slice(hbytes).map_err(|e| bad(&format!("bad header: {e}")))?;
        if header.format != CACHE_FORMAT || &header.key != key {
            return Err(bad("built for another format, model, catalog or cap"));
        }
        let rows = header.labels.len();
        let floats = &body[hlen..];
        if header.texts.len() != rows || floats.len() != rows * header.dim * 4 {
            return Err(bad("row count or size does not match the header"));
        }
        let data = floats
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(DenseIndex {
            dim: header.dim,
            labels: header.labels,
            texts: header.texts,
            data,
        })
    }

    /// Loads the cached index for `key` under `cache_dir`, or builds it from `entries` and
    /// caches it (any load failure means a rebuild). A `store` made by the same model
    /// (`key.model`) provides the vectors of the texts it holds; another model's store is
    /// ignored. Returns the index and whether it was built.
    pub fn load_or_build(
        cache_dir: &Path,
        key: &IndexKey,
        embedder: &Embedder,
        entries: &[(TechniqueId, String)],
        store: Option<&EmbeddingStore>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(DenseIndex, bool)> {
        let path = key.cache_path(cache_dir);
        if let Ok(index) = DenseIndex::load(&path, key) {
            if index.dim == embedder.dim() {
                return Ok((index, false));
            }
        }
        let store = store.filter(|s| s.header().model == key.model);
        let (index, encoded) = DenseIndex::build_with_store(embedder, entries, store, progress)?;
        if store.is_some() {
            tracing::info!(
                "dense index: {} of {} texts from the shipped embeddings, {encoded} encoded",
                entries.len() - encoded,
                entries.len()
            );
        }
        index.save(&path, key)?;
        Ok((index, true))
    }
}

/// How the `k` nearest rows turn into technique confidences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoteRule {
    /// A technique scores the maximum cosine among its rows: one very close example is strong
    /// evidence, and scores stay comparable across techniques with many or few examples.
    #[default]
    Max,
    /// A technique scores `sum(cos of its rows) / sum(cos of all k rows)` (cosines clipped at
    /// 0): the similarity-weighted share of the neighbourhood, a calibrated-looking vote that
    /// suits dense labelled neighbours (training sentences) with a tuned threshold.
    Weighted,
}

/// k-nearest-neighbour technique scorer over a [`DenseIndex`].
///
/// Per sentence: embed, cosine to every row, take the `k` nearest rows; each technique among
/// them scores the maximum cosine of its rows (max vote: one very close example is strong
/// evidence, and it keeps scores comparable across techniques with many or few examples).
/// Confidence = cosine clipped to [0, 1]; `raw_score` is the cosine.
pub struct DenseScorer {
    embedder: Embedder,
    index: DenseIndex,
    source: PathBuf,
    /// Nearest neighbours that vote. Default 10.
    pub k: usize,
    /// At most this many techniques per sentence. Default 10.
    pub top_k: usize,
    /// When set, only these techniques are proposed; a sub-technique outside it counts as its
    /// parent when the parent is in it (as [`ttpmap_core::pipeline::Bm25Scorer`]).
    pub label_space: Option<BTreeSet<TechniqueId>>,
    /// List the nearest example texts as evidence. Default true.
    pub with_evidence: bool,
    /// How neighbours vote. Default [`VoteRule::Max`].
    pub vote: VoteRule,
}

impl DenseScorer {
    /// Default extraction threshold for the max vote: the cosine tuned on the training splits
    /// with all-MiniLM-L6-v2 (TRAM2 0.57, AnnoCTR 0.56; `results/dense-*-train.json`).
    pub const DEFAULT_THRESHOLD: f32 = 0.56;

    /// A scorer; `source` (the model folder) names errors.
    pub fn new(embedder: Embedder, index: DenseIndex, source: impl Into<PathBuf>) -> Self {
        DenseScorer {
            embedder,
            index,
            source: source.into(),
            k: 10,
            top_k: 10,
            label_space: None,
            with_evidence: true,
            vote: VoteRule::Max,
        }
    }

    /// The index in use.
    pub fn index(&self) -> &DenseIndex {
        &self.index
    }

    /// The embedder (to build rows for [`DenseScorer::add_rows`]).
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Appends rows (e.g. labelled training sentences) to the index in use.
    pub fn add_rows(&mut self, rows: DenseIndex) -> Result<()> {
        self.index.extend(rows)
    }

    /// Embeds labelled sentences (one row per label, see [`labelled_entries`]) and appends them
    /// as neighbours that vote next to ATT&CK's examples; `progress(done, total)` after each
    /// chunk. Returns the rows added.
    pub fn add_labelled_sentences<'a>(
        &mut self,
        sentences: impl IntoIterator<Item = (&'a str, &'a [TechniqueId])>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize> {
        let entries = labelled_entries(sentences);
        let rows = DenseIndex::build(&self.embedder, &entries, progress)?;
        self.add_rows(rows)?;
        Ok(entries.len())
    }

    /// Row labels after the label-space mapping (`None`: row excluded).
    fn row_labels(&self) -> Vec<Option<TechniqueId>> {
        self.index
            .labels
            .iter()
            .map(|t| ttpmap_core::pipeline::in_label_space(t, self.label_space.as_ref()))
            .collect()
    }

    fn predictions(&self, query: &[f32], labels: &[Option<TechniqueId>]) -> Vec<Prediction> {
        let sims = self.index.similarities(query);
        let mut rows: Vec<usize> = (0..sims.len()).filter(|&i| labels[i].is_some()).collect();
        let k = self.k.min(rows.len());
        if k == 0 {
            return Vec::new();
        }
        let cmp = |a: &usize, b: &usize| sims[*b].total_cmp(&sims[*a]).then(a.cmp(b));
        rows.select_nth_unstable_by(k - 1, cmp);
        rows.truncate(k);
        rows.sort_by(cmp);
        // Rows are best first: a technique's first row carries its max cosine.
        // (technique, max cosine, sum of clipped cosines, evidence)
        let mut by_tech: Vec<(TechniqueId, f32, f32, Vec<String>)> = Vec::new();
        let mut total = 0.0f32;
        for &r in &rows {
            let Some(t) = &labels[r] else { continue };
            let w = sims[r].max(0.0);
            total += w;
            let text = truncate(&self.index.texts[r], EVIDENCE_CHARS);
            match by_tech.iter_mut().find(|(id, _, _, _)| id == t) {
                Some((_, _, sum, reasons)) => {
                    *sum += w;
                    if !reasons.contains(&text) {
                        reasons.push(text);
                    }
                }
                None => by_tech.push((t.clone(), sims[r], w, vec![text])),
            }
        }
        let mut scored: Vec<(TechniqueId, f32, f32, Vec<String>)> = by_tech
            .into_iter()
            .map(|(t, cos, sum, reasons)| {
                let score = match self.vote {
                    VoteRule::Max => cos.clamp(0.0, 1.0),
                    VoteRule::Weighted if total > 0.0 => (sum / total).clamp(0.0, 1.0),
                    VoteRule::Weighted => 0.0,
                };
                (t, score, cos, reasons)
            })
            .collect();
        // Stable: ties keep nearest-first order.
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
            .into_iter()
            .take(self.top_k)
            .map(|(technique, score, cos, reasons)| Prediction {
                technique,
                score,
                raw_score: cos,
                evidence: Evidence {
                    method: "dense".into(),
                    reasons: if self.with_evidence {
                        reasons.into_iter().take(3).collect()
                    } else {
                        Vec::new()
                    },
                },
            })
            .collect()
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl SentenceScorer for DenseScorer {
    fn name(&self) -> &str {
        "dense"
    }

    fn score(&self, sentences: &[&str]) -> ttpmap_core::Result<Vec<Vec<Prediction>>> {
        let vectors = self
            .embedder
            .encode(sentences)
            .map_err(|e| ttpmap_core::Error::model(&self.source, "embedding sentences", e))?;
        let labels = self.row_labels();
        Ok(vectors
            .iter()
            .map(|v| self.predictions(v, &labels))
            .collect())
    }

    fn default_threshold(&self) -> f32 {
        Self::DEFAULT_THRESHOLD
    }

    fn configure(&mut self, options: &ScoreOptions) {
        // Max-cosine voting: more neighbours only add lower-ranked candidates, so enough
        // neighbours to fill `top_k` techniques leaves the ranking unchanged. A weighted
        // vote keeps its neighbourhood size (it is the vote's denominator).
        if self.vote == VoteRule::Max {
            self.k = self.k.max(3 * options.top_k);
        }
        options.store(
            &mut self.top_k,
            &mut self.with_evidence,
            &mut self.label_space,
        );
    }

    ttpmap_core::impl_scorer_any!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn shared_dir() -> PathBuf {
        std::env::var_os("TTPMAP_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
    }

    fn minilm() -> (ModelDir, Embedder) {
        let path = shared_dir().join("models/all-MiniLM-L6-v2");
        assert!(
            path.join("config.json").is_file(),
            "shared model missing at {} (set TTPMAP_SHARED)",
            path.display()
        );
        let md = ModelDir::open(&path).expect("open MiniLM");
        let emb = Embedder::from_model_dir(&md, Default::default(), &Device::Cpu).unwrap();
        (md, emb)
    }

    fn tid(s: &str) -> TechniqueId {
        s.parse().unwrap()
    }

    fn entries() -> Vec<(TechniqueId, String)> {
        [
            ("T1003.001", "OS Credential Dumping: LSASS Memory: Adversaries may attempt to access credential material stored in the process memory of the Local Security Authority Subsystem Service (LSASS)."),
            ("T1003.001", "APT28 regularly deploys Mimikatz to dump credentials from LSASS process memory."),
            ("T1566.001", "Phishing: Spearphishing Attachment: Adversaries may send spearphishing emails with a malicious attachment."),
            ("T1566.001", "The group sent emails with malicious Word documents attached to targets."),
            ("T1486", "Data Encrypted for Impact: Adversaries may encrypt data on target systems to interrupt availability."),
            ("T1486", "The ransomware encrypts files on the victim's drives and demands a ransom."),
            ("T1059.001", "Command and Scripting Interpreter: PowerShell: Adversaries may abuse PowerShell commands and scripts for execution."),
        ]
        .iter()
        .map(|(t, s)| (tid(t), s.to_string()))
        .collect()
    }

    #[test]
    fn lsass_sentence_votes_credential_dumping_first_and_cache_round_trips() {
        let (md, emb) = minilm();
        let entries = entries();
        let mut calls = Vec::new();
        let index = DenseIndex::build(&emb, &entries, &mut |d, t| calls.push((d, t))).unwrap();
        assert_eq!(calls.first(), Some(&(0, 7)));
        assert_eq!(calls.last(), Some(&(7, 7)));
        assert_eq!(index.len(), 7);

        let mut scorer = DenseScorer::new(emb, index.clone(), md.path());
        let out = scorer
            .score(&["The actor dumped LSASS memory with Mimikatz", ""])
            .unwrap();
        assert_eq!(out.len(), 2);
        let first = &out[0][0];
        assert_eq!(first.technique, tid("T1003.001"));
        assert!(first.score > 0.5 && first.score <= 1.0, "{}", first.score);
        assert!(out[0].windows(2).all(|w| w[0].score >= w[1].score));
        assert!(first.evidence.reasons[0].contains("Mimikatz"));
        // Label space: the sub-technique falls back to its parent.
        scorer.label_space = Some([tid("T1003"), tid("T1486")].into_iter().collect());
        let out = scorer
            .score(&["The actor dumped LSASS memory with Mimikatz"])
            .unwrap();
        assert_eq!(out[0][0].technique, tid("T1003"));
        assert!(out[0].iter().all(|p| p.technique != tid("T1566.001")));

        // Cache round trip, key mismatch and corruption.
        let dir = tempfile::tempdir().unwrap();
        let key = IndexKey {
            model: model_fingerprint(&md).unwrap(),
            catalog: "cat".into(),
            max_examples: 20,
        };
        assert_eq!(key.model.len(), 64);
        let path = key.cache_path(dir.path());
        index.save(&path, &key).unwrap();
        assert_eq!(DenseIndex::load(&path, &key).unwrap(), index);
        let other = IndexKey {
            catalog: "other".into(),
            ..key.clone()
        };
        assert!(DenseIndex::load(&path, &other).is_err());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(DenseIndex::load(&path, &key).is_err());
        // load_or_build rebuilds the truncated file and rewrites it.
        let (md2, emb2) = minilm();
        let _ = md2;
        let (rebuilt, built) =
            DenseIndex::load_or_build(dir.path(), &key, &emb2, &entries, None, &mut |_, _| {})
                .unwrap();
        assert!(built);
        assert_eq!(rebuilt.labels(), index.labels());
        let (cached, built) =
            DenseIndex::load_or_build(dir.path(), &key, &emb2, &entries, None, &mut |_, _| {})
                .unwrap();
        assert!(!built);
        assert_eq!(cached, rebuilt);
    }

    #[test]
    fn stored_texts_are_not_encoded_again_and_another_models_store_is_ignored() {
        let (md, emb) = minilm();
        let entries = entries();
        let full = DenseIndex::build(&emb, &entries, &mut |_, _| {}).unwrap();
        let fingerprint = model_fingerprint(&md).unwrap();
        // A store holding every text but the last.
        let header = crate::dense_store::StoreHeader {
            format: 0,
            model: fingerprint.clone(),
            model_name: "all-MiniLM-L6-v2".into(),
            dim: 0,
            rows: 0,
            source: "test".into(),
            command: "test".into(),
        };
        let held = entries.len() - 1;
        let store = EmbeddingStore::new(
            header.clone(),
            full.dim(),
            (0..held).map(|i| {
                (
                    full.texts()[i].as_str(),
                    &full.data[i * full.dim()..(i + 1) * full.dim()],
                )
            }),
        )
        .unwrap();
        let mut calls = Vec::new();
        let (index, encoded) =
            DenseIndex::build_with_store(&emb, &entries, Some(&store), &mut |d, t| {
                calls.push((d, t))
            })
            .unwrap();
        assert_eq!(encoded, 1, "only the text the store lacks is encoded");
        assert_eq!(calls.first(), Some(&(held, entries.len())));
        assert_eq!(calls.last(), Some(&(entries.len(), entries.len())));
        assert_eq!(index.labels(), full.labels());
        assert_eq!(index.texts(), full.texts());
        let d = full.dim();
        for i in 0..entries.len() {
            let cos: f32 = index.data[i * d..(i + 1) * d]
                .iter()
                .zip(&full.data[i * d..(i + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            assert!(cos > 0.9999, "row {i}: cosine {cos} to the encoded vector");
        }
        // The encoded row is exactly what build gives.
        assert_eq!(index.data[held * d..], full.data[held * d..]);

        // load_or_build uses the store only when it was made by the key's model.
        let dir = tempfile::tempdir().unwrap();
        let key = IndexKey {
            model: fingerprint,
            catalog: "cat".into(),
            max_examples: 20,
        };
        let (a, built) = DenseIndex::load_or_build(
            dir.path(),
            &key,
            &emb,
            &entries,
            Some(&store),
            &mut |_, _| {},
        )
        .unwrap();
        assert!(built);
        assert_eq!(a, index);
        let flat = vec![1.0 / (d as f32).sqrt(); d];
        let other = EmbeddingStore::new(
            crate::dense_store::StoreHeader {
                model: "another model".into(),
                ..header
            },
            d,
            (0..held).map(|i| (full.texts()[i].as_str(), flat.as_slice())),
        )
        .unwrap();
        let key2 = IndexKey {
            catalog: "cat2".into(),
            ..key
        };
        let (b, _) = DenseIndex::load_or_build(
            dir.path(),
            &key2,
            &emb,
            &entries,
            Some(&other),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(b, full, "another model's vectors are not used");
    }

    /// A 4-row index in the model's width with hand-made unit vectors: rows 0-1 (T1486) point
    /// at e0, row 2 (T1003) at (e0 + e1)/sqrt 2, row 3 (T1566) at e1.
    fn toy_index(dim: usize) -> DenseIndex {
        let mut data = vec![0.0f32; 4 * dim];
        data[0] = 1.0;
        data[dim] = 1.0;
        let h = std::f32::consts::FRAC_1_SQRT_2;
        data[2 * dim] = h;
        data[2 * dim + 1] = h;
        data[3 * dim + 1] = 1.0;
        DenseIndex {
            dim,
            labels: vec![tid("T1486"), tid("T1486"), tid("T1003"), tid("T1566")],
            texts: (0..4).map(|i| format!("row {i}")).collect(),
            data,
        }
    }

    #[test]
    fn weighted_vote_is_the_similarity_share_and_extend_appends_rows() {
        let (md, emb) = minilm();
        let dim = emb.dim();
        let mut scorer = DenseScorer::new(emb, toy_index(dim), md.path());
        scorer.k = 3;
        let mut q = vec![0.0f32; dim];
        q[0] = 1.0;
        let labels = scorer.row_labels();
        // Max vote: cosines 1, 1, 0.7071 (row 3 is outside k = 3).
        let max = scorer.predictions(&q, &labels);
        assert_eq!(max.len(), 2);
        assert_eq!(max[0].technique, tid("T1486"));
        assert!((max[0].score - 1.0).abs() < 1e-6);
        assert!((max[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Weighted: T1486 = 2 / (2 + 0.7071) = 0.7388, T1003 = 0.7071 / 2.7071 = 0.2612.
        scorer.vote = VoteRule::Weighted;
        let w = scorer.predictions(&q, &labels);
        assert_eq!(w[0].technique, tid("T1486"));
        assert!((w[0].score - 0.738_8).abs() < 1e-4, "{}", w[0].score);
        assert!((w[1].score - 0.261_2).abs() < 1e-4, "{}", w[1].score);
        assert!((w.iter().map(|p| p.score).sum::<f32>() - 1.0).abs() < 1e-5);
        // The evidence of a technique lists each neighbour text once.
        assert_eq!(w[0].evidence.reasons, vec!["row 0", "row 1"]);

        // Appending labelled sentences: one row per distinct label, empty texts skipped.
        let a = [tid("T1003"), tid("T1003"), tid("T1566")];
        let entries = labelled_entries([
            ("Dumped LSASS. ", &a[..]),
            ("   ", &a[..1]),
            ("nothing here", &[][..]),
        ]);
        assert_eq!(
            entries,
            vec![
                (tid("T1003"), "Dumped LSASS.".to_string()),
                (tid("T1566"), "Dumped LSASS.".to_string())
            ]
        );
        let mut index = toy_index(dim);
        index.extend(toy_index(dim)).unwrap();
        assert_eq!(index.len(), 8);
        assert_eq!(index.data.len(), 8 * dim);
        let err = index.extend(toy_index(dim + 1)).unwrap_err();
        assert!(err.to_string().contains("width"), "{err}");
    }

    #[test]
    fn garbage_cache_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let key = IndexKey {
            model: "m".into(),
            catalog: "c".into(),
            max_examples: 1,
        };
        std::fs::write(&path, b"TTPDENSE\xff\xff\xff\x7f{").unwrap();
        assert!(DenseIndex::load(&path, &key).is_err());
        std::fs::write(&path, b"hello").unwrap();
        assert!(DenseIndex::load(&path, &key).is_err());
    }

    #[test]
    fn first_sentence_and_truncate() {
        assert_eq!(first_sentence("A b. C d. E"), "A b.");
        assert_eq!(first_sentence(" Only one "), "Only one");
        assert_eq!(truncate("abcdef", 3), "abc...");
        assert_eq!(truncate("ab", 3), "ab");
    }
}
