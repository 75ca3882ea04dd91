//! The SSE events of a streamed response, each `event: <type>` with a JSON
//! payload carrying `type` and a `sequence_number` counting from 0:
//!
//! `response.created`, `response.in_progress`; for the message,
//! `response.output_item.added`, `response.content_part.added`, one
//! `response.output_text.delta` per piece of text, `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`; for each
//! function call, `response.output_item.added`,
//! `response.function_call_arguments.delta` and `.done`,
//! `response.output_item.done`; then `response.completed` (or
//! `response.incomplete` at `max_output_tokens`) with the whole object. A
//! failure is one `error` event in OpenAI's error shape, and the stream ends.
//!
//! With tools, text goes out as soon as it can no longer turn into a call
//! (the parser's streamable prefix; nothing for forced calls), and the rest
//! is read for calls when the output ends, as on chat completions.

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::{ApiError, Dialect};
use kiln_protocol::{Finished, TokenEvent};
use serde_json::{Value, json};

use crate::responses::output::{
    ResponseEcho, ResponseUsage, function_call_item, message_item, output_text, status_of,
    usage_json,
};
use crate::tools::ToolResponder;

/// Encoder of one streamed response.
#[derive(Debug)]
pub struct ResponseStream {
    echo: ResponseEcho,
    tools: ToolResponder,
    prompt_tokens: u32,
    output_tokens: u32,
    sequence_number: u64,
    /// Everything generated so far.
    text: String,
    /// Bytes of `text` sent as deltas.
    sent: usize,
    message_open: bool,
}

impl ResponseStream {
    /// A new encoder; `prompt_tokens` is the rendered prompt's length.
    pub fn new(echo: ResponseEcho, tools: ToolResponder, prompt_tokens: u32) -> Self {
        ResponseStream {
            echo,
            tools,
            prompt_tokens,
            output_tokens: 0,
            sequence_number: 0,
            text: String::new(),
            sent: 0,
            message_open: false,
        }
    }

    fn emit(&mut self, name: &'static str, mut data: Value, out: &mut Vec<Frame>) {
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence_number);
        self.sequence_number += 1;
        out.push(Frame::Event { name, data });
    }

    fn text_event(&self, extra: Value) -> Value {
        let mut v = json!({
            "item_id": self.echo.message_id(),
            "output_index": 0,
            "content_index": 0,
        });
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        v
    }

    fn open_message(&mut self, out: &mut Vec<Frame>) {
        if self.message_open {
            return;
        }
        self.message_open = true;
        let item = message_item(&self.echo.message_id(), None, "in_progress");
        self.emit(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
            out,
        );
        let part = self.text_event(json!({"part": output_text("")}));
        self.emit("response.content_part.added", part, out);
    }

    fn delta(&mut self, end: usize, out: &mut Vec<Frame>) {
        if end <= self.sent {
            return;
        }
        self.open_message(out);
        let delta = self.text[self.sent..end].to_string();
        self.sent = end;
        let event = self.text_event(json!({"delta": delta, "logprobs": []}));
        self.emit("response.output_text.delta", event, out);
    }

    /// Closes the message with the text sent; returns its finished item.
    fn close_message(&mut self, status: &str, out: &mut Vec<Frame>) -> Option<Value> {
        if !self.message_open {
            return None;
        }
        let text = self.text[..self.sent].to_string();
        let done = self.text_event(json!({"text": text, "logprobs": []}));
        self.emit("response.output_text.done", done, out);
        let part = self.text_event(json!({"part": output_text(&text)}));
        self.emit("response.content_part.done", part, out);
        let item = message_item(&self.echo.message_id(), Some(&text), status);
        self.emit(
            "response.output_item.done",
            json!({"output_index": 0, "item": item.clone()}),
            out,
        );
        Some(item)
    }

    fn finish(&mut self, f: &Finished, out: &mut Vec<Frame>) {
        let status = status_of(f);
        let message = self.tools.message(0, &self.text);
        let content_end = if message.tool_calls.is_empty() {
            self.text.len()
        } else {
            self.tools
                .extraction
                .streamable_prefix_len(&self.text)
                .max(self.sent)
        };
        let rest_is_blank = self.text[self.sent..content_end].trim().is_empty();
        // Blank text between the prose and the calls is not worth a delta.
        if !rest_is_blank || message.tool_calls.is_empty() {
            self.delta(content_end, out);
        }
        if message.tool_calls.is_empty() {
            // An empty answer still has its (empty) message.
            self.open_message(out);
        }
        let mut items: Vec<Value> = self.close_message(status, out).into_iter().collect();
        for (k, call) in message.tool_calls.iter().enumerate() {
            let output_index = items.len();
            let id = self.echo.function_call_id(k);
            let opened = function_call_item(&id, call, Some(""), "in_progress");
            self.emit(
                "response.output_item.added",
                json!({"output_index": output_index, "item": opened}),
                out,
            );
            let arguments = call["function"]["arguments"].clone();
            let located = json!({"item_id": id, "output_index": output_index});
            let mut delta = located.clone();
            delta["delta"] = arguments.clone();
            self.emit("response.function_call_arguments.delta", delta, out);
            let mut done = located;
            done["arguments"] = arguments;
            self.emit("response.function_call_arguments.done", done, out);
            let item = function_call_item(&id, call, None, "completed");
            self.emit(
                "response.output_item.done",
                json!({"output_index": output_index, "item": item.clone()}),
                out,
            );
            items.push(item);
        }
        let usage = usage_json(ResponseUsage {
            input: self.prompt_tokens,
            output: self.output_tokens,
            cached: f.usage.cached_prompt_tokens,
        });
        let response = self.echo.object(status, items, Some(usage));
        let name = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(name, json!({"response": response}), out);
    }
}

