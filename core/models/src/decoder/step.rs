//! Per-step device buffers: the batch's index arrays and every activation,
//! sized once for the largest step, and the tensor views of one batch over them.

use kiln_plugin_abi::safe::{Buffer, Device};
use kiln_plugin_abi::{KILN_F32, KILN_I32, KilnTensor};

use super::dtype::ActDType;
use super::{Decoder, DecoderError};

/// Host-side inputs of one forward pass. All index arrays are i32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchInputs<'a> {
    /// `[n]` token ids.
    pub token_ids: &'a [i32],
    /// `[n]` positions.
    pub positions: &'a [i32],
    /// `[n]` KV slots.
    pub slot_mapping: &'a [i32],
    /// `[seqs]` context lengths after this step.
    pub seq_lens: &'a [i32],
    /// `[seqs + 1]` query row offsets.
    pub query_start_loc: &'a [i32],
    /// `[seqs, blocks_per_seq]` block tables, padded.
    pub block_tables: &'a [i32],
    /// Columns of `block_tables`.
    pub blocks_per_seq: usize,
    /// `[m]` rows whose logits are computed.
    pub logits_indices: &'a [i32],
    /// Longest query in the batch.
    pub max_query_len: usize,
    /// Longest context in the batch.
    pub max_seq_len: usize,
    /// Leading tokens that are single-token decode steps (the batch puts
    /// decoding sequences first); a hint for backends (see `OP_LINEAR`).
    pub decode_rows: usize,
    /// Leading `logits_indices` rows that belong to decode steps.
    pub decode_logits_rows: usize,
    /// Compute every row's final hidden state (for embeddings).
    pub hidden_states: bool,
}

/// Capacity of the per-step buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCapacity {
    /// Tokens per step (`max_num_batched_tokens`).
    pub max_tokens: usize,
    /// Sequences per step (`max_num_seqs`).
    pub max_seqs: usize,
    /// Block-table columns (`ceil(max_model_len / block_size)`).
    pub max_blocks_per_seq: usize,
}

/// Device buffers reused by every step: inputs and activations, sized once.
pub struct StepBuffers {
    cap: StepCapacity,
    /// Rows of the attention index arrays: `max_seqs`, or for an encoder,
    /// whose every token is its own attention row, `max_tokens`.
    attention_rows: usize,
    act: ActDType,
    hidden: usize,
    q_dim: usize,
    kv_dim: usize,
    /// Columns of `gate` and `up`: the widest dense MLP (the model's, or a
    /// shared expert's).
    inter: usize,
    /// E, columns of `router_logits` (0 for dense models).
    experts: usize,
    /// Whether `shared_out` and `shared_gate` hold rows (a shared expert).
    shared_expert: bool,
    vocab: usize,
    ids: Buffer,
    positions: Buffer,
    slots: Buffer,
    seq_lens: Buffer,
    query_start_loc: Buffer,
    block_tables: Buffer,
    logits_indices: Buffer,
    residual: Buffer,
    normed: Buffer,
    q: Buffer,
    k: Buffer,
    v: Buffer,
    attn: Buffer,
    gate: Buffer,
    up: Buffer,
    branch: Buffer,
    normed2: Buffer,
    router_logits: Buffer,
    shared_out: Buffer,
    shared_gate_pairs: Buffer,
    shared_gate: Buffer,
    /// i32 `0, 2, 4, …`: the rows of `shared_gate_pairs` seen as one column
    /// that hold each token's first logit.
    even_rows: Buffer,
    last_hidden: Buffer,
    last_normed: Buffer,
    logits: Buffer,
    logits_f32: Option<Buffer>,
}

