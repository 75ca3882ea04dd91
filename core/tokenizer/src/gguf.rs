//! Building a `tokenizers::Tokenizer` from GGUF tokenizer metadata
//! (`tokenizer.ggml.*`) the way transformers' GGUF loader builds it:
//!
//! - `gpt2`: byte-level BPE from the vocabulary and merges, the split regex
//!   chosen by `tokenizer.ggml.pre` (see [`crate::known_pre_tokenizers`]),
//!   a byte-level decoder;
//! - `llama` (SentencePiece): BPE with byte fallback (`<0xXX>` tokens),
//!   merges from the file or recovered from the scores, `▁` for spaces with
//!   one prefixed to the text and after every special token (as llama.cpp
//!   and transformers' legacy Llama tokenizer do), and the matching decoder;
//! - `gemma4`: the same BPE over `▁`-spelled text from the file's merges,
//!   with no `▁` prefix, runs of line breaks cut apart from the text around
//!   them and BOS always added, as llama.cpp does;
//! - `bert`: WordPiece ([`crate::wordpiece`]), `[CLS] … [SEP]` around every
//!   input (CLS counts as BOS).
//!
//! Control tokens (type 3) and the BOS/EOS/UNK/PAD tokens become special
//! added tokens, user-defined ones (type 4) plain added tokens matched in
//! the text as written (a run of spaces, say) before the rest is split.

use std::collections::HashSet;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::merges::merges_from_scores;
use crate::pre::{adds_bos_by_default, ignores_merges, line_break_runs, pre_split, pre_tokenizer};
use crate::wordpiece;
use crate::{TokenizerError, bos_eos_processor};
pub use kiln_protocol::GgufTokenizerSpec;

/// What [`build`] makes.
pub(crate) struct Built {
    pub tokenizer: HfTokenizer,
    /// Ids of the special tokens (skipped by `decode(.., skip_special_tokens)`).
    pub special: HashSet<u32>,
    /// What starts an encoded input (`bos_token_id`, or WordPiece's CLS).
    pub bos_token_id: Option<u32>,
    /// What ends a sequence (`eos_token_id`, or WordPiece's separator).
    pub eos_token_id: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ByteLevel,
    SentencePiece,
    Gemma4,
    WordPiece,
}

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNKNOWN: i32 = 2;

fn invalid(what: &str, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Invalid(format!("{what}: {e}"))
}

/// Check lengths and ids against the vocabulary.
fn validate(spec: &GgufTokenizerSpec) -> Result<Kind, TokenizerError> {
    let kind = match spec.model.as_str() {
        "gpt2" => Kind::ByteLevel,
        "llama" => Kind::SentencePiece,
        "gemma4" => Kind::Gemma4,
        "bert" => Kind::WordPiece,
        other => {
            return Err(TokenizerError::Invalid(format!(
                "GGUF tokenizer model `{other}` is not supported (supported: gpt2, llama, gemma4, bert)"
            )));
        }
    };
    let n = spec.tokens.len();
    if n == 0 {
        return Err(TokenizerError::Invalid(
            "the GGUF file has no tokenizer.ggml.tokens".into(),
        ));
    }
    if !spec.token_types.is_empty() && spec.token_types.len() != n {
        return Err(TokenizerError::Invalid(format!(
            "tokenizer.ggml.token_type has {} entries for {n} tokens",
            spec.token_types.len()
        )));
    }
    if let Some(scores) = &spec.scores
        && scores.len() != n
    {
        return Err(TokenizerError::Invalid(format!(
            "tokenizer.ggml.scores has {} entries for {n} tokens",
            scores.len()
        )));
    }
    let named = [
        ("bos_token_id", spec.bos_token_id),
        ("eos_token_id", spec.eos_token_id),
        ("unknown_token_id", spec.unknown_token_id),
        ("padding_token_id", spec.padding_token_id),
        ("cls_token_id", spec.cls_token_id),
        ("seperator_token_id", spec.separator_token_id),
    ];
    for (key, id) in named {
        if let Some(id) = id
            && id as usize >= n
        {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.ggml.{key} is {id}, outside the vocabulary of {n} tokens"
            )));
        }
    }
    Ok(kind)
}

