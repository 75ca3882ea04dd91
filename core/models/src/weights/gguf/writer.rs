//! Writing GGUF files (tests and tools): metadata of every type and tensors
//! of any storage type with a ggml id, each padded to the alignment.

use std::collections::HashSet;
use std::path::Path;

use super::value::{GgufValue, type_id};
use super::{DEFAULT_ALIGNMENT, MAGIC};
use crate::weights::{WeightDType, WeightError};

/// Builds a GGUF file in memory.
///
/// ```
/// use kiln_models::weights::WeightDType;
/// use kiln_models::weights::gguf::{GgufFile, GgufValue, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.metadata("general.architecture", GgufValue::String("llama".into()))
///     .tensor("output_norm.weight", WeightDType::F32, &[2], [1f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect());
/// let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
/// assert_eq!(g.architecture(), Some("llama"));
/// ```
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dtype: WeightDType,
    ne: Vec<u64>,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

fn invalid(reason: impl Into<String>) -> WeightError {
    WeightError::format("<GGUF writer>", reason)
}

impl GgufWriter {
    /// An empty GGUF v3 file.
    pub fn new() -> Self {
        GgufWriter::default()
    }

    /// Write GGUF `version` 1, 2 or 3 (v1 stores counts, lengths and shapes as u32).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Add a metadata entry; `general.alignment` (a power of two) sets the
    /// data alignment.
    pub fn metadata(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor: GGUF name, storage type, `ne` (innermost first: `[in, out]`
    /// for a Linear) and its bytes.
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: WeightDType,
        ne: &[u64],
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dtype,
            ne: ne.to_vec(),
            data,
        });
        self
    }

    fn alignment(&self) -> Result<u64, WeightError> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
                invalid(format!(
                    "general.alignment must be a power of two, got {v:?}"
                ))
            }),
        }
    }

    fn validate(&self) -> Result<(), WeightError> {
        if !(1..=3).contains(&self.version) {
            return Err(invalid(format!(
                "GGUF version {} cannot be written",
                self.version
            )));
        }
        let mut keys = HashSet::new();
        for (k, v) in &self.metadata {
            if !keys.insert(k.as_str()) {
                return Err(invalid(format!("metadata key `{k}` added twice")));
            }
            check_homogeneous(k, v)?;
        }
        let mut names = HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(invalid(format!("tensor `{}` added twice", t.name)));
            }
            check_tensor(t, self.version)?;
        }
        Ok(())
    }

    /// The file's bytes; errors on duplicate names, mixed-type arrays, data
    /// that does not match a tensor's shape and type, or a bad alignment.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightError> {
        self.validate()?;
        let align = self.alignment()?;
        let wide = self.version >= 2;
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        put_len(&mut out, wide, self.tensors.len() as u64);
        put_len(&mut out, wide, self.metadata.len() as u64);
        for (k, v) in &self.metadata {
            put_string(&mut out, wide, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, wide, v);
        }
        let offsets = self.data_offsets(align);
        for (t, offset) in self.tensors.iter().zip(&offsets) {
            put_string(&mut out, wide, &t.name);
            out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for &d in &t.ne {
                put_len(&mut out, wide, d);
            }
            let ggml = t.dtype.ggml_type().unwrap_or_default();
            out.extend_from_slice(&ggml.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let data_start = (out.len() as u64).div_ceil(align) * align;
        for (t, offset) in self.tensors.iter().zip(&offsets) {
            out.resize((data_start + offset) as usize, 0);
            out.extend_from_slice(&t.data);
        }
        Ok(out)
    }

    /// Offsets of each tensor's data from the data start, each aligned.
    fn data_offsets(&self, align: u64) -> Vec<u64> {
        let mut next = 0u64;
        self.tensors
            .iter()
            .map(|t| {
                let offset = next;
                next = (offset + t.data.len() as u64).div_ceil(align) * align;
                offset
            })
            .collect()
    }

    /// Write the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), WeightError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| WeightError::io(path.display(), e))
    }
}

fn check_homogeneous(key: &str, v: &GgufValue) -> Result<(), WeightError> {
    let GgufValue::Array(items) = v else {
        return Ok(());
    };
    if let Some(first) = items.first()
        && let Some(odd) = items.iter().find(|x| x.type_id() != first.type_id())
    {
        return Err(invalid(format!(
            "metadata `{key}`: arrays hold one type, found {} and {}",
            GgufValue::type_name(first.type_id()),
            GgufValue::type_name(odd.type_id())
        )));
    }
    items.iter().try_for_each(|x| check_homogeneous(key, x))
}

fn check_tensor(t: &PendingTensor, version: u32) -> Result<(), WeightError> {
    if t.dtype.ggml_type().is_none() {
        return Err(invalid(format!(
            "tensor `{}`: {} has no ggml type id",
            t.name, t.dtype
        )));
    }
    if t.ne.is_empty() || t.ne.len() > 4 {
        return Err(invalid(format!(
            "tensor `{}` has {} dimensions (1 to 4)",
            t.name,
            t.ne.len()
        )));
    }
    if version == 1 && t.ne.iter().any(|&d| d > u64::from(u32::MAX)) {
        return Err(invalid(format!(
            "tensor `{}` is too large for GGUF v1",
            t.name
        )));
    }
    let elements = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let expected = elements
        .and_then(|e| usize::try_from(e).ok())
        .filter(|_| t.ne[0].is_multiple_of(t.dtype.block_size() as u64))
        .and_then(|e| t.dtype.bytes_for(e));
    if expected != Some(t.data.len()) {
        return Err(invalid(format!(
            "tensor `{}`: shape {:?} of {} needs {} bytes, got {}",
            t.name,
            t.ne,
            t.dtype,
            expected.map_or("an impossible number of".to_string(), |b| b.to_string()),
            t.data.len()
        )));
    }
    Ok(())
}

fn put_len(out: &mut Vec<u8>, wide: bool, n: u64) {
    if wide {
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
}

fn put_string(out: &mut Vec<u8>, wide: bool, s: &str) {
    put_len(out, wide, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, wide: bool, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, wide, s),
        GgufValue::Array(items) => {
            let elem = items.first().map_or(type_id::U32, GgufValue::type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            put_len(out, wide, items.len() as u64);
            for x in items {
                put_value(out, wide, x);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
