//! One sequence's grammar state: an llguidance `Matcher` behind the
//! sampler's [`TokenConstraint`].

use kiln_protocol::TokenId;
use kiln_protocol::step::TokenMask;
use kiln_sampler::TokenConstraint;
use llguidance::Matcher;

/// A sequence following a compiled grammar.
pub(crate) struct GrammarConstraint {
    pub matcher: Matcher,
}

impl GrammarConstraint {
    fn error(&self, fallback: impl std::fmt::Display) -> String {
        self.matcher
            .get_error()
            .unwrap_or_else(|| fallback.to_string())
    }
}

impl TokenConstraint for GrammarConstraint {
    fn allowed_tokens(&mut self) -> Result<TokenMask, String> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| self.error(e))?;
        Ok(TokenMask {
            words: mask.as_slice().to_vec(),
        })
    }

    fn consume(&mut self, token: TokenId) -> Result<(), String> {
        self.matcher.consume_token(token).map_err(|e| self.error(e))
    }

    fn is_complete(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }

    fn fork(&self) -> Box<dyn TokenConstraint> {
        Box::new(GrammarConstraint {
            matcher: self.matcher.deep_clone(),
        })
    }
}
