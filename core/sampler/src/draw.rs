//! Drawing one token from a processed logits row: temperature → top-k →
//! top-p → min-p → draw, or a single argmax pass when greedy.
//!
//! A row is first *prepared* into a [`Prepared`] distribution (unnormalized
//! weights over the whole vocabulary, or over the few candidates top-k /
//! top-p leave), then drawn from with one uniform number of the sequence's
//! own stream: the draw depends only on the row and that stream. Preparation
//! avoids full sorts: top-k keeps a bounded buffer (or selects in linear
//! time) and ranks only its survivors; top-p over the whole vocabulary
//! finds its boundary from a histogram of the probability mass and ranks
//! only the tokens of the bucket where the mass is reached.

use kiln_protocol::{SamplingParams, TokenId};
use rand::{Rng, SeedableRng, TryRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::{BLOCK, WeightSpec, argmax, by_value_desc, exp_weights, fast_exp, top_n_into};

/// A sequence's random stream.
pub type SeqRng = ChaCha8Rng;

/// The stream of sequence `index` of a request seeded with `seed`: ChaCha8
/// keyed by `seed` (expanded as `SeedableRng::seed_from_u64` does), on
/// stream number `index`. Same `(seed, index)` → same stream.
pub fn sequence_rng(seed: u64, index: u32) -> SeqRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::from(index));
    rng
}

/// A fresh seed from the operating system's entropy source (falling back to
/// the clock if the OS refuses).
pub fn entropy_seed() -> u64 {
    rand::rngs::SysRng.try_next_u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        mix64(nanos)
    })
}

/// SplitMix64 finalizer: spreads the bits of `x` (seed derivation).
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform `f64` in `[0, 1)` from the top 53 bits of one `u64` of `rng`.
pub fn uniform(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Temperatures below this are greedy (matches `SamplingParams::is_greedy`).
const GREEDY_TEMPERATURE: f32 = 1e-5;

/// The histogram bucket of a positive weight: its exponent and top 5
/// mantissa bits, increasing with the weight.
fn bucket(w: f32) -> usize {
    (w.to_bits() >> 18) as usize
}

/// The first window of most likely tokens top-p sorts; it grows ×4.
const FIRST_NUCLEUS_WINDOW: usize = 64;

/// Reusable buffers for preparing distributions (no allocation per draw
/// once they reached the vocabulary size).
#[derive(Debug, Default, Clone)]
pub struct DrawScratch {
    /// \[vocab\] weights of a dense distribution.
    weights: Vec<f32>,
    /// \[ceil(vocab / BLOCK)\] sums of `weights` per block.
    block_sums: Vec<f64>,
    /// `(weight, id)` of a sparse distribution, most likely first.
    candidates: Vec<(f32, TokenId)>,
    /// Mass of the dense weights per bucket (top-p).
    histogram: Vec<f64>,
}

/// A distribution ready to draw from, borrowing the scratch that holds it.
#[derive(Debug)]
pub struct Prepared<'a> {
    kind: Kind,
    scratch: &'a DrawScratch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Always this token (greedy, or a row without a usable maximum).
    Fixed(TokenId),
    /// Weights over the whole row, with block sums; their total.
    Dense(f64),
    /// Weights over the candidates; their total.
    Sparse(f64),
}

