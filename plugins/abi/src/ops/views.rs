//! One typed view per operation: the only place that knows which slot of a
//! [`KilnOp`] holds which operand. The host builds operations with
//! `encode` (or the builder functions in [`super`]); backends read them with
//! `decode`, which checks the opcode and required operands and normalizes
//! parameters (negative counts are refused, a negative sliding window or
//! top-N means none).

use super::error::OpDecodeError;
use super::*;
use crate::types::{KilnOp, KilnTensor, KilnWeight};

fn expect_opcode(op: &KilnOp, opcode: u32) -> Result<(), OpDecodeError> {
    if op.opcode == opcode {
        Ok(())
    } else {
        Err(OpDecodeError::WrongOpcode {
            expected: opcode_name(opcode),
            got: opcode_name(op.opcode),
        })
    }
}

fn required_tensor(op: &KilnOp, slot: usize, name: &str) -> Result<KilnTensor, OpDecodeError> {
    let t = op.tensors[slot];
    if t.is_none() {
        return Err(OpDecodeError::invalid(
            op.opcode,
            format!("tensor `{name}` (t{slot}) is missing"),
        ));
    }
    Ok(t)
}

fn required_weight(op: &KilnOp, slot: usize, name: &str) -> Result<KilnWeight, OpDecodeError> {
    let w = op.weights[slot];
    if w.is_null() {
        return Err(OpDecodeError::invalid(
            op.opcode,
            format!("weight `{name}` (w{slot}) is missing"),
        ));
    }
    Ok(w)
}

fn non_negative(op: &KilnOp, slot: usize, name: &str) -> Result<i64, OpDecodeError> {
    let v = op.iparams[slot];
    if v < 0 {
        return Err(OpDecodeError::invalid(
            op.opcode,
            format!("`{name}` (i{slot}) is {v}, must not be negative"),
        ));
    }
    Ok(v)
}

fn positive(op: &KilnOp, slot: usize, name: &str) -> Result<i64, OpDecodeError> {
    let v = op.iparams[slot];
    if v <= 0 {
        return Err(OpDecodeError::invalid(
            op.opcode,
            format!("`{name}` (i{slot}) is {v}, must be positive"),
        ));
    }
    Ok(v)
}

fn accumulate_flag(op: &KilnOp, slot: usize) -> Accumulate {
    if op.iparams[slot] != 0 {
        Accumulate::Add
    } else {
        Accumulate::Overwrite
    }
}

/// Whether a linear layer or scale overwrites or adds to its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `out = result`.
    Overwrite,
    /// `out += result` (fuses a residual add).
    Add,
}

impl Accumulate {
    fn slot_value(self) -> i64 {
        i64::from(self == Accumulate::Add)
    }
}

/// Operands of [`OP_EMBEDDING`].
#[derive(Debug, Clone, Copy)]
pub struct Embedding {
    /// `[n]` i32 token ids.
    pub ids: KilnTensor,
    /// `[vocab, hidden]` table.
    pub table: KilnWeight,
    /// `[n, hidden]`.
    pub out: KilnTensor,
}

impl Embedding {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_EMBEDDING);
        op.tensors[0] = self.ids;
        op.tensors[1] = self.out;
        op.weights[0] = self.table;
        op
    }

    /// Read an [`OP_EMBEDDING`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_EMBEDDING)?;
        Ok(Embedding {
            ids: required_tensor(op, 0, "ids")?,
            out: required_tensor(op, 1, "out")?,
            table: required_weight(op, 0, "table")?,
        })
    }
}

/// Operands of [`OP_RMS_NORM`].
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    /// `[n, h]`.
    pub x: KilnTensor,
    /// `[1, h]` scale.
    pub gamma: KilnWeight,
    /// Added to the mean square.
    pub eps: f32,
    /// `[n, h]`.
    pub out: KilnTensor,
}

impl RmsNorm {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_RMS_NORM);
        op.tensors[0] = self.x;
        op.tensors[1] = self.out;
        op.weights[0] = self.gamma;
        op.fparams[0] = self.eps;
        op
    }

    /// Read an [`OP_RMS_NORM`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_RMS_NORM)?;
        Ok(RmsNorm {
            x: required_tensor(op, 0, "x")?,
            out: required_tensor(op, 1, "out")?,
            gamma: required_weight(op, 0, "gamma")?,
            eps: op.fparams[0],
        })
    }
}

