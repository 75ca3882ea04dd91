//! The plan arithmetic pinned against hand-computed values for public
//! configs (SmolLM2-135M, Llama-2-7B, Llama-3-8B) and the real SmolLM2 GGUF.
//!
//! Hand computation for Llama-3-8B on one 24 GiB GPU (bfloat16, max_model_len
//! 8192, block 16, 256 sequences, 8192 tokens per step):
//!
//! ```text
//! parameters   = 2 × 128256·4096 (embed + head) + 32 × 218,112,000 (layer) + 4096 = 8,030,261,248
//! weights      = 2 bytes × parameters = 16,060,522,496 (norms: 65 × 4096 × 2 = 532,480 replicated)
//! KV per token = 2 × 32 layers × 8 heads × 128 × 2 bytes = 131,072
//! buffers      = 4 × (3·8192 + 256 + 257 + 256·512 + 256)                  inputs       625,668
//!              + 2 × (8192 × (2·4096 + 2·4096 + 2·1024 + 2·14336)            activations  841,613,312
//!                     + 256 × (2·4096 + 128256))
//!              + 256 × 128256 × 4                                            f32 logits   131,334,144
//!              = 973,573,124
//! usable       = floor(24 GiB × 0.9) = 23,192,823,398
//! KV budget    = 23,192,823,398 − 16,060,522,496 − 973,573,124 − 1 GiB = 5,084,985,954
//! blocks       = floor(5,084,985,954 / (131,072 × 16)) = 2424 → 38,784 tokens
//! concurrency  = 38,784 / 8192 = 4.734375; full-length sequences = 2424 / 512 = 4
//! ```
//!
//! Mistral-7B-v0.1 (a 4096-token window on all 32 layers) on the same GPU,
//! max_model_len 32768:
//!
//! ```text
//! parameters   = 2 × 32000·4096 + 32 × 218,112,000 + 4096 = 7,241,732,096 → weights 14,483,464,192
//! buffers      = 4 × (3·8192 + 256 + 257 + 256·2048 + 256)                  2,198,532
//!              + 2 × (8192 × 47,104 + 256 × (2·4096 + 32000))            792,330,240
//!              + 256 × 32000 × 4                                          32,768,000  = 827,296,772
//! KV budget    = 23,192,823,398 − 14,483,464,192 − 827,296,772 − 1 GiB = 6,808,320,610
//! blocks       = floor(6,808,320,610 / 2,097,152) = 3246 → 51,936 tokens
//! per sequence = min(32768 / 16, ceil((4096 + 8192 − 1) / 16) + 1) = min(2048, 769) = 769
//! concurrency  = 3246 / 769; full-length sequences = 4 (without freeing: 51,936 / 32768, and 1)
//! ```

use super::facts::{ModelFacts, WeightOrigin, read_facts, shape_of};
use super::math::{Device, WeightSplit};
use super::*;
use kiln_models::config::{ModelConfig, WindowLayout};

const GIB: u64 = 1 << 30;

fn config(name: &str) -> ModelConfig {
    let text = match name {
        "smollm2" => include_str!("../../tests/fixtures/configs/smollm2-135m.json"),
        "llama2" => include_str!("../../tests/fixtures/configs/llama-2-7b.json"),
        "llama3" => include_str!("../../tests/fixtures/configs/llama-3-8b.json"),
        "mistral" => include_str!("../../tests/fixtures/configs/mistral-7b-v0.1.json"),
        "gemma2" => include_str!("../../tests/fixtures/configs/gemma-2-9b.json"),
        other => panic!("no fixture {other}"),
    };
    ModelConfig::from_hf_json(text).unwrap()
}

/// Facts from a config alone (parameters × checkpoint dtype).
fn config_facts(name: &str) -> ModelFacts {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let text = match name {
        "smollm2" => include_str!("../../tests/fixtures/configs/smollm2-135m.json"),
        "llama2" => include_str!("../../tests/fixtures/configs/llama-2-7b.json"),
        "mixtral" => include_str!("../../tests/fixtures/configs/mixtral-8x7b.json"),
        "mistral" => include_str!("../../tests/fixtures/configs/mistral-7b-v0.1.json"),
        "gemma2" => include_str!("../../tests/fixtures/configs/gemma-2-9b.json"),
        _ => include_str!("../../tests/fixtures/configs/llama-3-8b.json"),
    };
    std::fs::write(&path, text).unwrap();
    read_facts(&kiln_hub::ResolvedModel {
        path,
        format: kiln_hub::ModelFormat::ConfigFile,
        origin: None,
        weight_bytes: None,
        downloaded_bytes: 0,
    })
    .unwrap()
}

