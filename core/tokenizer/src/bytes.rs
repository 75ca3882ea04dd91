//! The bytes each token stands for, as grammar engines need them: the
//! vocabulary's spelling undone (GPT-2 byte-level characters, SentencePiece
//! `▁` and `<0xAB>` byte tokens), added tokens as their text, and special
//! tokens as `0xFF` followed by their text so that no text can spell them.

use std::collections::HashMap;

use tokenizers::DecoderWrapper;

use crate::Tokenizer;

/// Prefix of a special token's bytes (not valid UTF-8 anywhere in text).
pub const SPECIAL_TOKEN_MARKER: u8 = 0xFF;

/// How the vocabulary spells bytes.
enum Spelling {
    /// GPT-2 byte-level: each byte is one printable character.
    ByteLevel(HashMap<char, u8>),
    /// SentencePiece: `space` stands for ' ', `<0xAB>` tokens for single bytes.
    ByteFallback { space: char },
    /// Anything else: the token's decoded text.
    Decoded,
}

impl Tokenizer {
    /// `[vocab_size]` the bytes of each token (empty for ids without one).
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        let inner = &self.shared.inner;
        let spelling = spelling(inner.get_decoder());
        let added: HashMap<u32, String> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        (0..self.vocab_size() as u32)
            .map(|id| {
                if self.is_special(id) {
                    let text = inner.id_to_token(id).unwrap_or_default();
                    let mut bytes = vec![SPECIAL_TOKEN_MARKER];
                    bytes.extend_from_slice(text.as_bytes());
                    return bytes;
                }
                if let Some(text) = added.get(&id) {
                    return text.as_bytes().to_vec();
                }
                let Some(piece) = inner.id_to_token(id) else {
                    return Vec::new();
                };
                match &spelling {
                    Spelling::ByteLevel(map) => piece
                        .chars()
                        .map(|c| map.get(&c).copied())
                        .collect::<Option<Vec<u8>>>()
                        .unwrap_or_else(|| piece.into_bytes()),
                    Spelling::ByteFallback { space } => byte_token(&piece)
                        .map(|b| vec![b])
                        .unwrap_or_else(|| piece.replace(*space, " ").into_bytes()),
                    Spelling::Decoded => self.decode(&[id], false).unwrap_or_default().into_bytes(),
                }
            })
            .collect()
    }
}

fn spelling(decoder: Option<&DecoderWrapper>) -> Spelling {
    fn flatten<'a>(d: &'a DecoderWrapper, out: &mut Vec<&'a DecoderWrapper>) {
        match d {
            DecoderWrapper::Sequence(seq) => {
                seq.get_decoders().iter().for_each(|d| flatten(d, out))
            }
            other => out.push(other),
        }
    }
    let mut parts = Vec::new();
    if let Some(d) = decoder {
        flatten(d, &mut parts);
    }
    let space = parts
        .iter()
        .find_map(|d| match d {
            DecoderWrapper::Metaspace(m) => Some(m.get_replacement()),
            _ => None,
        })
        .unwrap_or('▁');
    if parts
        .iter()
        .any(|d| matches!(d, DecoderWrapper::ByteLevel(_)))
    {
        Spelling::ByteLevel(byte_level_chars())
    } else if parts
        .iter()
        .any(|d| matches!(d, DecoderWrapper::ByteFallback(_)))
    {
        Spelling::ByteFallback { space }
    } else {
        Spelling::Decoded
    }
}

/// The byte of a `<0xAB>` token.
fn byte_token(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// GPT-2's map from byte-level characters back to bytes: printable Latin-1
/// bytes stand for themselves, the others are shifted past U+0100 in order.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (char::from(b), b)
            } else {
                let c = char::from_u32(next).expect("below the surrogates");
                next += 1;
                (c, b)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_map_is_a_bijection_with_gpt2_space() {
        let map = byte_level_chars();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
    }

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(byte_token("<0x0A>"), Some(10));
        assert_eq!(byte_token("<0xZZ>"), None);
        assert_eq!(byte_token("hello"), None);
    }
}
