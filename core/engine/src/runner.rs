//! The model runner: owns the device, the decoder's weights, the KV cache and
//! the per-step buffers, and turns a [`StepPlan`] into one forward pass.

use std::collections::HashMap;

use kiln_models::decoder::{BatchInputs, Decoder, KvCache, RowHead, StepBuffers};
use kiln_plugin_abi::safe::{Buffer, Device, Graph};
use kiln_plugin_abi::{KILN_CAP_DEVICE_SAMPLING, KILN_CAP_SAMPLE_MASK, KILN_I32, ops};
use kiln_protocol::step::{
    BlockCopy, DeviceSample, PromptLogits, RowSampling, SeqEmbedding, StepLogits, StepPlan,
};
use kiln_protocol::{Pooling, SeqId};

use crate::device_sampling::{SampleBuffers, split_rows};
use crate::inputs::{BlockTables, HostBatch, build_batch};

/// Why a step failed on the device side.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The plan is inconsistent with the runner's state (a scheduler bug).
    #[error("invalid step plan: {0}")]
    Plan(#[from] crate::inputs::PlanError),
    /// The decoder or backend failed.
    #[error(transparent)]
    Decoder(#[from] kiln_models::decoder::DecoderError),
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] kiln_plugin_abi::safe::AbiError),
}

/// The device side of the engine.
pub struct ModelRunner {
    device: Device,
    decoder: Decoder,
    kv: KvCache,
    bufs: StepBuffers,
    tables: BlockTables,
    graphs: Vec<DecodeGraph>,
    graph_seq_len: usize,
    sampler: Option<SampleBuffers>,
    /// Rows of the last step kept on the device for [`ModelRunner::draw_deferred`].
    deferred: Deferred,
    /// How embedding sequences' hidden states become one vector.
    pooling: Pooling,
    /// Buffers for prompt log-probability rows, allocated at first use.
    row_head: Option<RowHead>,
}

/// Logits rows left undrawn by the last step: `(row, seq)` of `rows` rows.
#[derive(Debug, Default)]
struct Deferred {
    rows: usize,
    seqs: Vec<(usize, SeqId)>,
}

/// A captured decode step for a fixed batch size.
struct DecodeGraph {
    batch: usize,
    graph: Graph,
}

/// Decode batch sizes that get a captured graph.
pub const GRAPH_BATCHES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

impl ModelRunner {
    /// Assemble a runner from its parts (see `crate::engine` for start-up).
    pub fn new(device: Device, decoder: Decoder, kv: KvCache, bufs: StepBuffers) -> Self {
        ModelRunner {
            device,
            decoder,
            kv,
            bufs,
            tables: BlockTables::default(),
            graphs: Vec::new(),
            graph_seq_len: 0,
            sampler: None,
            deferred: Deferred::default(),
            pooling: Pooling::Mean,
            row_head: None,
        }
    }

