//! A sparse layer's experts as the two stacked weights `OP_MOE` reads: one
//! `[E·2·I, h]` matrix holding, per expert, its I gate rows then its I up
//! rows, and one `[E·h, I]` matrix of the experts' down projections one
//! after another.
//!
//! Checkpoints hold experts in three forms, all stacked here by moving whole
//! rows (so quantized GGUF blocks stay as stored: the host never
//! dequantizes them): one 2-D tensor per expert and projection (Hugging Face
//! checkpoints), 3-D `[E, rows, cols]` stacks per projection (GGUF
//! `ffn_{gate,up,down}_exps`), or transformers 5's in-memory
//! `gate_up_proj`/`down_proj` stacks, already in `OP_MOE`'s layout.

use std::borrow::Cow;

use kiln_plugin_abi::safe::Weight;

use super::DecoderError;
use super::loader::{Loader, TensorRef, to_q8_0};
use crate::names::{Role, hf_expert_name, hf_fused_expert_names};
use crate::weights::dequant::dequantize_view;
use crate::weights::quantize::QuantizeAtLoad;
use crate::weights::{TensorView, WeightDType};

/// The sizes of one layer's experts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpertDims {
    /// E.
    pub count: usize,
    /// I, one expert's inner width.
    pub inter: usize,
    /// h.
    pub hidden: usize,
}

/// The device weights of one layer's experts.
pub(crate) struct ExpertStacks {
    /// `[E·2·I, h]`: per expert, gate rows then up rows.
    pub gate_up: Weight,
    /// `[E·h, I]`: per expert, its down projection.
    pub down: Weight,
}

/// Load the experts of `layer` from whichever form the checkpoint holds.
pub(crate) fn load_experts(
    l: &mut Loader<'_, '_>,
    layer: usize,
    d: ExpertDims,
) -> Result<ExpertStacks, DecoderError> {
    let (gate_up, down) = match fused_stacks(l, layer, d)? {
        Some(stacks) => stacks,
        None => match l.find(TensorRef::layer(Role::ExpertGates, layer))? {
            Some(gates) => {
                let ups = l.view(TensorRef::layer(Role::ExpertUps, layer))?;
                let downs = l.view(TensorRef::layer(Role::ExpertDowns, layer))?;
                let gates = split_stack(&gates, d.count, d.inter, d.hidden)?;
                let ups = split_stack(&ups, d.count, d.inter, d.hidden)?;
                let downs = split_stack(&downs, d.count, d.hidden, d.inter)?;
                (
                    interleave(layer, &gates, &ups, d)?,
                    concat(layer, &downs, [d.count * d.hidden, d.inter])?,
                )
            }
            None => per_expert(l, layer, d)?,
        },
    };
    let gate_up_shape = [2 * d.count * d.inter, d.hidden];
    let down_shape = [d.count * d.hidden, d.inter];
    // FP8's scales are per row, so the stacks quantize as their experts would.
    Ok(match l.quantize_at_load {
        Some(QuantizeAtLoad::Int8) => ExpertStacks {
            gate_up: l.prepare(to_q8_0(gate_up, d.hidden), &gate_up_shape)?,
            down: l.prepare(to_q8_0(down, d.inter), &down_shape)?,
        },
        Some(QuantizeAtLoad::Fp8) => ExpertStacks {
            gate_up: l.prepare_as_fp8(gate_up, &gate_up_shape)?,
            down: l.prepare_as_fp8(down, &down_shape)?,
        },
        None => ExpertStacks {
            gate_up: l.prepare(gate_up, &gate_up_shape)?,
            down: l.prepare(down, &down_shape)?,
        },
    })
}

