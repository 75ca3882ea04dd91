//! Parsing a GGUF file: header, metadata, tensor infos, data section.
//!
//! Every length and offset is checked against the file size before it is
//! used, so a truncated or corrupt file is an error naming the file and the
//! byte position, never a panic or a huge allocation.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::value::{GgufValue, type_id};
use super::{DEFAULT_ALIGNMENT, MAGIC};
use crate::weights::{WeightDType, WeightError};

/// Deepest array nesting accepted (arrays of arrays of ...).
const MAX_ARRAY_DEPTH: usize = 4;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: usize = 4;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape innermost-first (`ne[0]` = row length = in_features).
    pub ne: Vec<u64>,
    /// Storage type.
    pub dtype: WeightDType,
    /// Offset from the start of the data section, in bytes.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

impl GgufTensorInfo {
    /// Shape in Hugging Face / PyTorch order (outermost first).
    pub fn hf_shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of values.
    pub fn num_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// Where the bytes of an open file live.
pub(super) enum Storage {
    /// Memory-mapped file.
    Mmap(memmap2::Mmap),
    /// Bytes held in memory.
    Owned(Vec<u8>),
}

impl Storage {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// Everything parsed from the header; the file keeps it beside the bytes.
pub(super) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    pub data_start: u64,
}

/// A parse failure: what is wrong and at which byte.
struct ParseError {
    pos: usize,
    reason: String,
}

type Parse<T> = Result<T, ParseError>;

/// Width of counts and lengths: `u32` in GGUF v1, `u64` from v2 on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    U32,
    U64,
}

