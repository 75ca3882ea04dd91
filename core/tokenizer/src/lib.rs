//! # kiln-tokenizer
//!
//! One tokenizer type for every model Kiln loads, built on the `tokenizers`
//! crate: from a Hugging Face directory (`tokenizer.json` plus
//! `tokenizer_config.json`, `generation_config.json`, `chat_template.jinja`)
//! or from the vocabulary embedded in a GGUF file (`gpt2` byte-level BPE and
//! `llama` SentencePiece kinds), built the way transformers builds them so
//! that token ids match the reference. Chat templates live in [`chat`].
//!
//! Depends on `tokenizers`, `minijinja` and serde; never on the engine.
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
//! ```

pub mod chat;
mod gguf;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub use chat::{ChatContext, ChatTemplate, ChatTemplateError};
pub use gguf::GgufTokenizerSpec;

/// Tokenizer errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The tokenizer definition is invalid.
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    /// Encoding or decoding failed.
    #[error("{0}")]
    Codec(String),
    /// The chat template is broken.
    #[error(transparent)]
    Template(#[from] ChatTemplateError),
}

/// A tokenizer with its special tokens and chat template. Cheap to clone.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    special: Arc<HashSet<u32>>,
    bos: Option<(u32, String)>,
    eos: Vec<u32>,
    eos_token: Option<String>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| TokenizerError::File {
            path: path.display().to_string(),
            reason: format!("invalid JSON: {e}"),
        })
}

/// A token given as a string or as an AddedToken object (`{"content": ...}`).
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn id_list(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// A `chat_template` field: a string, or a list of `{name, template}` (the `default` one wins).
fn template_field(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let pick = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
                    .and_then(|t| t.get("template").and_then(|s| s.as_str()))
            };
            pick("default")
                .or_else(|| {
                    list.first()
                        .and_then(|t| t.get("template").and_then(|s| s.as_str()))
                })
                .map(str::to_string)
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Load from a Hugging Face model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(TokenizerError::File {
                path: path.display().to_string(),
                reason: "missing (Kiln needs a fast tokenizer, tokenizer.json)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or_default();
        let model_config = read_json(&dir.join("config.json"))?.unwrap_or_default();
        let jinja = dir.join("chat_template.jinja");
        let template_source = if jinja.exists() {
            Some(
                std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::File {
                    path: jinja.display().to_string(),
                    reason: e.to_string(),
                })?,
            )
        } else {
            template_field(config.get("chat_template"))
        };
        let chat_template = template_source
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        let bos_str = token_string(config.get("bos_token"));
        let bos_id = bos_str
            .as_deref()
            .and_then(|s| inner.token_to_id(s))
            .or_else(|| id_list(model_config.get("bos_token_id")).first().copied());
        let bos = bos_id.map(|id| {
            (
                id,
                bos_str
                    .clone()
                    .or_else(|| inner.id_to_token(id))
                    .unwrap_or_default(),
            )
        });
        let eos_str = token_string(config.get("eos_token"));
        let mut eos: Vec<u32> = eos_str
            .as_deref()
            .and_then(|s| inner.token_to_id(s))
            .into_iter()
            .collect();
        for id in id_list(generation.get("eos_token_id"))
            .into_iter()
            .chain(id_list(model_config.get("eos_token_id")))
        {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let eos_token = eos_str.or_else(|| eos.first().and_then(|&id| inner.id_to_token(id)));
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Ok(Tokenizer {
            inner: Arc::new(inner),
            special: Arc::new(special),
            bos,
            eos,
            eos_token,
            add_bos: config
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            add_eos: config
                .get("add_eos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            chat_template,
        })
    }

    /// Build from the vocabulary embedded in a GGUF file.
    pub fn from_gguf(spec: GgufTokenizerSpec) -> Result<Tokenizer, TokenizerError> {
        let built = gguf::build(&spec)?;
        let chat_template = spec
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        let name = |id: Option<u32>| id.and_then(|i| spec.tokens.get(i as usize).cloned());
        Ok(Tokenizer {
            inner: Arc::new(built.tokenizer),
            special: Arc::new(built.special),
            bos: spec.bos_token_id.zip(name(spec.bos_token_id)),
            eos: spec.eos_token_id.into_iter().collect(),
            eos_token: name(spec.eos_token_id),
            add_bos: spec.add_bos_token.unwrap_or(spec.model == "llama"),
            add_eos: spec.add_eos_token.unwrap_or(false),
            chat_template,
        })
    }

    /// Token ids of `text`; `add_special_tokens` adds BOS/EOS as the model's config says.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Codec(format!("cannot tokenize: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens {
            if self.add_bos
                && let Some((bos, _)) = self.bos
                && ids.first() != Some(&bos)
            {
                ids.insert(0, bos);
            }
            if self.add_eos
                && let Some(&eos) = self.eos.first()
            {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Text of `ids`; special tokens are left out when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Codec(format!("cannot decode: {e}")))
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// BOS id.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.0)
    }

    /// BOS string.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|b| b.1.as_str())
    }

    /// Every EOS id (tokenizer config, generation config, model config).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }

    /// EOS string.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Write the tokenizer as a `tokenizer.json` file (used when converting GGUF models).
    pub fn save_tokenizer_json(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner
            .save(path, false)
            .map_err(|e| TokenizerError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }
}
