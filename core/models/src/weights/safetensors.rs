//! Safetensors directories: one file or shards listed in
//! `model.safetensors.index.json`, memory-mapped, zero-copy views.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{TensorView, WeightDType, WeightError, WeightSource};

struct Entry {
    shard: usize,
    dtype: WeightDType,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// A directory of safetensors weights.
pub struct SafetensorsSource {
    maps: Vec<memmap2::Mmap>,
    entries: HashMap<String, Entry>,
    total: u64,
}

fn fmt_err(path: &Path, reason: impl Into<String>) -> WeightError {
    WeightError::Format {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn map_dtype(d: Dtype) -> Option<WeightDType> {
    Some(match d {
        Dtype::F32 => WeightDType::F32,
        Dtype::F16 => WeightDType::F16,
        Dtype::BF16 => WeightDType::BF16,
        Dtype::F64 => WeightDType::F64,
        Dtype::I32 => WeightDType::I32,
        Dtype::I64 => WeightDType::I64,
        Dtype::I8 => WeightDType::I8,
        Dtype::U8 => WeightDType::U8,
        _ => return None,
    })
}

impl SafetensorsSource {
    /// Open `dir/model.safetensors`, or every shard named by `dir/model.safetensors.index.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<SafetensorsSource, WeightError> {
        let dir = dir.as_ref();
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| WeightError::Io {
                path: index_path.display().to_string(),
                source,
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| fmt_err(&index_path, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| fmt_err(&index_path, "no weight_map"))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(fmt_err(
                    dir,
                    "no model.safetensors or model.safetensors.index.json in the model directory",
                ));
            }
            vec![single]
        };
        let mut maps = Vec::new();
        let mut entries = HashMap::new();
        let mut total = 0u64;
        for path in files {
            let file = std::fs::File::open(&path).map_err(|source| WeightError::Io {
                path: path.display().to_string(),
                source,
            })?;
            // SAFETY: read-only map of a weight file that Kiln never writes.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| WeightError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let st = SafeTensors::deserialize(&map).map_err(|e| fmt_err(&path, e.to_string()))?;
            for (name, view) in st.tensors() {
                let dtype = map_dtype(view.dtype()).ok_or_else(|| {
                    fmt_err(
                        &path,
                        format!("tensor {name} has unsupported dtype {:?}", view.dtype()),
                    )
                })?;
                let data = view.data();
                total += data.len() as u64;
                let entry = Entry {
                    shard: maps.len(),
                    dtype,
                    shape: view.shape().to_vec(),
                    start: data.as_ptr() as usize - map.as_ptr() as usize,
                    len: data.len(),
                };
                entries.insert(name, entry);
            }
            maps.push(map);
        }
        Ok(SafetensorsSource {
            maps,
            entries,
            total,
        })
    }
}

impl WeightSource for SafetensorsSource {
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError> {
        Ok(self.entries.get(name).map(|e| TensorView {
            name: name.to_string(),
            dtype: e.dtype,
            shape: e.shape.clone(),
            data: Cow::Borrowed(&self.maps[e.shard][e.start..e.start + e.len]),
        }))
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }

    fn total_bytes(&self) -> u64 {
        self.total
    }
}
