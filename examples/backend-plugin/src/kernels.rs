//! The arithmetic of every operation, on plain `f32` slices: one loop per
//! formula, no SIMD, no threads, no unsafe code.
//!
//! Every output row is computed from its own input row only, with the same
//! sequence of floating-point steps whatever the number of rows in the call,
//! so results never depend on how the engine batches tokens (the batch
//! invariance that `kiln_plugin_abi::ops` asks of every backend). Callers
//! check shapes first; these functions only assume what their docs state.

use kiln_plugin_abi::ops::Accumulate;

/// A weight matrix `[rows, cols]`, row-major, widened to f32 once at upload.
/// Vectors (norm scales, biases) are matrices with one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `[rows, cols]` values.
    pub values: Vec<f32>,
}

impl Matrix {
    /// Row `j`: `[cols]`.
    pub fn row(&self, j: usize) -> &[f32] {
        &self.values[j * self.cols..(j + 1) * self.cols]
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// RMS norm of each row: `out = x / sqrt(mean(x²) + eps) · gamma`.
/// `x`, `out`: `[rows, h]` with `h = gamma.len()`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let h = gamma.len();
    if h == 0 {
        return;
    }
    for (x_row, out_row) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let mean_square = dot(x_row, x_row) / h as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for ((o, &v), &g) in out_row.iter_mut().zip(x_row).zip(gamma) {
            *o = v * inv * g;
        }
    }
}

/// `residual += x`, then `out = rms_norm(residual)`. All `[rows, h]`, `gamma` `[h]`.
pub fn add_rms_norm(x: &[f32], residual: &mut [f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    for (r, &v) in residual.iter_mut().zip(x) {
        *r += v;
    }
    rms_norm(residual, gamma, eps, out);
}

/// `out = x · Wᵀ (+ bias)`, or `out += ...` with [`Accumulate::Add`].
/// `x`: `[n, k]`, `w`: `[m, k]`, `bias`: `[m]`, `out`: `[n, m]`.
pub fn linear(x: &[f32], w: &Matrix, bias: Option<&[f32]>, out: &mut [f32], mode: Accumulate) {
    let (m, k) = (w.rows, w.cols);
    if m == 0 || k == 0 {
        return;
    }
    for (x_row, out_row) in x.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (j, o) in out_row.iter_mut().enumerate() {
            let y = dot(x_row, w.row(j)) + bias.map_or(0.0, |b| b[j]);
            *o = match mode {
                Accumulate::Overwrite => y,
                Accumulate::Add => *o + y,
            };
        }
    }
}

/// How rotary pairs are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` pairs with `i + rotary_dim/2` (Hugging Face, NeoX).
    Neox,
    /// Dimension `2i` pairs with `2i + 1` (GPT-J, GGUF).
    Interleaved,
}

impl RopeStyle {
    /// The two dimensions of pair `i` in a head rotating `2·half` dimensions.
    fn pair(self, i: usize, half: usize) -> (usize, usize) {
        match self {
            RopeStyle::Neox => (i, i + half),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        }
    }
}

/// Shape of a rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    /// Head dimension.
    pub head_dim: usize,
    /// Rotated dimensions (even, at most `head_dim`; the rest pass through).
    pub rotary_dim: usize,
    /// Pair layout.
    pub style: RopeStyle,
}

/// Angle tables of a rotary embedding: `[max_pos, rotary_dim/2]` each.
#[derive(Debug, Clone, Copy)]
pub struct RopeTables<'a> {
    /// Cosines.
    pub cos: &'a [f32],
    /// Sines.
    pub sin: &'a [f32],
}

