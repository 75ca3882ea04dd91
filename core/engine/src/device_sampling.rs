//! Device-side sampling in the model runner: which logits rows are drawn on
//! the device, the `OP_SAMPLE` operands built from each row's
//! [`RowSampling`], and the drawn tokens read back. Only token ids and the
//! requested log-probabilities cross to the host; rows without a
//! [`RowSampling`] (an `n > 1` fork, or a backend without sampling) keep the
//! host path.

use std::collections::HashMap;

use kiln_plugin_abi::safe::{AbiResult, Buffer, Device};
use kiln_plugin_abi::{
    KILN_F32, KILN_I32, KILN_SAMPLE_MASKED, KILN_SAMPLE_SKIP, KILN_U8, KilnLogitAdjust,
    KilnSampleParams, KilnTensor, ops,
};
use kiln_protocol::step::{DeviceSample, LogitsRow, RowSampling};
use kiln_protocol::{SeqId, TokenId};

/// Most top alternatives a row may ask for.
pub const MAX_TOP: usize = kiln_protocol::MAX_TOP_LOGPROBS as usize;

/// How one step's logits rows are drawn.
#[derive(Debug, Default, PartialEq)]
pub struct RowSplit<'a> {
    /// `(logits row, seq, draw)` drawn on the device.
    pub device: Vec<(usize, SeqId, &'a RowSampling)>,
    /// `(logits row, row)` whose logits go to the host sampler.
    pub host: Vec<(usize, LogitsRow)>,
}

/// Split the step's logits rows between the device and the host.
pub fn split_rows<'a>(rows: &[LogitsRow], draws: &'a HashMap<SeqId, RowSampling>) -> RowSplit<'a> {
    let mut split = RowSplit::default();
    for (i, row) in rows.iter().enumerate() {
        match draws.get(&row.seq_id).filter(|_| row.num_samples == 1) {
            Some(draw) => split.device.push((i, row.seq_id, draw)),
            None => split.host.push((i, *row)),
        }
    }
    split
}

/// The `OP_SAMPLE` operands of one call, as bytes.
#[derive(Debug, Default, PartialEq)]
pub struct EncodedRows {
    /// `[m]` [`KilnSampleParams`].
    pub params: Vec<u8>,
    /// [`KilnLogitAdjust`] runs.
    pub adjust: Vec<u8>,
    /// `[m, words]` allowed-token bitsets (empty when no row is masked).
    pub allowed: Vec<u8>,
    /// 32-bit words per bitset row.
    pub words: usize,
}

