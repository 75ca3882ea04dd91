//! JSON Schema checks for structured-output tests: generated schemas of
//! nested objects, enums, arrays and required fields, and a validator for
//! the keywords they use (type, properties, required,
//! additionalProperties, enum, items, minItems/maxItems,
//! minimum/maximum, minLength/maxLength).

use serde_json::{Map, Value, json};

use crate::Rng;

/// Why `value` is not valid under `schema` (`None`: valid).
pub fn violation(schema: &Value, value: &Value) -> Option<String> {
    check(schema, value, "$")
}

fn check(schema: &Value, v: &Value, at: &str) -> Option<String> {
    let fail = |what: String| Some(format!("{at}: {what}"));
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        return fail(format!("{v} is not one of {options:?}"));
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if !ok {
            return fail(format!("{v} is not of type {t}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return fail(format!("{n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return fail(format!("{n} is above the maximum"));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            return fail(format!("{s:?} is longer than maxLength"));
        }
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            return fail(format!("{s:?} is shorter than minLength"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = name.as_str()
                && !obj.contains_key(name)
            {
                return fail(format!("missing required property {name:?}"));
            }
        }
        for (key, value) in obj {
            match props.and_then(|p| p.get(key)) {
                Some(sub) => {
                    if let Some(e) = check(sub, value, &format!("{at}.{key}")) {
                        return Some(e);
                    }
                }
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return fail(format!("unexpected property {key:?}"));
                }
                None => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return fail(format!("{n} items, fewer than minItems"));
        }
        if schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return fail(format!("{n} items, more than maxItems"));
        }
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                if let Some(e) = check(sub, item, &format!("{at}[{i}]")) {
                    return Some(e);
                }
            }
        }
    }
    None
}

const NAMES: &[&str] = &[
    "name", "city", "age", "color", "tags", "score", "active", "owner", "size", "title", "count",
    "items", "level", "email", "price", "kind",
];

/// `count` schemas from a fixed seed: objects of 2–5 properties whose
/// values are strings (bounded), integers (ranged), booleans, enums, arrays
/// (bounded) or nested objects, most of them required.
pub fn generated_schemas(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng(seed);
    (0..count).map(|_| object(&mut rng, 0)).collect()
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (((rng.next_f32() + 1.0) / 2.0) * n as f32) as usize % n
}

fn object(rng: &mut Rng, depth: usize) -> Value {
    let count = 2 + pick(rng, 4);
    let mut props = Map::new();
    let mut required = Vec::new();
    while props.len() < count {
        let name = NAMES[pick(rng, NAMES.len())];
        if props.contains_key(name) {
            continue;
        }
        props.insert(name.to_string(), value(rng, depth));
        if pick(rng, 4) != 0 {
            required.push(json!(name));
        }
    }
    json!({"type": "object", "properties": props, "required": required})
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth < 2 { 6 } else { 5 };
    match pick(rng, kinds) {
        0 => json!({"type": "string", "maxLength": 24}),
        1 => json!({"type": "integer", "minimum": 0, "maximum": 1000}),
        2 => json!({"type": "boolean"}),
        3 => {
            let options = ["red", "green", "blue", "small", "large"];
            json!({"enum": options[..2 + pick(rng, 3)]})
        }
        4 => json!({"type": "array", "items": value_leaf(rng), "maxItems": 3}),
        _ => object(rng, depth + 1),
    }
}

fn value_leaf(rng: &mut Rng) -> Value {
    match pick(rng, 3) {
        0 => json!({"type": "string", "maxLength": 12}),
        1 => json!({"type": "integer", "minimum": -5, "maximum": 50}),
        _ => json!({"enum": ["a", "b", "c"]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_catches_each_kind_of_violation() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "integer", "minimum": 0},
            "b": {"enum": ["x"]},
            "c": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
        }, "required": ["a"], "additionalProperties": false});
        assert_eq!(
            violation(&schema, &json!({"a": 1, "b": "x", "c": ["q"]})),
            None
        );
        for bad in [
            json!({"b": "x"}),
            json!({"a": -1}),
            json!({"a": 1, "b": "y"}),
            json!({"a": 1, "c": ["q", "r"]}),
            json!({"a": 1, "c": [1]}),
            json!({"a": 1, "d": 0}),
            json!([1]),
        ] {
            assert!(violation(&schema, &bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn generated_schemas_are_deterministic_and_varied() {
        let a = generated_schemas(50, 3);
        assert_eq!(a, generated_schemas(50, 3));
        let text = serde_json::to_string(&a).unwrap();
        for keyword in ["\"enum\"", "\"array\"", "\"required\"", "\"properties\":{"] {
            assert!(text.contains(keyword), "{keyword}");
        }
    }
}
