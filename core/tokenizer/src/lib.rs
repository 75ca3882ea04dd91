//! # kiln-tokenizer
//!
//! One tokenizer type for every model Kiln loads, built on the `tokenizers`
//! crate: from a Hugging Face directory ([`Tokenizer::from_dir`]:
//! `tokenizer.json` plus `tokenizer_config.json`, `chat_template.jinja`,
//! `generation_config.json`, `config.json`) or from the vocabulary embedded
//! in a GGUF file ([`Tokenizer::from_gguf`]: `gpt2` byte-level BPE,
//! `llama` SentencePiece and `gemma4`), built so that token ids match the
//! model's own tokenizer and llama.cpp's test vectors. Chat templates
//! ([`ChatTemplate`]) render with minijinja and the helpers Hugging Face
//! templates use.
//!
//! Depends on `tokenizers`, `minijinja`, serde and `tracing`; never on the
//! engine, the models crate or any I/O beyond reading the files it is given.
//!
//! ```
//! use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};
//! let spec = GgufTokenizerSpec {
//!     model: "gpt2".into(),
//!     tokens: vec!["a".into(), "b".into(), "ab".into(), "<|end|>".into()],
//!     token_types: vec![1, 1, 1, 3],
//!     merges: vec!["a b".into()],
//!     eos_token_id: Some(3),
//!     ..Default::default()
//! };
//! let t = Tokenizer::from_gguf(spec).unwrap();
//! assert_eq!(t.encode("ab<|end|>", false).unwrap(), vec![2, 3]);
//! assert_eq!(t.decode(&[2, 3], true).unwrap(), "ab");
//! assert!(t.is_special(3));
//! ```

mod bytes;
pub mod chat;
mod dir;
mod gguf;
mod merges;
mod pre;
mod pyjson;
mod wordpiece;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use tokenizers::Tokenizer as HfTokenizer;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};

pub use bytes::SPECIAL_TOKEN_MARKER;
pub use chat::{ChatContext, ChatTemplate, ChatTemplateError};
pub use gguf::GgufTokenizerSpec;
pub use pre::known_pre_tokenizers;
pub use pyjson::{JsonStyle, python_float, python_json};

/// Tokenizer errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A file is missing, unreadable or malformed.
    #[error("cannot load {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer definition (GGUF metadata) is inconsistent.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// Encoding or decoding failed.
    #[error("{0}")]
    Codec(String),
    /// A chat template shipped with the model does not compile.
    #[error("the chat template in {origin} does not compile: {error}")]
    Template {
        /// Where the template came from (a file, or GGUF metadata).
        origin: String,
        /// The compile error.
        error: ChatTemplateError,
    },
}

/// A token the configuration names (BOS, EOS, UNK, PAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedToken {
    pub id: u32,
    pub text: String,
}

/// Everything a [`Tokenizer`] holds, shared between clones.
pub(crate) struct Shared {
    pub inner: HfTokenizer,
    pub special: HashSet<u32>,
    pub vocab_size: usize,
    pub bos: Option<NamedToken>,
    pub eos: Option<NamedToken>,
    pub unk: Option<NamedToken>,
    pub pad: Option<NamedToken>,
    pub eos_ids: Vec<u32>,
    pub model_max_length: Option<usize>,
    pub chat_template: Option<ChatTemplate>,
    pub named_templates: BTreeMap<String, ChatTemplate>,
}

/// A tokenizer with its special tokens and chat templates. Cheap to clone;
/// Send + Sync.
#[derive(Clone)]
pub struct Tokenizer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.shared.vocab_size)
            .field("bos", &self.shared.bos)
            .field("eos_ids", &self.shared.eos_ids)
            .finish()
    }
}

/// The post-processor that adds BOS before and EOS after a sequence when
/// encoding with special tokens (transformers' `add_bos_token` /
/// `add_eos_token`). Each is `(id, token)`; `None` adds nothing.
pub(crate) fn bos_eos_processor(
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
) -> Result<TemplateProcessing, TokenizerError> {
    let invalid = |e: String| TokenizerError::Invalid(format!("BOS/EOS post-processor: {e}"));
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut tokens = Vec::new();
    if let Some((id, text)) = bos {
        single.push("bos:0");
        pair.push("bos:1");
        tokens.push(
            SpecialToken::new("bos".into(), vec![id], vec![text])
                .map_err(|e| invalid(e.to_string()))?,
        );
    }
    single.push("$A:0");
    pair.push("$B:1");
    if let Some((id, text)) = eos {
        single.push("eos:0");
        pair.push("eos:1");
        tokens.push(
            SpecialToken::new("eos".into(), vec![id], vec![text])
                .map_err(|e| invalid(e.to_string()))?,
        );
    }
    let pair: Vec<&str> = single.iter().chain(pair.iter()).copied().collect();
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(invalid)?
        .try_pair(pair)
        .map_err(invalid)?
        .special_tokens(tokens)
        .build()
        .map_err(|e| invalid(e.to_string()))
}