/// transformers 5's `[E, 2I, h]` and `[E, h, I]` stacks, when present: the
/// same bytes as `OP_MOE`'s matrices.
fn fused_stacks<'a>(
    l: &Loader<'a, '_>,
    layer: usize,
    d: ExpertDims,
) -> Result<Option<(TensorView<'a>, TensorView<'a>)>, DecoderError> {
    let Some((gate_up_name, down_name)) = hf_fused_expert_names(l.family, layer) else {
        return Ok(None);
    };
    let Some(gate_up) = l.source.tensor(&gate_up_name)? else {
        return Ok(None);
    };
    let down = l
        .source
        .tensor(&down_name)?
        .ok_or(DecoderError::MissingTensor(down_name))?;
    let flatten = |v: TensorView<'a>, rows: usize, cols: usize| {
        if v.shape != [d.count, rows, cols] {
            return Err(DecoderError::BadShape {
                name: v.name.clone(),
                actual: v.shape.clone(),
                expected: vec![d.count, rows, cols],
            });
        }
        Ok(TensorView {
            shape: vec![d.count * rows, cols],
            ..v
        })
    };
    Ok(Some((
        flatten(gate_up, 2 * d.inter, d.hidden)?,
        flatten(down, d.hidden, d.inter)?,
    )))
}

/// One `[E, rows, cols]` stack as its E `[rows, cols]` slices.
fn split_stack<'a>(
    v: &TensorView<'a>,
    count: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<TensorView<'a>>, DecoderError> {
    if v.shape != [count, rows, cols] || !v.data.len().is_multiple_of(count) {
        return Err(DecoderError::BadShape {
            name: v.name.clone(),
            actual: v.shape.clone(),
            expected: vec![count, rows, cols],
        });
    }
    let bytes = v.data.len() / count;
    Ok((0..count)
        .map(|e| TensorView {
            name: v.name.clone(),
            dtype: v.dtype,
            shape: vec![rows, cols],
            data: Cow::Owned(v.data[e * bytes..(e + 1) * bytes].to_vec()),
        })
        .collect())
}

/// Every expert's own tensors, by their Hugging Face names.
fn per_expert<'a>(
    l: &Loader<'a, '_>,
    layer: usize,
    d: ExpertDims,
) -> Result<(TensorView<'a>, TensorView<'a>), DecoderError> {
    let each = |role: Role| -> Result<Vec<TensorView<'a>>, DecoderError> {
        (0..d.count)
            .map(|e| {
                let name = hf_expert_name(l.family, role, layer, e).ok_or_else(|| {
                    DecoderError::MissingTensor(format!("{role:?} of layer {layer}"))
                })?;
                l.source
                    .tensor(&name)?
                    .ok_or(DecoderError::MissingTensor(name))
            })
            .collect()
    };
    let (gates, ups, downs) = (
        each(Role::ExpertGates)?,
        each(Role::ExpertUps)?,
        each(Role::ExpertDowns)?,
    );
    Ok((
        interleave(layer, &gates, &ups, d)?,
        concat(layer, &downs, [d.count * d.hidden, d.inter])?,
    ))
}

/// Per expert, its gate rows then its up rows, as one `[E·2·I, h]` matrix.
fn interleave<'a>(
    layer: usize,
    gates: &[TensorView<'a>],
    ups: &[TensorView<'a>],
    d: ExpertDims,
) -> Result<TensorView<'a>, DecoderError> {
    let pairs: Vec<TensorView<'a>> = gates
        .iter()
        .zip(ups)
        .flat_map(|(g, u)| [g.clone(), u.clone()])
        .collect();
    concat(layer, &pairs, [2 * d.count * d.inter, d.hidden])
}

