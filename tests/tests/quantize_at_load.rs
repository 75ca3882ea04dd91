//! `--quantization int8`: 16/32-bit Linear weights become Q8_0 blocks at
//! load. Measured on the tiny F16 fixture against transformers' f32
//! reference of the F16 weights, and on the memory the backend holds.
//! `--quantization fp8`: they become E4M3 codes with a scale per row,
//! measured on a tiny f32 checkpoint against its own f32 run.

use std::path::Path;

use kiln_engine::load_model;
use kiln_tests::{cpu_config, fixtures, greedy, json_ids, last_logits, start};

/// Held by a test for as long as it has models loaded while it measures
/// `held_weight_bytes`, a process-wide count that a model loading or
/// dropped in a parallel test would otherwise move.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Largest last-position logit change `--quantization fp8` may make on
/// the tiny f32 model. Measured: 0.167, with logits up to 7.57 in
/// magnitude (2.2% of the largest; deterministic, the kernels being
/// bit-exact). E4M3 keeps 3 mantissa bits, so each weight moves by up to
/// 2⁻⁴ ≈ 6% of itself (int8's Q8_0 blocks: under 0.4% of the block's
/// largest), and errors of a few percent of the logit range are the
/// expected size; 0.2 allows the measured rounding and fails a wrong
/// scale or a mis-decoded code, which move logits by whole units.
const FP8_LOGIT_BOUND: f32 = 0.2;

fn config(gguf: &Path, int8: bool) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(gguf);
    c.max_model_len = Some(512);
    c.quantization = int8.then(|| "int8".to_string());
    c
}

