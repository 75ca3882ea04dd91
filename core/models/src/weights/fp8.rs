//! FP8 E4M3 Linear weights with one scale per output row, handed to a
//! backend as `KILN_WEIGHT_FP8_E4M3`: read from FP8 checkpoints
//! (compressed-tensors `float-quantized`, `quant_method: "fp8"`) or
//! quantized from 16/32-bit weights at load (`--quantization fp8`). The
//! codes stay one byte per weight; only the activations are f32 (W8A16:
//! a checkpoint's activation quantization is not emulated).
//!
//! E4M3 here is the `e4m3fn` variant (safetensors `F8_E4M3`,
//! `torch.float8_e4m3fn`): bias 7, 3 mantissa bits, subnormals, no
//! infinities, `0x7F`/`0xFF` NaN, largest magnitude 448.

use kiln_plugin_abi::e4m3::{is_e4m3_nan, quantize_rows};
use kiln_plugin_abi::safe::{AbiResult, Device, Weight, WeightPartSpec, WeightSpec};
use kiln_plugin_abi::{KILN_F32, KILN_PART_DATA, KILN_PART_SCALES, KILN_U8, KILN_WEIGHT_FP8_E4M3};

use super::dequant::dequantize_view;
use super::{TensorView, WeightDType};

/// A Linear weight as E4M3 codes `[rows, cols]` and an f32 scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Linear {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `[rows, cols]` E4M3 codes, none of them NaN.
    pub codes: Vec<u8>,
    /// `[rows]` scales: `W[r, c] = scales[r]·e4m3(codes[r, c])`.
    pub scales: Vec<f32>,
    /// Bytes the weight took in the checkpoint.
    pub checkpoint_bytes: u64,
}

impl Fp8Linear {
    /// Quantize `values` (`[rows, cols]`): each row's scale is its largest
    /// magnitude over 448 (1 for an all-zero row), each code the value over
    /// the scale rounded to nearest even.
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Fp8Linear {
        assert_eq!(
            values.len(),
            rows * cols,
            "FP8 quantization of [{rows}, {cols}]"
        );
        let (codes, mut scales) = quantize_rows(values, cols);
        scales.resize(rows, 1.0);
        Fp8Linear {
            rows,
            cols,
            codes,
            scales,
            checkpoint_bytes: (values.len() * 4) as u64,
        }
    }

