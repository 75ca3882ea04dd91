//! Tool calling on `/v1/chat/completions`: `tools`, `tool_choice` and
//! `parallel_tool_calls` read into a [`ToolPlan`], tool-call history checked
//! for the chat template, and the calls found in the output written as
//! OpenAI's `tool_calls`.

use std::collections::BTreeSet;

use kiln_http::tool_calls::{
    ForcedCalls, FunctionTool, ParsedOutput, ToolCall, ToolCallParser, check_parameters,
    parse_forced_calls,
};
use kiln_http::{ApiError, Dialect};
use serde_json::{Value, json};

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Dialect::OpenAi, param, message)
}

/// What the request's tools ask of generation.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolPlan {
    /// No tools, or `tool_choice: "none"`: plain chat.
    #[default]
    Off,
    /// `tool_choice: "auto"`: the model answers freely; calls are parsed out.
    Auto,
    /// `required` or a named function: the output is constrained to calls.
    Forced(ForcedCalls),
}

/// The tools part of a chat request, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatTools {
    /// How calls are produced.
    pub plan: ToolPlan,
    /// `tools` as the chat template receives them (`None`: tools omitted).
    pub template_tools: Option<Value>,
}

/// How calls are read out of one finished output.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolExtraction {
    /// Plain text.
    #[default]
    Off,
    /// Free text that may hold calls in this format.
    Parse(ToolCallParser),
    /// Constrained JSON calls.
    Forced(ForcedCalls),
}

impl ToolExtraction {
    /// The extraction for `plan` with the server's parser.
    pub fn new(plan: &ToolPlan, parser: ToolCallParser) -> Self {
        match plan {
            ToolPlan::Off => ToolExtraction::Off,
            ToolPlan::Auto => ToolExtraction::Parse(parser),
            ToolPlan::Forced(forced) => ToolExtraction::Forced(forced.clone()),
        }
    }

    /// Whether output has to be seen whole before it can be sent.
    pub fn is_on(&self) -> bool {
        *self != ToolExtraction::Off
    }

    /// Leading bytes of `text` (output so far) that can be streamed as
    /// content before the output is finished.
    pub fn streamable_prefix_len(&self, text: &str) -> usize {
        match self {
            ToolExtraction::Off => text.len(),
            ToolExtraction::Parse(parser) => parser.streamable_prefix_len(text),
            ToolExtraction::Forced(_) => 0,
        }
    }

    /// Content and calls of a finished output.
    pub fn extract(&self, text: &str) -> ParsedOutput {
        match self {
            ToolExtraction::Off => ParsedOutput {
                content: Some(text.to_string()),
                calls: Vec::new(),
            },
            ToolExtraction::Parse(parser) => parser.parse(text),
            ToolExtraction::Forced(forced) => match parse_forced_calls(forced, text) {
                Some(calls) => ParsedOutput {
                    content: None,
                    calls,
                },
                None => ParsedOutput {
                    content: Some(text.to_string()),
                    calls: Vec::new(),
                },
            },
        }
    }
}

/// Turns finished outputs into OpenAI messages with `tool_calls`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolResponder {
    /// How calls are read.
    pub extraction: ToolExtraction,
    /// Makes call ids unique to the response (the request id).
    pub call_id_base: String,
}

/// A choice's content and calls, in wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolMessage {
    /// `content`: null when the model only called tools.
    pub content: Value,
    /// `tool_calls` entries (empty: no calls).
    pub tool_calls: Vec<Value>,
}

impl ToolResponder {
    /// The message of choice `choice` whose text is `text`.
    pub fn message(&self, choice: u32, text: &str) -> ToolMessage {
        if !self.extraction.is_on() {
            return ToolMessage {
                content: json!(text),
                tool_calls: Vec::new(),
            };
        }
        let parsed = self.extraction.extract(text);
        let tool_calls = parsed
            .calls
            .iter()
            .enumerate()
            .map(|(k, c)| tool_call_json(&call_id(&self.call_id_base, choice, k), c))
            .collect::<Vec<_>>();
        let content = match parsed.content {
            Some(c) => json!(c),
            None if tool_calls.is_empty() => json!(""),
            None => Value::Null,
        };
        ToolMessage {
            content,
            tool_calls,
        }
    }
}

/// OpenAI's call id for call `k` of choice `choice`.
pub fn call_id(base: &str, choice: u32, k: usize) -> String {
    let base: String = base.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("call_{base}{choice}x{k}")
}

/// One entry of `message.tool_calls`: arguments as a JSON string.
pub fn tool_call_json(id: &str, call: &ToolCall) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

