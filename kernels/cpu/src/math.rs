//! Branch-free scalar math that compiles to the same results on every ISA
//! (additions and multiplications only, no fused steps), so loops over it
//! vectorize without changing a bit.

/// `1.5 · 2^23`: adding and subtracting it rounds half to even (|v| < 2^22).
const MAGIC: f32 = 12_582_912.0;

/// Below this, `exp` returns exactly 0 (covers −∞ for masked logits).
pub const EXP_MIN: f32 = -87.336_54;
/// `exp` saturates at `exp(EXP_MAX)` ≈ 1.65e38 above this.
pub const EXP_MAX: f32 = 88.0;

/// `e^x` with a relative error below 3e-7; `0` for `x < EXP_MIN`
/// (including −∞), NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    // The low mantissa bits of `t` hold n (two's complement offset by 2^22).
    let nbits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let p = p * (r * r) + r + 1.0;
    let scale = f32::from_bits(nbits.wrapping_add(127).wrapping_shl(23));
    let y = p * scale;
    if x < EXP_MIN { 0.0 } else { y }
}

/// `x · sigmoid(x) = x / (1 + e^−x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `tanh(x)` via `1 − 2/(e^{2x} + 1)` (absolute error below 1e-6).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Sum of squares with 16 interleaved partial sums and a fixed pairwise tree.
#[inline(always)]
pub fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l] * c[l];
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        acc[l] += v * v;
    }
    reduce16(acc)
}

/// Dot product with 16 interleaved partial sums and a fixed pairwise tree.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        for l in 0..16 {
            acc[l] += a[i + l] * b[i + l];
        }
    }
    for i in full..n {
        acc[i - full] += a[i] * b[i];
    }
    reduce16(acc)
}

/// `Σ e^(x − shift)` over the non-NaN entries, with 16 interleaved partial
/// sums and a fixed pairwise tree (relative error about 1e-6 for a
/// 150k-entry vocabulary, against ~1e-4 that a logprob printed to 4
/// decimals needs).
#[inline(always)]
pub fn sum_exp(x: &[f32], shift: f32) -> f32 {
    let term = |v: f32| if v.is_nan() { 0.0 } else { exp(v - shift) };
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += term(c[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += term(v);
    }
    reduce16(acc)
}

/// The largest non-NaN entry (−∞ when there is none), in 16 lanes.
#[inline(always)]
pub fn max_ignoring_nan(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            // NaN compares false and is skipped.
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] = if v > acc[l] { v } else { acc[l] };
    }
    acc.into_iter()
        .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

/// The lowest index of the largest entry (0 when none beats −∞; NaN never
/// wins), in 16 lanes: each lane keeps its first maximum, then the lanes'
/// winners are compared by value and index.
#[inline(always)]
pub fn argmax(x: &[f32]) -> usize {
    let mut best = [f32::NEG_INFINITY; 16];
    let mut at = [0u32; 16];
    let full = x.len() / 16 * 16;
    for (c, chunk) in x[..full].chunks_exact(16).enumerate() {
        for l in 0..16 {
            let take = chunk[l] > best[l];
            best[l] = if take { chunk[l] } else { best[l] };
            at[l] = if take { (c * 16 + l) as u32 } else { at[l] };
        }
    }
    for (l, &v) in x[full..].iter().enumerate() {
        if v > best[l] {
            best[l] = v;
            at[l] = (full + l) as u32;
        }
    }
    let mut win = (f32::NEG_INFINITY, 0u32);
    for l in 0..16 {
        if best[l] > win.0 || (best[l] == win.0 && best[l] > f32::NEG_INFINITY && at[l] < win.1) {
            win = (best[l], at[l]);
        }
    }
    win.1 as usize
}

/// `((a0+a8)+(a4+a12)) + …`: halve the vector four times.
#[inline(always)]
pub fn reduce16(mut acc: [f32; 16]) -> f32 {
    for half in [8, 4, 2, 1] {
        for l in 0..half {
            acc[l] += acc[l + half];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_exp_matches_f64_and_skips_nan() {
        let x: Vec<f32> = (0..150_001)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.02 - 15.0)
            .collect();
        let want: f64 = x.iter().map(|&v| ((v - 4.0) as f64).exp()).sum();
        let got = sum_exp(&x, 4.0) as f64;
        assert!(((got - want) / want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(sum_exp(&[f32::NAN, 0.0, f32::NEG_INFINITY], 0.0), 1.0);
        assert_eq!(sum_exp(&[], 0.0), 0.0);
    }

    fn argmax_reference(x: &[f32]) -> usize {
        let mut best = (f32::NEG_INFINITY, 0usize);
        for (i, &v) in x.iter().enumerate() {
            if v > best.0 {
                best = (v, i);
            }
        }
        best.1
    }

    #[test]
    fn argmax_takes_the_lowest_index_of_the_largest() {
        let mut x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32).collect();
        assert_eq!(argmax(&x), argmax_reference(&x));
        x[999] = 500.0;
        x[17] = 500.0;
        x[3] = f32::NAN;
        assert_eq!(argmax(&x), 17);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        for len in [1, 15, 16, 17, 33] {
            let y: Vec<f32> = (0..len).map(|i| (i % 3) as f32).collect();
            assert_eq!(argmax(&y), argmax_reference(&y), "{len}");
        }
        assert_eq!(max_ignoring_nan(&x), 500.0);
        assert_eq!(max_ignoring_nan(&[f32::NAN]), f32::NEG_INFINITY);
    }

    #[test]
    fn exp_is_accurate_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn silu_tanh_and_reductions() {
        for &x in &[-20.0f32, -1.5, 0.0, 0.3, 7.0] {
            let want = x as f64 / (1.0 + (-x as f64).exp());
            assert!((silu(x) as f64 - want).abs() < 1e-6 * (1.0 + want.abs()));
            assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 1e-6);
        }
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-3);
        let ss: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((sum_squares(&a) as f64 - ss).abs() < 1e-2);
    }
}
