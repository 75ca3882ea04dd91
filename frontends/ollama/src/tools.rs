//! Tool calling on `/api/chat`: `tools` checked and handed to the chat
//! template, tool-call history checked, and the calls the model writes
//! returned as `message.tool_calls` with object arguments. Ollama has no
//! `tool_choice`: the model decides, and calls are parsed from its text.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use kiln_http::tool_calls::{ParsedOutput, ToolCallParser, check_parameters};
use kiln_http::{ApiError, Dialect};
use serde_json::{Value, json};

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Dialect::Ollama, StatusCode::BAD_REQUEST, message)
}

/// Checks `tools`; returns them for the template (`None`: no tools).
pub fn template_tools(tools: Option<&[Value]>) -> Result<Option<Value>, ApiError> {
    let tools = tools.unwrap_or_default();
    if tools.is_empty() {
        return Ok(None);
    }
    let mut names = BTreeSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(bad(format!(
                "tools[{i}]: type {kind:?} is not supported, only \"function\""
            )));
        }
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| bad(format!("tools[{i}]: missing function")))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("tools[{i}]: function needs a name")))?;
        if !names.insert(name) {
            return Err(bad(format!("tools[{i}]: duplicate function name {name:?}")));
        }
        if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
            check_parameters(parameters)
                .map_err(|e| bad(format!("tools[{i}]: invalid parameters schema: {e}")))?;
        }
    }
    Ok(Some(Value::Array(tools.to_vec())))
}

/// An assistant message's `tool_calls` for the template, each with object
/// `arguments` (a JSON string is accepted and parsed).
pub fn template_tool_calls(index: usize, role: &str, calls: &Value) -> Result<Value, ApiError> {
    if role != "assistant" {
        return Err(bad(format!(
            "messages[{index}]: only assistant messages carry tool_calls"
        )));
    }
    let Value::Array(items) = calls else {
        return Err(bad(format!("messages[{index}]: tool_calls must be a list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(k, call)| {
            let at = format!("messages[{index}].tool_calls[{k}]");
            let name = call
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{at}: function needs a name")))?;
            let arguments = match call.get("function").and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => json!({}),
                Some(v @ Value::Object(_)) => v.clone(),
                Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| bad(format!("{at}: arguments must be an object")))?,
                Some(_) => return Err(bad(format!("{at}: arguments must be an object"))),
            };
            let mut out = call.clone();
            out["function"] = json!({"name": name, "arguments": arguments});
            Ok(out)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `message` of a chat answer whose whole text is `text`: the calls under
/// `tool_calls` when the model made any.
pub fn chat_message(parser: Option<ToolCallParser>, text: &str) -> Value {
    let Some(parser) = parser else {
        return json!({"role": "assistant", "content": text});
    };
    let ParsedOutput { content, calls } = parser.parse(text);
    if calls.is_empty() {
        return json!({"role": "assistant", "content": text});
    }
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(k, c)| json!({"function": {"index": k, "name": c.name, "arguments": c.arguments}}))
        .collect();
    json!({"role": "assistant", "content": content.unwrap_or_default(), "tool_calls": calls})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_checked() {
        let ok = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let tools: Vec<Value> = serde_json::from_value(ok.clone()).unwrap();
        assert_eq!(template_tools(Some(&tools)).unwrap(), Some(ok));
        assert_eq!(template_tools(None).unwrap(), None);
        for bad_tools in [
            json!([{"type": "retrieval"}]),
            json!([{"type": "function"}]),
            json!([{"type": "function", "function": {}}]),
            json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
            json!([{"function": {"name": "f"}}, {"function": {"name": "f"}}]),
        ] {
            let tools: Vec<Value> = serde_json::from_value(bad_tools.clone()).unwrap();
            assert!(template_tools(Some(&tools)).is_err(), "{bad_tools}");
        }
    }

    #[test]
    fn history_calls_get_object_arguments() {
        let calls = json!([{"function": {"name": "f", "arguments": "{\"x\": 1}"}}]);
        let out = template_tool_calls(1, "assistant", &calls).unwrap();
        assert_eq!(out[0]["function"]["arguments"], json!({"x": 1}));
        assert!(template_tool_calls(1, "user", &calls).is_err());
        let bad_args = json!([{"function": {"name": "f", "arguments": [1]}}]);
        assert!(template_tool_calls(1, "assistant", &bad_args).is_err());
    }

    #[test]
    fn calls_are_returned_with_object_arguments() {
        let text = "<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call>";
        let m = chat_message(Some(ToolCallParser::Hermes), text);
        assert_eq!(m["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], json!({"x": 1}));
        assert_eq!(m["content"], "");
        let plain = chat_message(Some(ToolCallParser::Hermes), "hello");
        assert_eq!(plain, json!({"role": "assistant", "content": "hello"}));
        assert_eq!(chat_message(None, text)["content"], text);
    }
}
