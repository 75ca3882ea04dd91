//! `Tokenizer::from_dir` reads the optional files of a Hugging Face model
//! directory the way transformers does, and names the file at fault.

use std::path::Path;

use kiln_tokenizer::{ChatContext, GgufTokenizerSpec, Tokenizer, TokenizerError};

/// A directory holding the tokenizer.json of a small byte-level vocabulary:
/// the 256 bytes, "ab", and `<s>`, `</s>`, `<pad>`, `<|eot|>`, `<extra>`.
fn directory() -> tempfile::TempDir {
    let mut tokens: Vec<String> = Vec::new();
    let chars: Vec<char> = ('!'..='~')
        .chain('¡'..='¬')
        .chain('®'..='ÿ')
        .chain((256u32..324).filter_map(char::from_u32))
        .collect();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    tokens.extend(["ab", "<s>", "</s>", "<pad>", "<|eot|>", "<extra>"].map(String::from));
    let mut types = vec![1; 257];
    types.extend([3, 3, 1, 3, 1]);
    let t = Tokenizer::from_gguf(GgufTokenizerSpec {
        model: "gpt2".into(),
        tokens,
        token_types: types,
        merges: vec!["a b".into()],
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.save_tokenizer_json(&dir.path().join("tokenizer.json"))
        .unwrap();
    dir
}

const S: u32 = 257;
const EOS: u32 = 258;
const PAD: u32 = 259;
const EOT: u32 = 260;
const EXTRA: u32 = 261;

fn write(dir: &Path, name: &str, text: &str) {
    if let Some(parent) = dir.join(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(dir.join(name), text).unwrap();
}

fn render(t: &Tokenizer) -> String {
    t.chat_template()
        .expect("a chat template")
        .render(&ChatContext::default())
        .unwrap()
}

#[test]
fn tokenizer_json_alone_has_no_extras() {
    let dir = directory();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        t.encode("ab a", true).unwrap(),
        vec![S - 1, 'Ġ' as u32 - 256 + 188, 'a' as u32 - 33]
    );
    assert_eq!(t.bos_token_id(), None);
    assert!(t.eos_token_ids().is_empty());
    assert!(t.chat_template().is_none());
    assert!(t.is_special(S) && t.is_special(EOT) && !t.is_special(PAD));
}

#[test]
fn config_files_name_tokens_ids_and_templates() {
    let dir = directory();
    let d = dir.path();
    write(
        d,
        "tokenizer_config.json",
        r#"{
            "bos_token": {"__type": "AddedToken", "content": "<s>", "special": true},
            "eos_token": "</s>",
            "pad_token": {"content": "<pad>"},
            "additional_special_tokens": ["<extra>"],
            "add_bos_token": true,
            "model_max_length": 8192,
            "chat_template": [
                {"name": "default", "template": "config {{ bos_token }}"},
                {"name": "tool_use", "template": "tools {{ tools | length }}"}
            ]
        }"#,
    );
    write(
        d,
        "generation_config.json",
        r#"{"eos_token_id": [258, 260]}"#,
    );
    write(
        d,
        "config.json",
        r#"{"eos_token_id": 261, "bos_token_id": 0}"#,
    );
    write(d, "additional_chat_templates/rag.jinja", "rag");
    let t = Tokenizer::from_dir(d).unwrap();
    assert_eq!(t.bos_token_id(), Some(S));
    assert_eq!(t.bos_token(), Some("<s>"));
    assert_eq!(t.eos_token(), Some("</s>"));
    assert_eq!(t.eos_token_ids(), vec![EOS, EOT, EXTRA]);
    assert_eq!(t.pad_token_id(), Some(PAD));
    assert_eq!(t.model_max_length(), Some(8192));
    // Named special tokens are special, and never split.
    assert!(t.is_special(PAD) && t.is_special(EXTRA));
    assert_eq!(
        t.encode("a<extra>", false).unwrap(),
        vec!['a' as u32 - 33, EXTRA]
    );
    assert_eq!(t.decode(&[S, 'a' as u32 - 33, PAD], true).unwrap(), "a");
    // add_bos_token adds BOS with special tokens only.
    assert_eq!(t.encode("a", true).unwrap(), vec![S, 'a' as u32 - 33]);
    assert_eq!(t.encode("a", false).unwrap(), vec!['a' as u32 - 33]);
    assert_eq!(render(&t), "config ");
    assert_eq!(t.chat_template_names(), vec!["default", "rag", "tool_use"]);
    assert!(t.named_chat_template("tool_use").is_some());

    // chat_template.jinja wins over the config's templates.
    write(d, "chat_template.jinja", "jinja file");
    let t = Tokenizer::from_dir(d).unwrap();
    assert_eq!(render(&t), "jinja file");
}

#[test]
fn ids_from_config_json_when_the_tokenizer_config_names_none() {
    let dir = directory();
    write(
        dir.path(),
        "config.json",
        r#"{"bos_token_id": 257, "eos_token_id": [258, 260]}"#,
    );
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(t.bos_token(), Some("<s>"));
    assert_eq!(t.eos_token_ids(), vec![EOS, EOT]);
    assert_eq!(t.eos_token(), Some("</s>"));
}

#[test]
fn broken_files_are_named() {
    let dir = directory();
    let d = dir.path();
    let err = |t: Result<Tokenizer, TokenizerError>| t.unwrap_err().to_string();

    write(d, "generation_config.json", "{not json");
    let e = err(Tokenizer::from_dir(d));
    assert!(
        e.contains("generation_config.json") && e.contains("invalid JSON"),
        "{e}"
    );
    std::fs::remove_file(d.join("generation_config.json")).unwrap();

    write(
        d,
        "tokenizer_config.json",
        r#"{"chat_template": "{% for %}"}"#,
    );
    let e = err(Tokenizer::from_dir(d));
    assert!(
        e.contains("tokenizer_config.json") && e.contains("does not compile"),
        "{e}"
    );
    std::fs::remove_file(d.join("tokenizer_config.json")).unwrap();

    write(d, "chat_template.jinja", "{{ unclosed");
    let e = err(Tokenizer::from_dir(d));
    assert!(e.contains("chat_template.jinja"), "{e}");
    std::fs::remove_file(d.join("chat_template.jinja")).unwrap();

    write(d, "tokenizer.json", "{}");
    let e = err(Tokenizer::from_dir(d));
    assert!(e.contains("tokenizer.json"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = err(Tokenizer::from_dir(empty.path()));
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
}
