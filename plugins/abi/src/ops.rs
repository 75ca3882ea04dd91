//! Operation codes and their slot layouts. `views` (re-exported here)
//! holds one typed view per operation, such as [`Linear`] (`encode` for
//! the host, `decode` for backends), and [`Op`] decodes any of them; the
//! builder functions below are shorthands for `View { .. }.encode()`.
//!
//! Activations are row-major `[rows, features]` tensors in the device's
//! activation dtype (f32 on the CPU backend; bf16/f16 on GPUs). Index tensors
//! are i32. Every row of an output must be computed with the same sequence of
//! floating-point operations whatever the number of rows in the call or the
//! split of a prompt into chunks (batch invariance); backends document where
//! they cannot promise this.

mod error;
mod views;

pub use error::OpDecodeError;
pub use views::*;

use crate::types::{KilnOp, KilnTensor, KilnWeight};

/// Gather embedding rows: `t0` ids `[n]` i32, `w0` table `[vocab, hidden]`, `t1` out `[n, hidden]`.
pub const OP_EMBEDDING: u32 = 1;
/// RMS norm: `t0` x `[n, h]`, `w0` gamma `[1, h]`, `t1` out `[n, h]`, `f0` eps.
pub const OP_RMS_NORM: u32 = 2;
/// Residual add then RMS norm: `t0` x `[n, h]`, `t1` residual `[n, h]` (updated
/// in place: residual += x), `w0` gamma, `t2` out = norm(residual), `f0` eps.
pub const OP_ADD_RMS_NORM: u32 = 3;
/// Linear layer `out = x · Wᵀ (+ bias)`: `t0` x `[n, k]`, `w0` W `[m, k]`,
/// `w1` bias `[1, m]` (optional), `t1` out `[n, m]`, `i0` 1 to accumulate
/// (`out += ...`, fuses a residual add), else 0; `i1` how many leading rows
/// are single-token decode rows (a hint: a backend may compute those rows
/// with a different kernel, but each row's result must depend only on that
/// row and on whether it is a decode row, never on `n`, so that outputs are
/// the same alone and in a batch).
pub const OP_LINEAR: u32 = 4;
/// Rotary position embedding in place: `t0` q `[n, heads·hd]`, `t1` k
/// `[n, kv_heads·hd]` (optional), `t2` positions `[n]` i32, `t3` cos table
/// `[max_pos, rot/2]` f32, `t4` sin table `[max_pos, rot/2]` f32, `i0` head_dim,
/// `i1` rotary dims (≤ head_dim), `i2` style: [`ROPE_NEOX`] or [`ROPE_INTERLEAVED`].
pub const OP_ROPE: u32 = 5;
/// `out = silu(gate) * up`: `t0` gate `[n, i]`, `t1` up `[n, i]`, `t2` out `[n, i]`.
pub const OP_SILU_MUL: u32 = 6;
/// Element-wise add: `t0` a, `t1` b, `t2` out (same shapes).
pub const OP_ADD: u32 = 7;
/// Write keys and values into the paged cache: `t0` k `[n, kv_heads·hd]`, `t1`
/// v `[n, kv_heads·hd]`, `t2` k cache `[blocks, block_size, kv_heads, hd]`, `t3`
/// v cache (same), `t4` slot mapping `[n]` i32 (slot = block·block_size +
/// offset; negative: skip).
pub const OP_KV_WRITE: u32 = 8;
/// Causal attention over the paged cache for a batch of sequences, prefill
/// chunks and decodes alike. `t0` q `[n, heads·hd]`, `t1` k cache, `t2` v cache,
/// `t3` block tables `[seqs, max_blocks]` i32, `t4` seq lens `[seqs]` i32
/// (context length including this step's tokens), `t5` query start offsets
/// `[seqs + 1]` i32, `t6` out `[n, heads·hd]`. `f0` scale, `f1` logit soft-cap
/// (0: none). `i0` heads, `i1` kv heads, `i2` head_dim, `i3` block_size, `i4`
/// sliding window (0: none), `i5` max query length in the batch, `i6` max seq
/// len in the batch. Query row `j` of sequence `s` sits at position
/// `seq_len[s] - q_len[s] + j` and attends to positions ≤ its own (with a
/// window `w`, to positions `p - w + 1 ..= p` only). Every block-table
/// entry is a block of the cache, but with a window the entries wholly
/// before the window of a sequence's first row are placeholders: the host
/// freed those blocks and another sequence may have written anything there,
/// NaN included. A backend must never load keys or values outside a row's
/// window; weighting them by 0 is not enough (0 × NaN is NaN).
pub const OP_ATTENTION: u32 = 9;
/// Select rows: `t0` x `[n, h]`, `t1` indices `[m]` i32, `t2` out `[m, h]`.
pub const OP_GATHER_ROWS: u32 = 10;
/// Copy whole KV blocks (copy-on-write): `t0` k cache, `t1` v cache, `t2` pairs `[p, 2]` i32 (src, dst).
pub const OP_COPY_BLOCKS: u32 = 11;
/// Device-side sampling: `t0` logits `[m, vocab]` f32 (may be modified),
/// `t1` params `[m]` of [`crate::KilnSampleParams`] (as bytes), `t2` out ids
/// `[m]` i32, `t3` out logprob of the sampled token `[m]` f32 (raw
/// distribution), `t4` out top ids `[m, N]` i32 and `t5` out top logprobs
/// `[m, N]` f32 (optional; the raw distribution's N most likely tokens, most
/// likely first, ties to the lower id), `t6` adjustments `[e]` of
/// [`crate::KilnLogitAdjust`] as bytes (optional), `t7` allowed-token
/// bitsets `[m, W]` i32 (optional; token `t` of row `r` is allowed when bit
/// `t % 32` of word `r·W + t / 32` is set; tokens past `32·W` are not), `i0` N.
///
/// Per row (rows flagged [`crate::KILN_SAMPLE_SKIP`] may be left alone):
/// log-probabilities from the raw logits; the row's adjustments; for rows
/// flagged [`crate::KILN_SAMPLE_MASKED`], every token outside the row's
/// bitset set to `-inf`; then greedy (temperature ≤ 1e-5 or top-k 1: the largest logit, lowest id
/// on ties) or temperature → top-k → top-p → min-p → a Gumbel-max draw whose
/// noise for token `i` is a function of `(seed, counter, i)` only, so a row's
/// draw never depends on the other rows.
pub const OP_SAMPLE: u32 = 12;
/// Convert dtype: `t0` in, `t1` out (same number of elements).
pub const OP_CAST: u32 = 13;
/// Layer norm: `t0` x `[n, h]`, `w0` gamma `[1, h]`, `w1` beta `[1, h]`
/// (optional), `t1` out `[n, h]`, `f0` eps: `out = (x − mean) / sqrt(var +
/// eps) · gamma (+ beta)`, mean and (biased) variance over the row.
pub const OP_LAYER_NORM: u32 = 14;
/// Activation, optionally gated: `t0` x `[n, i]`, `t1` up `[n, i]`
/// (optional), `t2` out `[n, i]` (may alias `t0`), `i0` one of the `ACT_*`
/// kinds: `out = act(x)`, or `act(x) · up` with `t1`.
pub const OP_ACTIVATION: u32 = 15;
/// Scale: `t0` x, `t1` out (same shape; may alias), `f0` factor, `i0` 1 to
/// accumulate (`out += x · f0`), else 0 (`out = x · f0`).
pub const OP_SCALE: u32 = 16;
/// Soft-capping: `t0` x, `t1` out (same shape; may alias), `f0` cap `c > 0`:
/// `out = c · tanh(x / c)`.
pub const OP_SOFTCAP: u32 = 17;
/// Mixture-of-experts feed-forward with top-k routing (Mixtral, Qwen2-MoE,
/// Qwen3-MoE): `t0` x `[n, h]`, `t1` router logits `[n, E]`, `t2` out `[n, h]`,
/// `t3` shared-expert output `[n, h]` (optional), `t4` shared-expert gate
/// logits `[n, 1]` (optional; only with `t3`), `w0` the experts' gate and up
/// projections stacked, `[E·2·I, h]` (expert `e`'s gate rows are
/// `e·2I .. e·2I+I`, its up rows `e·2I+I .. (e+1)·2I`), `w1` their down
/// projections stacked, `[E·h, I]` (expert `e`'s rows `e·h .. (e+1)·h`),
/// `i0` E, `i1` k (`1 ≤ k ≤ E`), `i2` decode rows (as [`OP_LINEAR`]'s `i1`),
/// `i3` the gate's `ACT_*` kind, `i4` routing: [`MOE_ROUTING_SOFTMAX_TOPK`] or
/// [`MOE_ROUTING_SOFTMAX_TOPK_RENORM`], `i5` 1 to accumulate (`out +=
/// result`), else 0.
///
/// Per row: the softmax of the router logits in f32, the k largest
/// probabilities (ties to the lower expert id), renormalized to sum 1 with
/// [`MOE_ROUTING_SOFTMAX_TOPK_RENORM`]; then `result = Σ_j w_j ·
/// down_{e_j}(act(gate_{e_j}·x) ⊙ (up_{e_j}·x))` summed in rank order
/// (largest weight first), plus the shared output, times
/// `sigmoid(t4[row])` when `t4` is given. I is `w0`'s rows over 2E and h
/// is `w1`'s rows over E; a backend may refuse sizes its weight layout
/// cannot split per expert.
pub const OP_MOE: u32 = 18;

