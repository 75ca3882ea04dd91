//! `bert` GGUF vocabularies (WordPiece), built as transformers builds a BERT
//! tokenizer: llama.cpp's converter spells a word-initial piece with a
//! leading `▁` and a continuation piece bare (`##ing` becomes `ing`), so the
//! pieces are spelled back first; then BERT's normalizer (control
//! characters dropped, CJK characters split, lowercase and accents as the
//! file says), its pre-tokenizer (whitespace and punctuation), WordPiece
//! with `##` continuations, and `[CLS] … [SEP]` around every input.

use tokenizers::Tokenizer as HfTokenizer;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;

use crate::TokenizerError;
use kiln_protocol::GgufTokenizerSpec;

const CONTROL: i32 = 3;
/// The prefix of a word-initial piece in llama.cpp's spelling.
const WORD_START: char = '▁';
const CONTINUATION: &str = "##";
/// Longer words are one `[UNK]`, as in BERT's tokenizer.
const MAX_WORD_CHARS: usize = 100;

/// The pieces as WordPiece spells them: control tokens as they are,
/// `▁word` as `word`, a bare `ing` as `##ing`.
pub(crate) fn vocab(spec: &GgufTokenizerSpec) -> Vec<String> {
    spec.tokens
        .iter()
        .enumerate()
        .map(|(id, token)| {
            if spec.token_types.get(id) == Some(&CONTROL) {
                token.clone()
            } else if let Some(word) = token.strip_prefix(WORD_START) {
                word.to_string()
            } else {
                format!("{CONTINUATION}{token}")
            }
        })
        .collect()
}

/// The tokenizer over `vocab` (from [`vocab`]).
pub(crate) fn tokenizer(
    spec: &GgufTokenizerSpec,
    vocab: &[String],
) -> Result<HfTokenizer, TokenizerError> {
    let unknown = spec.unknown_token_id.ok_or_else(|| {
        TokenizerError::Invalid(
            "a `bert` GGUF tokenizer needs tokenizer.ggml.unknown_token_id".into(),
        )
    })?;
    let model = WordPiece::builder()
        .vocab(
            vocab
                .iter()
                .enumerate()
                .map(|(i, t)| (t.clone(), i as u32))
                .collect::<tokenizers::models::bpe::Vocab>(),
        )
        .unk_token(vocab[unknown as usize].clone())
        .continuing_subword_prefix(CONTINUATION.into())
        .max_input_chars_per_word(MAX_WORD_CHARS)
        .build()
        .map_err(|e| TokenizerError::Invalid(format!("WordPiece: {e}")))?;
    let mut tokenizer = HfTokenizer::new(model);
    // Files written before llama.cpp recorded the flag carry none; the BERT
    // GGUFs of that time are the uncased embedding models (bge, MiniLM),
    // whose tokenizers lowercase (llama.cpp's own test vectors for them do).
    let lowercase = spec.normalizer_lowercase.unwrap_or(true);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            true,
            spec.normalizer_strip_accents,
            lowercase,
        )))
        .map_err(|e| TokenizerError::Invalid(format!("BERT normalizer: {e}")))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(WordPieceDecoder::new(CONTINUATION.into(), true)));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GgufTokenizerSpec {
        let tokens = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁hello", "▁play", "ing", "▁,", "▁é",
        ];
        GgufTokenizerSpec {
            model: "bert".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: vec![3, 3, 3, 3, 1, 1, 1, 1, 1],
            unknown_token_id: Some(1),
            padding_token_id: Some(0),
            cls_token_id: Some(2),
            separator_token_id: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn pieces_are_spelled_back() {
        assert_eq!(
            vocab(&spec()),
            [
                "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "play", "##ing", ",", "é"
            ]
        );
    }

    #[test]
    fn words_split_into_pieces_lowercased_with_accents_stripped() {
        let s = spec();
        let t = tokenizer(&s, &vocab(&s)).unwrap();
        let ids = |text: &str| t.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids("Hello, PLAYING"), vec![4, 7, 5, 6]);
        assert_eq!(ids("zzz hello"), vec![1, 4]);
        // Without the flag, lowercase; accents follow it, so `é` becomes `e`.
        assert_eq!(ids("É"), vec![1]);
        let kept = GgufTokenizerSpec {
            normalizer_lowercase: Some(false),
            ..s.clone()
        };
        let t = tokenizer(&kept, &vocab(&kept)).unwrap();
        assert_eq!(
            t.encode("hello Hello é", false).unwrap().get_ids(),
            [4, 1, 8]
        );
    }

    #[test]
    fn a_vocabulary_without_unknown_token_is_refused() {
        let s = GgufTokenizerSpec {
            unknown_token_id: None,
            ..spec()
        };
        let e = tokenizer(&s, &vocab(&s)).unwrap_err().to_string();
        assert!(e.contains("unknown_token_id"), "{e}");
    }
}