/// Build the tokenizer a GGUF file describes.
pub(crate) fn build(spec: &GgufTokenizerSpec) -> Result<Built, TokenizerError> {
    let kind = validate(spec)?;
    let (mut tokenizer, vocab) = match kind {
        Kind::ByteLevel => byte_level(spec)?,
        Kind::SentencePiece | Kind::Gemma4 => (sentencepiece(spec, kind)?, spec.tokens.clone()),
        Kind::WordPiece => {
            let vocab = wordpiece::vocab(spec);
            (wordpiece::tokenizer(spec, &vocab)?, vocab)
        }
    };
    let mut special = add_tokens(&mut tokenizer, spec, kind, &vocab)?;
    let (bos, eos) = match kind {
        Kind::WordPiece => (
            spec.bos_token_id.or(spec.cls_token_id),
            spec.eos_token_id.or(spec.separator_token_id),
        ),
        _ => (spec.bos_token_id, spec.eos_token_id),
    };
    special.extend(bos.into_iter().chain(eos));
    let named = |id: Option<u32>| id.map(|i| (i, vocab[i as usize].clone()));
    let add_bos = matches!(kind, Kind::Gemma4 | Kind::WordPiece)
        || spec
            .add_bos_token
            .unwrap_or(kind == Kind::SentencePiece || adds_bos_by_default(spec.pre.as_deref()));
    let add_eos = kind == Kind::WordPiece || spec.add_eos_token.unwrap_or(false);
    tokenizer.with_post_processor(Some(bos_eos_processor(
        named(bos).filter(|_| add_bos),
        named(eos).filter(|_| add_eos),
    )?));
    Ok(Built {
        tokenizer,
        special,
        bos_token_id: bos,
        eos_token_id: eos,
    })
}

/// GPT-2's byte alphabet: byte → the printable character that spells it.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// Whether every character of `token` is in GPT-2's byte alphabet.
fn byte_spelled(token: &str) -> bool {
    token
        .chars()
        .all(|c| matches!(c as u32, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0x143))
}

/// Tokens as byte-level BPE spells them: a token written with other
/// characters (a literal space, say) is respelled byte by byte, except a
/// user-defined one, which is matched in the text as written.
fn byte_level_vocab(tokens: &[String], token_types: &[i32]) -> Vec<String> {
    let table = byte_chars();
    tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            if byte_spelled(t) || token_types.get(id) == Some(&USER_DEFINED) {
                t.clone()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
            }
        })
        .collect()
}

fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>, TokenizerError> {
    merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    TokenizerError::Invalid(format!(
                        "tokenizer.ggml.merges entry `{m}` is not `left right`"
                    ))
                })
        })
        .collect()
}

fn vocab_map(tokens: &[String]) -> tokenizers::models::bpe::Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn byte_level(spec: &GgufTokenizerSpec) -> Result<(HfTokenizer, Vec<String>), TokenizerError> {
    let vocab = byte_level_vocab(&spec.tokens, &spec.token_types);
    let model = BPE::builder()
        .vocab_and_merges(vocab_map(&vocab), parse_merges(&spec.merges)?)
        .ignore_merges(ignores_merges(spec.pre.as_deref()))
        .build()
        .map_err(|e| invalid("byte-level BPE", e))?;
    let mut tokenizer = HfTokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre_split(spec.pre.as_deref()))?));
    tokenizer.with_decoder(Some(ByteLevel::new(true, true, true)));
    Ok((tokenizer, vocab))
}

