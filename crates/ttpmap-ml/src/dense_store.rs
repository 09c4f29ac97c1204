//! Precomputed text embeddings that ship with the project, so that the dense index over
//! ATT&CK's texts builds without encoding them (issue 15, cold start).
//!
//! An [`EmbeddingStore`] maps the sha256 of a text to its embedding by one model, identified
//! by [`crate::dense::model_fingerprint`]. Vectors are stored as int8 with one f32 scale per
//! row (`x ≈ q * scale`, `scale = max|x| / 127`) and renormalised to unit length when read:
//! the cosine of a stored vector to its source is above 0.9999 (test
//! `quantised_rows_keep_their_direction`). [`DenseIndex::build_with_store`] takes a store's
//! rows for the texts it holds and encodes only the others, so an ATT&CK version that differs
//! from the one the store was made from costs only its new or edited texts.
//!
//! File layout (little-endian): `TTPEMBST`, u32 header length, the JSON [`StoreHeader`], then
//! `rows` x 16 bytes (the first half of each text's sha256), `rows` f32 scales, and `rows` x
//! `dim` int8 values. Files are written atomically.
//!
//! [`DenseIndex::build_with_store`]: crate::dense::DenseIndex::build_with_store

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// First bytes of a store file.
const MAGIC: &[u8; 8] = b"TTPEMBST";
/// Version of the file layout; bump when it changes.
const FORMAT: u32 = 1;
/// Bytes of a text's sha256 kept as its key.
const KEY_BYTES: usize = 16;

/// What a store file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHeader {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// [`crate::dense::model_fingerprint`] of the model that made the vectors.
    pub model: String,
    /// Human-readable model name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub model_name: String,
    /// Embedding width.
    pub dim: usize,
    /// Number of rows.
    pub rows: usize,
    /// Where the texts came from (e.g. the ATT&CK version and bundle fingerprint).
    pub source: String,
    /// The command that made the file.
    pub command: String,
}

/// Int8 text embeddings keyed by text (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingStore {
    header: StoreHeader,
    index: HashMap<[u8; KEY_BYTES], usize>,
    keys: Vec<[u8; KEY_BYTES]>,
    scales: Vec<f32>,
    values: Vec<i8>,
}

/// The store key of `text` (trimmed, as the dense index stores its texts).
fn text_key(text: &str) -> [u8; KEY_BYTES] {
    let digest = Sha256::digest(text.trim().as_bytes());
    let mut key = [0u8; KEY_BYTES];
    key.copy_from_slice(&digest[..KEY_BYTES]);
    key
}

impl EmbeddingStore {
    /// A store of `texts` with their unit-norm `vectors` (same order, all of width `dim`);
    /// a repeated text keeps its first vector. `header.rows`, `dim` and `format` are set here.
    pub fn new<'a>(
        mut header: StoreHeader,
        dim: usize,
        rows: impl IntoIterator<Item = (&'a str, &'a [f32])>,
    ) -> Result<Self> {
        let mut store = EmbeddingStore {
            header: StoreHeader::default_for(dim),
            index: HashMap::new(),
            keys: Vec::new(),
            scales: Vec::new(),
            values: Vec::new(),
        };
        for (text, v) in rows {
            if v.len() != dim {
                return Err(Error::InvalidArgument(format!(
                    "embedding store: a vector of width {} among width {dim}",
                    v.len()
                )));
            }
            let key = text_key(text);
            if store.index.contains_key(&key) {
                continue;
            }
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            store.index.insert(key, store.keys.len());
            store.keys.push(key);
            store.scales.push(scale);
            store.values.extend(
                v.iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
            );
        }
        header.format = FORMAT;
        header.dim = dim;
        header.rows = store.keys.len();
        store.header = header;
        Ok(store)
    }

    /// What the store says about itself.
    pub fn header(&self) -> &StoreHeader {
        &self.header
    }

    /// Number of texts held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the store holds no text.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The unit-norm embedding of `text`, when the store holds it.
    pub fn get(&self, text: &str) -> Option<Vec<f32>> {
        let &row = self.index.get(&text_key(text))?;
        let dim = self.header.dim;
        let scale = self.scales[row];
        let mut v: Vec<f32> = self.values[row * dim..(row + 1) * dim]
            .iter()
            .map(|&q| f32::from(q) * scale)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Some(v)
    }

    /// The file's bytes (layout in the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(&self.header)
            .map_err(|e| Error::InvalidArgument(format!("serialising the embedding store: {e}")))?;
        let hlen = u32::try_from(header.len())
            .map_err(|_| Error::InvalidArgument("embedding store header over 4 GiB".into()))?;
        let mut out = Vec::with_capacity(
            12 + header.len() + self.len() * (KEY_BYTES + 4) + self.values.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&hlen.to_le_bytes());
        out.extend_from_slice(&header);
        for k in &self.keys {
            out.extend_from_slice(k);
        }
        for s in &self.scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend(self.values.iter().map(|&q| q as u8));
        Ok(out)
    }

    /// Writes the store atomically to `path` (temporary file in the same folder, then rename),
    /// creating its folder.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        ttpmap_core::attack::write_atomically(path, &bytes)?;
        Ok(())
    }

    /// Reads a store from `bytes`; `source` (a file, or where embedded bytes came from) names
    /// errors. A wrong magic, header, layout version or size is an error.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self> {
        let bad = |message: String| Error::Artifact {
            path: source.to_path_buf(),
            message,
        };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not an embedding store (no TTPEMBST header)".into()));
        }
        let hlen = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let body = &bytes[12..];
        let hbytes = body
            .get(..hlen)
            .ok_or_else(|| bad("truncated header".into()))?;
        let header: StoreHeader =
            serde_json::from_slice(hbytes).map_err(|e| bad(format!("invalid header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!(
                "layout version {} (this build reads {FORMAT})",
                header.format
            )));
        }
        let (rows, dim) = (header.rows, header.dim);
        let expected = rows
            .checked_mul(KEY_BYTES + 4 + dim)
            .ok_or_else(|| bad("row count out of range".into()))?;
        let data = &body[hlen..];
        if data.len() != expected {
            return Err(bad(format!(
                "{} bytes of rows, expected {expected} for {rows} rows of width {dim} (truncated or \
                 corrupt)",
                data.len()
            )));
        }
        let (key_bytes, rest) = data.split_at(rows * KEY_BYTES);
        let (scale_bytes, value_bytes) = rest.split_at(rows * 4);
        let keys: Vec<[u8; KEY_BYTES]> = key_bytes
            .chunks_exact(KEY_BYTES)
            .map(|c| {
                let mut k = [0u8; KEY_BYTES];
                k.copy_from_slice(c);
                k
            })
            .collect();
        let scales: Vec<f32> = scale_bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if scales.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(bad("a row scale is not a positive number".into()));
        }
        let index: HashMap<[u8; KEY_BYTES], usize> =
            keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        if index.len() != rows {
            return Err(bad("a text appears twice".into()));
        }
        Ok(EmbeddingStore {
            header,
            index,
            keys,
            scales,
            values: value_bytes.iter().map(|&b| b as i8).collect(),
        })
    }

    /// Reads the store file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }
}

