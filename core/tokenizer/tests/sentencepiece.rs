//! The `llama` (SentencePiece) GGUF path on a tiny vocabulary: merges
//! recovered from the scores, `▁` handling, byte fallback, special and
//! user-defined tokens, BOS — compared with what transformers builds from
//! the same vocabulary written to a GGUF file (`fixtures/spm_tiny.json`),
//! except where transformers' `▁` prefix differs from llama.cpp's, which
//! Kiln follows (see `LLAMACPP_PIECES`).

use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};
use proptest::prelude::*;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/spm_tiny.json")).unwrap()
}

fn get<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> T {
    serde_json::from_value(v[key].clone()).unwrap()
}

fn spec() -> GgufTokenizerSpec {
    let s = &fixture()["spec"];
    GgufTokenizerSpec {
        model: get(s, "model"),
        tokens: get(s, "tokens"),
        token_types: get(s, "token_types"),
        scores: Some(get(s, "scores")),
        bos_token_id: get(s, "bos_token_id"),
        eos_token_id: get(s, "eos_token_id"),
        unknown_token_id: get(s, "unknown_token_id"),
        ..Default::default()
    }
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect()
}

/// Texts Kiln encodes as llama.cpp does rather than as transformers' GGUF
/// loader: llama.cpp (like the legacy `tokenizer.json` of Llama 2 and
/// Phi-3, on which llama.cpp's own test vectors were made) prefixes `▁` to
/// the text and to the text after every special or user-defined token, even
/// when it already starts with a space; transformers prefixes only the start
/// of the text, and only when it does not begin with `▁`.
const LLAMACPP_PIECES: &[(&str, &[&str])] = &[
    (" hello", &["▁", "▁hello"]),
    (
        "  hello  world  ",
        &["▁", "▁", "▁hello", "▁", "▁world", "▁", "▁"],
    ),
    ("<s>hello</s>", &["<s>", "▁hello", "</s>"]),
    ("hello<s> world", &["▁hello", "<s>", "▁", "▁world"]),
    (
        "<|im_start|>user hello",
        &["<|im_start|>", "▁", "u", "s", "er", "▁hello"],
    ),
    ("a<tool>b", &["▁a", "<tool>", "▁", "b"]),
    (" ", &["▁", "▁"]),
    ("▁hello", &["▁", "▁hello"]),
];

#[test]
fn encodes_like_llamacpp_and_decodes_like_transformers() {
    let t = Tokenizer::from_gguf(spec()).unwrap();
    let fixture = fixture();
    let bos = t.bos_token_id().unwrap();
    let mut llamacpp_cases = 0;
    for c in fixture["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let plain = ids(&c["ids"]);
        let got = t.encode(text, false).unwrap();
        match LLAMACPP_PIECES.iter().find(|(t, _)| *t == text) {
            Some((_, want)) => {
                assert_eq!(pieces(&t, &got), *want, "{text:?}");
                llamacpp_cases += 1;
            }
            None => assert_eq!(
                got,
                plain,
                "{text:?}: {:?} vs {:?}",
                pieces(&t, &got),
                pieces(&t, &plain)
            ),
        }
        let with_bos: Vec<u32> = std::iter::once(bos).chain(got).collect();
        assert_eq!(t.encode(text, true).unwrap(), with_bos, "{text:?}");
        assert_eq!(
            t.decode(&plain, false).unwrap(),
            c["decoded"].as_str().unwrap(),
            "{text:?}"
        );
        let with_special = ids(&c["ids_with_special"]);
        assert_eq!(
            t.decode(&with_special, true).unwrap(),
            c["decoded_skip_special"].as_str().unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(llamacpp_cases, LLAMACPP_PIECES.len());
}

/// The merges recovered from the scores come out in transformers' order
/// (the fixture ties scores on purpose). Checked through encoding: each
/// merge applied alone to its two halves must produce the merged piece.
#[test]
fn merge_order_matches_transformers() {
    let t = Tokenizer::from_gguf(spec()).unwrap();
    let merges: Vec<String> = serde_json::from_value(fixture()["merges"].clone()).unwrap();
    assert!(merges.len() > 20);
    // "▁th e" outranks "▁t he" (same score, longer left part): "the" ends as "▁the".
    assert_eq!(pieces(&t, &t.encode("the", false).unwrap()), ["▁the"]);
    // "ll o" (vocabulary order) outranks "▁h e" at the same score, so
    // "hello" becomes ▁h + e + llo → "▁he" + "llo" → "▁hello".
    assert_eq!(pieces(&t, &t.encode("hello", false).unwrap()), ["▁hello"]);
    let json: Value =
        serde_json::from_str(&saved_json(&t)).expect("the saved tokenizer.json parses");
    let saved: Vec<String> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::Array(pair) => format!(
                "{} {}",
                pair[0].as_str().unwrap(),
                pair[1].as_str().unwrap()
            ),
            other => other.as_str().unwrap().to_string(),
        })
        .collect();
    assert_eq!(saved, merges);
}

fn saved_json(t: &Tokenizer) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    t.save_tokenizer_json(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn special_tokens_and_bos() {
    let t = Tokenizer::from_gguf(spec()).unwrap();
    assert_eq!(t.bos_token_id(), Some(1));
    assert_eq!(t.bos_token(), Some("<s>"));
    assert_eq!(t.eos_token_ids(), vec![2]);
    assert_eq!(t.unk_token_id(), Some(0));
    assert!(t.is_special(0) && t.is_special(1) && t.is_special(2) && t.is_special(259));
    // User-defined tokens stay whole but are not special; byte tokens are plain.
    assert!(!t.is_special(260) && !t.is_special(3));
    assert_eq!(t.vocab_size(), spec().tokens.len());
}

/// `add_space_prefix = false` (llama.cpp's key): no `▁` before the text and
/// no space stripped when decoding. transformers ignores this key and always
/// prefixes; Kiln follows the file.
#[test]
fn without_a_space_prefix() {
    let t = Tokenizer::from_gguf(GgufTokenizerSpec {
        add_space_prefix: Some(false),
        ..spec()
    })
    .unwrap();
    let hello = t.encode("hello world", false).unwrap();
    assert_eq!(pieces(&t, &hello), ["he", "llo", "▁world"]);
    assert_eq!(t.decode(&hello, false).unwrap(), "hello world");
    let spaced = t.encode(" hello", false).unwrap();
    assert_eq!(pieces(&t, &spaced), ["▁hello"]);
    assert_eq!(t.decode(&spaced, false).unwrap(), " hello");
}

/// Merges given in the file are used as they are, not recovered from scores.
#[test]
fn merges_from_the_file_win() {
    let t = Tokenizer::from_gguf(GgufTokenizerSpec {
        merges: vec!["▁ h".into(), "l l".into()],
        ..spec()
    })
    .unwrap();
    assert_eq!(
        pieces(&t, &t.encode("hello", false).unwrap()),
        ["▁h", "e", "ll", "o"]
    );
}

proptest! {
    /// Byte fallback covers every character: text survives a round trip
    /// (the one `▁` prefixed on encoding is stripped on decoding).
    #[test]
    fn round_trip(text in "[^ ▁<][^▁<]{0,30}") {
        let t = Tokenizer::from_gguf(spec()).unwrap();
        let ids = t.encode(&text, false).unwrap();
        prop_assert_eq!(t.decode(&ids, false).unwrap(), text);
    }
}
