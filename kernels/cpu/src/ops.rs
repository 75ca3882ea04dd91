//! Row-wise and element-wise kernels on f32 activations: RMS norm (with a
//! fused residual add), RoPE, SiLU-gating, adds and embedding lookup.
//!
//! Each output row depends only on its own input row, through arithmetic
//! written without fused steps in a fixed order, so results are the same for
//! every batch, thread count and ISA (the ISA only changes vector width).

use crate::isa::detect;
use crate::math;
use crate::pool::{ThreadPool, chunk};
use crate::weights::WeightMatrix;

/// Compile `body` three times (AVX-512, AVX2, baseline) into `fn name(isa, args…)`
/// that runs the variant of `isa` (capped to what the CPU supports). The body
/// must not use fused multiply-adds, so all three produce identical bits.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name(isa: crate::isa::Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            unsafe fn wide512($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn wide256($($arg: $ty),*) { body($($arg),*) }
            match crate::isa::clamp(isa) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `clamp` checked the CPU features.
                crate::isa::Isa::Avx512Vnni => unsafe { wide512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                crate::isa::Isa::Avx2 => unsafe { wide256($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: tasks touch disjoint rows.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// Row `r` of width `h`.
    ///
    /// # Safety
    /// In bounds, and only one task touches row `r`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize, h: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r * h), h) }
    }
}

/// Elements below which a row-wise op stays on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 15;

/// Run `f(row range)` over `rows` rows of `h` elements, on the pool when large.
fn rows_parallel(
    pool: &ThreadPool,
    rows: usize,
    h: usize,
    f: &(dyn Fn(std::ops::Range<usize>) + Sync),
) {
    if rows * h < PARALLEL_ELEMS || pool.threads() == 1 || rows < 2 {
        f(0..rows);
        return;
    }
    let tasks = pool.threads().min(rows);
    pool.run(tasks, &|t| f(chunk(rows, tasks, t)));
}

multiversion! {
    /// `out = x / sqrt(mean(x²) + eps) · gamma` for one row.
    fn norm_row(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
        let ss = math::sum_squares(x);
        let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(gamma) {
            *o = v * inv * g;
        }
    }
}

multiversion! {
    /// `residual += x`, then `out = norm(residual)` for one row.
    fn add_norm_row(x: &[f32], residual: &mut [f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
        for (r, &v) in residual.iter_mut().zip(x) {
            *r += v;
        }
        let ss = math::sum_squares(residual);
        let inv = 1.0 / (ss / residual.len() as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(residual.iter()).zip(gamma) {
            *o = v * inv * g;
        }
    }
}

/// RMS norm over rows of `h`: `out[r] = x[r] / sqrt(mean(x[r]²) + eps) · gamma`.
/// `x`, `out`: `[rows, h]`; `gamma`: `[h]`.
pub fn rms_norm(pool: &ThreadPool, x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32], h: usize) {
    if h == 0 {
        return;
    }
    let (rows, isa) = (x.len() / h, detect());
    assert!(
        out.len() >= rows * h && gamma.len() >= h,
        "rms_norm: out or gamma too short"
    );
    let o = Ptr(out.as_mut_ptr());
    rows_parallel(pool, rows, h, &|rs| {
        for r in rs {
            // SAFETY: row r is written by this task only.
            norm_row(isa, &x[r * h..(r + 1) * h], &gamma[..h], eps, unsafe {
                o.row(r, h)
            });
        }
    });
}

/// `residual += x; out = rms_norm(residual)` over rows of `h`
/// (`x`, `residual`, `out`: `[rows, h]`).
pub fn add_rms_norm(
    pool: &ThreadPool,
    x: &[f32],
    residual: &mut [f32],
    gamma: &[f32],
    eps: f32,
    out: &mut [f32],
    h: usize,
) {
    if h == 0 {
        return;
    }
    let (rows, isa) = (x.len() / h, detect());
    assert!(
        residual.len() >= rows * h && out.len() >= rows * h && gamma.len() >= h,
        "add_rms_norm: residual, out or gamma too short"
    );
    let (res, o) = (Ptr(residual.as_mut_ptr()), Ptr(out.as_mut_ptr()));
    rows_parallel(pool, rows, h, &|rs| {
        for r in rs {
            // SAFETY: row r of `residual` and `out` is touched by this task only.
            unsafe {
                add_norm_row(
                    isa,
                    &x[r * h..(r + 1) * h],
                    res.row(r, h),
                    &gamma[..h],
                    eps,
                    o.row(r, h),
                )
            };
        }
    });
}

/// How rotary pairs are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + rot/2` (Hugging Face `rotate_half`, NeoX).
    Neox,
    /// Dimension `2i` pairs with `2i + 1` (GPT-J, llama.cpp's GGUF layout).
    Interleaved,
}

/// Shape of a rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    /// Head dimension.
    pub head_dim: usize,
    /// Rotated dimensions (even, ≤ `head_dim`; the rest pass through).
    pub rotary_dim: usize,
    /// Pair layout.
    pub style: RopeStyle,
}

