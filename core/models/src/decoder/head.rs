//! The head: selected rows of the final residual → final norm → LM head
//! (→ logit scale, soft-cap, f32). A forward pass runs it over the rows that
//! sample; [`RowHead`] runs it again over any rows of the last pass (a
//! prompt's rows, for prompt log-probabilities) into buffers of its own, so
//! that the step's logits, some of which may still wait on the device for a
//! deferred draw, stay untouched.

use kiln_plugin_abi::ops::{self, Accumulate};
use kiln_plugin_abi::safe::{Buffer, Device};
use kiln_plugin_abi::{KILN_F32, KILN_I32, KilnOp, KilnTensor};

use super::dtype::ActDType;
use super::graph::{norm_op, raw};
use super::step::StepBuffers;
use super::{Decoder, DecoderError};

/// Where the head reads and writes; `m` rows are selected by `indices`.
#[derive(Clone, Copy)]
pub(crate) struct HeadViews {
    /// `[n, hidden]` the final residual of the pass.
    pub residual: KilnTensor,
    /// `[m]` i32 rows of `residual`.
    pub indices: KilnTensor,
    /// `[m, hidden]` scratch.
    pub hidden: KilnTensor,
    /// `[m, hidden]` scratch.
    pub normed: KilnTensor,
    /// `[m, vocab]` in the activation dtype.
    pub logits: KilnTensor,
    /// `[m, vocab]` f32 (the same tensor as `logits` for f32 activations).
    pub logits_f32: KilnTensor,
    /// Leading selected rows that are decode rows (see `OP_LINEAR`).
    pub decode_rows: u64,
}

/// Queue the head over `v` (nothing for an encoder, which has no head).
pub(crate) fn head_ops(d: &Decoder, v: HeadViews, ops: &mut Vec<KilnOp>) {
    let Some(final_norm) = &d.final_norm else {
        return;
    };
    ops.push(ops::gather_rows(v.residual, v.indices, v.hidden));
    ops.push(norm_op(d, v.hidden, final_norm, v.normed));
    let head = d.lm_head.as_ref().unwrap_or(&d.embed);
    ops.push(ops::linear(ops::Linear {
        x: v.normed,
        weight: head.raw(),
        bias: raw(&d.lm_head_bias),
        out: v.logits,
        accumulate: Accumulate::Overwrite,
        decode_rows: v.decode_rows,
    }));
    if let Some(f) = d.variant.logit_scale {
        ops.push(ops::scale(v.logits, f, v.logits, Accumulate::Overwrite));
    }
    if let Some(cap) = d.variant.final_softcap {
        ops.push(ops::softcap(v.logits, cap, v.logits));
    }
    if d.act != ActDType::F32 {
        ops.push(ops::cast(v.logits, v.logits_f32));
    }
}

/// Buffers for the logits of up to [`RowHead::ROWS`] rows at a time.
pub struct RowHead {
    indices: Buffer,
    hidden: Buffer,
    normed: Buffer,
    logits: Buffer,
    logits_f32: Option<Buffer>,
}

impl RowHead {
    /// Rows per pass: bounds the buffers (`ROWS × vocab` logits) whatever
    /// the prompt's length.
    pub const ROWS: usize = 32;

    /// Allocate for `decoder`'s shapes on `device`.
    pub fn allocate(device: &Device, decoder: &Decoder) -> Result<RowHead, DecoderError> {
        let (rows, act) = (Self::ROWS as u64, decoder.act);
        let c = &decoder.config;
        let acts = |cols: usize| device.alloc(rows * cols as u64 * act.size());
        Ok(RowHead {
            indices: device.alloc(rows * 4)?,
            hidden: acts(c.hidden_size)?,
            normed: acts(c.hidden_size)?,
            logits: acts(c.vocab_size)?,
            logits_f32: match act {
                ActDType::F32 => None,
                _ => Some(device.alloc(rows * c.vocab_size as u64 * 4)?),
            },
        })
    }
}

impl Decoder {
    /// `[rows.len(), vocab]` f32 logits of rows `rows` of the last forward
    /// pass over `batch_rows` tokens, each computed as a prefill row (the
    /// same arithmetic as the pass's own prefill logits rows).
    pub fn row_logits(
        &self,
        device: &Device,
        bufs: &StepBuffers,
        head: &RowHead,
        batch_rows: usize,
        rows: &[i32],
    ) -> Result<Vec<f32>, DecoderError> {
        let (act, h, vocab) = (
            self.act.abi(),
            self.config.hidden_size as u64,
            self.config.vocab_size,
        );
        let mut out = vec![0f32; rows.len() * vocab];
        for (chunk, dst) in rows
            .chunks(RowHead::ROWS)
            .zip(out.chunks_mut(RowHead::ROWS * vocab))
        {
            let m = chunk.len() as u64;
            let index_bytes: Vec<u8> = chunk.iter().flat_map(|i| i.to_le_bytes()).collect();
            device.write(&head.indices, 0, &index_bytes)?;
            let logits = head.logits.view(0, act, &[m, vocab as u64]);
            let views = HeadViews {
                residual: bufs.residual_view(batch_rows),
                indices: head.indices.view(0, KILN_I32, &[m]),
                hidden: head.hidden.view(0, act, &[m, h]),
                normed: head.normed.view(0, act, &[m, h]),
                logits,
                logits_f32: head
                    .logits_f32
                    .as_ref()
                    .map_or(logits, |b| b.view(0, KILN_F32, &[m, vocab as u64])),
                decode_rows: 0,
            };
            let mut ops = Vec::with_capacity(6);
            head_ops(self, views, &mut ops);
            device.execute(&ops)?;
            let f32s = head.logits_f32.as_ref().unwrap_or(&head.logits);
            // SAFETY: f32 has no padding and every byte pattern is a valid f32.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, size_of_val(dst))
            };
            device.read(f32s, 0, bytes)?;
        }
        Ok(out)
    }
}
