//! Activation dtypes and the ABI weight format of each checkpoint storage type.

use kiln_plugin_abi::{
    KILN_BF16, KILN_F16, KILN_F32, KILN_WEIGHT_BF16, KILN_WEIGHT_F16, KILN_WEIGHT_F32,
    KILN_WEIGHT_GGUF_IQ4_NL, KILN_WEIGHT_GGUF_IQ4_XS, KILN_WEIGHT_GGUF_Q2_K, KILN_WEIGHT_GGUF_Q3_K,
    KILN_WEIGHT_GGUF_Q4_0, KILN_WEIGHT_GGUF_Q4_1, KILN_WEIGHT_GGUF_Q4_K, KILN_WEIGHT_GGUF_Q5_0,
    KILN_WEIGHT_GGUF_Q5_1, KILN_WEIGHT_GGUF_Q5_K, KILN_WEIGHT_GGUF_Q6_K, KILN_WEIGHT_GGUF_Q8_0,
    KilnDType, KilnWeightFormat, dtype_size,
};

use crate::weights::WeightDType;

/// Activation dtype of a decoder on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActDType {
    F32,
    F16,
    BF16,
}

impl ActDType {
    /// The ABI dtype.
    pub fn abi(self) -> KilnDType {
        match self {
            ActDType::F32 => KILN_F32,
            ActDType::F16 => KILN_F16,
            ActDType::BF16 => KILN_BF16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        dtype_size(self.abi())
    }

    /// The `--dtype` spelling.
    pub fn name(self) -> &'static str {
        match self {
            ActDType::F32 => "float32",
            ActDType::F16 => "float16",
            ActDType::BF16 => "bfloat16",
        }
    }
}

/// Map a checkpoint storage type to the ABI weight format.
pub fn weight_format(dtype: WeightDType) -> Option<KilnWeightFormat> {
    Some(match dtype {
        WeightDType::F32 => KILN_WEIGHT_F32,
        WeightDType::F16 => KILN_WEIGHT_F16,
        WeightDType::BF16 => KILN_WEIGHT_BF16,
        WeightDType::Q4_0 => KILN_WEIGHT_GGUF_Q4_0,
        WeightDType::Q4_1 => KILN_WEIGHT_GGUF_Q4_1,
        WeightDType::Q8_0 => KILN_WEIGHT_GGUF_Q8_0,
        WeightDType::Q5_0 => KILN_WEIGHT_GGUF_Q5_0,
        WeightDType::Q5_1 => KILN_WEIGHT_GGUF_Q5_1,
        WeightDType::Q2_K => KILN_WEIGHT_GGUF_Q2_K,
        WeightDType::Q3_K => KILN_WEIGHT_GGUF_Q3_K,
        WeightDType::Q4_K => KILN_WEIGHT_GGUF_Q4_K,
        WeightDType::Q5_K => KILN_WEIGHT_GGUF_Q5_K,
        WeightDType::Q6_K => KILN_WEIGHT_GGUF_Q6_K,
        WeightDType::IQ4_NL => KILN_WEIGHT_GGUF_IQ4_NL,
        WeightDType::IQ4_XS => KILN_WEIGHT_GGUF_IQ4_XS,
        _ => return None,
    })
}
