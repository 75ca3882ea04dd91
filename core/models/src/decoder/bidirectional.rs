//! Bidirectional attention on the causal attention operation: each token
//! of an encoder's sequence becomes its own one-row attention sequence
//! whose context is the whole sequence, so that every query sees every
//! key. The KV write and all other operations see the batch unchanged.

use super::DecoderError;
use super::step::BatchInputs;

/// The per-token attention index arrays of one encoder batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttentionRows {
    seq_lens: Vec<i32>,
    query_start_loc: Vec<i32>,
    block_tables: Vec<i32>,
    max_seq_len: usize,
}

impl AttentionRows {
    /// Every sequence must be computed whole in this batch (nothing cached
    /// before it): an encoder's keys depend on every token.
    pub fn of(inputs: &BatchInputs<'_>) -> Result<AttentionRows, DecoderError> {
        let cols = inputs.blocks_per_seq;
        let mut rows = AttentionRows {
            seq_lens: Vec::with_capacity(inputs.token_ids.len()),
            query_start_loc: vec![0],
            block_tables: Vec::with_capacity(inputs.token_ids.len() * cols),
            max_seq_len: 0,
        };
        for (s, &len) in inputs.seq_lens.iter().enumerate() {
            let (start, end) = (inputs.query_start_loc[s], inputs.query_start_loc[s + 1]);
            if end - start != len {
                return Err(DecoderError::BatchTooLarge(format!(
                    "an encoder computes whole sequences, but sequence {s} brings {} of its {len} \
                     tokens",
                    end - start
                )));
            }
            let table = &inputs.block_tables[s * cols..(s + 1) * cols];
            for row in start..end {
                rows.seq_lens.push(len);
                rows.query_start_loc.push(row + 1);
                rows.block_tables.extend_from_slice(table);
            }
            rows.max_seq_len = rows.max_seq_len.max(len as usize);
        }
        Ok(rows)
    }

    /// `inputs` with these attention rows.
    pub fn inputs<'a>(&'a self, inputs: &BatchInputs<'a>) -> BatchInputs<'a> {
        BatchInputs {
            seq_lens: &self.seq_lens,
            query_start_loc: &self.query_start_loc,
            block_tables: &self.block_tables,
            max_query_len: 1,
            max_seq_len: self.max_seq_len,
            ..inputs.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_attends_to_its_whole_sequence() {
        let inputs = BatchInputs {
            token_ids: &[1, 2, 3, 4, 5],
            positions: &[0, 1, 2, 0, 1],
            slot_mapping: &[0, 1, 2, 8, 9],
            seq_lens: &[3, 2],
            query_start_loc: &[0, 3, 5],
            block_tables: &[0, 2],
            blocks_per_seq: 1,
            max_query_len: 3,
            max_seq_len: 3,
            ..Default::default()
        };
        let rows = AttentionRows::of(&inputs).unwrap();
        let e = rows.inputs(&inputs);
        assert_eq!(e.seq_lens, &[3, 3, 3, 2, 2]);
        assert_eq!(e.query_start_loc, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(e.block_tables, &[0, 0, 0, 2, 2]);
        assert_eq!((e.max_query_len, e.max_seq_len), (1, 3));
        assert_eq!(e.token_ids, inputs.token_ids);
    }

    #[test]
    fn a_partial_sequence_is_refused() {
        let inputs = BatchInputs {
            token_ids: &[1],
            positions: &[3],
            slot_mapping: &[3],
            seq_lens: &[4],
            query_start_loc: &[0, 1],
            block_tables: &[0],
            blocks_per_seq: 1,
            ..Default::default()
        };
        assert!(AttentionRows::of(&inputs).is_err());
    }
}
