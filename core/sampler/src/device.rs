//! The device-side form of a sequence's next draw ([`RowSampling`]): the
//! request's parameters, the sequence's random stream and the sparse logit
//! adjustments its history implies — the same processors as [`crate::process`]
//! (`logit_bias` → `min_tokens` masking → repetition penalty →
//! presence/frequency penalties), expressed per token so that a backend can
//! apply them to its logits without seeing the history.

use std::collections::BTreeMap;

use kiln_protocol::TokenId;
use kiln_protocol::step::{LogitAdjustment, RowSampling};

use crate::draw::mix64;
use crate::sequence::{Group, Seq};

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
