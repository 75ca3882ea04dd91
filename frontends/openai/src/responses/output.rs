//! The Response object and its output items, shared by the JSON answer and
//! the SSE stream (whose lifecycle events carry the same object). Pure.

use kiln_protocol::{FinishReason, Finished};
use serde_json::{Value, json};

use crate::responses::request::ResponsesRequest;
use crate::tools::ToolResponder;

/// What every Response object of one request repeats: its id and the
/// request's settings, echoed as the openai client's models require.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEcho {
    /// `resp_…`.
    pub id: String,
    /// Makes item ids unique to the response (the request id, alphanumeric).
    pub item_base: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model name reported.
    pub model: String,
    /// The request's fields as they are echoed.
    pub fields: serde_json::Map<String, Value>,
}

impl ResponseEcho {
    /// The echo of `req`, with the defaults Kiln applied filled in.
    pub fn new(req: &ResponsesRequest, request_id: &str, created_at: u64, model: String) -> Self {
        let item_base: String = request_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let format = req
            .text
            .as_ref()
            .and_then(|t| t.get("format"))
            .filter(|f| !f.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "text"}));
        let fields = json!({
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "metadata": req.metadata.clone().filter(|m| !m.is_null()).unwrap_or_else(|| json!({})),
            "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
            "previous_response_id": null,
            "store": false,
            "temperature": req.sampling.temperature.unwrap_or(1.0),
            "text": {"format": format},
            "tool_choice": req.tool_choice.clone().filter(|c| !c.is_null()).unwrap_or_else(|| json!("auto")),
            "tools": req.tools.clone().unwrap_or_default(),
            "top_p": req.sampling.top_p.unwrap_or(1.0),
            "truncation": "disabled",
            "user": req.user,
        });
        ResponseEcho {
            id: format!("resp_{item_base}"),
            item_base,
            created_at,
            model,
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    /// `msg_…`: the id of the response's message item.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.item_base)
    }

    /// `fc_…`: the id of the response's `k`-th function call item.
    pub fn function_call_id(&self, k: usize) -> String {
        format!("fc_{}x{k}", self.item_base)
    }

    /// The Response object at `status` (`in_progress`, `completed`,
    /// `incomplete`) with `output` and, once known, `usage`.
    pub fn object(&self, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "model": self.model,
            "output": output,
            "usage": usage,
        });
        if let Some(obj) = v.as_object_mut() {
            for (k, value) in &self.fields {
                obj.insert(k.clone(), value.clone());
            }
        }
        v
    }
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseUsage {
    /// Prompt tokens.
    pub input: u32,
    /// Generated tokens.
    pub output: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached: u32,
}

/// The `usage` object.
pub fn usage_json(u: ResponseUsage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached, "cache_write_tokens": 0},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input + u.output,
    })
}

/// `completed`, or `incomplete` when the output ran into `max_output_tokens`.
pub fn status_of(finished: &Finished) -> &'static str {
    if finished.reason == FinishReason::Length {
        "incomplete"
    } else {
        "completed"
    }
}

/// An `output_text` content part.
pub fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The assistant message item.
pub fn message_item(id: &str, text: Option<&str>, status: &str) -> Value {
    let content: Vec<Value> = text.map(output_text).into_iter().collect();
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// A `function_call` item from a chat `tool_calls` entry; `arguments`
/// overrides the call's (the stream opens items with empty arguments).
pub fn function_call_item(id: &str, call: &Value, arguments: Option<&str>, status: &str) -> Value {
    let function = &call["function"];
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call["id"],
        "name": function["name"],
        "arguments": arguments.map_or_else(|| function["arguments"].clone(), |a| json!(a)),
        "status": status,
    })
}

/// A finished output as the message text (if any) and the calls it holds.
/// Without tools the text is the message; with tools, a message item is
/// sent only when text remains beside the calls.
pub fn split_output(tools: &ToolResponder, text: &str) -> (Option<String>, Vec<Value>) {
    let m = tools.message(0, text);
    let content = m.content.as_str().map(str::to_string);
    if m.tool_calls.is_empty() {
        return (Some(content.unwrap_or_default()), Vec::new());
    }
    (content.filter(|c| !c.trim().is_empty()), m.tool_calls)
}

/// The output items of a finished response.
pub fn output_items(
    echo: &ResponseEcho,
    content: Option<&str>,
    calls: &[Value],
    status: &str,
) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(text) = content {
        items.push(message_item(&echo.message_id(), Some(text), status));
    }
    for (k, call) in calls.iter().enumerate() {
        items.push(function_call_item(
            &echo.function_call_id(k),
            call,
            None,
            "completed",
        ));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolExtraction;

    fn echo() -> ResponseEcho {
        let req: ResponsesRequest =
            serde_json::from_value(json!({"input": "x", "metadata": {"k": "v"}})).unwrap();
        ResponseEcho::new(&req, "req-7", 1_700_000_000, "m".into())
    }

    #[test]
    fn the_object_carries_what_the_client_requires() {
        let v = echo().object(
            "completed",
            vec![],
            Some(usage_json(ResponseUsage {
                input: 3,
                output: 2,
                cached: 1,
            })),
        );
        for key in [
            "id",
            "created_at",
            "model",
            "object",
            "output",
            "parallel_tool_calls",
            "tool_choice",
            "tools",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["id"], "resp_req7");
        assert_eq!(v["metadata"], json!({"k": "v"}));
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 1);
        assert_eq!(v["incomplete_details"], Value::Null);
        let v = echo().object("incomplete", vec![], None);
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn plain_text_is_one_message() {
        let (content, calls) = split_output(&ToolResponder::default(), "Paris.");
        assert_eq!(content.as_deref(), Some("Paris."));
        let items = output_items(&echo(), content.as_deref(), &calls, "completed");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["content"][0], output_text("Paris."));
        assert_eq!(items[0]["id"], "msg_req7");
    }

    #[test]
    fn forced_calls_are_function_call_items() {
        let tools = ToolResponder {
            extraction: ToolExtraction::Forced(kiln_http::tool_calls::ForcedCalls::Named(
                kiln_http::tool_calls::FunctionTool {
                    name: "f".into(),
                    parameters: json!({"type": "object"}),
                },
            )),
            call_id_base: "r1".into(),
        };
        let (content, calls) = split_output(&tools, r#"{"name": "f", "arguments": {"a": 1}}"#);
        assert_eq!(content, None);
        let items = output_items(&echo(), None, &calls, "completed");
        assert_eq!(items[0]["type"], "function_call");
        assert_eq!(items[0]["name"], "f");
        assert_eq!(items[0]["arguments"], "{\"a\":1}");
        assert_eq!(items[0]["call_id"], calls[0]["id"]);
    }
}