/// Operands of [`OP_ADD_RMS_NORM`].
#[derive(Debug, Clone, Copy)]
pub struct AddRmsNorm {
    /// `[n, h]` added into the residual.
    pub x: KilnTensor,
    /// `[n, h]` residual stream, updated in place.
    pub residual: KilnTensor,
    /// `[1, h]` scale.
    pub gamma: KilnWeight,
    /// Added to the mean square.
    pub eps: f32,
    /// `[n, h]` normalized output.
    pub out: KilnTensor,
}

impl AddRmsNorm {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_ADD_RMS_NORM);
        op.tensors[0] = self.x;
        op.tensors[1] = self.residual;
        op.tensors[2] = self.out;
        op.weights[0] = self.gamma;
        op.fparams[0] = self.eps;
        op
    }

    /// Read an [`OP_ADD_RMS_NORM`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_ADD_RMS_NORM)?;
        Ok(AddRmsNorm {
            x: required_tensor(op, 0, "x")?,
            residual: required_tensor(op, 1, "residual")?,
            out: required_tensor(op, 2, "out")?,
            gamma: required_weight(op, 0, "gamma")?,
            eps: op.fparams[0],
        })
    }
}

/// Operands of [`OP_LINEAR`].
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    /// `[n, k]` input.
    pub x: KilnTensor,
    /// `[m, k]` weight.
    pub weight: KilnWeight,
    /// `[1, m]` bias or [`KilnWeight::NULL`].
    pub bias: KilnWeight,
    /// `[n, m]` output.
    pub out: KilnTensor,
    /// Overwrite or add into `out`.
    pub accumulate: Accumulate,
    /// Leading rows of `x` that belong to single-token decode steps (see [`OP_LINEAR`]).
    pub decode_rows: u64,
}

impl Linear {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_LINEAR);
        op.tensors[0] = self.x;
        op.tensors[1] = self.out;
        op.weights[0] = self.weight;
        op.weights[1] = self.bias;
        op.iparams[0] = self.accumulate.slot_value();
        op.iparams[1] = self.decode_rows as i64;
        op
    }

    /// Read an [`OP_LINEAR`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_LINEAR)?;
        Ok(Linear {
            x: required_tensor(op, 0, "x")?,
            out: required_tensor(op, 1, "out")?,
            weight: required_weight(op, 0, "weight")?,
            bias: op.weights[1],
            accumulate: accumulate_flag(op, 0),
            decode_rows: non_negative(op, 1, "decode_rows")? as u64,
        })
    }
}

/// Operands of [`OP_ROPE`].
#[derive(Debug, Clone, Copy)]
pub struct Rope {
    /// `[n, heads·hd]` queries, rotated in place.
    pub q: KilnTensor,
    /// `[n, kv_heads·hd]` keys, rotated in place (or [`KilnTensor::NONE`]).
    pub k: KilnTensor,
    /// `[n]` i32 positions.
    pub positions: KilnTensor,
    /// `[max_pos, rot/2]` f32 cosines.
    pub cos: KilnTensor,
    /// `[max_pos, rot/2]` f32 sines.
    pub sin: KilnTensor,
    /// Head dimension.
    pub head_dim: i64,
    /// Rotated dimensions (≤ head_dim).
    pub rotary_dim: i64,
    /// [`ROPE_NEOX`] or [`ROPE_INTERLEAVED`].
    pub style: i64,
}

impl Rope {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_ROPE);
        op.tensors[0] = self.q;
        op.tensors[1] = self.k;
        op.tensors[2] = self.positions;
        op.tensors[3] = self.cos;
        op.tensors[4] = self.sin;
        op.iparams[0] = self.head_dim;
        op.iparams[1] = self.rotary_dim;
        op.iparams[2] = self.style;
        op
    }

    /// Read an [`OP_ROPE`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_ROPE)?;
        let head_dim = positive(op, 0, "head_dim")?;
        let rotary_dim = non_negative(op, 1, "rotary_dim")?;
        if rotary_dim > head_dim {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("rotary_dim {rotary_dim} exceeds head_dim {head_dim}"),
            ));
        }
        let style = op.iparams[2];
        if style != ROPE_NEOX && style != ROPE_INTERLEAVED {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("unknown rotary style {style}"),
            ));
        }
        Ok(Rope {
            q: required_tensor(op, 0, "q")?,
            k: op.tensors[1],
            positions: required_tensor(op, 2, "positions")?,
            cos: required_tensor(op, 3, "cos")?,
            sin: required_tensor(op, 4, "sin")?,
            head_dim,
            rotary_dim,
            style,
        })
    }
}