impl StoreHeader {
    fn default_for(dim: usize) -> Self {
        StoreHeader {
            format: FORMAT,
            model: String::new(),
            model_name: String::new(),
            dim,
            rows: 0,
            source: String::new(),
            command: String::new(),
        }
    }
}

/// Where embedded store bytes came from, for errors: `name (compiled into the binary)`.
pub fn embedded_source(name: &str) -> PathBuf {
    PathBuf::from(format!("{name} (compiled into the binary)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> StoreHeader {
        StoreHeader {
            model: "fp".into(),
            model_name: "test".into(),
            source: "unit test".into(),
            command: "none".into(),
            ..StoreHeader::default_for(0)
        }
    }

    fn unit(seed: u32, dim: usize) -> Vec<f32> {
        // Deterministic pseudo-random values with one larger entry (max/std about 3.5, as in
        // sentence embeddings).
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) - 0.5
            })
            .collect();
        v[seed as usize % dim] += 0.6;
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn quantised_rows_keep_their_direction() {
        let dim = 384;
        let vs: Vec<Vec<f32>> = (0..50).map(|i| unit(i, dim)).collect();
        let texts: Vec<String> = (0..50).map(|i| format!("text {i}")).collect();
        let store = EmbeddingStore::new(
            header(),
            dim,
            texts
                .iter()
                .map(|t| t.as_str())
                .zip(vs.iter().map(|v| v.as_slice())),
        )
        .unwrap();
        assert_eq!(store.len(), 50);
        for (t, v) in texts.iter().zip(&vs) {
            let q = store.get(t).expect("stored");
            let cos: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
            assert!(cos > 0.9999, "{t}: cosine {cos}");
        }
        // Keys are the trimmed text.
        assert!(store.get("  text 3 \n").is_some());
        assert!(store.get("text 50").is_none());
    }

    #[test]
    fn bytes_round_trip_and_file_is_written_atomically() {
        let dim = 8;
        let a = unit(1, dim);
        let b = unit(2, dim);
        let store = EmbeddingStore::new(
            header(),
            dim,
            [
                ("a", a.as_slice()),
                ("b", b.as_slice()),
                ("a", b.as_slice()),
            ],
        )
        .unwrap();
        assert_eq!(store.len(), 2, "a repeated text keeps its first vector");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/store.ttpemb");
        store.write(&path).unwrap();
        let back = EmbeddingStore::read(&path).unwrap();
        assert_eq!(back, store);
        assert_eq!(back.header().rows, 2);
        assert_eq!(back.header().dim, dim);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn bad_store_bytes_are_errors_naming_the_source() {
        let dim = 4;
        let v = unit(3, dim);
        let good = EmbeddingStore::new(header(), dim, [("x", v.as_slice())])
            .unwrap()
            .to_bytes()
            .unwrap();
        let src = Path::new("models/embeddings/x.ttpemb");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("not a store", b"hello world, not a store".to_vec()),
            ("truncated", good[..good.len() - 3].to_vec()),
            ("header only", good[..20].to_vec()),
            ("extra bytes", [good.clone(), vec![0]].concat()),
        ];
        for (what, bytes) in cases {
            let err = EmbeddingStore::from_bytes(&bytes, src)
                .unwrap_err()
                .to_string();
            assert!(err.contains("models/embeddings/x.ttpemb"), "{what}: {err}");
        }
        let mut v2 = good.clone();
        let pat = b"\"format\":1";
        let at = v2
            .windows(pat.len())
            .position(|w| w == pat)
            .expect("format in header");
        v2[at + pat.len() - 1] = b'9';
        let err = EmbeddingStore::from_bytes(&v2, src)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layout version 9"), "{err}");
    }
}
