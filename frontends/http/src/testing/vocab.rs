//! The scripted engine's fake vocabulary: a few special tokens, one token per
//! byte, and a fixed list of words (with and without a leading space).

use kiln_protocol::TokenId;

/// `<s>`: prepended when special tokens are added.
pub const BOS: TokenId = 0;
/// `</s>`: an end-of-sequence token.
pub const EOS: TokenId = 1;
/// `<|im_start|>`: opens a chat turn.
pub const IM_START: TokenId = 2;
/// `<|im_end|>`: closes a chat turn; the end-of-sequence token the story ends with.
pub const IM_END: TokenId = 3;

const SPECIALS: [&str; 4] = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"];
const FIRST_BYTE: TokenId = 4;
const FIRST_WORD: TokenId = FIRST_BYTE + 256;

/// The story every generation recites (greedy from its start, sampled from a
/// seeded offset).
pub const STORY: &str = "Once upon a time, a little kiln baked bread for the whole village. \
Every morning the baker lit the fire, and the bread came out warm and golden. The end.";

const WORDS: &[&str] = &[
    "Once",
    " upon",
    " a",
    " time",
    ",",
    " little",
    " kiln",
    " baked",
    " bread",
    " for",
    " the",
    " whole",
    " village",
    ".",
    " Every",
    " morning",
    " baker",
    " lit",
    " fire",
    " and",
    " came",
    " out",
    " warm",
    " golden",
    " The",
    " end",
    "Hello",
    " Hello",
    " world",
    " What",
    "What",
    " is",
    " capital",
    " of",
    " France",
    "?",
    " Paris",
    " hi",
    "hi",
    " user",
    " assistant",
    " system",
    "user",
    "assistant",
    "system",
    "\n",
    " ",
];

/// Vocabulary size.
pub fn vocab_size() -> u32 {
    FIRST_WORD + WORDS.len() as u32
}

/// Whether `id` is one of the special tokens.
pub fn is_special(id: TokenId) -> bool {
    (id as usize) < SPECIALS.len()
}

/// The bytes of one token (`None` outside the vocabulary).
pub fn token_bytes(id: TokenId) -> Option<Vec<u8>> {
    if is_special(id) {
        return Some(SPECIALS[id as usize].as_bytes().to_vec());
    }
    if id < FIRST_WORD {
        return Some(vec![(id - FIRST_BYTE) as u8]);
    }
    WORDS
        .get((id - FIRST_WORD) as usize)
        .map(|w| w.as_bytes().to_vec())
}

/// One token's text (lossy for lone bytes).
pub fn token_text(id: TokenId) -> Option<String> {
    token_bytes(id).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Greedy longest-match tokenization: special strings, then words, then bytes.
pub fn tokenize(text: &str, add_special_tokens: bool) -> Vec<TokenId> {
    let bytes = text.as_bytes();
    let mut ids = Vec::new();
    if add_special_tokens {
        ids.push(BOS);
    }
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let special = SPECIALS
            .iter()
            .position(|s| rest.starts_with(s.as_bytes()))
            .map(|p| (p as TokenId, SPECIALS[p].len()));
        let word = WORDS
            .iter()
            .enumerate()
            .filter(|(_, w)| rest.starts_with(w.as_bytes()))
            .max_by_key(|(_, w)| w.len())
            .map(|(p, w)| (FIRST_WORD + p as TokenId, w.len()));
        let (id, len) = special
            .or(word)
            .unwrap_or((FIRST_BYTE + TokenId::from(rest[0]), 1));
        ids.push(id);
        i += len;
    }
    ids
}

/// Concatenated token bytes, decoded lossily; specials dropped when asked.
pub fn detokenize(ids: &[TokenId], skip_special_tokens: bool) -> Option<String> {
    let mut bytes = Vec::new();
    for &id in ids {
        if skip_special_tokens && is_special(id) {
            continue;
        }
        bytes.extend(token_bytes(id)?);
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The story as token ids.
pub fn story_tokens() -> Vec<TokenId> {
    tokenize(STORY, false)
}

/// A word token other than `id`, `k` steps further along the word list (for
/// made-up top-logprob alternatives).
pub fn neighbour(id: TokenId, k: u32) -> TokenId {
    let n = WORDS.len() as u32;
    let base = id.saturating_sub(FIRST_WORD) % n;
    FIRST_WORD + (base + k) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            "Hello world",
            "What is the capital of France?",
            "héllo ✓",
            STORY,
            "",
        ] {
            assert_eq!(detokenize(&tokenize(text, false), false).unwrap(), text);
        }
    }

    #[test]
    fn words_are_single_tokens_and_specials_are_recognized() {
        assert_eq!(tokenize(" Paris", false).len(), 1);
        let ids = tokenize("<|im_start|>user\nhi<|im_end|>", true);
        assert_eq!(ids[0], BOS);
        assert_eq!(ids[1], IM_START);
        assert_eq!(*ids.last().unwrap(), IM_END);
        assert_eq!(detokenize(&ids, true).unwrap(), "user\nhi");
    }

    #[test]
    fn story_is_all_words() {
        assert!(story_tokens().iter().all(|&id| id >= FIRST_WORD));
        assert!(token_text(vocab_size()).is_none());
    }
}
