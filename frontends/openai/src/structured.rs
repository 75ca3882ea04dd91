//! Structured outputs as OpenAI and vLLM clients ask for them:
//! `response_format` (`text`, `json_object`, `json_schema` with `strict`),
//! vLLM's `structured_outputs: {json|regex|choice|grammar|json_object}` and
//! the older `guided_json`, `guided_regex`, `guided_choice`,
//! `guided_grammar`. At most one may be given. The engine checks and
//! compiles the constraint at admission; a bad one is a 400 naming it.

use kiln_http::{ApiError, Dialect};
use kiln_protocol::StructuredOutput;
use serde_json::Value;

use crate::request::VllmExtras;

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Dialect::OpenAi, param, message)
}

/// The constraint a request asks for (`None`: free text).
pub fn structured_output(
    response_format: Option<&Value>,
    extra: &VllmExtras,
) -> Result<Option<StructuredOutput>, ApiError> {
    let mut found: Vec<(&str, StructuredOutput)> = Vec::new();
    if let Some(spec) = response_format_spec(response_format)? {
        found.push(("response_format", spec));
    }
    if let Some(v) = present(&extra.structured_outputs) {
        found.push(("structured_outputs", structured_outputs_spec(v)?));
    }
    let legacy: [(&str, &Option<Value>, SpecParser); 4] = [
        ("guided_json", &extra.guided_json, json_spec),
        ("guided_regex", &extra.guided_regex, regex_spec),
        ("guided_choice", &extra.guided_choice, choice_spec),
        ("guided_grammar", &extra.guided_grammar, grammar_spec),
    ];
    for (name, value, parse) in legacy {
        if let Some(v) = present(value) {
            found.push((name, parse(name, v)?));
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop().map(|(_, spec)| spec)),
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            Err(bad(
                names[1],
                format!(
                    "only one kind of structured output may be requested, got {}",
                    names.join(" and ")
                ),
            ))
        }
    }
}

/// Parses one legacy `guided_*` field (named by the first argument).
type SpecParser = fn(&str, &Value) -> Result<StructuredOutput, ApiError>;

fn present(v: &Option<Value>) -> Option<&Value> {
    v.as_ref().filter(|v| !v.is_null())
}

/// Chat's `response_format` (`text`, `json_object`, `json_schema`) as a
/// structured output; `text` and null are none.
fn response_format_spec(format: Option<&Value>) -> Result<Option<StructuredOutput>, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let param = "response_format";
    let Some(obj) = format.as_object() else {
        return Err(bad(param, "`response_format` must be an object"));
    };
    // TGI's chat route takes its grammar here: `{type: json|json_object|regex,
    // value}` (huggingface_hub sends JSON schemas this way).
    if let Some(value) = obj.get("value").filter(|v| !v.is_null()) {
        return match obj.get("type").and_then(Value::as_str) {
            Some("json" | "json_object") => json_spec(param, value).map(Some),
            Some("regex") => regex_spec(param, value).map(Some),
            _ => Err(bad(
                param,
                "a `response_format` with a `value` must have type `json`, `json_object` or `regex`",
            )),
        };
    }
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object" | "json") => Ok(Some(StructuredOutput::JsonObject)),
        Some("json_schema") => {
            let spec = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    bad(
                        param,
                        "`response_format` of type `json_schema` needs a `json_schema` object",
                    )
                })?;
            if let Some(name) = spec.get("name")
                && !name.as_str().is_some_and(valid_schema_name)
            {
                return Err(bad(
                    param,
                    "`response_format.json_schema.name` must be 1 to 64 letters, digits, `_` or `-`",
                ));
            }
            if spec
                .get("strict")
                .is_some_and(|s| !s.is_boolean() && !s.is_null())
            {
                return Err(bad(
                    param,
                    "`response_format.json_schema.strict` must be a boolean",
                ));
            }
            match spec.get("schema") {
                None | Some(Value::Null) => Err(bad(
                    param,
                    "`response_format.json_schema.schema` is required",
                )),
                Some(schema) => json_spec(param, schema).map(Some),
            }
        }
        Some("structural_tag") => Err(bad(
            param,
            "`response_format` of type `structural_tag` is not supported; use `json_schema`",
        )),
        Some(other) => Err(bad(
            param,
            format!(
                "unknown `response_format` type `{other}`: use `text`, `json_object` or `json_schema`"
            ),
        )),
        None => Err(bad(param, "`response_format` needs a `type`")),
    }
}

fn valid_schema_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// vLLM's `structured_outputs` object: exactly one of its constraint keys.
fn structured_outputs_spec(v: &Value) -> Result<StructuredOutput, ApiError> {
    let param = "structured_outputs";
    let Some(obj) = v.as_object() else {
        return Err(bad(param, "`structured_outputs` must be an object"));
    };
    let mut specs = Vec::new();
    for (key, value) in obj.iter().filter(|(_, v)| !v.is_null()) {
        let spec = match key.as_str() {
            "json" => json_spec(param, value)?,
            "regex" => regex_spec(param, value)?,
            "choice" => choice_spec(param, value)?,
            "grammar" => grammar_spec(param, value)?,
            "json_object" if value.as_bool() == Some(true) => StructuredOutput::JsonObject,
            "json_object" => continue,
            "structural_tag" => {
                return Err(bad(
                    param,
                    "`structured_outputs.structural_tag` is not supported; use `json`",
                ));
            }
            // Backend selection and whitespace options: Kiln has one backend.
            "backend"
            | "disable_fallback"
            | "disable_any_whitespace"
            | "disable_additional_properties"
            | "whitespace_pattern" => continue,
            other => {
                return Err(bad(
                    param,
                    format!(
                        "unknown key `{other}` in `structured_outputs`: use `json`, `regex`, `choice`, `grammar` or `json_object`"
                    ),
                ));
            }
        };
        specs.push(spec);
    }
    match specs.len() {
        1 => Ok(specs.pop().expect("one spec")),
        0 => Err(bad(
            param,
            "`structured_outputs` needs one of `json`, `regex`, `choice`, `grammar`, `json_object`",
        )),
        n => Err(bad(
            param,
            format!("`structured_outputs` must hold one constraint, got {n}"),
        )),
    }
}

