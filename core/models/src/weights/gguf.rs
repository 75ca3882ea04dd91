//! GGUF v2/v3 reader and writer.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata key/values, the tensor infos, padding to the alignment
//! (`general.alignment`, default 32), then the tensor data. Tensor shapes are
//! stored innermost-first (`ne[0]` = row length); we expose Hugging Face
//! order. Tensors are exposed under Hugging Face names, with the Q/K row
//! permutation of llama.cpp's converter undone (a row shuffle of whole block
//! runs, no dequantization), so that one RoPE layout serves every checkpoint.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{TensorView, WeightDType, WeightError, WeightSource};

const MAGIC: u32 = 0x4655_4747;
/// Default data alignment.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array (homogeneous in valid files).
    Array(Vec<GgufValue>),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// As an unsigned integer (any integer type, non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// As a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// As a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// As a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => self.as_u64().map(|v| v != 0),
        }
    }
}

/// ggml tensor type id → storage type.
pub fn dtype_from_ggml(t: u32) -> Option<WeightDType> {
    Some(match t {
        0 => WeightDType::F32,
        1 => WeightDType::F16,
        2 => WeightDType::Q4_0,
        3 => WeightDType::Q4_1,
        6 => WeightDType::Q5_0,
        7 => WeightDType::Q5_1,
        8 => WeightDType::Q8_0,
        12 => WeightDType::Q4_K,
        14 => WeightDType::Q6_K,
        24 => WeightDType::I8,
        26 => WeightDType::I32,
        27 => WeightDType::I64,
        28 => WeightDType::F64,
        30 => WeightDType::BF16,
        _ => return None,
    })
}

/// Storage type → ggml tensor type id.
pub fn ggml_from_dtype(d: WeightDType) -> Option<u32> {
    Some(match d {
        WeightDType::F32 => 0,
        WeightDType::F16 => 1,
        WeightDType::Q4_0 => 2,
        WeightDType::Q4_1 => 3,
        WeightDType::Q5_0 => 6,
        WeightDType::Q5_1 => 7,
        WeightDType::Q8_0 => 8,
        WeightDType::Q4_K => 12,
        WeightDType::Q6_K => 14,
        WeightDType::I8 => 24,
        WeightDType::I32 => 26,
        WeightDType::I64 => 27,
        WeightDType::F64 => 28,
        WeightDType::BF16 => 30,
        WeightDType::U8 => return None,
    })
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape innermost-first (`ne`).
    pub ne: Vec<u64>,
    /// Storage type.
    pub dtype: WeightDType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// Tokenizer metadata (`tokenizer.*` keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufTokenizerMetadata {
    /// `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// Pre-tokenizer name (`tokenizer.ggml.pre`).
    pub pre: Option<String>,
    /// Token strings.
    pub tokens: Vec<String>,
    /// Token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Vec<i32>,
    /// BPE merges (`"a b"`).
    pub merges: Vec<String>,
    /// SentencePiece scores.
    pub scores: Option<Vec<f32>>,
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS id.
    pub eos_token_id: Option<u32>,
    /// Unknown-token id.
    pub unknown_token_id: Option<u32>,
    /// Padding id.
    pub padding_token_id: Option<u32>,
    /// Prepend BOS when encoding.
    pub add_bos_token: Option<bool>,
    /// Append EOS when encoding.
    pub add_eos_token: Option<bool>,
    /// Prefix a space (SentencePiece).
    pub add_space_prefix: Option<bool>,
    /// Chat template.
    pub chat_template: Option<String>,
}

enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    /// GGUF version.
    pub version: u32,
    metadata: Vec<(String, GgufValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    hf_names: HashMap<String, usize>,
    data_start: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: impl Into<String>) -> WeightError {
        WeightError::Format {
            path: self.path.display().to_string(),
            reason: format!("{} (at byte {})", reason.into(), self.pos),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WeightError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: needs {n} more bytes, file has {}",
                self.buf.len()
            ))),
        }
    }

    fn u8(&mut self) -> Result<u8, WeightError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WeightError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32, WeightError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, WeightError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn count(&mut self, version: u32, what: &str) -> Result<usize, WeightError> {
        let n = if version == 1 {
            u64::from(self.u32()?)
        } else {
            self.u64()?
        };
        // Every counted item takes at least one byte.
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.err(format!("{what} count {n} exceeds the file size")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, version: u32) -> Result<String, WeightError> {
        let n = self.count(version, "string length")?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("a string is not valid UTF-8"))
    }

    fn value(&mut self, version: u32, ty: u32, depth: usize) -> Result<GgufValue, WeightError> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8()?),
            1 => GgufValue::I8(self.u8()? as i8),
            2 => GgufValue::U16(self.u16()?),
            3 => GgufValue::I16(self.u16()? as i16),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => GgufValue::Bool(self.u8()? != 0),
            8 => GgufValue::String(self.string(version)?),
            9 => {
                if depth > 4 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.count(version, "array length")?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(version, elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.err(format!("unknown metadata type {other}"))),
        })
    }
}

/// Map a GGUF tensor name to its Hugging Face name (Llama family).
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    let mapped = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            layer.parse::<usize>().ok()?;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_norm" => "post_attention_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

