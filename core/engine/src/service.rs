//! The actor engine behind an [`EngineHandle`](kiln_engine_api::EngineHandle).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::Addr;
use kiln_engine_api::{
    AdmittedEmbedding, AdmittedRequest, ChatOptions, EmbeddingReply, EngineInfo, EngineLoad,
    EngineService,
};
use kiln_protocol::{EngineError, EngineEvent, RequestId, StructuredOutput, TokenEvent, TokenId};
use kiln_structured::Grammars;
use kiln_tokenizer::{ChatContext, ChatTemplate, Tokenizer};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::actors::{Abort, SchedulerActor, Shared, Submit, SubmitEmbedding};

/// The running engine as seen through [`EngineService`].
pub struct ActorEngine {
    pub(crate) info: EngineInfo,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) chat_template: Option<ChatTemplate>,
    pub(crate) grammars: Arc<Grammars>,
    pub(crate) scheduler: Addr<SchedulerActor>,
    pub(crate) events: broadcast::Sender<EngineEvent>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_id: AtomicU64,
}

fn tokenizer_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::invalid("prompt", format!("tokenization failed: {e}"))
}

impl EngineService for ActorEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenId>, EngineError> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map_err(tokenizer_error)
    }

    fn detokenize(
        &self,
        ids: &[TokenId],
        skip_special_tokens: bool,
    ) -> Result<String, EngineError> {
        if let Some(bad) = ids.iter().find(|&&id| id >= self.info.vocab_size) {
            return Err(EngineError::invalid(
                "tokens",
                format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    self.info.vocab_size
                ),
            ));
        }
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::invalid("tokens", format!("detokenization failed: {e}")))
    }

    fn token_text(&self, id: TokenId) -> Option<String> {
        if id >= self.info.vocab_size {
            return None;
        }
        self.tokenizer.decode(&[id], false).ok()
    }

    fn is_special(&self, id: TokenId) -> bool {
        self.tokenizer.is_special(id)
    }

    fn apply_chat_template(
        &self,
        messages: &[serde_json::Value],
        options: &ChatOptions,
    ) -> Result<String, EngineError> {
        let custom;
        let template = match &options.template {
            Some(source) => {
                custom = ChatTemplate::new(source).map_err(|e| EngineError::invalid("chat_template", e.to_string()))?;
                &custom
            }
            None => self.chat_template.as_ref().ok_or_else(|| {
                EngineError::invalid(
                    "messages",
                    "this model has no chat template; pass one with --chat-template or use the completions API",
                )
            })?,
        };
        let ctx = ChatContext {
            messages: messages.to_vec(),
            add_generation_prompt: options.add_generation_prompt,
            tools: options.tools.clone(),
            extra: options.extra.clone(),
            bos_token: self.tokenizer.bos_token().map(str::to_string),
            eos_token: self.tokenizer.eos_token().map(str::to_string),
        };
        template
            .render(&ctx)
            .map_err(|e| EngineError::invalid("messages", e.to_string()))
    }

    fn check_structured(&self, spec: &StructuredOutput) -> Result<(), EngineError> {
        self.grammars
            .check(spec)
            .map_err(|e| EngineError::invalid(e.param, e.to_string()))
    }

    fn enqueue_embedding(
        &self,
        request: AdmittedEmbedding,
        reply: oneshot::Sender<EmbeddingReply>,
    ) -> Result<(), EngineError> {
        self.check_admission()?;
        self.scheduler.do_send(SubmitEmbedding { request, reply });
        Ok(())
    }

    fn enqueue(
        &self,
        request: AdmittedRequest,
        events: mpsc::UnboundedSender<TokenEvent>,
    ) -> Result<(), EngineError> {
        self.check_admission()?;
        // `do_send` ignores the mailbox bound: admission is bounded by `max_waiting_requests`.
        self.scheduler.do_send(Submit { request, events });
        Ok(())
    }

    fn abort(&self, id: RequestId) {
        self.scheduler.do_send(Abort(id));
    }

    fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    fn load(&self) -> EngineLoad {
        EngineLoad {
            running: self.shared.running.load(Ordering::Relaxed),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
            kv_usage: self.shared.kv_usage_ppm.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst) && self.scheduler.connected()
    }

    fn next_request_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl ActorEngine {
    /// Whether a new request may be queued now.
    fn check_admission(&self) -> Result<(), EngineError> {
        if !self.is_healthy() {
            return Err(EngineError::EngineDead("the engine has stopped".into()));
        }
        let waiting = self.shared.waiting.load(Ordering::Relaxed) as usize;
        let limit = self.info.max_waiting_requests as usize;
        if waiting >= limit {
            return Err(EngineError::Overloaded { waiting, limit });
        }
        if !self.scheduler.connected() {
            return Err(EngineError::EngineDead("the scheduler has stopped".into()));
        }
        Ok(())
    }
}