    /// Pool embedding sequences this way (mean until set).
    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
    }

    /// Prepare device-side sampling when the backend offers it; returns
    /// whether rows can now be drawn on the device.
    pub fn enable_device_sampling(&mut self) -> Result<bool, RunnerError> {
        if !self.device.info().has(KILN_CAP_DEVICE_SAMPLING) {
            return Ok(false);
        }
        let rows = self.bufs.capacity().max_seqs;
        self.sampler = Some(SampleBuffers::allocate(&self.device, rows)?);
        Ok(true)
    }

    /// Whether rows are drawn on the device (see [`enable_device_sampling`](Self::enable_device_sampling)).
    pub fn samples_on_device(&self) -> bool {
        self.sampler.is_some()
    }

    /// Whether device draws honour allowed-token masks (structured outputs).
    pub fn masks_on_device(&self) -> bool {
        self.sampler.is_some() && self.device.info().has(KILN_CAP_SAMPLE_MASK)
    }

    /// Capture decode steps as device graphs for every batch size in
    /// [`GRAPH_BATCHES`] up to `max_batch` (no-op when the device has no graphs).
    /// Each is run eagerly once first so that the backend allocates its workspaces.
    pub fn capture_graphs(
        &mut self,
        max_batch: usize,
        max_model_len: usize,
    ) -> Result<usize, RunnerError> {
        if !self.device.has_graphs() {
            return Ok(0);
        }
        self.graph_seq_len = max_model_len;
        let cap = self.bufs.capacity();
        let sizes: Vec<usize> = GRAPH_BATCHES
            .iter()
            .copied()
            .filter(|&b| b <= max_batch.min(cap.max_seqs).min(cap.max_tokens))
            .collect();
        for &b in sizes.iter().rev() {
            let batch = padded_decode_batch(
                &HostBatch::default(),
                b,
                cap.max_blocks_per_seq,
                max_model_len,
            );
            let inputs = batch_inputs(&batch);
            self.decoder
                .forward(&self.device, &self.kv, &self.bufs, &inputs)?;
            self.device.synchronize()?;
            let ops = self.decoder.build_ops(&self.kv, &self.bufs, &inputs);
            self.device.graph_begin()?;
            let queued = self.device.execute(&ops);
            let graph = self.device.graph_end()?;
            queued?;
            self.graphs.push(DecodeGraph { batch: b, graph });
        }
        self.graphs.sort_by_key(|g| g.batch);
        Ok(self.graphs.len())
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Run one step. Sequences without samples produce no logits row; rows
    /// with a device-side draw in `sampling` come back as drawn tokens, the
    /// others as logits.
    pub fn execute(
        &mut self,
        plan: &StepPlan,
        sampling: &[(SeqId, RowSampling)],
    ) -> Result<StepLogits, RunnerError> {
        self.execute_deferring(plan, sampling, &[])
    }

    /// [`execute`](Self::execute), except that the rows of `deferred` stay
    /// on the device, undrawn, for [`draw_deferred`](Self::draw_deferred)
    /// (their draws need masks computed while this step ran).
    pub fn execute_deferring(
        &mut self,
        plan: &StepPlan,
        sampling: &[(SeqId, RowSampling)],
        deferred: &[SeqId],
    ) -> Result<StepLogits, RunnerError> {
        self.deferred = Deferred::default();
        self.tables.apply(plan)?;
        self.copy_blocks(&plan.block_copies)?;
        let vocab_size = self.decoder.config().vocab_size;
        if plan.seqs.is_empty() {
            return Ok(StepLogits {
                step_id: plan.step_id,
                vocab_size,
                ..Default::default()
            });
        }
        let window = self.decoder.variant().window_layout().freeing_window();
        let batch = build_batch(plan, &self.tables, self.kv.block_size, window)?;
        if !self.replay_graph(plan, &batch)? {
            self.forward(&batch)?;
        }
        let embeddings = self.pooled(&batch)?;
        let draws: HashMap<SeqId, RowSampling> = match self.sampler {
            Some(_) => sampling.iter().cloned().collect(),
            None => HashMap::new(),
        };
        let mut split = split_rows(&batch.logits_rows, &draws);
        if self.sampler.is_some() && !deferred.is_empty() {
            let (kept, host): (Vec<_>, Vec<_>) = split
                .host
                .into_iter()
                .partition(|(_, row)| deferred.contains(&row.seq_id) && row.num_samples == 1);
            split.host = host;
            self.deferred = Deferred {
                rows: batch.logits_rows.len(),
                seqs: kept.iter().map(|(i, row)| (*i, row.seq_id)).collect(),
            };
        }
        let sampled = self.draw_on_device(batch.logits_rows.len(), &split.device)?;
        let mut logits = vec![0f32; split.host.len() * vocab_size];
        for (k, (row, _)) in split.host.iter().enumerate() {
            let out = &mut logits[k * vocab_size..(k + 1) * vocab_size];
            self.bufs.read_logits_rows(&self.device, *row, out)?;
        }
        let prompt = self.prompt_logits(&batch)?;
        Ok(StepLogits {
            step_id: plan.step_id,
            rows: split.host.iter().map(|h| h.1).collect(),
            vocab_size,
            logits,
            sampled,
            embeddings,
            prompt,
        })
    }

    /// The logits of the batch's `prompt_logprobs` rows (after the step's
    /// own logits were read or drawn).
    fn prompt_logits(&mut self, batch: &HostBatch) -> Result<Vec<PromptLogits>, RunnerError> {
        if batch.prompt_rows.is_empty() {
            return Ok(Vec::new());
        }
        if self.row_head.is_none() {
            self.row_head = Some(RowHead::allocate(&self.device, &self.decoder)?);
        }
        let head = self.row_head.as_ref().expect("allocated above");
        let n = batch.token_ids.len();
        let mut out = Vec::with_capacity(batch.prompt_rows.len());
        for p in &batch.prompt_rows {
            let rows: Vec<i32> = (p.first_row..p.first_row + p.rows)
                .map(|r| r as i32)
                .collect();
            let logits = self
                .decoder
                .row_logits(&self.device, &self.bufs, head, n, &rows)?;
            out.push(PromptLogits {
                seq_id: p.seq_id,
                first_position: p.first_position,
                logits,
            });
        }
        Ok(out)
    }

    /// The pooled hidden states of the batch's embedding sequences.
    fn pooled(&self, batch: &HostBatch) -> Result<Vec<SeqEmbedding>, RunnerError> {
        let hidden = self.decoder.config().hidden_size;
        let mut out = Vec::with_capacity(batch.embed_rows.len());
        for &(seq_id, first, rows) in &batch.embed_rows {
            let states = self
                .decoder
                .read_hidden(&self.device, &self.bufs, first, rows)?;
            out.push(SeqEmbedding {
                seq_id,
                vector: crate::pooling::pool(&states, hidden, self.pooling),
            });
        }
        Ok(out)
    }

    /// Draws the rows the last step deferred, with `sampling` (masks
    /// included); rows without an entry are dropped.
    pub fn draw_deferred(
        &mut self,
        sampling: &[(SeqId, RowSampling)],
    ) -> Result<Vec<DeviceSample>, RunnerError> {
        let deferred = std::mem::take(&mut self.deferred);
        let rows: Vec<(usize, SeqId, &RowSampling)> = deferred
            .seqs
            .iter()
            .filter_map(|&(row, seq)| {
                let draw = sampling.iter().find(|(s, _)| *s == seq)?;
                Some((row, seq, &draw.1))
            })
            .collect();
        self.draw_on_device(deferred.rows, &rows)
    }

    fn draw_on_device(
        &mut self,
        m: usize,
        rows: &[(usize, SeqId, &RowSampling)],
    ) -> Result<Vec<DeviceSample>, RunnerError> {
        let Some(sampler) = self.sampler.as_mut() else {
            return Ok(Vec::new());
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.bufs.logits_view(m);
        Ok(sampler.draw(&self.device, logits, rows)?)
    }

    fn forward(&self, batch: &HostBatch) -> Result<(), RunnerError> {
        self.decoder
            .forward(&self.device, &self.kv, &self.bufs, &batch_inputs(batch))?;
        Ok(())
    }

    /// Run a decode-only step through a captured graph when one fits.
    fn replay_graph(&self, plan: &StepPlan, batch: &HostBatch) -> Result<bool, RunnerError> {
        let decode_only = plan
            .seqs
            .iter()
            .all(|s| s.token_ids.len() == 1 && s.num_samples == 1);
        let n = plan.seqs.len();
        let Some(g) = self.graphs.iter().find(|g| g.batch >= n) else {
            return Ok(false);
        };
        if !decode_only || batch.max_seq_len > self.graph_seq_len {
            return Ok(false);
        }
        let cap = self.bufs.capacity();
        let padded =
            padded_decode_batch(batch, g.batch, cap.max_blocks_per_seq, self.graph_seq_len);
        self.decoder
            .upload_inputs(&self.device, &self.bufs, &batch_inputs(&padded))?;
        self.device.graph_launch(&g.graph)?;
        Ok(true)
    }

    fn copy_blocks(&self, copies: &[BlockCopy]) -> Result<(), RunnerError> {
        if copies.is_empty() {
            return Ok(());
        }
        let pairs: Vec<u8> = copies
            .iter()
            .flat_map(|c| [c.src as i32, c.dst as i32])
            .flat_map(i32::to_le_bytes)
            .collect();
        let buf: Buffer = self.device.alloc(pairs.len() as u64)?;
        self.device.write(&buf, 0, &pairs)?;
        let pairs_view = buf.view(0, KILN_I32, &[copies.len() as u64, 2]);
        let ops: Vec<_> = (0..self.kv.num_layers())
            .map(|i| {
                let (k, v) = self.kv.layer_views(i);
                ops::copy_blocks(k, v, pairs_view)
            })
            .collect();
        self.device.execute(&ops)?;
        // The pairs buffer must outlive the queued copies.
        self.device.synchronize()?;
        Ok(())
    }
}

fn batch_inputs(batch: &HostBatch) -> BatchInputs<'_> {
    BatchInputs {
        token_ids: &batch.token_ids,
        positions: &batch.positions,
        slot_mapping: &batch.slot_mapping,
        seq_lens: &batch.seq_lens,
        query_start_loc: &batch.query_start_loc,
        block_tables: &batch.block_tables,
        blocks_per_seq: batch.blocks_per_seq,
        logits_indices: &batch.logits_indices,
        max_query_len: batch.max_query_len,
        max_seq_len: batch.max_seq_len,
        decode_rows: batch.decode_rows,
        decode_logits_rows: batch.decode_logits_rows,
        hidden_states: !batch.embed_rows.is_empty(),
    }
}

/// A decode batch padded to `size` rows with harmless rows (no KV write,
/// one key), block tables widened to `blocks` columns and `max_seq_len`
/// fixed, so that the same captured graph serves every step of that size.
pub fn padded_decode_batch(
    batch: &HostBatch,
    size: usize,
    blocks: usize,
    max_seq_len: usize,
) -> HostBatch {
    let n = batch.token_ids.len();
    let mut p = batch.clone();
    p.token_ids.resize(size, 0);
    p.positions.resize(size, 0);
    p.slot_mapping.resize(size, -1);
    p.seq_lens.resize(size, 1);
    p.query_start_loc = (0..=size as i32).collect();
    let mut tables = vec![0i32; size * blocks];
    for row in 0..n {
        let cols = batch.blocks_per_seq.min(blocks);
        tables[row * blocks..row * blocks + cols].copy_from_slice(
            &batch.block_tables[row * batch.blocks_per_seq..row * batch.blocks_per_seq + cols],
        );
    }
    p.block_tables = tables;
    p.blocks_per_seq = blocks;
    p.logits_indices = (0..size as i32).collect();
    p.max_query_len = 1;
    p.max_seq_len = max_seq_len;
    p.decode_rows = size;
    p.decode_logits_rows = size;
    p
}
