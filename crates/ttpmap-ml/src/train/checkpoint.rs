//! Atomic safetensors checkpoints with string metadata.
//!
//! [`save_safetensors_atomic`] writes the whole file to a temporary file in the target's folder,
//! syncs it and renames it over the target, so the target path holds either the previous file
//! or the complete new one, never a partial write. [`load_safetensors`] validates the whole file
//! (header, offsets, sizes) before building tensors; its errors name the file. Supported dtypes:
//! f32, f64, i64, u32, u8.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors, View};

use crate::{Error, Result};

/// One tensor's bytes (little-endian) ready for serialisation.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn le_bytes<T: candle_core::WithDType, const N: usize>(
    t: &Tensor,
    to_bytes: fn(T) -> [u8; N],
) -> Result<Vec<u8>> {
    let values = t.flatten_all()?.to_vec1::<T>()?;
    Ok(values.into_iter().flat_map(to_bytes).collect())
}

fn raw_tensor(path: &Path, name: &str, t: &Tensor) -> Result<RawTensor> {
    let (dtype, data) = match t.dtype() {
        DType::F32 => (Dtype::F32, le_bytes(t, f32::to_le_bytes)?),
        DType::F64 => (Dtype::F64, le_bytes(t, f64::to_le_bytes)?),
        DType::I64 => (Dtype::I64, le_bytes(t, i64::to_le_bytes)?),
        DType::U32 => (Dtype::U32, le_bytes(t, u32::to_le_bytes)?),
        DType::U8 => (Dtype::U8, t.flatten_all()?.to_vec1::<u8>()?),
        other => {
            return Err(Error::CheckpointTensor {
                path: path.to_path_buf(),
                name: name.to_string(),
                problem: format!("dtype {other:?} is not supported (f32, f64, i64, u32, u8)"),
            })
        }
    };
    Ok(RawTensor {
        dtype,
        shape: t.dims().to_vec(),
        data,
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "checkpoint path {} has no file name",
            path.display()
        ))
    })?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(
        ".{}.tmp-{}-{n}",
        file_name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(tmp_name))
}

