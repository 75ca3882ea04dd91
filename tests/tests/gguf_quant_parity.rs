//! Every GGUF quantization type through the whole engine, against
//! transformers: tiny random Llama models quantized by llama.cpp's own
//! `llama-quantize` (fixtures and the script that made them in
//! `tests/fixtures/kquant/`). For each file and prompt:
//! - the 32-token greedy continuation equals transformers' (f32 forward pass
//!   over gguf-py's dequantized weights);
//! - the last-position logits are within 1e-3 of transformers';
//! - the CPU backend holds the weights in their block form: its resident
//!   weight bytes are within 5% of the file's tensor bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_engine::load_model;
use kiln_models::weights::WeightSource;
use kiln_models::weights::gguf::GgufFile;
use kiln_tests::{
    ReferencePrompt, cpu_config, fixture_jsons, fixtures, greedy, last_logits, max_abs_diff,
    reference_prompts, start,
};

/// The tests load models one at a time: the memory test reads a
/// process-wide counter that another test's model would disturb.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Fixture {
    gguf: PathBuf,
    types: BTreeSet<String>,
    prompts: Vec<ReferencePrompt>,
}

fn fixture_files() -> Vec<Fixture> {
    let dir = fixtures().join("kquant");
    fixture_jsons("kquant")
        .into_iter()
        .map(|(_, v)| Fixture {
            gguf: dir.join(v["gguf"].as_str().unwrap()),
            types: v["tensor_types"]
                .as_object()
                .unwrap()
                .values()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            prompts: reference_prompts(&v["prompts"]),
        })
        .collect()
}

/// The CPU test config with a context that fits the tiny models (512).
fn config(gguf: &Path) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(gguf);
    c.max_model_len = Some(512);
    c
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_quantization_type_is_covered_by_a_fixture() {
    let covered: BTreeSet<String> = fixture_files().into_iter().flat_map(|f| f.types).collect();
    for t in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
        "IQ4_XS", "F16", "BF16", "F32",
    ] {
        assert!(
            covered.contains(t),
            "no fixture in tests/fixtures/kquant has a {t} tensor"
        );
    }
}

#[test]
fn last_position_logits_match_transformers() {
    let _one = serial();
    for f in fixture_files() {
        let mut loaded = load_model(&config(&f.gguf)).expect("load the fixture");
        let mut worst = 0f32;
        for (i, p) in f.prompts.iter().enumerate() {
            let ours = last_logits(&mut loaded.runner, &p.ids, i as u64 + 1);
            assert_eq!(
                ours.len(),
                p.logits.len(),
                "{}: vocabulary size",
                name(&f.gguf)
            );
            let max = max_abs_diff(&ours, &p.logits);
            worst = worst.max(max);
            assert!(
                max <= 1e-3,
                "{} prompt {i}: max |Δlogit| {max} > 1e-3",
                name(&f.gguf)
            );
        }
        eprintln!("{:>20}: max |Δlogit| = {worst:.2e}", name(&f.gguf));
    }
}

#[test]
fn greedy_continuations_match_transformers_for_32_tokens() {
    let _one = serial();
    let mut files = 0;
    for f in fixture_files() {
        let llm = start(config(&f.gguf));
        let outs = llm.generate(
            f.prompts
                .iter()
                .map(|p| greedy(p.ids.clone(), 32))
                .collect(),
        );
        for (i, (p, out)) in f.prompts.iter().zip(outs).enumerate() {
            let got = out.expect("generation").outputs[0].token_ids.clone();
            assert_eq!(got, p.greedy, "{} prompt {i}", name(&f.gguf));
        }
        eprintln!(
            "{:>20}: {} of {} prompts match transformers for 32 tokens",
            name(&f.gguf),
            f.prompts.len(),
            f.prompts.len()
        );
        files += 1;
    }
    assert!(files >= 14, "expected a fixture per type, found {files}");
}

#[test]
fn weights_stay_in_block_form_in_memory() {
    let _one = serial();
    for f in fixture_files() {
        let file = GgufFile::open(&f.gguf).expect("open the fixture");
        let tensor_bytes = file.total_bytes();
        let before = kiln_backend_cpu::held_weight_bytes();
        let loaded = load_model(&config(&f.gguf)).expect("load the fixture");
        let held = kiln_backend_cpu::held_weight_bytes() - before;
        let ratio = held as f64 / tensor_bytes as f64;
        eprintln!(
            "{:>20}: {held} bytes held for {tensor_bytes} bytes of tensors ({:+.1}%)",
            name(&f.gguf),
            (ratio - 1.0) * 100.0
        );
        assert!(
            (0.95..=1.05).contains(&ratio),
            "{}: the backend holds {held} bytes for {tensor_bytes} bytes of tensors",
            name(&f.gguf)
        );
        drop(loaded);
    }
}
