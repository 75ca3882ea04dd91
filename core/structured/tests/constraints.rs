//! Constraints walked over a byte vocabulary: every path the masks allow
//! ends in text the constraint describes, and bad constraints are refused
//! with a message naming the problem.

use kiln_protocol::StructuredOutput;
use kiln_sampler::ConstraintFactory;
use kiln_structured::{Grammars, Limits, Vocabulary};
use proptest::prelude::*;

const EOS: u32 = 256;

fn grammars() -> Grammars {
    Grammars::new(Vocabulary::bytes(), Limits::default()).unwrap()
}

/// Follows the masks, choosing with `picks` (the EOS token whenever
/// allowed and the pick is even); `None` when the walk did not end in
/// `max_steps`.
fn walk(g: &Grammars, spec: &StructuredOutput, picks: &[u32], max_steps: usize) -> Option<String> {
    let mut c = g.start(spec).unwrap();
    let mut out = Vec::new();
    for step in 0..max_steps {
        let mask = c.allowed_tokens().unwrap();
        let pick = picks[step % picks.len()];
        if mask.contains(EOS) && (pick.is_multiple_of(2) || mask.count() == 1) {
            return Some(String::from_utf8(out).unwrap());
        }
        let allowed: Vec<u32> = mask.iter().filter(|&t| t != EOS).collect();
        assert!(!allowed.is_empty(), "a dead end after {out:?}");
        let token = allowed[pick as usize % allowed.len()];
        c.consume(token).unwrap();
        out.push(token as u8);
        if c.is_complete() {
            return Some(String::from_utf8(out).unwrap());
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn choices_produce_one_of_the_choices(picks in proptest::collection::vec(any::<u32>(), 1..16)) {
        let choices = vec!["yes".to_string(), "no".into(), "n/a \"quoted\"".into(), "ünï".into()];
        let spec = StructuredOutput::Choice(choices.clone());
        let text = walk(&grammars(), &spec, &picks, 64).unwrap();
        prop_assert!(choices.contains(&text), "{text:?}");
    }

    #[test]
    fn regexes_match_fully(picks in proptest::collection::vec(any::<u32>(), 1..16)) {
        let spec = StructuredOutput::Regex(r"[a-c]{2,4}-[0-9]{3}".into());
        let text = walk(&grammars(), &spec, &picks, 64).unwrap();
        let (head, tail) = text.split_once('-').unwrap();
        prop_assert!((2..=4).contains(&head.len()) && head.chars().all(|c| ('a'..='c').contains(&c)));
        prop_assert!(tail.len() == 3 && tail.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn json_schemas_produce_valid_documents(picks in proptest::collection::vec(any::<u32>(), 1..32)) {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "color": {"enum": ["red", "green"]},
                "n": {"type": "integer", "minimum": 0, "maximum": 99},
                "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
            },
            "required": ["color", "n", "tags"],
        });
        let spec = StructuredOutput::JsonSchema(schema.to_string());
        if let Some(text) = walk(&grammars(), &spec, &picks, 200) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert!(v["color"] == "red" || v["color"] == "green", "{text}");
            let n = v["n"].as_i64().unwrap();
            prop_assert!((0..=99).contains(&n));
            prop_assert!(v["tags"].as_array().unwrap().len() <= 2);
            prop_assert_eq!(v.as_object().unwrap().len(), 3);
        }
    }
}

#[test]
fn gbnf_and_lark_grammars_compile_to_the_same_language() {
    let g = grammars();
    let gbnf = StructuredOutput::Grammar("root ::= (\"ab\" | [0-9]) \"!\"".into());
    let lark = StructuredOutput::Grammar("start: (\"ab\" | /[0-9]/) \"!\"".into());
    for spec in [gbnf, lark] {
        for picks in [[0u32, 1, 3], [1, 1, 1], [5, 2, 7]] {
            let text = walk(&g, &spec, &picks, 16).unwrap();
            assert!(
                text == "ab!" || (text.len() == 2 && text.ends_with('!')),
                "{text:?}"
            );
        }
    }
}

#[test]
fn json_object_allows_only_objects() {
    let g = grammars();
    let mut c = g.start(&StructuredOutput::JsonObject).unwrap();
    let mask = c.allowed_tokens().unwrap();
    assert!(mask.contains(u32::from(b'{')));
    assert!(!mask.contains(u32::from(b'[')) && !mask.contains(EOS));
}

#[test]
fn bad_constraints_name_the_problem() {
    let g = grammars();
    let cases = [
        (StructuredOutput::Regex("(".into()), "regex"),
        (StructuredOutput::Regex("[z-a]".into()), "regex"),
        (
            StructuredOutput::JsonSchema("{\"type\": \"foo\"}".into()),
            "json_schema",
        ),
        (
            StructuredOutput::JsonSchema("{\"type\": 3}".into()),
            "json_schema",
        ),
        (
            StructuredOutput::JsonSchema("{\"$ref\": \"#/$defs/missing\"}".into()),
            "json_schema",
        ),
        (
            StructuredOutput::JsonSchema(
                "{\"minimum\": 5, \"maximum\": 1, \"type\": \"integer\"}".into(),
            ),
            "json_schema",
        ),
        (
            StructuredOutput::Grammar("start: undefined_rule".into()),
            "grammar",
        ),
        (StructuredOutput::Grammar("start: \"a".into()), "grammar"),
        (StructuredOutput::Grammar("root ::= [".into()), "grammar"),
        (StructuredOutput::Choice(vec![]), "choice"),
    ];
    for (spec, param) in cases {
        let e = g
            .check(&spec)
            .expect_err(&format!("{spec:?} should be refused"));
        assert_eq!(e.param, param);
        assert!(!e.message.is_empty());
    }
}

#[test]
fn forks_advance_independently() {
    let g = grammars();
    let spec = StructuredOutput::Choice(vec!["ab".into(), "ac".into()]);
    let mut a = g.start(&spec).unwrap();
    a.consume(u32::from(b'a')).unwrap();
    let mut b = a.fork();
    a.consume(u32::from(b'b')).unwrap();
    assert!(a.is_complete() || a.allowed_tokens().unwrap().contains(EOS));
    let mask = b.allowed_tokens().unwrap();
    assert!(mask.contains(u32::from(b'b')) && mask.contains(u32::from(b'c')));
    assert!(b.consume(u32::from(b'x')).is_err());
}

#[test]
fn pathological_constraints_compile_quickly_or_are_refused() {
    let g = grammars();
    let many: serde_json::Map<String, serde_json::Value> = (0..3000)
        .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
        .collect();
    let wide = serde_json::json!({"type": "object", "properties": many, "required": ["p0"]});
    let specs = [
        StructuredOutput::Regex(r"(a{1000}){1000}".into()),
        StructuredOutput::Regex(r"((a+)+)+c".into()),
        StructuredOutput::Regex(r"[a-z]{0,100000}".into()),
        StructuredOutput::JsonSchema(wide.to_string()),
        StructuredOutput::Regex("a".repeat(200 * 1024)),
    ];
    for spec in specs {
        let started = std::time::Instant::now();
        let result = g.check(&spec);
        let took = started.elapsed();
        assert!(took.as_secs_f64() < 2.0, "{:?}: {took:?}", spec.kind());
        if let Err(e) = result {
            assert!(!e.message.is_empty());
        }
    }
    let e = g
        .check(&StructuredOutput::Regex("a".repeat(200 * 1024)))
        .unwrap_err();
    assert!(e.message.contains("at most"), "{e}");
}
