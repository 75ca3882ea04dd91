//! Weight sources: one view over safetensors directories and GGUF files.
//!
//! Every source hands out [`TensorView`]s under Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`), with shapes in PyTorch order
//! (`[out_features, in_features]`) and the raw little-endian bytes of the
//! checkpoint's storage type. Quantized GGUF blocks stay packed; the
//! [`dequant`] module turns any supported type into f32 for tests and tools.

pub mod dequant;
pub mod fp8;
pub mod gguf;
pub mod quantize;
pub mod quantized;
pub mod safetensors;

use std::borrow::Cow;
use std::fmt;

/// Storage type of a tensor: plain numbers or GGUF quantization blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum WeightDType {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE f64.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer (GPTQ/AWQ packed words).
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// FP8 E4M3 (`e4m3fn`: no infinities, `0x7F`/`0xFF` NaN), as safetensors'
    /// `F8_E4M3`.
    F8_E4M3,
    /// GGUF Q4_0: 32 weights in 18 bytes (`d f16, qs[16]`).
    Q4_0,
    /// GGUF Q4_1: 32 weights in 20 bytes (`d f16, m f16, qs[16]`).
    Q4_1,
    /// GGUF Q5_0: 32 weights in 22 bytes (`d f16, qh u32, qs[16]`).
    Q5_0,
    /// GGUF Q5_1: 32 weights in 24 bytes (`d f16, m f16, qh u32, qs[16]`).
    Q5_1,
    /// GGUF Q8_0: 32 weights in 34 bytes (`d f16, qs[32] i8`).
    Q8_0,
    /// GGUF Q8_1: 32 weights in 40 bytes (activation format).
    Q8_1,
    /// GGUF Q2_K: 256 weights in 84 bytes.
    Q2_K,
    /// GGUF Q3_K: 256 weights in 110 bytes.
    Q3_K,
    /// GGUF Q4_K: 256 weights in 144 bytes.
    Q4_K,
    /// GGUF Q5_K: 256 weights in 176 bytes.
    Q5_K,
    /// GGUF Q6_K: 256 weights in 210 bytes.
    Q6_K,
    /// GGUF Q8_K: 256 weights in 292 bytes (activation format).
    Q8_K,
    /// GGUF IQ2_XXS: 256 weights in 66 bytes.
    IQ2_XXS,
    /// GGUF IQ2_XS: 256 weights in 74 bytes.
    IQ2_XS,
    /// GGUF IQ3_XXS: 256 weights in 98 bytes.
    IQ3_XXS,
    /// GGUF IQ1_S: 256 weights in 50 bytes.
    IQ1_S,
    /// GGUF IQ4_NL: 32 weights in 18 bytes.
    IQ4_NL,
    /// GGUF IQ3_S: 256 weights in 110 bytes.
    IQ3_S,
    /// GGUF IQ2_S: 256 weights in 82 bytes.
    IQ2_S,
    /// GGUF IQ4_XS: 256 weights in 136 bytes.
    IQ4_XS,
    /// GGUF IQ1_M: 256 weights in 56 bytes.
    IQ1_M,
    /// GGUF TQ1_0: 256 weights in 54 bytes.
    TQ1_0,
    /// GGUF TQ2_0: 256 weights in 66 bytes.
    TQ2_0,
    /// GGUF MXFP4: 32 weights in 17 bytes.
    MXFP4,
}

/// Name, ggml type id, weights per block and bytes per block of one type.
struct DTypeInfo {
    name: &'static str,
    ggml: Option<u32>,
    block_size: usize,
    type_size: usize,
}

const fn info(
    name: &'static str,
    ggml: Option<u32>,
    block_size: usize,
    type_size: usize,
) -> DTypeInfo {
    DTypeInfo {
        name,
        ggml,
        block_size,
        type_size,
    }
}