/// Operands of [`OP_SILU_MUL`].
#[derive(Debug, Clone, Copy)]
pub struct SiluMul {
    /// `[n, i]`.
    pub gate: KilnTensor,
    /// `[n, i]`.
    pub up: KilnTensor,
    /// `[n, i]` `silu(gate) · up` (may alias `gate`).
    pub out: KilnTensor,
}

impl SiluMul {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_SILU_MUL);
        op.tensors[0] = self.gate;
        op.tensors[1] = self.up;
        op.tensors[2] = self.out;
        op
    }

    /// Read an [`OP_SILU_MUL`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_SILU_MUL)?;
        Ok(SiluMul {
            gate: required_tensor(op, 0, "gate")?,
            up: required_tensor(op, 1, "up")?,
            out: required_tensor(op, 2, "out")?,
        })
    }
}

/// Operands of [`OP_ADD`].
#[derive(Debug, Clone, Copy)]
pub struct Add {
    /// First addend.
    pub a: KilnTensor,
    /// Second addend (same shape).
    pub b: KilnTensor,
    /// `a + b` (may alias either).
    pub out: KilnTensor,
}

impl Add {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_ADD);
        op.tensors[0] = self.a;
        op.tensors[1] = self.b;
        op.tensors[2] = self.out;
        op
    }

    /// Read an [`OP_ADD`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_ADD)?;
        Ok(Add {
            a: required_tensor(op, 0, "a")?,
            b: required_tensor(op, 1, "b")?,
            out: required_tensor(op, 2, "out")?,
        })
    }
}

/// Operands of [`OP_KV_WRITE`].
#[derive(Debug, Clone, Copy)]
pub struct KvWrite {
    /// `[n, kv_heads·hd]` keys.
    pub k: KilnTensor,
    /// `[n, kv_heads·hd]` values.
    pub v: KilnTensor,
    /// `[blocks, block_size, kv_heads, hd]` key cache.
    pub k_cache: KilnTensor,
    /// `[blocks, block_size, kv_heads, hd]` value cache.
    pub v_cache: KilnTensor,
    /// `[n]` i32 slots (negative: skip the row).
    pub slot_mapping: KilnTensor,
}

impl KvWrite {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_KV_WRITE);
        op.tensors[0] = self.k;
        op.tensors[1] = self.v;
        op.tensors[2] = self.k_cache;
        op.tensors[3] = self.v_cache;
        op.tensors[4] = self.slot_mapping;
        op
    }

    /// Read an [`OP_KV_WRITE`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_KV_WRITE)?;
        Ok(KvWrite {
            k: required_tensor(op, 0, "k")?,
            v: required_tensor(op, 1, "v")?,
            k_cache: required_tensor(op, 2, "k_cache")?,
            v_cache: required_tensor(op, 3, "v_cache")?,
            slot_mapping: required_tensor(op, 4, "slot_mapping")?,
        })
    }
}

/// Operands of [`OP_ATTENTION`].
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    /// `[n, heads·hd]` queries.
    pub q: KilnTensor,
    /// Key cache.
    pub k_cache: KilnTensor,
    /// Value cache.
    pub v_cache: KilnTensor,
    /// `[seqs, max_blocks]` i32 (with a sliding window, entries before a
    /// sequence's window are placeholders: never read them; see [`OP_ATTENTION`]).
    pub block_tables: KilnTensor,
    /// `[seqs]` i32 context lengths.
    pub seq_lens: KilnTensor,
    /// `[seqs + 1]` i32 query row offsets.
    pub query_start_loc: KilnTensor,
    /// `[n, heads·hd]` output.
    pub out: KilnTensor,
    /// Softmax scale (usually 1/√hd).
    pub scale: f32,
    /// Logit soft-cap (0: none).
    pub softcap: f32,
    /// Query heads.
    pub num_heads: i64,
    /// Key/value heads (divides `num_heads`).
    pub num_kv_heads: i64,
    /// Head dimension.
    pub head_dim: i64,
    /// Tokens per KV block.
    pub block_size: i64,
    /// Sliding window in tokens (0: none).
    pub sliding_window: i64,
    /// Longest query in the batch.
    pub max_query_len: i64,
    /// Longest context in the batch.
    pub max_seq_len: i64,
}