/// Undo llama.cpp's Q/K permutation: HF row `h·hd + s·hd/2 + j` is GGUF row `h·hd + 2j + s`.
pub fn unpermute_rows(data: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    if heads == 0 || !rows.is_multiple_of(heads) || !data.len().is_multiple_of(rows.max(1)) {
        return data.to_vec();
    }
    let row_bytes = data.len() / rows;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0u8; data.len()];
    for r in 0..rows {
        let (h, rem) = (r / hd, r % hd);
        let (s, j) = (rem / half.max(1), rem % half.max(1));
        let src = h * hd + 2 * j + s;
        out[r * row_bytes..(r + 1) * row_bytes]
            .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

impl GgufFile {
    /// Open and parse (memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, WeightError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| WeightError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: read-only map of a model file; Kiln never writes to it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| WeightError::Io {
            path: path.display().to_string(),
            source,
        })?;
        GgufFile::parse(path, Storage::Mmap(map))
    }

    /// Parse bytes held in memory (tests, tools).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, WeightError> {
        GgufFile::parse(Path::new("<memory>"), Storage::Owned(bytes))
    }

    fn parse(path: &Path, storage: Storage) -> Result<GgufFile, WeightError> {
        let (version, metadata, tensors, data_start) = {
            let buf = storage.bytes();
            let mut c = Cursor { buf, pos: 0, path };
            if buf.len() < 8 || c.u32()? != MAGIC {
                return Err(c.err("not a GGUF file (bad magic)"));
            }
            let version = c.u32()?;
            if !(1..=3).contains(&version) {
                return Err(c.err(format!(
                    "unsupported GGUF version {version} (supported: 1-3)"
                )));
            }
            let n_tensors = c.count(version, "tensor")?;
            let n_kv = c.count(version, "metadata")?;
            let mut metadata = Vec::with_capacity(n_kv.min(4096));
            for _ in 0..n_kv {
                let key = c.string(version)?;
                let ty = c.u32()?;
                let value = c.value(version, ty, 0)?;
                metadata.push((key, value));
            }
            let alignment = metadata
                .iter()
                .find(|(k, _)| k == "general.alignment")
                .and_then(|(_, v)| v.as_u64())
                .unwrap_or(DEFAULT_ALIGNMENT);
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(c.err(format!(
                    "general.alignment {alignment} is not a power of two"
                )));
            }
            let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16));
            for _ in 0..n_tensors {
                let name = c.string(version)?;
                let n_dims = c.u32()? as usize;
                if n_dims == 0 || n_dims > 4 {
                    return Err(c.err(format!("tensor {name} has {n_dims} dimensions")));
                }
                let mut ne = Vec::with_capacity(n_dims);
                for _ in 0..n_dims {
                    ne.push(c.u64()?);
                }
                let ty = c.u32()?;
                let dtype = dtype_from_ggml(ty).ok_or_else(|| {
                    c.err(format!("tensor {name} has unsupported ggml type {ty}"))
                })?;
                let offset = c.u64()?;
                let elements = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                let size = elements
                    .and_then(|e| usize::try_from(e).ok())
                    .filter(|&e| (ne[0] as usize).is_multiple_of(dtype.block().0) || e == 0)
                    .and_then(|e| dtype.bytes_for(e))
                    .ok_or_else(|| {
                        c.err(format!(
                            "tensor {name} has an impossible shape {ne:?} for {dtype:?}"
                        ))
                    })?;
                tensors.push(GgufTensorInfo {
                    name,
                    ne,
                    dtype,
                    offset,
                    size: size as u64,
                });
            }
            let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
            for t in &tensors {
                let end = data_start
                    .checked_add(t.offset)
                    .and_then(|s| s.checked_add(t.size));
                if end.is_none_or(|e| e > buf.len() as u64) {
                    return Err(c.err(format!(
                        "tensor {} (offset {}, {} bytes) lies beyond the end of the file ({} bytes)",
                        t.name,
                        t.offset,
                        t.size,
                        buf.len()
                    )));
                }
            }
            (version, metadata, tensors, data_start)
        };
        let index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let hf_names = tensors
            .iter()
            .enumerate()
            .filter_map(|(i, t)| hf_name(&t.name).map(|n| (n, i)))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            storage,
            version,
            metadata,
            index,
            tensors,
            hf_names,
            data_start,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every metadata key/value, in file order.
    pub fn metadata_entries(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// Unsigned integer metadata.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.metadata(key).and_then(GgufValue::as_u64)
    }

    /// Float metadata.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.metadata(key)
            .and_then(GgufValue::as_f64)
            .map(|v| v as f32)
    }

    /// String metadata.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata(key).and_then(GgufValue::as_str)
    }

    /// Bool metadata.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.metadata(key).and_then(GgufValue::as_bool)
    }

    /// Length of an array value.
    pub fn array_len(&self, key: &str) -> Option<usize> {
        match self.metadata(key)? {
            GgufValue::Array(a) => Some(a.len()),
            _ => None,
        }
    }

    fn str_array(&self, key: &str) -> Vec<String> {
        match self.metadata(key) {
            Some(GgufValue::Array(a)) => a
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Tensor headers.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor header by GGUF name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Raw bytes of a tensor.
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> &[u8] {
        let start = (self.data_start + info.offset) as usize;
        &self.storage.bytes()[start..start + info.size as usize]
    }

    /// Start of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Tensors per storage type, most common first.
    pub fn type_counts(&self) -> Vec<(WeightDType, usize)> {
        let mut counts: HashMap<WeightDType, usize> = HashMap::new();
        for t in &self.tensors {
            *counts.entry(t.dtype).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
        });
        v
    }

    /// The quantization of most matrices (e.g. `Q4_1`), or None for float files.
    pub fn quantization_label(&self) -> Option<String> {
        let mut counts: HashMap<WeightDType, usize> = HashMap::new();
        for t in self.tensors.iter().filter(|t| t.ne.len() >= 2) {
            *counts.entry(t.dtype).or_default() += 1;
        }
        let (dtype, _) = counts
            .into_iter()
            .max_by_key(|(d, n)| (*n, format!("{d:?}")))?;
        dtype.is_quantized().then(|| format!("{dtype:?}"))
    }

    /// Tokenizer metadata.
    pub fn tokenizer_metadata(&self) -> Result<GgufTokenizerMetadata, WeightError> {
        let model = self
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| WeightError::Format {
                path: self.path.display().to_string(),
                reason: "no tokenizer in the file (tokenizer.ggml.model is missing)".into(),
            })?;
        let ids = |k: &str| self.get_u64(k).map(|v| v as u32);
        let token_types = match self.metadata("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(a)) => a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect(),
            _ => Vec::new(),
        };
        let scores = match self.metadata("tokenizer.ggml.scores") {
            Some(GgufValue::Array(a)) => {
                Some(a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
            }
            _ => None,
        };
        Ok(GgufTokenizerMetadata {
            model: model.to_string(),
            pre: self.get_str("tokenizer.ggml.pre").map(str::to_string),
            tokens: self.str_array("tokenizer.ggml.tokens"),
            token_types,
            merges: self.str_array("tokenizer.ggml.merges"),
            scores,
            bos_token_id: ids("tokenizer.ggml.bos_token_id"),
            eos_token_id: ids("tokenizer.ggml.eos_token_id"),
            unknown_token_id: ids("tokenizer.ggml.unknown_token_id"),
            padding_token_id: ids("tokenizer.ggml.padding_token_id"),
            add_bos_token: self.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos_token: self.get_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: self.get_bool("tokenizer.ggml.add_space_prefix"),
            chat_template: self.get_str("tokenizer.chat_template").map(str::to_string),
        })
    }

    fn heads_for(&self, gguf_name: &str) -> Option<usize> {
        let arch = self.architecture().unwrap_or("llama");
        let part = gguf_name.split('.').nth(2)?;
        match part {
            "attn_q" => self
                .get_u64(&format!("{arch}.attention.head_count"))
                .map(|v| v as usize),
            "attn_k" => self
                .get_u64(&format!("{arch}.attention.head_count_kv"))
                .or_else(|| self.get_u64(&format!("{arch}.attention.head_count")))
                .map(|v| v as usize),
            _ => None,
        }
    }
}

