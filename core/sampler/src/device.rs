//! The device-side form of a sequence's next draw ([`RowSampling`]): the
//! request's parameters, the sequence's random stream and the sparse logit
//! adjustments its history implies — the same processors as [`crate::process`]
//! (`logit_bias` → `min_tokens` masking → repetition penalty →
//! presence/frequency penalties), expressed per token so that a backend can
//! apply them to its logits without seeing the history.

use std::collections::BTreeMap;

use kiln_protocol::step::{LogitAdjustment, RowSampling};
use kiln_protocol::{SeqId, TokenId};

use crate::SamplerCore;
use crate::draw::mix64;
use crate::sequence::{Group, Seq};

/// What a backend can draw: set once at start-up with
/// [`SamplerCore::set_device_draws`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDraws {
    /// The device applies grammar masks, so constrained rows are drawn
    /// there too (after their masks are computed); without, they are drawn
    /// on the host.
    pub masks: bool,
}

/// How the rows of one step are drawn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepDraws {
    /// Rows the device draws during the forward pass.
    pub device: Vec<(SeqId, RowSampling)>,
    /// Constrained rows the device draws once their masks are computed
    /// (`allowed` is filled in then).
    pub deferred: Vec<(SeqId, RowSampling)>,
    /// Rows that follow a grammar: their masks are computed while the
    /// forward pass runs.
    pub constrained: Vec<SeqId>,
}

impl SamplerCore {
    /// Lets the device draw single-sample rows (default: every row is
    /// drawn on the host).
    pub fn set_device_draws(&mut self, draws: DeviceDraws) {
        self.device_draws = Some(draws);
    }

    /// How to draw a step's rows, given as `(sequence, samples)`: a row
    /// with one sample is drawn on the device when the device can, a row
    /// that forks (`n > 1`) on the host, and a row with no sample is only
    /// computed. Sequences unknown here are drawn on the host, which skips
    /// them.
    pub fn step_draws(&self, rows: &[(SeqId, u32)]) -> StepDraws {
        let mut out = StepDraws::default();
        for &(seq_id, samples) in rows {
            let constrained = samples > 0 && self.is_constrained(seq_id);
            if constrained {
                out.constrained.push(seq_id);
            }
            let Some(draws) = self.device_draws.filter(|_| samples == 1) else {
                continue;
            };
            if constrained && !draws.masks {
                continue;
            }
            let Some(row) = self.row_sampling(seq_id) else {
                continue;
            };
            if constrained {
                out.deferred.push((seq_id, row));
            } else {
                out.device.push((seq_id, row));
            }
        }
        out
    }
}

/// The seed of sequence `index`'s device stream for a request seeded with `seed`.
pub fn device_stream_seed(seed: u64, index: u32) -> u64 {
    mix64(seed ^ mix64(0xD1B5_4A32_D192_ED03u64.wrapping_mul(u64::from(index) + 1)))
}

/// The next draw of `seq` (of `group`) in device form.
pub(crate) fn row_sampling(group: &Group, seq: &Seq) -> RowSampling {
    let p = &group.sampling;
    RowSampling {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        seed: seq.device_seed,
        counter: seq.num_generated as u64,
        repetition_penalty: p.repetition_penalty,
        adjustments: adjustments(group, seq),
        logprobs: p.logprobs,
        allowed: seq.mask.clone(),
    }
}

/// Per-token adjustments by ascending id, mirroring `process::apply_processors`.
fn adjustments(group: &Group, seq: &Seq) -> Vec<LogitAdjustment> {
    let p = &group.sampling;
    let ctx = seq.row_context(group);
    let mut by_token: BTreeMap<TokenId, LogitAdjustment> = BTreeMap::new();
    fn entry(map: &mut BTreeMap<TokenId, LogitAdjustment>, token: TokenId) -> &mut LogitAdjustment {
        map.entry(token).or_insert(LogitAdjustment {
            token,
            ..LogitAdjustment::default()
        })
    }
    for &(token, bias) in &p.logit_bias {
        entry(&mut by_token, token).add_before += bias;
    }
    for &token in ctx.masked {
        entry(&mut by_token, token).add_before = f32::NEG_INFINITY;
    }
    if p.repetition_penalty != 1.0 {
        for &token in ctx.prompt_distinct.iter().chain(ctx.output_counts.keys()) {
            entry(&mut by_token, token).repeat = true;
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        for (&token, &count) in ctx.output_counts {
            entry(&mut by_token, token).add_after =
                -(p.presence_penalty + p.frequency_penalty * count as f32);
        }
    }
    by_token.into_values().collect()
}

/// Applies `adjustments`, then the `allowed` mask, to `row` as a device does
/// (the reference for backends).
pub fn apply_adjustments(row: &mut [f32], sampling: &RowSampling) {
    let penalty = sampling.repetition_penalty;
    for a in &sampling.adjustments {
        let Some(v) = row.get_mut(a.token as usize) else {
            continue;
        };
        let mut x = *v + a.add_before;
        if a.repeat {
            x = if x > 0.0 { x / penalty } else { x * penalty };
        }
        *v = x + a.add_after;
    }
    if let Some(allowed) = &sampling.allowed {
        crate::constraint::apply_mask(row, allowed);
    }
}
