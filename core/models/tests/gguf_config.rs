//! `ModelConfig::from_gguf` on small files written with the GGUF writer.

mod common;

use common::{TinySpec, f32_bytes, tiny_gguf, tiny_tensors};
use kiln_models::config::{ConfigError, ModelConfig, RopeScaling};
use kiln_models::registry::resolve;
use kiln_models::weights::WeightDType;
use kiln_models::weights::gguf::{GgufFile, GgufValue, GgufWriter};

fn config_of(w: &GgufWriter) -> Result<ModelConfig, ConfigError> {
    ModelConfig::from_gguf(&GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap())
}

fn tiny(spec: &TinySpec) -> GgufWriter {
    tiny_gguf(spec, &tiny_tensors(spec, 3))
}

/// llama.cpp's converter: per-frequency divisors for Llama 3 scaling (f64,
/// as Python computes them), stored as F32.
fn llama3_rope_freqs(head_dim: usize, theta: f64, factor: f64, old_ctx: f64) -> Vec<f32> {
    let (low, high) = (1.0, 4.0);
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

#[test]
fn llama_metadata_becomes_a_config() {
    let spec = TinySpec::default();
    let c = config_of(&tiny(&spec)).unwrap();
    assert_eq!(c.architecture, "LlamaForCausalLM");
    assert_eq!(c.model_type, "llama");
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (64, 128, 2)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4, 2, 16)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (96, 256));
    assert_eq!(
        (c.rms_norm_eps, c.rope_theta, c.rope_scaling.clone()),
        (1e-5, 10000.0, None)
    );
    assert!(c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    let v = resolve(&c).unwrap();
    assert_eq!((v.family, v.qkv_bias), ("llama", false));

    let untied = TinySpec {
        tied: false,
        qkv_bias: true,
        ..spec
    };
    let c = config_of(&tiny(&untied)).unwrap();
    assert!(!c.tie_word_embeddings && c.attention_bias);
    assert!(resolve(&c).unwrap().qkv_bias);
}

#[test]
fn qwen2_and_unknown_architectures() {
    let spec = TinySpec {
        arch: "qwen2",
        qkv_bias: true,
        ..TinySpec::default()
    };
    let c = config_of(&tiny(&spec)).unwrap();
    assert_eq!(c.architecture, "Qwen2ForCausalLM");
    let v = resolve(&c).unwrap();
    assert_eq!(
        (v.family, v.qkv_bias, v.o_proj_bias),
        ("qwen2", true, false)
    );

    let falcon = TinySpec {
        arch: "falcon",
        ..TinySpec::default()
    };
    let c = config_of(&tiny(&falcon)).unwrap();
    assert_eq!(c.architecture, "falcon");
    let msg = resolve(&c).unwrap_err().to_string();
    assert!(
        msg.contains("`falcon`") && msg.contains("llama, qwen2, qwen2moe, qwen3, qwen3moe, gemma"),
        "{msg}"
    );
}

#[test]
fn missing_and_bad_keys_name_the_full_key() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.embedding_length", GgufValue::U32(64));
    assert_eq!(
        config_of(&w),
        Err(ConfigError::Missing("llama.attention.head_count".into()))
    );
    assert_eq!(
        config_of(&GgufWriter::new()),
        Err(ConfigError::Missing("general.architecture".into()))
    );

    let with = |key: &str, value: GgufValue| {
        let mut w = tiny(&TinySpec::default());
        w.metadata(key, value);
        config_of(&w)
    };
    // The writer refuses duplicate keys, so overrides go to keys the tiny file lacks.
    let e = with("llama.attention.value_length", GgufValue::U32(8)).unwrap_err();
    assert!(
        e.to_string().contains("`llama.attention.value_length`"),
        "{e}"
    );
    let e = with("llama.rope.scaling.type", GgufValue::String("mrope".into())).unwrap_err();
    assert!(e.to_string().contains("mrope"), "{e}");
    let e = with("llama.rope.scaling.type", GgufValue::String("yarn".into())).unwrap_err();
    assert_eq!(e, ConfigError::Missing("llama.rope.scaling.factor".into()));
    let e = with(
        "llama.rope.scaling.type",
        GgufValue::String("linear".into()),
    )
    .unwrap_err();
    assert_eq!(e, ConfigError::Missing("llama.rope.scaling.factor".into()));
    let e = with("llama.vocab_size", GgufValue::String("many".into())).unwrap_err();
    assert!(e.to_string().contains("`llama.vocab_size`"), "{e}");
    let c = with("llama.attention.sliding_window", GgufValue::U32(32)).unwrap();
    assert_eq!(c.sliding_window, Some(32));
    let c = with("llama.vocab_size", GgufValue::U64(100)).unwrap();
    assert_eq!(c.vocab_size, 100);
}