    /// A checkpoint's `weight` (`F8_E4M3 [rows, cols]`) and `weight_scale`
    /// (one value — `[]`, `[1]` or `[1, 1]` — for a per-tensor scale, or
    /// `[rows]`/`[rows, 1]` per output channel; f32, f16 or bf16). Errors
    /// name the tensor (`weight` or `weight_scale`) and what is wrong.
    pub fn from_checkpoint(
        weight: &TensorView<'_>,
        scale: &TensorView<'_>,
        rows: usize,
        cols: usize,
    ) -> Result<Fp8Linear, (&'static str, String)> {
        if weight.dtype != WeightDType::F8_E4M3 {
            return Err(("weight", format!("is {}, expected F8_E4M3", weight.dtype)));
        }
        if weight.shape != [rows, cols] {
            return Err((
                "weight",
                format!("has shape {:?}, expected [{rows}, {cols}]", weight.shape),
            ));
        }
        if let Some(i) = weight.data.iter().position(|&c| is_e4m3_nan(c)) {
            return Err((
                "weight",
                format!(
                    "holds the NaN code {:#04x} at row {}, column {}",
                    weight.data[i],
                    i / cols,
                    i % cols
                ),
            ));
        }
        let values = match scale.dtype {
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16 => dequantize_view(scale),
            _ => None,
        }
        .ok_or_else(|| {
            (
                "weight_scale",
                format!("is {}, expected F32, F16 or BF16", scale.dtype),
            )
        })?;
        let scales = match values.len() {
            1 => vec![values[0]; rows],
            n if n == rows && scale.shape.iter().filter(|&&d| d != 1).count() <= 1 => values,
            _ => {
                return Err((
                    "weight_scale",
                    format!(
                        "has shape {:?}; Kiln reads one scale per tensor or per output channel \
                         ([{rows}] or [{rows}, 1]), not block-wise scales",
                        scale.shape
                    ),
                ));
            }
        };
        if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
            return Err(("weight_scale", format!("holds {} for row {r}", scales[r])));
        }
        Ok(Fp8Linear {
            rows,
            cols,
            codes: weight.data.to_vec(),
            scales,
            checkpoint_bytes: (weight.data.len() + scale.data.len()) as u64,
        })
    }

    /// Hand the weight to a device as `KILN_WEIGHT_FP8_E4M3`.
    pub fn prepare(&self, device: &Device, name: &str) -> AbiResult<Weight> {
        let scale_bytes: Vec<u8> = self.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let (rows, cols) = (self.rows as u64, self.cols as u64);
        device.prepare_weight(&WeightSpec {
            name,
            format: KILN_WEIGHT_FP8_E4M3,
            rows,
            cols,
            bits: 8,
            group_size: 0,
            flags: 0,
            parts: vec![
                WeightPartSpec {
                    role: KILN_PART_DATA,
                    dtype: KILN_U8,
                    dims: vec![rows, cols],
                    data: &self.codes,
                },
                WeightPartSpec {
                    role: KILN_PART_SCALES,
                    dtype: KILN_F32,
                    dims: vec![rows],
                    data: &scale_bytes,
                },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn view(dtype: WeightDType, shape: &[usize], data: Vec<u8>) -> TensorView<'static> {
        TensorView {
            name: "t".into(),
            dtype,
            shape: shape.to_vec(),
            data: Cow::Owned(data),
        }
    }

    #[test]
    fn quantized_rows_stay_within_half_a_step() {
        let values: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let w = Fp8Linear::quantize(&values, 3, 32);
        for r in 0..3 {
            let row = &values[r * 32..(r + 1) * 32];
            let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert_eq!(w.scales[r], amax / 448.0);
            for (c, &v) in row.iter().enumerate() {
                let back = kiln_plugin_abi::e4m3::e4m3_value(w.codes[r * 32 + c]) * w.scales[r];
                // Three mantissa bits: half a step is at most 1/16 of the value.
                assert!((back - v).abs() <= v.abs() / 16.0 + 1e-6, "{v} vs {back}");
            }
        }
        assert_eq!(Fp8Linear::quantize(&[0.0; 4], 1, 4).scales, vec![1.0]);
    }

    #[test]
    fn checkpoint_scales_per_tensor_and_per_channel_and_refusals() {
        let codes = vec![0x38u8, 0xB8, 0x40, 0x00, 0x01, 0x7E];
        let w = view(WeightDType::F8_E4M3, &[2, 3], codes.clone());
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let tensor = view(WeightDType::F32, &[], f32s(&[0.5]));
        let l = Fp8Linear::from_checkpoint(&w, &tensor, 2, 3).unwrap();
        assert_eq!(l.scales, vec![0.5, 0.5]);
        let channel = view(WeightDType::F32, &[2, 1], f32s(&[0.5, 2.0]));
        let l = Fp8Linear::from_checkpoint(&w, &channel, 2, 3).unwrap();
        assert_eq!(l.scales, vec![0.5, 2.0]);
        assert_eq!(l.codes, codes);

        let blocks = view(WeightDType::F32, &[2, 3], f32s(&[1.0; 6]));
        let e = Fp8Linear::from_checkpoint(&w, &blocks, 2, 3).unwrap_err();
        assert!(e.0 == "weight_scale" && e.1.contains("block-wise"), "{e:?}");
        let mut nan = codes.clone();
        nan[4] = 0xFF;
        let e =
            Fp8Linear::from_checkpoint(&view(WeightDType::F8_E4M3, &[2, 3], nan), &tensor, 2, 3)
                .unwrap_err();
        assert_eq!(
            e,
            (
                "weight",
                "holds the NaN code 0xff at row 1, column 1".to_string()
            )
        );
        let e = Fp8Linear::from_checkpoint(&w, &tensor, 3, 2).unwrap_err();
        assert!(e.1.contains("expected [3, 2]"), "{e:?}");
    }
}
