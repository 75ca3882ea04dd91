//! Single-stream prompt processing and decode speed:
//! `cargo run --release -p kiln-engine --example bench_offline -- MODEL [threads] [prompt_tokens] [gen_tokens]`.

use std::time::Instant;

use kiln_engine::{BackendChoice, EngineConfig, LLM};
use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};

fn request(tokens: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: PromptInput::TokenIds(tokens),
        sampling: SamplingParams::greedy(),
        stopping: StoppingCriteria {
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        },
        add_special_tokens: false,
        tag: None,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .expect("usage: bench_offline MODEL [threads] [prompt] [gen]");
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let prompt_len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(512);
    let gen_len: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(128);
    let mut config = EngineConfig::new(model);
    config.backend = BackendChoice::Static {
        name: "cpu".into(),
        init: kiln_backend_cpu::kiln_static_registration,
    };
    config.threads = Some(threads);
    config.kv_cache_memory_bytes = Some(256 << 20);
    config.max_model_len = Some(2048);
    config.max_num_batched_tokens = Some(prompt_len.max(512));
    config.enable_prefix_caching = false;
    let llm = LLM::new(config).expect("engine");
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| 1000 + (i * 7919) % 30000)
        .collect();
    // Warm up.
    llm.generate(vec![request(prompt[..16].to_vec(), 4)]);
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        llm.generate(vec![request(prompt.clone(), 1)]);
        pp.push(prompt_len as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        llm.generate(vec![request(prompt[..8].to_vec(), 1)]);
        let base = t.elapsed().as_secs_f64();
        let t = Instant::now();
        llm.generate(vec![request(prompt[..8].to_vec(), gen_len + 1)]);
        tg.push(gen_len as f64 / (t.elapsed().as_secs_f64() - base));
    }
    pp.sort_by(f64::total_cmp);
    tg.sort_by(f64::total_cmp);
    println!(
        "{{\"engine\":\"kiln\",\"threads\":{threads},\"pp{prompt_len}_tok_s\":{:.1},\"tg{gen_len}_tok_s\":{:.1}}}",
        pp[1], tg[1]
    );
}
