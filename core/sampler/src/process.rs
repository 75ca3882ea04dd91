//! Logits processors that depend on a sequence's history, applied in place
//! to a copy of the raw row in this order: `logit_bias` → `min_tokens`
//! masking → repetition penalty → presence/frequency penalties → the
//! grammar's mask (structured outputs).
//! Temperature, top-k, top-p and min-p follow in [`crate::draw`].
//!
//! Each processor touches only the token ids it concerns (bias entries,
//! masked ids, tokens seen so far), never the whole row. Ids outside the row
//! are ignored.

use std::collections::HashMap;

use kiln_protocol::step::TokenMask;
use kiln_protocol::{SamplingParams, TokenId};

use crate::constraint::apply_mask;

/// How often each token occurs in a sequence's output.
pub type OutputCounts = HashMap<TokenId, u32>;

/// Everything the processors need about one sequence.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    /// The request's sampling parameters.
    pub params: &'a SamplingParams,
    /// Distinct prompt tokens, sorted ascending (see [`distinct_sorted`]);
    /// only read when `repetition_penalty != 1`.
    pub prompt_distinct: &'a [TokenId],
    /// Output token counts of this sequence.
    pub output_counts: &'a OutputCounts,
    /// Tokens forced to `-inf` (EOS and stop tokens while fewer than
    /// `min_tokens` were generated); empty otherwise.
    pub masked: &'a [TokenId],
    /// The only tokens a grammar allows (applied last); `None`: all.
    pub allowed: Option<&'a TokenMask>,
}

