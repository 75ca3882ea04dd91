//! A request's [`StructuredOutput`] as an llguidance grammar.
//!
//! JSON schemas are compiled with compact separators (`", "`, `": "`) and no
//! free whitespace, and objects that list their properties get
//! `additionalProperties: false` unless the schema says otherwise: every
//! output still validates against the schema as sent, and a model cannot
//! wander off into whitespace or invented keys.

use llguidance::api::TopLevelGrammar;
use serde_json::{Map, Value, json};

use crate::StructuredOutput;
use crate::gbnf::{gbnf_to_lark, is_gbnf};
use crate::limits::{ConstraintError, Limits};

/// The llguidance grammar of `spec`, after the size checks of `limits`.
pub fn top_level_grammar(
    spec: &StructuredOutput,
    limits: &Limits,
) -> Result<TopLevelGrammar, ConstraintError> {
    let param = spec.kind();
    let too_big = |what: &str, len: usize| {
        ConstraintError::new(
            param,
            format!(
                "the {what} is {len} bytes; at most {} are allowed",
                limits.max_spec_bytes
            ),
        )
    };
    match spec {
        StructuredOutput::JsonObject => Ok(json_grammar(json!({"type": "object"}))),
        StructuredOutput::JsonSchema(text) => {
            if text.len() > limits.max_spec_bytes {
                return Err(too_big("JSON schema", text.len()));
            }
            let schema: Value = serde_json::from_str(text).map_err(|e| {
                ConstraintError::new(param, format!("the schema is not valid JSON: {e}"))
            })?;
            let schema = match schema {
                Value::Bool(true) => json!({}),
                Value::Object(_) => schema,
                other => {
                    return Err(ConstraintError::new(
                        param,
                        format!(
                            "a JSON schema must be an object or `true`, got {}",
                            kind_of(&other)
                        ),
                    ));
                }
            };
            Ok(json_grammar(close_objects(schema)))
        }
        StructuredOutput::Regex(rx) => {
            if rx.len() > limits.max_spec_bytes {
                return Err(too_big("regex", rx.len()));
            }
            if rx.is_empty() {
                return Err(ConstraintError::new(param, "the regex is empty"));
            }
            Ok(TopLevelGrammar::from_regex(rx))
        }
        StructuredOutput::Choice(choices) => {
            if choices.is_empty() {
                return Err(ConstraintError::new(param, "the list of choices is empty"));
            }
            if choices.len() > limits.max_choices {
                return Err(ConstraintError::new(
                    param,
                    format!(
                        "{} choices; at most {} are allowed",
                        choices.len(),
                        limits.max_choices
                    ),
                ));
            }
            let total: usize = choices.iter().map(String::len).sum();
            if total > limits.max_spec_bytes {
                return Err(too_big("list of choices", total));
            }
            if choices.iter().any(String::is_empty) {
                return Err(ConstraintError::new(param, "a choice is the empty string"));
            }
            let alternatives: Vec<String> = choices
                .iter()
                .map(|c| Value::String(c.clone()).to_string())
                .collect();
            Ok(TopLevelGrammar::from_lark(format!(
                "start: {}",
                alternatives.join(" | ")
            )))
        }
        StructuredOutput::Grammar(text) => {
            if text.len() > limits.max_spec_bytes {
                return Err(too_big("grammar", text.len()));
            }
            if text.trim().is_empty() {
                return Err(ConstraintError::new(param, "the grammar is empty"));
            }
            let lark = if is_gbnf(text) {
                gbnf_to_lark(text).map_err(|e| ConstraintError::new(param, e))?
            } else {
                text.clone()
            };
            Ok(TopLevelGrammar::from_lark(lark))
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The grammar of documents valid under `schema`, compactly formatted.
fn json_grammar(mut schema: Value) -> TopLevelGrammar {
    if let Value::Object(root) = &mut schema {
        root.insert(
            "x-guidance".to_string(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            }),
        );
    }
    TopLevelGrammar::from_json_schema(schema)
}

/// Keywords whose value is one subschema.
const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
];
/// Keywords whose value is a list of subschemas.
const SUBSCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// `schema` with `additionalProperties: false` on every object schema that
/// lists `properties` and says nothing about other keys.
fn close_objects(mut schema: Value) -> Value {
    close_in_place(&mut schema);
    schema
}

fn close_in_place(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if map.contains_key("properties")
        && ![
            "additionalProperties",
            "patternProperties",
            "unevaluatedProperties",
        ]
        .iter()
        .any(|k| map.contains_key(*k))
        && !has_composition(map)
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        let key = key.as_str();
        if SUBSCHEMA.contains(&key) || key == "additionalProperties" {
            close_in_place(value);
        } else if SUBSCHEMA_LISTS.contains(&key) {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(close_in_place);
            }
        } else if SUBSCHEMA_MAPS.contains(&key)
            && let Value::Object(entries) = value
        {
            entries.values_mut().for_each(close_in_place);
        }
    }
}

/// Whether keys may also come from a composed schema (closing this one
/// would reject them).
fn has_composition(map: &Map<String, Value>) -> bool {
    ["allOf", "anyOf", "oneOf", "$ref", "if", "dependentSchemas"]
        .iter()
        .any(|k| map.contains_key(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_with_properties_are_closed_unless_told_otherwise() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "c": {"type": "object", "properties": {}, "additionalProperties": true},
                "d": {"type": "array", "items": {"properties": {"e": {}}}},
            },
            "$defs": {"x": {"properties": {"y": {}}, "allOf": [{"properties": {"z": {}}}]}},
        });
        let closed = close_objects(schema);
        assert_eq!(closed["additionalProperties"], json!(false));
        assert_eq!(
            closed["properties"]["a"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(
            closed["properties"]["c"]["additionalProperties"],
            json!(true)
        );
        assert_eq!(
            closed["properties"]["d"]["items"]["additionalProperties"],
            json!(false)
        );
        // Composed with allOf: left open; the composed part is closed.
        assert!(closed["$defs"]["x"].get("additionalProperties").is_none());
        assert_eq!(
            closed["$defs"]["x"]["allOf"][0]["additionalProperties"],
            json!(false)
        );
    }

    #[test]
    fn size_limits_name_the_numbers() {
        let limits = Limits {
            max_spec_bytes: 10,
            max_choices: 2,
            ..Limits::default()
        };
        let e = top_level_grammar(&StructuredOutput::Regex("a".repeat(11)), &limits).unwrap_err();
        assert_eq!(e.param, "regex");
        assert!(
            e.message.contains("11 bytes") && e.message.contains("10"),
            "{e}"
        );
        let e = top_level_grammar(
            &StructuredOutput::Choice(vec!["a".into(), "b".into(), "c".into()]),
            &limits,
        )
        .unwrap_err();
        assert!(e.message.contains("3 choices"), "{e}");
    }

    #[test]
    fn schemas_must_be_objects() {
        let e = top_level_grammar(
            &StructuredOutput::JsonSchema("[1]".into()),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("an array"), "{e}");
        let e = top_level_grammar(
            &StructuredOutput::JsonSchema("{".into()),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
    }
}