impl Attention {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_ATTENTION);
        op.tensors[0] = self.q;
        op.tensors[1] = self.k_cache;
        op.tensors[2] = self.v_cache;
        op.tensors[3] = self.block_tables;
        op.tensors[4] = self.seq_lens;
        op.tensors[5] = self.query_start_loc;
        op.tensors[6] = self.out;
        op.fparams[0] = self.scale;
        op.fparams[1] = self.softcap;
        op.iparams[0] = self.num_heads;
        op.iparams[1] = self.num_kv_heads;
        op.iparams[2] = self.head_dim;
        op.iparams[3] = self.block_size;
        op.iparams[4] = self.sliding_window;
        op.iparams[5] = self.max_query_len;
        op.iparams[6] = self.max_seq_len;
        op
    }

    /// Read an [`OP_ATTENTION`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_ATTENTION)?;
        let num_heads = positive(op, 0, "num_heads")?;
        let num_kv_heads = positive(op, 1, "num_kv_heads")?;
        if num_heads % num_kv_heads != 0 {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("{num_kv_heads} kv heads do not divide {num_heads} heads"),
            ));
        }
        Ok(Attention {
            q: required_tensor(op, 0, "q")?,
            k_cache: required_tensor(op, 1, "k_cache")?,
            v_cache: required_tensor(op, 2, "v_cache")?,
            block_tables: required_tensor(op, 3, "block_tables")?,
            seq_lens: required_tensor(op, 4, "seq_lens")?,
            query_start_loc: required_tensor(op, 5, "query_start_loc")?,
            out: required_tensor(op, 6, "out")?,
            scale: op.fparams[0],
            softcap: op.fparams[1],
            num_heads,
            num_kv_heads,
            head_dim: positive(op, 2, "head_dim")?,
            block_size: positive(op, 3, "block_size")?,
            sliding_window: op.iparams[4].max(0),
            max_query_len: non_negative(op, 5, "max_query_len")?,
            max_seq_len: non_negative(op, 6, "max_seq_len")?,
        })
    }
}

/// Operands of [`OP_GATHER_ROWS`].
#[derive(Debug, Clone, Copy)]
pub struct GatherRows {
    /// `[n, h]`.
    pub x: KilnTensor,
    /// `[m]` i32 row indices into `x`.
    pub indices: KilnTensor,
    /// `[m, h]`.
    pub out: KilnTensor,
}

impl GatherRows {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_GATHER_ROWS);
        op.tensors[0] = self.x;
        op.tensors[1] = self.indices;
        op.tensors[2] = self.out;
        op
    }

    /// Read an [`OP_GATHER_ROWS`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_GATHER_ROWS)?;
        Ok(GatherRows {
            x: required_tensor(op, 0, "x")?,
            indices: required_tensor(op, 1, "indices")?,
            out: required_tensor(op, 2, "out")?,
        })
    }
}

/// Operands of [`OP_COPY_BLOCKS`].
#[derive(Debug, Clone, Copy)]
pub struct CopyBlocks {
    /// Key cache.
    pub k_cache: KilnTensor,
    /// Value cache.
    pub v_cache: KilnTensor,
    /// `[p, 2]` i32 (source block, destination block).
    pub pairs: KilnTensor,
}

impl CopyBlocks {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_COPY_BLOCKS);
        op.tensors[0] = self.k_cache;
        op.tensors[1] = self.v_cache;
        op.tensors[2] = self.pairs;
        op
    }

    /// Read an [`OP_COPY_BLOCKS`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_COPY_BLOCKS)?;
        Ok(CopyBlocks {
            k_cache: required_tensor(op, 0, "k_cache")?,
            v_cache: required_tensor(op, 1, "v_cache")?,
            pairs: required_tensor(op, 2, "pairs")?,
        })
    }
}

/// Operands of [`OP_SAMPLE`].
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `[m, vocab]` f32 logits (may be modified).
    pub logits: KilnTensor,
    /// `[m]` [`crate::KilnSampleParams`] as bytes.
    pub params: KilnTensor,
    /// `[m]` i32 sampled ids.
    pub out_ids: KilnTensor,
    /// `[m]` f32 log-probability of each sampled id.
    pub out_logprobs: KilnTensor,
    /// `[m, N]` i32 top ids (or [`KilnTensor::NONE`]).
    pub out_top_ids: KilnTensor,
    /// `[m, N]` f32 top log-probabilities (or [`KilnTensor::NONE`]).
    pub out_top_logprobs: KilnTensor,
    /// `[e]` [`crate::KilnLogitAdjust`] as bytes (or [`KilnTensor::NONE`]).
    pub adjustments: KilnTensor,
    /// `[m, W]` i32 allowed-token bitsets (or [`KilnTensor::NONE`]).
    pub allowed: KilnTensor,
    /// N, the top log-probabilities per row (0 when `out_top_ids` is absent).
    pub num_top: i64,
}