/// A JSON schema as an object, `true`, or a string holding one.
fn json_spec(param: &str, v: &Value) -> Result<StructuredOutput, ApiError> {
    match v {
        Value::Object(_) | Value::Bool(true) => Ok(StructuredOutput::JsonSchema(v.to_string())),
        Value::String(s) => {
            let parsed: Value = serde_json::from_str(s)
                .map_err(|e| bad(param, format!("`{param}` is not a valid JSON schema: {e}")))?;
            json_spec(param, &parsed)
        }
        _ => Err(bad(
            param,
            format!("`{param}` must be a JSON schema (an object)"),
        )),
    }
}

fn regex_spec(param: &str, v: &Value) -> Result<StructuredOutput, ApiError> {
    v.as_str()
        .map(|s| StructuredOutput::Regex(s.to_string()))
        .ok_or_else(|| bad(param, format!("`{param}` regex must be a string")))
}

fn choice_spec(param: &str, v: &Value) -> Result<StructuredOutput, ApiError> {
    let items = v.as_array().ok_or_else(|| {
        bad(
            param,
            format!("`{param}` choices must be a list of strings"),
        )
    })?;
    items
        .iter()
        .map(|c| c.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .map(StructuredOutput::Choice)
        .ok_or_else(|| {
            bad(
                param,
                format!("`{param}` choices must be a list of strings"),
            )
        })
}

fn grammar_spec(param: &str, v: &Value) -> Result<StructuredOutput, ApiError> {
    v.as_str()
        .map(|s| StructuredOutput::Grammar(s.to_string()))
        .ok_or_else(|| bad(param, format!("`{param}` grammar must be a string")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn extras(v: Value) -> VllmExtras {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn response_formats() {
        let none = VllmExtras::default();
        assert_eq!(
            structured_output(Some(&json!({"type": "text"})), &none).unwrap(),
            None
        );
        assert_eq!(
            structured_output(Some(&json!({"type": "json_object"})), &none).unwrap(),
            Some(StructuredOutput::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let rf = json!({"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": true}});
        assert_eq!(
            structured_output(Some(&rf), &none).unwrap(),
            Some(StructuredOutput::JsonSchema(schema.to_string()))
        );
        assert_eq!(
            structured_output(
                Some(&json!({"type": "json_object", "value": schema})),
                &none
            )
            .unwrap(),
            Some(StructuredOutput::JsonSchema(schema.to_string()))
        );
        assert_eq!(
            structured_output(Some(&json!({"type": "regex", "value": "a+"})), &none).unwrap(),
            Some(StructuredOutput::Regex("a+".into()))
        );
        for bad_format in [
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"name": "a"}}),
            json!({"type": "xml"}),
            json!("json"),
        ] {
            assert!(
                structured_output(Some(&bad_format), &none).is_err(),
                "{bad_format}"
            );
        }
    }

    #[test]
    fn vllm_extras() {
        let cases = [
            (
                json!({"guided_regex": "[0-9]+"}),
                StructuredOutput::Regex("[0-9]+".into()),
            ),
            (
                json!({"guided_choice": ["a", "b"]}),
                StructuredOutput::Choice(vec!["a".into(), "b".into()]),
            ),
            (
                json!({"guided_json": "{\"type\": \"object\"}"}),
                StructuredOutput::JsonSchema("{\"type\":\"object\"}".into()),
            ),
            (
                json!({"structured_outputs": {"grammar": "root ::= \"x\"", "backend": "auto"}}),
                StructuredOutput::Grammar("root ::= \"x\"".into()),
            ),
            (
                json!({"structured_outputs": {"json_object": true}}),
                StructuredOutput::JsonObject,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(structured_output(None, &extras(body)).unwrap(), Some(want));
        }
        let e = structured_output(
            Some(&json!({"type": "json_object"})),
            &extras(json!({"guided_regex": "a"})),
        )
        .unwrap_err();
        assert!(
            e.message.contains("response_format and guided_regex"),
            "{}",
            e.message
        );
        for body in [
            json!({"guided_choice": "a"}),
            json!({"guided_regex": 3}),
            json!({"structured_outputs": {"regex": "a", "choice": ["a"]}}),
            json!({"structured_outputs": {}}),
            json!({"structured_outputs": {"xml": "<a/>"}}),
            json!({"guided_json": "{not json"}),
        ] {
            assert!(
                structured_output(None, &extras(body.clone())).is_err(),
                "{body}"
            );
        }
    }
}
