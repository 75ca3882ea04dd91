//! Real quantized checkpoints from the model catalog (Qwen2.5-Coder 0.5B
//! and 1.5B, Gemma 3 270M, all Q4_K_M) against transformers' f32 forward
//! pass over the same GGUF (fixtures made by
//! `tests/fixtures/make_real_fixtures.py`, one JSON per model in
//! `tests/fixtures/real/`, with llama.cpp's agreement measured on the same
//! prompt ids). For every model: the first 8 greedy tokens match
//! transformers on every prompt, and at least as many prompts match all 32
//! tokens as llama.cpp manages.

use std::path::PathBuf;

use kiln_tests::{catalog_model, cpu_config, fixtures, greedy, json_ids, start};

struct Case {
    name: String,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
}

struct Fixture {
    alias: String,
    file: String,
    cases: Vec<Case>,
    llamacpp_match32: usize,
}

fn fixture(alias: &str) -> Fixture {
    let path: PathBuf = fixtures().join("real").join(format!("{alias}.json"));
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    Fixture {
        alias: alias.to_string(),
        file: v["model"].as_str().unwrap().to_string(),
        cases: v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Case {
                name: c["name"].as_str().unwrap().to_string(),
                prompt: json_ids(&c["prompt_ids"]),
                greedy: json_ids(&c["greedy_ids"]),
            })
            .collect(),
        llamacpp_match32: v["llamacpp"]["match32"].as_u64().unwrap() as usize,
    }
}

fn matching_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn check(alias: &str) {
    let f = fixture(alias);
    let Some(model) = catalog_model(&f.alias, &f.file) else {
        return;
    };
    let mut config = cpu_config(&model);
    config.max_model_len = Some(512);
    let llm = start(config);
    let outs = llm.generate(
        f.cases
            .iter()
            .map(|c| greedy(c.prompt.clone(), 32))
            .collect(),
    );
    let mut full = 0;
    for (c, out) in f.cases.iter().zip(outs) {
        let got = out.expect("generation").outputs[0].token_ids.clone();
        let n = matching_prefix(&got, &c.greedy);
        eprintln!(
            "{alias} {:>16}: {n:2} of 32 tokens match transformers",
            c.name
        );
        assert!(
            n >= 8,
            "{alias} {}: the first 8 tokens differ from transformers at token {n}",
            c.name
        );
        full += usize::from(n == 32);
    }
    eprintln!(
        "{alias}: {full} of {} prompts match 32 tokens (llama.cpp: {})",
        f.cases.len(),
        f.llamacpp_match32
    );
    assert!(
        full >= f.llamacpp_match32,
        "{alias}: {full} prompts match 32 tokens, llama.cpp matches {}",
        f.llamacpp_match32
    );
}

#[test]
fn qwen2_5_coder_0_5b_q4_k_m_matches_transformers() {
    check("qwen2.5-coder-0.5b-instruct-q4_k_m");
}

#[test]
fn qwen2_5_coder_1_5b_q4_k_m_matches_transformers() {
    check("qwen2.5-coder-1.5b-instruct-q4_k_m");
}

#[test]
fn gemma_3_270m_q4_k_m_matches_transformers() {
    check("gemma-3-270m-q4_k_m");
}
