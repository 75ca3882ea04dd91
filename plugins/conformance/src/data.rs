//! Test data: a seeded generator, element encodings, and weights in every
//! format the suite covers.

use half::{bf16, f16};
use kiln_plugin_abi::safe::{WeightPartSpec, WeightSpec};
use kiln_plugin_abi::*;

/// A small deterministic generator (LCG), so every run checks the same inputs.
pub struct Rng(pub u64);

impl Rng {
    /// The next value in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// `v` encoded as f16, bf16 or (any other dtype) f32.
pub fn to_bytes(dtype: KilnDType, v: &[f32]) -> Vec<u8> {
    match dtype {
        KILN_F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        KILN_BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(dtype: KilnDType, b: &[u8]) -> Vec<f32> {
    match dtype {
        KILN_F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        KILN_BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Little-endian i32s.
pub fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn quantize_q8_0(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in v.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |a, x| a.max(x.abs()));
        let d = amax / 127.0;
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|x| {
            if d > 0.0 {
                (x / d).round() as i8 as u8
            } else {
                0
            }
        }));
    }
    out
}

fn quantize_q4(v: &[f32], with_min: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for b in v.chunks_exact(32) {
        let (min, max) = b
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if with_min {
            let d = (max - min) / 15.0;
            out.extend(f16::from_f32(d).to_le_bytes());
            out.extend(f16::from_f32(min).to_le_bytes());
            let q = |x: f32| (((x - min) / d.max(1e-12)) + 0.5).clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
        } else {
            let m = if max.abs() > min.abs() { max } else { min };
            let d = m / -8.0;
            out.extend(f16::from_f32(d).to_le_bytes());
            let q = |x: f32| ((x / if d == 0.0 { 1.0 } else { d }) + 8.5).clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
        }
    }
    out
}

/// The byte layout of a GGUF block format that has no quantizer here.
#[derive(Debug, Clone, Copy)]
pub struct BlockLayout {
    /// Weights per block.
    pub weights: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// Byte offsets of the block's f16 scale (and minimum) fields.
    pub f16_fields: &'static [usize],
}

/// Formats checked with random blocks (their scales kept modest) instead
/// of quantized values.
pub fn random_block_layout(format: KilnWeightFormat) -> Option<BlockLayout> {
    let layout = |weights, bytes, f16_fields| BlockLayout {
        weights,
        bytes,
        f16_fields,
    };
    Some(match format {
        KILN_WEIGHT_GGUF_Q5_0 => layout(32, 22, &[0]),
        KILN_WEIGHT_GGUF_Q5_1 => layout(32, 24, &[0, 2]),
        KILN_WEIGHT_GGUF_IQ4_NL => layout(32, 18, &[0]),
        KILN_WEIGHT_GGUF_Q2_K => layout(256, 84, &[80, 82]),
        KILN_WEIGHT_GGUF_Q3_K => layout(256, 110, &[108]),
        KILN_WEIGHT_GGUF_Q4_K => layout(256, 144, &[0, 2]),
        KILN_WEIGHT_GGUF_Q5_K => layout(256, 176, &[0, 2]),
        KILN_WEIGHT_GGUF_Q6_K => layout(256, 210, &[208]),
        KILN_WEIGHT_GGUF_IQ4_XS => layout(256, 136, &[0]),
        _ => return None,
    })
}

/// Random blocks for `v.len()` weights (the values only seed the bytes);
/// scales in [1e-3, 5e-3] so outputs stay O(1).
fn random_blocks(layout: BlockLayout, v: &[f32]) -> Vec<u8> {
    let mut rng = Rng(v.len() as u64 ^ 0x5EED);
    let blocks = v.len() / layout.weights;
    let mut raw: Vec<u8> = (0..blocks * layout.bytes)
        .map(|_| ((rng.next_f32() + 1.0) * 127.5) as u8)
        .collect();
    for blk in raw.chunks_exact_mut(layout.bytes) {
        for &at in layout.f16_fields {
            let d = 1e-3 + (rng.next_f32() + 1.0) * 2e-3;
            blk[at..at + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        }
    }
    raw
}

/// An FP8 E4M3 weight of `rows` rows from `v`: codes taken from bits of
/// each value (every finite code occurs, the NaN codes become zero) and a
/// positive f32 scale per row that keeps weights near `v`'s magnitude.
/// Returns the codes and the scales' bytes.
fn fp8_parts(v: &[f32], rows: usize) -> (Vec<u8>, Vec<u8>) {
    let codes = v
        .iter()
        .map(|x| match (x.to_bits() >> 8) as u8 {
            c if c & 0x7F == 0x7F => 0,
            c => c,
        })
        .collect();
    let scales: Vec<f32> = (0..rows)
        .map(|r| 0.2 / 448.0 * (1.0 + (r % 7) as f32 / 8.0))
        .collect();
    (codes, to_bytes(KILN_F32, &scales))
}

/// A weight's bytes in some format: the data part and, for the formats
/// that carry them (FP8), its f32 row scales.
pub struct WeightData {
    raw: Vec<u8>,
    row_scales: Option<Vec<u8>>,
}

impl WeightData {
    /// `v` (`rows` rows) as a weight in `format`.
    pub fn new(format: KilnWeightFormat, v: &[f32], rows: usize) -> WeightData {
        if format == KILN_WEIGHT_FP8_E4M3 {
            let (raw, scales) = fp8_parts(v, rows);
            return WeightData {
                raw,
                row_scales: Some(scales),
            };
        }
        WeightData {
            raw: weight_bytes(format, v),
            row_scales: None,
        }
    }

    /// The weight as `[rows, cols]` in `format`, for `prepare_weight`.
    pub fn spec<'a>(
        &'a self,
        name: &'a str,
        format: KilnWeightFormat,
        rows: u64,
        cols: u64,
    ) -> WeightSpec<'a> {
        let mut spec = WeightSpec::single(name, format, rows, cols, &self.raw);
        if let Some(scales) = &self.row_scales {
            spec.parts[0].dims = vec![rows, cols];
            spec.parts.push(WeightPartSpec {
                role: KILN_PART_SCALES,
                dtype: KILN_F32,
                dims: vec![rows],
                data: scales,
            });
        }
        spec
    }
}

/// `v` as the bytes of a weight in `format`.
pub fn weight_bytes(format: KilnWeightFormat, v: &[f32]) -> Vec<u8> {
    if let Some(layout) = random_block_layout(format) {
        return random_blocks(layout, v);
    }
    match format {
        KILN_WEIGHT_F16 => to_bytes(KILN_F16, v),
        KILN_WEIGHT_BF16 => to_bytes(KILN_BF16, v),
        KILN_WEIGHT_GGUF_Q8_0 => quantize_q8_0(v),
        KILN_WEIGHT_GGUF_Q4_0 => quantize_q4(v, false),
        KILN_WEIGHT_GGUF_Q4_1 => quantize_q4(v, true),
        _ => to_bytes(KILN_F32, v),
    }
}
