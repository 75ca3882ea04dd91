//! JSON text written the way Python's `json.dumps` writes it, which is what
//! the `tojson` filter of Hugging Face chat templates produces: `", "` and
//! `": "` separators, `1e+16` and `1.5e-07` float spelling, optional
//! `indent`, `sort_keys`, `ensure_ascii` and custom separators.

use serde_json::Value;

/// Options of Python's `json.dumps` that chat templates pass to `tojson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStyle {
    /// Indentation per level; `None` writes everything on one line.
    pub indent: Option<String>,
    /// Between items: `", "` on one line, `","` when indented.
    pub item_separator: String,
    /// Between a key and its value.
    pub key_separator: String,
    /// Escape every non-ASCII character as `\uXXXX`.
    pub ensure_ascii: bool,
    /// Write object keys in sorted order.
    pub sort_keys: bool,
}

impl Default for JsonStyle {
    fn default() -> Self {
        JsonStyle {
            indent: None,
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            ensure_ascii: false,
            sort_keys: false,
        }
    }
}

impl JsonStyle {
    /// Python's defaults for an indentation: `","` between items, `": "` after keys.
    pub fn indented(indent: String) -> JsonStyle {
        JsonStyle {
            indent: Some(indent),
            item_separator: ",".into(),
            ..JsonStyle::default()
        }
    }
}

/// `value` as `json.dumps(value, ...)` with `style` writes it.
pub fn python_json(value: &Value, style: &JsonStyle) -> String {
    let mut out = String::new();
    write_value(value, style, 0, &mut out);
    out
}

fn newline(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_value(value: &Value, style: &JsonStyle, level: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, style.ensure_ascii, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                newline(style, level + 1, out);
                write_value(item, style, level + 1, out);
            }
            newline(style, level, out);
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                newline(style, level + 1, out);
                write_string(key, style.ensure_ascii, out);
                out.push_str(&style.key_separator);
                write_value(item, style, level + 1, out);
            }
            newline(style, level, out);
            out.push('}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    match n.as_f64() {
        Some(f) if n.is_f64() => out.push_str(&python_float(f)),
        _ => out.push_str(&n.to_string()),
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for
/// decimal exponents in `-4..16`, otherwise `d.ddde+XX`.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, like Python.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        format!("{sign}{}", positional(&digits, exponent))
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs())
    }
}

/// `digits` (`d1 d2 ...`, the value `d1.d2... × 10^exponent`) in positional notation.
fn positional(digits: &str, exponent: i32) -> String {
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("0.{zeros}{digits}");
    }
    let int_len = exponent as usize + 1;
    if digits.len() <= int_len {
        format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
    } else {
        format!("{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

fn write_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn floats_are_spelled_like_python() {
        let cases = [
            (0.1, "0.1"),
            (3.0, "3.0"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (1e-4, "0.0001"),
            (123456789.125, "123456789.125"),
            (-2.5e20, "-2.5e+20"),
            (1e15, "1000000000000000.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float(f), want, "{f}");
        }
    }

    #[test]
    fn separators_indent_and_escapes() {
        let v = json!({"b": [1, 2.0, {"x": null}], "a": "é\u{1}\"\n"});
        assert_eq!(
            python_json(&v, &JsonStyle::default()),
            r#"{"b": [1, 2.0, {"x": null}], "a": "é\u0001\"\n"}"#
        );
        let ascii = JsonStyle {
            ensure_ascii: true,
            sort_keys: true,
            item_separator: ",".into(),
            key_separator: ":".into(),
            ..JsonStyle::default()
        };
        assert_eq!(
            python_json(&json!({"b": "😀", "a": []}), &ascii),
            r#"{"a":[],"b":"\ud83d\ude00"}"#
        );
        assert_eq!(
            python_json(
                &json!({"a": [1], "e": {}}),
                &JsonStyle::indented("  ".into())
            ),
            "{\n  \"a\": [\n    1\n  ],\n  \"e\": {}\n}"
        );
    }

    fn json_values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            // Dyadic values, which serde_json's parser reads back exactly.
            any::<i16>().prop_map(|i| json!(i as f64 / 8.0)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn floats_read_back_exactly(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            prop_assert_eq!(python_float(f).parse::<f64>().unwrap(), f);
        }

        #[test]
        fn output_parses_back_to_the_same_value(v in json_values(), ascii in any::<bool>(), indent in any::<bool>()) {
            let mut style = if indent { JsonStyle::indented("\t".into()) } else { JsonStyle::default() };
            style.ensure_ascii = ascii;
            let text = python_json(&v, &style);
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, v);
            if ascii {
                prop_assert!(text.is_ascii());
            }
        }
    }
}