impl WeightDType {
    /// Every storage type Kiln knows.
    pub const ALL: [WeightDType; 34] = [
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::BF16,
        WeightDType::F64,
        WeightDType::I8,
        WeightDType::I16,
        WeightDType::I32,
        WeightDType::I64,
        WeightDType::U8,
        WeightDType::F8_E4M3,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
        WeightDType::Q5_0,
        WeightDType::Q5_1,
        WeightDType::Q8_0,
        WeightDType::Q8_1,
        WeightDType::Q2_K,
        WeightDType::Q3_K,
        WeightDType::Q4_K,
        WeightDType::Q5_K,
        WeightDType::Q6_K,
        WeightDType::Q8_K,
        WeightDType::IQ2_XXS,
        WeightDType::IQ2_XS,
        WeightDType::IQ3_XXS,
        WeightDType::IQ1_S,
        WeightDType::IQ4_NL,
        WeightDType::IQ3_S,
        WeightDType::IQ2_S,
        WeightDType::IQ4_XS,
        WeightDType::IQ1_M,
        WeightDType::TQ1_0,
        WeightDType::TQ2_0,
        WeightDType::MXFP4,
    ];

    fn info(self) -> DTypeInfo {
        use WeightDType::*;
        match self {
            F32 => info("F32", Some(0), 1, 4),
            F16 => info("F16", Some(1), 1, 2),
            BF16 => info("BF16", Some(30), 1, 2),
            F64 => info("F64", Some(28), 1, 8),
            I8 => info("I8", Some(24), 1, 1),
            I16 => info("I16", Some(25), 1, 2),
            I32 => info("I32", Some(26), 1, 4),
            I64 => info("I64", Some(27), 1, 8),
            U8 => info("U8", None, 1, 1),
            F8_E4M3 => info("F8_E4M3", None, 1, 1),
            Q4_0 => info("Q4_0", Some(2), 32, 18),
            Q4_1 => info("Q4_1", Some(3), 32, 20),
            Q5_0 => info("Q5_0", Some(6), 32, 22),
            Q5_1 => info("Q5_1", Some(7), 32, 24),
            Q8_0 => info("Q8_0", Some(8), 32, 34),
            Q8_1 => info("Q8_1", Some(9), 32, 40),
            Q2_K => info("Q2_K", Some(10), 256, 84),
            Q3_K => info("Q3_K", Some(11), 256, 110),
            Q4_K => info("Q4_K", Some(12), 256, 144),
            Q5_K => info("Q5_K", Some(13), 256, 176),
            Q6_K => info("Q6_K", Some(14), 256, 210),
            Q8_K => info("Q8_K", Some(15), 256, 292),
            IQ2_XXS => info("IQ2_XXS", Some(16), 256, 66),
            IQ2_XS => info("IQ2_XS", Some(17), 256, 74),
            IQ3_XXS => info("IQ3_XXS", Some(18), 256, 98),
            IQ1_S => info("IQ1_S", Some(19), 256, 50),
            IQ4_NL => info("IQ4_NL", Some(20), 32, 18),
            IQ3_S => info("IQ3_S", Some(21), 256, 110),
            IQ2_S => info("IQ2_S", Some(22), 256, 82),
            IQ4_XS => info("IQ4_XS", Some(23), 256, 136),
            IQ1_M => info("IQ1_M", Some(29), 256, 56),
            TQ1_0 => info("TQ1_0", Some(34), 256, 54),
            TQ2_0 => info("TQ2_0", Some(35), 256, 66),
            MXFP4 => info("MXFP4", Some(39), 32, 17),
        }
    }

    /// Short name as llama.cpp and safetensors spell it (`Q4_1`, `BF16`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Weights per block (1 for plain numbers, 32 or 256 for GGUF blocks).
    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    /// Bytes per block (bytes per element for plain numbers).
    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// `(block_size, type_size)`: weights per block and bytes per block.
    pub fn block(self) -> (usize, usize) {
        (self.block_size(), self.type_size())
    }

    /// The ggml type id used in GGUF tensor infos, if the type has one.
    pub fn ggml_type(self) -> Option<u32> {
        self.info().ggml
    }

    /// The storage type of a ggml type id (`None` for ids Kiln does not know).
    pub fn from_ggml_type(id: u32) -> Option<WeightDType> {
        WeightDType::ALL
            .into_iter()
            .find(|d| d.ggml_type() == Some(id))
    }