/// [`OP_ACTIVATION`] kind: `x · sigmoid(x)`.
pub const ACT_SILU: i64 = 0;
/// [`OP_ACTIVATION`] kind: GELU with the tanh approximation
/// (`0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, PyTorch's `approximate="tanh"`).
pub const ACT_GELU_TANH: i64 = 1;
/// [`OP_ACTIVATION`] kind: exact GELU (`0.5·x·(1 + erf(x/√2))`).
pub const ACT_GELU: i64 = 2;
/// [`OP_ACTIVATION`] kind: `max(x, 0)`.
pub const ACT_RELU: i64 = 3;

/// [`OP_MOE`] routing: softmax over all E logits in f32, keep the k largest
/// probabilities as they are.
pub const MOE_ROUTING_SOFTMAX_TOPK: i64 = 0;
/// [`OP_MOE`] routing: as [`MOE_ROUTING_SOFTMAX_TOPK`], then divide the k
/// weights by their sum (equal to a softmax over the top-k logits).
pub const MOE_ROUTING_SOFTMAX_TOPK_RENORM: i64 = 1;

/// HF / NeoX rotary layout: dimension `i` pairs with `i + rot/2`.
pub const ROPE_NEOX: i64 = 0;
/// GPT-J / GGUF layout: dimension `2i` pairs with `2i + 1`.
pub const ROPE_INTERLEAVED: i64 = 1;

