//! A sparse layer's experts reach the backend as two stacked weights
//! whatever form the checkpoint holds them in:
//! - quantized experts stay in their block form and in their places: the
//!   Mixtral fixture's GGUF rewritten with its attention projections and
//!   expert stacks (`ffn_{gate,up,down}_exps`, 3-D) as Q8_0 blocks computes
//!   bit for bit what its Hugging Face form computes with `--quantization
//!   int8`, which quantizes the same tensors (per-expert ones, stacked at
//!   load) to the same blocks; a row of one expert stacked in the wrong
//!   place, or a gate row taken for an up row, would change the logits;
//! - gate and up stacks of different block types cannot share one weight
//!   and are refused with one line;
//! - transformers 5's fused `[E, 2I, h]` `gate_up_proj` and `[E, h, I]`
//!   `down_proj` compute bit for bit what one tensor per expert computes.

use std::collections::HashMap;
use std::path::Path;

use kiln_engine::load_model;
use kiln_models::weights::WeightDType;
use kiln_models::weights::dequant::dequantize_view;
use kiln_models::weights::gguf::{GgufFile, GgufWriter};
use kiln_models::weights::quantize::q8_0_blocks;
use kiln_tests::{
    cpu_config, fixture_jsons, fixtures, greedy, last_logits, reference_prompts, start,
};

/// The tensors `--quantization int8` turns into Q8_0 in a Mixtral: the
/// attention projections and the experts (not the router, norms,
/// embeddings or LM head).
fn quantized_by_int8(name: &str) -> bool {
    let part = name.split('.').nth(2).unwrap_or("");
    matches!(
        part,
        "attn_q"
            | "attn_k"
            | "attn_v"
            | "attn_output"
            | "ffn_gate_exps"
            | "ffn_up_exps"
            | "ffn_down_exps"
    )
}

/// `from` with the F16 values of the tensors `quantize` picks written as
/// Q8_0 blocks, row by row; returns how many it picked.
fn with_q8_0(from: &Path, to: &Path, quantize: fn(&str) -> bool) -> usize {
    let g = GgufFile::open(from).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata_entries() {
        w.metadata(key, value.clone());
    }
    let mut quantized = 0;
    for info in g.tensors() {
        let view = g.raw_tensor(&info.name).unwrap();
        if quantize(&info.name) {
            assert_eq!(view.dtype, WeightDType::F16, "{}", info.name);
            let blocks = q8_0_blocks(&dequantize_view(&view).unwrap());
            w.tensor(&info.name, WeightDType::Q8_0, &info.ne, blocks);
            quantized += 1;
        } else {
            w.tensor(&info.name, info.dtype, &info.ne, view.data.into_owned());
        }
    }
    w.write(to).unwrap();
    quantized
}

fn config(model: &Path, int8: bool) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(model);
    c.max_model_len = Some(256);
    c.quantization = int8.then(|| "int8".to_string());
    c
}

#[test]
fn q8_0_expert_stacks_compute_what_int8_at_load_computes() {
    let dir = fixtures().join("families");
    let (_, doc) = fixture_jsons("families")
        .into_iter()
        .find(|(_, v)| v["family"] == "mixtral")
        .expect("tests/fixtures/families/mixtral.json is missing");
    let prompts = reference_prompts(&doc["prompts"]);
    let tmp = tempfile::tempdir().unwrap();
    let q8_gguf = tmp.path().join("mixtral-q8_0-experts.gguf");
    let quantized = with_q8_0(&dir.join("mixtral.gguf"), &q8_gguf, quantized_by_int8);
    assert_eq!(quantized, 2 * 7, "two layers of seven quantized tensors");

    let hf = dir.join("mixtral");
    let mut from_gguf = load_model(&config(&q8_gguf, false)).unwrap();
    let mut int8_at_load = load_model(&config(&hf, true)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let seq = i as u64 + 1;
        let a = last_logits(&mut from_gguf.runner, &p.ids, seq);
        let b = last_logits(&mut int8_at_load.runner, &p.ids, seq);
        assert_eq!(a, b, "prompt {i}: the Q8_0 GGUF and int8 at load differ");
    }

    let reqs = || prompts.iter().map(|p| greedy(p.ids.clone(), 32)).collect();
    let tokens = |model: &Path, int8: bool| -> Vec<Vec<u32>> {
        start(config(model, int8))
            .generate(reqs())
            .into_iter()
            .map(|r| r.expect("generation").outputs[0].token_ids.clone())
            .collect()
    };
    assert_eq!(tokens(&q8_gguf, false), tokens(&hf, true));
}

