//! One device of a comparison, with its activation dtype.

use kiln_plugin_abi::safe::{AbiResult, Buffer, Device, Weight, WeightSpec};
use kiln_plugin_abi::*;

use crate::data::{from_bytes, to_bytes};

/// The device under test or the reference, and the dtype of its activations.
pub(crate) struct Side<'a> {
    pub(crate) dev: &'a Device,
    pub(crate) act: KilnDType,
}

impl Side<'_> {
    /// A buffer holding `data`.
    pub fn upload(&self, data: &[u8]) -> AbiResult<Buffer> {
        let b = self.dev.alloc(data.len().max(4) as u64)?;
        self.dev.write(&b, 0, data)?;
        Ok(b)
    }

    /// A buffer holding `v` in the activation dtype.
    pub fn acts(&self, v: &[f32]) -> AbiResult<Buffer> {
        self.upload(&to_bytes(self.act, v))
    }

    /// The first `n` elements of `b`, as f32.
    pub fn read(&self, b: &Buffer, dtype: KilnDType, n: usize) -> AbiResult<Vec<f32>> {
        let mut out = vec![0u8; n * dtype_size(dtype) as usize];
        self.dev.read(b, 0, &mut out)?;
        Ok(from_bytes(dtype, &out))
    }

    /// A `[1, len]` f32 weight (a norm scale or a bias).
    pub fn vector(&self, name: &str, v: &[f32]) -> AbiResult<Weight> {
        self.dev.prepare_weight(&WeightSpec::single(
            name,
            KILN_WEIGHT_F32,
            1,
            v.len() as u64,
            &to_bytes(KILN_F32, v),
        ))
    }

    /// Whether this device declares `opcode` (with `format`, if any) in its activation dtype.
    pub fn supports(&self, opcode: u32, format: Option<KilnWeightFormat>) -> bool {
        self.dev.supports(opcode, format, self.act)
    }
}
