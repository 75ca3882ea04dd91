//! The vocabulary a GGUF file carries (`tokenizer.*` keys), as plain data
//! for the tokenizer crate.

use super::GgufFile;
use super::value::GgufValue;
use crate::weights::WeightError;

/// Tokenizer metadata (`tokenizer.ggml.*` and `tokenizer.chat_template`).
pub use kiln_protocol::GgufTokenizerSpec;

impl GgufFile {
    fn wrong_type(&self, key: &str, want: &str) -> WeightError {
        self.error(format!(
            "metadata `{key}` should be {want}, found {}",
            self.metadata(key).map_or("nothing".to_string(), describe)
        ))
    }

    /// An optional array whose every element converts with `f`.
    fn typed_array<T>(
        &self,
        key: &str,
        want: &str,
        f: impl Fn(&GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>, WeightError> {
        let Some(value) = self.metadata(key) else {
            return Ok(None);
        };
        let items = value.as_array().ok_or_else(|| self.wrong_type(key, want))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                f(v).ok_or_else(|| {
                    self.error(format!(
                        "metadata `{key}` should be {want}, but element {i} is {}",
                        describe(v)
                    ))
                })
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// A token id; a negative integer (some converters write -1) means none.
    fn optional_id(&self, key: &str) -> Result<Option<u32>, WeightError> {
        let Some(v) = self.metadata(key) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(x) if x < 0 => Ok(None),
            _ => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a token id")),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, WeightError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a bool")),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, WeightError> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.wrong_type(key, "a string")),
        }
    }

    /// The tokenizer the file carries. Errors when there is none
    /// (`tokenizer.ggml.model` or `tokenizer.ggml.tokens` missing) or a key
    /// has the wrong type; array lengths are checked against the vocabulary.
    pub fn tokenizer_metadata(&self) -> Result<GgufTokenizerSpec, WeightError> {
        let model = self.optional_string("tokenizer.ggml.model")?.ok_or_else(|| {
            self.error("the file has no tokenizer (`tokenizer.ggml.model` is missing); pass a tokenizer.json directory instead")
        })?;
        let string = |v: &GgufValue| v.as_str().map(str::to_string);
        let tokens = self
            .typed_array("tokenizer.ggml.tokens", "an array of strings", string)?
            .ok_or_else(|| {
                self.error("the file has no vocabulary (`tokenizer.ggml.tokens` is missing)")
            })?;
        let token_types = self
            .typed_array("tokenizer.ggml.token_type", "an array of integers", |v| {
                v.as_i64().and_then(|x| i32::try_from(x).ok())
            })?
            .unwrap_or_default();
        let scores = self.typed_array("tokenizer.ggml.scores", "an array of floats", |v| {
            v.as_f64().map(|x| x as f32)
        })?;
        self.check_vocab_len("tokenizer.ggml.token_type", token_types.len(), tokens.len())?;
        if let Some(s) = &scores {
            self.check_vocab_len("tokenizer.ggml.scores", s.len(), tokens.len())?;
        }
        Ok(GgufTokenizerSpec {
            model,
            pre: self.optional_string("tokenizer.ggml.pre")?,
            merges: self
                .typed_array("tokenizer.ggml.merges", "an array of strings", string)?
                .unwrap_or_default(),
            tokens,
            token_types,
            scores,
            bos_token_id: self.optional_id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: self.optional_id("tokenizer.ggml.eos_token_id")?,
            unknown_token_id: self.optional_id("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: self.optional_id("tokenizer.ggml.padding_token_id")?,
            cls_token_id: self.optional_id("tokenizer.ggml.cls_token_id")?,
            separator_token_id: self.optional_id("tokenizer.ggml.seperator_token_id")?,
            normalizer_lowercase: self.optional_bool("tokenizer.ggml.normalizer.lowercase")?,
            normalizer_strip_accents: self
                .optional_bool("tokenizer.ggml.normalizer.strip_accents")?,
            add_bos_token: self.optional_bool("tokenizer.ggml.add_bos_token")?,
            add_eos_token: self.optional_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: self.optional_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: self.optional_string("tokenizer.chat_template")?,
        })
    }

    fn check_vocab_len(&self, key: &str, len: usize, vocab: usize) -> Result<(), WeightError> {
        if len == 0 || len == vocab {
            Ok(())
        } else {
            Err(self.error(format!(
                "metadata `{key}` has {len} entries but the vocabulary has {vocab} tokens"
            )))
        }
    }
}

/// A short description of a value for messages (`u32 7`, `array of 3`).
fn describe(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        GgufValue::String(s) => format!("the string {s:?}"),
        GgufValue::Array(a) => format!("an array of {} elements", a.len()),
        other => format!(
            "{} {}",
            GgufValue::type_name(other.type_id()),
            match other {
                GgufValue::Bool(b) => b.to_string(),
                _ => other.as_f64().map(|x| x.to_string()).unwrap_or_default(),
            }
        ),
    }
}