fn sentencepiece(spec: &GgufTokenizerSpec, kind: Kind) -> Result<HfTokenizer, TokenizerError> {
    let merges = if spec.merges.is_empty() {
        let scores = spec.scores.as_ref().ok_or_else(|| {
            TokenizerError::Invalid(
                "a `llama` GGUF tokenizer needs tokenizer.ggml.scores or tokenizer.ggml.merges"
                    .into(),
            )
        })?;
        merges_from_scores(&spec.tokens, scores)
    } else {
        parse_merges(&spec.merges)?
    };
    let unknown = spec.unknown_token_id.or_else(|| {
        spec.token_types
            .iter()
            .position(|&t| t == UNKNOWN)
            .map(|i| i as u32)
    });
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(&spec.tokens), merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unknown {
        builder = builder.unk_token(spec.tokens[unk as usize].clone());
    }
    let model = builder
        .build()
        .map_err(|e| invalid("SentencePiece BPE", e))?;
    let mut tokenizer = HfTokenizer::new(model);
    let prefix = kind == Kind::SentencePiece && spec.add_space_prefix.unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(
        Replace::new(" ", "▁")
            .map_err(|e| invalid("normalizer", e))?
            .into(),
    );
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| invalid("normalizer", e))?;
    if kind == Kind::Gemma4 {
        tokenizer.with_pre_tokenizer(Some(line_break_runs()?));
    }
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| invalid("decoder", e))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// Register control, named and user-defined tokens; returns the special ids.
fn add_tokens(
    tokenizer: &mut HfTokenizer,
    spec: &GgufTokenizerSpec,
    kind: Kind,
    vocab: &[String],
) -> Result<HashSet<u32>, TokenizerError> {
    let ty = |id: usize| spec.token_types.get(id).copied().unwrap_or(1);
    // A byte-level token marked control but written outside the byte
    // alphabet is a mislabel; transformers leaves it out, and so does Kiln.
    let spelled = |id: usize| kind != Kind::ByteLevel || byte_spelled(&spec.tokens[id]);
    let mut special: HashSet<u32> = (0..spec.tokens.len())
        .filter(|&id| ty(id) == CONTROL && spelled(id))
        .map(|id| id as u32)
        .collect();
    special.extend(
        [
            spec.bos_token_id,
            spec.eos_token_id,
            spec.unknown_token_id,
            spec.padding_token_id,
        ]
        .into_iter()
        .flatten(),
    );
    let mut ids: Vec<u32> = special.iter().copied().collect();
    ids.sort_unstable();
    let special_tokens: Vec<AddedToken> = ids
        .iter()
        .map(|&id| AddedToken::from(vocab[id as usize].clone(), true).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(special_tokens)
        .map_err(|e| invalid("special tokens", e))?;
    let user: Vec<AddedToken> = (0..spec.tokens.len())
        .filter(|&id| ty(id) == USER_DEFINED && !special.contains(&(id as u32)))
        .map(|id| AddedToken::from(vocab[id].clone(), false).normalized(false))
        .collect();
    tokenizer
        .add_tokens(user)
        .map_err(|e| invalid("user-defined tokens", e))?;
    Ok(special)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The 256 byte tokens, a few merges and two control tokens.
    fn tiny_byte_level(pre: &str) -> HfTokenizer {
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        tokens.extend(["Ġt", "he", "Ġthe", "<|a|>", "<|b|>"].map(String::from));
        let mut token_types = vec![1; 259];
        token_types.extend([3, 3]);
        let spec = GgufTokenizerSpec {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens,
            token_types,
            merges: vec!["Ġ t".into(), "h e".into(), "Ġt he".into()],
            ..Default::default()
        };
        build(&spec).unwrap().tokenizer
    }

    proptest! {
        /// Byte-level BPE loses nothing, whatever the text and pre-tokenizer,
        /// special tokens included.
        #[test]
        fn byte_level_round_trip(
            text in "(\\PC|\\s|<\\|a\\|>| the){0,40}",
            pre in prop::sample::select(vec![
                "gpt2", "smollm", "llama-bpe", "qwen2", "tekken", "gpt-4o",
                "deepseek-llm", "deepseek-coder", "falcon", "command-r",
            ]),
        ) {
            let t = tiny_byte_level(pre);
            let ids = t.encode_fast(text.as_str(), false).unwrap().get_ids().to_vec();
            prop_assert_eq!(t.decode(&ids, false).unwrap(), text);
        }
    }

    /// A user-defined token written outside the byte alphabet (GPT-NeoX's
    /// runs of spaces) is matched in the text as written, before the split.
    #[test]
    fn user_defined_tokens_match_as_written() {
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        tokens.push("  ".into());
        let mut token_types = vec![1; 256];
        token_types.push(USER_DEFINED);
        let t = build(&GgufTokenizerSpec {
            model: "gpt2".into(),
            tokens,
            token_types,
            ..Default::default()
        })
        .unwrap()
        .tokenizer;
        let ids = t.encode_fast("a  b", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, [u32::from(b'a'), 256, u32::from(b'b')]);
        assert_eq!(t.decode(&ids, false).unwrap(), "a  b");
    }

    #[test]
    fn control_tokens_match_whole_and_merges_apply() {
        let t = tiny_byte_level("gpt2");
        let ids = t
            .encode_fast("the<|a|> the", false)
            .unwrap()
            .get_ids()
            .to_vec();
        let pieces: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert_eq!(pieces, ["t", "he", "<|a|>", "Ġthe"]);
        assert_eq!(t.decode(&ids, true).unwrap(), "the the");
    }

    #[test]
    fn byte_alphabet_has_256_distinct_characters() {
        let table = byte_chars();
        let distinct: HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        assert!(table.iter().all(|c| byte_spelled(&c.to_string())));
        assert!(!byte_spelled("a b"));
    }

    #[test]
    fn tokens_outside_the_byte_alphabet_are_respelled() {
        let tokens = ["ab".into(), "a b".into(), "\n".into(), "  ".into()];
        let vocab = byte_level_vocab(&tokens, &[1, 1, 1, USER_DEFINED]);
        assert_eq!(vocab, ["ab", "aĠb", "Ċ", "  "]);
    }

    #[test]
    fn bad_specs_are_errors() {
        let base = GgufTokenizerSpec {
            model: "gpt2".into(),
            tokens: vec!["a".into(), "b".into()],
            merges: vec!["a b".into()],
            ..Default::default()
        };
        let check = |spec: GgufTokenizerSpec, want: &str| {
            let e = build(&spec).err().expect("an error").to_string();
            assert!(e.contains(want), "{e}");
        };
        check(
            GgufTokenizerSpec {
                model: "t5".into(),
                ..base.clone()
            },
            "`t5` is not supported",
        );
        check(
            GgufTokenizerSpec {
                tokens: vec![],
                ..base.clone()
            },
            "no tokenizer.ggml.tokens",
        );
        check(
            GgufTokenizerSpec {
                token_types: vec![1],
                ..base.clone()
            },
            "token_type has 1 entries",
        );
        check(
            GgufTokenizerSpec {
                eos_token_id: Some(9),
                ..base.clone()
            },
            "eos_token_id is 9",
        );
        check(
            GgufTokenizerSpec {
                merges: vec!["ab".into()],
                ..base.clone()
            },
            "`ab` is not `left right`",
        );
        check(
            GgufTokenizerSpec {
                merges: vec!["a c".into()],
                ..base.clone()
            },
            "byte-level BPE",
        );
        check(
            GgufTokenizerSpec {
                model: "llama".into(),
                merges: vec![],
                ..base.clone()
            },
            "needs tokenizer.ggml.scores",
        );
        check(
            GgufTokenizerSpec {
                model: "llama".into(),
                scores: Some(vec![0.0]),
                ..base
            },
            "scores has 1 entries",
        );
    }
}