impl WeightSource for GgufFile {
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError> {
        let Some(&i) = self.hf_names.get(name) else {
            return Ok(None);
        };
        let info = &self.tensors[i];
        let shape: Vec<usize> = info.ne.iter().rev().map(|&d| d as usize).collect();
        let raw = self.tensor_data(info);
        let data = match self.heads_for(&info.name) {
            Some(heads) if self.architecture() != Some("qwen2") => {
                Cow::Owned(unpermute_rows(raw, shape[0], heads))
            }
            _ => Cow::Borrowed(raw),
        };
        Ok(Some(TensorView {
            name: name.to_string(),
            dtype: info.dtype,
            shape,
            data,
        }))
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hf_names.keys().cloned().collect();
        v.sort();
        v
    }

    fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }
}

/// Builds GGUF files (tests and tools).
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, WeightDType, Vec<u64>, Vec<u8>)>,
    alignment: Option<u64>,
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(a) => {
            let elem = a.first().map_or(4, GgufValue::type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                write_value(out, x);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        GgufWriter::default()
    }

    /// Add a metadata entry (`general.alignment` sets the alignment).
    pub fn metadata(&mut self, key: &str, value: GgufValue) -> &mut Self {
        if key == "general.alignment" {
            self.alignment = value.as_u64();
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor with its GGUF name, type, `ne` (innermost first) and bytes.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: WeightDType,
        ne: &[u64],
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors
            .push((name.to_string(), dtype, ne.to_vec(), data));
        self
    }

    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment.unwrap_or(DEFAULT_ALIGNMENT);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_string(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dtype, ne, data) in &self.tensors {
            write_string(&mut out, name);
            out.extend_from_slice(&(ne.len() as u32).to_le_bytes());
            for d in ne {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ggml_from_dtype(*dtype).unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(align) * align;
        }
        let start = (out.len() as u64).div_ceil(align) * align;
        out.resize(start as usize, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize((start + off) as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Write to a file.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", GgufValue::String("llama".into()))
            .metadata("llama.attention.head_count", GgufValue::U32(2))
            .metadata("llama.attention.head_count_kv", GgufValue::U32(1))
            .metadata("general.alignment", GgufValue::U32(64))
            .metadata("x.i8", GgufValue::I8(-3))
            .metadata("x.f64", GgufValue::F64(2.5))
            .metadata("x.bool", GgufValue::Bool(true))
            .metadata(
                "x.nested",
                GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U16(7)])]),
            )
            .metadata(
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            );
        // attn_q: 4 rows of 32 f32 (2 heads, hd 2), row r filled with r.
        let q: Vec<u8> = (0..4)
            .flat_map(|r| std::iter::repeat_n(r as f32, 32))
            .flat_map(f32::to_le_bytes)
            .collect();
        w.tensor("blk.0.attn_q.weight", WeightDType::F32, &[32, 4], q);
        w.tensor(
            "token_embd.weight",
            WeightDType::Q8_0,
            &[32, 3],
            vec![1u8; 34 * 3],
        );
        w
    }

    #[test]
    fn round_trip_with_alignment_and_names() {
        let g = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.data_start() % 64, 0);
        assert_eq!(g.get_u64("llama.attention.head_count"), Some(2));
        assert_eq!(g.metadata("x.i8"), Some(&GgufValue::I8(-3)));
        assert_eq!(g.get_f32("x.f64"), Some(2.5));
        assert_eq!(g.get_bool("x.bool"), Some(true));
        assert_eq!(g.array_len("tokenizer.ggml.tokens"), Some(2));
        let e = g.tensor("model.embed_tokens.weight").unwrap().unwrap();
        assert_eq!(e.shape, vec![3, 32]);
        assert_eq!(e.dtype, WeightDType::Q8_0);
        assert_eq!(g.total_bytes(), 4 * 32 * 4 + 34 * 3);
        assert_eq!(g.quantization_label().as_deref(), Some("Q8_0"));
    }

    #[test]
    fn q_rows_are_unpermuted() {
        let g = GgufFile::from_bytes(sample().to_bytes()).unwrap();
        let q = g
            .tensor("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .unwrap();
        let first: Vec<f32> = q
            .data
            .chunks_exact(32 * 4)
            .map(|row| f32::from_le_bytes([row[0], row[1], row[2], row[3]]))
            .collect();
        // hd 2: HF row h*2 + s*1 + j(=0) comes from GGUF row h*2 + 0 + s: identity for hd 2.
        assert_eq!(first, vec![0.0, 1.0, 2.0, 3.0]);
        // hd 4 with one head: HF rows [0,1,2,3] <- GGUF rows [0,2,1,3].
        let data: Vec<u8> = (0..4u8).collect();
        assert_eq!(unpermute_rows(&data, 4, 1), vec![0, 2, 1, 3]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let good = sample().to_bytes();
        assert!(GgufFile::from_bytes(b"GGUF".to_vec()).is_err());
        assert!(
            GgufFile::from_bytes(b"NOPE\x03\0\0\0".to_vec())
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut v9 = good.clone();
        v9[4] = 9;
        assert!(
            GgufFile::from_bytes(v9)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        for cut in [10, 40, good.len() / 2, good.len() - 1] {
            assert!(
                GgufFile::from_bytes(good[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        // An absurd string length.
        let mut bad = good.clone();
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GgufFile::from_bytes(bad).is_err());
    }

    #[test]
    fn random_corruption_never_panics() {
        let good = sample().to_bytes();
        let mut state = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (state >> 33) as usize % b.len();
                b[i] = (state >> 17) as u8;
            }
            if let Ok(g) = GgufFile::from_bytes(b) {
                for n in g.tensor_names() {
                    let _ = g.tensor(&n);
                }
                let _ = g.tokenizer_metadata();
            }
        }
    }

    #[test]
    fn hf_names() {
        assert_eq!(
            hf_name("blk.12.ffn_down.weight").as_deref(),
            Some("model.layers.12.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.attn_k.bias").as_deref(),
            Some("model.layers.0.self_attn.k_proj.bias")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
