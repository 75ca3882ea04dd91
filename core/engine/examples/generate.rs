//! Offline generation with the library API:
//! `cargo run --release -p kiln-engine --example generate -- MODEL "prompt" [max_tokens]`.
//! The prompt is rendered with the model's chat template.

use kiln_engine::{BackendChoice, EngineConfig, LLM};
use kiln_engine_api::ChatOptions;
use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .expect("usage: generate MODEL PROMPT [MAX_TOKENS]");
    let prompt = args
        .next()
        .unwrap_or_else(|| "What is the capital of France?".into());
    let max_tokens: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let mut config = EngineConfig::new(model);
    config.backend = BackendChoice::Static {
        name: "cpu".into(),
        init: kiln_backend_cpu::kiln_static_registration,
    };
    config.kv_cache_memory_bytes = Some(512 << 20);
    config.max_model_len = Some(2048);
    let started = std::time::Instant::now();
    let llm = LLM::new(config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    eprintln!(
        "loaded in {:.2?}: {}",
        started.elapsed(),
        llm.engine().summary().kv.log_line()
    );
    let handle = llm.handle();
    let text = handle
        .apply_chat_template(
            &[serde_json::json!({"role": "user", "content": prompt})],
            &ChatOptions {
                add_generation_prompt: true,
                ..Default::default()
            },
        )
        .expect("chat template");
    let started = std::time::Instant::now();
    let out = llm.generate(vec![GenerateRequest {
        prompt: PromptInput::Text(text),
        sampling: SamplingParams::greedy(),
        stopping: StoppingCriteria {
            max_tokens: Some(max_tokens),
            ..Default::default()
        },
        add_special_tokens: false,
        tag: None,
    }]);
    let elapsed = started.elapsed();
    let o = out.into_iter().next().unwrap().expect("generation");
    let c = &o.outputs[0];
    println!("{}", c.text);
    eprintln!(
        "{} prompt tokens, {} generated in {:.2?} ({:?}); ids {:?}",
        o.prompt_token_ids.len(),
        c.token_ids.len(),
        elapsed,
        c.finish_reason,
        c.token_ids
    );
}
