//! Incremental, UTF-8-safe detokenization and stop-string holding.

use std::sync::Arc;

use kiln_protocol::TokenId;

/// What the sampler needs from a tokenizer.
pub trait TokenDecoder: Send + Sync {
    /// Text of `ids`.
    fn decode(&self, ids: &[TokenId], skip_special_tokens: bool) -> String;
    /// Whether `id` is a special token.
    fn is_special(&self, id: TokenId) -> bool;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
}

/// Context tokens taken from the end of the prompt so that the first
/// generated token decodes as it would inside the full text.
const PROMPT_CONTEXT: usize = 5;

/// Turns a growing token list into text deltas that never split a UTF-8
/// character (a delta is withheld while the decoded text ends in U+FFFD).
#[derive(Clone)]
pub struct IncrementalDecoder {
    decoder: Arc<dyn TokenDecoder>,
    skip_special: bool,
    tokens: Vec<TokenId>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Start after `prompt` (its last tokens give context).
    pub fn new(decoder: Arc<dyn TokenDecoder>, prompt: &[TokenId], skip_special: bool) -> Self {
        let ctx = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..];
        IncrementalDecoder {
            decoder,
            skip_special,
            tokens: ctx.to_vec(),
            prefix_offset: 0,
            read_offset: ctx.len(),
        }
    }

    /// Add a token; returns the new complete text (possibly empty).
    pub fn push(&mut self, id: TokenId) -> String {
        self.tokens.push(id);
        let prefix = self.decoder.decode(
            &self.tokens[self.prefix_offset..self.read_offset],
            self.skip_special,
        );
        let full = self
            .decoder
            .decode(&self.tokens[self.prefix_offset..], self.skip_special);
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.tokens.len();
            delta
        } else {
            String::new()
        }
    }

    /// Whatever is still buffered (incomplete characters at the very end).
    pub fn flush(&mut self) -> String {
        let prefix = self.decoder.decode(
            &self.tokens[self.prefix_offset..self.read_offset],
            self.skip_special,
        );
        let full = self
            .decoder
            .decode(&self.tokens[self.prefix_offset..], self.skip_special);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        if full.len() > prefix.len() && full.is_char_boundary(prefix.len()) {
            full[prefix.len()..].to_string()
        } else {
            String::new()
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
pub fn held_back(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        let max = (s.len() - 1).min(text.len());
        for n in (best + 1..=max).rev() {
            let start = text.len() - n;
            if text.is_char_boundary(start)
                && s.is_char_boundary(n)
                && s.as_bytes()[..n] == text.as_bytes()[start..]
            {
                best = n;
                break;
            }
        }
    }
    best
}

/// The earliest stop-string match in `text` at or after byte `from`: (position, string).
pub fn find_stop<'a>(text: &str, from: usize, stops: &'a [String]) -> Option<(usize, &'a String)> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter_map(|s| text[from..].find(s.as_str()).map(|p| (from + p, s)))
        .min_by_key(|(p, s)| (*p, std::cmp::Reverse(s.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_back_and_find() {
        let stops = vec!["</end>".to_string(), "STOP".to_string()];
        assert_eq!(held_back("hello </e", &stops), 3);
        assert_eq!(held_back("hello ST", &stops), 2);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(
            find_stop("abc STOP def </end>", 0, &stops).map(|(p, _)| p),
            Some(4)
        );
        assert_eq!(find_stop("é STOP", 1, &stops).map(|(p, _)| p), Some(3));
    }
}