impl StepBuffers {
    /// Allocate buffers for `cap` on `device` for the decoder's shapes.
    pub fn allocate(
        device: &Device,
        decoder: &Decoder,
        cap: StepCapacity,
    ) -> Result<StepBuffers, DecoderError> {
        let c = &decoder.config;
        let act = decoder.act;
        let (t, s) = (cap.max_tokens as u64, cap.max_seqs as u64);
        let a = act.size();
        let i32s = |n: u64| device.alloc(n.max(1) * 4);
        let acts = |rows: u64, cols: usize| device.alloc((rows * cols as u64 * a).max(1));
        let q_dim = c.num_attention_heads * c.head_dim;
        let kv_dim = c.num_key_value_heads * c.head_dim;
        let attention_rows = match decoder.variant.encoder {
            true => cap.max_tokens.max(cap.max_seqs),
            false => cap.max_seqs,
        };
        let rows = attention_rows as u64;
        let experts = decoder.variant.experts.as_ref();
        let num_experts = experts.map_or(0, |x| x.count);
        let shared = experts.and_then(|x| x.shared_intermediate);
        let inter = c.intermediate_size.max(shared.unwrap_or(0));
        let shared_rows = if shared.is_some() { t } else { 0 };
        let even_rows = i32s(shared_rows)?;
        if shared.is_some() {
            let evens: Vec<i32> = (0..cap.max_tokens as i32).map(|r| 2 * r).collect();
            device.write(&even_rows, 0, bytemuck_i32(&evens))?;
        }
        Ok(StepBuffers {
            cap,
            attention_rows,
            act,
            hidden: c.hidden_size,
            q_dim,
            kv_dim,
            inter,
            experts: num_experts,
            shared_expert: shared.is_some(),
            vocab: c.vocab_size,
            ids: i32s(t)?,
            positions: i32s(t)?,
            slots: i32s(t)?,
            seq_lens: i32s(rows)?,
            query_start_loc: i32s(rows + 1)?,
            block_tables: i32s(rows * cap.max_blocks_per_seq as u64)?,
            logits_indices: i32s(s)?,
            residual: acts(t, c.hidden_size)?,
            normed: acts(t, c.hidden_size)?,
            q: acts(t, q_dim)?,
            k: acts(t, kv_dim)?,
            v: acts(t, kv_dim)?,
            attn: acts(t, q_dim)?,
            gate: acts(t, inter)?,
            up: acts(t, inter)?,
            branch: acts(t, c.hidden_size)?,
            normed2: acts(t, c.hidden_size)?,
            router_logits: acts(t, num_experts)?,
            shared_out: acts(shared_rows, c.hidden_size)?,
            shared_gate_pairs: acts(shared_rows, 2)?,
            shared_gate: acts(shared_rows, 1)?,
            even_rows,
            last_hidden: acts(s, c.hidden_size)?,
            last_normed: acts(s, c.hidden_size)?,
            logits: acts(s, c.vocab_size)?,
            logits_f32: match act {
                ActDType::F32 => None,
                _ => Some(device.alloc(s * c.vocab_size as u64 * 4)?),
            },
        })
    }

    /// The capacity these buffers were sized for.
    pub fn capacity(&self) -> StepCapacity {
        self.cap
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> u64 {
        [
            &self.ids,
            &self.positions,
            &self.slots,
            &self.seq_lens,
            &self.query_start_loc,
            &self.block_tables,
            &self.logits_indices,
            &self.residual,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.gate,
            &self.up,
            &self.branch,
            &self.normed2,
            &self.router_logits,
            &self.shared_out,
            &self.shared_gate_pairs,
            &self.shared_gate,
            &self.even_rows,
            &self.last_hidden,
            &self.last_normed,
            &self.logits,
        ]
        .iter()
        .map(|b| b.len())
        .sum::<u64>()
            + self.logits_f32.as_ref().map_or(0, Buffer::len)
    }

    pub(crate) fn check(&self, inputs: &BatchInputs<'_>) -> Result<(), DecoderError> {
        let n = inputs.token_ids.len();
        let s = inputs.seq_lens.len();
        let problems = [
            (
                n > self.cap.max_tokens,
                format!("{n} tokens > {}", self.cap.max_tokens),
            ),
            (
                s > self.attention_rows,
                format!("{s} sequences > {}", self.attention_rows),
            ),
            (
                inputs.logits_indices.len() > self.cap.max_seqs,
                format!(
                    "{} logits rows > {}",
                    inputs.logits_indices.len(),
                    self.cap.max_seqs
                ),
            ),
            (
                inputs.blocks_per_seq > self.cap.max_blocks_per_seq,
                format!(
                    "{} blocks per sequence > {}",
                    inputs.blocks_per_seq, self.cap.max_blocks_per_seq
                ),
            ),
            (
                inputs.positions.len() != n || inputs.slot_mapping.len() != n,
                "positions/slots do not match the tokens".to_string(),
            ),
            (
                inputs.query_start_loc.len() != s + 1,
                "query_start_loc must have seqs + 1 entries".to_string(),
            ),
            (
                inputs.block_tables.len() != s * inputs.blocks_per_seq,
                "block_tables must be seqs × blocks_per_seq".to_string(),
            ),
        ];
        match problems.into_iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(DecoderError::BatchTooLarge(msg)),
            None => Ok(()),
        }
    }