/// `parts` (each `[rows_i, cols]`) one after another as one `shape` matrix.
/// Parts must share one storage type; float parts of different types meet
/// in f32, quantized ones cannot be stacked and are refused.
fn concat<'a>(
    layer: usize,
    parts: &[TensorView<'a>],
    shape: [usize; 2],
) -> Result<TensorView<'a>, DecoderError> {
    let first = parts.first().ok_or_else(|| DecoderError::ExpertStack {
        layer,
        reason: "the layer has no experts".into(),
    })?;
    for p in parts {
        if p.shape.len() != 2 || p.shape[1] != shape[1] {
            return Err(DecoderError::BadShape {
                name: p.name.clone(),
                actual: p.shape.clone(),
                expected: vec![p.shape.first().copied().unwrap_or(0), shape[1]],
            });
        }
    }
    let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
    if rows != shape[0] {
        return Err(DecoderError::BadShape {
            name: first.name.clone(),
            actual: vec![rows, shape[1]],
            expected: shape.to_vec(),
        });
    }
    let name = stack_name(&first.name);
    let dtype = first.dtype;
    if let Some(other) = parts.iter().find(|p| p.dtype != dtype) {
        if !(dtype.is_float() && other.dtype.is_float()) {
            return Err(DecoderError::ExpertStack {
                layer,
                reason: format!(
                    "`{}` is {} but `{}` is {}; one stacked weight needs one storage type",
                    first.name, dtype, other.name, other.dtype
                ),
            });
        }
        let mut values = Vec::with_capacity(shape[0] * shape[1]);
        for p in parts {
            values.extend(dequantize_view(p).ok_or_else(|| DecoderError::ExpertStack {
                layer,
                reason: format!("cannot read `{}` ({})", p.name, p.dtype),
            })?);
        }
        return Ok(TensorView {
            name,
            dtype: WeightDType::F32,
            shape: shape.to_vec(),
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
    }
    let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    for p in parts {
        data.extend_from_slice(&p.data);
    }
    Ok(TensorView {
        name,
        dtype,
        shape: shape.to_vec(),
        data: Cow::Owned(data),
    })
}

/// The name a stacked weight is reported under: the first part's, without
/// its expert index (`…experts.0.w1.weight` → `…experts.w1.weight`).
fn stack_name(first: &str) -> String {
    match first.split_once(".experts.0.") {
        Some((before, after)) => format!("{before}.experts.{after}"),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        name: &str,
        dtype: WeightDType,
        rows: usize,
        cols: usize,
        fill: u8,
    ) -> TensorView<'static> {
        let bytes = dtype.bytes_for(rows * cols).unwrap();
        TensorView {
            name: name.into(),
            dtype,
            shape: vec![rows, cols],
            data: Cow::Owned(vec![fill; bytes]),
        }
    }

    #[test]
    fn gate_and_up_rows_alternate_per_expert_as_whole_quantized_rows() {
        let d = ExpertDims {
            count: 2,
            inter: 2,
            hidden: 32,
        };
        let q = WeightDType::Q8_0;
        let gates = [view("g0", q, 2, 32, 1), view("g1", q, 2, 32, 3)];
        let ups = [view("u0", q, 2, 32, 2), view("u1", q, 2, 32, 4)];
        let stacked = interleave(0, &gates, &ups, d).unwrap();
        assert_eq!(stacked.shape, vec![8, 32]);
        let row = q.bytes_for(32).unwrap();
        let firsts: Vec<u8> = stacked.data.chunks(row).map(|r| r[0]).collect();
        assert_eq!(firsts, vec![1, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn a_stack_splits_into_experts_and_mixed_quantized_types_are_refused() {
        let q = WeightDType::Q8_0;
        let mut stack = view("blk.0.ffn_gate_exps.weight", q, 4, 32, 0);
        stack.shape = vec![2, 2, 32];
        let parts = split_stack(&stack, 2, 2, 32).unwrap();
        assert_eq!((parts.len(), parts[1].shape.clone()), (2, vec![2, 32]));
        assert!(split_stack(&stack, 4, 2, 32).is_err());
        let d = ExpertDims {
            count: 1,
            inter: 2,
            hidden: 32,
        };
        let err = interleave(
            3,
            &[view("gate", q, 2, 32, 0)],
            &[view("up", WeightDType::Q4_0, 2, 32, 0)],
            d,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("layer 3") && err.contains("Q4_0"), "{err}");
        let floats = interleave(
            0,
            &[view("gate", WeightDType::F16, 2, 32, 0)],
            &[view("up", WeightDType::BF16, 2, 32, 0)],
            d,
        )
        .unwrap();
        assert_eq!(floats.dtype, WeightDType::F32);
        assert_eq!(
            stack_name("model.layers.0.mlp.experts.0.up_proj.weight"),
            "model.layers.0.mlp.experts.up_proj.weight"
        );
    }
}
