//! Ollama's `format`: `"json"` (any JSON object) or a JSON schema object,
//! as a structured output. The engine compiles it at admission; a bad
//! schema is a 400 `{"error"}` naming the problem.

use kiln_http::ApiError;
use kiln_protocol::StructuredOutput;
use serde_json::Value;

use crate::convert::bad;

/// The constraint of a `format` field (`None` when absent, null or empty).
pub fn format_spec(format: Option<&Value>) -> Result<Option<StructuredOutput>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(StructuredOutput::JsonObject)),
        Some(schema @ Value::Object(_)) => {
            Ok(Some(StructuredOutput::JsonSchema(schema.to_string())))
        }
        Some(other) => Err(bad(format!(
            "invalid format: {other}: expected \"json\" or a valid JSON schema"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats() {
        assert_eq!(format_spec(Some(&json!(""))).unwrap(), None);
        assert_eq!(
            format_spec(Some(&json!("json"))).unwrap(),
            Some(StructuredOutput::JsonObject)
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            format_spec(Some(&schema)).unwrap(),
            Some(StructuredOutput::JsonSchema(schema.to_string()))
        );
        for bad in [json!("yaml"), json!(3), json!([1])] {
            assert_eq!(format_spec(Some(&bad)).unwrap_err().status, 400);
        }
    }
}
