//! `/v1/chat/completions` responses: the JSON body and the SSE chunk encoder.
//! TGI-compatible extras are always present: a string `system_fingerprint`,
//! `logprobs` (null unless asked), `usage`, and the role in every delta.

use std::collections::BTreeMap;

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::{ApiError, Collected, Dialect};
use kiln_protocol::{GeneratedToken, TokenEvent};
use serde_json::{Value, json};

use crate::tools::ToolResponder;
use crate::wire::{
    ResponseMeta, UsageCounts, chat_logprobs, finish_reason, stop_reason, usage_json,
    vllm_prompt_logprobs,
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

/// `finish_reason` of a choice: `tool_calls` when the model called tools.
fn choice_finish_reason(f: &kiln_protocol::Finished, called_tools: bool) -> &'static str {
    if called_tools {
        "tool_calls"
    } else {
        finish_reason(f)
    }
}

/// The non-streaming body.
pub fn chat_response(
    meta: &ResponseMeta,
    c: &Collected,
    top_logprobs: Option<u32>,
    tools: &ToolResponder,
) -> Value {
    let choices: Vec<Value> = c
        .sequences
        .iter()
        .map(|s| {
            let m = tools.message(s.index, &s.text);
            let mut message = json!({"role": "assistant", "content": m.content, "refusal": null});
            if !m.tool_calls.is_empty() {
                message["tool_calls"] = json!(m.tool_calls);
            }
            json!({
                "index": s.index,
                "message": message,
                "logprobs": top_logprobs.map_or(Value::Null, |k| chat_logprobs(&s.tokens, k)),
                "finish_reason": choice_finish_reason(&s.finished, !m.tool_calls.is_empty()),
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
        "prompt_logprobs": c.prompt_logprobs.as_deref().map_or(Value::Null, vllm_prompt_logprobs),
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
    /// For `usage.prompt_tokens` in chunks and the final body.
    pub prompt_tokens: u32,
    /// Tool calls; when on, each choice's text is held back until it
    /// finishes and then sent as content or as `delta.tool_calls`.
    pub tools: ToolResponder,
}

/// SSE chunks of `/v1/chat/completions`.
#[derive(Debug)]
pub struct ChatStream {
    config: ChatStreamConfig,
    completion_tokens: u32,
    failed: bool,
    held: BTreeMap<u32, HeldText>,
}

/// A choice's output so far while tools are on, and how much of it went
/// out as content.
#[derive(Debug, Default)]
struct HeldText {
    text: String,
    sent: usize,
}

impl ChatStream {
    /// A new encoder.
    pub fn new(config: ChatStreamConfig) -> Self {
        ChatStream {
            config,
            completion_tokens: 0,
            failed: false,
            held: BTreeMap::new(),
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

impl ChatStream {
    /// Takes a token while tools are on: sends the content that can no
    /// longer turn into a call, holds the rest.
    fn hold(&mut self, choice: u32, piece: &str, out: &mut Vec<Frame>) {
        let held = self.held.entry(choice).or_default();
        held.text.push_str(piece);
        let safe = self
            .config
            .tools
            .extraction
            .streamable_prefix_len(&held.text);
        if safe > held.sent {
            let content = held.text[held.sent..safe].to_string();
            held.sent = safe;
            out.push(self.delta_chunk(choice, json!({"role": "assistant", "content": content})));
        }
    }

    /// Sends the held rest of a finished choice: content when it holds no
    /// calls, else per call, as OpenAI streams them, a chunk with its index,
    /// id, type, name and empty arguments, then one with the arguments.
    /// Returns whether there were calls.
    fn release_held_text(&mut self, choice: u32, out: &mut Vec<Frame>) -> bool {
        if !self.config.tools.extraction.is_on() {
            return false;
        }
        let held = self.held.remove(&choice).unwrap_or_default();
        let m = self.config.tools.message(choice, &held.text);
        let unsent_end = if m.tool_calls.is_empty() {
            held.text.len()
        } else {
            self.config
                .tools
                .extraction
                .streamable_prefix_len(&held.text)
                .max(held.sent)
        };
        let unsent = &held.text[held.sent..unsent_end];
        if !unsent.trim().is_empty() || (m.tool_calls.is_empty() && !unsent.is_empty()) {
            out.push(self.delta_chunk(choice, json!({"role": "assistant", "content": unsent})));
        }
        for (k, call) in m.tool_calls.iter().enumerate() {
            let opening = json!({"tool_calls": [{
                "index": k,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }]});
            out.push(self.delta_chunk(choice, opening));
            let arguments = json!({"tool_calls": [{
                "index": k,
                "function": {"arguments": call["function"]["arguments"]},
            }]});
            out.push(self.delta_chunk(choice, arguments));
        }
        !m.tool_calls.is_empty()
    }

    fn delta_chunk(&self, choice: u32, delta: Value) -> Frame {
        self.chunk(json!([{
            "index": choice,
            "delta": delta,
            "logprobs": null,
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
            TokenEvent::Prompt(tokens) => {
                // vLLM's extension: one chunk without choices.
                let mut v = self.chunk_value(json!([]));
                v["prompt_logprobs"] = vllm_prompt_logprobs(&tokens);
                out.push(Frame::Json(v));
            }
            TokenEvent::Token(t) => {
                self.completion_tokens += 1;
                if self.config.tools.extraction.is_on() {
                    self.hold(t.index, &t.text, out);
                } else if !t.text.is_empty() || self.config.top_logprobs.is_some() {
                    out.push(self.token_chunk(&t));
                }
            }
            TokenEvent::Finished(f) => {
                let called_tools = self.release_held_text(f.index, out);
                out.push(self.chunk(json!([{
                    "index": f.index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": null,
                    "finish_reason": choice_finish_reason(&f, called_tools),
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
