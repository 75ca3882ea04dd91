//! # kiln-engine-api
//!
//! The narrow interface frontends hold: submit a request, stream its
//! [`TokenEvent`]s, abort it; plus tokenizer and chat-template access and the
//! engine's effective settings.
//!
//! [`EngineHandle`] wraps any [`EngineService`]: the real actor engine, or a
//! scripted stand-in in frontend tests. Dropping a [`RequestStream`] before
//! its request finished aborts the request, so a client that disconnects
//! frees its KV blocks at once.
//!
//! Depends on `kiln-protocol` only (plus channel and serde crates): frontends
//! that use it never see actors, devices, tokenizers or weights.
//!
//! ```
//! use kiln_engine_api::resolve_max_tokens;
//! assert_eq!(resolve_max_tokens(10, None, 100), Ok(90));
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kiln_protocol::{
    EngineError, EngineEvent, GenerateRequest, RequestId, StructuredOutput, TokenEvent, TokenId,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

mod embed;

pub use embed::{ASK_FOR_TRUNCATION, AdmittedEmbedding, EmbeddingFuture, EmbeddingReply};

/// The engine's effective settings and model facts, for `/info`-style routes and logs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineInfo {
    /// The primary served model name.
    pub model_id: String,
    /// Every name the model answers to (`--served-model-name`).
    pub served_model_names: Vec<String>,
    /// Where the weights came from (path or hub id).
    pub model_path: String,
    /// `architectures[0]` (e.g. `LlamaForCausalLM`).
    pub architecture: String,
    /// Model family (e.g. `llama`).
    pub family: String,
    /// Parameter count.
    pub num_parameters: u64,
    /// Parameters one token computes with: a mixture of experts uses k of
    /// its E experts per sparse layer; `num_parameters` for dense models.
    pub num_active_parameters: u64,
    /// Activation dtype (`float32`, `bfloat16`, ...).
    pub dtype: String,
    /// Weight quantization (e.g. `Q4_1`), `None` for plain float weights.
    pub quantization: Option<String>,
    /// Weight file format (`gguf` or `safetensors`).
    pub format: String,
    /// Served context length.
    pub max_model_len: u32,
    /// The model's native context length.
    pub native_context_length: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// KV blocks in the pool.
    pub num_kv_blocks: u32,
    /// Most sequences per step.
    pub max_num_seqs: u32,
    /// Token budget per step.
    pub max_num_batched_tokens: u32,
    /// Most requests allowed to wait.
    pub max_waiting_requests: u32,
    /// Whether automatic prefix caching is on.
    pub enable_prefix_caching: bool,
    /// Backend name (`cpu`, `cuda`).
    pub backend: String,
    /// Device description.
    pub device: String,
    /// Bytes of weights on the device.
    pub weights_bytes: u64,
    /// The checkpoint's weight bytes per storage format, most bytes first.
    pub weights_by_format: Vec<kiln_protocol::FormatBytes>,
    /// Bytes the KV-cache pool takes on the device (all its blocks).
    pub kv_cache_bytes: u64,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// The tokenizer's beginning-of-sequence token; `None` when it names none.
    pub bos_token_id: Option<TokenId>,
    /// Every id that ends generation: the tokenizer's EOS and those of
    /// `generation_config.json` and `config.json`.
    pub eos_token_ids: Vec<TokenId>,
    /// The chat template in use, if any.
    pub chat_template: Option<String>,
    /// Model metadata in GGUF key style (`llama.context_length`, ...), for Ollama's `/api/show`.
    pub model_info: BTreeMap<String, serde_json::Value>,
    /// How the model embeds; `None` when it does not.
    pub embedding: Option<kiln_protocol::EmbeddingSpec>,
    /// Kiln's version.
    pub version: String,
    /// Unix time the engine started.
    pub created: u64,
}

/// Current load, for health checks and 429 decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EngineLoad {
    /// Sequences running.
    pub running: u32,
    /// Requests waiting.
    pub waiting: u32,
    /// Fraction of KV blocks in use, 0..=1.
    pub kv_usage: f64,
}

/// Options of chat-template rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// Append the assistant-turn opener.
    pub add_generation_prompt: bool,
    /// Tool definitions, passed to the template as `tools`.
    pub tools: Option<serde_json::Value>,
    /// Extra template variables.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// A per-request template overriding the model's.
    pub template: Option<String>,
}

