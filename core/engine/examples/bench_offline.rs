//! Offline throughput of the engine: prompt processing and decode speed for
//! single streams and concurrent batches (EOS ignored).
//!
//! ```text
//! cargo run --release -p kiln-engine --example bench_offline -- \
//!     --model MODEL [--backend cpu|cuda|PATH] [--threads N] [--dtype auto|bfloat16|...] \
//!     [--prompt 512] [--gen 128] [--batches 1,32,256] [--max-model-len 2048] [--eager]
//! ```
//! Prints one JSON line per measurement.

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

struct Args {
    model: String,
    backend: String,
    threads: Option<usize>,
    dtype: String,
    prompt: usize,
    gen_tokens: u32,
    batches: Vec<usize>,
    max_model_len: usize,
    eager: bool,
}

fn parse() -> Args {
    let mut a = Args {
        model: String::new(),
        backend: "cpu".into(),
        threads: None,
        dtype: "auto".into(),
        prompt: 512,
        gen_tokens: 128,
        batches: vec![1],
        max_model_len: 2048,
        eager: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = val(),
            "--backend" => a.backend = val(),
            "--threads" => a.threads = val().parse().ok(),
            "--dtype" => a.dtype = val(),
            "--prompt" => a.prompt = val().parse().expect("--prompt N"),
            "--gen" => a.gen_tokens = val().parse().expect("--gen N"),
            "--batches" => {
                a.batches = val()
                    .split(',')
                    .map(|b| b.parse().expect("--batches 1,32"))
                    .collect()
            }
            "--max-model-len" => a.max_model_len = val().parse().expect("--max-model-len N"),
            "--eager" => a.eager = true,
            other if a.model.is_empty() && !other.starts_with("--") => a.model = other.to_string(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.model.is_empty(), "--model MODEL is required");
    a
}

fn main() {
    let a = parse();
    let mut config = EngineConfig::new(&a.model);
    config.backend = match a.backend.as_str() {
        "cpu" => BackendChoice::Static {
            name: "cpu".into(),
            init: kiln_backend_cpu::kiln_static_registration,
        },
        "cuda" => BackendChoice::Named("cuda".into()),
        path => BackendChoice::Path(path.into()),
    };
    if let Ok(exe) = std::env::current_exe() {
        config.backend_search_paths = exe
            .ancestors()
            .skip(1)
            .take(3)
            .map(|p| p.to_path_buf())
            .collect();
    }
    config.threads = a.threads;
    config.dtype = a.dtype.parse().expect("--dtype");
    config.max_model_len = Some(a.max_model_len);
    config.enforce_eager = a.eager;
    config.enable_prefix_caching = false;
    let max_batch = a.batches.iter().copied().max().unwrap_or(1);
    config.max_num_seqs = Some(max_batch.max(1));
    if a.backend == "cpu" {
        config.kv_cache_memory_bytes = Some(512 << 20);
        config.max_num_batched_tokens = Some(a.prompt.max(512));
    } else {
        config.max_num_batched_tokens = Some((a.prompt * max_batch).clamp(2048, 16384));
    }
    let started = Instant::now();
    let llm = LLM::new(config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let s = llm.engine().summary();
    eprintln!(
        "loaded in {:.1} s on {}: {}",
        started.elapsed().as_secs_f64(),
        s.info.device,
        s.kv.log_line()
    );
    let vocab = s.info.vocab_size.clamp(64, 30000);
    let prompt = |seed: usize| -> Vec<u32> {
        (0..a.prompt)
            .map(|i| 10 + ((i * 7919 + seed * 104729) % (vocab as usize - 20)) as u32)
            .collect()
    };
    llm.generate(vec![request(prompt(0)[..16.min(a.prompt)].to_vec(), 4)]);
    for &b in &a.batches {
        // Prefill alone (one token generated), then the full run.
        let t = Instant::now();
        llm.generate((0..b).map(|i| request(prompt(i + 1), 1)).collect());
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let outs = llm.generate(
            (0..b)
                .map(|i| request(prompt(i + 1000), a.gen_tokens))
                .collect(),
        );
        let total = t.elapsed().as_secs_f64();
        let generated: usize = outs
            .iter()
            .map(|o| o.as_ref().map_or(0, |o| o.outputs[0].token_ids.len()))
            .sum();
        let decode = (total - prefill).max(1e-9);
        println!(
            "{{\"engine\":\"kiln\",\"device\":{:?},\"model\":{:?},\"batch\":{b},\"prompt\":{},\"gen\":{},\"prefill_tok_s\":{:.1},\"decode_tok_s\":{:.1},\"e2e_tok_s\":{:.1}}}",
            s.info.device,
            a.model,
            a.prompt,
            a.gen_tokens,
            (b * a.prompt) as f64 / prefill,
            (generated - b) as f64 / decode,
            generated as f64 / total
        );
    }
}