/// `--quantization fp8` quantizes the stacked experts row by row, as it
/// does every dense Linear (a row's scale is the same in the stack as in
/// its expert): the mixture-of-experts fixture runs, near its 16-bit logits.
#[test]
fn fp8_at_load_quantizes_the_expert_stacks() {
    let (_, doc) = fixture_jsons("families")
        .into_iter()
        .find(|(_, v)| v["family"] == "mixtral")
        .expect("tests/fixtures/families/mixtral.json is missing");
    let prompts = reference_prompts(&doc["prompts"]);
    let hf = fixtures().join("families/mixtral");
    let mut plain = load_model(&config(&hf, false)).unwrap();
    let mut fp8_config = config(&hf, false);
    fp8_config.quantization = Some("fp8".into());
    let mut fp8 = load_model(&fp8_config).unwrap();
    let (mut worst, mut largest) = (0f32, 0f32);
    for (i, p) in prompts.iter().enumerate() {
        let seq = i as u64 + 1;
        let a = last_logits(&mut plain.runner, &p.ids, seq);
        let b = last_logits(&mut fp8.runner, &p.ids, seq);
        largest = a.iter().fold(largest, |m, x| m.max(x.abs()));
        worst = a
            .iter()
            .zip(&b)
            .fold(worst, |w, (x, y)| w.max((x - y).abs()));
    }
    eprintln!("mixtral, fp8 at load: max |Δlogit| = {worst:.3e} (largest |logit| {largest:.3})");
    // Measured 0.255: E4M3's up to 2⁻⁴ relative rounding per weight, as in
    // `quantize_at_load.rs`; a wrong row scale in a stack moves whole units.
    assert!(worst > 0.0 && worst < 0.35, "{worst}");
}

#[test]
fn gate_and_up_stacks_of_different_types_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mixed = tmp.path().join("mixtral-mixed-experts.gguf");
    let gates_only = |name: &str| name == "blk.1.ffn_gate_exps.weight";
    let from = fixtures().join("families/mixtral.gguf");
    assert_eq!(with_q8_0(&from, &mixed, gates_only), 1);
    let e = load_model(&config(&mixed, false))
        .map(drop)
        .expect_err("Q8_0 gates and F16 ups cannot be stacked")
        .to_string();
    assert!(
        e.contains("layer 1") && e.contains("Q8_0") && e.contains("F16") && !e.contains('\n'),
        "{e}"
    );
}

/// A copy of the Hugging Face directory `from` whose experts are stored as
/// transformers 5 holds them in memory: per layer, one `gate_up_proj` of
/// each expert's gate rows then up rows, and one `down_proj`.
fn with_fused_experts(from: &Path, to: &Path, experts: usize, layers: usize) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    let bytes = std::fs::read(from.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut fused = HashMap::new();
    for (name, t) in st.tensors() {
        if !name.contains(".mlp.experts.") {
            out.push((name, t.shape().to_vec(), t.data().to_vec()));
        } else {
            fused.insert(name, t);
        }
    }
    for layer in 0..layers {
        let part = |e: usize, proj: &str| {
            let t = &fused[&format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight")];
            (t.shape().to_vec(), t.data().to_vec())
        };
        let (inter, hidden) = {
            let (shape, _) = part(0, "gate_proj");
            (shape[0], shape[1])
        };
        let (mut gate_up, mut down) = (Vec::new(), Vec::new());
        for e in 0..experts {
            gate_up.extend(part(e, "gate_proj").1);
            gate_up.extend(part(e, "up_proj").1);
            down.extend(part(e, "down_proj").1);
        }
        let prefix = format!("model.layers.{layer}.mlp.experts");
        out.push((
            format!("{prefix}.gate_up_proj"),
            vec![experts, 2 * inter, hidden],
            gate_up,
        ));
        out.push((
            format!("{prefix}.down_proj"),
            vec![experts, hidden, inter],
            down,
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(n, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), b);
            (n.clone(), view.unwrap())
        })
        .collect();
    safetensors::tensor::serialize_to_file(
        views,
        None::<HashMap<String, String>>,
        &to.join("model.safetensors"),
    )
    .unwrap();
}

#[test]
fn fused_transformers5_stacks_compute_what_per_expert_tensors_compute() {
    let dir = fixtures().join("families");
    let (_, doc) = fixture_jsons("families")
        .into_iter()
        .find(|(_, v)| v["family"] == "qwen3_moe")
        .expect("tests/fixtures/families/qwen3_moe.json is missing");
    let prompts = reference_prompts(&doc["prompts"]);
    let tmp = tempfile::tempdir().unwrap();
    let fused = tmp.path().join("qwen3_moe-fused");
    with_fused_experts(&dir.join("qwen3_moe"), &fused, 8, 2);

    let mut per_expert = load_model(&config(&dir.join("qwen3_moe"), false)).unwrap();
    let mut stacked = load_model(&config(&fused, false)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let seq = i as u64 + 1;
        let a = last_logits(&mut per_expert.runner, &p.ids, seq);
        let b = last_logits(&mut stacked.runner, &p.ids, seq);
        assert_eq!(a, b, "prompt {i}: fused and per-expert tensors differ");
    }
}
