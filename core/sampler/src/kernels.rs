//! Row kernels over f32 logits: argmax, maximum, a fast `exp`, log-sum-exp
//! and the `n` largest entries.
//!
//! Every loop walks the row once in fixed-width lanes so that the compiler
//! can vectorize it, and the lane order is fixed, so results are
//! bit-for-bit reproducible for a given row. NaN entries never win a
//! comparison and get weight 0.

use kiln_protocol::TokenId;

/// Lanes of the vectorizable loops.
const LANES: usize = 16;

/// Entries summed into one `f64` partial sum by [`exp_weights`].
pub const BLOCK: usize = 1024;

/// Index of the largest value, lowest index on ties, in one pass.
///
/// NaN never wins; when no entry exceeds `-inf` (empty row, all `-inf` or
/// NaN) the answer is 0.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut best_at = [u32::MAX; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        let base = (c * LANES) as u32;
        for l in 0..LANES {
            let v = chunk[l];
            let greater = v > best[l];
            best[l] = if greater { v } else { best[l] };
            best_at[l] = if greater { base + l as u32 } else { best_at[l] };
        }
    }
    let mut value = f32::NEG_INFINITY;
    let mut at = u32::MAX;
    for l in 0..LANES {
        if best[l] > value || (best[l] == value && best_at[l] < at) {
            value = best[l];
            at = best_at[l];
        }
    }
    let base = row.len() - tail.len();
    for (i, &v) in tail.iter().enumerate() {
        if v > value {
            value = v;
            at = (base + i) as u32;
        }
    }
    if at == u32::MAX { 0 } else { at as usize }
}

/// The largest value, ignoring NaN; `-inf` for an empty or all-NaN row.
pub fn max_value(row: &[f32]) -> f32 {
    let mut best = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for l in 0..LANES {
            best[l] = if chunk[l] > best[l] {
                chunk[l]
            } else {
                best[l]
            };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in best.iter().chain(tail) {
        if v > m {
            m = v;
        }
    }
    m
}

/// `e^x` for `x <= 0` (exact at 0), relative error below 1e-6; 0 for
/// `x < -87` or NaN. Branch-free so that loops over it vectorize.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let underflow = x.is_nan() || x < -87.0;
    let x = if underflow { 0.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r for |r| <= ln2/2: degree 7 leaves < 6e-9.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let exponent = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((exponent.wrapping_add(127) as u32) << 23);
    if underflow { 0.0 } else { p * scale }
}

/// How [`exp_weights`] turns logits into unnormalized probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightSpec {
    /// Subtracted before scaling: the row's maximum, so the best weight is 1.
    pub shift: f32,
    /// Multiplier after the shift: `1 / temperature`.
    pub scale: f32,
    /// Weights below this are set to 0 (min-p relative to the best weight 1).
    pub floor: f32,
}

/// `weights[i] = e^((row[i] - shift) · scale)`, zeroed below `floor`, and
/// the sum of every [`BLOCK`] consecutive weights into `block_sums`.
/// Returns the total (f64).
///
/// `weights` and `block_sums` are resized; their previous content is lost.
pub fn exp_weights(
    row: &[f32],
    spec: WeightSpec,
    weights: &mut Vec<f32>,
    block_sums: &mut Vec<f64>,
) -> f64 {
    weights.clear();
    weights.resize(row.len(), 0.0);
    block_sums.clear();
    let mut total = 0.0f64;
    for (src, dst) in row.chunks(BLOCK).zip(weights.chunks_mut(BLOCK)) {
        let sum = exp_block(src, spec, dst);
        block_sums.push(sum);
        total += sum;
    }
    total
}

fn exp_block(src: &[f32], spec: WeightSpec, dst: &mut [f32]) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut s = src.chunks_exact(LANES);
    let mut d = dst.chunks_exact_mut(LANES);
    for (sc, dc) in (&mut s).zip(&mut d) {
        for l in 0..LANES {
            let w = fast_exp((sc[l] - spec.shift) * spec.scale);
            let w = if w >= spec.floor { w } else { 0.0 };
            dc[l] = w;
            acc[l] += w;
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| f64::from(a)).sum();
    for (&x, w) in s.remainder().iter().zip(d.into_remainder()) {
        let v = fast_exp((x - spec.shift) * spec.scale);
        *w = if v >= spec.floor { v } else { 0.0 };
        sum += f64::from(*w);
    }
    sum
}

/// `ln Σ e^row[i]`: the normalizer of log-softmax (NaN entries count as 0).
/// A row whose maximum is not finite returns that maximum (`-inf` when every
/// entry is `-inf` or NaN, `+inf` when one is `+inf`).
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let m = max_value(row);
    if !m.is_finite() {
        return m;
    }
    let mut total = 0.0f64;
    for block in row.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for l in 0..LANES {
                acc[l] += fast_exp(chunk[l] - m);
            }
        }
        total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
        total += tail
            .iter()
            .map(|&x| f64::from(fast_exp(x - m)))
            .sum::<f64>();
    }
    m + total.ln() as f32
}

