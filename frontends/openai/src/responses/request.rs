//! The `POST /v1/responses` body, and its translation into the chat
//! request that the chat completions machinery (template, sampling,
//! structured outputs, tools) runs. Pure.
//!
//! `input` is a string or a list of items: messages (`role` plus a string
//! or `input_text`/`output_text` parts), `function_call` items (earlier
//! calls, given to the template as an assistant's `tool_calls`) and
//! `function_call_output` items (given as `tool` messages). `instructions`
//! becomes a leading system message; `developer` messages are system
//! messages. `text.format` becomes `response_format`, function `tools`
//! (flat, Responses-style) become chat tools, `max_output_tokens` becomes
//! `max_completion_tokens`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use kiln_http::{ApiError, Dialect};

use crate::request::{ChatMessageIn, ChatRequest, SamplingFields, VllmExtras};

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Dialect::OpenAi, param, message)
}

/// `POST /v1/responses`. Unknown fields are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ResponsesRequest {
    /// Model name (any name is accepted: one model is served).
    pub model: Option<String>,
    /// A string, or a list of input items.
    pub input: Option<Value>,
    /// A system message put before the input.
    pub instructions: Option<String>,
    /// Most new tokens (default: the rest of the context).
    pub max_output_tokens: Option<u32>,
    /// Stream SSE events.
    pub stream: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    pub text: Option<Value>,
    /// Function tools, `{"type":"function","name","parameters","description","strict"}`.
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required`, or `{"type":"function","name":...}`.
    pub tool_choice: Option<Value>,
    /// With `tool_choice: required`, allow more than one call (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Echoed back.
    pub metadata: Option<Value>,
    /// Accepted; Kiln stores no response.
    pub store: Option<bool>,
    /// Refused when set: nothing is stored to continue from.
    pub previous_response_id: Option<String>,
    /// Refused when set: conversations are not stored either.
    pub conversation: Option<Value>,
    /// Refused when true: responses are not kept to be fetched later.
    pub background: Option<bool>,
    /// Echoed back.
    pub user: Option<String>,
    /// `temperature`, `top_p`, and vLLM's `top_k`, `min_p`, ... as in chat.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// vLLM extras (`stop_token_ids`, `ignore_eos`, ...).
    #[serde(flatten)]
    pub extra: VllmExtras,
}

/// `text.format` as a chat `response_format` (`None`: plain text).
pub fn response_format(text: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(format) = text
        .filter(|t| !t.is_null())
        .map(|t| t.get("format").cloned().unwrap_or(Value::Null))
        .filter(|f| !f.is_null())
    else {
        return Ok(None);
    };
    let kind = format.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let Some(schema) = format.get("schema").filter(|s| s.is_object()) else {
                return Err(bad(
                    "text.format.schema",
                    "a `json_schema` format needs a `schema` object",
                ));
            };
            let mut spec = Map::new();
            spec.insert("schema".into(), schema.clone());
            for key in ["name", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    spec.insert(key.into(), v.clone());
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": Value::Object(spec)}),
            ))
        }
        _ => Err(bad(
            "text.format.type",
            "`text.format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

/// Responses-style function tools as chat tools.
pub fn chat_tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "function" {
                return Err(bad(
                    &format!("tools.{i}.type"),
                    format!(
                        "tools of type `{kind}` are not supported: Kiln runs function tools only"
                    ),
                ));
            }
            let mut function = Map::new();
            for key in ["name", "description", "parameters", "strict"] {
                if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                    function.insert(key.into(), v.clone());
                }
            }
            Ok(json!({"type": "function", "function": Value::Object(function)}))
        })
        .collect()
}

/// A Responses `tool_choice` as a chat one.
pub fn chat_tool_choice(choice: Option<&Value>) -> Option<Value> {
    let choice = choice.filter(|c| !c.is_null())?;
    match choice.get("name") {
        Some(name) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Some(choice.clone()),
    }
}

