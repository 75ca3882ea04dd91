//! LayerNorm over rows of f32 activations, with or without a bias.
//!
//! The mean and the (biased) variance of a row are two fixed-order
//! reductions over that row alone, so a row's result does not depend on the
//! batch, the thread count or the ISA.

use crate::isa::detect;
use crate::math;
use crate::ops::multiversion;
use crate::pool::{ThreadPool, chunk};

/// Elements below which the norm stays on the calling thread.
const PARALLEL_ELEMS: usize = 1 << 15;

/// Sum with 16 interleaved partial sums and a fixed pairwise tree.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        acc[l] += v;
    }
    math::reduce16(acc)
}

multiversion! {
    /// One row: `out = (x − mean) / sqrt(var + eps) · gamma (+ beta)`.
    fn norm_row(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - mean;
        }
        let var = math::sum_squares(out) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (o, &g) in out.iter_mut().zip(gamma) {
            *o = *o * inv * g;
        }
        if let Some(beta) = beta {
            for (o, &b) in out.iter_mut().zip(beta) {
                *o += b;
            }
        }
    }
}

/// LayerNorm over rows of `h`: `x`, `out` `[rows, h]`; `gamma`, `beta` `[h]`.
pub fn layer_norm(
    pool: &ThreadPool,
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
    h: usize,
) {
    if h == 0 {
        return;
    }
    let (rows, isa) = (x.len() / h, detect());
    assert!(
        out.len() >= rows * h && gamma.len() >= h && beta.is_none_or(|b| b.len() >= h),
        "layer_norm: out, gamma or beta too short"
    );
    let beta = beta.map(|b| &b[..h]);
    if rows * h < PARALLEL_ELEMS || pool.threads() == 1 || rows < 2 {
        for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            norm_row(isa, xr, &gamma[..h], beta, eps, or);
        }
        return;
    }
    let tasks = pool.threads().min(rows);
    let base = OutRows(out.as_mut_ptr());
    pool.run(tasks, &|t| {
        for r in chunk(rows, tasks, t) {
            // SAFETY: each task writes its own rows, all inside `out`.
            let or = unsafe { std::slice::from_raw_parts_mut(base.row(r, h), h) };
            norm_row(isa, &x[r * h..(r + 1) * h], &gamma[..h], beta, eps, or);
        }
    });
}

#[derive(Clone, Copy)]
struct OutRows(*mut f32);
// SAFETY: tasks write disjoint rows.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

impl OutRows {
    fn row(&self, r: usize, h: usize) -> *mut f32 {
        self.0.wrapping_add(r * h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_with_and_without_bias_and_rows_are_independent() {
        let (rows, h) = (40, 1000);
        let x: Vec<f32> = (0..rows * h)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.01 - 4.0)
            .collect();
        let gamma: Vec<f32> = (0..h).map(|i| 0.5 + (i % 13) as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..h).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
        let pool = ThreadPool::new(2);
        for b in [None, Some(&beta[..])] {
            let mut out = vec![0f32; rows * h];
            layer_norm(&pool, &x, &gamma, b, 1e-5, &mut out, h);
            for r in [0, 17, 39] {
                let xr = &x[r * h..(r + 1) * h];
                let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
                let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
                for i in 0..h {
                    let want = (xr[i] as f64 - mean) / (var + 1e-5).sqrt() * gamma[i] as f64
                        + b.map_or(0.0, |b| b[i] as f64);
                    assert!(
                        (out[r * h + i] as f64 - want).abs() < 1e-4,
                        "row {r} col {i}"
                    );
                }
                let mut alone = vec![0f32; h];
                layer_norm(&ThreadPool::new(1), xr, &gamma, b, 1e-5, &mut alone, h);
                assert_eq!(alone, out[r * h..(r + 1) * h]);
            }
        }
    }

    #[test]
    fn every_isa_gives_the_same_bits() {
        let x: Vec<f32> = (0..301).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let g: Vec<f32> = (0..301).map(|i| 1.0 + (i as f32 * 0.1).cos()).collect();
        let run = |isa| {
            let mut out = vec![0f32; 301];
            norm_row(isa, &x, &g, Some(&g), 1e-6, &mut out);
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let base = run(crate::isa::Isa::Scalar);
        for isa in crate::isa::Isa::ALL {
            assert_eq!(run(isa), base, "{isa:?}");
        }
    }
}
