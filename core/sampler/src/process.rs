//! Logits processing and drawing for one row.
//!
//! Order (as in vLLM): logit_bias → min_tokens masking → repetition penalty
//! → presence/frequency penalties → temperature → top-k → top-p → min-p →
//! draw. Greedy is an argmax (ties → lowest id). Log-probabilities come from
//! the raw logits.

use std::collections::HashMap;

use kiln_protocol::{SamplingParams, TokenId};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;

/// Per-sequence inputs of the processors.
pub struct RowContext<'a> {
    /// Sampling parameters.
    pub params: &'a SamplingParams,
    /// Tokens of the prompt (for the repetition penalty).
    pub prompt: &'a [TokenId],
    /// Output token counts (presence/frequency, repetition).
    pub output_counts: &'a HashMap<TokenId, u32>,
    /// Token ids masked while `min_tokens` is not reached (EOS, stop ids).
    pub masked: &'a [TokenId],
}

/// Index of the largest value (lowest index on ties).
pub fn argmax(row: &[f32]) -> usize {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter().position(|&v| v == max).unwrap_or(0)
}

/// `(max, log-sum-exp)` of a row.
pub fn log_normalizer(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

/// The `n` most likely tokens of a row, most likely first (ties by id).
pub fn top_n(row: &[f32], n: usize) -> Vec<(TokenId, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let cmp = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i as TokenId, row[i])).collect()
}

/// True when no processor changes the logits (a plain argmax or draw suffices).
pub fn needs_processing(ctx: &RowContext<'_>) -> bool {
    let p = ctx.params;
    !p.logit_bias.is_empty()
        || !ctx.masked.is_empty()
        || p.repetition_penalty != 1.0
        || p.presence_penalty != 0.0
        || p.frequency_penalty != 0.0
}

/// Apply bias, masks and penalties in place.
pub fn apply_processors(row: &mut [f32], ctx: &RowContext<'_>) {
    let p = ctx.params;
    for &(id, bias) in &p.logit_bias {
        if let Some(v) = row.get_mut(id as usize) {
            *v += bias;
        }
    }
    for &id in ctx.masked {
        if let Some(v) = row.get_mut(id as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
    if p.repetition_penalty != 1.0 {
        let mut seen: Vec<TokenId> = ctx.prompt.to_vec();
        seen.extend(ctx.output_counts.keys().copied());
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(v) = row.get_mut(id as usize) {
                *v = if *v > 0.0 {
                    *v / p.repetition_penalty
                } else {
                    *v * p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        for (&id, &count) in ctx.output_counts {
            if let Some(v) = row.get_mut(id as usize) {
                *v -= p.presence_penalty + p.frequency_penalty * count as f32;
            }
        }
    }
}

/// A uniform f64 in [0, 1) from the stream.
pub fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Draw from processed logits with temperature, top-k, top-p and min-p.
pub fn draw(row: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> TokenId {
    let inv_t = 1.0 / p.temperature.max(1e-5);
    let mut cand: Vec<(usize, f32)> = row
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i, v * inv_t))
        .collect();
    if cand.is_empty() {
        return argmax(row) as TokenId;
    }
    let desc = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = p.top_k as usize;
    if k > 0 && k < cand.len() {
        cand.select_nth_unstable_by(k - 1, desc);
        cand.truncate(k);
    }
    let sorted = p.top_p < 1.0;
    if sorted {
        cand.sort_by(desc);
    }
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut keep = cand.len();
    if sorted {
        let mut cum = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            cum += pr / total;
            if cum >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if p.min_p > 0.0 {
        // The largest probability is exp(0) = 1 in these units.
        let threshold = p.min_p as f64;
        for pr in probs.iter_mut() {
            if *pr < threshold {
                *pr = 0.0;
            }
        }
    }
    probs.truncate(keep);
    let mass: f64 = probs.iter().sum();
    let mut u = uniform(rng) * mass;
    for (i, pr) in probs.iter().enumerate() {
        if u < *pr {
            return cand[i].0 as TokenId;
        }
        u -= pr;
    }
    // Rounding left a sliver: the last kept candidate with mass.
    let last = probs.iter().rposition(|&pr| pr > 0.0).unwrap_or(0);
    cand[last].0 as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    #[test]
    fn argmax_prefers_the_lowest_id_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_n_orders_and_breaks_ties_by_id() {
        assert_eq!(
            top_n(&[0.5, 2.0, 2.0, -1.0], 3),
            vec![(1, 2.0), (2, 2.0), (0, 0.5)]
        );
    }

    #[test]
    fn penalties_follow_hf_and_openai() {
        let mut row = vec![2.0, -2.0, 1.0, 1.0];
        let counts: HashMap<TokenId, u32> = [(2, 3)].into();
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(3, 10.0)],
            ..Default::default()
        };
        apply_processors(
            &mut row,
            &RowContext {
                params: &p,
                prompt: &[0, 1],
                output_counts: &counts,
                masked: &[],
            },
        );
        assert_eq!(row, vec![1.0, -4.0, 0.5 - 0.5 - 0.75, 11.0]);
    }

    #[test]
    fn restricted_draws_stay_in_the_allowed_set() {
        let row: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let top5: Vec<TokenId> = top_n(&row, 5).into_iter().map(|t| t.0).collect();
        for _ in 0..500 {
            let t = draw(
                &row,
                &SamplingParams {
                    top_k: 5,
                    ..params(1.0)
                },
                &mut rng,
            );
            assert!(top5.contains(&t));
        }
        // top_p tiny → only the best token.
        for _ in 0..50 {
            assert_eq!(
                draw(
                    &row,
                    &SamplingParams {
                        top_p: 1e-6,
                        ..params(1.0)
                    },
                    &mut rng
                ),
                top5[0]
            );
        }
        // min_p near 1 → only tokens close to the best.
        for _ in 0..50 {
            let t = draw(
                &row,
                &SamplingParams {
                    min_p: 0.999,
                    ..params(1.0)
                },
                &mut rng,
            );
            assert_eq!(t, top5[0]);
        }
    }

    #[test]
    fn temperature_sampling_matches_softmax() {
        let row = vec![0.0f32, 1.0, 2.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[draw(&row, &params(1.0), &mut rng) as usize] += 1;
        }
        let z: f64 = row.iter().map(|v| (*v as f64).exp()).sum();
        for i in 0..3 {
            let want = (row[i] as f64).exp() / z;
            let got = counts[i] as f64 / 30_000.0;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
    }
}
