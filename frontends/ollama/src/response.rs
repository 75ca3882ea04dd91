//! Ollama response objects and the NDJSON stream encoder.

use std::sync::Arc;
use std::time::Duration;

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::time::rfc3339_nano;
use kiln_http::tool_calls::ToolCallParser;
use kiln_http::{ApiError, Clock, Dialect, Timings};
use kiln_protocol::{FinishReason, Finished, GeneratedToken, TokenEvent, TokenId};
use serde_json::{Value, json};

use crate::tools::chat_message;

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/api/generate`: text in `response`, `context` on the final object.
    Generate,
    /// `/api/chat`: text in `message`.
    Chat,
}

/// `done_reason` for a finished sequence (`None`: aborted or failed).
pub fn done_reason(f: &Finished) -> Option<&'static str> {
    match f.reason {
        FinishReason::Stop => Some("stop"),
        FinishReason::Length => Some("length"),
        FinishReason::Abort | FinishReason::Error => None,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One logprob entry (`token`, `logprob`, `bytes`, `top_logprobs`).
pub fn logprob_json(t: &GeneratedToken, top: u32) -> Value {
    let top_logprobs: Vec<Value> = t
        .top_logprobs
        .iter()
        .take(top as usize)
        .map(|a| json!({"token": a.text, "logprob": a.logprob, "bytes": a.text.as_bytes()}))
        .collect();
    json!({"token": t.piece, "logprob": t.logprob, "bytes": t.piece.as_bytes(), "top_logprobs": top_logprobs})
}

/// What every object of one request shares.
#[derive(Clone)]
pub struct ResponseContext {
    /// Model name as requested.
    pub model: String,
    /// Endpoint.
    pub kind: Kind,
    /// Clock for `created_at` and durations.
    pub clock: Arc<dyn Clock>,
    /// The prompt as tokenized (for `context`).
    pub prompt_token_ids: Vec<TokenId>,
    /// Alternatives per token when logprobs are on.
    pub logprobs: Option<u32>,
    /// Set when tools were sent: chat text is searched for calls, and
    /// streamed text is held back until the end.
    pub tool_parser: Option<ToolCallParser>,
}

impl ResponseContext {
    fn base(&self, text: &str) -> Value {
        let mut v =
            json!({"model": self.model, "created_at": rfc3339_nano(self.clock.since_epoch())});
        match self.kind {
            Kind::Generate => v["response"] = json!(text),
            Kind::Chat => v["message"] = json!({"role": "assistant", "content": text}),
        }
        v
    }

    /// A streamed piece of output.
    pub fn chunk(&self, t: &GeneratedToken) -> Value {
        let mut v = self.base(&t.text);
        v["done"] = json!(false);
        if let Some(k) = self.logprobs {
            v["logprobs"] = json!([logprob_json(t, k)]);
        }
        v
    }

    /// The final object: `done`, `done_reason`, `context` (generate) and the
    /// metrics in nanoseconds; `text` is the whole output when not streaming.
    pub fn final_object(
        &self,
        text: &str,
        f: &Finished,
        t: &Timings,
        generated: &[TokenId],
    ) -> Value {
        let mut v = self.base(text);
        if self.kind == Kind::Chat {
            v["message"] = chat_message(self.tool_parser, text);
        }
        v["done"] = json!(true);
        v["done_reason"] = json!(done_reason(f).unwrap_or("stop"));
        if self.kind == Kind::Generate {
            let context: Vec<TokenId> = self
                .prompt_token_ids
                .iter()
                .chain(generated)
                .copied()
                .collect();
            v["context"] = json!(context);
        }
        v["total_duration"] = json!(nanos(t.total_duration()));
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(f.usage.prompt_tokens);
        v["prompt_eval_duration"] = json!(nanos(t.prompt_duration()));
        v["eval_count"] = json!(f.usage.completion_tokens);
        v["eval_duration"] = json!(nanos(t.generation_duration()));
        v
    }
}

/// The answer to an empty prompt or conversation: `done_reason` `load` (or
/// `unload` with `keep_alive: 0`), no generation.
pub fn load_response(model: &str, kind: Kind, created_at: &str, done_reason: &str) -> Value {
    let mut v = json!({"model": model, "created_at": created_at});
    match kind {
        Kind::Generate => v["response"] = json!(""),
        Kind::Chat => v["message"] = json!({"role": "assistant", "content": ""}),
    }
    v["done"] = json!(true);
    v["done_reason"] = json!(done_reason);
    v
}

/// An error for a sequence that ended without a result.
pub fn aborted(f: &Finished) -> ApiError {
    ApiError::new(
        Dialect::Ollama,
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("generation ended early: {}", f.reason.as_str()),
    )
}

/// NDJSON lines of a streaming generate or chat.
pub struct OllamaStream {
    ctx: ResponseContext,
    timings: Timings,
    generated: Vec<TokenId>,
    done: bool,
    held_text: String,
    sent: usize,
}

impl OllamaStream {
    /// A new encoder; timing starts now.
    pub fn new(ctx: ResponseContext) -> Self {
        let timings = Timings {
            submitted: ctx.clock.since_epoch(),
            ..Default::default()
        };
        OllamaStream {
            ctx,
            timings,
            generated: Vec::new(),
            done: false,
            held_text: String::new(),
            sent: 0,
        }
    }

    /// The message for what was held back at the end: the calls (with any
    /// prose before them not yet sent), or the unsent text.
    fn release_held_text(&self) -> Option<Value> {
        let parser = self.ctx.tool_parser?;
        let mut message = chat_message(Some(parser), &self.held_text);
        let unsent_end = if message.get("tool_calls").is_some() {
            parser.streamable_prefix_len(&self.held_text).max(self.sent)
        } else {
            self.held_text.len()
        };
        let unsent = &self.held_text[self.sent..unsent_end];
        if message.get("tool_calls").is_none() && unsent.is_empty() {
            return None;
        }
        message["content"] = json!(unsent.trim());
        Some(message)
    }

    fn fail(&mut self, e: ApiError, out: &mut Vec<Frame>) -> Flow {
        self.done = true;
        out.push(Frame::Json(e.body()));
        Flow::Stop
    }
}

impl EventEncoder for OllamaStream {
    type Event = TokenEvent;

    fn event(&mut self, event: TokenEvent, out: &mut Vec<Frame>) -> Flow {
        match event {
            // Ollama has no prompt log-probabilities.
            TokenEvent::Prompt(_) => Flow::Continue,
            TokenEvent::Token(t) => {
                let now = self.ctx.clock.since_epoch();
                self.timings.first_token.get_or_insert(now);
                self.timings.last_token = Some(now);
                self.generated.push(t.id);
                if let Some(parser) = self.ctx.tool_parser {
                    self.held_text.push_str(&t.text);
                    let safe = parser.streamable_prefix_len(&self.held_text);
                    if safe > self.sent {
                        let piece = &self.held_text[self.sent..safe];
                        let mut v = self.ctx.base(piece);
                        v["done"] = json!(false);
                        out.push(Frame::Json(v));
                        self.sent = safe;
                    }
                } else if !t.text.is_empty() || self.ctx.logprobs.is_some() {
                    out.push(Frame::Json(self.ctx.chunk(&t)));
                }
                Flow::Continue
            }
            TokenEvent::Finished(f) => {
                if done_reason(&f).is_none() {
                    return self.fail(aborted(&f), out);
                }
                self.timings.finished = self.ctx.clock.since_epoch();
                self.done = true;
                if let Some(message) = self.release_held_text() {
                    let mut held = self.ctx.base("");
                    held["message"] = message;
                    held["done"] = json!(false);
                    out.push(Frame::Json(held));
                }
                out.push(Frame::Json(self.ctx.final_object(
                    "",
                    &f,
                    &self.timings,
                    &self.generated,
                )));
                Flow::Stop
            }
            TokenEvent::Failed { error } => {
                let e = ApiError::from_engine(Dialect::Ollama, &error, 1);
                self.fail(e, out)
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if !self.done {
            let e = ApiError::new(
                Dialect::Ollama,
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the generation ended without a final response",
            );
            out.push(Frame::Json(e.body()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_http::FixedClock;
    use kiln_http::stream::encode_all;
    use kiln_protocol::{StopReason, Usage};

    fn ctx(kind: Kind) -> ResponseContext {
        ResponseContext {
            model: "m".into(),
            kind,
            clock: Arc::new(FixedClock(Duration::new(1_700_000_000, 5))),
            prompt_token_ids: vec![1, 2],
            logprobs: None,
            tool_parser: None,
        }
    }

    fn tok(id: u32, text: &str) -> TokenEvent {
        TokenEvent::Token(GeneratedToken {
            index: 0,
            id,
            text: text.into(),
            piece: text.into(),
            special: false,
            logprob: None,
            top_logprobs: vec![],
        })
    }

    fn fin() -> TokenEvent {
        TokenEvent::Finished(Finished {
            index: 0,
            reason: FinishReason::Stop,
            stop_reason: Some(StopReason::Eos(3)),
            usage: Usage {
                prompt_tokens: 2,
                completion_tokens: 2,
                cached_prompt_tokens: 0,
            },
        })
    }

    #[test]
    fn generate_stream_ends_with_context_and_metrics() {
        let frames = encode_all(
            OllamaStream::new(ctx(Kind::Generate)),
            [tok(7, "a"), tok(3, ""), fin()],
        );
        assert_eq!(frames.len(), 2, "empty pieces are not sent");
        let Frame::Json(first) = &frames[0] else {
            panic!()
        };
        assert_eq!(
            first,
            &json!({"model":"m","created_at":"2023-11-14T22:13:20.000000005Z","response":"a","done":false})
        );
        let Frame::Json(last) = &frames[1] else {
            panic!()
        };
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["context"], json!([1, 2, 7, 3]));
        assert_eq!(last["eval_count"], 2);
        assert_eq!(last["total_duration"], 0);
    }

    #[test]
    fn chat_chunks_carry_a_message() {
        let frames = encode_all(OllamaStream::new(ctx(Kind::Chat)), [tok(7, "a"), fin()]);
        let Frame::Json(first) = &frames[0] else {
            panic!()
        };
        assert_eq!(
            first["message"],
            json!({"role": "assistant", "content": "a"})
        );
        let Frame::Json(last) = &frames[1] else {
            panic!()
        };
        assert!(last.get("context").is_none());
    }

    #[test]
    fn failures_are_error_lines() {
        let failed = TokenEvent::Failed {
            error: kiln_protocol::EngineError::Backend("x".into()),
        };
        let frames = encode_all(OllamaStream::new(ctx(Kind::Chat)), [tok(7, "a"), failed]);
        let Frame::Json(last) = frames.last().unwrap() else {
            panic!()
        };
        assert_eq!(last, &json!({"error": "backend error: x"}));
    }
}
