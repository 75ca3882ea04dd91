//! TGI's `parameters.grammar`: `{"type": "json" | "json_object", "value":
//! schema}`, `{"type": "json_schema", "value": {"name", "schema"}}` or
//! `{"type": "regex", "value": "..."}`, as a structured output. The engine
//! compiles it at admission; a bad grammar is a 422 validation error.

use kiln_http::ApiError;
use kiln_protocol::StructuredOutput;
use serde_json::Value;

use crate::validate::validation;

/// The constraint of a `grammar` parameter (`None` when absent or null).
pub fn grammar_spec(grammar: Option<&Value>) -> Result<Option<StructuredOutput>, ApiError> {
    let Some(g) = grammar.filter(|g| !g.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = g.as_object() else {
        return Err(validation(
            "`grammar` must be an object with `type` and `value`",
        ));
    };
    let value = obj.get("value").filter(|v| !v.is_null());
    let kind = obj.get("type").and_then(Value::as_str);
    let schema = |v: &Value| -> Result<StructuredOutput, ApiError> {
        match v {
            Value::Object(_) | Value::Bool(true) => Ok(StructuredOutput::JsonSchema(v.to_string())),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(|p| p.is_object())
                .map(|p| StructuredOutput::JsonSchema(p.to_string()))
                .ok_or_else(|| validation("grammar `value` is not a valid JSON schema")),
            _ => Err(validation("grammar `value` must be a JSON schema object")),
        }
    };
    match (kind, value) {
        (Some("json" | "json_object"), Some(v)) => schema(v).map(Some),
        (Some("json" | "json_object"), None) => Ok(Some(StructuredOutput::JsonObject)),
        (Some("json_schema"), Some(v)) => {
            let inner = v
                .get("schema")
                .ok_or_else(|| validation("grammar of type `json_schema` needs `value.schema`"))?;
            schema(inner).map(Some)
        }
        (Some("regex"), Some(Value::String(rx))) => Ok(Some(StructuredOutput::Regex(rx.clone()))),
        (Some("regex"), _) => Err(validation("grammar of type `regex` needs a string `value`")),
        (Some("json_schema"), None) => {
            Err(validation("grammar of type `json_schema` needs a `value`"))
        }
        (Some(other), _) => Err(validation(format!(
            "unknown grammar type `{other}`: use `json`, `json_schema` or `regex`"
        ))),
        (None, _) => Err(validation("`grammar` needs a `type`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grammar_forms() {
        let schema = json!({"type": "object"});
        for (g, want) in [
            (
                json!({"type": "json", "value": schema}),
                StructuredOutput::JsonSchema(schema.to_string()),
            ),
            (
                json!({"type": "json_object", "value": "{\"type\": \"object\"}"}),
                StructuredOutput::JsonSchema(schema.to_string()),
            ),
            (
                json!({"type": "json_schema", "value": {"name": "x", "schema": schema}}),
                StructuredOutput::JsonSchema(schema.to_string()),
            ),
            (
                json!({"type": "regex", "value": "a+"}),
                StructuredOutput::Regex("a+".into()),
            ),
            (json!({"type": "json"}), StructuredOutput::JsonObject),
        ] {
            assert_eq!(grammar_spec(Some(&g)).unwrap(), Some(want), "{g}");
        }
        assert_eq!(grammar_spec(Some(&Value::Null)).unwrap(), None);
        for g in [
            json!("json"),
            json!({"value": "a"}),
            json!({"type": "regex", "value": 3}),
            json!({"type": "lark", "value": "start: \"a\""}),
            json!({"type": "json", "value": "{nope"}),
            json!({"type": "json_schema", "value": {}}),
        ] {
            let e = grammar_spec(Some(&g)).unwrap_err();
            assert_eq!(e.status, 422, "{g}");
        }
    }
}
