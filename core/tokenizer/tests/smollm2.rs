//! The real SmolLM2 vocabulary must encode exactly as transformers does:
//! from the GGUF file's metadata (skipped with a message when the model is
//! absent; `KILN_TEST_GGUF` points at it) and from the tokenizer.json,
//! tokenizer_config.json and chat_template.jinja transformers saves for it
//! (committed under `fixtures/smollm2`). Fixtures: `fixtures/make_tokenizer_fixtures.py`.

use std::path::{Path, PathBuf};

use kiln_tokenizer::{ChatContext, Tokenizer};
use serde_json::Value;

#[path = "common/gguf_meta.rs"]
mod gguf_meta;

/// The tokenizer of the default model's GGUF file, or `None` (with a
/// message) when the file is absent.
fn gguf_tokenizer() -> Option<Tokenizer> {
    let p = std::env::var_os("KILN_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !p.exists() {
        eprintln!(
            "skipping: the default model is not at {} (set KILN_TEST_GGUF)",
            p.display()
        );
        return None;
    }
    let spec = gguf_meta::tokenizer_spec(&gguf_meta::read_metadata(&p));
    Some(Tokenizer::from_gguf(spec).unwrap())
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/smollm2_encodings.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// `(text, ids, decoded)` of every case.
fn cases() -> Vec<(String, Vec<u32>, String)> {
    fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                ids(&c["ids"]),
                c["decoded"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

fn assert_matches_transformers(t: &Tokenizer) {
    let cases = cases();
    assert!(cases.len() >= 40);
    for (text, want, decoded) in cases {
        assert_eq!(t.encode(&text, false).unwrap(), want, "encoding {text:?}");
        assert_eq!(
            t.decode(&want, false).unwrap(),
            decoded,
            "decoding {text:?}"
        );
        // Byte-level BPE loses nothing.
        assert_eq!(decoded, text);
    }
}

fn assert_smollm2_specials(t: &Tokenizer) {
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.bos_token_id(), Some(1));
    assert_eq!(t.bos_token(), Some("<|im_start|>"));
    assert_eq!(t.eos_token_ids(), vec![2]);
    assert_eq!(t.eos_token(), Some("<|im_end|>"));
    assert_eq!(t.pad_token_id(), Some(2));
    assert_eq!(t.unk_token_id(), Some(0));
    assert!((0..17).all(|id| t.is_special(id)));
    assert!(!t.is_special(17) && !t.is_special(100));
    // add_bos_token is false for this model: special tokens add nothing.
    assert_eq!(t.encode("Hello", true).unwrap(), vec![19556]);
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(t.decode(&ids, true).unwrap(), "user\nHi");
    assert_eq!(t.token_to_id("Ġthe"), Some(260));
    assert_eq!(t.id_to_token(260).as_deref(), Some("Ġthe"));
}

fn assert_chat_template(t: &Tokenizer) {
    let rendered = t
        .chat_template()
        .expect("SmolLM2 has a chat template")
        .render(&ChatContext {
            messages: vec![serde_json::json!({"role": "user", "content": "Hi"})],
            add_generation_prompt: true,
            bos_token: t.bos_token().map(str::to_string),
            eos_token: t.eos_token().map(str::to_string),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gguf_vocabulary_encodes_like_transformers() {
    let Some(t) = gguf_tokenizer() else { return };
    assert_matches_transformers(&t);
    assert_smollm2_specials(&t);
    assert_chat_template(&t);
}

/// SmolLM2 was trained with digits split one by one (its published
/// tokenizer.json, and llama.cpp's `smollm`); transformers' GGUF loader
/// uses GPT-2's split alone and differs where a space precedes a
/// non-ASCII numeral. Kiln follows the published tokenizer.
#[test]
fn gguf_vocabulary_splits_digits_like_the_published_tokenizer() {
    let Some(t) = gguf_tokenizer() else { return };
    let cases = fixture()["published_pre_tokenizer_cases"].clone();
    let mut differ = 0;
    for c in cases.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(t.encode(text, false).unwrap(), ids(&c["ids"]), "{text:?}");
        differ += usize::from(c["ids"] != c["transformers_gguf_ids"]);
    }
    assert!(differ > 0, "the fixture should show where the two differ");
}

#[test]
fn transformers_saved_directory_encodes_like_transformers() {
    let t = Tokenizer::from_dir(fixture_dir()).unwrap();
    assert_matches_transformers(&t);
    assert_smollm2_specials(&t);
    assert_chat_template(&t);
    // transformers writes int(1e30) for "no limit".
    assert_eq!(t.model_max_length(), None);
}

#[test]
fn a_tokenizer_json_saved_from_the_gguf_loads_the_same() {
    let Some(t) = gguf_tokenizer() else { return };
    let dir = tempfile::tempdir().unwrap();
    t.save_tokenizer_json(&dir.path().join("tokenizer.json"))
        .unwrap();
    for f in ["tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(fixture_dir().join(f), dir.path().join(f)).unwrap();
    }
    let d = Tokenizer::from_dir(dir.path()).unwrap();
    assert_matches_transformers(&d);
    assert_smollm2_specials(&d);
    assert_chat_template(&d);
}
