//! Quantized safetensors checkpoints (GPTQ v1 with and without act-order,
//! asymmetric, 2/4/8-bit, f16 and bf16 scales; AWQ GEMM; compressed-tensors
//! pack-quantized W4A16/W8A16 and int-quantized W8A8; FP8 E4M3 as
//! compressed-tensors float-quantized per channel and as `quant_method:
//! "fp8"` per tensor) against transformers loading the same checkpoint in
//! f32 (for FP8, a plain f32 Llama holding the dequantized weights
//! `scale·e4m3(q)`: Kiln's W8A16 math). Fixtures and the script that made
//! them (gptqmodel, llmcompressor, and a numpy/torch packer) live in
//! `tests/fixtures/quantized/`.
//!
//! For every checkpoint and prompt: the last-position logits are within
//! 1e-3 of transformers', and the greedy continuation equals transformers'
//! 32 tokens up to the first step whose top-1/top-2 margin in the reference
//! is below 1e-3 (where 16-bit activation rounding may fairly pick the other
//! token; one step of one prompt, in `gptq-b4-g32`, has such a margin).
//!
//! W8A8 runs with 16-bit activations here (the exact path), so it is
//! compared with the reference's weights-only forward pass
//! (`prompts_f32_activations`); the reference with int8 per-token
//! activations differs from it by the activation rounding.

use std::path::{Path, PathBuf};

use kiln_engine::load_model;
use kiln_tests::{
    ReferencePrompt, cpu_config, fixture_jsons, fixtures, greedy, last_logits, max_abs_diff,
    reference_prompts, start,
};

/// Margins (logits) below which the reference's greedy choice is a tie.
const TIE: f64 = 1e-3;

struct Checkpoint {
    dir: PathBuf,
    prompts: Vec<ReferencePrompt>,
}

fn checkpoints() -> Vec<Checkpoint> {
    let root = fixtures().join("quantized");
    fixture_jsons("quantized")
        .into_iter()
        .map(|(_, v)| Checkpoint {
            dir: root.join(v["dir"].as_str().unwrap()),
            prompts: reference_prompts(v.get("prompts_f32_activations").unwrap_or(&v["prompts"])),
        })
        .collect()
}

fn config(dir: &Path) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(dir);
    c.max_model_len = Some(512);
    c
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_scheme_has_a_checkpoint() {
    let names: Vec<String> = checkpoints().iter().map(|c| name(&c.dir)).collect();
    for n in [
        "gptq-b4-g32",
        "gptq-b4-actorder",
        "gptq-b4-asym",
        "gptq-b8-g32",
        "awq-b4-g32",
        "ct-w4a16-g32",
        "ct-w8a16",
        "ct-w8a8",
        "rtn-gptq-b2",
        "rtn-gptq-bf16",
        "rtn-ct-fp8-channel",
        "rtn-fp8-tensor",
    ] {
        assert!(names.iter().any(|x| x == n), "no fixture {n}");
    }
}

#[test]
fn last_position_logits_match_transformers() {
    for c in checkpoints() {
        let mut loaded = load_model(&config(&c.dir)).expect("load the checkpoint");
        let mut worst = 0f32;
        for (i, p) in c.prompts.iter().enumerate() {
            let ours = last_logits(&mut loaded.runner, &p.ids, i as u64 + 1);
            let max = max_abs_diff(&ours, &p.logits);
            worst = worst.max(max);
            assert!(
                max <= 1e-3,
                "{} prompt {i}: max |Δlogit| {max} > 1e-3",
                name(&c.dir)
            );
        }
        eprintln!("{:>18}: max |Δlogit| = {worst:.2e}", name(&c.dir));
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for c in checkpoints() {
        let llm = start(config(&c.dir));
        let outs = llm.generate(
            c.prompts
                .iter()
                .map(|p| greedy(p.ids.clone(), 32))
                .collect(),
        );
        let mut compared = 0;
        for (i, (p, out)) in c.prompts.iter().zip(outs).enumerate() {
            let got = out.expect("generation").outputs[0].token_ids.clone();
            // Steps before the first near-tie must agree.
            let decisive = p.margins.iter().position(|&m| m < TIE).unwrap_or(32);
            assert_eq!(
                got[..decisive],
                p.greedy[..decisive],
                "{} prompt {i} (first {decisive} tokens)",
                name(&c.dir)
            );
            compared += decisive;
        }
        // The FP8 references have no near-tie (smallest margin 1.7e-3):
        // every one of their tokens is compared.
        if name(&c.dir).contains("fp8") {
            assert_eq!(compared, 32 * c.prompts.len(), "{}", name(&c.dir));
        }
        eprintln!(
            "{:>18}: {compared} of {} greedy tokens compared, all equal",
            name(&c.dir),
            32 * c.prompts.len()
        );
    }
}

#[test]
fn the_quantization_flag_checks_the_checkpoint() {
    let dir = fixtures().join("quantized/gptq-b4-g32");
    let mut c = config(&dir);
    c.quantization = Some("awq".into());
    let e = load_model(&c)
        .err()
        .expect("a mismatch is refused")
        .to_string();
    assert!(
        e.contains("--quantization awq") && e.contains("gptq"),
        "{e}"
    );
    c.quantization = Some("gptq".into());
    assert!(load_model(&c).is_ok());
    c.quantization = Some("bitsandbytes".into());
    let e = load_model(&c).err().expect("unknown method").to_string();
    assert!(e.contains("not supported"), "{e}");
}