/// The `OP_SAMPLE` operands for `m` logits rows: rows not drawn here are
/// flagged [`KILN_SAMPLE_SKIP`] with greedy parameters and no adjustments
/// (their logits stay untouched), their results are ignored.
pub fn encode_params(m: usize, device: &[(usize, SeqId, &RowSampling)]) -> EncodedRows {
    let mut params = vec![
        KilnSampleParams {
            flags: KILN_SAMPLE_SKIP,
            ..KilnSampleParams::default()
        };
        m
    ];
    let words = device
        .iter()
        .filter_map(|d| d.2.allowed.as_ref())
        .map(|a| a.words.len())
        .max()
        .unwrap_or(0);
    let mut allowed = if words > 0 {
        vec![0u8; m * words * 4]
    } else {
        Vec::new()
    };
    let mut adjust = Vec::new();
    for &(row, _, draw) in device {
        let start = adjust.len() / KilnLogitAdjust::SIZE;
        for a in &draw.adjustments {
            let entry = KilnLogitAdjust {
                token: a.token as i32,
                add_before: a.add_before,
                repeat: i32::from(a.repeat),
                add_after: a.add_after,
            };
            adjust.extend_from_slice(&entry.to_bytes());
        }
        params[row] = KilnSampleParams {
            temperature: draw.temperature,
            top_k: draw.top_k.min(i32::MAX as u32) as i32,
            top_p: draw.top_p,
            min_p: draw.min_p,
            seed: draw.seed,
            counter: draw.counter,
            repetition_penalty: draw.repetition_penalty,
            adjust_start: start as u32,
            adjust_count: draw.adjustments.len() as u32,
            flags: if draw.allowed.is_some() {
                KILN_SAMPLE_MASKED
            } else {
                0
            },
        };
        if let Some(mask) = &draw.allowed {
            let row_bytes = &mut allowed[row * words * 4..(row + 1) * words * 4];
            for (chunk, word) in row_bytes.chunks_exact_mut(4).zip(&mask.words) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    EncodedRows {
        params: params.iter().flat_map(KilnSampleParams::to_bytes).collect(),
        adjust,
        allowed,
        words,
    }
}

/// Device buffers of the sampling op, sized for `max_rows` rows.
pub struct SampleBuffers {
    max_rows: usize,
    params: Buffer,
    ids: Buffer,
    logprobs: Buffer,
    top_ids: Buffer,
    top_logprobs: Buffer,
    adjust: Option<Buffer>,
    allowed: Option<Buffer>,
}

impl SampleBuffers {
    /// Allocate for up to `max_rows` rows per step.
    pub fn allocate(device: &Device, max_rows: usize) -> AbiResult<SampleBuffers> {
        let rows = max_rows.max(1) as u64;
        Ok(SampleBuffers {
            max_rows: max_rows.max(1),
            params: device.alloc(rows * KilnSampleParams::SIZE as u64)?,
            ids: device.alloc(rows * 4)?,
            logprobs: device.alloc(rows * 4)?,
            top_ids: device.alloc(rows * MAX_TOP as u64 * 4)?,
            top_logprobs: device.alloc(rows * MAX_TOP as u64 * 4)?,
            adjust: None,
            allowed: None,
        })
    }

    /// Draw the `device` rows of `logits` (`[m, vocab]` f32) and read the results.
    pub fn draw(
        &mut self,
        device: &Device,
        logits: KilnTensor,
        rows: &[(usize, SeqId, &RowSampling)],
    ) -> AbiResult<Vec<DeviceSample>> {
        let m = logits.dims[0] as usize;
        if rows.is_empty() || m == 0 || m > self.max_rows {
            return Ok(Vec::new());
        }
        let encoded = encode_params(m, rows);
        let params = &encoded.params;
        device.write(&self.params, 0, params)?;
        let adjustments = upload(device, &mut self.adjust, &encoded.adjust)?;
        let allowed = upload(device, &mut self.allowed, &encoded.allowed)?;
        let allowed = if allowed.is_none() {
            allowed
        } else {
            let bitsets = self.allowed.as_ref().expect("uploaded above");
            bitsets.view(0, KILN_I32, &[m as u64, encoded.words as u64])
        };
        let num_top = rows
            .iter()
            .map(|r| r.2.logprobs.unwrap_or(0) as usize)
            .max()
            .unwrap_or(0)
            .min(MAX_TOP);
        let top = |b: &Buffer, dtype| {
            if num_top == 0 {
                KilnTensor::NONE
            } else {
                b.view(0, dtype, &[m as u64, num_top as u64])
            }
        };
        device.execute(&[ops::sample(ops::Sample {
            logits,
            params: self.params.view(0, KILN_U8, &[params.len() as u64]),
            out_ids: self.ids.view(0, KILN_I32, &[m as u64]),
            out_logprobs: self.logprobs.view(0, KILN_F32, &[m as u64]),
            out_top_ids: top(&self.top_ids, KILN_I32),
            out_top_logprobs: top(&self.top_logprobs, KILN_F32),
            adjustments,
            allowed,
            num_top: num_top as i64,
        })])?;
        self.read_results(device, m, num_top, rows)
    }

    fn read_results(
        &self,
        device: &Device,
        m: usize,
        num_top: usize,
        rows: &[(usize, SeqId, &RowSampling)],
    ) -> AbiResult<Vec<DeviceSample>> {
        let ids = read_words(device, &self.ids, m)?;
        let lps = read_words(device, &self.logprobs, m)?;
        let (top_ids, top_lps) = if num_top > 0 {
            (
                read_words(device, &self.top_ids, m * num_top)?,
                read_words(device, &self.top_logprobs, m * num_top)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(rows
            .iter()
            .map(|&(row, seq_id, draw)| {
                let wanted = draw.logprobs.map_or(0, |n| (n as usize).min(num_top));
                DeviceSample {
                    seq_id,
                    token_id: ids[row] as TokenId,
                    logprob: draw.logprobs.map(|_| f32::from_bits(lps[row])),
                    top_logprobs: (0..wanted)
                        .map(|j| {
                            (
                                top_ids[row * num_top + j] as TokenId,
                                f32::from_bits(top_lps[row * num_top + j]),
                            )
                        })
                        .collect(),
                }
            })
            .collect())
    }
}

/// Writes `bytes` to `slot` (grown to a power of two when too small) and
/// views them as bytes; `NONE` when there are none.
fn upload(device: &Device, slot: &mut Option<Buffer>, bytes: &[u8]) -> AbiResult<KilnTensor> {
    if bytes.is_empty() {
        return Ok(KilnTensor::NONE);
    }
    if slot.as_ref().is_none_or(|b| b.len() < bytes.len() as u64) {
        *slot = None;
        *slot = Some(device.alloc((bytes.len() as u64).next_power_of_two())?);
    }
    let buf = slot.as_ref().expect("allocated above");
    device.write(buf, 0, bytes)?;
    Ok(buf.view(0, KILN_U8, &[bytes.len() as u64]))
}

/// `n` 32-bit words from the start of `buf`.
fn read_words(device: &Device, buf: &Buffer, n: usize) -> AbiResult<Vec<u32>> {
    let mut bytes = vec![0u8; n * 4];
    device.read(buf, 0, &mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::step::{LogitAdjustment, TokenMask};

    fn draw(temperature: f32, adjust: &[u32]) -> RowSampling {
        RowSampling {
            temperature,
            top_p: 1.0,
            repetition_penalty: 1.3,
            seed: 9,
            counter: 4,
            adjustments: adjust
                .iter()
                .map(|&t| LogitAdjustment {
                    token: t,
                    repeat: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn forks_and_rows_without_a_draw_stay_on_the_host() {
        let draws: HashMap<SeqId, RowSampling> = [(1, draw(0.0, &[])), (2, draw(0.7, &[]))].into();
        let rows = [
            LogitsRow {
                seq_id: 1,
                num_samples: 1,
            },
            LogitsRow {
                seq_id: 2,
                num_samples: 3,
            },
            LogitsRow {
                seq_id: 3,
                num_samples: 1,
            },
        ];
        let split = split_rows(&rows, &draws);
        assert_eq!(
            split.device.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            vec![(0, 1)]
        );
        assert_eq!(
            split.host.iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn parameters_point_at_each_rows_adjustments() {
        let (a, mut b) = (draw(0.5, &[3, 9]), draw(0.0, &[4]));
        let mut mask = TokenMask::empty(40);
        mask.insert(33);
        b.allowed = Some(mask);
        let EncodedRows {
            params,
            adjust,
            allowed,
            words,
        } = encode_params(3, &[(0, 1, &a), (2, 2, &b)]);
        let p: Vec<KilnSampleParams> = params
            .chunks(KilnSampleParams::SIZE)
            .map(|c| KilnSampleParams::from_bytes(c).unwrap())
            .collect();
        assert_eq!(
            (p[0].adjust_start, p[0].adjust_count, p[0].temperature),
            (0, 2, 0.5)
        );
        assert_eq!((p[1].adjust_count, p[1].temperature), (0, 0.0));
        assert_eq!(
            (p[0].flags, p[1].flags, p[2].flags),
            (0, KILN_SAMPLE_SKIP, KILN_SAMPLE_MASKED)
        );
        // Row 2's bitset: word 1, bit 1 (token 33); the other rows are empty.
        assert_eq!(words, 2);
        let w: Vec<u32> = allowed
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(w, vec![0, 0, 0, 0, 0, 1 << 1]);
        assert_eq!(
            (p[2].adjust_start, p[2].adjust_count, p[2].counter),
            (2, 1, 4)
        );
        let tokens: Vec<i32> = adjust
            .chunks(KilnLogitAdjust::SIZE)
            .map(|c| KilnLogitAdjust::from_bytes(c).unwrap().token)
            .collect();
        assert_eq!(tokens, vec![3, 9, 4]);
    }
}