#[test]
fn head_geometry_is_checked() {
    let spec = TinySpec::default();
    let tensors = tiny_tensors(&spec, 3);
    let mut w = GgufWriter::new();
    let keep = |k: &str| !k.contains("rope.dimension_count") && !k.contains("head_count_kv");
    let full = tiny_gguf(&spec, &tensors);
    let g = GgufFile::from_bytes(full.to_bytes().unwrap()).unwrap();
    for (k, v) in g.metadata_entries().iter().filter(|(k, _)| keep(k)) {
        w.metadata(k, v.clone());
    }
    let base = w.clone();
    let mut partial = w.clone();
    partial.metadata("llama.rope.dimension_count", GgufValue::U32(8));
    assert_eq!(config_of(&partial).unwrap().rotary_dim, 8, "partial rotary");
    w.metadata("llama.rope.dimension_count", GgufValue::U32(7));
    let e = config_of(&w).unwrap_err();
    assert!(
        e.to_string().contains("`llama.rope.dimension_count`") && e.to_string().contains("even"),
        "{e}"
    );
    let mut w = base.clone();
    w.metadata("llama.attention.head_count_kv", GgufValue::U32(3));
    let e = config_of(&w).unwrap_err();
    assert!(
        e.to_string().contains("`llama.attention.head_count_kv`"),
        "{e}"
    );
    let c = config_of(&base).unwrap();
    assert_eq!(c.num_key_value_heads, 4, "defaults to head_count");
}

#[test]
fn linear_and_llama3_rope_scaling() {
    let mut w = tiny(&TinySpec::default());
    w.metadata(
        "llama.rope.scaling.type",
        GgufValue::String("linear".into()),
    )
    .metadata("llama.rope.scaling.factor", GgufValue::F32(4.0));
    assert_eq!(
        config_of(&w).unwrap().rope_scaling,
        Some(RopeScaling::Linear { factor: 4.0 })
    );

    // Llama 3.2-like: head 64, θ 500000, factor 32.
    let spec = TinySpec {
        hidden: 128,
        heads: 2,
        kv_heads: 1,
        ..TinySpec::default()
    };
    let tensors = tiny_tensors(&spec, 5);
    let freqs = llama3_rope_freqs(64, 500000.0, 32.0, 8192.0);
    assert!(freqs.contains(&1.0) && freqs.contains(&32.0));
    let build = |freqs: &[f32]| {
        let g = GgufFile::from_bytes(tiny_gguf(&spec, &tensors).to_bytes().unwrap()).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in g.metadata_entries() {
            let v = if k == "llama.rope.freq_base" {
                GgufValue::F32(500000.0)
            } else {
                v.clone()
            };
            w.metadata(k, v);
        }
        for t in g.tensors() {
            w.tensor(&t.name, t.dtype, &t.ne, g.tensor_data(t).unwrap().to_vec());
        }
        w.tensor(
            "rope_freqs.weight",
            WeightDType::F32,
            &[freqs.len() as u64],
            f32_bytes(freqs),
        );
        w
    };
    let c = config_of(&build(&freqs)).unwrap();
    assert_eq!(
        c.rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        })
    );
    let mut odd = freqs.clone();
    odd[0] = 2.0;
    let e = config_of(&build(&odd)).unwrap_err();
    assert!(e.to_string().contains("rope_freqs.weight"), "{e}");
    assert_eq!(config_of(&build(&[1.0; 32])).unwrap().rope_scaling, None);
    let e = config_of(&build(&[1.0; 5])).unwrap_err();
    assert!(e.to_string().contains("32 F32 values"), "{e}");
}

#[test]
fn a_llama_file_with_experts_is_mixtral() {
    let with_experts = |used: u32| {
        let mut w = tiny(&TinySpec::default());
        w.metadata("llama.expert_count", GgufValue::U32(4))
            .metadata("llama.expert_used_count", GgufValue::U32(used));
        config_of(&w)
    };
    let c = with_experts(2).unwrap();
    assert_eq!(c.architecture, "MixtralForCausalLM");
    let moe = c.moe.clone().unwrap();
    // No router tensors: every layer keeps a dense MLP; the expert width
    // falls back to `feed_forward_length`, as Mixtral's converter writes it.
    assert_eq!(
        (moe.num_experts, moe.experts_per_token, moe.renormalize),
        (4, 2, true)
    );
    assert_eq!(moe.expert_intermediate_size, 128);
    assert_eq!(moe.sparse_layers, vec![false, false]);
    assert_eq!(resolve(&c).unwrap().family, "mixtral");

    let msg = with_experts(5).unwrap_err().to_string();
    assert!(msg.contains("`llama.expert_used_count`"), "{msg}");
}

/// A corrupt layer count is refused before any per-layer table is sized
/// from it (a fuzzed file with 385,875,969 layers once exhausted memory).
#[test]
fn an_absurd_layer_count_is_refused() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.embedding_length", GgufValue::U32(64))
        .metadata("llama.attention.head_count", GgufValue::U32(4))
        .metadata("llama.feed_forward_length", GgufValue::U32(128))
        .metadata("llama.block_count", GgufValue::U32(0x1700_0001));
    let e = config_of(&w).unwrap_err().to_string();
    assert!(
        e.contains("`llama.block_count`") && e.contains("385875969 layers"),
        "{e}"
    );
}
