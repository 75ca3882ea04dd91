//! Structured-output constraints that force tool calls (`tool_choice`
//! `required` or a named function): the model writes the calls as plain
//! JSON, so the arguments always validate against the tool's parameters,
//! and the server reads them back with [`parse_forced_calls`].

use kiln_protocol::StructuredOutput;
use kiln_structured::{Grammars, Limits, Vocabulary};
use serde_json::{Value, json};

use super::{FunctionTool, ToolCall};

/// Which calls the constraint forces.
#[derive(Debug, Clone, PartialEq)]
pub enum ForcedCalls {
    /// One call of this function: the output is `{"name": ..., "arguments": {...}}`.
    Named(FunctionTool),
    /// At least one call of any of these tools (at most one unless
    /// `parallel`): the output is a JSON array of call objects.
    Required {
        /// The tools the model may call.
        tools: Vec<FunctionTool>,
        /// Several calls allowed.
        parallel: bool,
    },
}

fn call_schema(tool: &FunctionTool) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            "arguments": tool.parameters,
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// The JSON Schema the output must follow.
pub fn forced_calls_schema(forced: &ForcedCalls) -> Value {
    match forced {
        ForcedCalls::Named(tool) => call_schema(tool),
        ForcedCalls::Required { tools, parallel } => {
            let mut schema = json!({
                "type": "array",
                "minItems": 1,
                "items": {"anyOf": tools.iter().map(call_schema).collect::<Vec<_>>()},
            });
            if !parallel {
                schema["maxItems"] = json!(1);
            }
            schema
        }
    }
}

/// The request's structured output for `forced`.
pub fn forced_calls_constraint(forced: &ForcedCalls) -> StructuredOutput {
    StructuredOutput::JsonSchema(forced_calls_schema(forced).to_string())
}

/// Reads the calls back from constrained output; `None` when the output
/// was cut short (e.g. by `max_tokens`) and is not complete JSON.
pub fn parse_forced_calls(forced: &ForcedCalls, text: &str) -> Option<Vec<ToolCall>> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    let objects = match (forced, value) {
        (ForcedCalls::Named(_), object @ Value::Object(_)) => vec![object],
        (ForcedCalls::Required { .. }, Value::Array(items)) => items,
        _ => return None,
    };
    objects
        .into_iter()
        .map(|o| {
            Some(ToolCall {
                name: o.get("name")?.as_str()?.to_string(),
                arguments: o.get("arguments")?.clone(),
            })
        })
        .collect()
}

/// Checks that a tool's `parameters` is a JSON Schema the grammar compiler
/// accepts, so that a bad schema is a 400 whatever the tool choice.
pub fn check_parameters(parameters: &Value) -> Result<(), String> {
    if !parameters.is_object() {
        return Err("`parameters` must be a JSON Schema object".into());
    }
    let grammars = Grammars::new(Vocabulary::bytes(), Limits::default())?;
    grammars
        .check(&StructuredOutput::JsonSchema(parameters.to_string()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> FunctionTool {
        FunctionTool {
            name: name.into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }
    }

    #[test]
    fn named_schema_fixes_the_name() {
        let s = forced_calls_schema(&ForcedCalls::Named(tool("weather")));
        assert_eq!(s["properties"]["name"], json!({"const": "weather"}));
        assert_eq!(s["properties"]["arguments"]["required"], json!(["city"]));
    }

    #[test]
    fn required_schema_is_an_array_of_any_tool() {
        let forced = ForcedCalls::Required {
            tools: vec![tool("a"), tool("b")],
            parallel: false,
        };
        let s = forced_calls_schema(&forced);
        assert_eq!(s["maxItems"], 1);
        assert_eq!(s["items"]["anyOf"].as_array().unwrap().len(), 2);
        let parallel = ForcedCalls::Required {
            tools: vec![tool("a")],
            parallel: true,
        };
        assert!(forced_calls_schema(&parallel).get("maxItems").is_none());
    }

    #[test]
    fn forced_schemas_compile() {
        let grammars = Grammars::new(Vocabulary::bytes(), Limits::default()).unwrap();
        for forced in [
            ForcedCalls::Named(tool("a")),
            ForcedCalls::Required {
                tools: vec![tool("a"), tool("b")],
                parallel: true,
            },
        ] {
            grammars.check(&forced_calls_constraint(&forced)).unwrap();
        }
    }

    #[test]
    fn forced_output_reads_back() {
        let named = ForcedCalls::Named(tool("a"));
        let calls = parse_forced_calls(&named, r#"{"name": "a", "arguments": {"city": "Oslo"}}"#);
        assert_eq!(calls.unwrap()[0].arguments, json!({"city": "Oslo"}));
        let required = ForcedCalls::Required {
            tools: vec![tool("a")],
            parallel: true,
        };
        let calls = parse_forced_calls(
            &required,
            r#"[{"name": "a", "arguments": {}}, {"name": "a", "arguments": {"city": "x"}}]"#,
        );
        assert_eq!(calls.unwrap().len(), 2);
        assert_eq!(parse_forced_calls(&named, r#"{"name": "a", "argu"#), None);
        assert_eq!(
            parse_forced_calls(&required, r#"{"name": "a", "arguments": {}}"#),
            None
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(check_parameters(&json!({"type": "object"})).is_ok());
        assert!(check_parameters(&json!("object")).is_err());
        assert!(check_parameters(&json!({"type": "no-such-type"})).is_err());
    }
}
