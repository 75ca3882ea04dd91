//! GGUF v1–v3 reader and writer.
//!
//! Layout: magic `GGUF`, u32 version, tensor count, metadata count, the
//! metadata key/values, the tensor infos, padding to the alignment
//! (`general.alignment`, default 32), then the tensor data; every tensor's
//! offset is relative to that aligned data start. Counts and string lengths
//! are u64 from v2 on and u32 in v1. Tensor shapes are stored innermost-first
//! (`ne[0]` = row length); Kiln exposes Hugging Face order and names, with
//! the Q/K row permutation of llama.cpp's converter undone ([`names`]).

pub mod names;
mod reader;
mod tokenizer;
pub mod value;
mod writer;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use names::{PERMUTED_QK_ARCHITECTURES, gguf_name, hf_name, permute_rows, unpermute_rows};
pub use reader::GgufTensorInfo;
pub use tokenizer::GgufTokenizerSpec;
pub use value::GgufValue;
pub use writer::GgufWriter;

use super::{TensorView, WeightDType, WeightError, WeightSource};
use names::{QkRole, qk_role};
use reader::Storage;

/// `GGUF` read as a little-endian u32.
pub(crate) const MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// An open GGUF file: parsed header over the mapped bytes.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    /// GGUF version (1, 2 or 3).
    pub version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    by_gguf_name: HashMap<String, usize>,
    by_hf_name: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and parse `path` (memory-mapped; tensor data is not read).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, WeightError> {
        let path = path.as_ref();
        let storage = reader::load(path)?;
        GgufFile::parse(path.to_path_buf(), storage)
    }

    /// Parse a file held in memory (tests, tools).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, WeightError> {
        GgufFile::parse(reader::memory_path(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<GgufFile, WeightError> {
        let header = reader::read_header(&path, storage.bytes())?;
        let metadata_index = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let by_gguf_name = reader::index_by_name(&header.tensors);
        let by_hf_name = header
            .tensors
            .iter()
            .enumerate()
            .filter_map(|(i, t)| hf_name(&t.name).map(|n| (n, i)))
            .collect();
        Ok(GgufFile {
            path,
            storage,
            version: header.version,
            metadata: header.metadata,
            metadata_index,
            tensors: header.tensors,
            by_gguf_name,
            by_hf_name,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    /// The file's path (`<in-memory GGUF>` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl Into<String>) -> WeightError {
        WeightError::format(self.path.display(), reason)
    }

    // ----- metadata -----

    /// A metadata value by key.
    pub fn metadata(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every metadata key/value, in file order.
    pub fn metadata_entries(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// An integer value that is non-negative (any integer type).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key).and_then(GgufValue::as_u64)
    }

    /// An integer value that fits a `u32` (any integer type).
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get_u64(key).and_then(|v| u32::try_from(v).ok())
    }

    /// A float value (f32, f64, or an integer).
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.metadata(key)
            .and_then(GgufValue::as_f64)
            .map(|v| v as f32)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata(key).and_then(GgufValue::as_str)
    }

    /// A bool value (or an integer read as `!= 0`).
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.metadata(key).and_then(GgufValue::as_bool)
    }

    /// An array value's elements.
    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.metadata(key).and_then(GgufValue::as_array)
    }

    /// Length of an array value.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        self.get_array(key).map(<[GgufValue]>::len)
    }

    /// An array of strings; `None` when absent or any element is not a string.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get_array(key)?.iter().map(GgufValue::as_str).collect()
    }

    /// An array of integers that fit `i32`; `None` when absent or otherwise.
    pub fn get_i32_array(&self, key: &str) -> Option<Vec<i32>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_i64().and_then(|x| i32::try_from(x).ok()))
            .collect()
    }

    /// An array of floats (f32 or f64 elements); `None` when absent or otherwise.
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get_array(key)?
            .iter()
            .map(|v| match *v {
                GgufValue::F32(x) => Some(x),
                GgufValue::F64(x) => Some(x as f32),
                _ => None,
            })
            .collect()
    }

    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `general.name`, the model's display name.
    pub fn name(&self) -> Option<&str> {
        self.get_str("general.name")
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`; 3 = mostly Q4_1).
    pub fn file_type(&self) -> Option<u32> {
        self.get_u32("general.file_type")
    }

    /// The name of `general.file_type` (`MOSTLY_Q4_1`), when known.
    pub fn file_type_name(&self) -> Option<&'static str> {
        self.file_type().and_then(file_type_name)
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset of the data section (aligned end of the header).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    // ----- tensors -----

    /// Tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor info by GGUF name.
    pub fn tensor_info(&self, gguf_name: &str) -> Option<&GgufTensorInfo> {
        self.by_gguf_name.get(gguf_name).map(|&i| &self.tensors[i])
    }

    /// The stored bytes of a tensor of this file (`None` for an info that
    /// does not describe this file's data).
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> Option<&[u8]> {
        let start = usize::try_from(self.data_start.checked_add(info.offset)?).ok()?;
        let end = start.checked_add(usize::try_from(info.size).ok()?)?;
        self.storage.bytes().get(start..end)
    }

    /// A tensor by GGUF name exactly as stored: GGUF name, HF-order shape,
    /// borrowed bytes, rows not un-permuted.
    pub fn raw_tensor(&self, gguf_name: &str) -> Option<TensorView<'_>> {
        let info = self.tensor_info(gguf_name)?;
        Some(TensorView {
            name: info.name.clone(),
            dtype: info.dtype,
            shape: info.hf_shape(),
            data: Cow::Borrowed(self.tensor_data(info)?),
        })
    }

    /// GGUF names of the tensors that have no Hugging Face name
    /// (`rope_freqs.weight`, tensors of other families).
    pub fn unmapped_tensors(&self) -> Vec<&str> {
        self.tensors
            .iter()
            .filter(|t| hf_name(&t.name).is_none())
            .map(|t| t.name.as_str())
            .collect()
    }

    /// Number of tensors per storage type, most common first (ties in type order).
    pub fn type_counts(&self) -> Vec<(WeightDType, usize)> {
        let mut counts: BTreeMap<WeightDType, usize> = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(t.dtype).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The file's quantization as Ollama and llama.cpp name it: the
    /// `general.file_type` mix (`Q4_K_M`, whose matrices are mostly Q4_K
    /// with some Q6_K and Q5_0), else the type of most matrices (`Q4_1`);
    /// `None` when the matrices are plain floats.
    pub fn quantization_label(&self) -> Option<String> {
        if let Some(name) = self.file_type_name() {
            let label = name.trim_start_matches("MOSTLY_");
            return (!matches!(label, "ALL_F32" | "F16" | "BF16")).then(|| label.to_string());
        }
        let mut counts: BTreeMap<WeightDType, usize> = BTreeMap::new();
        for t in self.tensors.iter().filter(|t| t.ne.len() >= 2) {
            *counts.entry(t.dtype).or_default() += 1;
        }
        let (dtype, _) = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
        dtype.is_quantized().then(|| dtype.name().to_string())
    }

    /// What start-up logs print about the file.
    pub fn summary(&self) -> GgufSummary {
        GgufSummary {
            name: self.name().map(str::to_string),
            architecture: self.architecture().map(str::to_string),
            version: self.version,
            file_type: self.file_type(),
            file_type_name: self.file_type_name(),
            tensor_count: self.tensors.len(),
            tensor_bytes: self.total_bytes(),
            type_counts: self.type_counts(),
        }
    }

    /// Head count that permutes a Q/K tensor's rows, or `None` when the
    /// tensor is not permuted in this file.
    fn permuting_heads(&self, info: &GgufTensorInfo) -> Result<Option<usize>, WeightError> {
        let Some(role) = qk_role(&info.name) else {
            return Ok(None);
        };
        let Some(arch) = self
            .architecture()
            .filter(|a| PERMUTED_QK_ARCHITECTURES.contains(a))
        else {
            return Ok(None);
        };
        let heads_key = format!("{arch}.attention.head_count");
        let heads = self.get_u64(&heads_key);
        let heads = match role {
            QkRole::Query => heads,
            QkRole::Key => self
                .get_u64(&format!("{arch}.attention.head_count_kv"))
                .or(heads),
        };
        match heads {
            Some(h) => Ok(Some(h as usize)),
            None => Err(self.error(format!(
                "cannot restore the row order of `{}`: `{heads_key}` is missing",
                info.name
            ))),
        }
    }

    /// Tensor bytes in Hugging Face row order.
    fn hf_order_bytes(&self, info: &GgufTensorInfo) -> Result<Cow<'_, [u8]>, WeightError> {
        let raw = self
            .tensor_data(info)
            .ok_or_else(|| self.error(format!("tensor `{}` lies outside the file", info.name)))?;
        let Some(heads) = self.permuting_heads(info)? else {
            return Ok(Cow::Borrowed(raw));
        };
        let rows = info.ne.last().copied().unwrap_or(1) as usize;
        let row_len = (info.num_elements() as usize) / rows.max(1);
        let whole_blocks = info.dtype.bytes_for(row_len).map(|b| b * rows) == Some(raw.len());
        let out = whole_blocks
            .then(|| unpermute_rows(raw, rows, heads))
            .flatten()
            .ok_or_else(|| {
                self.error(format!(
                    "cannot restore the row order of `{}` (shape {:?}, {}): its {rows} rows are not {heads} heads of an even size made of whole blocks",
                    info.name,
                    info.hf_shape(),
                    info.dtype
                ))
            })?;
        Ok(Cow::Owned(out))
    }
}

impl WeightSource for GgufFile {
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError> {
        let Some(&i) = self.by_hf_name.get(name) else {
            return Ok(None);
        };
        let info = &self.tensors[i];
        Ok(Some(TensorView {
            name: name.to_string(),
            dtype: info.dtype,
            shape: info.hf_shape(),
            data: self.hf_order_bytes(info)?,
        }))
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_hf_name.keys().cloned().collect();
        v.sort();
        v
    }

    fn release(&self, data: &[u8]) {
        if let Storage::Mmap(map) = &self.storage {
            super::release_mapped(map, data);
        }
    }

    fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }
}

/// What start-up logs print about a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    /// `general.name`.
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// GGUF version.
    pub version: u32,
    /// `general.file_type`.
    pub file_type: Option<u32>,
    /// Its name (`MOSTLY_Q4_1`).
    pub file_type_name: Option<&'static str>,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Tensors per storage type, most common first.
    pub type_counts: Vec<(WeightDType, usize)>,
}

impl fmt::Display for GgufSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, GGUF v{}",
            self.name.as_deref().unwrap_or("unnamed model"),
            self.architecture
                .as_deref()
                .unwrap_or("unknown architecture"),
            self.version
        )?;
        match (self.file_type_name, self.file_type) {
            (Some(n), _) => write!(f, ", {n}")?,
            (None, Some(t)) => write!(f, ", file type {t}")?,
            (None, None) => {}
        }
        write!(
            f,
            "): {} tensors, {:.1} MiB",
            self.tensor_count,
            self.tensor_bytes as f64 / (1024.0 * 1024.0)
        )?;
        for (i, (dtype, n)) in self.type_counts.iter().enumerate() {
            let sep = if i == 0 { "; " } else { ", " };
            write!(f, "{sep}{dtype} ×{n}")?;
        }
        Ok(())
    }
}

/// llama.cpp's `llama_ftype` names (`general.file_type`).
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        _ => return None,
    })
}