/// Writes `tensors` and `metadata` as a safetensors file at `path` via a temporary file in the
/// same folder and a rename (never a half-written file at `path`). Names must be unique.
pub fn save_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::CheckpointTensor {
                path: path.to_path_buf(),
                name: name.clone(),
                problem: "name given twice".to_string(),
            });
        }
        raw.push((name.as_str(), raw_tensor(path, name, t)?));
    }
    let info: Option<HashMap<String, String>> = if metadata.is_empty() {
        None
    } else {
        Some(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let bytes =
        safetensors::serialize(raw.iter().map(|(n, r)| (*n, r)), info).map_err(|source| {
            Error::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let tmp = temp_path(path)?;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn from_le<T: candle_core::WithDType, const N: usize>(
    data: &[u8],
    shape: &[usize],
    device: &Device,
    from_bytes: fn([u8; N]) -> T,
) -> Result<Tensor> {
    let values: Vec<T> = data
        .chunks_exact(N)
        .map(|c| from_bytes(c.try_into().expect("chunks_exact yields N bytes")))
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Reads a safetensors file: tensors by name (on `device`) and the metadata (empty if none).
/// Errors name the file: missing, unreadable, truncated, not safetensors, unsupported dtype.
pub fn load_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let st = SafeTensors::deserialize(&data).map_err(invalid)?;
    let (_, header) = SafeTensors::read_metadata(&data).map_err(invalid)?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors = HashMap::with_capacity(st.len());
    for (name, view) in st.iter() {
        let (bytes, shape) = (view.data(), view.shape());
        let t = match view.dtype() {
            Dtype::F32 => from_le(bytes, shape, device, f32::from_le_bytes)?,
            Dtype::F64 => from_le(bytes, shape, device, f64::from_le_bytes)?,
            Dtype::I64 => from_le(bytes, shape, device, i64::from_le_bytes)?,
            Dtype::U32 => from_le(bytes, shape, device, u32::from_le_bytes)?,
            Dtype::U8 => Tensor::from_vec(bytes.to_vec(), shape, device)?,
            other => {
                return Err(Error::CheckpointTensor {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    problem: format!("dtype {other:?} is not supported (f32, f64, i64, u32, u8)"),
                })
            }
        };
        tensors.insert(name.to_string(), t);
    }
    Ok((tensors, metadata))
}

/// Refuses to resume from a checkpoint whose `fingerprint` metadata (a hash of the training
/// config and data, written by the fit loop) is missing or differs from `expected`: resuming
/// it would mix two runs.
pub fn check_fingerprint(
    path: &Path,
    meta: &BTreeMap<String, String>,
    expected: &str,
) -> Result<()> {
    match meta.get("fingerprint") {
        Some(f) if f == expected => Ok(()),
        _ => Err(Error::Artifact {
            path: path.to_path_buf(),
            message: "checkpoint of a different training config or data; delete it or train \
                      without --resume"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        let cpu = Device::Cpu;
        vec![
            (
                "w".to_string(),
                Tensor::new(&[[1.5f32, -2.0, 3.25], [0.0, 1e-8, -7.0]], &cpu).unwrap(),
            ),
            ("step".to_string(), Tensor::new(&[42i64], &cpu).unwrap()),
            ("d".to_string(), Tensor::new(&[0.1f64, 0.2], &cpu).unwrap()),
            ("ids".to_string(), Tensor::new(&[7u32, 8, 9], &cpu).unwrap()),
            ("flags".to_string(), Tensor::new(&[1u8, 0], &cpu).unwrap()),
        ]
    }

    fn meta() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".to_string(), "ttpmap-ckpt-1".to_string()),
            ("epoch".to_string(), "3".to_string()),
        ])
    }

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        save_safetensors_atomic(&path, &sample(), &meta()).unwrap();
        let (tensors, metadata) = load_safetensors(&path, &Device::Cpu).unwrap();
        assert_eq!(metadata, meta());
        assert_eq!(tensors.len(), 5);
        assert_eq!(
            tensors["w"].to_vec2::<f32>().unwrap(),
            vec![vec![1.5, -2.0, 3.25], vec![0.0, 1e-8, -7.0]]
        );
        assert_eq!(tensors["step"].to_vec1::<i64>().unwrap(), vec![42]);
        assert_eq!(tensors["d"].to_vec1::<f64>().unwrap(), vec![0.1, 0.2]);
        assert_eq!(tensors["ids"].to_vec1::<u32>().unwrap(), vec![7, 8, 9]);
        assert_eq!(tensors["flags"].to_vec1::<u8>().unwrap(), vec![1, 0]);
        // Only the target is left in the folder (no temporary files).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt.safetensors")]);
        // candle's own loader reads it too.
        let by_candle = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(by_candle["ids"].to_vec1::<u32>().unwrap(), vec![7, 8, 9]);

        // Overwriting replaces the file; empty metadata loads as empty.
        save_safetensors_atomic(&path, &sample()[..1], &BTreeMap::new()).unwrap();
        let (tensors, metadata) = load_safetensors(&path, &Device::Cpu).unwrap();
        assert!(metadata.is_empty());
        assert_eq!(tensors.len(), 1);
    }

    #[test]
    fn failed_save_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // The folder does not exist: the temporary file cannot be created.
        let path = dir.path().join("missing").join("ckpt.safetensors");
        let err = save_safetensors_atomic(&path, &sample(), &meta()).unwrap_err();
        assert!(matches!(err, Error::Write { .. }));
        assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
        assert!(!path.exists());
        // The target is a folder: rename fails, the temporary file is removed.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        assert!(save_safetensors_atomic(&path, &sample(), &meta()).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken")]);
        // Unsupported dtype and duplicate names: errors before anything is written.
        let path = dir.path().join("bad.safetensors");
        let bf16 = Tensor::new(&[1f32], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let err = save_safetensors_atomic(&path, &[("h".to_string(), bf16)], &meta()).unwrap_err();
        assert!(err.to_string().contains("bad.safetensors") && err.to_string().contains('h'));
        let twice = vec![sample()[0].clone(), sample()[0].clone()];
        assert!(save_safetensors_atomic(&path, &twice, &meta()).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.safetensors");
        let err = load_safetensors(&missing, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("nope.safetensors"), "{err}");

        let good = dir.path().join("good.safetensors");
        save_safetensors_atomic(&good, &sample(), &meta()).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
        let err = load_safetensors(&truncated, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }));
        assert!(err.to_string().contains("truncated.safetensors"), "{err}");
        // Cut inside the header too.
        std::fs::write(&truncated, &bytes[..20]).unwrap();
        let err = load_safetensors(&truncated, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("truncated.safetensors"), "{err}");

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
        let err = load_safetensors(&garbage, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Safetensors { .. }));
        assert!(err.to_string().contains("garbage.safetensors"), "{err}");
        std::fs::write(&garbage, b"").unwrap();
        assert!(load_safetensors(&garbage, &Device::Cpu).is_err());
    }
}
