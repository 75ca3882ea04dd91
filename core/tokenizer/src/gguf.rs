//! Building a `tokenizers::Tokenizer` from GGUF tokenizer metadata, the way
//! transformers' GGUF converters do.

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
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::TokenizerError;

/// Tokenizer metadata of a GGUF file (`tokenizer.ggml.*`), as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufTokenizerSpec {
    /// `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// Pre-tokenizer name (`tokenizer.ggml.pre`): selects the split regex.
    pub pre: Option<String>,
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// Token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Vec<i32>,
    /// BPE merges, `"left right"`.
    pub merges: Vec<String>,
    /// SentencePiece scores.
    pub scores: Option<Vec<f32>>,
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS id.
    pub eos_token_id: Option<u32>,
    /// Unknown-token id.
    pub unknown_token_id: Option<u32>,
    /// Padding id.
    pub padding_token_id: Option<u32>,
    /// Prepend BOS when encoding (default: true for `llama`, false for `gpt2`).
    pub add_bos_token: Option<bool>,
    /// Append EOS when encoding.
    pub add_eos_token: Option<bool>,
    /// Prefix a space before SentencePiece encoding (default true).
    pub add_space_prefix: Option<bool>,
    /// Chat template.
    pub chat_template: Option<String>,
}

pub(crate) struct Built {
    pub tokenizer: tokenizers::Tokenizer,
    pub special: HashSet<u32>,
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn invalid(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Invalid(e.to_string())
}

pub(crate) fn build(spec: &GgufTokenizerSpec) -> Result<Built, TokenizerError> {
    if spec.tokens.is_empty() {
        return Err(TokenizerError::Invalid(
            "the GGUF file has no tokenizer.ggml.tokens".into(),
        ));
    }
    if !spec.token_types.is_empty() && spec.token_types.len() != spec.tokens.len() {
        return Err(TokenizerError::Invalid(format!(
            "{} token types for {} tokens",
            spec.token_types.len(),
            spec.tokens.len()
        )));
    }
    let (mut tokenizer, extra_special) = match spec.model.as_str() {
        "gpt2" => (byte_level(spec)?, vec![]),
        "llama" => sentencepiece(spec)?,
        other => {
            return Err(TokenizerError::Invalid(format!(
                "GGUF tokenizer model `{other}` is not supported (supported: gpt2, llama)"
            )));
        }
    };
    let mut special = HashSet::new();
    let mut added = Vec::new();
    for (id, token) in spec.tokens.iter().enumerate() {
        let ty = spec.token_types.get(id).copied().unwrap_or(1);
        let is_special = ty == 3 || extra_special.contains(&(id as u32));
        if is_special || ty == 4 {
            added.push(AddedToken::from(token.clone(), is_special));
        }
        if is_special {
            special.insert(id as u32);
        }
    }
    tokenizer.add_special_tokens(added).map_err(invalid)?;
    Ok(Built { tokenizer, special })
}

fn vocab(spec: &GgufTokenizerSpec) -> tokenizers::models::bpe::Vocab {
    spec.tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn byte_level(spec: &GgufTokenizerSpec) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges: Vec<(String, String)> = spec
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Invalid(format!("merge `{m}` is not `left right`")))
        })
        .collect::<Result<_, _>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab(spec), merges)
        .build()
        .map_err(invalid)?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    let pre: PreTokenizerWrapper = match spec.pre.as_deref() {
        Some("llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe") => split_then_bytes(LLAMA3_SPLIT)?,
        Some("qwen2") => split_then_bytes(QWEN2_SPLIT)?,
        Some("gpt2" | "default" | "smollm") | None => ByteLevel::new(false, true, true).into(),
        Some(other) => {
            tracing::warn!(
                "GGUF pre-tokenizer `{other}` is not known; using the GPT-2 byte-level split"
            );
            ByteLevel::new(false, true, true).into()
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevel::new(true, true, true)));
    Ok(tokenizer)
}

fn split_then_bytes(pattern: &str) -> Result<PreTokenizerWrapper, TokenizerError> {
    let split = Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(invalid)?;
    Ok(PreSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])
    .into())
}

/// SentencePiece vocabularies: merges derived from the scores as transformers does.
fn sentencepiece(
    spec: &GgufTokenizerSpec,
) -> Result<(tokenizers::Tokenizer, Vec<u32>), TokenizerError> {
    let scores = spec.scores.as_ref().ok_or_else(|| {
        TokenizerError::Invalid("a `llama` GGUF tokenizer needs tokenizer.ggml.scores".into())
    })?;
    let vocab = vocab(spec);
    let mut merges: Vec<(String, String, f32)> = Vec::new();
    for (id, piece) in spec.tokens.iter().enumerate() {
        let mut local: Vec<(String, String, f32)> = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                local.push((
                    l.to_string(),
                    r.to_string(),
                    scores.get(id).copied().unwrap_or(0.0),
                ));
            }
        }
        local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let unk_id = spec.unknown_token_id.or_else(|| {
        spec.token_types
            .iter()
            .position(|&t| t == 2)
            .map(|i| i as u32)
    });
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges.into_iter().map(|(l, r, _)| (l, r)).collect())
        .fuse_unk(true)
        .byte_fallback(true);
    if let Some(unk) = unk_id.and_then(|i| spec.tokens.get(i as usize)) {
        builder = builder.unk_token(unk.clone());
    }
    let model = builder.build().map_err(invalid)?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    let add_prefix = spec.add_space_prefix.unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(invalid)?.into());
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(invalid)?;
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(invalid)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', usize::from(add_prefix), 0).into(),
    ];
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok((tokenizer, unk_id.into_iter().collect()))
}
