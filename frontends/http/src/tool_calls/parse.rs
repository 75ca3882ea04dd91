//! Finding tool calls in generated text, in the formats models are trained
//! to emit. Text that does not hold well-formed calls is left as content.

use std::str::FromStr;

use serde_json::Value;

use super::ToolCall;

/// A tool-call output format (vLLM's `--tool-call-parser` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolCallParser {
    /// `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (Hermes, Qwen2.5/3).
    #[default]
    Hermes,
    /// Bare JSON `{"name": ..., "parameters": ...}`, optionally after
    /// `<|python_tag|>`, several separated by `;` (Llama 3.1-3.3).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]`, or
    /// `[TOOL_CALLS]name[ARGS]{...}` in newer Mistral tokenizers.
    Mistral,
}

/// What a model wrote, split into prose and calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedOutput {
    /// Text outside the calls; `None` when there is none.
    pub content: Option<String>,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

impl ParsedOutput {
    fn text_only(text: &str) -> Self {
        ParsedOutput {
            content: non_empty(text),
            calls: Vec::new(),
        }
    }
}

impl FromStr for ToolCallParser {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "hermes" => Ok(ToolCallParser::Hermes),
            "llama3_json" | "llama4_json" => Ok(ToolCallParser::Llama3Json),
            "mistral" => Ok(ToolCallParser::Mistral),
            other => Err(format!(
                "unknown tool-call parser {other:?}: expected hermes, llama3_json or mistral"
            )),
        }
    }
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";

impl ToolCallParser {
    /// The format a chat template teaches: Mistral's or Llama's markers when
    /// present, else Hermes (which also covers templates without tools).
    pub fn for_template(template: &str) -> Self {
        if template.contains(HERMES_OPEN) {
            ToolCallParser::Hermes
        } else if template.contains(MISTRAL_CALLS) {
            ToolCallParser::Mistral
        } else if template.contains(PYTHON_TAG) || template.contains("ipython") {
            ToolCallParser::Llama3Json
        } else {
            ToolCallParser::Hermes
        }
    }

    /// The name `--tool-call-parser` takes.
    pub fn name(self) -> &'static str {
        match self {
            ToolCallParser::Hermes => "hermes",
            ToolCallParser::Llama3Json => "llama3_json",
            ToolCallParser::Mistral => "mistral",
        }
    }

    /// Whether this format's markers are special tokens that detokenizing
    /// must keep.
    pub fn needs_special_tokens(self) -> bool {
        self == ToolCallParser::Mistral
    }

    /// How many leading bytes of `text` (output so far) can be streamed as
    /// content: no call can begin inside them, whatever comes next.
    pub fn streamable_prefix_len(self, text: &str) -> usize {
        match self {
            ToolCallParser::Hermes => before_marker(text, HERMES_OPEN),
            ToolCallParser::Mistral => before_marker(text, MISTRAL_CALLS),
            ToolCallParser::Llama3Json => {
                let body = text.trim_start();
                let may_be_call = body.is_empty()
                    || body.starts_with('{')
                    || PYTHON_TAG.starts_with(&body[..body.len().min(PYTHON_TAG.len())]);
                if may_be_call { 0 } else { text.len() }
            }
        }
    }

    /// Splits `text` into content and calls; malformed calls leave the text
    /// as content.
    pub fn parse(self, text: &str) -> ParsedOutput {
        let parsed = match self {
            ToolCallParser::Hermes => parse_hermes(text),
            ToolCallParser::Llama3Json => parse_llama3_json(text),
            ToolCallParser::Mistral => parse_mistral(text),
        };
        parsed.unwrap_or_else(|| ParsedOutput::text_only(text))
    }
}

/// Bytes before `marker`, or before a tail of `text` that could grow into it.
fn before_marker(text: &str, marker: &str) -> usize {
    if let Some(at) = text.find(marker) {
        return at;
    }
    (1..marker.len())
        .rev()
        .find(|&n| text.ends_with(&marker[..n]))
        .map_or(text.len(), |n| text.len() - n)
}