impl Sample {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_SAMPLE);
        op.tensors[0] = self.logits;
        op.tensors[1] = self.params;
        op.tensors[2] = self.out_ids;
        op.tensors[3] = self.out_logprobs;
        op.tensors[4] = self.out_top_ids;
        op.tensors[5] = self.out_top_logprobs;
        op.tensors[6] = self.adjustments;
        op.tensors[7] = self.allowed;
        op.iparams[0] = self.num_top;
        op
    }

    /// Read an [`OP_SAMPLE`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_SAMPLE)?;
        let (out_top_ids, out_top_logprobs) = (op.tensors[4], op.tensors[5]);
        let num_top = if out_top_ids.is_none() || out_top_logprobs.is_none() {
            0
        } else {
            op.iparams[0].max(0)
        };
        Ok(Sample {
            logits: required_tensor(op, 0, "logits")?,
            params: required_tensor(op, 1, "params")?,
            out_ids: required_tensor(op, 2, "out_ids")?,
            out_logprobs: required_tensor(op, 3, "out_logprobs")?,
            out_top_ids,
            out_top_logprobs,
            adjustments: op.tensors[6],
            allowed: op.tensors[7],
            num_top,
        })
    }
}

/// Operands of [`OP_CAST`].
#[derive(Debug, Clone, Copy)]
pub struct Cast {
    /// Source.
    pub input: KilnTensor,
    /// Destination (same number of elements, its own dtype).
    pub out: KilnTensor,
}

impl Cast {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_CAST);
        op.tensors[0] = self.input;
        op.tensors[1] = self.out;
        op
    }

    /// Read an [`OP_CAST`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_CAST)?;
        Ok(Cast {
            input: required_tensor(op, 0, "input")?,
            out: required_tensor(op, 1, "out")?,
        })
    }
}

/// Operands of [`OP_LAYER_NORM`].
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    /// `[n, h]` input.
    pub x: KilnTensor,
    /// `[1, h]` scale.
    pub gamma: KilnWeight,
    /// `[1, h]` shift or [`KilnWeight::NULL`].
    pub beta: KilnWeight,
    /// Added to the variance.
    pub eps: f32,
    /// `[n, h]` output.
    pub out: KilnTensor,
}

impl LayerNorm {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_LAYER_NORM);
        op.tensors[0] = self.x;
        op.tensors[1] = self.out;
        op.weights[0] = self.gamma;
        op.weights[1] = self.beta;
        op.fparams[0] = self.eps;
        op
    }

    /// Read an [`OP_LAYER_NORM`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_LAYER_NORM)?;
        Ok(LayerNorm {
            x: required_tensor(op, 0, "x")?,
            out: required_tensor(op, 1, "out")?,
            gamma: required_weight(op, 0, "gamma")?,
            beta: op.weights[1],
            eps: op.fparams[0],
        })
    }
}

/// Operands of [`OP_ACTIVATION`].
#[derive(Debug, Clone, Copy)]
pub struct Activation {
    /// One of the `ACT_*` kinds.
    pub kind: i64,
    /// `[n, i]`.
    pub x: KilnTensor,
    /// `[n, i]` multiplier or [`KilnTensor::NONE`] for an ungated activation.
    pub up: KilnTensor,
    /// `[n, i]` (may alias `x`).
    pub out: KilnTensor,
}

impl Activation {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_ACTIVATION);
        op.tensors[0] = self.x;
        op.tensors[1] = self.up;
        op.tensors[2] = self.out;
        op.iparams[0] = self.kind;
        op
    }

    /// Read an [`OP_ACTIVATION`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_ACTIVATION)?;
        let kind = op.iparams[0];
        if ![ACT_SILU, ACT_GELU_TANH, ACT_GELU, ACT_RELU].contains(&kind) {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("unknown activation kind {kind}"),
            ));
        }
        Ok(Activation {
            kind,
            x: required_tensor(op, 0, "x")?,
            up: op.tensors[1],
            out: required_tensor(op, 2, "out")?,
        })
    }
}

/// Operands of [`OP_SCALE`].
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Input.
    pub x: KilnTensor,
    /// Multiplier.
    pub factor: f32,
    /// Same shape as `x` (may alias).
    pub out: KilnTensor,
    /// `out = x · factor` or `out += x · factor`.
    pub accumulate: Accumulate,
}

