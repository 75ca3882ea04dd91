//! Ollama request bodies. Unknown fields are ignored; a body that is not a
//! JSON object is refused (serde would otherwise read an array positionally).

use axum::http::StatusCode;
use kiln_http::{ApiError, Dialect};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Reads a parsed body into `T`: a JSON object, or a 400 in Ollama's shape.
pub fn from_body<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    let kind = match &value {
        Value::Object(_) => return kiln_http::body::from_value(Dialect::Ollama, value),
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(ApiError::new(
        Dialect::Ollama,
        StatusCode::BAD_REQUEST,
        format!("invalid request: the body must be a JSON object, got {kind}"),
    ))
}

/// `POST /api/generate`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerateIn {
    /// Model name (`name` or `name:latest`).
    pub model: Option<String>,
    /// The prompt; empty just "loads" the model.
    pub prompt: Option<String>,
    /// Fill-in-the-middle suffix (not supported).
    pub suffix: Option<String>,
    /// System prompt for the template.
    pub system: Option<String>,
    /// A prompt template overriding the model's (`{{ .System }}`, `{{ .Prompt }}`).
    pub template: Option<String>,
    /// Token ids of an earlier exchange, prepended to the prompt.
    pub context: Option<Vec<u32>>,
    /// Stream NDJSON (default true).
    pub stream: Option<bool>,
    /// Use the prompt as is, without any template.
    pub raw: Option<bool>,
    /// `"json"` or a JSON schema (not supported).
    pub format: Option<Value>,
    /// How long to keep the model loaded (seconds or a duration such as `5m`).
    pub keep_alive: Option<Value>,
    /// Base64 images (not supported).
    pub images: Option<Vec<String>>,
    /// Model options (`num_predict`, `temperature`, ...).
    pub options: Option<Map<String, Value>>,
    /// Thinking mode (not supported when on).
    pub think: Option<Value>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// Alternatives per token (0..=20).
    pub top_logprobs: Option<u32>,
}

/// One chat message.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageIn {
    /// `system`, `user`, `assistant` or `tool` (any case).
    pub role: String,
    /// The text.
    pub content: Option<String>,
    /// Base64 images (not supported).
    pub images: Option<Vec<String>>,
    /// Tool calls of an assistant message (passed to the template).
    pub tool_calls: Option<Value>,
    /// Name of the tool a `tool` message answers for.
    pub tool_name: Option<String>,
}

/// `POST /api/chat`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatIn {
    /// Model name.
    pub model: Option<String>,
    /// The conversation; empty just "loads" the model.
    pub messages: Option<Vec<MessageIn>>,
    /// Stream NDJSON (default true).
    pub stream: Option<bool>,
    /// `"json"` or a JSON schema (not supported).
    pub format: Option<Value>,
    /// How long to keep the model loaded.
    pub keep_alive: Option<Value>,
    /// Function tools the model may call (passed to the chat template).
    pub tools: Option<Vec<Value>>,
    /// Model options.
    pub options: Option<Map<String, Value>>,
    /// Thinking mode (not supported when on).
    pub think: Option<Value>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// Alternatives per token (0..=20).
    pub top_logprobs: Option<u32>,
}

/// `POST /api/show`: only the model matters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ModelIn {
    /// Model name.
    pub model: Option<String>,
    /// Legacy alias of `model`.
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_must_be_objects() {
        let e = from_body::<GenerateIn>(json!(["m", "hi"])).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (
                400,
                "invalid request: the body must be a JSON object, got an array"
            )
        );
        assert!(from_body::<ChatIn>(json!(null)).is_err());
        let ok: GenerateIn = from_body(json!({"model": "m", "extra": 1})).unwrap();
        assert_eq!(ok.model.as_deref(), Some("m"));
    }
}