/// What an engine implementation provides to [`EngineHandle`].
pub trait EngineService: Send + Sync + 'static {
    /// Settings and model facts.
    fn info(&self) -> &EngineInfo;
    /// Tokenize text.
    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenId>, EngineError>;
    /// Decode token ids.
    fn detokenize(&self, ids: &[TokenId], skip_special_tokens: bool)
    -> Result<String, EngineError>;
    /// One token's own text (`None` for an id outside the vocabulary).
    fn token_text(&self, id: TokenId) -> Option<String>;
    /// Whether a token is special.
    fn is_special(&self, id: TokenId) -> bool;
    /// Render messages (JSON objects with at least `role` and `content`) with the chat template.
    fn apply_chat_template(
        &self,
        messages: &[serde_json::Value],
        options: &ChatOptions,
    ) -> Result<String, EngineError>;
    /// Check a structured-output constraint against the engine's limits and
    /// compile it (so that its sequences start without compiling); the
    /// error is an `InvalidRequest` naming the problem.
    fn check_structured(&self, spec: &StructuredOutput) -> Result<(), EngineError>;
    /// Queue a request whose prompt is already tokenized and checked; events go to `events`.
    fn enqueue(
        &self,
        request: AdmittedRequest,
        events: mpsc::UnboundedSender<TokenEvent>,
    ) -> Result<(), EngineError>;
    /// Queue an embedding whose input is tokenized and checked; the vector
    /// goes to `reply`.
    fn enqueue_embedding(
        &self,
        request: AdmittedEmbedding,
        reply: oneshot::Sender<EmbeddingReply>,
    ) -> Result<(), EngineError> {
        drop((request, reply));
        Err(EngineError::invalid(
            "model",
            format!(
                "the served model {} does not compute embeddings",
                self.info().model_id
            ),
        ))
    }
    /// Abort a request in any state (no-op if unknown or finished).
    fn abort(&self, id: RequestId);
    /// Engine events (metrics, logs).
    fn subscribe(&self) -> broadcast::Receiver<EngineEvent>;
    /// Current load.
    fn load(&self) -> EngineLoad;
    /// False once the engine stopped or failed.
    fn is_healthy(&self) -> bool;
    /// A fresh request id.
    fn next_request_id(&self) -> RequestId;
}

/// A request after validation and tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmittedRequest {
    /// Assigned at admission by `next_request_id`.
    pub id: RequestId,
    /// `[prompt_len]` token ids.
    pub prompt_token_ids: Vec<TokenId>,
    /// Resolved `max_tokens` (≥ 1; prompt + it ≤ max_model_len).
    pub max_tokens: u32,
    /// The original request (sampling and stopping parameters, tag).
    pub request: GenerateRequest,
}

/// A cheap, clonable handle to an engine.
#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<dyn EngineService>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("model", &self.info().model_id)
            .finish()
    }
}

impl EngineHandle {
    /// Wrap an engine implementation.
    pub fn new(service: Arc<dyn EngineService>) -> Self {
        EngineHandle { inner: service }
    }

    /// Settings and model facts.
    pub fn info(&self) -> &EngineInfo {
        self.inner.info()
    }

    /// Tokenize text.
    pub fn tokenize(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenId>, EngineError> {
        self.inner.tokenize(text, add_special_tokens)
    }

    /// Decode token ids.
    pub fn detokenize(
        &self,
        ids: &[TokenId],
        skip_special_tokens: bool,
    ) -> Result<String, EngineError> {
        self.inner.detokenize(ids, skip_special_tokens)
    }

    /// One token's own text.
    pub fn token_text(&self, id: TokenId) -> Option<String> {
        self.inner.token_text(id)
    }

    /// Whether a token is special.
    pub fn is_special(&self, id: TokenId) -> bool {
        self.inner.is_special(id)
    }

    /// Render a conversation with the chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[serde_json::Value],
        options: &ChatOptions,
    ) -> Result<String, EngineError> {
        self.inner.apply_chat_template(messages, options)
    }