impl Scale {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_SCALE);
        op.tensors[0] = self.x;
        op.tensors[1] = self.out;
        op.fparams[0] = self.factor;
        op.iparams[0] = self.accumulate.slot_value();
        op
    }

    /// Read an [`OP_SCALE`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_SCALE)?;
        Ok(Scale {
            x: required_tensor(op, 0, "x")?,
            out: required_tensor(op, 1, "out")?,
            factor: op.fparams[0],
            accumulate: accumulate_flag(op, 0),
        })
    }
}

/// Operands of [`OP_SOFTCAP`].
#[derive(Debug, Clone, Copy)]
pub struct Softcap {
    /// Input.
    pub x: KilnTensor,
    /// `c > 0` in `c · tanh(x / c)`.
    pub cap: f32,
    /// Same shape as `x` (may alias).
    pub out: KilnTensor,
}

impl Softcap {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_SOFTCAP);
        op.tensors[0] = self.x;
        op.tensors[1] = self.out;
        op.fparams[0] = self.cap;
        op
    }

    /// Read an [`OP_SOFTCAP`] operation.
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_SOFTCAP)?;
        let cap = op.fparams[0];
        // NaN is refused too.
        if cap.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("cap {cap} must be positive"),
            ));
        }
        Ok(Softcap {
            x: required_tensor(op, 0, "x")?,
            cap,
            out: required_tensor(op, 1, "out")?,
        })
    }
}

/// Operands of [`OP_MOE`].
#[derive(Debug, Clone, Copy)]
pub struct Moe {
    /// `[n, h]` input.
    pub x: KilnTensor,
    /// `[n, E]` router logits.
    pub router_logits: KilnTensor,
    /// `[n, h]` output.
    pub out: KilnTensor,
    /// `[n, h]` shared-expert output added to every row, or [`KilnTensor::NONE`].
    pub shared_out: KilnTensor,
    /// `[n, 1]` logits whose sigmoid scales `shared_out`, or [`KilnTensor::NONE`]
    /// (the shared output is then added unscaled).
    pub shared_gate: KilnTensor,
    /// `[E·2·I, h]`: per expert, I gate rows then I up rows.
    pub gate_up: KilnWeight,
    /// `[E·h, I]`: per expert, h down-projection rows.
    pub down: KilnWeight,
    /// E, the number of experts.
    pub num_experts: i64,
    /// k, the experts each row is routed to (`1 ≤ k ≤ E`).
    pub top_k: i64,
    /// Leading rows of `x` that belong to single-token decode steps (see [`OP_LINEAR`]).
    pub decode_rows: u64,
    /// The `ACT_*` kind applied to the gate projection.
    pub activation: i64,
    /// [`MOE_ROUTING_SOFTMAX_TOPK`] or [`MOE_ROUTING_SOFTMAX_TOPK_RENORM`].
    pub routing: i64,
    /// Overwrite or add into `out`.
    pub accumulate: Accumulate,
}

/// The per-expert sizes an [`OP_MOE`]'s stacked weights imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeExpertDims {
    /// h, the model's hidden size (columns of `gate_up`, rows of each down block).
    pub hidden: u64,
    /// I, each expert's intermediate size (rows of each gate or up block).
    pub intermediate: u64,
}

