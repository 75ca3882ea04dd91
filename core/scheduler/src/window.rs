//! Sliding-window arithmetic of KV blocks, shared by the block manager, the
//! scheduler and the memory plans (the engine's start-up summary and `kiln
//! plan`), so that what is planned is what is allocated.
//!
//! In a model whose every attention layer slides over `window` tokens, a row
//! at position `p` sees the keys of positions `p + 1 − window ..= p`. Once
//! the KV of a sequence's first `n` positions is computed, its next row is at
//! position `n` or later, so no row will ever see a position before
//! `n + 1 − window` again: the blocks wholly before it go back to the pool
//! and leave holes ([`NO_BLOCK`](kiln_protocol::NO_BLOCK)) at the front of
//! the sequence's block table.
//!
//! Models where only some layers slide (Gemma 2 and 3 interleave local and
//! global layers) keep every block: their global layers see the whole
//! context, and freeing only the local layers' share of a block would need
//! a pool per layer group. For them the window here is `None`.

/// Leading blocks of a table that no row at `next_position` or later can see.
pub fn blocks_behind_window(next_position: usize, window: usize, block_size: usize) -> usize {
    (next_position + 1).saturating_sub(window) / block_size.max(1)
}

/// The most KV blocks one sequence of at most `max_len` tokens holds at
/// once, when each step computes at most `chunk` of its tokens.
///
/// Without a window that is its whole length. With one, a step's rows start
/// at some position `p` and see keys from `p + 1 − window` to at most
/// `p + chunk − 1`: a span of `window + chunk − 1` positions, which touches
/// at most `ceil((window + chunk − 1) / block_size) + 1` blocks (the span
/// rarely starts on a block boundary).
pub fn max_blocks_per_sequence(
    max_len: usize,
    block_size: usize,
    window: Option<usize>,
    chunk: usize,
) -> usize {
    let block_size = block_size.max(1);
    let whole = max_len.div_ceil(block_size);
    match window.filter(|&w| w > 0) {
        Some(w) => whole.min((w + chunk.max(1) - 1).div_ceil(block_size) + 1),
        None => whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_behind_the_window_are_whole_blocks_out_of_sight() {
        // Window 4, blocks of 4: the row at 8 sees 5..=8, so block 0 (0..=3) is out.
        assert_eq!(blocks_behind_window(8, 4, 4), 1);
        // The row at 7 sees 4..=7: block 0 just left.
        assert_eq!(blocks_behind_window(7, 4, 4), 1);
        // The row at 6 sees 3..=6: position 3 keeps block 0.
        assert_eq!(blocks_behind_window(6, 4, 4), 0);
        assert_eq!(blocks_behind_window(0, 4, 4), 0);
        assert_eq!(blocks_behind_window(100, 200, 16), 0);
        // A window of one token sees only its own row.
        assert_eq!(blocks_behind_window(8, 1, 4), 2);
    }

    #[test]
    fn a_sequence_holds_the_window_plus_a_chunk_and_a_block() {
        assert_eq!(max_blocks_per_sequence(100, 16, None, 64), 7);
        // Decodes: ceil(4096 / 16) + 1.
        assert_eq!(max_blocks_per_sequence(1 << 20, 16, Some(4096), 1), 257);
        // Chunks of 512: ceil(4607 / 16) + 1.
        assert_eq!(max_blocks_per_sequence(1 << 20, 16, Some(4096), 512), 289);
        // Never more than the whole sequence.
        assert_eq!(max_blocks_per_sequence(64, 16, Some(4096), 512), 4);
        assert_eq!(max_blocks_per_sequence(64, 16, Some(0), 512), 4);
    }

    /// The bound is tight and never exceeded: every start position and chunk.
    #[test]
    fn the_bound_holds_for_every_start() {
        for block_size in [1, 2, 4, 16] {
            for window in 1..40 {
                for chunk in 1..20 {
                    let cap =
                        max_blocks_per_sequence(usize::MAX / 2, block_size, Some(window), chunk);
                    let mut worst = 0;
                    for p in 0..200 {
                        let first = blocks_behind_window(p, window, block_size);
                        let end = (p + chunk).div_ceil(block_size);
                        worst = worst.max(end - first);
                    }
                    assert!(worst <= cap, "bs {block_size} w {window} chunk {chunk}");
                    assert!(
                        worst + 1 >= cap,
                        "bs {block_size} w {window} chunk {chunk}: loose"
                    );
                }
            }
        }
    }
}
