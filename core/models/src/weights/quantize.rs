//! Quantization of float weights at load time (`--quantization int8` and
//! `fp8`). With `int8` a 16- or 32-bit Linear weight becomes GGUF Q8_0
//! blocks, halving (or quartering) its memory, with llama.cpp's own
//! rounding (`quantize_row_q8_0_ref`): per block of 32, `d = amax / 127`
//! stored as f16, `q = roundf(x / d)` (half away from zero). With `fp8` it
//! becomes E4M3 codes with a scale per output row
//! ([`crate::weights::fp8::Fp8Linear::quantize`]).

/// What `--quantization` does to the 16/32-bit Linear weights of an
/// unquantized checkpoint at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizeAtLoad {
    /// GGUF Q8_0 blocks (`int8`).
    Int8,
    /// FP8 E4M3 with one scale per output row, `amax / 448` (`fp8`).
    Fp8,
}

impl QuantizeAtLoad {
    /// The scheme a `--quantization` value names, if it is one of these.
    pub fn from_flag(value: &str) -> Option<QuantizeAtLoad> {
        match value {
            "int8" => Some(QuantizeAtLoad::Int8),
            "fp8" => Some(QuantizeAtLoad::Fp8),
            _ => None,
        }
    }
}

/// Q8_0 blocks of `values` (a multiple of 32 of them, row after row).
///
/// Panics if `values.len()` is not a multiple of 32.
pub fn q8_0_blocks(values: &[f32]) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(32),
        "Q8_0 needs whole blocks of 32 values, got {}",
        values.len()
    );
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::WeightDType;
    use crate::weights::dequant::dequantize;

    #[test]
    fn blocks_round_trip_within_half_a_step() {
        let values: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let blocks = q8_0_blocks(&values);
        assert_eq!(blocks.len(), 3 * 34);
        let back = dequantize(WeightDType::Q8_0, &blocks, 96).unwrap();
        for (b, (x, y)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let step = half::f16::from_f32(amax / 127.0).to_f32();
            for (a, c) in x.iter().zip(y) {
                assert!(
                    (a - c).abs() <= step * 0.5 + amax * 1e-3,
                    "block {b}: {a} vs {c}"
                );
            }
        }
        // The largest magnitude maps to ±127, an all-zero block to zeros.
        assert!(
            blocks[2..34]
                .iter()
                .any(|&q| q as i8 == 127 || q as i8 == -127)
        );
        let zeros = q8_0_blocks(&[0.0; 32]);
        assert!(zeros.iter().all(|&b| b == 0));
    }
}