impl Tokenizer {
    /// Load from a Hugging Face model directory: `tokenizer.json` (required),
    /// and when present `tokenizer_config.json` (special tokens as strings or
    /// AddedToken objects, `add_bos_token`, `add_eos_token`, `chat_template`
    /// as a string or a list of named templates, `model_max_length`),
    /// `chat_template.jinja` (wins over the config's template),
    /// `additional_chat_templates/*.jinja`, `generation_config.json` and
    /// `config.json` (more EOS ids; BOS/PAD ids when the config names none).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer {
            shared: Arc::new(dir::load(dir.as_ref())?),
        })
    }

    /// Build from the tokenizer metadata of a GGUF file, as transformers'
    /// GGUF loader does.
    pub fn from_gguf(spec: GgufTokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        let built = gguf::build(&spec)?;
        let chat_template = spec
            .chat_template
            .as_deref()
            .map(|src| {
                ChatTemplate::new(src).map_err(|error| TokenizerError::Template {
                    origin: "the GGUF metadata (tokenizer.chat_template)".into(),
                    error,
                })
            })
            .transpose()?;
        let named = |id: Option<u32>| {
            id.and_then(|id| {
                built
                    .tokenizer
                    .id_to_token(id)
                    .map(|text| NamedToken { id, text })
            })
        };
        Ok(Tokenizer {
            shared: Arc::new(Shared {
                special: built.special.clone(),
                vocab_size: spec.tokens.len(),
                bos: named(built.bos_token_id),
                eos: named(built.eos_token_id),
                unk: named(spec.unknown_token_id),
                pad: named(spec.padding_token_id),
                eos_ids: built.eos_token_id.into_iter().collect(),
                model_max_length: None,
                chat_template,
                named_templates: BTreeMap::new(),
                inner: built.tokenizer,
            }),
        })
    }

    /// Token ids of `text`. With `add_special_tokens`, BOS/EOS are added as
    /// the model's configuration says (as transformers' `add_special_tokens=True`);
    /// special tokens written in the text are recognised either way.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.shared
            .inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Codec(format!("cannot tokenize the text: {e}")))
    }

    /// Text of `ids`; special tokens are left out when `skip_special_tokens`.
    /// Ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.shared
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Codec(format!("cannot decode the token ids: {e}")))
    }

    /// The token string of `id` as the vocabulary spells it (`Ġ` for a
    /// byte-level space, `▁` for a SentencePiece one).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.shared.inner.id_to_token(id)
    }

    /// The id of a token string, spelled as the vocabulary spells it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.shared.inner.token_to_id(token)
    }

    /// Whether `id` is a special token (control tokens, BOS/EOS/UNK/PAD).
    pub fn is_special(&self, id: u32) -> bool {
        self.shared.special.contains(&id)
    }

    /// Number of token ids (the vocabulary including added tokens).
    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size
    }

    /// Id of the beginning-of-sequence token; `None` when the tokenizer names none.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.shared.bos.as_ref().map(|t| t.id)
    }

    /// BOS string.
    pub fn bos_token(&self) -> Option<&str> {
        self.shared.bos.as_ref().map(|t| t.text.as_str())
    }

    /// Every id that ends generation: the tokenizer's EOS first, then those
    /// of `generation_config.json` and `config.json`.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.shared.eos_ids.clone()
    }

    /// EOS string (the tokenizer's own EOS).
    pub fn eos_token(&self) -> Option<&str> {
        self.shared.eos.as_ref().map(|t| t.text.as_str())
    }

    /// Id of the padding token; `None` when the tokenizer names none.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.shared.pad.as_ref().map(|t| t.id)
    }

    /// Id that text outside the vocabulary maps to; `None` when the tokenizer
    /// names none.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.shared.unk.as_ref().map(|t| t.id)
    }

    /// `model_max_length` from `tokenizer_config.json`, in tokens (`None`
    /// when absent or transformers' "no limit" value).
    pub fn model_max_length(&self) -> Option<usize> {
        self.shared.model_max_length
    }

    /// The default chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.shared.chat_template.as_ref()
    }

    /// A named chat template (`tool_use`, `rag`...) from a list in
    /// `tokenizer_config.json` or `additional_chat_templates/`.
    pub fn named_chat_template(&self, name: &str) -> Option<&ChatTemplate> {
        self.shared.named_templates.get(name)
    }

    /// Names of the named chat templates.
    pub fn chat_template_names(&self) -> Vec<&str> {
        self.shared
            .named_templates
            .keys()
            .map(String::as_str)
            .collect()
    }

    /// Write the tokenizer as a `tokenizer.json` file (used when converting
    /// GGUF models to a Hugging Face directory).
    pub fn save_tokenizer_json(&self, path: &Path) -> Result<(), TokenizerError> {
        self.shared
            .inner
            .save(path, false)
            .map_err(|e| TokenizerError::File {
                path: path.display().to_string(),
                reason: format!("cannot write: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizers_are_send_sync_and_cheap_to_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn bos_eos_processor_adds_what_it_is_given() {
        let spec = GgufTokenizerSpec {
            model: "gpt2".into(),
            tokens: vec!["a".into(), "<s>".into(), "</s>".into()],
            token_types: vec![1, 3, 3],
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            add_bos_token: Some(true),
            add_eos_token: Some(true),
            ..Default::default()
        };
        let t = Tokenizer::from_gguf(spec.clone()).unwrap();
        assert_eq!(t.encode("aa", true).unwrap(), vec![1, 0, 0, 2]);
        assert_eq!(t.encode("aa", false).unwrap(), vec![0, 0]);
        // Like transformers, a BOS already in the text is kept and another added.
        assert_eq!(t.encode("<s>a", true).unwrap(), vec![1, 1, 0, 2]);
        let t = Tokenizer::from_gguf(GgufTokenizerSpec {
            add_bos_token: None,
            add_eos_token: None,
            ..spec
        })
        .unwrap();
        assert_eq!(t.encode("aa", true).unwrap(), vec![0, 0]);
    }
}