fn gpu(name: &str, memory: u64) -> PlanRequest {
    PlanRequest {
        model_name: name.into(),
        device: Device::Cuda {
            memory_bytes: memory,
        },
        dtype: DtypeRequest::Auto,
        max_model_len: None,
        tensor_parallel_size: 1,
        gpu_memory_utilization: 0.9,
        kv_cache_memory_bytes: None,
        block_size: 16,
        max_num_seqs: None,
        max_num_batched_tokens: None,
    }
}

fn option(plan: &Plan, n: usize) -> &math::TpOption {
    plan.options
        .iter()
        .find(|o| o.tensor_parallel_size == n)
        .unwrap()
}

#[test]
fn parameter_counts_and_kv_sizes() {
    assert_eq!(config("smollm2").num_parameters(), 134_515_008);
    assert_eq!(config("llama2").num_parameters(), 6_738_415_616);
    assert_eq!(config("llama3").num_parameters(), 8_030_261_248);
    let kv =
        |c: &str| math::kv_bytes_per_token(&shape_of(&config(c)), config(c).num_key_value_heads, 2);
    assert_eq!(kv("smollm2"), 2 * 30 * 3 * 64 * 2);
    assert_eq!(kv("llama2"), 524_288);
    assert_eq!(kv("llama3"), 131_072);
}

#[test]
fn llama3_8b_on_24gib() {
    let facts = config_facts("llama3");
    assert_eq!(facts.weight_origin, WeightOrigin::ParametersTimesDtype);
    assert_eq!(
        facts.weights,
        WeightSplit {
            sharded: 16_059_990_016,
            replicated: 532_480
        }
    );
    let plan = build_plan(&facts, &gpu("meta-llama/Meta-Llama-3-8B", 24 * GIB)).unwrap();
    assert_eq!(plan.kv_bytes_per_token, 131_072);
    assert_eq!(plan.settings.dtype, "bfloat16");
    assert_eq!(plan.settings.max_model_len, 8192);
    let o = option(&plan, 1);
    assert_eq!(o.weight_bytes_per_gpu, 16_060_522_496);
    assert_eq!(o.activation_bytes_per_gpu, 973_573_124);
    assert_eq!(o.usable_bytes_per_gpu, 23_192_823_398);
    assert_eq!(o.kv_budget_bytes_per_gpu, 5_084_985_954);
    assert_eq!(
        (o.kv_blocks, o.kv_tokens, o.full_length_sequences),
        (2424, 38_784, 4)
    );
    assert_eq!(o.max_concurrency, 4.734375);
    assert!(o.fits);
    // Tensor parallelism splits weights and KV heads.
    let o2 = option(&plan, 2);
    assert_eq!(
        (o2.weight_bytes_per_gpu, o2.kv_bytes_per_token_per_gpu),
        (8_030_527_488, 65_536)
    );
    assert_eq!(
        (
            o2.activation_bytes_per_gpu,
            o2.kv_tokens,
            o2.full_length_sequences
        ),
        (654_806_020, 204_976, 25)
    );
    let o8 = option(&plan, 8);
    assert_eq!(
        (o8.kv_heads_per_gpu, o8.kv_tokens, o8.full_length_sequences),
        (1, 1_202_096, 146)
    );
    let r = &plan.recommendation;
    assert!(r.fits_as_requested);
    assert_eq!(
        r.command,
        "kiln serve meta-llama/Meta-Llama-3-8B --max-model-len 8192 --gpu-memory-utilization 0.9"
    );
}

