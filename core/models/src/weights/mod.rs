//! Weight sources: a common view over safetensors directories and GGUF files.

pub mod dequant;
pub mod gguf;
pub mod safetensors;

use std::borrow::Cow;

/// Storage type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightDType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// f64.
    F64,
    /// i32.
    I32,
    /// i64.
    I64,
    /// i8.
    I8,
    /// u8.
    U8,
    /// GGUF Q4_0 (32 weights, 18 bytes).
    Q4_0,
    /// GGUF Q4_1 (32 weights, 20 bytes).
    Q4_1,
    /// GGUF Q5_0 (32 weights, 22 bytes).
    Q5_0,
    /// GGUF Q5_1 (32 weights, 24 bytes).
    Q5_1,
    /// GGUF Q8_0 (32 weights, 34 bytes).
    Q8_0,
    /// GGUF Q4_K (256 weights, 144 bytes).
    Q4_K,
    /// GGUF Q6_K (256 weights, 210 bytes).
    Q6_K,
}

impl WeightDType {
    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            WeightDType::F32 | WeightDType::I32 => (1, 4),
            WeightDType::F16 | WeightDType::BF16 => (1, 2),
            WeightDType::F64 | WeightDType::I64 => (1, 8),
            WeightDType::I8 | WeightDType::U8 => (1, 1),
            WeightDType::Q4_0 => (32, 18),
            WeightDType::Q4_1 => (32, 20),
            WeightDType::Q5_0 => (32, 22),
            WeightDType::Q5_1 => (32, 24),
            WeightDType::Q8_0 => (32, 34),
            WeightDType::Q4_K => (256, 144),
            WeightDType::Q6_K => (256, 210),
        }
    }

    /// Bytes taken by `elements` values (None when not a whole number of blocks).
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        if elements.is_multiple_of(per) {
            (elements / per).checked_mul(bytes)
        } else {
            None
        }
    }

    /// True for GGUF block formats.
    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }
}

/// Errors reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// I/O on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is malformed.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One tensor: HF name, storage type, HF-order shape (`[out, in]`) and bytes.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Storage type.
    pub dtype: WeightDType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

/// Something that yields tensors by Hugging Face name.
pub trait WeightSource: Send + Sync {
    /// A tensor, or `None` when absent.
    fn tensor(&self, name: &str) -> Result<Option<TensorView<'_>>, WeightError>;
    /// Every tensor name (HF names).
    fn tensor_names(&self) -> Vec<String>;
    /// Total bytes of tensor data.
    fn total_bytes(&self) -> u64;
}