impl Width {
    fn bytes(self) -> usize {
        match self {
            Width::U32 => 4,
            Width::U64 => 8,
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    width: Width,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Parse<T> {
        Err(ParseError {
            pos: self.pos,
            reason: reason.into(),
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        if n > self.remaining() {
            return self.fail(format!(
                "truncated: {n} more bytes needed, only {} left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Parse<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Parse<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count or length in the file's width.
    fn wide(&mut self) -> Parse<u64> {
        match self.width {
            Width::U32 => self.u32().map(u64::from),
            Width::U64 => self.u64(),
        }
    }

    /// A count of items that each take at least `min_item_bytes`; rejects
    /// counts the rest of the file cannot hold.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Parse<usize> {
        let n = self.wide()?;
        let need = n.checked_mul(min_item_bytes as u64);
        if need.is_none_or(|need| need > self.remaining() as u64) {
            return self.fail(format!(
                "{what} {n} is impossible: the rest of the file has only {} bytes",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Parse<String> {
        let n = self.count("string length", 1)?;
        let start = self.pos;
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(ParseError {
                pos: start,
                reason: "a string is not valid UTF-8".into(),
            }),
        }
    }

    /// Fewest bytes a value of type `ty` takes (for count checks).
    fn min_value_bytes(&self, ty: u32) -> Parse<usize> {
        Ok(match ty {
            type_id::U8 | type_id::I8 | type_id::BOOL => 1,
            type_id::U16 | type_id::I16 => 2,
            type_id::U32 | type_id::I32 | type_id::F32 => 4,
            type_id::U64 | type_id::I64 | type_id::F64 => 8,
            type_id::STRING => self.width.bytes(),
            type_id::ARRAY => 4 + self.width.bytes(),
            other => return self.fail(format!("unknown metadata value type {other}")),
        })
    }

    fn value(&mut self, ty: u32, depth: usize) -> Parse<GgufValue> {
        Ok(match ty {
            type_id::U8 => GgufValue::U8(self.u8()?),
            type_id::I8 => GgufValue::I8(self.u8()? as i8),
            type_id::U16 => GgufValue::U16(self.u16()?),
            type_id::I16 => GgufValue::I16(self.u16()? as i16),
            type_id::U32 => GgufValue::U32(self.u32()?),
            type_id::I32 => GgufValue::I32(self.u32()? as i32),
            type_id::F32 => GgufValue::F32(f32::from_bits(self.u32()?)),
            type_id::BOOL => GgufValue::Bool(self.u8()? != 0),
            type_id::STRING => GgufValue::String(self.string()?),
            type_id::ARRAY => self.array_value(depth)?,
            type_id::U64 => GgufValue::U64(self.u64()?),
            type_id::I64 => GgufValue::I64(self.u64()? as i64),
            type_id::F64 => GgufValue::F64(f64::from_bits(self.u64()?)),
            other => return self.fail(format!("unknown metadata value type {other}")),
        })
    }

    fn array_value(&mut self, depth: usize) -> Parse<GgufValue> {
        if depth >= MAX_ARRAY_DEPTH {
            return self.fail(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
        }
        let elem = self.u32()?;
        let min = self.min_value_bytes(elem)?;
        let n = self.count("array length", min)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(elem, depth + 1)?);
        }
        Ok(GgufValue::Array(items))
    }
}

/// Magic, version and the two counts.
fn parse_preamble(c: &mut Cursor<'_>) -> Parse<(u32, usize, usize)> {
    if c.buf.len() < 4 || c.u32()? != MAGIC {
        c.pos = 0;
        return c.fail("not a GGUF file: it does not start with the magic bytes `GGUF`");
    }
    let version = c.u32()?;
    if !(1..=3).contains(&version) {
        c.pos -= 4;
        return c.fail(format!(
            "unsupported GGUF version {version} (Kiln reads versions 1 to 3; re-convert the model with a current llama.cpp)"
        ));
    }
    if version == 1 {
        c.width = Width::U32;
    }
    // A tensor info takes at least a name length, n_dims, one ne, type and offset.
    let min_tensor = c.width.bytes() * 2 + 4 + 4 + 8;
    let n_tensors = c.count("tensor count", min_tensor)?;
    let n_kv = c.count("metadata count", c.width.bytes() + 4 + 1)?;
    Ok((version, n_tensors, n_kv))
}

fn parse_metadata(c: &mut Cursor<'_>, n_kv: usize) -> Parse<Vec<(String, GgufValue)>> {
    let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(n_kv);
    let mut seen: HashSet<String> = HashSet::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key_pos = c.pos;
        let key = c.string()?;
        if !seen.insert(key.clone()) {
            return Err(ParseError {
                pos: key_pos,
                reason: format!("metadata key `{key}` appears twice"),
            });
        }
        let ty = c.u32()?;
        let value = c.value(ty, 0).map_err(|e| ParseError {
            pos: e.pos,
            reason: format!("metadata `{key}`: {}", e.reason),
        })?;
        metadata.push((key, value));
    }
    Ok(metadata)
}

/// `general.alignment`, checked; 32 when absent.
fn alignment_of(metadata: &[(String, GgufValue)], pos: usize) -> Parse<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => Err(ParseError {
            pos,
            reason: format!("general.alignment must be a power of two, got {v:?}"),
        }),
    }
}

fn parse_tensor_info(c: &mut Cursor<'_>, alignment: u64) -> Parse<GgufTensorInfo> {
    let name = c.string()?;
    let n_dims = c.u32()? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return c.fail(format!(
            "tensor `{name}` has {n_dims} dimensions (ggml tensors have 1 to {MAX_DIMS})"
        ));
    }
    let mut ne = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        ne.push(c.wide()?);
    }
    let ty = c.u32()?;
    let Some(dtype) = WeightDType::from_ggml_type(ty) else {
        return c.fail(format!(
            "tensor `{name}` has ggml type {ty}, which Kiln does not know"
        ));
    };
    let offset = c.u64()?;
    let size = tensor_size(&ne, dtype).ok_or_else(|| ParseError {
        pos: c.pos,
        reason: format!(
            "tensor `{name}` has shape {ne:?}, impossible for {dtype} (rows must be whole blocks of {} values and the size must fit in memory)",
            dtype.block_size()
        ),
    })?;
    if !offset.is_multiple_of(alignment) {
        return c.fail(format!(
            "tensor `{name}` has data offset {offset}, not a multiple of the alignment {alignment}"
        ));
    }
    Ok(GgufTensorInfo {
        name,
        ne,
        dtype,
        offset,
        size,
    })
}

/// Bytes of a tensor of shape `ne`: rows (`ne[0]`) must be whole blocks.
fn tensor_size(ne: &[u64], dtype: WeightDType) -> Option<u64> {
    let elements = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    if elements > i64::MAX as u64 || !ne[0].is_multiple_of(dtype.block_size() as u64) {
        return None;
    }
    let bytes = dtype.bytes_for(usize::try_from(elements).ok()?)?;
    u64::try_from(bytes).ok()
}

fn parse_tensor_infos(c: &mut Cursor<'_>, n: usize, alignment: u64) -> Parse<Vec<GgufTensorInfo>> {
    let mut tensors = Vec::with_capacity(n);
    let mut seen: HashSet<String> = HashSet::with_capacity(n);
    for _ in 0..n {
        let pos = c.pos;
        let info = parse_tensor_info(c, alignment)?;
        if !seen.insert(info.name.clone()) {
            return Err(ParseError {
                pos,
                reason: format!("tensor `{}` appears twice", info.name),
            });
        }
        tensors.push(info);
    }
    Ok(tensors)
}

/// Every tensor must lie inside the file.
fn check_bounds(
    tensors: &[GgufTensorInfo],
    data_start: u64,
    file_len: usize,
    pos: usize,
) -> Parse<()> {
    for t in tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.size));
        if end.is_none_or(|e| e > file_len as u64) {
            return Err(ParseError {
                pos,
                reason: format!(
                    "tensor `{}` (data offset {}, {} bytes, data section at {data_start}) ends beyond the end of the file ({file_len} bytes); the file is truncated or corrupt",
                    t.name, t.offset, t.size
                ),
            });
        }
    }
    Ok(())
}

fn parse_header(buf: &[u8]) -> Parse<Header> {
    let mut c = Cursor {
        buf,
        pos: 0,
        width: Width::U64,
    };
    let (version, n_tensors, n_kv) = parse_preamble(&mut c)?;
    let metadata = parse_metadata(&mut c, n_kv)?;
    let alignment = alignment_of(&metadata, c.pos)?;
    let tensors = parse_tensor_infos(&mut c, n_tensors, alignment)?;
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    check_bounds(&tensors, data_start, buf.len(), c.pos)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// Parse the header of `buf`, naming `path` in errors.
pub(super) fn read_header(path: &Path, buf: &[u8]) -> Result<Header, WeightError> {
    parse_header(buf).map_err(|e| {
        WeightError::format(path.display(), format!("{} (at byte {})", e.reason, e.pos))
    })
}

/// Map `path` (or read it, when too small to map).
pub(super) fn load(path: &Path) -> Result<Storage, WeightError> {
    let file = std::fs::File::open(path).map_err(|e| WeightError::io(path.display(), e))?;
    let len = file
        .metadata()
        .map_err(|e| WeightError::io(path.display(), e))?
        .len();
    if len < 8 {
        let bytes = std::fs::read(path).map_err(|e| WeightError::io(path.display(), e))?;
        return Ok(Storage::Owned(bytes));
    }
    // SAFETY: a read-only map of a model file. Kiln never writes to it; a
    // file changed on disk by another program while mapped is outside what
    // any mmap-based loader can guard against.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightError::io(path.display(), e))?;
    Ok(Storage::Mmap(map))
}

/// Index of the tensors by GGUF name.
pub(super) fn index_by_name(tensors: &[GgufTensorInfo]) -> HashMap<String, usize> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// A display path for bytes that came from memory.
pub(super) fn memory_path() -> PathBuf {
    PathBuf::from("<in-memory GGUF>")
}