#[test]
fn llama3_8b_on_80gib() {
    let plan = build_plan(&config_facts("llama3"), &gpu("m", 80 * GIB)).unwrap();
    let o = option(&plan, 1);
    assert_eq!(o.kv_budget_bytes_per_gpu, 59_201_573_884);
    assert_eq!(
        (o.kv_blocks, o.kv_tokens, o.full_length_sequences),
        (28_229, 451_664, 55)
    );
}

#[test]
fn llama2_7b_on_24_and_16_gib() {
    let facts = config_facts("llama2");
    assert_eq!(facts.weights.total(), 13_476_831_232);
    let plan = build_plan(&facts, &gpu("meta-llama/Llama-2-7b-hf", 24 * GIB)).unwrap();
    let o = option(&plan, 1);
    assert_eq!(o.activation_bytes_per_gpu, 817_073_156);
    assert_eq!(o.kv_budget_bytes_per_gpu, 7_825_177_186);
    assert_eq!(
        (o.kv_blocks, o.kv_tokens, o.full_length_sequences),
        (932, 14_912, 3)
    );
    assert_eq!(o.max_concurrency, 3.640625);

    // 16 GiB: 11 blocks (176 tokens) are left on one GPU; two GPUs fit.
    let plan = build_plan(&facts, &gpu("meta-llama/Llama-2-7b-hf", 16 * GIB)).unwrap();
    let o = option(&plan, 1);
    assert_eq!(
        (o.kv_budget_bytes_per_gpu, o.kv_blocks, o.kv_tokens),
        (94_236_053, 11, 176)
    );
    assert!(!o.fits);
    let o2 = option(&plan, 2);
    assert_eq!(
        (
            o2.weight_bytes_per_gpu,
            o2.kv_tokens,
            o2.full_length_sequences
        ),
        (6_738_681_856, 27_248, 6)
    );
    let r = &plan.recommendation;
    assert!(!r.fits_as_requested);
    assert_eq!(r.tensor_parallel_size, Some(2));
    assert!(r.flags.contains(&"--tensor-parallel-size 2".to_string()));
    assert!(
        r.notes.iter().any(|n| n.contains("--max-model-len 176")),
        "{:?}",
        r.notes
    );
}

#[test]
fn shorter_context_when_nothing_fits_at_full_length() {
    let mut req = gpu("m", 16 * GIB);
    req.tensor_parallel_size = 1;
    let mut facts = config_facts("llama2");
    // Heads that split over no GPU count: only one device is possible.
    facts.shape.attention_heads = 31;
    facts.shape.kv_heads = 31;
    let plan = build_plan(&facts, &req).unwrap();
    let r = &plan.recommendation;
    assert_eq!(
        r.max_model_len,
        Some(option(&plan, 1).kv_tokens as usize / 16 * 16)
    );
    assert!(r.flags[0].starts_with("--max-model-len "));
    assert!(
        r.flags.iter().any(|f| f.starts_with("--max-num-seqs ")),
        "{:?}",
        r.flags
    );
    assert!(
        option(&plan, 2)
            .reason
            .as_deref()
            .unwrap()
            .contains("31 attention heads")
    );
}

#[test]
fn smollm2_from_its_config() {
    let facts = config_facts("smollm2");
    assert_eq!(facts.weights.total(), 269_030_016);
    let plan = build_plan(&facts, &gpu("smollm2", 8 * GIB)).unwrap();
    let o = option(&plan, 1);
    assert_eq!(o.activation_bytes_per_gpu, 171_084_804);
    assert_eq!(
        (o.kv_budget_bytes_per_gpu, o.kv_blocks, o.kv_tokens),
        (6_217_084_488, 16_864, 269_824)
    );
    assert_eq!(o.full_length_sequences, 32);
    assert!(!option(&plan, 2).valid, "9 heads do not split over 2 GPUs");
}