impl DrawScratch {
    /// Prepares `row` (\[vocab\] processed logits) for drawing under `params`'
    /// temperature, top-k, top-p and min-p.
    ///
    /// Greedy (`temperature < 1e-5` or `top_k == 1`) is one argmax pass.
    /// A row whose maximum is not finite (all `-inf`/NaN, or a `+inf`
    /// entry) also falls back to argmax.
    pub fn prepare(&mut self, row: &[f32], params: &SamplingParams) -> Prepared<'_> {
        let kind = self.prepare_kind(row, params);
        Prepared {
            kind,
            scratch: self,
        }
    }

    fn prepare_kind(&mut self, row: &[f32], params: &SamplingParams) -> Kind {
        let fixed = || Kind::Fixed(argmax(row) as TokenId);
        let inv_t = 1.0 / params.temperature;
        if params.top_k == 1
            || params.temperature.is_nan()
            || params.temperature < GREEDY_TEMPERATURE
            || !inv_t.is_finite()
        {
            return fixed();
        }
        let k = params.top_k as usize;
        let kind = if k > 0 && k < row.len() {
            self.prepare_top_k(row, k, inv_t, params)
        } else {
            self.prepare_dense(row, inv_t, params)
        };
        match kind {
            Some(k @ (Kind::Dense(t) | Kind::Sparse(t))) if t > 0.0 && t.is_finite() => k,
            _ => fixed(),
        }
    }

    /// Top-k candidates, then top-p and min-p on them.
    fn prepare_top_k(
        &mut self,
        row: &[f32],
        k: usize,
        inv_t: f32,
        params: &SamplingParams,
    ) -> Option<Kind> {
        top_n_into(row, k, &mut self.candidates);
        let max = self.candidates.first()?.0;
        if !max.is_finite() {
            return None;
        }
        let mut total = 0.0f64;
        for c in &mut self.candidates {
            c.0 = fast_exp((c.0 - max) * inv_t);
            total += f64::from(c.0);
        }
        Some(self.finish_sparse(total, params))
    }

    /// Weights over the whole row; top-p and min-p zero the tokens they drop.
    fn prepare_dense(&mut self, row: &[f32], inv_t: f32, params: &SamplingParams) -> Option<Kind> {
        let max = crate::kernels::max_value(row);
        if !max.is_finite() {
            return None;
        }
        let nucleus = params.top_p < 1.0;
        let spec = WeightSpec {
            shift: max,
            scale: inv_t,
            floor: if nucleus { 0.0 } else { params.min_p },
        };
        let total = exp_weights(row, spec, &mut self.weights, &mut self.block_sums);
        if !nucleus {
            return Some(Kind::Dense(total));
        }
        let (last_w, last_id) = self.nucleus_boundary(f64::from(params.top_p) * total)?;
        let min_p = params.min_p;
        let total = self
            .restrict_dense(|w, id| (w > last_w || (w == last_w && id <= last_id)) && w >= min_p);
        Some(Kind::Dense(total))
    }

    /// The least likely token `(weight, id)` of the nucleus of the dense
    /// weights: the smallest prefix, in (weight desc, id asc) order, whose
    /// mass reaches `target`. A histogram of the weights' mass by bucket
    /// (exponent and 5 mantissa bits) finds the bucket where the mass is
    /// reached; only that bucket's tokens are ranked.
    fn nucleus_boundary(&mut self, target: f64) -> Option<(f32, TokenId)> {
        let top = bucket(1.0);
        let hist = &mut self.histogram;
        hist.clear();
        hist.resize(top + 1, 0.0);
        for &w in &self.weights {
            if w > 0.0 {
                hist[bucket(w).min(top)] += f64::from(w);
            }
        }
        let mut above = 0.0f64;
        let mut reached = None;
        let mut lowest = None;
        for b in (0..=top).rev() {
            if hist[b] > 0.0 {
                if above + hist[b] >= target {
                    reached = Some(b);
                    break;
                }
                above += hist[b];
                lowest = Some(b);
            }
        }
        // Rounding may leave `target` just out of reach: then every token.
        let boundary = match reached {
            Some(b) => b,
            None => {
                let b = lowest?;
                above -= hist[b];
                b
            }
        };
        self.candidates.clear();
        self.candidates.extend(
            self.weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w > 0.0 && bucket(**w).min(top) == boundary)
                .map(|(i, &w)| (w, i as TokenId)),
        );
        keep_nucleus(&mut self.candidates, target - above);
        self.candidates.last().copied()
    }

    /// Zeroes the dense weights `keep(weight, id)` rejects; recomputes the
    /// block sums and returns the new total.
    fn restrict_dense(&mut self, keep: impl Fn(f32, TokenId) -> bool) -> f64 {
        let mut total = 0.0f64;
        for (b, (block, sum)) in self
            .weights
            .chunks_mut(BLOCK)
            .zip(self.block_sums.iter_mut())
            .enumerate()
        {
            let base = b * BLOCK;
            let mut s = 0.0f64;
            for (j, w) in block.iter_mut().enumerate() {
                if !keep(*w, (base + j) as TokenId) {
                    *w = 0.0;
                }
                s += f64::from(*w);
            }
            *sum = s;
            total += s;
        }
        total
    }

    /// Applies top-p and min-p to `candidates` (weights, best weight 1).
    fn finish_sparse(&mut self, total: f64, params: &SamplingParams) -> Kind {
        if params.top_p < 1.0 {
            keep_nucleus(&mut self.candidates, f64::from(params.top_p) * total);
        } else if params.min_p > 0.0 {
            self.candidates.sort_unstable_by(by_value_desc);
        }
        if params.min_p > 0.0 {
            let keep = self.candidates.partition_point(|c| c.0 >= params.min_p);
            self.candidates.truncate(keep);
        }
        let sum = self.candidates.iter().map(|c| f64::from(c.0)).sum();
        Kind::Sparse(sum)
    }
}

