//! The model's vocabulary as llguidance needs it: each token's bytes, and
//! the end-of-sequence token.

use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

/// Token bytes by id plus the EOS id. Special tokens are spelled as
/// `0xFF` followed by their text (llguidance's marker), so that no grammar
/// can produce them by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    /// `[vocab]` the bytes each token stands for.
    pub tokens: Vec<Vec<u8>>,
    /// The token that ends a sequence.
    pub eos: u32,
}

impl Vocabulary {
    /// One token per byte plus an EOS token (id 256): grammars checked
    /// against it reject the same inputs as against a real vocabulary.
    pub fn bytes() -> Self {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"\xFF<|eos|>".to_vec());
        Vocabulary { tokens, eos: 256 }
    }

    /// The token environment llguidance compiles grammars against.
    pub(crate) fn token_env(&self) -> Result<TokEnv, String> {
        if self.tokens.is_empty() || self.eos as usize >= self.tokens.len() {
            return Err(format!(
                "the EOS token {} is outside the vocabulary of {} tokens",
                self.eos,
                self.tokens.len()
            ));
        }
        let info = TokRxInfo::new(self.tokens.len() as u32, self.eos);
        let trie = TokTrie::from(&info, &self.tokens);
        Ok(std::sync::Arc::new(ApproximateTokEnv::new(trie)))
    }
}