    /// Bytes taken by `elements` values; `None` when `elements` is not a whole
    /// number of blocks or the size overflows.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        if elements.is_multiple_of(per) {
            (elements / per).checked_mul(bytes)
        } else {
            None
        }
    }

    /// True for GGUF block formats (more than one weight per block).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// True for F32, F16, BF16 and F64.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16 | WeightDType::F64
        )
    }
}

impl fmt::Display for WeightDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors reading or writing weight files. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The operating system refused to read or write a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is malformed or uses something Kiln does not support.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong, and where.
        reason: String,
    },
}

impl WeightError {
    /// A [`WeightError::Format`] for `path`.
    pub fn format(path: impl fmt::Display, reason: impl Into<String>) -> WeightError {
        WeightError::Format {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// A [`WeightError::Io`] for `path`.
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> WeightError {
        WeightError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// One tensor as a checkpoint stores it.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Storage type.
    pub dtype: WeightDType,
    /// Shape, outermost first (`[out_features, in_features]` for a Linear).
    pub shape: Vec<usize>,
    /// Raw little-endian bytes: borrowed from the file map when the bytes are
    /// used as stored, owned when they had to be rearranged (GGUF Q/K rows).
    pub data: Cow<'a, [u8]>,
}

impl TensorView<'_> {
    /// Number of values (product of the shape).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Something that yields tensors by Hugging Face name.
pub trait WeightSource: Send + Sync {
    /// The tensor called `name`, or `None` when the checkpoint has none.
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError>;
    /// Every tensor name (Hugging Face names), sorted.
    fn tensor_names(&self) -> Vec<String>;
    /// Total bytes of tensor data.
    fn total_bytes(&self) -> u64;
    /// The loader is done with `data`, bytes this source lent out: a
    /// memory-mapped source drops their pages from the process's resident
    /// set, so peak memory during load is the prepared weights, not the
    /// prepared weights plus the whole mapped file.
    fn release(&self, _data: &[u8]) {}
}

/// Granularity of [`release_mapped`]: a multiple of every page size Linux
/// uses for file mappings (4 KiB x86-64, up to 64 KiB aarch64).
const RELEASE_ALIGN: usize = 1 << 16;

/// Drop the whole `RELEASE_ALIGN`-aligned pages of `data` that lie inside
/// `map` from this process's resident set (`MADV_DONTNEED`). The file's
/// page cache keeps them, so reading the range again faults the same bytes
/// back in. Bytes outside `map` are left alone.
pub(crate) fn release_mapped(map: &memmap2::Mmap, data: &[u8]) {
    let base = map.as_ptr() as usize;
    let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    if start < base || end > base + map.len() {
        return;
    }
    let first = (start - base).next_multiple_of(RELEASE_ALIGN);
    let last = (end - base) / RELEASE_ALIGN * RELEASE_ALIGN;
    if last <= first {
        return;
    }
    #[cfg(unix)]
    // SAFETY: `Mmap` is a read-only mapping, so MADV_DONTNEED only drops
    // page-table entries: no byte can change or be lost, and later reads
    // of the range (a tied embedding read twice) see the file's bytes again.
    // The range lies inside the map. Failure only means the pages stay.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_ids_round_trip_and_sizes_follow_the_blocks() {
        for d in WeightDType::ALL {
            if let Some(id) = d.ggml_type() {
                assert_eq!(WeightDType::from_ggml_type(id), Some(d), "{d}");
            }
        }
        // Every ggml type id gguf-py knows, but the Q4_2/Q4_3 ids removed long ago.
        let known = (0..=30).filter(|i| ![4, 5].contains(i)).chain([34, 35, 39]);
        for id in known {
            assert!(WeightDType::from_ggml_type(id).is_some(), "ggml type {id}");
        }
        assert_eq!(WeightDType::from_ggml_type(4), None);
        assert!(WeightDType::ALL.contains(&WeightDType::U8));
        assert_eq!(WeightDType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(WeightDType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(WeightDType::Q4_K.bytes_for(300), None);
        assert_eq!(WeightDType::BF16.bytes_for(3), Some(6));
        assert!(WeightDType::Q8_0.is_quantized() && !WeightDType::F16.is_quantized());
        assert_eq!(WeightDType::IQ4_XS.to_string(), "IQ4_XS");
    }
}