impl Moe {
    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        let mut op = KilnOp::new(OP_MOE);
        op.tensors[0] = self.x;
        op.tensors[1] = self.router_logits;
        op.tensors[2] = self.out;
        op.tensors[3] = self.shared_out;
        op.tensors[4] = self.shared_gate;
        op.weights[0] = self.gate_up;
        op.weights[1] = self.down;
        op.iparams[0] = self.num_experts;
        op.iparams[1] = self.top_k;
        op.iparams[2] = self.decode_rows as i64;
        op.iparams[3] = self.activation;
        op.iparams[4] = self.routing;
        op.iparams[5] = self.accumulate.slot_value();
        op
    }

    /// Read an [`OP_MOE`] operation, checking its parameters and that the
    /// shapes of its tensors agree (the weights' shapes are the backend's to
    /// check, with [`Moe::expert_dims`]).
    pub fn decode(op: &KilnOp) -> Result<Self, OpDecodeError> {
        expect_opcode(op, OP_MOE)?;
        let num_experts = positive(op, 0, "num_experts")?;
        let top_k = positive(op, 1, "top_k")?;
        if top_k > num_experts {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("top_k {top_k} exceeds the {num_experts} experts"),
            ));
        }
        let decode_rows = non_negative(op, 2, "decode_rows")? as u64;
        let activation = op.iparams[3];
        if ![ACT_SILU, ACT_GELU_TANH, ACT_GELU, ACT_RELU].contains(&activation) {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("unknown activation kind {activation}"),
            ));
        }
        let routing = op.iparams[4];
        if routing != MOE_ROUTING_SOFTMAX_TOPK && routing != MOE_ROUTING_SOFTMAX_TOPK_RENORM {
            return Err(OpDecodeError::invalid(
                op.opcode,
                format!("unknown routing mode {routing}"),
            ));
        }
        let moe = Moe {
            x: required_tensor(op, 0, "x")?,
            router_logits: required_tensor(op, 1, "router_logits")?,
            out: required_tensor(op, 2, "out")?,
            shared_out: op.tensors[3],
            shared_gate: op.tensors[4],
            gate_up: required_weight(op, 0, "gate_up")?,
            down: required_weight(op, 1, "down")?,
            num_experts,
            top_k,
            decode_rows,
            activation,
            routing,
            accumulate: accumulate_flag(op, 5),
        };
        moe.check_shapes()
            .map_err(|problem| OpDecodeError::invalid(op.opcode, problem))?;
        Ok(moe)
    }

    /// n, the number of rows.
    pub fn rows(&self) -> u64 {
        self.x.dims[0]
    }

    /// h, the width of `x` and `out`.
    pub fn hidden(&self) -> u64 {
        self.x.dims[1]
    }

    fn check_shapes(&self) -> Result<(), String> {
        fn shape(t: &KilnTensor) -> String {
            format!("{:?}", &t.dims[..t.rank as usize])
        }
        if self.x.rank != 2 {
            return Err(format!("x must be [n, h], got {}", shape(&self.x)));
        }
        let (n, h) = (self.rows(), self.hidden());
        let e = self.num_experts as u64;
        let matrix = |t: &KilnTensor, name: &str, cols: u64, want: &str| {
            if t.rank == 2 && t.dims[0] == n && t.dims[1] == cols {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be {want} = [{n}, {cols}], got {}",
                    shape(t)
                ))
            }
        };
        matrix(&self.router_logits, "router_logits", e, "[n, E]")?;
        matrix(&self.out, "out", h, "[n, h]")?;
        if !self.shared_out.is_none() {
            matrix(&self.shared_out, "shared_out", h, "[n, h]")?;
        }
        if !self.shared_gate.is_none() {
            if self.shared_out.is_none() {
                return Err("shared_gate (t4) is given without shared_out (t3)".into());
            }
            matrix(&self.shared_gate, "shared_gate", 1, "[n, 1]")?;
        }
        if self.decode_rows > n {
            return Err(format!(
                "decode_rows {} exceeds the {n} rows",
                self.decode_rows
            ));
        }
        Ok(())
    }

    /// I and h from the stacked weights' shapes (`[rows, cols]` of `gate_up`
    /// and `down`): `gate_up` must be `[E·2·I, h]` and `down` `[E·h, I]`,
    /// with h equal to `x`'s width and I positive.
    pub fn expert_dims(
        &self,
        gate_up: (u64, u64),
        down: (u64, u64),
    ) -> Result<MoeExpertDims, OpDecodeError> {
        let invalid = |problem: String| OpDecodeError::invalid(OP_MOE, problem);
        let e = self.num_experts as u64;
        let (gate_up_rows, gate_up_cols) = gate_up;
        let (down_rows, down_cols) = down;
        if gate_up_rows == 0 || gate_up_rows % (2 * e) != 0 {
            return Err(invalid(format!(
                "gate_up (w0) has {gate_up_rows} rows, not a positive multiple of 2·E = {}",
                2 * e
            )));
        }
        if down_rows == 0 || down_rows % e != 0 {
            return Err(invalid(format!(
                "down (w1) has {down_rows} rows, not a positive multiple of E = {e}"
            )));
        }
        let intermediate = gate_up_rows / (2 * e);
        let hidden = down_rows / e;
        if hidden != self.hidden() || gate_up_cols != hidden {
            return Err(invalid(format!(
                "hidden sizes disagree: x has {} columns, gate_up (w0) {gate_up_cols}, \
                 down (w1) {hidden} rows per expert",
                self.hidden()
            )));
        }
        if down_cols != intermediate {
            return Err(invalid(format!(
                "down (w1) has {down_cols} columns, but gate_up (w0) implies an \
                 intermediate size of {intermediate}"
            )));
        }
        Ok(MoeExpertDims {
            hidden,
            intermediate,
        })
    }
}