fn function_tool(index: usize, tool: &Value) -> Result<FunctionTool, ApiError> {
    let param = format!("tools.{index}");
    if !tool.is_object() {
        return Err(bad(&param, "every tool must be an object"));
    }
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(bad(
                &format!("{param}.type"),
                format!("tools of type `{other}` are not supported: only `function`"),
            ));
        }
        None => {
            return Err(bad(
                &format!("{param}.type"),
                "every tool needs `type: \"function\"`",
            ));
        }
    }
    let Some(function) = tool.get("function").filter(|f| f.is_object()) else {
        return Err(bad(
            &format!("{param}.function"),
            "a function tool needs a `function` object",
        ));
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_function_name(n))
        .ok_or_else(|| {
            bad(
                &format!("{param}.function.name"),
                "`name` must be 1 to 64 letters, digits, underscores or dashes",
            )
        })?;
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object"}),
        Some(p) => {
            check_parameters(p).map_err(|e| {
                bad(
                    &format!("{param}.function.parameters"),
                    format!("invalid JSON Schema: {e}"),
                )
            })?;
            p.clone()
        }
    };
    Ok(FunctionTool {
        name: name.to_string(),
        parameters,
    })
}

fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

fn parse_choice(choice: &Value) -> Result<Choice, ApiError> {
    let invalid = || {
        bad(
            "tool_choice",
            "`tool_choice` must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )
    };
    match choice {
        Value::String(s) => match s.as_str() {
            "none" => Ok(Choice::None),
            "auto" => Ok(Choice::Auto),
            "required" => Ok(Choice::Required),
            _ => Err(invalid()),
        },
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid());
            }
            o.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(|n| Choice::Named(n.to_string()))
                .ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

/// Reads `tools`, `tool_choice` and `parallel_tool_calls`.
pub fn chat_tools(
    tools: Option<&[Value]>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
) -> Result<ChatTools, ApiError> {
    let raw = tools.unwrap_or_default();
    let defined = raw
        .iter()
        .enumerate()
        .map(|(i, t)| function_tool(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = BTreeSet::new();
    for (i, tool) in defined.iter().enumerate() {
        if !names.insert(tool.name.as_str()) {
            return Err(bad(
                &format!("tools.{i}.function.name"),
                format!("two tools are named `{}`", tool.name),
            ));
        }
    }
    let choice = match tool_choice.filter(|c| !c.is_null()) {
        Some(c) => parse_choice(c)?,
        None if defined.is_empty() => Choice::None,
        None => Choice::Auto,
    };
    if defined.is_empty() && !matches!(choice, Choice::None) {
        return Err(bad("tool_choice", "`tool_choice` needs `tools`"));
    }
    let plan = match choice {
        Choice::None => ToolPlan::Off,
        Choice::Auto => ToolPlan::Auto,
        Choice::Required => ToolPlan::Forced(ForcedCalls::Required {
            tools: defined,
            parallel: parallel_tool_calls.unwrap_or(true),
        }),
        Choice::Named(name) => {
            let tool = defined
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        format!("`tool_choice` names `{name}`, which is not in `tools`"),
                    )
                })?;
            ToolPlan::Forced(ForcedCalls::Named(tool))
        }
    };
    let template_tools = (plan != ToolPlan::Off).then(|| Value::Array(raw.to_vec()));
    Ok(ChatTools {
        plan,
        template_tools,
    })
}

/// An assistant message's `tool_calls` for the template: checked, with each
/// `arguments` string turned into the object HF templates expect.
pub fn template_tool_calls(index: usize, role: &str, calls: &Value) -> Result<Value, ApiError> {
    let param = format!("messages.{index}.tool_calls");
    if role != "assistant" {
        return Err(bad(&param, "only assistant messages carry `tool_calls`"));
    }
    let Value::Array(items) = calls else {
        return Err(bad(&param, "`tool_calls` must be a list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(k, call)| {
            let at = format!("{param}.{k}");
            let function = call
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| bad(&at, "a tool call needs a `function` object"))?;
            if call.get("type").is_some_and(|t| t != "function") {
                return Err(bad(
                    &format!("{at}.type"),
                    "tool calls have `type: \"function\"`",
                ));
            }
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("{at}.function.name"), "a tool call needs a `name`"))?;
            let arguments = match function.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str(s).map_err(|_| {
                    bad(
                        &format!("{at}.function.arguments"),
                        "`arguments` must be a JSON string",
                    )
                })?,
                Some(v @ Value::Object(_)) => v.clone(),
                _ => {
                    return Err(bad(
                        &format!("{at}.function.arguments"),
                        "`arguments` must be a JSON string",
                    ));
                }
            };
            let mut out = call.clone();
            out["type"] = json!("function");
            out["function"] = json!({"name": name, "arguments": arguments});
            Ok(out)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A `tool` message must say which call it answers.