multiversion! {
    /// Rotate every head of one token's row.
    fn rope_row(row: &mut [f32], c: &[f32], s: &[f32], shape: RopeShape) {
        let half = shape.rotary_dim / 2;
        for head in row.chunks_exact_mut(shape.head_dim) {
            match shape.style {
                RopeStyle::Neox => {
                    let (a, b) = head[..2 * half].split_at_mut(half);
                    for i in 0..half {
                        let (x1, x2) = (a[i], b[i]);
                        a[i] = x1 * c[i] - x2 * s[i];
                        b[i] = x2 * c[i] + x1 * s[i];
                    }
                }
                RopeStyle::Interleaved => {
                    for (i, p) in head[..2 * half].chunks_exact_mut(2).enumerate() {
                        let (x1, x2) = (p[0], p[1]);
                        p[0] = x1 * c[i] - x2 * s[i];
                        p[1] = x2 * c[i] + x1 * s[i];
                    }
                }
            }
        }
    }
}

/// Rotate `x[n, heads·head_dim]` in place, token `t` by angle table row
/// `positions[t]`; `cos`, `sin`: `[max_pos, rotary_dim/2]`.
///
/// Panics if a position is outside the tables (callers validate positions).
pub fn rope(x: &mut [f32], positions: &[i32], cos: &[f32], sin: &[f32], shape: RopeShape) {
    let half = shape.rotary_dim / 2;
    if positions.is_empty() || half == 0 || shape.head_dim == 0 {
        return;
    }
    assert!(
        shape.rotary_dim <= shape.head_dim,
        "rope: rotary_dim exceeds head_dim"
    );
    let (width, isa) = (x.len() / positions.len(), detect());
    let max_pos = cos.len().min(sin.len()) / half;
    for (t, &p) in positions.iter().enumerate() {
        assert!(
            p >= 0 && (p as usize) < max_pos,
            "rope: position {p} outside the table of {max_pos}"
        );
        let p = p as usize;
        rope_row(
            isa,
            &mut x[t * width..(t + 1) * width],
            &cos[p * half..(p + 1) * half],
            &sin[p * half..(p + 1) * half],
            shape,
        );
    }
}

/// `gate = silu(gate) · up`, element-wise.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    silu_mul_isa(detect(), gate, up)
}

/// `a += b`, element-wise.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    add_assign_isa(detect(), a, b)
}

/// `out = a + b`, element-wise.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    add_isa(detect(), a, b, out)
}

multiversion! {
    /// [`silu_mul`] with the kernels of `isa`.
    pub fn silu_mul_isa(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = math::silu(*g) * u;
        }
    }
}

/// `Σ e^(x − shift)` over the non-NaN entries of `x` ([`math::sum_exp`]):
/// the same bits on every ISA.
pub fn sum_exp(x: &[f32], shift: f32) -> f32 {
    let mut total = 0.0;
    sum_exp_isa(detect(), x, shift, &mut total);
    total
}