/// Keeps the most likely candidates, in order, while the mass before each
/// is below `target` (the smallest set reaching it). Sorts only growing
/// windows of the best candidates.
fn keep_nucleus(candidates: &mut Vec<(f32, TokenId)>, target: f64) {
    let mut cumulative = 0.0f64;
    let mut done = 0;
    let mut window = FIRST_NUCLEUS_WINDOW;
    loop {
        let end = (done + window).min(candidates.len());
        if end < candidates.len() {
            candidates[done..].select_nth_unstable_by(end - done - 1, by_value_desc);
        }
        candidates[done..end].sort_unstable_by(by_value_desc);
        for j in done..end {
            if cumulative >= target {
                candidates.truncate(j);
                return;
            }
            cumulative += f64::from(candidates[j].0);
        }
        if end == candidates.len() {
            return;
        }
        done = end;
        window = window.saturating_mul(4);
    }
}

impl Prepared<'_> {
    /// The token every draw returns, when the distribution is a single token
    /// (greedy); such draws consume nothing from the stream.
    pub fn fixed_token(&self) -> Option<TokenId> {
        match self.kind {
            Kind::Fixed(t) => Some(t),
            _ => None,
        }
    }

    /// Draws one token with one `u64` of `rng` (none when fixed). Only
    /// tokens with positive weight can come out.
    pub fn draw(&self, rng: &mut impl Rng) -> TokenId {
        match self.kind {
            Kind::Fixed(t) => t,
            Kind::Dense(total) => self.draw_dense(uniform(rng) * total),
            Kind::Sparse(total) => self.draw_sparse(uniform(rng) * total),
        }
    }

    fn draw_dense(&self, u: f64) -> TokenId {
        let s = self.scratch;
        let mut acc = 0.0f64;
        for (b, &block_sum) in s.block_sums.iter().enumerate() {
            if acc + block_sum > u {
                let start = b * BLOCK;
                let end = (start + BLOCK).min(s.weights.len());
                let block = &s.weights[start..end];
                return (start + pick(block.iter().copied(), u - acc)) as TokenId;
            }
            acc += block_sum;
        }
        // Rounding left `u` past the end: the last token with weight.
        s.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as TokenId
    }

    fn draw_sparse(&self, u: f64) -> TokenId {
        let c = &self.scratch.candidates;
        let at = pick(c.iter().map(|x| x.0), u);
        c.get(at).map_or(0, |x| x.1)
    }
}