pub fn check_tool_message(
    index: usize,
    role: &str,
    tool_call_id: Option<&str>,
) -> Result<(), ApiError> {
    if role == "tool" && tool_call_id.is_none_or(|id| id.is_empty()) {
        return Err(bad(
            &format!("messages.{index}.tool_call_id"),
            "a `tool` message needs the `tool_call_id` of the call it answers",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    fn plan(tools: Value, choice: Value) -> Result<ChatTools, ApiError> {
        let tools: Vec<Value> = serde_json::from_value(tools).unwrap();
        chat_tools(Some(&tools), Some(&choice), None)
    }

    #[test]
    fn choices_map_to_plans() {
        let t = json!([weather()]);
        assert_eq!(plan(t.clone(), json!("none")).unwrap().plan, ToolPlan::Off);
        assert_eq!(plan(t.clone(), json!("none")).unwrap().template_tools, None);
        assert_eq!(plan(t.clone(), json!("auto")).unwrap().plan, ToolPlan::Auto);
        assert!(
            plan(t.clone(), json!("auto"))
                .unwrap()
                .template_tools
                .is_some()
        );
        assert!(matches!(
            plan(t.clone(), json!("required")).unwrap().plan,
            ToolPlan::Forced(ForcedCalls::Required { parallel: true, .. })
        ));
        let named = plan(
            t,
            json!({"type": "function", "function": {"name": "weather"}}),
        );
        assert!(matches!(
            named.unwrap().plan,
            ToolPlan::Forced(ForcedCalls::Named(FunctionTool { ref name, .. })) if name == "weather"
        ));
        let tools = vec![weather()];
        assert_eq!(
            chat_tools(Some(&tools), None, None).unwrap().plan,
            ToolPlan::Auto
        );
        assert_eq!(chat_tools(None, None, None).unwrap().plan, ToolPlan::Off);
    }

    #[test]
    fn bad_tools_name_the_field() {
        for (tools, choice, param) in [
            (
                json!([weather()]),
                json!({"type": "function", "function": {"name": "x"}}),
                "tool_choice",
            ),
            (json!([]), json!("required"), "tool_choice"),
            (json!([weather()]), json!("sometimes"), "tool_choice"),
            (
                json!([{"type": "code_interpreter"}]),
                json!("auto"),
                "tools.0.type",
            ),
            (
                json!([{"type": "function"}]),
                json!("auto"),
                "tools.0.function",
            ),
            (
                json!([{"type": "function", "function": {"name": "a b"}}]),
                json!("auto"),
                "tools.0.function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "a", "parameters": {"type": "nope"}}}]),
                json!("auto"),
                "tools.0.function.parameters",
            ),
            (
                json!([weather(), weather()]),
                json!("auto"),
                "tools.1.function.name",
            ),
        ] {
            let e = plan(tools.clone(), choice).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{tools}");
        }
    }

    #[test]
    fn history_arguments_become_objects() {
        let calls = json!([{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]);
        let out = template_tool_calls(1, "assistant", &calls).unwrap();
        assert_eq!(out[0]["function"]["arguments"], json!({"city": "Oslo"}));
        assert_eq!(out[0]["id"], "call_1");
        assert!(template_tool_calls(1, "user", &calls).is_err());
        let bad_args = json!([{"type": "function", "function": {"name": "w", "arguments": "{"}}]);
        assert!(template_tool_calls(1, "assistant", &bad_args).is_err());
        assert!(check_tool_message(2, "tool", None).is_err());
        assert!(check_tool_message(2, "tool", Some("call_1")).is_ok());
    }

    #[test]
    fn extraction_reads_calls() {
        let named = ForcedCalls::Named(FunctionTool {
            name: "weather".into(),
            parameters: json!({"type": "object"}),
        });
        let out = ToolExtraction::Forced(named)
            .extract(r#"{"name": "weather", "arguments": {"city": "Oslo"}}"#);
        assert_eq!(out.content, None);
        let call = tool_call_json(&call_id("abc", 0, 0), &out.calls[0]);
        assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
        assert_eq!(call["id"], "call_abc0x0");
        let free = ToolExtraction::Parse(ToolCallParser::Hermes).extract("just text");
        assert_eq!(free.content.as_deref(), Some("just text"));
    }
}
