//! The model runner: owns the device, the decoder's weights, the KV cache and
//! the per-step buffers, and turns a [`StepPlan`] into one forward pass.

use kiln_models::llama::{BatchInputs, KvCache, LlamaDecoder, StepBuffers};
use kiln_plugin_abi::safe::{Buffer, Device};
use kiln_plugin_abi::{KILN_I32, ops};
use kiln_protocol::step::{BlockCopy, StepLogits, StepPlan};

use crate::inputs::{BlockTables, HostBatch, build_batch};

/// Why a step failed on the device side.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The plan is inconsistent with the runner's state (a scheduler bug).
    #[error("invalid step plan: {0}")]
    Plan(#[from] crate::inputs::PlanError),
    /// The decoder or backend failed.
    #[error(transparent)]
    Decoder(#[from] kiln_models::llama::DecoderError),
    /// A backend call failed.
    #[error(transparent)]
    Backend(#[from] kiln_plugin_abi::safe::AbiError),
}

/// The device side of the engine.
pub struct ModelRunner {
    device: Device,
    decoder: LlamaDecoder,
    kv: KvCache,
    bufs: StepBuffers,
    tables: BlockTables,
}

impl ModelRunner {
    /// Assemble a runner from its parts (see `crate::engine` for start-up).
    pub fn new(device: Device, decoder: LlamaDecoder, kv: KvCache, bufs: StepBuffers) -> Self {
        ModelRunner {
            device,
            decoder,
            kv,
            bufs,
            tables: BlockTables::default(),
        }
    }

    /// The decoder.
    pub fn decoder(&self) -> &LlamaDecoder {
        &self.decoder
    }

    /// The KV cache.
    pub fn kv_cache(&self) -> &KvCache {
        &self.kv
    }

    /// Run one step. Sequences without samples produce no logits row.
    pub fn execute(&mut self, plan: &StepPlan) -> Result<StepLogits, RunnerError> {
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
        let batch = build_batch(plan, &self.tables, self.kv.block_size)?;
        self.forward(&batch)?;
        let logits = if batch.logits_rows.is_empty() {
            Vec::new()
        } else {
            self.bufs
                .read_logits(&self.device, batch.logits_rows.len())?
        };
        Ok(StepLogits {
            step_id: plan.step_id,
            rows: batch.logits_rows,
            vocab_size,
            logits,
        })
    }

    fn forward(&self, batch: &HostBatch) -> Result<(), RunnerError> {
        let inputs = BatchInputs {
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
        };
        self.decoder
            .forward(&self.device, &self.kv, &self.bufs, &inputs)?;
        Ok(())
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