#[test]
fn int8_at_load_halves_linear_weights_and_stays_close() {
    let gguf = fixtures().join("kquant/tiny-F16.gguf");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("kquant/tiny-F16.json")).unwrap(),
    )
    .unwrap();
    let prompts = v["prompts"].as_array().unwrap();

    // Held to the end: the models loaded here must also be dropped before
    // another test measures.
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let before = kiln_backend_cpu::held_weight_bytes();
    let mut f16 = load_model(&config(&gguf, false)).unwrap();
    let f16_bytes = kiln_backend_cpu::held_weight_bytes() - before;
    let mut int8 = load_model(&config(&gguf, true)).unwrap();
    let int8_bytes = kiln_backend_cpu::held_weight_bytes() - before - f16_bytes;
    eprintln!("weights held: F16 {f16_bytes} bytes, int8 at load {int8_bytes} bytes");
    // The Linear layers shrink from 2 to 34/32 bytes per weight; the
    // embeddings and LM head stay F16.
    assert!(
        int8_bytes * 10 < f16_bytes * 7,
        "{int8_bytes} vs {f16_bytes}"
    );

    let mut worst = 0f32;
    for (i, p) in prompts.iter().enumerate() {
        let ids = json_ids(&p["ids"]);
        let reference: Vec<f32> = p["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let exact = last_logits(&mut f16.runner, &ids, i as u64 + 1);
        let quant = last_logits(&mut int8.runner, &ids, i as u64 + 1);
        let diff = |a: &[f32]| {
            a.iter()
                .zip(&reference)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(diff(&exact) <= 1e-3);
        worst = worst.max(diff(&quant));
    }
    eprintln!("int8 at load: max |Δlogit| against the F16 reference = {worst:.3e}");
    assert!(worst < 0.1, "int8 moved the logits by {worst}");
    drop((f16, int8));

    let llm = start(config(&gguf, true));
    let outs = llm.generate(
        prompts
            .iter()
            .map(|p| greedy(json_ids(&p["ids"]), 32))
            .collect(),
    );
    let agree: usize = prompts
        .iter()
        .zip(outs)
        .map(|(p, o)| {
            let got = o.unwrap().outputs[0].token_ids.clone();
            got.iter()
                .zip(json_ids(&p["greedy"]))
                .take_while(|(a, b)| **a == *b)
                .count()
        })
        .sum();
    eprintln!(
        "int8 at load: {agree} of {} greedy tokens agree with the F16 reference before the first difference",
        32 * prompts.len()
    );
    // Deterministic (the kernels are bit-exact): 167 of 192 when measured.
    assert!(agree >= 167, "{agree} of 192");
}

#[test]
fn int8_is_refused_for_an_already_quantized_checkpoint() {
    let dir = fixtures().join("quantized/gptq-b4-g32");
    let e = load_model(&config(&dir, true)).err().unwrap().to_string();
    assert!(e.contains("already gptq"), "{e}");
    let mut c = config(&dir, false);
    c.quantization = Some("fp8".into());
    let e = load_model(&c).err().unwrap().to_string();
    assert!(
        e.contains("--quantization fp8") && e.contains("already gptq"),
        "{e}"
    );
    // An FP8 checkpoint of quant_method "fp8" is what the flag names.
    let mut c = config(&fixtures().join("quantized/rtn-fp8-tensor"), false);
    c.quantization = Some("fp8".into());
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    assert!(load_model(&c).is_ok());
}

/// `--quantization fp8` on a tiny f32 checkpoint: the Linear weights drop
/// to a quarter of their bytes (one byte per weight plus a 4-byte scale per
/// row) and the logits move only by E4M3's rounding (3 mantissa bits: each
/// weight within 2⁻⁴ of itself relative).
#[test]
fn fp8_at_load_quarters_linear_weights_and_stays_close() {
    let dir = tempfile::tempdir().unwrap();
    let spec = kiln_tests::tiny::TinySpec::default();
    let model = kiln_tests::tiny::write_safetensors(
        dir.path(),
        &spec,
        kiln_models::weights::WeightDType::F32,
    );
    let fp8_config = |fp8: bool| {
        let mut c = cpu_config(&model);
        c.max_model_len = Some(512);
        c.quantization = fp8.then(|| "fp8".to_string());
        c
    };
    // Held to the end: the models loaded here must also be dropped before
    // another test measures.
    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let before = kiln_backend_cpu::held_weight_bytes();
    let mut f32_model = load_model(&fp8_config(false)).unwrap();
    let f32_bytes = kiln_backend_cpu::held_weight_bytes() - before;
    let mut fp8_model = load_model(&fp8_config(true)).unwrap();
    let fp8_bytes = kiln_backend_cpu::held_weight_bytes() - before - f32_bytes;
    eprintln!("weights held: f32 {f32_bytes} bytes, fp8 at load {fp8_bytes} bytes");
    let (h, i, kv) = (
        spec.hidden,
        spec.intermediate,
        spec.hidden / spec.heads * spec.kv_heads,
    );
    let weights = spec.layers * (2 * h * h + 2 * h * kv + 3 * h * i);
    // q, o and down have h rows; k and v kv; gate and up i.
    let rows = spec.layers * (3 * h + 2 * kv + 2 * i);
    // Every Linear weight saves 3 of its 4 bytes, less 4 bytes of scale per row.
    let saved = (3 * weights - 4 * rows) as u64;
    assert_eq!(f32_bytes - fp8_bytes, saved, "{fp8_bytes} vs {f32_bytes}");

    let prompts: Vec<Vec<u32>> = ["Hello, kiln", "The quick brown fox jumps", "1 2 3 4 5 6 7"]
        .iter()
        .map(|p| p.bytes().map(u32::from).collect())
        .collect();
    let mut worst = 0f32;
    let mut largest = 0f32;
    for (n, ids) in prompts.iter().enumerate() {
        let exact = last_logits(&mut f32_model.runner, ids, n as u64 + 1);
        let quant = last_logits(&mut fp8_model.runner, ids, n as u64 + 1);
        largest = exact.iter().fold(largest, |a, v| a.max(v.abs()));
        worst = exact
            .iter()
            .zip(&quant)
            .fold(worst, |a, (x, y)| a.max((x - y).abs()));
    }
    eprintln!("fp8 at load: max |Δlogit| = {worst:.3e} (largest |logit| {largest:.3})");
    assert!(worst > 0.0, "the weights were not quantized");
    assert!(worst < FP8_LOGIT_BOUND, "fp8 moved the logits by {worst}");
}
