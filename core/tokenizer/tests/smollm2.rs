//! The real SmolLM2 vocabulary from its GGUF file must encode exactly as
//! transformers does. Skipped with a message when the model is absent
//! (`KILN_TEST_GGUF` points at it).

use std::path::PathBuf;

use kiln_models::weights::gguf::GgufFile;
use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};

fn gguf() -> Option<GgufFile> {
    let p = std::env::var_os("KILN_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !p.exists() {
        eprintln!(
            "skipping: default model not found at {} (set KILN_TEST_GGUF)",
            p.display()
        );
        return None;
    }
    Some(GgufFile::open(p).unwrap())
}

fn tokenizer(g: &GgufFile) -> Tokenizer {
    let md = g.tokenizer_metadata().unwrap();
    Tokenizer::from_gguf(GgufTokenizerSpec {
        model: md.model,
        pre: md.pre,
        tokens: md.tokens,
        token_types: md.token_types,
        merges: md.merges,
        scores: md.scores,
        bos_token_id: md.bos_token_id,
        eos_token_id: md.eos_token_id,
        unknown_token_id: md.unknown_token_id,
        padding_token_id: md.padding_token_id,
        add_bos_token: md.add_bos_token,
        add_eos_token: md.add_eos_token,
        add_space_prefix: md.add_space_prefix,
        chat_template: md.chat_template,
    })
    .unwrap()
}

fn cases() -> Vec<(String, Vec<u32>, String)> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_encodings.json")).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                c["decoded"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn gguf_vocabulary_encodes_like_transformers() {
    let Some(g) = gguf() else { return };
    let t = tokenizer(&g);
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.bos_token_id(), Some(1));
    assert_eq!(t.eos_token_ids(), vec![2]);
    assert_eq!(t.eos_token(), Some("<|im_end|>"));
    assert!(t.is_special(0) && t.is_special(2) && !t.is_special(100));
    for (text, ids, decoded) in cases() {
        assert_eq!(t.encode(&text, false).unwrap(), ids, "encoding {text:?}");
        assert_eq!(t.decode(&ids, false).unwrap(), decoded, "decoding {text:?}");
    }
    // add_bos_token is false for this model: special tokens add nothing.
    assert_eq!(
        t.encode("Hello", true).unwrap(),
        t.encode("Hello", false).unwrap()
    );
    let rendered = t
        .chat_template()
        .unwrap()
        .render(&kiln_tokenizer::ChatContext {
            messages: vec![serde_json::json!({"role": "user", "content": "Hi"})],
            add_generation_prompt: true,
            ..Default::default()
        })
        .unwrap();
    assert!(
        rendered.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{rendered}"
    );
}

#[test]
fn a_saved_tokenizer_json_directory_loads_the_same() {
    let Some(g) = gguf() else { return };
    let t = tokenizer(&g);
    let dir = tempfile::tempdir().unwrap();
    t.save_tokenizer_json(&dir.path().join("tokenizer.json"))
        .unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": "{{ messages[0]['content'] }}"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [2, 0]}"#,
    )
    .unwrap();
    let d = Tokenizer::from_dir(dir.path()).unwrap();
    for (text, ids, _) in cases() {
        assert_eq!(d.encode(&text, false).unwrap(), ids, "{text:?}");
    }
    assert_eq!(d.eos_token_ids(), vec![2, 0]);
    assert_eq!(d.bos_token_id(), Some(1));
    assert!(d.is_special(2));
    assert!(d.chat_template().is_some());
}

#[test]
fn missing_tokenizer_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
