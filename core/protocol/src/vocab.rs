//! The vocabulary a GGUF file carries, as plain data passed from the GGUF
//! reader (`kiln-models`) to the tokenizer builder (`kiln-tokenizer`), which
//! do not depend on each other.

/// Tokenizer metadata of a GGUF file (`tokenizer.ggml.*` and
/// `tokenizer.chat_template`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE), `llama`
    /// (SentencePiece), `gemma4` or `bert` (WordPiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: selects the split regex of a `gpt2` vocabulary.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token strings by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte); empty when absent.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, each `"left right"`; empty when absent.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece), one per token.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.cls_token_id` (WordPiece: what starts an input).
    pub cls_token_id: Option<u32>,
    /// `tokenizer.ggml.seperator_token_id` (sic; WordPiece: what ends one).
    pub separator_token_id: Option<u32>,
    /// `tokenizer.ggml.normalizer.lowercase` (WordPiece).
    pub normalizer_lowercase: Option<bool>,
    /// `tokenizer.ggml.normalizer.strip_accents` (WordPiece; default: as
    /// lowercase).
    pub normalizer_strip_accents: Option<bool>,
    /// `tokenizer.ggml.add_bos_token`: prepend BOS when encoding with special
    /// tokens (default: true for `llama`, false for `gpt2`).
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`: append EOS (default false).
    pub add_eos_token: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: SentencePiece prefixes a `▁` to
    /// the text (default true).
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}