/// Rotate every head of `x` `[n, heads·head_dim]` in place: row `t` by the
/// angles of table row `positions[t]` (each below `max_pos`).
pub fn rope(x: &mut [f32], positions: &[usize], tables: RopeTables<'_>, shape: RopeShape) {
    let half = shape.rotary_dim / 2;
    if positions.is_empty() || half == 0 || shape.head_dim == 0 {
        return;
    }
    let width = x.len() / positions.len();
    for (row, &p) in x.chunks_exact_mut(width).zip(positions) {
        let cos = &tables.cos[p * half..(p + 1) * half];
        let sin = &tables.sin[p * half..(p + 1) * half];
        for head in row.chunks_exact_mut(shape.head_dim) {
            for i in 0..half {
                let (a, b) = shape.style.pair(i, half);
                let (x1, x2) = (head[a], head[b]);
                head[a] = x1 * cos[i] - x2 * sin[i];
                head[b] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// `out = silu(gate) · up` element-wise, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `out = a + b` element-wise.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Attention hyper-parameters shared by every sequence of a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`; query head `h` reads KV head
    /// `h / (heads / kv_heads)`).
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Softmax scale applied to `q·k` (usually `1/√head_dim`).
    pub scale: f32,
    /// Logit soft-cap `c` (`s → c·tanh(s/c)`); 0: none.
    pub softcap: f32,
    /// Sliding window in tokens (a query at position `p` sees keys
    /// `p − window + 1 ..= p`); 0: none.
    pub window: usize,
}

/// One sequence of an attention batch, its keys and values gathered from
/// the paged cache in position order, from the first position any of its
/// rows sees (with a sliding window, the blocks before it may have been
/// freed and reused: they are not gathered).
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// `[q_len, heads·head_dim]` queries (RoPE applied).
    pub queries: &'a [f32],
    /// Position of the first query row; row `j` sits at `first_pos + j`.
    pub first_pos: usize,
    /// Position of `keys[0]`: the first key the first row sees.
    pub keys_from: usize,
    /// `[context − keys_from, kv_heads·head_dim]` keys of positions
    /// `keys_from..context` (`context ≥ first_pos + q_len`).
    pub keys: &'a [f32],
    /// `[context − keys_from, kv_heads·head_dim]` values.
    pub values: &'a [f32],
}

impl AttentionShape {
    /// The first key position a query at `pos` sees.
    pub fn first_key(&self, pos: usize) -> usize {
        match self.window {
            0 => 0,
            w => (pos + 1).saturating_sub(w),
        }
    }
}

/// Causal attention for one sequence: writes `out` `[q_len, heads·head_dim]`.
pub fn attention(seq: &Sequence<'_>, shape: &AttentionShape, out: &mut [f32]) {
    let hd = shape.head_dim;
    let width = shape.heads * hd;
    if width == 0 || shape.kv_heads == 0 {
        return;
    }
    let group = shape.heads / shape.kv_heads;
    let kv_width = shape.kv_heads * hd;
    let rows = seq
        .queries
        .chunks_exact(width)
        .zip(out.chunks_exact_mut(width));
    for (j, (q_row, out_row)) in rows.enumerate() {
        let pos = seq.first_pos + j;
        let first_key = shape.first_key(pos).max(seq.keys_from);
        for h in 0..shape.heads {
            let column = (h / group) * hd;
            let row = |p: usize| (p - seq.keys_from) * kv_width + column;
            let key = |p: usize| &seq.keys[row(p)..][..hd];
            let value = |p: usize| &seq.values[row(p)..][..hd];
            let q = &q_row[h * hd..(h + 1) * hd];
            let scores: Vec<f32> = (first_key..=pos)
                .map(|p| soft_cap(dot(q, key(p)) * shape.scale, shape.softcap))
                .collect();
            let out_head = &mut out_row[h * hd..(h + 1) * hd];
            out_head.fill(0.0);
            for (weight, p) in softmax(&scores).into_iter().zip(first_key..=pos) {
                for (o, &v) in out_head.iter_mut().zip(value(p)) {
                    *o += weight * v;
                }
            }
        }
    }
}

fn soft_cap(score: f32, cap: f32) -> f32 {
    if cap > 0.0 {
        cap * (score / cap).tanh()
    } else {
        score
    }
}

/// `e^(s − max) / Σ e^(s − max)`.
fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn rms_norm_scales_each_row_to_unit_rms() {
        let x = [3.0, 4.0, -1.0, 1.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut out);
        let inv0 = 1.0 / 12.5f32.sqrt();
        assert!(close(&out, &[3.0 * inv0, 8.0 * inv0, -1.0, 2.0]));
    }

    #[test]
    fn add_rms_norm_updates_the_residual_then_normalizes_it() {
        let mut residual = [1.0, 1.0];
        let mut out = [0.0; 2];
        add_rms_norm(&[2.0, -5.0], &mut residual, &[1.0, 1.0], 0.0, &mut out);
        assert_eq!(residual, [3.0, -4.0]);
        let inv = 1.0 / 12.5f32.sqrt();
        assert!(close(&out, &[3.0 * inv, -4.0 * inv]));
    }

    #[test]
    fn linear_adds_bias_and_accumulates() {
        let w = Matrix {
            rows: 2,
            cols: 3,
            values: vec![1.0, 0.0, 2.0, 0.0, 1.0, -1.0],
        };
        let x = [1.0, 2.0, 3.0, -1.0, 0.0, 1.0];
        let mut out = [10.0; 4];
        linear(&x, &w, Some(&[0.5, 0.0]), &mut out, Accumulate::Overwrite);
        assert_eq!(out, [7.5, -1.0, 1.5, -1.0]);
        linear(&x, &w, None, &mut out, Accumulate::Add);
        assert_eq!(out, [14.5, -2.0, 2.5, -2.0]);
    }

    #[test]
    fn rope_rotates_the_pairs_of_each_style() {
        // One head of 4 dims, a quarter turn for every pair at position 1.
        let cos = [1.0, 1.0, 0.0, 0.0];
        let sin = [0.0, 0.0, 1.0, 1.0];
        let tables = RopeTables {
            cos: &cos,
            sin: &sin,
        };
        let shape = |style| RopeShape {
            head_dim: 4,
            rotary_dim: 4,
            style,
        };
        let mut x = [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0];
        rope(&mut x, &[0, 1], tables, shape(RopeStyle::Neox));
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0, -3.0, -4.0, 1.0, 2.0]);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope(&mut x, &[1], tables, shape(RopeStyle::Interleaved));
        assert_eq!(x, [-2.0, 1.0, -4.0, 3.0]);
    }

    #[test]
    fn rope_leaves_dimensions_past_rotary_dim_alone() {
        let (cos, sin) = ([0.0], [1.0]);
        let shape = RopeShape {
            head_dim: 4,
            rotary_dim: 2,
            style: RopeStyle::Neox,
        };
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope(
            &mut x,
            &[0],
            RopeTables {
                cos: &cos,
                sin: &sin,
            },
            shape,
        );
        assert_eq!(x, [-2.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn silu_mul_and_add_are_element_wise() {
        let mut out = [0.0; 2];
        silu_mul(&[0.0, 2.0], &[3.0, 1.0], &mut out);
        assert!(close(&out, &[0.0, 2.0 / (1.0 + (-2.0f32).exp())]));
        add(&[1.0, 2.0], &[3.0, -2.0], &mut out);
        assert_eq!(out, [4.0, 0.0]);
    }

    fn shape(window: usize, softcap: f32) -> AttentionShape {
        AttentionShape {
            heads: 2,
            kv_heads: 1,
            head_dim: 2,
            scale: 1.0,
            softcap,
            window,
        }
    }

    #[test]
    fn attention_is_causal_and_shares_kv_heads() {
        // Three positions; the query at position 0 sees only the first value.
        let keys = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let queries = [0.3, -0.2, 5.0, 5.0];
        let seq = Sequence {
            queries: &queries,
            first_pos: 0,
            keys_from: 0,
            keys: &keys,
            values: &values,
        };
        let mut out = [0.0; 4];
        attention(&seq, &shape(0, 0.0), &mut out);
        assert_eq!(out, [1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn attention_weights_follow_a_softmax_within_the_window() {
        let keys = [9.0, 9.0, 1.0, 0.0, 0.0, 1.0];
        let values = [100.0, 100.0, 1.0, 0.0, 0.0, 1.0];
        // One query row at position 2, window 2: position 0 is out of sight.
        let queries = [1.0, 0.0, 0.0, 0.0];
        let seq = Sequence {
            queries: &queries,
            first_pos: 2,
            keys_from: 0,
            keys: &keys,
            values: &values,
        };
        let mut out = [0.0; 4];
        attention(&seq, &shape(2, 0.0), &mut out);
        let e = 1f32.exp();
        assert!(close(&out, &[e / (e + 1.0), 1.0 / (e + 1.0), 0.5, 0.5]));
        // Keys gathered from position 1 on give the same rows.
        let gathered = Sequence {
            keys_from: 1,
            keys: &keys[2..],
            values: &values[2..],
            ..seq
        };
        let mut from_one = [0.0; 4];
        attention(&gathered, &shape(2, 0.0), &mut from_one);
        assert_eq!(from_one, out);
    }

    #[test]
    fn softcap_bounds_the_scores() {
        assert!((soft_cap(1000.0, 5.0) - 5.0).abs() < 1e-6);
        assert_eq!(soft_cap(1000.0, 0.0), 1000.0);
        assert!(close(&softmax(&[0.0, 0.0]), &[0.5, 0.5]));
    }
}
