use serde::{Deserialize, Serialize};

/// Everything that can go wrong with a request, in terms a frontend can map to
/// its own status codes and error shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or a parameter is out of range (HTTP 400/422).
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable explanation naming the offending parameter.
        message: String,
        /// The offending parameter, when there is one.
        param: Option<String>,
    },
    /// The prompt, or the prompt plus the requested new tokens, does not fit
    /// the model's context (HTTP 400). Never silently truncated.
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested {} tokens ({prompt_tokens} in the prompt, {max_new_tokens} for the completion). Please reduce the prompt or the completion length.",
        prompt_tokens + max_new_tokens
    )]
    ContextLengthExceeded {
        /// Length of the prompt after tokenization, special tokens included.
        prompt_tokens: u32,
        /// Tokens asked for the completion (0 when only the prompt is too long).
        max_new_tokens: u32,
        /// The model's context length as served (`--max-model-len`).
        max_model_len: u32,
    },
    /// Too many requests are waiting (HTTP 429).
    #[error(
        "the server is overloaded: {waiting} requests are waiting (limit {limit}); retry later"
    )]
    Overloaded {
        /// Requests currently waiting.
        waiting: usize,
        /// The configured bound (`--max-waiting-requests`).
        limit: usize,
    },
    /// The engine has stopped or is shutting down (HTTP 503).
    #[error("the engine is not running: {0}")]
    EngineDead(String),
    /// The backend failed while computing a step (HTTP 500).
    #[error("backend error: {0}")]
    Backend(String),
    /// Any other internal failure (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Shorthand for [`EngineError::InvalidRequest`] about one parameter.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        EngineError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// True when the fault lies with the request rather than the server.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidRequest { .. } | EngineError::ContextLengthExceeded { .. }
        )
    }
}
