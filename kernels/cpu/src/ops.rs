//! Row-wise and element-wise kernels on f32 activations.
//!
//! Each output row depends only on its own input row, computed in a fixed
//! order, so results are the same whatever the batch.

use crate::matmul::WeightMatrix;
use crate::pool::{ThreadPool, chunk};

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
// SAFETY: tasks touch disjoint rows.
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl Ptr {
    /// The pointer (a method, so closures capture the whole wrapper).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

fn rows_parallel(pool: &ThreadPool, rows: usize, cost_per_row: usize, f: &(dyn Fn(usize) + Sync)) {
    if rows * cost_per_row < 16_384 || pool.threads() == 1 {
        (0..rows).for_each(f);
        return;
    }
    let tasks = pool.threads().min(rows);
    pool.run(tasks, &|t| chunk(rows, tasks, t).for_each(f));
}

/// `out[r] = x[r] / rms(x[r]) * gamma` over rows of `h`.
pub fn rms_norm(pool: &ThreadPool, x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32], h: usize) {
    let rows = x.len() / h;
    let o = Ptr(out.as_mut_ptr());
    rows_parallel(pool, rows, h, &|r| {
        let xr = &x[r * h..(r + 1) * h];
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / h as f32 + eps).sqrt();
        // SAFETY: row r is written by this task only.
        let or = unsafe { std::slice::from_raw_parts_mut(o.get().add(r * h), h) };
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(gamma) {
            *o = v * inv * g;
        }
    });
}

/// `residual += x; out = rms_norm(residual)`.
pub fn add_rms_norm(
    pool: &ThreadPool,
    x: &[f32],
    residual: &mut [f32],
    gamma: &[f32],
    eps: f32,
    out: &mut [f32],
    h: usize,
) {
    for (r, v) in residual.iter_mut().zip(x) {
        *r += v;
    }
    rms_norm(pool, residual, gamma, eps, out, h);
}

/// How rotary pairs are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + rot/2` (Hugging Face / NeoX).
    Neox,
    /// Dimension `2i` pairs with `2i + 1` (GPT-J / GGUF).
    Interleaved,
}

/// Shape of a rotary embedding.
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    /// Head dimension.
    pub head_dim: usize,
    /// Rotated dimensions (≤ head_dim, even).
    pub rotary_dim: usize,
    /// Pair layout.
    pub style: RopeStyle,
}

/// Rotate `x[n, heads·hd]` in place; `cos`/`sin` are `[max_pos, rot/2]`.
pub fn rope(x: &mut [f32], positions: &[i32], cos: &[f32], sin: &[f32], shape: RopeShape) {
    let half = shape.rotary_dim / 2;
    let row = x.len() / positions.len().max(1);
    for (t, &p) in positions.iter().enumerate() {
        let c = &cos[p as usize * half..(p as usize + 1) * half];
        let s = &sin[p as usize * half..(p as usize + 1) * half];
        for head in x[t * row..(t + 1) * row].chunks_exact_mut(shape.head_dim) {
            for i in 0..half {
                let (a, b) = match shape.style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x1, x2) = (head[a], head[b]);
                head[a] = x1 * c[i] - x2 * s[i];
                head[b] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

/// `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `a += b`, in place.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// `out[t] = table[ids[t]]` (dequantized).
pub fn embedding(table: &WeightMatrix, ids: &[i32], out: &mut [f32]) {
    let h = table.cols();
    for (t, &id) in ids.iter().enumerate() {
        let id = if id < 0 || id as usize >= table.rows() {
            0
        } else {
            id as usize
        };
        table.dequantize_row(id, &mut out[t * h..(t + 1) * h]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_the_formula() {
        let pool = ThreadPool::new(2);
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        rms_norm(&pool, &x, &[1.0, 2.0], 0.0, &mut out, 2);
        let inv = 1.0 / (12.5f32).sqrt();
        assert_eq!(out[0], 3.0 * inv);
        assert_eq!(out[1], 4.0 * inv * 2.0);
        assert!(out[2..].iter().all(|v| v.is_nan() || *v == 0.0));
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let cos = [1.0f32, 0.0, 0.0, 1.0];
        let sin = [0.0f32, 1.0, 1.0, 0.0];
        // One head of dim 4, position 1: pair 0 rotates by 90°, pair 1 stays.
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        rope(
            &mut x,
            &[1],
            &cos,
            &sin,
            RopeShape {
                head_dim: 4,
                rotary_dim: 4,
                style: RopeStyle::Neox,
            },
        );
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
        let mut y = [1.0f32, 2.0, 3.0, 4.0];
        rope(
            &mut y,
            &[1],
            &cos,
            &sin,
            RopeShape {
                head_dim: 4,
                rotary_dim: 4,
                style: RopeStyle::Interleaved,
            },
        );
        assert_eq!(y, [-2.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn silu_and_add() {
        let mut g = [0.0f32, 1.0];
        silu_mul(&mut g, &[2.0, 3.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 3.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        let mut a = [1.0f32, 2.0];
        add_assign(&mut a, &[0.5, 0.5]);
        assert_eq!(a, [1.5, 2.5]);
    }
}