/// A message's `content` as chat content parts.
fn message_content(param: &str, content: Option<&Value>) -> Result<Value, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(json!("")),
        Some(Value::String(s)) => Ok(json!(s)),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "input_text" | "output_text" | "text" => {
                        let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(
                                &format!("{param}.{j}.text"),
                                "a text content part needs a string `text`",
                            )
                        })?;
                        Ok(json!({"type": "text", "text": text}))
                    }
                    other => Err(bad(
                        &format!("{param}.{j}.type"),
                        format!(
                            "content parts of type `{other}` are not supported: send `input_text` parts (this model takes text only)"
                        ),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Some(_) => Err(bad(
            param,
            "`content` must be a string or a list of `input_text` parts",
        )),
    }
}

fn string_field<'a>(item: &'a Value, param: &str, key: &str) -> Result<&'a str, ApiError> {
    item.get(key).and_then(Value::as_str).ok_or_else(|| {
        bad(
            &format!("{param}.{key}"),
            format!("`{key}` must be a string"),
        )
    })
}

/// `input` (and `instructions`) as chat messages.
pub fn chat_messages(
    instructions: Option<&str>,
    input: Option<&Value>,
) -> Result<Vec<ChatMessageIn>, ApiError> {
    let mut messages = Vec::new();
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        messages.push(ChatMessageIn {
            role: "system".into(),
            content: Some(json!(text)),
            ..Default::default()
        });
    }
    let items = match input {
        None | Some(Value::Null) => return Err(bad("input", "`input` is required")),
        Some(Value::String(s)) => {
            messages.push(ChatMessageIn {
                role: "user".into(),
                content: Some(json!(s)),
                ..Default::default()
            });
            return Ok(messages);
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => {
            return Err(bad(
                "input",
                "`input` must be a string or a non-empty list of input items",
            ));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let param = format!("input.{i}");
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = string_field(item, &param, "role")?;
                let role = match role {
                    "developer" => "system",
                    "user" | "assistant" | "system" => role,
                    other => {
                        return Err(bad(
                            &format!("{param}.role"),
                            format!(
                                "`role` must be `user`, `assistant`, `system` or `developer`, got `{other}`"
                            ),
                        ));
                    }
                };
                messages.push(ChatMessageIn {
                    role: role.into(),
                    content: Some(message_content(
                        &format!("{param}.content"),
                        item.get("content"),
                    )?),
                    ..Default::default()
                });
            }
            Some("function_call") => {
                let call = json!({
                    "id": string_field(item, &param, "call_id")?,
                    "type": "function",
                    "function": {
                        "name": string_field(item, &param, "name")?,
                        "arguments": string_field(item, &param, "arguments")?,
                    },
                });
                // Consecutive calls are one assistant turn.
                match messages.last_mut() {
                    Some(last)
                        if last.role == "assistant"
                            && last.tool_calls.as_ref().is_some_and(Value::is_array) =>
                    {
                        if let Some(Value::Array(calls)) = last.tool_calls.as_mut() {
                            calls.push(call);
                        }
                    }
                    _ => messages.push(ChatMessageIn {
                        role: "assistant".into(),
                        content: None,
                        tool_calls: Some(json!([call])),
                        ..Default::default()
                    }),
                }
            }
            Some("function_call_output") => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => json!(s),
                    Some(v @ Value::Array(_)) => {
                        message_content(&format!("{param}.output"), Some(v))?
                    }
                    _ => {
                        return Err(bad(&format!("{param}.output"), "`output` must be a string"));
                    }
                };
                messages.push(ChatMessageIn {
                    role: "tool".into(),
                    content: Some(output),
                    tool_call_id: Some(string_field(item, &param, "call_id")?.to_string()),
                    ..Default::default()
                });
            }
            Some(other) => {
                return Err(bad(
                    &format!("{param}.type"),
                    format!(
                        "input items of type `{other}` are not supported: send `message`, `function_call` or `function_call_output` items"
                    ),
                ));
            }
        }
    }
    Ok(messages)
}

/// Refuses what needs state Kiln does not keep.
pub fn check_stateless(req: &ResponsesRequest) -> Result<(), ApiError> {
    if req
        .previous_response_id
        .as_deref()
        .is_some_and(|id| !id.is_empty())
    {
        return Err(bad(
            "previous_response_id",
            "responses are not stored, so `previous_response_id` cannot be continued: send the whole conversation in `input`",
        ));
    }
    if req.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(bad(
            "conversation",
            "conversations are not stored: send the whole conversation in `input`",
        ));
    }
    if req.background == Some(true) {
        return Err(bad(
            "background",
            "background responses are not supported (nothing is stored to fetch later): remove `background`",
        ));
    }
    Ok(())
}