/// The largest non-NaN entry of `x` (−∞ when there is none).
pub fn max_ignoring_nan(x: &[f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    max_isa(detect(), x, &mut max);
    max
}

multiversion! {
    /// [`max_ignoring_nan`] with the kernels of `isa`.
    pub fn max_isa(x: &[f32], max: &mut f32) {
        *max = math::max_ignoring_nan(x);
    }
}

/// The lowest index of the largest entry of `x` (0 when none beats −∞).
pub fn argmax(x: &[f32]) -> usize {
    let mut at = 0;
    argmax_isa(detect(), x, &mut at);
    at
}

multiversion! {
    /// [`argmax`] with the kernels of `isa`.
    pub fn argmax_isa(x: &[f32], at: &mut usize) {
        *at = math::argmax(x);
    }
}

multiversion! {
    /// [`sum_exp`] with the kernels of `isa`.
    pub fn sum_exp_isa(x: &[f32], shift: f32, total: &mut f32) {
        *total = math::sum_exp(x, shift);
    }
}

multiversion! {
    /// [`add_assign`] with the kernels of `isa`.
    pub fn add_assign_isa(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

multiversion! {
    /// [`add`] with the kernels of `isa`.
    pub fn add_isa(a: &[f32], b: &[f32], out: &mut [f32]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

/// `out[t] = table[ids[t]]` dequantized to f32 (`out`: `[ids.len(), cols]`).
/// Ids outside the table produce a row of zeros.
pub fn embedding(table: &WeightMatrix, ids: &[i32], out: &mut [f32]) {
    let h = table.cols();
    for (t, &id) in ids.iter().enumerate() {
        let row = &mut out[t * h..(t + 1) * h];
        if id >= 0 && (id as usize) < table.rows() {
            table.dequantize_row(id as usize, row);
        } else {
            row.fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;
    use crate::weights::WeightFormat;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn rms_norm_matches_f64_and_rows_are_independent() {
        let (rows, h) = (70, 577);
        let mut seed = 1;
        let x: Vec<f32> = (0..rows * h).map(|_| lcg(&mut seed) * 3.0).collect();
        let gamma: Vec<f32> = (0..h).map(|_| lcg(&mut seed)).collect();
        let pool = ThreadPool::new(2);
        let mut out = vec![0f32; rows * h];
        rms_norm(&pool, &x, &gamma, 1e-5, &mut out, h);
        for r in [0, 33, 69] {
            let xr = &x[r * h..(r + 1) * h];
            let ms: f64 = xr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / h as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for i in 0..h {
                let want = xr[i] as f64 * inv * gamma[i] as f64;
                assert!((out[r * h + i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
            }
            let mut alone = vec![0f32; h];
            rms_norm(&ThreadPool::new(1), xr, &gamma, 1e-5, &mut alone, h);
            assert_eq!(alone, out[r * h..(r + 1) * h]);
        }
    }

    #[test]
    fn vocabulary_reductions_have_the_same_bits_on_every_isa() {
        let mut seed = 3;
        let x: Vec<f32> = (0..49_157).map(|_| lcg(&mut seed) * 20.0).collect();
        let mut want = 0.0;
        sum_exp_isa(crate::isa::Isa::Scalar, &x, 9.5, &mut want);
        for isa in [crate::isa::Isa::Avx2, crate::isa::Isa::Avx512Vnni] {
            let mut got = 0.0;
            sum_exp_isa(isa, &x, 9.5, &mut got);
            assert_eq!(got.to_bits(), want.to_bits(), "{isa:?}");
        }
        assert_eq!(sum_exp(&x, 9.5).to_bits(), want.to_bits());
        let want_at =
            x.iter().enumerate().fold(
                (f32::NEG_INFINITY, 0),
                |b, (i, &v)| if v > b.0 { (v, i) } else { b },
            );
        for isa in [
            crate::isa::Isa::Scalar,
            crate::isa::Isa::Avx2,
            crate::isa::Isa::Avx512Vnni,
        ] {
            let (mut at, mut max) = (0, 0.0);
            argmax_isa(isa, &x, &mut at);
            max_isa(isa, &x, &mut max);
            assert_eq!((max, at), want_at, "{isa:?}");
        }
    }

    #[test]
    fn add_rms_norm_updates_the_residual() {
        let pool = ThreadPool::new(2);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut res = [1.0f32, 1.0, 1.0, 1.0];
        let mut out = [0f32; 4];
        add_rms_norm(&pool, &x, &mut res, &[1.0, 1.0], 0.0, &mut out, 2);
        assert_eq!(res, [2.0, 3.0, 4.0, 5.0]);
        let mut want = [0f32; 4];
        rms_norm(&pool, &res, &[1.0, 1.0], 0.0, &mut want, 2);
        assert_eq!(out, want);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        // Position 1: pair 0 rotates by 90°, pair 1 stays.
        let cos = [1.0f32, 1.0, 0.0, 1.0];
        let sin = [0.0f32, 0.0, 1.0, 0.0];
        let shape = |style| RopeShape {
            head_dim: 4,
            rotary_dim: 4,
            style,
        };
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut x, &[1], &cos, &sin, shape(RopeStyle::Neox));
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
        let mut y = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut y, &[1], &cos, &sin, shape(RopeStyle::Interleaved));
        assert_eq!(y, [-2.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn rope_matches_f64_on_two_heads_with_partial_rotation() {
        let (hd, rot, max_pos) = (8, 6, 5);
        let half = rot / 2;
        let mut cos = vec![0f32; max_pos * half];
        let mut sin = vec![0f32; max_pos * half];
        for p in 0..max_pos {
            for i in 0..half {
                let a = p as f64 / 10f64.powf(i as f64 / half as f64);
                cos[p * half + i] = a.cos() as f32;
                sin[p * half + i] = a.sin() as f32;
            }
        }
        let mut seed = 9;
        let x0: Vec<f32> = (0..2 * 2 * hd).map(|_| lcg(&mut seed)).collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let mut x = x0.clone();
            let pos = [4usize, 2];
            rope(
                &mut x,
                &[4, 2],
                &cos,
                &sin,
                RopeShape {
                    head_dim: hd,
                    rotary_dim: rot,
                    style,
                },
            );
            for t in 0..2 {
                for h in 0..2 {
                    let base = t * 2 * hd + h * hd;
                    for i in 0..half {
                        let (a, b) = match style {
                            RopeStyle::Neox => (i, i + half),
                            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let (c, s) = (cos[pos[t] * half + i] as f64, sin[pos[t] * half + i] as f64);
                        let (x1, x2) = (x0[base + a] as f64, x0[base + b] as f64);
                        assert!((x[base + a] as f64 - (x1 * c - x2 * s)).abs() < 1e-6);
                        assert!((x[base + b] as f64 - (x2 * c + x1 * s)).abs() < 1e-6);
                    }
                    assert_eq!(x[base + rot..base + hd], x0[base + rot..base + hd]);
                }
            }
        }
    }

    #[test]
    fn silu_mul_and_adds() {
        let mut g: Vec<f32> = (0..37).map(|i| i as f32 * 0.4 - 7.0).collect();
        let up: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.1).collect();
        let g0 = g.clone();
        silu_mul(&mut g, &up);
        for i in 0..37 {
            let x = g0[i] as f64;
            let want = x / (1.0 + (-x).exp()) * up[i] as f64;
            assert!(
                (g[i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{i}"
            );
        }
        let mut a = [1.0f32, 2.0];
        add_assign(&mut a, &[0.5, 0.5]);
        assert_eq!(a, [1.5, 2.5]);
        let mut o = [0f32; 2];
        add(&a, &[1.0, -1.0], &mut o);
        assert_eq!(o, [2.5, 1.5]);
    }

    #[test]
    fn every_isa_gives_the_same_bits() {
        let mut seed = 4;
        let h = 203;
        let x: Vec<f32> = (0..h).map(|_| lcg(&mut seed) * 4.0).collect();
        let y: Vec<f32> = (0..h).map(|_| lcg(&mut seed)).collect();
        let cs: Vec<f32> = (0..50).map(|_| lcg(&mut seed)).collect();
        let run = |isa: Isa| {
            let mut outs = vec![vec![0f32; h]; 6];
            norm_row(isa, &x, &y, 1e-6, &mut outs[0]);
            let mut res = y.clone();
            add_norm_row(isa, &x, &mut res, &y, 1e-6, &mut outs[1]);
            outs[2] = res;
            outs[3] = x.clone();
            silu_mul_isa(isa, &mut outs[3], &y);
            add_isa(isa, &x, &y, &mut outs[4]);
            let mut r = x[..200].to_vec();
            for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
                let shape = RopeShape {
                    head_dim: 100,
                    rotary_dim: 50,
                    style,
                };
                rope_row(isa, &mut r, &cs[..25], &cs[25..], shape);
            }
            add_assign_isa(isa, &mut r, &y[..200]);
            outs[5] = r;
            outs.iter()
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let base = run(Isa::Scalar);
        for isa in Isa::ALL {
            assert_eq!(run(isa), base, "{isa:?}");
        }
    }

    #[test]
    fn embedding_dequantizes_rows_and_zeroes_bad_ids() {
        let vals: Vec<f32> = (0..3 * 32).map(|i| (i % 7) as f32 - 3.0).collect();
        let t = WeightMatrix::from_f32(WeightFormat::Q8_0, 3, 32, &vals).unwrap();
        let mut out = vec![1f32; 3 * 32];
        embedding(&t, &[2, -1, 7], &mut out);
        let mut want = vec![0f32; 32];
        t.dequantize_row(2, &mut want);
        assert_eq!(out[..32], want[..]);
        assert!(out[32..].iter().all(|&v| v == 0.0));
    }
}
