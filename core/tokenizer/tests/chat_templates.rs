//! Chat templates in the styles models ship (SmolLM2's ChatML, Llama 3 with
//! tools, Mistral with `raise_exception`, Qwen with tool calls and
//! reasoning, `{% generation %}`, the `tojson` options and Python methods)
//! render exactly as transformers' `apply_chat_template` renders them
//! (`fixtures/chat_templates.json`, from `make_tokenizer_fixtures.py`).

use kiln_tokenizer::{ChatContext, ChatTemplate, ChatTemplateError};
use serde_json::Value;

fn context(case: &Value) -> ChatContext {
    ChatContext {
        messages: case["messages"].as_array().unwrap().clone(),
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        tools: case.get("tools").cloned(),
        extra: case["extra"].as_object().unwrap().clone(),
        bos_token: case["bos_token"].as_str().map(str::to_string),
        eos_token: case["eos_token"].as_str().map(str::to_string),
    }
}

#[test]
fn templates_render_like_transformers() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/chat_templates.json")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let template = ChatTemplate::new(case["template"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = template.render(&context(case));
        match (case.get("expected"), case.get("expected_error")) {
            (Some(want), _) => {
                let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got, want.as_str().unwrap(), "{name}");
            }
            (None, Some(message)) => {
                let message = message.as_str().unwrap().to_string();
                assert_eq!(got, Err(ChatTemplateError::Raised(message)), "{name}");
            }
            _ => panic!("{name}: the case has no expectation"),
        }
    }
}

#[test]
fn the_error_message_is_the_templates_own() {
    let t =
        ChatTemplate::new("{{ raise_exception('Only user and assistant roles are supported!') }}")
            .unwrap();
    let e = t.render(&ChatContext::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Only user and assistant roles are supported!"
    );
}
