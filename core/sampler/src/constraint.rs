//! Structured outputs as the sampler sees them: a per-sequence
//! [`TokenConstraint`] that says which tokens may come next and follows the
//! tokens drawn, created by a [`ConstraintFactory`] from the request's
//! [`StructuredOutput`]. The grammar engine behind them lives outside this
//! crate (`kiln-structured`), as the tokenizer does behind `TokenDecoder`.

use kiln_protocol::step::TokenMask;
use kiln_protocol::{StructuredOutput, TokenId};

/// One sequence's position in its grammar.
pub trait TokenConstraint: Send {
    /// The tokens that may come next. When the text so far is complete the
    /// set includes [`ConstraintFactory::eos_token`].
    fn allowed_tokens(&mut self) -> Result<TokenMask, String>;
    /// Advances past `token`; an error when the grammar does not allow it.
    fn consume(&mut self, token: TokenId) -> Result<(), String>;
    /// True when nothing but the end of the sequence may follow.
    fn is_complete(&self) -> bool;
    /// An independent copy at the same position (for `n > 1` sequences).
    fn fork(&self) -> Box<dyn TokenConstraint>;
}

/// Builds sequences' constraints from request parameters.
pub trait ConstraintFactory: Send + Sync {
    /// A constraint at the start of `spec`'s grammar; the error says what is
    /// wrong with the spec.
    fn start(&self, spec: &StructuredOutput) -> Result<Box<dyn TokenConstraint>, String>;
    /// The end-of-sequence token the constraints put in their masks; the
    /// sampler lets every EOS and stop token of a request through with it.
    fn eos_token(&self) -> TokenId;
}

/// Sets `row[t]` to `-inf` for every token `t` not in `allowed`.
pub fn apply_mask(row: &mut [f32], allowed: &TokenMask) {
    for (w, chunk) in row.chunks_mut(32).enumerate() {
        let word = allowed.words.get(w).copied().unwrap_or(0);
        if word == u32::MAX {
            continue;
        }
        for (b, v) in chunk.iter_mut().enumerate() {
            if word >> b & 1 == 0 {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}

/// `mask` plus every token of `also` when it holds `eos` (the grammar
/// accepts the end of the text here).
pub fn with_end_tokens(mut mask: TokenMask, eos: TokenId, also: &[TokenId]) -> TokenMask {
    if mask.contains(eos) {
        for &t in also {
            mask.insert(t);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_only_allowed_tokens() {
        let mut mask = TokenMask::empty(40);
        mask.insert(1);
        mask.insert(33);
        let mut row = vec![1.0; 40];
        apply_mask(&mut row, &mask);
        let kept: Vec<usize> = (0..40).filter(|&i| row[i].is_finite()).collect();
        assert_eq!(kept, vec![1, 33]);
        // A row longer than the mask: the tail is never allowed.
        let mut long = vec![0.0; 70];
        apply_mask(&mut long, &mask);
        assert!(long[64..].iter().all(|v| *v == f32::NEG_INFINITY));
    }

    #[test]
    fn end_tokens_follow_eos() {
        let mut mask = TokenMask::empty(8);
        mask.insert(2);
        assert_eq!(with_end_tokens(mask.clone(), 0, &[5]).count(), 1);
        mask.insert(0);
        let m = with_end_tokens(mask, 0, &[5, 7]);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 2, 5, 7]);
    }
}