#[test]
fn cpu_plans_use_the_default_budget_and_float32() {
    let facts = config_facts("smollm2");
    let mut req = gpu("smollm2-135m-instruct", 0);
    req.device = Device::Cpu {
        memory_bytes: Some(24 * GIB),
    };
    let plan = build_plan(&facts, &req).unwrap();
    assert_eq!(plan.options.len(), 1);
    assert_eq!(
        (plan.settings.dtype, plan.kv_bytes_per_token),
        ("float32", 46_080)
    );
    let o = &plan.options[0];
    assert_eq!(o.activation_bytes_per_gpu, 24_812_292);
    assert_eq!(
        (
            o.kv_budget_bytes_per_gpu,
            o.kv_blocks,
            o.kv_tokens,
            o.full_length_sequences
        ),
        (4 * GIB, 5825, 93_200, 11)
    );
    assert_eq!(
        plan.recommendation.command,
        "kiln serve smollm2-135m-instruct --backend cpu --max-model-len 8192 --kv-cache-memory-bytes 4GiB"
    );
    req.tensor_parallel_size = 2;
    assert!(build_plan(&facts, &req).is_err());
}

#[test]
fn settings_are_checked() {
    let facts = config_facts("smollm2");
    let mut req = gpu("m", 8 * GIB);
    req.max_model_len = Some(100_000);
    assert!(
        build_plan(&facts, &req)
            .unwrap_err()
            .to_string()
            .contains("8192")
    );
    req.max_model_len = None;
    req.block_size = 24;
    assert!(build_plan(&facts, &req).is_err());
}

#[test]
fn explicit_kv_budget_must_fit_the_device() {
    let facts = config_facts("llama3");
    let mut req = gpu("m", 24 * GIB);
    req.kv_cache_memory_bytes = Some(4 * GIB);
    let plan = build_plan(&facts, &req).unwrap();
    let o = option(&plan, 1);
    assert_eq!((o.kv_budget_bytes_per_gpu, o.kv_blocks), (4 * GIB, 2048));
    assert!(o.fits);
    assert!(
        plan.recommendation
            .flags
            .contains(&"--kv-cache-memory-bytes 4GiB".to_string())
    );
    req.kv_cache_memory_bytes = Some(8 * GIB);
    let plan = build_plan(&facts, &req).unwrap();
    assert!(!option(&plan, 1).fits);
}

#[test]
fn json_has_the_documented_fields() {
    let plan = build_plan(&config_facts("llama3"), &gpu("m", 24 * GIB)).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    for key in [
        "schema_version",
        "model",
        "settings",
        "kv_bytes_per_token",
        "options",
        "recommendation",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["model"]["layers"], 32);
    assert_eq!(v["model"]["weight_bytes_origin"], "parameters_times_dtype");
    assert_eq!(v["options"][0]["kv_tokens"], 38_784);
    assert_eq!(v["recommendation"]["tensor_parallel_size"], 1);
    let text = render::to_text(&plan);
    assert!(
        text.contains("38,784") && text.contains("Recommended: kiln serve m"),
        "{text}"
    );
}

/// A mixture of experts holds every expert in memory but computes with two
/// of eight per token.
#[test]
fn mixtral_counts_every_expert_and_reports_the_active_ones() {
    let facts = config_facts("mixtral");
    assert_eq!(
        (facts.parameters, facts.active_parameters),
        (46_702_792_704, 12_879_925_248)
    );
    assert_eq!(facts.weights.total(), 2 * 46_702_792_704);
    let plan = build_plan(&facts, &gpu("mixtral", 141 * GIB)).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["model"]["active_parameters"], 12_879_925_248u64);
    let text = render::to_text(&plan);
    assert!(
        text.contains("46.70 B parameters, 12.88 B active"),
        "{text}"
    );
    let dense = config_facts("llama3");
    assert_eq!(dense.active_parameters, dense.parameters);
    let text = render::to_text(&build_plan(&dense, &gpu("m", 24 * GIB)).unwrap());
    assert!(!text.contains("active"), "{text}");
}