fn non_empty(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A call object with the arguments under `arguments_key` (an object or a
/// string holding JSON).
fn call_from(value: &Value, arguments_keys: &[&str]) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?.to_string();
    let raw = arguments_keys
        .iter()
        .find_map(|k| value.get(*k))
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let arguments = match raw {
        Value::String(s) => serde_json::from_str(&s).ok()?,
        v => v,
    };
    Some(ToolCall { name, arguments })
}

fn parse_hermes(text: &str) -> Option<ParsedOutput> {
    let first = text.find(HERMES_OPEN)?;
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(start) = rest.find(HERMES_OPEN) {
        let body = &rest[start + HERMES_OPEN.len()..];
        let (inner, after) = match body.find(HERMES_CLOSE) {
            Some(end) => (&body[..end], &body[end + HERMES_CLOSE.len()..]),
            None => (body, ""),
        };
        let value: Value = serde_json::from_str(inner.trim()).ok()?;
        calls.push(call_from(&value, &["arguments", "parameters"])?);
        rest = after;
    }
    Some(ParsedOutput {
        content: non_empty(&text[..first]),
        calls,
    })
}

fn parse_llama3_json(text: &str) -> Option<ParsedOutput> {
    let body = text.trim();
    let mut rest = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let mut calls = Vec::new();
    loop {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        calls.push(call_from(&value, &["parameters", "arguments"])?);
        let after = rest[values.byte_offset()..].trim_start();
        if after.is_empty() {
            break;
        }
        rest = after.strip_prefix(';')?.trim_start();
    }
    Some(ParsedOutput {
        content: None,
        calls,
    })
}

fn parse_mistral(text: &str) -> Option<ParsedOutput> {
    let start = text.find(MISTRAL_CALLS)?;
    let content = non_empty(&text[..start]);
    let mut calls = Vec::new();
    for segment in text[start..].split(MISTRAL_CALLS).skip(1) {
        let segment = segment.trim();
        if let Some((name, args)) = segment.split_once(MISTRAL_ARGS) {
            calls.push(ToolCall {
                name: name.trim().to_string(),
                arguments: serde_json::from_str(args.trim()).ok()?,
            });
            continue;
        }
        let value: Value = serde_json::from_str(segment).ok()?;
        match value {
            Value::Array(items) => {
                for item in &items {
                    calls.push(call_from(item, &["arguments", "parameters"])?);
                }
            }
            object => calls.push(call_from(&object, &["arguments", "parameters"])?),
        }
    }
    Some(ParsedOutput { content, calls })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn streamable_prefix_stops_where_a_call_may_begin() {
        let hermes = ToolCallParser::Hermes;
        assert_eq!(hermes.streamable_prefix_len("Hello"), 5);
        assert_eq!(hermes.streamable_prefix_len("Hi <tool"), 3);
        assert_eq!(hermes.streamable_prefix_len("Hi <tool_call>{"), 3);
        assert_eq!(hermes.streamable_prefix_len("a < b"), 5);
        let mistral = ToolCallParser::Mistral;
        assert_eq!(mistral.streamable_prefix_len("ok [TOOL"), 3);
        let llama = ToolCallParser::Llama3Json;
        assert_eq!(llama.streamable_prefix_len("  "), 0);
        assert_eq!(llama.streamable_prefix_len(" {\"name\""), 0);
        assert_eq!(llama.streamable_prefix_len("<|python"), 0);
        assert_eq!(llama.streamable_prefix_len("The sky"), 7);
        assert_eq!(llama.streamable_prefix_len("<b>"), 3);
    }

    #[test]
    fn names_round_trip() {
        for p in [
            ToolCallParser::Hermes,
            ToolCallParser::Llama3Json,
            ToolCallParser::Mistral,
        ] {
            assert_eq!(p.name().parse::<ToolCallParser>().unwrap(), p);
        }
        assert!("pythonic".parse::<ToolCallParser>().is_err());
    }

    #[test]
    fn template_picks_the_format() {
        let qwen = "{% if tools %}<tool_call>\n{\"name\": ...}</tool_call>{% endif %}";
        assert_eq!(ToolCallParser::for_template(qwen), ToolCallParser::Hermes);
        assert_eq!(
            ToolCallParser::for_template("{{ '[TOOL_CALLS]' }}"),
            ToolCallParser::Mistral
        );
        assert_eq!(
            ToolCallParser::for_template("<|start_header_id|>ipython<|end_header_id|>"),
            ToolCallParser::Llama3Json
        );
        assert_eq!(
            ToolCallParser::for_template("{{ messages }}"),
            ToolCallParser::Hermes
        );
    }

    #[test]
    fn hermes_calls_and_leading_prose() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": \"{\\\"tz\\\": \\\"UTC\\\"}\"}</tool_call>";
        let p = ToolCallParser::Hermes.parse(text);
        assert_eq!(p.content.as_deref(), Some("Let me check."));
        assert_eq!(
            p.calls,
            vec![
                call("weather", json!({"city": "Paris"})),
                call("time", json!({"tz": "UTC"}))
            ]
        );
    }

    #[test]
    fn hermes_unclosed_final_call_is_accepted() {
        let p = ToolCallParser::Hermes.parse("<tool_call>{\"name\": \"f\", \"arguments\": {}}");
        assert_eq!(p.calls, vec![call("f", json!({}))]);
        assert_eq!(p.content, None);
    }

    #[test]
    fn malformed_calls_stay_text() {
        for (parser, text) in [
            (
                ToolCallParser::Hermes,
                "<tool_call>{\"name\": \"f\", </tool_call>",
            ),
            (ToolCallParser::Hermes, "no calls here"),
            (
                ToolCallParser::Hermes,
                "<tool_call>{\"arguments\": {}}</tool_call>",
            ),
            (ToolCallParser::Llama3Json, "{\"name\": \"f\"} trailing"),
            (ToolCallParser::Llama3Json, "The answer is 4."),
            (ToolCallParser::Mistral, "[TOOL_CALLS][{\"name\": 3}]"),
        ] {
            let p = parser.parse(text);
            assert!(p.calls.is_empty(), "{text}");
            assert_eq!(p.content.as_deref(), Some(text.trim()), "{text}");
        }
    }

    #[test]
    fn llama3_json_single_and_several() {
        let p = ToolCallParser::Llama3Json
            .parse("<|python_tag|>{\"name\": \"a\", \"parameters\": {\"x\": 1}}");
        assert_eq!(p.calls, vec![call("a", json!({"x": 1}))]);
        let p = ToolCallParser::Llama3Json.parse(
            "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"arguments\": {\"y\": 2}}",
        );
        assert_eq!(
            p.calls,
            vec![call("a", json!({})), call("b", json!({"y": 2}))]
        );
        assert_eq!(p.content, None);
    }

    #[test]
    fn mistral_array_and_args_forms() {
        let p = ToolCallParser::Mistral.parse(
            "Sure. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
        );
        assert_eq!(p.content.as_deref(), Some("Sure."));
        assert_eq!(
            p.calls,
            vec![call("a", json!({"x": 1})), call("b", json!({}))]
        );
        let p = ToolCallParser::Mistral.parse("[TOOL_CALLS]a[ARGS]{\"x\": 1}[TOOL_CALLS]b[ARGS]{}");
        assert_eq!(
            p.calls,
            vec![call("a", json!({"x": 1})), call("b", json!({}))]
        );
    }
}
