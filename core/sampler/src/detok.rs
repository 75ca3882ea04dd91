//! Incremental, UTF-8-safe detokenization.
//!
//! A sequence's text is produced token by token from a small window: the
//! text of `window[prefix..]` minus the text of `window[prefix..read]` is
//! the new text, released only once it no longer ends in U+FFFD (a token
//! that carries part of a multi-byte character). The window starts with the
//! last prompt tokens so that the first generated token decodes as it would
//! in the middle of the text (leading-space rules of some tokenizers).

use kiln_protocol::TokenId;

/// What the sampler needs from a tokenizer.
pub trait TokenDecoder: Send + Sync {
    /// Text of `ids`; bytes that do not form valid UTF-8 become U+FFFD.
    fn decode(&self, ids: &[TokenId], skip_special_tokens: bool) -> String;
    /// Whether `id` is a special (control) token.
    fn is_special(&self, id: TokenId) -> bool;
    /// Number of tokens in the vocabulary.
    fn vocab_size(&self) -> usize;
}

/// Whether special tokens appear in decoded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialTokens {
    /// Leave them out (`skip_special_tokens: true`).
    Skip,
    /// Keep their text.
    Keep,
}

impl SpecialTokens {
    /// From `StoppingCriteria::skip_special_tokens`.
    pub fn from_skip(skip_special_tokens: bool) -> Self {
        if skip_special_tokens {
            SpecialTokens::Skip
        } else {
            SpecialTokens::Keep
        }
    }

    fn skip(self) -> bool {
        self == SpecialTokens::Skip
    }
}

/// Prompt tokens kept as decoding context for the first generated tokens.
const PROMPT_CONTEXT: usize = 5;

/// The window is shifted once this many tokens precede its prefix offset.
const TRIM_AT: usize = 64;

/// Turns a growing token list into text deltas that never split a UTF-8
/// character. Holds only a window of recent tokens.
#[derive(Debug, Clone)]
pub struct IncrementalDecoder {
    window: Vec<TokenId>,
    /// Start of the tokens whose text was released and serves as context.
    prefix_offset: usize,
    /// End of the tokens whose text was released.
    read_offset: usize,
    special: SpecialTokens,
}

impl IncrementalDecoder {
    /// A decoder for the tokens generated after `prompt`.
    pub fn new(prompt: &[TokenId], special: SpecialTokens) -> Self {
        let context = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..];
        IncrementalDecoder {
            window: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            special,
        }
    }

    /// Adds a token and appends the text that became complete (possibly
    /// none) to `out`.
    pub fn push(&mut self, decoder: &dyn TokenDecoder, id: TokenId, out: &mut String) {
        self.window.push(id);
        let (prefix, full) = self.decode_pending(decoder);
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            out.push_str(&full[prefix.len()..]);
            self.advance();
        }
    }

    /// Appends everything still held (an unfinished character as U+FFFD)
    /// to `out`; used when the sequence ends.
    pub fn flush(&mut self, decoder: &dyn TokenDecoder, out: &mut String) {
        if self.read_offset == self.window.len() {
            return;
        }
        let (prefix, full) = self.decode_pending(decoder);
        if full.len() > prefix.len() && full.is_char_boundary(prefix.len()) {
            out.push_str(&full[prefix.len()..]);
        }
        self.advance();
    }

    /// Text of the released context and of the whole window from the prefix.
    fn decode_pending(&self, decoder: &dyn TokenDecoder) -> (String, String) {
        let skip = self.special.skip();
        let prefix = decoder.decode(&self.window[self.prefix_offset..self.read_offset], skip);
        let full = decoder.decode(&self.window[self.prefix_offset..], skip);
        (prefix, full)
    }

    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.window.len();
        if self.prefix_offset >= TRIM_AT {
            self.window.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Ids below 256 are bytes; 256 is the special `<s>`; 257 is "é".
    pub(crate) struct Bytes;

    impl TokenDecoder for Bytes {
        fn decode(&self, ids: &[TokenId], skip_special_tokens: bool) -> String {
            let mut b = Vec::new();
            for &i in ids {
                match i {
                    0..=255 => b.push(i as u8),
                    256 if !skip_special_tokens => b.extend_from_slice(b"<s>"),
                    257 => b.extend_from_slice("é".as_bytes()),
                    _ => {}
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        fn is_special(&self, id: TokenId) -> bool {
            id == 256
        }
        fn vocab_size(&self) -> usize {
            258
        }
    }

    fn deltas(prompt: &[TokenId], tokens: &[TokenId], special: SpecialTokens) -> Vec<String> {
        let mut d = IncrementalDecoder::new(prompt, special);
        tokens
            .iter()
            .map(|&t| {
                let mut s = String::new();
                d.push(&Bytes, t, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn partial_characters_wait_for_their_last_byte() {
        // "😀" is F0 9F 98 80.
        let d = deltas(
            &[b'a' as u32],
            &[0xF0, 0x9F, 0x98, 0x80, b'!' as u32],
            SpecialTokens::Skip,
        );
        assert_eq!(d, vec!["", "", "", "😀", "!"]);
    }

    #[test]
    fn special_tokens_follow_the_mode() {
        let toks = [b'a' as u32, 256, b'b' as u32];
        assert_eq!(deltas(&[], &toks, SpecialTokens::Skip), vec!["a", "", "b"]);
        assert_eq!(
            deltas(&[], &toks, SpecialTokens::Keep),
            vec!["a", "<s>", "b"]
        );
    }

    #[test]
    fn flush_releases_an_unfinished_character() {
        let mut d = IncrementalDecoder::new(&[], SpecialTokens::Skip);
        let mut s = String::new();
        d.push(&Bytes, b'x' as u32, &mut s);
        d.push(&Bytes, 0xC3, &mut s);
        assert_eq!(s, "x");
        d.flush(&Bytes, &mut s);
        assert_eq!(s, "x\u{FFFD}");
        d.flush(&Bytes, &mut s);
        assert_eq!(s, "x\u{FFFD}");
    }

    #[test]
    fn long_sequences_keep_a_short_window_and_the_full_text() {
        let toks: Vec<TokenId> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    257
                } else {
                    b'a' as u32 + (i % 26)
                }
            })
            .collect();
        let mut d = IncrementalDecoder::new(&[1, 2, 3], SpecialTokens::Skip);
        let mut s = String::new();
        for &t in &toks {
            d.push(&Bytes, t, &mut s);
        }
        assert!(d.window.len() <= TRIM_AT + 2);
        assert_eq!(s, Bytes.decode(&toks, true));
    }
}