/// Human-readable opcode name for errors and logs.
pub fn opcode_name(opcode: u32) -> &'static str {
    match opcode {
        OP_EMBEDDING => "embedding",
        OP_RMS_NORM => "rms_norm",
        OP_ADD_RMS_NORM => "add_rms_norm",
        OP_LINEAR => "linear",
        OP_ROPE => "rope",
        OP_SILU_MUL => "silu_mul",
        OP_ADD => "add",
        OP_KV_WRITE => "kv_write",
        OP_ATTENTION => "attention",
        OP_GATHER_ROWS => "gather_rows",
        OP_COPY_BLOCKS => "copy_blocks",
        OP_SAMPLE => "sample",
        OP_CAST => "cast",
        OP_LAYER_NORM => "layer_norm",
        OP_ACTIVATION => "activation",
        OP_SCALE => "scale",
        OP_SOFTCAP => "softcap",
        OP_MOE => "moe",
        _ => "unknown",
    }
}

/// [`OP_EMBEDDING`].
pub fn embedding(ids: KilnTensor, table: KilnWeight, out: KilnTensor) -> KilnOp {
    Embedding { ids, table, out }.encode()
}

/// [`OP_RMS_NORM`].
pub fn rms_norm(x: KilnTensor, gamma: KilnWeight, eps: f32, out: KilnTensor) -> KilnOp {
    RmsNorm { x, gamma, eps, out }.encode()
}

/// [`OP_ADD_RMS_NORM`].
pub fn add_rms_norm(a: AddRmsNorm) -> KilnOp {
    a.encode()
}

/// [`OP_LINEAR`].
pub fn linear(l: Linear) -> KilnOp {
    l.encode()
}

/// [`OP_ROPE`].
pub fn rope(r: Rope) -> KilnOp {
    r.encode()
}

/// [`OP_SILU_MUL`].
pub fn silu_mul(gate: KilnTensor, up: KilnTensor, out: KilnTensor) -> KilnOp {
    SiluMul { gate, up, out }.encode()
}

/// [`OP_ADD`].
pub fn add(a: KilnTensor, b: KilnTensor, out: KilnTensor) -> KilnOp {
    Add { a, b, out }.encode()
}

/// [`OP_KV_WRITE`].
pub fn kv_write(w: KvWrite) -> KilnOp {
    w.encode()
}

/// [`OP_ATTENTION`].
pub fn attention(a: Attention) -> KilnOp {
    a.encode()
}

/// [`OP_GATHER_ROWS`].
pub fn gather_rows(x: KilnTensor, indices: KilnTensor, out: KilnTensor) -> KilnOp {
    GatherRows { x, indices, out }.encode()
}

/// [`OP_COPY_BLOCKS`].
pub fn copy_blocks(k_cache: KilnTensor, v_cache: KilnTensor, pairs: KilnTensor) -> KilnOp {
    CopyBlocks {
        k_cache,
        v_cache,
        pairs,
    }
    .encode()
}

/// [`OP_SAMPLE`].
pub fn sample(s: Sample) -> KilnOp {
    s.encode()
}

/// [`OP_CAST`].
pub fn cast(input: KilnTensor, out: KilnTensor) -> KilnOp {
    Cast { input, out }.encode()
}

/// [`OP_LAYER_NORM`].
pub fn layer_norm(l: LayerNorm) -> KilnOp {
    l.encode()
}

/// [`OP_ACTIVATION`]: `out = act(x)`, times `up` unless it is [`KilnTensor::NONE`].
pub fn activation(kind: i64, x: KilnTensor, up: KilnTensor, out: KilnTensor) -> KilnOp {
    Activation { kind, x, up, out }.encode()
}

/// [`OP_SCALE`].
pub fn scale(x: KilnTensor, factor: f32, out: KilnTensor, accumulate: Accumulate) -> KilnOp {
    Scale {
        x,
        factor,
        out,
        accumulate,
    }
    .encode()
}

/// [`OP_SOFTCAP`].
pub fn softcap(x: KilnTensor, cap: f32, out: KilnTensor) -> KilnOp {
    Softcap { x, cap, out }.encode()
}

/// [`OP_MOE`].
pub fn moe(m: Moe) -> KilnOp {
    m.encode()
}
