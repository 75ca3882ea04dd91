//! Turning a [`StepPlan`] into the flat index arrays of one forward pass.
//!
//! Pure and synchronous: the runner keeps each sequence's block table (built
//! from the plan's diffs) and this module derives positions, KV slots,
//! sequence lengths, query offsets, padded block tables and the rows whose
//! logits are sampled.
//!
//! # Holes
//! For a model whose every layer slides, the leading entries of a table may
//! be holes ([`NO_BLOCK`]): their blocks fell behind the window and went
//! back to the pool, where another sequence may already have written them.
//! A hole reaches the backend as [`HOLE_PLACEHOLDER`], a valid block id
//! whose content is never used: every attention kernel starts each row at
//! the first key of its window, and [`build_batch`] refuses a plan where a
//! hole lies within the window of a sequence's first row. The valid id only
//! keeps a backend that checks or prefetches whole tables in bounds.

use std::collections::HashMap;

use kiln_protocol::step::{LogitsRow, ScheduledSeq, StepPlan};
use kiln_protocol::{BlockId, NO_BLOCK, SeqId};
use kiln_scheduler::window::blocks_behind_window;

/// The block id a hole is given in the tables a backend reads (see the
/// module docs). Padding columns get it too.
pub const HOLE_PLACEHOLDER: i32 = 0;

/// The host-side arrays of one step (see `kiln_models::decoder::BatchInputs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostBatch {
    /// `[n]` token ids.
    pub token_ids: Vec<i32>,
    /// `[n]` positions.
    pub positions: Vec<i32>,
    /// `[n]` KV slots.
    pub slot_mapping: Vec<i32>,
    /// `[seqs]` context lengths after this step.
    pub seq_lens: Vec<i32>,
    /// `[seqs + 1]` query row offsets.
    pub query_start_loc: Vec<i32>,
    /// `[seqs, blocks_per_seq]` padded block tables.
    pub block_tables: Vec<i32>,
    /// Columns of `block_tables`.
    pub blocks_per_seq: usize,
    /// `[m]` rows whose logits are sampled.
    pub logits_indices: Vec<i32>,
    /// Which sequence each logits row belongs to.
    pub logits_rows: Vec<LogitsRow>,
    /// Longest query.
    pub max_query_len: usize,
    /// Longest context.
    pub max_seq_len: usize,
    /// Leading tokens that are single-token (decode) sequences.
    pub decode_rows: usize,
    /// Leading logits rows that belong to decode sequences.
    pub decode_logits_rows: usize,
    /// The embedding sequences' rows: `(sequence, first row, rows)`.
    pub embed_rows: Vec<(SeqId, usize, usize)>,
    /// Rows whose logits return for `prompt_logprobs`.
    pub prompt_rows: Vec<PromptRows>,
}

/// One sequence's rows of a batch whose logits return for `prompt_logprobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptRows {
    /// The sequence.
    pub seq_id: SeqId,
    /// The batch row of the first one.
    pub first_row: usize,
    /// How many.
    pub rows: usize,
    /// The position of the first row's token.
    pub first_position: u32,
}

/// Why a plan cannot be turned into a batch (a scheduler bug, reported not hidden).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A continuing sequence the runner never saw.
    #[error("sequence {0} is extended but unknown to the runner")]
    UnknownSequence(SeqId),
    /// A position has no block.
    #[error("sequence {seq} has no block for position {position} (table of {blocks} blocks)")]
    MissingBlock {
        /// The sequence.
        seq: SeqId,
        /// Token position, counted from the start of the sequence.
        position: usize,
        /// Blocks in its table.
        blocks: usize,
    },
    /// A hole where a row of the step can see, or more holes than blocks.
    #[error(
        "sequence {seq} has {holes} holes in a {blocks}-block table, but its rows from position {position} see more of it"
    )]
    HoleInWindow {
        /// The sequence.
        seq: SeqId,
        /// Leading holes of its table.
        holes: u32,
        /// Blocks in its table.
        blocks: usize,
        /// The position of its first row this step.
        position: usize,
    },
    /// Block-table update keeps more than exists.
    #[error("sequence {seq} keeps {keep} blocks of a {len}-block table")]
    BadTableKeep {
        /// The sequence.
        seq: SeqId,
        /// Requested keep.
        keep: u32,
        /// Actual length.
        len: usize,
    },
}