/// The chat request that computes this response.
pub fn chat_request(req: &ResponsesRequest) -> Result<ChatRequest, ApiError> {
    check_stateless(req)?;
    if req.sampling.n.is_some_and(|n| n != 1) {
        return Err(bad(
            "n",
            "a response has one output: remove `n` (or send several requests)",
        ));
    }
    let tools = req.tools.as_deref().map(chat_tools).transpose()?;
    Ok(ChatRequest {
        model: req.model.clone(),
        messages: chat_messages(req.instructions.as_deref(), req.input.as_ref())?,
        max_completion_tokens: req.max_output_tokens,
        sampling: req.sampling.clone(),
        stream: req.stream,
        response_format: response_format(req.text.as_ref())?,
        tools: tools.filter(|t| !t.is_empty()),
        tool_choice: chat_tool_choice(req.tool_choice.as_ref()),
        parallel_tool_calls: req.parallel_tool_calls,
        user: req.user.clone(),
        extra: req.extra.clone(),
        ..Default::default()
    })
}

/// Renames a chat request's error `param` to the Responses field it came from.
pub fn responses_param(error: ApiError) -> ApiError {
    let Some(param) = error.param.clone() else {
        return error;
    };
    let renamed = if param == "response_format" || param == "json_object" {
        "text.format".to_string()
    } else if param == "json_schema" {
        "text.format.schema".to_string()
    } else if param.starts_with("messages") {
        "input".to_string()
    } else if param == "max_completion_tokens" {
        "max_output_tokens".to_string()
    } else if let Some(rest) = param.strip_prefix("tools.") {
        format!("tools.{}", rest.replace(".function.", "."))
    } else {
        param
    };
    error.with_param(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<ChatRequest, ApiError> {
        chat_request(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn several_outputs_are_refused_and_vllm_sampling_reaches_chat() {
        let user = json!("hi");
        let e = request(json!({"input": user, "n": 2})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let chat = request(json!({"input": user, "top_k": 5, "temperature": 0.5})).unwrap();
        assert_eq!(chat.sampling.top_k, Some(5));
        assert_eq!(chat.sampling.temperature, Some(0.5));
    }

    #[test]
    fn a_string_input_is_one_user_message_after_the_instructions() {
        let chat =
            request(json!({"input": "Hi", "instructions": "Be brief.", "max_output_tokens": 5}))
                .unwrap();
        assert_eq!(chat.messages.len(), 2);
        assert_eq!(chat.messages[0].role, "system");
        assert_eq!(chat.messages[1].content, Some(json!("Hi")));
        assert_eq!(chat.max_completion_tokens, Some(5));
    }

    #[test]
    fn items_become_messages_calls_and_tool_results() {
        let chat = request(json!({"input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ]}))
        .unwrap();
        let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(
            chat.messages[1].content,
            Some(json!([{"type": "text", "text": "Weather?"}]))
        );
        assert_eq!(
            chat.messages[2]
                .tool_calls
                .as_ref()
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("c1"));
    }

    #[test]
    fn formats_and_tools_translate_to_chat() {
        let chat = request(json!({
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
        }))
        .unwrap();
        assert_eq!(
            chat.response_format,
            Some(
                json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": true}})
            )
        );
        assert_eq!(chat.tools.unwrap()[0]["function"]["name"], "f");
        assert_eq!(
            chat.tool_choice,
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        let plain = request(json!({"input": "x", "text": {"format": {"type": "text"}}})).unwrap();
        assert_eq!(plain.response_format, None);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (json!({}), "input"),
            (json!({"input": []}), "input"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "input.0.content.0.type",
            ),
            (json!({"input": [{"type": "reasoning"}]}), "input.0.type"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools.0.type",
            ),
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
            ),
        ];
        for (body, param) in cases {
            let e = request(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert_eq!(e.status, 400);
        }
    }
}