/// The real default model: weights summed from its tensor table.
#[test]
fn real_smollm2_gguf() {
    let path = std::env::var_os("KILN_TEST_GGUF")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    if !path.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the default model is missing: CI sets KILN_TEST_GGUF after `kiln pull`"
        );
        eprintln!("skipping: the default model is not available (set KILN_TEST_GGUF)");
        return;
    }
    let facts = read_facts(&kiln_hub::ResolvedModel {
        path,
        format: kiln_hub::ModelFormat::Gguf,
        origin: None,
        weight_bytes: None,
        downloaded_bytes: 0,
    })
    .unwrap();
    // token_embd Q8_0 30,081,024 + 30 × (Q4_1 matrices 2,211,840 + two F32 norms 4,608) + output norm 2,304
    assert_eq!(
        facts.weights,
        WeightSplit {
            sharded: 96_436_224,
            replicated: 140_544
        }
    );
    assert_eq!(facts.weight_format, "GGUF Q4_1");
    assert_eq!(facts.shape, shape_of(&config("smollm2")));
    let by_format: Vec<(&str, usize, u64)> = facts
        .bytes_by_format
        .iter()
        .map(|f| (f.format.as_str(), f.tensors, f.bytes))
        .collect();
    assert_eq!(
        by_format,
        vec![
            ("Q4_1", 210, 66_355_200),
            ("Q8_0", 1, 30_081_024),
            ("F32", 61, 140_544)
        ]
    );
    let text = render::to_text(&build_plan(&facts, &gpu("m", 24 * GIB)).unwrap());
    assert!(
        text.contains("by format: Q4_1 63.3 MiB (210 tensors), Q8_0 28.7 MiB (1 tensor)"),
        "{text}"
    );
}

/// A window on every layer caps what a sequence holds at its window plus a
/// prefill chunk and a block, so more full-length sequences fit.
#[test]
fn mistral_7b_frees_kv_behind_its_window() {
    let facts = config_facts("mistral");
    assert_eq!(config("mistral").num_parameters(), 7_241_732_096);
    assert_eq!(
        facts.window,
        WindowLayout::All {
            window: 4096,
            layers: 32
        }
    );
    let plan = build_plan(&facts, &gpu("mistralai/Mistral-7B-v0.1", 24 * GIB)).unwrap();
    assert_eq!(plan.settings.max_model_len, 32_768);
    assert_eq!(plan.kv_blocks_per_sequence, 769);
    let o = option(&plan, 1);
    assert_eq!(o.activation_bytes_per_gpu, 827_296_772);
    assert_eq!(o.kv_budget_bytes_per_gpu, 6_808_320_610);
    assert_eq!((o.kv_blocks, o.kv_tokens), (3246, 51_936));
    assert_eq!(o.full_length_sequences, 4);
    assert_eq!(o.max_concurrency, 3246.0 / 769.0);
    assert!(o.fits);
    let text = render::to_text(&plan);
    assert!(
        text.contains(
            "Window    sliding window 4096 on all 32 layers: a sequence holds at most 769 KV blocks (12304 tokens) of the 2048 its 32768 tokens fill"
        ),
        "{text}"
    );
    assert!(
        text.contains("concurrency = KV blocks / the 769 blocks a sequence holds at most"),
        "{text}"
    );
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["kv_blocks_per_sequence"], 769);
    assert_eq!(
        v["model"]["sliding_window"],
        serde_json::json!({"window": 4096, "sliding_layers": 32, "layers": 32, "freed": true})
    );
    // The same model without freeing: one full-length sequence at a time.
    let mut kept = facts.clone();
    kept.window = WindowLayout::None;
    let plan = build_plan(&kept, &gpu("m", 24 * GIB)).unwrap();
    let o = option(&plan, 1);
    assert_eq!((o.kv_blocks, o.full_length_sequences), (3246, 1));
    assert_eq!(o.max_concurrency, 51_936.0 / 32_768.0);
    assert_eq!(plan.kv_blocks_per_sequence, 2048);
    assert!(!render::to_text(&plan).contains("Window"));
}

/// Smaller chunks mean fewer blocks per sequence; a context shorter than
/// the window holds its whole length.
#[test]
fn the_window_cap_follows_the_chunk_and_the_context() {
    let facts = config_facts("mistral");
    let mut req = gpu("m", 24 * GIB);
    req.max_num_batched_tokens = Some(512);
    // ceil((4096 + 512 − 1) / 16) + 1 = 289 (256 sequences × 1 token < 512).
    assert_eq!(
        build_plan(&facts, &req).unwrap().kv_blocks_per_sequence,
        289
    );
    req.max_model_len = Some(2048);
    let plan = build_plan(&facts, &req).unwrap();
    assert_eq!(plan.kv_blocks_per_sequence, 128);
    assert_eq!(
        option(&plan, 1).max_concurrency,
        option(&plan, 1).kv_blocks as f64 / 128.0
    );
}

