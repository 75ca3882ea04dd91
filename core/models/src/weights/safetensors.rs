//! Safetensors checkpoints: one `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, memory-mapped; tensors are zero-copy views.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{TensorView, WeightDType, WeightError, WeightSource};

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct Entry {
    shard: usize,
    dtype: WeightDType,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// A safetensors checkpoint (one file or several shards).
pub struct SafetensorsSource {
    files: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    entries: HashMap<String, Entry>,
    total: u64,
}

impl std::fmt::Debug for SafetensorsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsSource")
            .field("files", &self.files)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn map_dtype(d: Dtype) -> Option<WeightDType> {
    Some(match d {
        Dtype::F32 => WeightDType::F32,
        Dtype::F16 => WeightDType::F16,
        Dtype::BF16 => WeightDType::BF16,
        Dtype::F64 => WeightDType::F64,
        Dtype::I8 => WeightDType::I8,
        Dtype::I16 => WeightDType::I16,
        Dtype::I32 => WeightDType::I32,
        Dtype::I64 => WeightDType::I64,
        Dtype::U8 => WeightDType::U8,
        Dtype::F8_E4M3 => WeightDType::F8_E4M3,
        _ => return None,
    })
}

/// Shard file names from an index, with every tensor's shard. Shard names
/// must be plain file names inside the model directory.
fn read_index(index_path: &Path) -> Result<(Vec<String>, HashMap<String, String>), WeightError> {
    let text = std::fs::read_to_string(index_path)
        .map_err(|e| WeightError::io(index_path.display(), e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| WeightError::format(index_path.display(), format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| WeightError::format(index_path.display(), "no `weight_map` object"))?;
    let mut wanted = HashMap::new();
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| is_plain_file_name(f))
            .ok_or_else(|| {
                WeightError::format(
                    index_path.display(),
                    format!("weight_map entry `{tensor}` should name a shard file in the same directory, got {file}"),
                )
            })?;
        shards.insert(file.to_string());
        wanted.insert(tensor.clone(), file.to_string());
    }
    Ok((shards.into_iter().collect(), wanted))
}

fn is_plain_file_name(f: &str) -> bool {
    !f.is_empty() && f != "." && f != ".." && !f.contains('/') && !f.contains('\\')
}

impl SafetensorsSource {
    /// Open a model directory (`model.safetensors`, or the shards named by
    /// `model.safetensors.index.json`) or one `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsSource, WeightError> {
        let path = path.as_ref();
        if path.is_file() {
            return SafetensorsSource::open_files(vec![path.to_path_buf()], None);
        }
        let index_path = path.join(INDEX_FILE);
        if index_path.is_file() {
            let (shards, wanted) = read_index(&index_path)?;
            let files = shards.iter().map(|s| path.join(s)).collect();
            return SafetensorsSource::open_files(files, Some((&index_path, wanted)));
        }
        let single = path.join(SINGLE_FILE);
        if single.is_file() {
            return SafetensorsSource::open_files(vec![single], None);
        }
        Err(WeightError::format(
            path.display(),
            format!(
                "no {SINGLE_FILE} or {INDEX_FILE} here; is this a Hugging Face model directory with safetensors weights?"
            ),
        ))
    }

    fn open_files(
        files: Vec<PathBuf>,
        index: Option<(&Path, HashMap<String, String>)>,
    ) -> Result<SafetensorsSource, WeightError> {
        let mut source = SafetensorsSource {
            files: Vec::new(),
            maps: Vec::new(),
            entries: HashMap::new(),
            total: 0,
        };
        for path in files {
            source.add_shard(path)?;
        }
        if let Some((index_path, wanted)) = index {
            source.check_index(index_path, &wanted)?;
        }
        Ok(source)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<(), WeightError> {
        let file = std::fs::File::open(&path).map_err(|e| WeightError::io(path.display(), e))?;
        // SAFETY: a read-only map of a weight file. Kiln never writes to it; a
        // file changed on disk by another program while mapped is outside what
        // any mmap-based loader can guard against.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightError::io(path.display(), e))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            WeightError::format(path.display(), format!("not a valid safetensors file: {e}"))
        })?;
        let shard = self.maps.len();
        for (name, view) in st.tensors() {
            let dtype = map_dtype(view.dtype()).ok_or_else(|| {
                WeightError::format(
                    path.display(),
                    format!(
                        "tensor `{name}` has dtype {:?}, which Kiln cannot load",
                        view.dtype()
                    ),
                )
            })?;
            let data = view.data();
            let entry = Entry {
                shard,
                dtype,
                shape: view.shape().to_vec(),
                start: data.as_ptr() as usize - map.as_ptr() as usize,
                len: data.len(),
            };
            self.total += data.len() as u64;
            if self.entries.insert(name.clone(), entry).is_some() {
                return Err(WeightError::format(
                    path.display(),
                    format!("tensor `{name}` is stored in more than one shard"),
                ));
            }
        }
        self.maps.push(map);
        self.files.push(path);
        Ok(())
    }

    /// Every tensor the index names must be in the shard it names.
    fn check_index(
        &self,
        index_path: &Path,
        wanted: &HashMap<String, String>,
    ) -> Result<(), WeightError> {
        let mut names: Vec<&String> = wanted.keys().collect();
        names.sort();
        for name in names {
            let file = &wanted[name];
            let found = self.entries.get(name).map(|e| {
                self.files[e.shard]
                    .file_name()
                    .is_some_and(|f| f == file.as_str())
            });
            if found != Some(true) {
                return Err(WeightError::format(
                    index_path.display(),
                    format!("the index puts `{name}` in {file}, but that shard does not hold it"),
                ));
            }
        }
        Ok(())
    }

    /// The shard files, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
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

    fn release(&self, data: &[u8]) {
        for map in &self.maps {
            super::release_mapped(map, data);
        }
    }
}