    pub(crate) fn upload(
        &self,
        device: &Device,
        inputs: &BatchInputs<'_>,
    ) -> Result<(), DecoderError> {
        self.check(inputs)?;
        let put = |buf: &Buffer, data: &[i32]| device.write(buf, 0, bytemuck_i32(data));
        put(&self.ids, inputs.token_ids)?;
        put(&self.positions, inputs.positions)?;
        put(&self.slots, inputs.slot_mapping)?;
        put(&self.seq_lens, inputs.seq_lens)?;
        put(&self.query_start_loc, inputs.query_start_loc)?;
        put(&self.block_tables, inputs.block_tables)?;
        put(&self.logits_indices, inputs.logits_indices)?;
        Ok(())
    }

    /// Read `[rows, vocab]` f32 logits after a forward pass.
    pub fn read_logits(&self, device: &Device, rows: usize) -> Result<Vec<f32>, DecoderError> {
        let mut out = vec![0f32; rows * self.vocab];
        self.read_logits_rows(device, 0, &mut out)?;
        Ok(out)
    }

    /// Copy f32 logits rows `first..first + out.len() / vocab` into `out`.
    pub fn read_logits_rows(
        &self,
        device: &Device,
        first: usize,
        out: &mut [f32],
    ) -> Result<(), DecoderError> {
        let buf = self.logits_f32.as_ref().unwrap_or(&self.logits);
        // SAFETY: f32 has no padding and every byte pattern is a valid f32.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, std::mem::size_of_val(out))
        };
        device.read(buf, (first * self.vocab * 4) as u64, bytes)?;
        Ok(())
    }

    /// `[rows, hidden]` f32 final hidden states from row `first`: the
    /// final-normed rows (`normed`) or the residual stream.
    pub(crate) fn read_hidden(
        &self,
        device: &Device,
        normed: bool,
        first: usize,
        rows: usize,
    ) -> Result<Vec<f32>, DecoderError> {
        let buf = if normed { &self.normed } else { &self.residual };
        let size = self.act.size() as usize;
        let mut bytes = vec![0u8; rows * self.hidden * size];
        device.read(buf, (first * self.hidden * size) as u64, &mut bytes)?;
        Ok(match self.act {
            ActDType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            ActDType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            ActDType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }

    /// `[rows, hidden]` view of the residual stream.
    pub(crate) fn residual_view(&self, rows: usize) -> KilnTensor {
        let dims = [rows as u64, self.hidden as u64];
        self.residual.view(0, self.act.abi(), &dims)
    }

    /// `[rows, vocab]` f32 view of the logits (what [`read_logits`](Self::read_logits) reads).
    pub fn logits_view(&self, rows: usize) -> KilnTensor {
        let buf = self.logits_f32.as_ref().unwrap_or(&self.logits);
        buf.view(0, KILN_F32, &[rows as u64, self.vocab as u64])
    }

    /// Vocabulary size (logits row length).
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

fn bytemuck_i32(data: &[i32]) -> &[u8] {
    // SAFETY: i32 has no padding and any byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Tensor views of one batch over the step buffers.
#[derive(Clone, Copy)]
pub(crate) struct BatchViews {
    pub ids: KilnTensor,
    pub positions: KilnTensor,
    pub slots: KilnTensor,
    pub seq_lens: KilnTensor,
    pub query_start_loc: KilnTensor,
    pub block_tables: KilnTensor,
    pub logits_indices: KilnTensor,
    pub residual: KilnTensor,
    pub normed: KilnTensor,
    /// `[n, hidden]` second norm output (parallel blocks with two norms).
    pub normed2: KilnTensor,
    /// `[n, hidden]` a branch's output before it joins the residual.
    pub branch: KilnTensor,
    pub q: KilnTensor,
    pub k: KilnTensor,
    pub v: KilnTensor,
    pub attn: KilnTensor,
    pub gate: KilnTensor,
    pub up: KilnTensor,
    /// `[n, E]` a sparse layer's router logits.
    pub router_logits: KilnTensor,
    /// `[n, hidden]` the shared expert's output (none without one).
    pub shared_out: KilnTensor,
    /// `[n, 2]` the shared expert's gate logit, twice per token.
    pub shared_gate_pairs: KilnTensor,
    /// `[2n, 1]` the same bytes as one column.
    pub shared_gate_column: KilnTensor,
    /// `[n]` i32 indices of each token's first logit in that column.
    pub even_rows: KilnTensor,
    /// `[n, 1]` the shared expert's gate logit (none without one).
    pub shared_gate: KilnTensor,
    pub last_hidden: KilnTensor,
    pub last_normed: KilnTensor,
    pub logits: KilnTensor,
    pub logits_f32: KilnTensor,
    pub max_query_len: i64,
    pub max_seq_len: i64,
    pub decode_rows: u64,
    pub decode_logits_rows: u64,
    pub n: u64,
}

impl BatchViews {
    pub fn new(b: &StepBuffers, inputs: &BatchInputs<'_>) -> Self {
        let n = inputs.token_ids.len() as u64;
        let m = inputs.logits_indices.len() as u64;
        let act = b.act.abi();
        let s = inputs.seq_lens.len() as u64;
        let h = b.hidden as u64;
        let logits = b.logits.view(0, act, &[m, b.vocab as u64]);
        // Views of the shared expert's buffers, which only it sizes.
        let shared = |buf: &Buffer, dtype, dims: &[u64]| match b.shared_expert {
            true => buf.view(0, dtype, dims),
            false => KilnTensor::NONE,
        };
        BatchViews {
            ids: b.ids.view(0, KILN_I32, &[n]),
            positions: b.positions.view(0, KILN_I32, &[n]),
            slots: b.slots.view(0, KILN_I32, &[n]),
            seq_lens: b.seq_lens.view(0, KILN_I32, &[s]),
            query_start_loc: b.query_start_loc.view(0, KILN_I32, &[s + 1]),
            block_tables: b
                .block_tables
                .view(0, KILN_I32, &[s, inputs.blocks_per_seq as u64]),
            logits_indices: b.logits_indices.view(0, KILN_I32, &[m]),
            residual: b.residual.view(0, act, &[n, h]),
            normed: b.normed.view(0, act, &[n, h]),
            normed2: b.normed2.view(0, act, &[n, h]),
            branch: b.branch.view(0, act, &[n, h]),
            q: b.q.view(0, act, &[n, b.q_dim as u64]),
            k: b.k.view(0, act, &[n, b.kv_dim as u64]),
            v: b.v.view(0, act, &[n, b.kv_dim as u64]),
            attn: b.attn.view(0, act, &[n, b.q_dim as u64]),
            gate: b.gate.view(0, act, &[n, b.inter as u64]),
            up: b.up.view(0, act, &[n, b.inter as u64]),
            router_logits: b.router_logits.view(0, act, &[n, b.experts as u64]),
            shared_out: shared(&b.shared_out, act, &[n, h]),
            shared_gate_pairs: shared(&b.shared_gate_pairs, act, &[n, 2]),
            shared_gate_column: shared(&b.shared_gate_pairs, act, &[2 * n, 1]),
            even_rows: shared(&b.even_rows, KILN_I32, &[n]),
            shared_gate: shared(&b.shared_gate, act, &[n, 1]),
            last_hidden: b.last_hidden.view(0, act, &[m, h]),
            last_normed: b.last_normed.view(0, act, &[m, h]),
            logits,
            logits_f32: b
                .logits_f32
                .as_ref()
                .map_or(logits, |buf| buf.view(0, KILN_F32, &[m, b.vocab as u64])),
            max_query_len: inputs.max_query_len as i64,
            max_seq_len: inputs.max_seq_len as i64,
            decode_rows: inputs.decode_rows.min(n as usize) as u64,
            decode_logits_rows: inputs.decode_logits_rows.min(m as usize) as u64,
            n,
        }
    }
}