impl EventEncoder for ResponseStream {
    type Event = TokenEvent;

    fn start(&mut self, out: &mut Vec<Frame>) {
        let created = self.echo.object("in_progress", Vec::new(), None);
        self.emit(
            "response.created",
            json!({"response": created.clone()}),
            out,
        );
        self.emit("response.in_progress", json!({"response": created}), out);
        if !self.tools.extraction.is_on() {
            self.open_message(out);
        }
    }

    fn event(&mut self, event: TokenEvent, out: &mut Vec<Frame>) -> Flow {
        match event {
            TokenEvent::Token(t) => {
                self.output_tokens += 1;
                self.text.push_str(&t.text);
                let safe = self.tools.extraction.streamable_prefix_len(&self.text);
                self.delta(safe, out);
                Flow::Continue
            }
            TokenEvent::Finished(f) => {
                self.finish(&f, out);
                Flow::Stop
            }
            TokenEvent::Failed { error } => {
                let body = ApiError::from_engine(Dialect::OpenAi, &error, 1).body();
                let e = &body["error"];
                let data = json!({
                    "code": e["code"],
                    "message": e["message"],
                    "param": e["param"],
                    "error": e,
                });
                self.emit("error", data, out);
                Flow::Stop
            }
            // Responses carry no prompt log-probabilities.
            _ => Flow::Continue,
        }
    }

    fn end(&mut self, _out: &mut Vec<Frame>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::request::ResponsesRequest;
    use kiln_http::stream::encode_all;
    use kiln_protocol::{FinishReason, GeneratedToken, Usage};

    fn token(text: &str) -> TokenEvent {
        TokenEvent::Token(GeneratedToken {
            index: 0,
            id: 1,
            text: text.into(),
            piece: text.into(),
            special: false,
            logprob: None,
            top_logprobs: Vec::new(),
        })
    }

    fn finished(reason: FinishReason) -> TokenEvent {
        TokenEvent::Finished(Finished {
            index: 0,
            reason,
            stop_reason: None,
            usage: Usage::default(),
        })
    }

    fn encoder() -> ResponseStream {
        let req: ResponsesRequest = serde_json::from_value(json!({"input": "x"})).unwrap();
        ResponseStream::new(
            ResponseEcho::new(&req, "r1", 0, "m".into()),
            ToolResponder::default(),
            3,
        )
    }

    fn names(frames: &[Frame]) -> Vec<&'static str> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Event { name, .. } => Some(*name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_events_come_in_order_with_counting_sequence_numbers() {
        let frames = encode_all(
            encoder(),
            vec![token("Par"), token("is"), finished(FinishReason::Stop)],
        );
        assert_eq!(
            names(&frames),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, f) in frames.iter().enumerate() {
            let Frame::Event { name, data } = f else {
                panic!("{f:?}")
            };
            assert_eq!(data["sequence_number"], i as u64);
            assert_eq!(data["type"], *name);
        }
        let Frame::Event { data, .. } = frames.last().unwrap() else {
            unreachable!()
        };
        assert_eq!(data["response"]["output"][0]["content"][0]["text"], "Paris");
        assert_eq!(data["response"]["usage"]["output_tokens"], 2);
    }

    #[test]
    fn length_ends_incomplete() {
        let frames = encode_all(encoder(), vec![token("a"), finished(FinishReason::Length)]);
        let Some(Frame::Event { name, data }) = frames.last() else {
            panic!()
        };
        assert_eq!(*name, "response.incomplete");
        assert_eq!(data["response"]["status"], "incomplete");
        assert_eq!(
            data["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }
}
