//! `/v1/chat/completions` responses: the JSON body and the SSE chunk encoder.
//! TGI-compatible extras are always present: a string `system_fingerprint`,
//! `logprobs` (null unless asked), `usage`, and the role in every delta.

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::{ApiError, Collected, Dialect};
use kiln_protocol::{GeneratedToken, TokenEvent};
use serde_json::{Value, json};

use crate::wire::{
    ResponseMeta, UsageCounts, chat_logprobs, finish_reason, stop_reason, usage_json,
};

/// Usage of one conversation.
pub fn usage_of(c: &Collected) -> UsageCounts {
    UsageCounts {
        prompt: c.prompt_token_ids.len() as u32,
        completion: c
            .sequences
            .iter()
            .map(|s| s.finished.usage.completion_tokens)
            .sum(),
        cached: c
            .sequences
            .first()
            .map_or(0, |s| s.finished.usage.cached_prompt_tokens),
    }
}

/// The non-streaming body.
pub fn chat_response(meta: &ResponseMeta, c: &Collected, top_logprobs: Option<u32>) -> Value {
    let choices: Vec<Value> = c
        .sequences
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "message": {"role": "assistant", "content": s.text, "refusal": null},
                "logprobs": top_logprobs.map_or(Value::Null, |k| chat_logprobs(&s.tokens, k)),
                "finish_reason": finish_reason(&s.finished),
                "stop_reason": stop_reason(&s.finished),
            })
        })
        .collect();
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": meta.system_fingerprint,
        "choices": choices,
        "usage": usage_json(usage_of(c)),
    })
}

/// Settings of a chat stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatStreamConfig {
    /// Shared fields.
    pub meta: ResponseMeta,
    /// Choices.
    pub n: u32,
    /// Alternatives per token when logprobs are on.
    pub top_logprobs: Option<u32>,
    /// Final usage chunk.
    pub include_usage: bool,
    /// Usage on every chunk.
    pub continuous_usage: bool,
    /// Prompt tokens.
    pub prompt_tokens: u32,
}

/// SSE chunks of `/v1/chat/completions`.
#[derive(Debug)]
pub struct ChatStream {
    config: ChatStreamConfig,
    completion_tokens: u32,
    failed: bool,
}

impl ChatStream {
    /// A new encoder.
    pub fn new(config: ChatStreamConfig) -> Self {
        ChatStream {
            config,
            completion_tokens: 0,
            failed: false,
        }
    }

    fn usage(&self) -> Value {
        usage_json(UsageCounts {
            prompt: self.config.prompt_tokens,
            completion: self.completion_tokens,
            cached: 0,
        })
    }

    fn chunk(&self, choices: Value) -> Frame {
        Frame::Json(self.chunk_value(choices))
    }

    fn chunk_value(&self, choices: Value) -> Value {
        let m = &self.config.meta;
        let mut v = json!({
            "id": m.id,
            "object": "chat.completion.chunk",
            "created": m.created,
            "model": m.model,
            "system_fingerprint": m.system_fingerprint,
            "choices": choices,
        });
        if self.config.continuous_usage {
            v["usage"] = self.usage();
        }
        v
    }

    fn token_chunk(&self, t: &GeneratedToken) -> Frame {
        let logprobs = self
            .config
            .top_logprobs
            .map_or(Value::Null, |k| chat_logprobs([t], k));
        self.chunk(json!([{
            "index": t.index,
            "delta": {"role": "assistant", "content": t.text},
            "logprobs": logprobs,
            "finish_reason": null,
        }]))
    }
}

impl EventEncoder for ChatStream {
    type Event = TokenEvent;

    fn start(&mut self, out: &mut Vec<Frame>) {
        for i in 0..self.config.n {
            out.push(self.chunk(json!([{
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }])));
        }
    }

    fn event(&mut self, event: TokenEvent, out: &mut Vec<Frame>) -> Flow {
        match event {
            TokenEvent::Token(t) => {
                self.completion_tokens += 1;
                if !t.text.is_empty() || self.config.top_logprobs.is_some() {
                    out.push(self.token_chunk(&t));
                }
            }
            TokenEvent::Finished(f) => {
                out.push(self.chunk(json!([{
                    "index": f.index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": finish_reason(&f),
                    "stop_reason": stop_reason(&f),
                }])));
            }
            TokenEvent::Failed { error } => {
                self.failed = true;
                out.push(Frame::Json(
                    ApiError::from_engine(Dialect::OpenAi, &error, 1).body(),
                ));
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.config.include_usage && !self.failed {
            let mut v = self.chunk_value(json!([]));
            v["usage"] = self.usage();
            out.push(Frame::Json(v));
        }
        out.push(Frame::Done);
    }
}