/// The distinct values of `tokens`, sorted ascending.
pub fn distinct_sorted(tokens: &[TokenId]) -> Vec<TokenId> {
    let mut v = tokens.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// True when at least one processor would change the row; otherwise the raw
/// row can be drawn from without a copy.
pub fn needs_processing(ctx: &RowContext<'_>) -> bool {
    let p = ctx.params;
    let has_output = !ctx.output_counts.is_empty();
    !p.logit_bias.is_empty()
        || !ctx.masked.is_empty()
        || ctx.allowed.is_some()
        || (p.repetition_penalty != 1.0 && (has_output || !ctx.prompt_distinct.is_empty()))
        || ((p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) && has_output)
}

/// Applies every processor to `row` (\[vocab\] logits) in the documented order.
pub fn apply_processors(row: &mut [f32], ctx: &RowContext<'_>) {
    apply_logit_bias(row, &ctx.params.logit_bias);
    mask_tokens(row, ctx.masked);
    apply_repetition_penalty(row, ctx);
    apply_presence_frequency(row, ctx);
    if let Some(allowed) = ctx.allowed {
        apply_mask(row, allowed);
    }
}

/// Adds each `(id, bias)` to the logit of `id` (repeated ids add up).
pub fn apply_logit_bias(row: &mut [f32], bias: &[(TokenId, f32)]) {
    for &(id, b) in bias {
        if let Some(v) = row.get_mut(id as usize) {
            *v += b;
        }
    }
}

/// Sets the logits of `ids` to `-inf` so they can never be drawn.
pub fn mask_tokens(row: &mut [f32], ids: &[TokenId]) {
    for &id in ids {
        if let Some(v) = row.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// HF-style repetition penalty over prompt and output tokens (each distinct
/// token once): a positive logit is divided by the penalty, a negative one
/// multiplied.
pub fn apply_repetition_penalty(row: &mut [f32], ctx: &RowContext<'_>) {
    let penalty = ctx.params.repetition_penalty;
    if penalty == 1.0 {
        return;
    }
    let penalize = |v: &mut f32| {
        *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
    };
    for &id in ctx.prompt_distinct {
        if let Some(v) = row.get_mut(id as usize) {
            penalize(v);
        }
    }
    for &id in ctx.output_counts.keys() {
        if ctx.prompt_distinct.binary_search(&id).is_ok() {
            continue;
        }
        if let Some(v) = row.get_mut(id as usize) {
            penalize(v);
        }
    }
}

/// OpenAI-style penalties over output tokens:
/// `logit -= presence · [count > 0] + frequency · count`.
pub fn apply_presence_frequency(row: &mut [f32], ctx: &RowContext<'_>) {
    let (presence, frequency) = (ctx.params.presence_penalty, ctx.params.frequency_penalty);
    if presence == 0.0 && frequency == 0.0 {
        return;
    }
    for (&id, &count) in ctx.output_counts {
        if let Some(v) = row.get_mut(id as usize) {
            *v -= presence + frequency * count as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        params: &'a SamplingParams,
        prompt: &'a [TokenId],
        counts: &'a OutputCounts,
        masked: &'a [TokenId],
    ) -> RowContext<'a> {
        RowContext {
            params,
            prompt_distinct: prompt,
            output_counts: counts,
            masked,
            allowed: None,
        }
    }

    #[test]
    fn logit_bias_adds_and_ignores_unknown_ids() {
        let mut row = vec![1.0, 2.0, 3.0];
        apply_logit_bias(&mut row, &[(0, 1.5), (2, -3.0), (0, 0.5), (99, 7.0)]);
        assert_eq!(row, vec![3.0, 2.0, 0.0]);
    }

    #[test]
    fn masking_sets_minus_infinity() {
        let mut row = vec![1.0, 2.0, 3.0];
        mask_tokens(&mut row, &[1, 42]);
        assert_eq!(row, vec![1.0, f32::NEG_INFINITY, 3.0]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        // Token 1 is in the prompt and the output: penalized once.
        let counts: OutputCounts = [(1, 3), (3, 1)].into();
        let mut row = vec![4.0, -4.0, 5.0, 1.0];
        apply_repetition_penalty(&mut row, &ctx(&p, &[0, 1], &counts, &[]));
        assert_eq!(row, vec![2.0, -8.0, 5.0, 0.5]);
    }

    #[test]
    fn presence_and_frequency_follow_openai() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        let counts: OutputCounts = [(2, 3), (0, 1)].into();
        let mut row = vec![1.0, 1.0, 1.0];
        // The prompt does not count for these penalties.
        apply_presence_frequency(&mut row, &ctx(&p, &[1], &counts, &[]));
        assert_eq!(row, vec![0.25, 1.0, -0.25]);
    }

    #[test]
    fn processors_run_in_order() {
        // Bias first, then the repetition penalty sees the biased value.
        let p = SamplingParams {
            logit_bias: vec![(0, 2.0), (1, 3.0)],
            repetition_penalty: 2.0,
            presence_penalty: 1.0,
            ..Default::default()
        };
        let counts: OutputCounts = [(0, 1)].into();
        let mut row = vec![2.0, -1.0, 0.0, 7.0];
        let c = ctx(&p, &[1], &counts, &[3]);
        assert!(needs_processing(&c));
        apply_processors(&mut row, &c);
        // 0: (2+2)/2 - 1 = 1; 1: -1+3 = 2 → 2/2 = 1; 3: masked.
        assert_eq!(row, vec![1.0, 1.0, 0.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn defaults_need_no_processing() {
        let p = SamplingParams::default();
        let counts: OutputCounts = [(0, 1)].into();
        assert!(!needs_processing(&ctx(&p, &[1, 2], &counts, &[])));
        let pres = SamplingParams {
            presence_penalty: 0.5,
            ..Default::default()
        };
        assert!(!needs_processing(&ctx(
            &pres,
            &[1],
            &OutputCounts::new(),
            &[]
        )));
        assert!(needs_processing(&ctx(&pres, &[1], &counts, &[])));
    }

    #[test]
    fn distinct_sorted_dedups() {
        assert_eq!(distinct_sorted(&[5, 1, 5, 3, 1]), vec![1, 3, 5]);
    }
}
