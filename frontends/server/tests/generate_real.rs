//! `kiln generate`'s engine path on the real default model, with the CPU
//! backend linked in: text and chat prompts, per-line overrides, JSONL out.

use clap::Parser;
use kiln::cli::{Cli, Command, GenerateArgs};
use kiln::commands::generate::{GenerateItem, InputFormat, output_line, parse_input, run_generate};
use kiln_engine::{BackendChoice, EngineConfig};

fn default_model() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("KILN_TEST_GGUF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    path.is_file().then_some(path)
}

fn args(argv: &[&str]) -> GenerateArgs {
    let mut full = vec!["kiln", "generate"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Generate(a) => *a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn text_and_chat_prompts_on_the_cpu_backend() {
    let Some(model) = default_model() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the default model is missing: CI sets KILN_TEST_GGUF after `kiln pull`"
        );
        eprintln!("skipping: the default model is not available (set KILN_TEST_GGUF)");
        return;
    };
    let mut config = EngineConfig::new(&model);
    config.backend = BackendChoice::Static {
        name: "cpu".into(),
        init: kiln_backend_cpu::kiln_static_registration,
    };
    config.threads = Some(2);
    config.max_model_len = Some(512);
    config.kv_cache_memory_bytes = Some(64 << 20);
    let a = args(&["--temperature", "0", "--max-tokens", "5", "--ignore-eos"]);
    let input = r#"{"id": "capital", "prompt": "The capital of France is"}
{"id": "chat", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 3}
{"id": "ids", "prompt_token_ids": [1, 504, 3458, 282], "max_tokens": 2}"#;
    let items: Vec<GenerateItem> = parse_input("in.jsonl", input, InputFormat::Jsonl, 0).unwrap();
    let mut done = Vec::new();
    let results = run_generate(config, &items, &a, |n| done.push(n)).unwrap();
    assert_eq!(done.last(), Some(&3));
    let lines: Vec<serde_json::Value> = items
        .iter()
        .zip(&results)
        .map(|(i, r)| output_line(i, r))
        .collect();
    for (line, tokens) in lines.iter().zip([5, 3, 2]) {
        assert_eq!(line["error"], serde_json::Value::Null, "{line}");
        assert_eq!(
            line["outputs"][0]["token_ids"].as_array().unwrap().len(),
            tokens,
            "{line}"
        );
        assert_eq!(line["outputs"][0]["finish_reason"], "length");
        assert_eq!(line["usage"]["completion_tokens"], tokens);
    }
    assert!(
        lines[0]["outputs"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{}",
        lines[0]
    );
    // The chat prompt went through the template: far more tokens than the bare question.
    assert!(
        lines[1]["usage"]["prompt_tokens"].as_u64().unwrap() > 15,
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["usage"]["prompt_tokens"], 4);
}
