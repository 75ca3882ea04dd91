//! The real chat templates in llama.cpp's sources (`models/templates/*.jinja`,
//! fetched by scripts/fetch_llamacpp_sources.sh) rendered by Kiln's renderer
//! on a few standard conversations (system + user, multi-turn, with tools
//! where the template reads them), against the renderings transformers'
//! `render_jinja_template` makes (`fixtures/llamacpp_chat_templates.json`,
//! from `fixtures/make_llamacpp_chat_templates.py`).

use std::collections::BTreeMap;
use std::path::Path;

use kiln_tests::fixtures;
use kiln_tests::llamacpp::llamacpp_sources;
use kiln_tokenizer::{ChatContext, ChatTemplate, ChatTemplateError};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Python cannot loop over `tools` when there are none (a TypeError);
/// minijinja loops over nothing, so Kiln renders these tool-use templates.
const LOOP_OVER_NONE: &str = "loop over none";
/// `tools | map(attribute='function') | tojson`: Python's `json` cannot write
/// the generator `map` returns; Kiln writes the list.
const MAPPED_TOJSON: &str = "tojson of map()";
/// jinja2 HTML-escapes plain text added to a `|safe` string (the tool JSON
/// becomes `&#34;name&#34;...`); Kiln concatenates the text as it is.
const MARKUP_ESCAPING: &str = "Markup escaping";

/// The conversations without tools.
const WITHOUT_TOOLS: &[&str] = &["system_user", "multi_turn", "multi_turn_closed"];

/// Renderings where Kiln knowingly differs from transformers: the template,
/// its conversations that differ, and why.
const KNOWN_DIFFERENCES: &[(&str, &[&str], &str)] = &[
    (
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
        WITHOUT_TOOLS,
        LOOP_OVER_NONE,
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        WITHOUT_TOOLS,
        LOOP_OVER_NONE,
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        WITHOUT_TOOLS,
        LOOP_OVER_NONE,
    ),
    ("llama-cpp-deepseek-r1.jinja", &["tools"], MAPPED_TOJSON),
    (
        "meetkai-functionary-medium-v3.1.jinja",
        &["tools"],
        MARKUP_ESCAPING,
    ),
];

/// Renderings in the fixture, and how many agree with transformers.
const RENDERINGS: usize = 302;
const AGREEING: usize = 291;

fn fixture() -> Value {
    let path = fixtures().join("llamacpp_chat_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn context(conversation: &Value, fixture: &Value) -> ChatContext {
    ChatContext {
        messages: conversation["messages"].as_array().unwrap().clone(),
        add_generation_prompt: conversation["add_generation_prompt"].as_bool().unwrap(),
        tools: conversation.get("tools").cloned(),
        extra: serde_json::Map::new(),
        bos_token: fixture["bos_token"].as_str().map(str::to_string),
        eos_token: fixture["eos_token"].as_str().map(str::to_string),
    }
}

/// The reference text with the frozen clock's dates replaced by today's, as
/// Kiln's `strftime_now` writes them.
fn with_today(text: &str, strftime: &Value) -> String {
    let mut out = text.to_string();
    for (format, frozen) in strftime.as_object().unwrap() {
        let source = format!(
            "{{{{ strftime_now({}) }}}}",
            serde_json::to_string(format).unwrap()
        );
        let today = ChatTemplate::new(&source)
            .unwrap()
            .render(&ChatContext::default())
            .unwrap();
        out = out.replace(frozen.as_str().unwrap(), &today);
    }
    out
}

/// Whether Kiln's result agrees with the reference: the same text, the same
/// `raise_exception` message, or an error where transformers failed.
fn agrees(got: &Result<String, ChatTemplateError>, want: &Value, strftime: &Value) -> bool {
    if let Some(text) = want.get("text") {
        return got.as_deref() == Ok(with_today(text.as_str().unwrap(), strftime).as_str());
    }
    if let Some(message) = want.get("raised") {
        return got
            == &Err(ChatTemplateError::Raised(
                message.as_str().unwrap().to_string(),
            ));
    }
    got.is_err()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn template_files(src: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(src.join("models/templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jinja"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn llamacpp_templates_render_like_transformers() {
    let Some(src) = llamacpp_sources() else {
        return;
    };
    let fixture = fixture();
    let files = template_files(&src);
    let listed: Vec<&str> = fixture["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), listed);
    let mut total = 0;
    let mut differences = Vec::new();
    let mut unexpected = Vec::new();
    for entry in fixture["templates"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let bytes = &files[file];
        assert_eq!(
            sha256(bytes),
            entry["sha256"].as_str().unwrap(),
            "{file} changed upstream"
        );
        let template = ChatTemplate::new(std::str::from_utf8(bytes).unwrap());
        for (conversation, want) in entry["renderings"].as_object().unwrap() {
            total += 1;
            let got = template.as_ref().map_err(Clone::clone).and_then(|t| {
                t.render(&context(&fixture["conversations"][conversation], &fixture))
            });
            if agrees(&got, want, &entry["strftime"]) {
                continue;
            }
            let known = KNOWN_DIFFERENCES
                .iter()
                .any(|(f, c, _)| *f == file && c.contains(&conversation.as_str()));
            if !known {
                unexpected.push(format!(
                    "{file} / {conversation}:\n  got  {got:?}\n  want {want}"
                ));
            }
            differences.push((file.to_string(), conversation.clone()));
        }
    }
    let agreeing = total - differences.len();
    println!("{agreeing}/{total} renderings agree with transformers");
    for (file, conversations, why) in KNOWN_DIFFERENCES {
        println!(
            "known difference: {file} / {}: {why}",
            conversations.join(", ")
        );
    }
    assert!(
        unexpected.is_empty(),
        "renderings that differ from transformers:\n{}",
        unexpected.join("\n")
    );
    assert_eq!(total, RENDERINGS);
    assert_eq!(
        agreeing, AGREEING,
        "a known difference now agrees: update KNOWN_DIFFERENCES"
    );
}