/// Gemma 2 slides on every other layer: nothing is freed, the numbers are
/// full-length ones, and the plan says why.
#[test]
fn gemma2_windows_some_layers_and_frees_nothing() {
    let facts = config_facts("gemma2");
    assert_eq!(
        facts.window,
        WindowLayout::Some {
            window: 4096,
            sliding: 21,
            layers: 42
        }
    );
    let plan = build_plan(&facts, &gpu("google/gemma-2-9b", 80 * GIB)).unwrap();
    assert_eq!(plan.kv_blocks_per_sequence, 512);
    let o = option(&plan, 1);
    assert_eq!(o.full_length_sequences, o.kv_blocks / 512);
    assert_eq!(o.max_concurrency, o.kv_tokens as f64 / 8192.0);
    let text = render::to_text(&plan);
    assert!(
        text.contains("Window    sliding window 4096 on 21 of 42 layers: the KV behind the window is not freed yet"),
        "{text}"
    );
    assert!(
        text.contains("concurrency = KV tokens / max_model_len"),
        "{text}"
    );
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["model"]["sliding_window"]["freed"], false);
    let dense = build_plan(&config_facts("llama3"), &gpu("m", 24 * GIB)).unwrap();
    let v = serde_json::to_value(&dense).unwrap();
    assert!(v["model"]["sliding_window"].is_null());
    assert_eq!(v["kv_blocks_per_sequence"], 512);
}

/// The plan's numbers are the engine's: the same blocks per sequence and
/// concurrency as the start-up summary computes for the same budget.
#[test]
fn the_plan_matches_the_engine_kv_plan() {
    let facts = config_facts("mistral");
    let plan = build_plan(&facts, &gpu("m", 24 * GIB)).unwrap();
    let o = option(&plan, 1);
    let engine = kiln_engine::memory::plan_kv_cache(kiln_engine::memory::KvBudget {
        budget_bytes: o.kv_budget_bytes_per_gpu,
        bytes_per_block: o.kv_bytes_per_token_per_gpu * 16,
        block_size: 16,
        max_model_len: 32_768,
        max_num_batched_tokens: plan.settings.max_num_batched_tokens,
        window: facts.window,
        budget_source: "--kv-cache-memory-bytes",
        free_bytes: None,
    })
    .unwrap();
    assert_eq!(engine.num_blocks as u64, o.kv_blocks);
    assert_eq!(engine.blocks_per_sequence, plan.kv_blocks_per_sequence);
    assert_eq!(engine.max_concurrency(), o.max_concurrency);
    assert_eq!(engine.window_line(), plan.window_note);
}

/// The recommendation for a windowed model repeats the settings its fit
/// depends on: the tiny Mistral on CPU with a pool of 8 blocks of 4 tokens,
/// which holds one sequence of 256 tokens (7 blocks) only with steps of 16.
#[test]
fn a_windowed_fit_recommends_the_step_size_it_needs() {
    let mut facts = config_facts("mistral");
    facts.shape.max_position_embeddings = 256;
    facts.window = WindowLayout::All {
        window: 8,
        layers: 32,
    };
    let mut req = gpu("m", 0);
    req.device = Device::Cpu { memory_bytes: None };
    req.block_size = 4;
    req.max_num_seqs = Some(8);
    req.max_num_batched_tokens = Some(16);
    req.kv_cache_memory_bytes = Some(8 * facts.shape.layers as u64 * 2 * 8 * 128 * 4 * 4);
    let plan = build_plan(&facts, &req).unwrap();
    assert_eq!(plan.kv_blocks_per_sequence, 7);
    let o = option(&plan, 1);
    assert_eq!((o.kv_blocks, o.full_length_sequences), (8, 1));
    assert!(o.fits);
    assert_eq!(
        plan.recommendation.command,
        "kiln serve m --backend cpu --max-model-len 256 --kv-cache-memory-bytes 8MiB --block-size 4 --max-num-batched-tokens 16 --max-num-seqs 8"
    );
}