/// Any operation, decoded: what a backend's `execute` matches on.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// [`OP_EMBEDDING`].
    Embedding(Embedding),
    /// [`OP_RMS_NORM`].
    RmsNorm(RmsNorm),
    /// [`OP_ADD_RMS_NORM`].
    AddRmsNorm(AddRmsNorm),
    /// [`OP_LINEAR`].
    Linear(Linear),
    /// [`OP_ROPE`].
    Rope(Rope),
    /// [`OP_SILU_MUL`].
    SiluMul(SiluMul),
    /// [`OP_ADD`].
    Add(Add),
    /// [`OP_KV_WRITE`].
    KvWrite(KvWrite),
    /// [`OP_ATTENTION`].
    Attention(Attention),
    /// [`OP_GATHER_ROWS`].
    GatherRows(GatherRows),
    /// [`OP_COPY_BLOCKS`].
    CopyBlocks(CopyBlocks),
    /// [`OP_SAMPLE`].
    Sample(Sample),
    /// [`OP_CAST`].
    Cast(Cast),
    /// [`OP_LAYER_NORM`].
    LayerNorm(LayerNorm),
    /// [`OP_ACTIVATION`].
    Activation(Activation),
    /// [`OP_SCALE`].
    Scale(Scale),
    /// [`OP_SOFTCAP`].
    Softcap(Softcap),
    /// [`OP_MOE`].
    Moe(Moe),
}

impl Op {
    /// Read any operation this ABI version defines.
    pub fn decode(op: &KilnOp) -> Result<Op, OpDecodeError> {
        Ok(match op.opcode {
            OP_EMBEDDING => Op::Embedding(Embedding::decode(op)?),
            OP_RMS_NORM => Op::RmsNorm(RmsNorm::decode(op)?),
            OP_ADD_RMS_NORM => Op::AddRmsNorm(AddRmsNorm::decode(op)?),
            OP_LINEAR => Op::Linear(Linear::decode(op)?),
            OP_ROPE => Op::Rope(Rope::decode(op)?),
            OP_SILU_MUL => Op::SiluMul(SiluMul::decode(op)?),
            OP_ADD => Op::Add(Add::decode(op)?),
            OP_KV_WRITE => Op::KvWrite(KvWrite::decode(op)?),
            OP_ATTENTION => Op::Attention(Attention::decode(op)?),
            OP_GATHER_ROWS => Op::GatherRows(GatherRows::decode(op)?),
            OP_COPY_BLOCKS => Op::CopyBlocks(CopyBlocks::decode(op)?),
            OP_SAMPLE => Op::Sample(Sample::decode(op)?),
            OP_CAST => Op::Cast(Cast::decode(op)?),
            OP_LAYER_NORM => Op::LayerNorm(LayerNorm::decode(op)?),
            OP_ACTIVATION => Op::Activation(Activation::decode(op)?),
            OP_SCALE => Op::Scale(Scale::decode(op)?),
            OP_SOFTCAP => Op::Softcap(Softcap::decode(op)?),
            OP_MOE => Op::Moe(Moe::decode(op)?),
            other => return Err(OpDecodeError::UnknownOpcode(other)),
        })
    }

    /// The `KilnOp` holding these operands in their slots.
    pub fn encode(self) -> KilnOp {
        match self {
            Op::Embedding(o) => o.encode(),
            Op::RmsNorm(o) => o.encode(),
            Op::AddRmsNorm(o) => o.encode(),
            Op::Linear(o) => o.encode(),
            Op::Rope(o) => o.encode(),
            Op::SiluMul(o) => o.encode(),
            Op::Add(o) => o.encode(),
            Op::KvWrite(o) => o.encode(),
            Op::Attention(o) => o.encode(),
            Op::GatherRows(o) => o.encode(),
            Op::CopyBlocks(o) => o.encode(),
            Op::Sample(o) => o.encode(),
            Op::Cast(o) => o.encode(),
            Op::LayerNorm(o) => o.encode(),
            Op::Activation(o) => o.encode(),
            Op::Scale(o) => o.encode(),
            Op::Softcap(o) => o.encode(),
            Op::Moe(o) => o.encode(),
        }
    }
}