    /// Engine events.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.subscribe()
    }

    /// Current load.
    pub fn load(&self) -> EngineLoad {
        self.inner.load()
    }

    /// False once the engine stopped or failed.
    pub fn is_healthy(&self) -> bool {
        self.inner.is_healthy()
    }

    /// Abort a request.
    pub fn abort(&self, id: RequestId) {
        self.inner.abort(id)
    }

    /// Validate, tokenize and queue a request. Errors here are the client's
    /// (bad parameters, prompt too long) or the server's (overloaded, engine down);
    /// nothing is queued when this fails.
    pub fn submit(&self, request: GenerateRequest) -> Result<RequestStream, EngineError> {
        let admitted = self.admit(request)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let id = admitted.id;
        let prompt_token_ids = admitted.prompt_token_ids.clone();
        let n = admitted.request.sampling.n;
        self.inner.enqueue(admitted, tx)?;
        Ok(RequestStream {
            id,
            prompt_token_ids,
            rx,
            engine: Some(self.inner.clone()),
            sequences_left: n,
        })
    }

    /// Check a structured-output constraint (see [`EngineService::check_structured`]).
    pub fn check_structured(&self, spec: &StructuredOutput) -> Result<(), EngineError> {
        self.inner.check_structured(spec)
    }

    /// Validate and tokenize without queueing (also used by `submit`).
    pub fn admit(&self, request: GenerateRequest) -> Result<AdmittedRequest, EngineError> {
        if let Some(spec) = &self.info().embedding
            && !spec.generates
        {
            return Err(EngineError::invalid(
                "model",
                format!(
                    "{} is an embedding model and cannot generate text; send its inputs to an \
                     embeddings route (/v1/embeddings, /api/embed or /embed)",
                    self.info().model_id
                ),
            ));
        }
        request.sampling.validate()?;
        request.stopping.validate()?;
        if !self.inner.is_healthy() {
            return Err(EngineError::EngineDead("the engine has stopped".into()));
        }
        if let Some(spec) = &request.sampling.structured {
            self.inner.check_structured(spec)?;
        }
        let info = self.inner.info();
        let prompt_token_ids = match &request.prompt {
            kiln_protocol::PromptInput::Text(text) => {
                self.inner.tokenize(text, request.add_special_tokens)?
            }
            kiln_protocol::PromptInput::TokenIds(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id >= info.vocab_size) {
                    return Err(EngineError::invalid(
                        "prompt",
                        format!(
                            "token id {bad} is outside the vocabulary (size {})",
                            info.vocab_size
                        ),
                    ));
                }
                ids.clone()
            }
        };
        if prompt_token_ids.is_empty() {
            return Err(EngineError::invalid("prompt", "the prompt is empty"));
        }
        let max_tokens = resolve_max_tokens(
            prompt_token_ids.len(),
            request.stopping.max_tokens,
            info.max_model_len,
        )?;
        if let Some(&bad) = request
            .sampling
            .logit_bias
            .iter()
            .map(|(id, _)| id)
            .find(|&&id| id >= info.vocab_size)
        {
            return Err(EngineError::invalid(
                "logit_bias",
                format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    info.vocab_size
                ),
            ));
        }
        Ok(AdmittedRequest {
            id: self.inner.next_request_id(),
            prompt_token_ids,
            max_tokens,
            request,
        })
    }
}

/// Resolve `max_tokens` against the context: `None` → what is left of the
/// context; a prompt that leaves no room, or a limit that overflows it, is an
/// error naming both numbers.
pub fn resolve_max_tokens(
    prompt_len: usize,
    max_tokens: Option<u32>,
    max_model_len: u32,
) -> Result<u32, EngineError> {
    let prompt = prompt_len as u64;
    let limit = u64::from(max_model_len);
    let err = |new: u32| EngineError::ContextLengthExceeded {
        prompt_tokens: prompt_len.min(u32::MAX as usize) as u32,
        max_new_tokens: new,
        max_model_len,
    };
    if prompt >= limit {
        return Err(err(max_tokens.unwrap_or(0)));
    }
    match max_tokens {
        None => Ok((limit - prompt) as u32),
        Some(m) if prompt + u64::from(m) > limit => Err(err(m)),
        Some(m) => Ok(m),
    }
}

/// The events of one request. Dropping it before the request finished aborts it.
pub struct RequestStream {
    id: RequestId,
    prompt_token_ids: Vec<TokenId>,
    rx: mpsc::UnboundedReceiver<TokenEvent>,
    engine: Option<Arc<dyn EngineService>>,
    sequences_left: u32,
}

impl std::fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream")
            .field("id", &self.id)
            .finish()
    }
}

impl RequestStream {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The prompt as tokenized.
    pub fn prompt_token_ids(&self) -> &[TokenId] {
        &self.prompt_token_ids
    }

    /// The next event; `None` after the last one.
    pub async fn next_event(&mut self) -> Option<TokenEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TokenEvent>> {
        if self.engine.is_none() {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => {
                match &ev {
                    TokenEvent::Finished(_) => {
                        self.sequences_left = self.sequences_left.saturating_sub(1);
                        if self.sequences_left == 0 {
                            self.engine = None;
                        }
                    }
                    TokenEvent::Failed { .. } => self.engine = None,
                    _ => {}
                }
                Poll::Ready(Some(ev))
            }
            Poll::Ready(None) => {
                // The engine dropped the sender without finishing: report it once.
                self.engine = None;
                Poll::Ready(Some(TokenEvent::Failed {
                    error: EngineError::EngineDead("the engine stopped while generating".into()),
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// True once every sequence finished (or the request failed).
    pub fn is_done(&self) -> bool {
        self.engine.is_none()
    }

    /// Abort now (also happens on drop if not done).
    pub fn abort(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.abort(self.id);
        }
    }
}

impl futures::Stream for RequestStream {
    type Item = TokenEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TokenEvent>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context() {
        assert_eq!(resolve_max_tokens(10, None, 100), Ok(90));
        assert_eq!(resolve_max_tokens(10, Some(90), 100), Ok(90));
    }

    #[test]
    fn overflowing_the_context_names_both_numbers() {
        let e = resolve_max_tokens(10, Some(91), 100).unwrap_err();
        assert_eq!(
            e,
            EngineError::ContextLengthExceeded {
                prompt_tokens: 10,
                max_new_tokens: 91,
                max_model_len: 100
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("100") && msg.contains("101") && msg.contains("10 in the prompt"),
            "{msg}"
        );
        assert!(resolve_max_tokens(100, None, 100).is_err());
        assert!(resolve_max_tokens(150, Some(1), 100).is_err());
    }
}
