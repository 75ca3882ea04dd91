//! Parity with Hugging Face transformers on the real default model
//! (fixtures made by `tests/fixtures/make_fixtures.py`).
//!
//! - GGUF path: greedy continuations match transformers for 32 tokens on at
//!   least as many prompts as llama.cpp manages, and for the first 8 tokens
//!   on every prompt.
//! - safetensors path (the f32 directory transformers writes, rebuilt here by
//!   Kiln's converter and checked tensor by tensor): last-position logits
//!   within 1e-3, greedy identical for 64 tokens on every prompt.

use std::path::Path;

use kiln_engine::load_model;
use kiln_tests::{
    cpu_config, default_model, fixtures, greedy, json_ids, last_logits, max_abs_diff, start,
};
use sha2::{Digest, Sha256};

struct Case {
    name: String,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
}

fn fixture() -> (Vec<Case>, serde_json::Value) {
    let text =
        std::fs::read_to_string(fixtures().join("parity_smollm2.json")).expect("parity fixture");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            prompt: json_ids(&c["prompt_ids"]),
            greedy: json_ids(&c["greedy_ids"]),
        })
        .collect();
    (cases, v)
}

fn matching_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Greedy continuations of every case, generated as one concurrent batch.
fn continuations(model: &Path, cases: &[Case], tokens: u32) -> Vec<Vec<u32>> {
    let llm = start(cpu_config(model));
    llm.generate(
        cases
            .iter()
            .map(|c| greedy(c.prompt.clone(), tokens))
            .collect(),
    )
    .into_iter()
    .map(|r| r.expect("generation").outputs[0].token_ids.clone())
    .collect()
}

#[test]
fn gguf_greedy_matches_transformers_as_well_as_llama_cpp() {
    let Some(model) = default_model() else { return };
    let (cases, fixture) = fixture();
    let outs = continuations(&model, &cases, 32);
    let prefixes: Vec<usize> = cases
        .iter()
        .zip(&outs)
        .map(|(c, o)| matching_prefix(o, &c.greedy))
        .collect();
    for (c, n) in cases.iter().zip(&prefixes) {
        eprintln!("{:>12}: {n:2} of 32 tokens match transformers", c.name);
    }
    for (c, n) in cases.iter().zip(&prefixes) {
        assert!(
            *n >= 8,
            "{}: only {n} leading tokens match transformers",
            c.name
        );
    }
    let match32 = prefixes.iter().filter(|&&n| n >= 32).count();
    let llama = fixture["llamacpp"]["match32"]
        .as_u64()
        .expect("llama.cpp figure in the fixture") as usize;
    eprintln!(
        "32-token matches: kiln {match32}, llama.cpp {llama} of {}",
        cases.len()
    );
    assert!(
        match32 >= llama,
        "kiln matches {match32} prompts for 32 tokens, llama.cpp {llama}"
    );
}

/// Build the f32 directory transformers writes: Kiln's converter for the
/// weights (checked against transformers' tensor hashes), the tokenizer as
/// Kiln builds it from the GGUF, and transformers' small JSON files.
fn f32_model_dir(gguf: &Path, dir: &Path) {
    kiln_models::convert::gguf_to_safetensors_f32(gguf, dir).expect("convert");
    let g = kiln_models::weights::gguf::GgufFile::open(gguf).unwrap();
    let md = g.tokenizer_metadata().unwrap();
    let tok = kiln_tokenizer::Tokenizer::from_gguf(md).unwrap();
    tok.save_tokenizer_json(&dir.join("tokenizer.json"))
        .unwrap();
    let src = fixtures().join("smollm2-135m-f32");
    for f in [
        "config.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
}

fn check_tensor_hashes(dir: &Path) {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2-135m-f32/tensor_sha256.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let want = want.as_object().unwrap();
    assert_eq!(
        st.names().len(),
        want.len(),
        "tensor count differs from transformers'"
    );
    for (name, hash) in want {
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("missing tensor {name}"));
        let got = Sha256::digest(t.data())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(
            &got,
            hash.as_str().unwrap(),
            "tensor {name} differs from transformers'"
        );
    }
}

#[test]
fn safetensors_f32_matches_transformers_logits_and_greedy() {
    let Some(gguf) = default_model() else { return };
    let (cases, _) = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smollm2-f32");
    f32_model_dir(&gguf, &dir);
    check_tensor_hashes(&dir);

    let mut loaded = load_model(&cpu_config(&dir)).expect("load the f32 model");
    for (i, c) in cases.iter().enumerate() {
        let ours = last_logits(&mut loaded.runner, &c.prompt, i as u64 + 1);
        let raw = std::fs::read(fixtures().join(format!("parity_logits/{i}.f32"))).unwrap();
        let reference: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(ours.len(), reference.len());
        let max = max_abs_diff(&ours, &reference);
        eprintln!("{:>12}: max |Δlogit| = {max:.2e}", c.name);
        assert!(max <= 1e-3, "{}: max |Δlogit| {max} > 1e-3", c.name);
    }
    drop(loaded);

    let outs = continuations(&dir, &cases, 64);
    let prefixes: Vec<usize> = cases
        .iter()
        .zip(&outs)
        .map(|(c, o)| matching_prefix(o, &c.greedy))
        .collect();
    for (c, n) in cases.iter().zip(&prefixes) {
        eprintln!(
            "{:>12}: {n:2} of 64 tokens match transformers (f32)",
            c.name
        );
    }
    for (c, n) in cases.iter().zip(&prefixes) {
        assert_eq!(
            *n, 64,
            "{}: greedy continuation differs from transformers at token {n}",
            c.name
        );
    }
}