/// Block tables of the sequences the runner knows, maintained from plan diffs.
#[derive(Debug, Clone, Default)]
pub struct BlockTables {
    tables: HashMap<SeqId, Vec<BlockId>>,
}

impl BlockTables {
    /// Forget the dropped sequences and apply every table update of `plan`.
    pub fn apply(&mut self, plan: &StepPlan) -> Result<(), PlanError> {
        for id in &plan.dropped {
            self.tables.remove(id);
        }
        for s in &plan.seqs {
            let table = self.tables.entry(s.seq_id).or_default();
            if s.table_keep as usize > table.len() {
                return Err(PlanError::BadTableKeep {
                    seq: s.seq_id,
                    keep: s.table_keep,
                    len: table.len(),
                });
            }
            table.truncate(s.table_keep as usize);
            table.extend_from_slice(&s.new_blocks);
            let holes = (s.table_holes as usize).min(table.len());
            table[..holes].fill(NO_BLOCK);
        }
        Ok(())
    }

    /// The table of one sequence.
    pub fn get(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.tables.get(&seq).map(Vec::as_slice)
    }

    /// Number of sequences tracked.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// True when no sequence is tracked.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// The plan's sequences in batch order: single-token (decode) sequences
/// first, then prefill chunks, each group in plan order. Backends may compute
/// the decode rows with their own kernels (see `OP_LINEAR`), so a sequence's
/// decode is computed the same way whatever else shares the step.
pub fn batch_order(plan: &StepPlan) -> Vec<&ScheduledSeq> {
    let (mut order, prefill): (Vec<&ScheduledSeq>, Vec<&ScheduledSeq>) =
        plan.seqs.iter().partition(|s| s.token_ids.len() == 1);
    order.extend(prefill);
    order
}

/// Build the arrays for `plan` (after [`BlockTables::apply`]); `window` is
/// the window of every layer of the model, when all of them slide (the
/// only case where a table may have holes).
pub fn build_batch(
    plan: &StepPlan,
    tables: &BlockTables,
    block_size: usize,
    window: Option<usize>,
) -> Result<HostBatch, PlanError> {
    let mut b = HostBatch {
        query_start_loc: vec![0],
        ..HostBatch::default()
    };
    let order = batch_order(plan);
    for s in order.iter().copied() {
        let table = tables
            .get(s.seq_id)
            .ok_or(PlanError::UnknownSequence(s.seq_id))?;
        let start = s.num_computed_tokens as usize;
        let holes = table.iter().take_while(|&&b| b == NO_BLOCK).count();
        let out_of_sight = window.map_or(0, |w| blocks_behind_window(start, w, block_size));
        if holes > out_of_sight || holes < s.table_holes as usize {
            return Err(PlanError::HoleInWindow {
                seq: s.seq_id,
                holes: s.table_holes,
                blocks: table.len(),
                position: start,
            });
        }
        if s.embed {
            b.embed_rows
                .push((s.seq_id, b.token_ids.len(), s.token_ids.len()));
        }
        if s.prompt_logprob_rows > 0 {
            b.prompt_rows.push(PromptRows {
                seq_id: s.seq_id,
                first_row: b.token_ids.len(),
                rows: (s.prompt_logprob_rows as usize).min(s.token_ids.len()),
                first_position: s.num_computed_tokens,
            });
        }
        for (j, &tok) in s.token_ids.iter().enumerate() {
            let pos = start + j;
            let block = *table
                .get(pos / block_size)
                .filter(|&&b| b != NO_BLOCK)
                .ok_or(PlanError::MissingBlock {
                    seq: s.seq_id,
                    position: pos,
                    blocks: table.len(),
                })?;
            b.token_ids.push(tok as i32);
            b.positions.push(pos as i32);
            b.slot_mapping
                .push((block as usize * block_size + pos % block_size) as i32);
        }
        let seq_len = start + s.token_ids.len();
        b.seq_lens.push(seq_len as i32);
        b.query_start_loc.push(b.token_ids.len() as i32);
        b.max_query_len = b.max_query_len.max(s.token_ids.len());
        b.max_seq_len = b.max_seq_len.max(seq_len);
        if s.token_ids.len() == 1 {
            b.decode_rows += 1;
        }
        if s.num_samples > 0 && !s.token_ids.is_empty() {
            if s.token_ids.len() == 1 {
                b.decode_logits_rows += 1;
            }
            b.logits_indices.push(b.token_ids.len() as i32 - 1);
            b.logits_rows.push(LogitsRow {
                seq_id: s.seq_id,
                num_samples: s.num_samples,
            });
        }
    }
    b.blocks_per_seq = b.max_seq_len.div_ceil(block_size).max(1);
    b.block_tables = vec![HOLE_PLACEHOLDER; order.len() * b.blocks_per_seq];
    for (row, s) in order.iter().enumerate() {
        let table = tables.get(s.seq_id).unwrap_or(&[]);
        let used = (b.seq_lens[row] as usize)
            .div_ceil(block_size)
            .min(table.len());
        for (col, &blk) in table[..used].iter().enumerate() {
            if blk != NO_BLOCK {
                b.block_tables[row * b.blocks_per_seq + col] = blk as i32;
            }
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::step::ScheduledSeq;

    fn seq(
        id: SeqId,
        tokens: &[u32],
        computed: u32,
        keep: u32,
        new: &[u32],
        samples: u32,
    ) -> ScheduledSeq {
        ScheduledSeq {
            seq_id: id,
            token_ids: tokens.to_vec(),
            num_computed_tokens: computed,
            table_keep: keep,
            new_blocks: new.to_vec(),
            num_samples: samples,
            ..ScheduledSeq::default()
        }
    }

    #[test]
    fn prefill_and_decode_rows_are_laid_out_in_plan_order() {
        let mut tables = BlockTables::default();
        let plan = StepPlan {
            step_id: 1,
            seqs: vec![
                seq(1, &[10, 11, 12, 13, 14], 0, 0, &[7, 3], 1),
                seq(2, &[20, 21], 0, 0, &[5], 0),
            ],
            ..Default::default()
        };
        tables.apply(&plan).unwrap();
        let b = build_batch(&plan, &tables, 4, None).unwrap();
        assert_eq!(b.token_ids, vec![10, 11, 12, 13, 14, 20, 21]);
        assert_eq!(b.positions, vec![0, 1, 2, 3, 4, 0, 1]);
        // Seq 1: positions 0..3 in block 7, position 4 in block 3. Seq 2 in block 5.
        assert_eq!(b.slot_mapping, vec![28, 29, 30, 31, 12, 20, 21]);
        assert_eq!(b.seq_lens, vec![5, 2]);
        assert_eq!(b.query_start_loc, vec![0, 5, 7]);
        assert_eq!(b.blocks_per_seq, 2);
        assert_eq!(b.block_tables, vec![7, 3, 5, 0]);
        // Only seq 1 samples (seq 2's chunk does not reach its end).
        assert_eq!(b.logits_indices, vec![4]);
        assert_eq!(
            b.logits_rows,
            vec![LogitsRow {
                seq_id: 1,
                num_samples: 1
            }]
        );
        assert_eq!((b.max_query_len, b.max_seq_len), (5, 5));

        // Next step: seq 1 decodes one token into a new block 9 ... no: position 5 lands in block 3.
        let plan2 = StepPlan {
            step_id: 2,
            dropped: vec![2],
            seqs: vec![seq(1, &[15], 5, 2, &[], 1)],
            ..Default::default()
        };
        tables.apply(&plan2).unwrap();
        assert!(tables.get(2).is_none());
        let b = build_batch(&plan2, &tables, 4, None).unwrap();
        assert_eq!(b.positions, vec![5]);
        assert_eq!(b.slot_mapping, vec![13]);
        assert_eq!(b.seq_lens, vec![6]);
    }

    #[test]
    fn decoding_sequences_come_first() {
        let mut tables = BlockTables::default();
        let plan = StepPlan {
            seqs: vec![
                seq(1, &[10, 11, 12], 0, 0, &[1], 1),
                seq(2, &[20], 4, 0, &[2, 3], 1),
                seq(3, &[30, 31], 0, 0, &[4], 0),
                seq(4, &[40], 0, 0, &[5], 1),
            ],
            ..Default::default()
        };
        tables.apply(&plan).unwrap();
        let b = build_batch(&plan, &tables, 4, None).unwrap();
        assert_eq!(b.token_ids, vec![20, 40, 10, 11, 12, 30, 31]);
        assert_eq!((b.decode_rows, b.decode_logits_rows), (2, 2));
        assert_eq!(b.seq_lens, vec![5, 1, 3, 2]);
        assert_eq!(b.block_tables, vec![2, 3, 5, 0, 1, 0, 4, 0]);
        let rows: Vec<_> = b.logits_rows.iter().map(|r| r.seq_id).collect();
        assert_eq!(rows, vec![2, 4, 1]);
        assert_eq!(b.logits_indices, vec![0, 1, 4]);
    }

    #[test]
    fn copy_on_write_replaces_the_last_block() {
        let mut tables = BlockTables::default();
        tables
            .apply(&StepPlan {
                seqs: vec![seq(1, &[1, 2, 3], 0, 0, &[4], 1)],
                ..Default::default()
            })
            .unwrap();
        tables
            .apply(&StepPlan {
                seqs: vec![seq(1, &[9], 3, 0, &[8], 1)],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(tables.get(1), Some(&[8][..]));
    }

    #[test]
    fn inconsistent_plans_are_errors_not_panics() {
        let tables = BlockTables::default();
        let plan = StepPlan {
            seqs: vec![seq(3, &[1], 0, 0, &[], 1)],
            ..Default::default()
        };
        assert_eq!(
            build_batch(&plan, &tables, 16, None),
            Err(PlanError::UnknownSequence(3))
        );
        let mut tables = BlockTables::default();
        let plan = StepPlan {
            seqs: vec![seq(3, &[1, 2, 3], 0, 0, &[1], 1)],
            ..Default::default()
        };
        tables.apply(&plan).unwrap();
        assert!(matches!(
            build_batch(&plan, &tables, 2, None),
            Err(PlanError::MissingBlock { position: 2, .. })
        ));
        let bad = StepPlan {
            seqs: vec![seq(3, &[4], 3, 5, &[], 1)],
            ..Default::default()
        };
        assert!(matches!(
            tables.apply(&bad),
            Err(PlanError::BadTableKeep { .. })
        ));
    }

    #[test]
    fn holes_reach_the_backend_as_a_placeholder_and_never_in_sight() {
        let mut tables = BlockTables::default();
        tables
            .apply(&StepPlan {
                seqs: vec![seq(1, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 0, 0, &[4, 6, 2], 1)],
                ..Default::default()
            })
            .unwrap();
        // Window 4: the row at 9 sees 6..=9, so block 0 (positions 0..=3) is a hole.
        let step = StepPlan {
            seqs: vec![ScheduledSeq {
                table_holes: 1,
                ..seq(1, &[10], 9, 3, &[], 1)
            }],
            ..Default::default()
        };
        tables.apply(&step).unwrap();
        assert_eq!(tables.get(1), Some(&[NO_BLOCK, 6, 2][..]));
        let b = build_batch(&step, &tables, 4, Some(4)).unwrap();
        assert_eq!(b.block_tables, vec![HOLE_PLACEHOLDER, 6, 2]);
        assert_eq!(b.slot_mapping, vec![2 * 4 + 1]);
        // With a window of 8 the row at 9 sees position 2: a plan holing
        // block 0 is a scheduler bug, reported instead of run.
        assert!(matches!(
            build_batch(&step, &tables, 4, Some(8)),
            Err(PlanError::HoleInWindow { holes: 1, .. })
        ));
        assert!(matches!(
            build_batch(&step, &tables, 4, None),
            Err(PlanError::HoleInWindow { .. })
        ));
    }

    #[test]
    fn a_slot_in_a_hole_is_an_error() {
        let mut tables = BlockTables::default();
        let plan = StepPlan {
            seqs: vec![ScheduledSeq {
                table_holes: 2,
                ..seq(1, &[1, 2], 4, 0, &[NO_BLOCK, NO_BLOCK], 1)
            }],
            ..Default::default()
        };
        tables.apply(&plan).unwrap();
        assert!(build_batch(&plan, &tables, 4, Some(1)).is_err());
    }
}
