//! Embedding requests: checked and tokenized here, queued on the engine,
//! answered once with the pooled vector.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kiln_protocol::{EmbedRequest, Embedding, EngineError, PromptInput, RequestId, TokenId};
use tokio::sync::oneshot;

use crate::{EngineHandle, EngineService};

/// How an over-long input's error names the fix; routes replace it with
/// their own parameter (`"truncate": true`).
pub const ASK_FOR_TRUNCATION: &str = "ask for truncation";

/// What the engine sends back for one embedding.
pub type EmbeddingReply = Result<Embedding, EngineError>;

/// An embedding input after tokenization and truncation.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmittedEmbedding {
    /// Assigned at admission by `next_request_id`.
    pub id: RequestId,
    /// `[tokens]` the model runs on, all in one step.
    pub prompt_token_ids: Vec<TokenId>,
}

impl EngineHandle {
    /// Check, tokenize and queue one input to embed. Errors are the
    /// client's (empty input, too long without truncation, a model that
    /// does not embed) or the server's; nothing is queued when this fails.
    pub fn embed(&self, request: EmbedRequest) -> Result<EmbeddingFuture, EngineError> {
        let admitted = self.admit_embedding(request)?;
        let (tx, rx) = oneshot::channel();
        let id = admitted.id;
        self.inner.enqueue_embedding(admitted, tx)?;
        Ok(EmbeddingFuture {
            id,
            rx,
            engine: Some(self.inner.clone()),
        })
    }

    /// Tokenize and check an input without queueing it.
    pub fn admit_embedding(&self, request: EmbedRequest) -> Result<AdmittedEmbedding, EngineError> {
        let info = self.info();
        if info.embedding.is_none() {
            return Err(EngineError::invalid(
                "model",
                format!(
                    "the served model {} does not compute embeddings",
                    info.model_id
                ),
            ));
        }
        if !self.inner.is_healthy() {
            return Err(EngineError::EngineDead("the engine has stopped".into()));
        }
        let empty = || {
            EngineError::invalid(
                "input",
                "the input is empty; send at least one character or token",
            )
        };
        let mut ids = match &request.input {
            PromptInput::Text(text) if text.is_empty() => return Err(empty()),
            PromptInput::Text(text) => self.inner.tokenize(text, true)?,
            PromptInput::TokenIds(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id >= info.vocab_size) {
                    return Err(EngineError::invalid(
                        "input",
                        format!(
                            "token id {bad} is outside the vocabulary (size {})",
                            info.vocab_size
                        ),
                    ));
                }
                ids.clone()
            }
        };
        if ids.is_empty() {
            return Err(empty());
        }
        // An embedding runs whole in one step.
        let limit = (info.max_model_len as usize).min(info.max_num_batched_tokens as usize);
        if ids.len() > limit {
            if !request.truncate {
                return Err(EngineError::invalid(
                    "input",
                    format!(
                        "the input has {} tokens but this model embeds at most {limit}; shorten \
                         it or {ASK_FOR_TRUNCATION}",
                        ids.len()
                    ),
                ));
            }
            truncate(&mut ids, limit, |id| self.inner.is_special(id));
        }
        Ok(AdmittedEmbedding {
            id: self.inner.next_request_id(),
            prompt_token_ids: ids,
        })
    }
}

/// Keep the first `limit` tokens; a closing special token (BERT's `[SEP]`)
/// stays last, as the model's tokenizer truncates.
fn truncate(ids: &mut Vec<TokenId>, limit: usize, is_special: impl Fn(TokenId) -> bool) {
    let last = *ids.last().expect("a non-empty input");
    ids.truncate(limit);
    if limit > 1 && is_special(last) {
        ids[limit - 1] = last;
    }
}

/// The vector of one queued input. Dropping it before it resolved aborts
/// the request.
pub struct EmbeddingFuture {
    id: RequestId,
    rx: oneshot::Receiver<EmbeddingReply>,
    engine: Option<Arc<dyn EngineService>>,
}

impl std::fmt::Debug for EmbeddingFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingFuture")
            .field("id", &self.id)
            .finish()
    }
}

impl Future for EmbeddingFuture {
    type Output = EmbeddingReply;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EmbeddingReply> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(reply) => {
                self.engine = None;
                Poll::Ready(reply.unwrap_or_else(|_| {
                    Err(EngineError::EngineDead(
                        "the engine stopped while embedding".into(),
                    ))
                }))
            }
        }
    }
}

impl Drop for EmbeddingFuture {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.abort(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_keeps_a_closing_special_token() {
        let mut ids = vec![101, 5, 6, 7, 102];
        truncate(&mut ids, 3, |id| id >= 100);
        assert_eq!(ids, vec![101, 5, 102]);
        let mut ids = vec![1, 5, 6, 7];
        truncate(&mut ids, 2, |id| id >= 100);
        assert_eq!(ids, vec![1, 5]);
    }
}