/// Index of the weight where the running sum first exceeds `u`; the last
/// positive weight if rounding never gets there.
fn pick(weights: impl Iterator<Item = f32>, u: f64) -> usize {
    let mut acc = 0.0f64;
    let mut last_positive = 0;
    for (i, w) in weights.enumerate() {
        if w > 0.0 {
            acc += f64::from(w);
            last_positive = i;
            if acc > u {
                return i;
            }
        }
    }
    last_positive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    fn row(len: usize) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.37).sin() * 3.0).collect()
    }

    fn ranked(row: &[f32]) -> Vec<TokenId> {
        let mut ids: Vec<TokenId> = (0..row.len() as TokenId).collect();
        ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        ids
    }

    fn draw_many(row: &[f32], p: &SamplingParams, n: usize, seed: u64) -> Vec<TokenId> {
        let mut scratch = DrawScratch::default();
        let prepared = scratch.prepare(row, p);
        let mut rng = sequence_rng(seed, 0);
        (0..n).map(|_| prepared.draw(&mut rng)).collect()
    }

    #[test]
    fn greedy_is_argmax_and_uses_no_randomness() {
        let r = row(300);
        let mut scratch = DrawScratch::default();
        for p in [
            params(0.0),
            SamplingParams {
                top_k: 1,
                ..params(1.0)
            },
        ] {
            let prepared = scratch.prepare(&r, &p);
            assert_eq!(prepared.fixed_token(), Some(argmax(&r) as TokenId));
        }
    }

    #[test]
    fn top_k_stays_in_the_k_best() {
        let r = row(500);
        let best: Vec<TokenId> = ranked(&r)[..5].to_vec();
        let p = SamplingParams {
            top_k: 5,
            ..params(1.5)
        };
        let drawn = draw_many(&r, &p, 2000, 1);
        assert!(drawn.iter().all(|t| best.contains(t)));
        for t in &best {
            assert!(drawn.contains(t), "{t} never drawn");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (logits are log2 steps).
        let ln2 = std::f32::consts::LN_2;
        let r = vec![-2.0 * ln2, 0.0, -ln2, -3.0 * ln2, -3.0 * ln2];
        let keep = |top_p: f32| -> Vec<TokenId> {
            let mut d = draw_many(
                &r,
                &SamplingParams {
                    top_p,
                    ..params(1.0)
                },
                3000,
                2,
            );
            d.sort_unstable();
            d.dedup();
            d
        };
        assert_eq!(keep(0.5), vec![1]);
        assert_eq!(keep(0.51), vec![1, 2]);
        assert_eq!(keep(0.8), vec![0, 1, 2]);
        assert_eq!(keep(0.9), vec![0, 1, 2, 3]);
        assert_eq!(keep(1e-6), vec![1]);
    }

    #[test]
    fn top_p_selects_beyond_the_first_window() {
        // A flat row: the nucleus holds ~90% of 1000 tokens.
        let r = vec![0.0f32; 1000];
        let drawn = draw_many(
            &r,
            &SamplingParams {
                top_p: 0.9,
                ..params(1.0)
            },
            5000,
            3,
        );
        // Ties are ranked by id: the nucleus is ids 0..900.
        assert!(drawn.iter().all(|&t| t < 900));
        assert!(drawn.iter().any(|&t| t > 800));
    }

    #[test]
    fn dense_top_p_keeps_exactly_the_sorted_prefix() {
        for (len, spread, top_p) in [
            (5000, 4.0, 0.9f32),
            (5000, 12.0, 0.5),
            (3000, 0.5, 0.95),
            (70_000, 8.0, 0.7),
        ] {
            let r: Vec<f32> = (0..len)
                .map(|i| ((i as u64 * 0x9E37_79B9) % 10_007) as f32 / 10_007.0 * spread)
                .collect();
            let p = SamplingParams {
                top_p,
                ..params(1.0)
            };
            let mut scratch = DrawScratch::default();
            let total_before = {
                let max = crate::kernels::max_value(&r);
                let mut w = Vec::new();
                let spec = WeightSpec {
                    shift: max,
                    scale: 1.0,
                    floor: 0.0,
                };
                exp_weights(&r, spec, &mut w, &mut Vec::new());
                let mut sorted: Vec<(f32, TokenId)> = w
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x, i as TokenId))
                    .collect();
                sorted.sort_by(by_value_desc);
                let total: f64 = w.iter().map(|&x| f64::from(x)).sum();
                let mut cum = 0.0;
                let mut want = Vec::new();
                for (x, id) in sorted {
                    if cum >= f64::from(top_p) * total {
                        break;
                    }
                    cum += f64::from(x);
                    want.push(id);
                }
                want.sort_unstable();
                want
            };
            let prepared = scratch.prepare(&r, &p);
            assert!(matches!(prepared.kind, Kind::Dense(_)));
            let kept: Vec<TokenId> = scratch
                .weights
                .iter()
                .enumerate()
                .filter(|(_, w)| **w > 0.0)
                .map(|(i, _)| i as TokenId)
                .collect();
            assert_eq!(
                kept, total_before,
                "len {len} spread {spread} top_p {top_p}"
            );
        }
    }

    #[test]
    fn min_p_drops_tokens_below_the_fraction_of_the_best() {
        let r = vec![0.0f32, (0.3f32).ln(), (0.05f32).ln(), (0.2f32).ln()];
        for top_k in [0, 3] {
            let drawn = draw_many(
                &r,
                &SamplingParams {
                    min_p: 0.25,
                    top_k,
                    ..params(1.0)
                },
                2000,
                4,
            );
            assert!(drawn.iter().all(|&t| t == 0 || t == 1), "top_k {top_k}");
            assert!(drawn.contains(&1));
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let mut r = vec![0.0f32; 64];
        r[5] = f32::NEG_INFINITY;
        r[6] = f32::NAN;
        for p in [
            params(1.0),
            SamplingParams {
                top_p: 0.99,
                ..params(3.0)
            },
            SamplingParams {
                top_k: 63,
                ..params(3.0)
            },
        ] {
            let drawn = draw_many(&r, &p, 3000, 5);
            assert!(!drawn.contains(&5) && !drawn.contains(&6));
        }
    }

    #[test]
    fn degenerate_rows_fall_back_to_argmax() {
        let r = vec![f32::NEG_INFINITY; 8];
        assert_eq!(draw_many(&r, &params(1.0), 3, 0), vec![0, 0, 0]);
        let mut r = vec![0.0f32; 8];
        r[3] = f32::INFINITY;
        assert_eq!(draw_many(&r, &params(1.0), 3, 0), vec![3, 3, 3]);
        let p = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert_eq!(draw_many(&[1.0, 2.0], &p, 2, 0), vec![1, 1]);
    }

    fn check_frequencies(r: &[f32], p: &SamplingParams, n: usize) {
        let drawn = draw_many(r, p, n, 7);
        let scaled: Vec<f64> = r.iter().map(|&v| f64::from(v / p.temperature)).collect();
        let z: f64 = scaled.iter().map(|v| v.exp()).sum();
        for (i, v) in scaled.iter().enumerate() {
            let want = v.exp() / z;
            let got = drawn.iter().filter(|&&t| t as usize == i).count() as f64 / n as f64;
            // ~4.5 standard deviations.
            let tolerance = 4.5 * (want * (1.0 - want) / n as f64).sqrt() + 1e-3;
            assert!((got - want).abs() < tolerance, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn temperature_sampling_matches_softmax() {
        check_frequencies(&[0.0, 1.0, 2.0, -1.0, 0.5], &params(1.0), 40_000);
        check_frequencies(&[0.0, 1.0, 2.0, -1.0, 0.5], &params(0.5), 40_000);
        check_frequencies(&[0.0, 1.0, 2.0, -1.0, 0.5], &params(2.0), 40_000);
        // Across several dense blocks.
        let wide: Vec<f32> = (0..3000)
            .map(|i| if i % 700 == 0 { 6.0 } else { 0.0 })
            .collect();
        let drawn = draw_many(&wide, &params(1.0), 20_000, 8);
        let peaks = drawn.iter().filter(|&&t| t % 700 == 0).count() as f64 / 20_000.0;
        let e6 = 6f64.exp();
        let want = 5.0 * e6 / (5.0 * e6 + 2995.0);
        assert!((peaks - want).abs() < 0.02, "{peaks} vs {want}");
    }

    #[test]
    fn streams_differ_by_index_and_repeat_by_seed() {
        let a: Vec<u64> = (0..4).map(|_| sequence_rng(9, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(sequence_rng(9, 0).next_u64(), sequence_rng(9, 1).next_u64());
        assert_ne!(
            sequence_rng(9, 0).next_u64(),
            sequence_rng(10, 0).next_u64()
        );
        assert_ne!(entropy_seed(), entropy_seed());
    }

    #[test]
    fn uniform_stays_in_the_unit_interval() {
        let mut rng = sequence_rng(1, 0);
        for _ in 0..1000 {
            let u = uniform(&mut rng);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