/// Orders `(value, id)` pairs most likely first, ties by lower id.
#[inline]
pub fn by_value_desc(a: &(f32, TokenId), b: &(f32, TokenId)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Fills `out` with the `n` largest entries of `row` as `(value, id)`, most
/// likely first, ties by lower id; NaN entries are skipped.
///
/// Small `n` keeps a sorted buffer and skips whole lanes below its
/// threshold; large `n` uses a linear-time selection.
pub fn top_n_into(row: &[f32], n: usize, out: &mut Vec<(f32, TokenId)>) {
    out.clear();
    if n == 0 {
        return;
    }
    if n > SMALL_N {
        select_top(row, n, out);
    } else {
        insert_top(row, n, out);
    }
}

/// Above this many entries [`top_n_into`] selects instead of inserting.
const SMALL_N: usize = 64;

fn insert_top(row: &[f32], n: usize, out: &mut Vec<(f32, TokenId)>) {
    out.reserve(n + 1);
    let chunks = row.chunks_exact(LANES);
    let tail_start = row.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        if out.len() == n && max_value(chunk) <= out[n - 1].0 {
            continue;
        }
        for (l, &v) in chunk.iter().enumerate() {
            offer(out, n, v, (c * LANES + l) as TokenId);
        }
    }
    for (i, &v) in row[tail_start..].iter().enumerate() {
        offer(out, n, v, (tail_start + i) as TokenId);
    }
}

/// Inserts `(v, id)` when it beats the worst kept entry (ids arrive in
/// increasing order, so an equal value never displaces a lower id).
#[inline]
fn offer(out: &mut Vec<(f32, TokenId)>, n: usize, v: f32, id: TokenId) {
    if v.is_nan() {
        return;
    }
    if out.len() == n {
        if v <= out[n - 1].0 {
            return;
        }
        out.pop();
    }
    let at = out.partition_point(|&(kept, _)| kept >= v);
    out.insert(at, (v, id));
}

fn select_top(row: &[f32], n: usize, out: &mut Vec<(f32, TokenId)>) {
    out.extend(
        row.iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| (v, i as TokenId)),
    );
    if n < out.len() {
        out.select_nth_unstable_by(n - 1, by_value_desc);
        out.truncate(n);
    }
    out.sort_unstable_by(by_value_desc);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wavy(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 1e6)
            .collect()
    }

    #[test]
    fn argmax_prefers_the_lowest_index_on_ties_across_lanes() {
        let mut row = vec![0.0f32; 100];
        row[70] = 5.0;
        row[33] = 5.0;
        row[99] = 5.0;
        assert_eq!(argmax(&row), 33);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        // A maximum only in the tail.
        row[99] = 6.0;
        assert_eq!(argmax(&row), 99);
    }

    #[test]
    fn argmax_ignores_nan_and_handles_degenerate_rows() {
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), 0);
        assert_eq!(argmax(&[f32::NAN; 40]), 0);
        let mut row = vec![f32::NEG_INFINITY; 40];
        row[20] = f32::INFINITY;
        assert_eq!(argmax(&row), 20);
    }

    #[test]
    fn argmax_matches_a_plain_scan() {
        for seed in 0..20 {
            let row = wavy(1000 + seed as usize, seed);
            let plain = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0;
            assert_eq!(argmax(&row), plain);
        }
    }

    #[test]
    fn fast_exp_is_accurate_and_exact_at_zero() {
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(-88.0), 0.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(f32::NAN), 0.0);
        let mut x = -86.9f32;
        while x <= 10.0 {
            let want = f64::from(x).exp();
            let got = f64::from(fast_exp(x));
            assert!(((got - want) / want).abs() < 1e-6, "e^{x}: {got} vs {want}");
            x += 0.0137;
        }
    }

    #[test]
    fn log_sum_exp_matches_f64() {
        let row = wavy(5000, 3);
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let want = f64::from(m)
            + row
                .iter()
                .map(|&v| f64::from(v - m).exp())
                .sum::<f64>()
                .ln();
        assert!((f64::from(log_sum_exp(&row)) - want).abs() < 1e-5);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY]), f32::NEG_INFINITY);
    }

    #[test]
    fn exp_weights_apply_floor_and_sum_by_block() {
        let row = wavy(2500, 9);
        let m = max_value(&row);
        let (mut w, mut blocks) = (Vec::new(), Vec::new());
        let spec = WeightSpec {
            shift: m,
            scale: 2.0,
            floor: 0.5,
        };
        let total = exp_weights(&row, spec, &mut w, &mut blocks);
        assert_eq!(blocks.len(), 3);
        for (i, &x) in row.iter().enumerate() {
            let e = (f64::from(x - m) * 2.0).exp();
            if e < 0.499 {
                assert_eq!(w[i], 0.0);
            } else if e > 0.501 {
                assert!((f64::from(w[i]) - e).abs() < 1e-6);
            }
        }
        let sum: f64 = w.iter().map(|&v| f64::from(v)).sum();
        assert!((total - sum).abs() < 1e-6 * sum);
        assert!((blocks.iter().sum::<f64>() - total).abs() < 1e-9);
    }

    #[test]
    fn top_n_orders_breaks_ties_by_id_and_matches_a_sort() {
        let mut out = Vec::new();
        top_n_into(&[0.5, 2.0, 2.0, -1.0], 3, &mut out);
        assert_eq!(out, vec![(2.0, 1), (2.0, 2), (0.5, 0)]);
        for (len, n) in [
            (1000usize, 5usize),
            (1000, 64),
            (1000, 65),
            (1000, 999),
            (10, 50),
        ] {
            let mut row = wavy(len, n as u32);
            row[7] = row[3];
            row[len / 2] = f32::NAN;
            let mut want: Vec<(f32, TokenId)> = row
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, &v)| (v, i as TokenId))
                .collect();
            want.sort_by(by_value_desc);
            want.truncate(n);
            top_n_into(&row, n, &mut out);
            assert_eq!(out, want, "len {len} n {n}");
        }
    }
}
