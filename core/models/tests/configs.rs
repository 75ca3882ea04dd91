//! `config.json` files of public models (written from their published
//! configs) and the registry's verdict on each.

use kiln_models::config::{ConfigError, ModelConfig, RopeScaling};
use kiln_models::registry::{self, resolve};

fn load(name: &str) -> ModelConfig {
    let path = format!(
        "{}/tests/fixtures/configs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ModelConfig::from_hf_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Expect {
    file: &'static str,
    architecture: &'static str,
    /// hidden, intermediate, layers, heads, kv heads, head_dim, vocab, context.
    dims: [usize; 8],
    rope_theta: f32,
    tied: bool,
    qkv_bias: bool,
    sliding_window: Option<usize>,
    bos: Option<u32>,
    eos: &'static [u32],
    parameters: u64,
}

const EXPECTED: [Expect; 13] = [
    Expect {
        file: "llama-2-7b.json",
        architecture: "LlamaForCausalLM",
        dims: [4096, 11008, 32, 32, 32, 128, 32000, 4096],
        rope_theta: 10000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 6_738_415_616,
    },
    Expect {
        file: "llama-3-8b.json",
        architecture: "LlamaForCausalLM",
        dims: [4096, 14336, 32, 32, 8, 128, 128256, 8192],
        rope_theta: 500000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(128000),
        eos: &[128001],
        parameters: 8_030_261_248,
    },
    Expect {
        file: "llama-3.1-8b-instruct.json",
        architecture: "LlamaForCausalLM",
        dims: [4096, 14336, 32, 32, 8, 128, 128256, 131072],
        rope_theta: 500000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(128000),
        eos: &[128001, 128008, 128009],
        parameters: 8_030_261_248,
    },
    Expect {
        file: "llama-3.2-1b-transformers5.json",
        architecture: "LlamaForCausalLM",
        dims: [2048, 8192, 16, 32, 8, 64, 128256, 131072],
        rope_theta: 500000.0,
        tied: true,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(128000),
        eos: &[128001],
        parameters: 1_235_814_400,
    },
    Expect {
        file: "mistral-7b-v0.1.json",
        architecture: "MistralForCausalLM",
        dims: [4096, 14336, 32, 32, 8, 128, 32000, 32768],
        rope_theta: 10000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: Some(4096),
        bos: Some(1),
        eos: &[2],
        parameters: 7_241_732_096,
    },
    Expect {
        file: "mistral-7b-instruct-v0.3.json",
        architecture: "MistralForCausalLM",
        dims: [4096, 14336, 32, 32, 8, 128, 32768, 32768],
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 7_248_023_552,
    },
    Expect {
        file: "qwen2-0.5b.json",
        architecture: "Qwen2ForCausalLM",
        dims: [896, 4864, 24, 14, 2, 64, 151936, 131072],
        rope_theta: 1_000_000.0,
        tied: true,
        qkv_bias: true,
        sliding_window: None,
        bos: Some(151643),
        eos: &[151643],
        parameters: 494_032_768,
    },
    Expect {
        file: "tinyllama-1.1b-chat-v1.0.json",
        architecture: "LlamaForCausalLM",
        dims: [2048, 5632, 22, 32, 4, 64, 32000, 2048],
        rope_theta: 10000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 1_100_048_384,
    },
    Expect {
        file: "smollm2-135m-instruct.json",
        architecture: "LlamaForCausalLM",
        dims: [576, 1536, 30, 9, 3, 64, 49152, 8192],
        rope_theta: 100000.0,
        tied: true,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 134_515_008,
    },
    Expect {
        file: "smollm2-135m-instruct-transformers5.json",
        architecture: "LlamaForCausalLM",
        dims: [576, 1536, 30, 9, 3, 64, 49152, 8192],
        rope_theta: 100000.0,
        tied: true,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 134_515_008,
    },
    Expect {
        file: "mixtral-8x7b-v0.1.json",
        architecture: "MixtralForCausalLM",
        dims: [4096, 14336, 32, 32, 8, 128, 32000, 32768],
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(1),
        eos: &[2],
        parameters: 46_702_792_704,
    },
    Expect {
        file: "qwen1.5-moe-a2.7b.json",
        architecture: "Qwen2MoeForCausalLM",
        dims: [2048, 5632, 24, 16, 16, 128, 151936, 8192],
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: true,
        sliding_window: None,
        bos: Some(151643),
        eos: &[151643],
        parameters: 14_315_784_192,
    },
    Expect {
        file: "qwen3-30b-a3b.json",
        architecture: "Qwen3MoeForCausalLM",
        dims: [2048, 6144, 48, 32, 4, 128, 151936, 40960],
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: false,
        sliding_window: None,
        bos: Some(151643),
        eos: &[151645],
        parameters: 30_532_122_624,
    },
];

/// Experts, routing and active parameters (transformers' count of the
/// parameters outside the experts plus k/E of the experts').
#[test]
fn mixture_of_experts_configs() {
    // (file, E, k, expert width, shared width, renormalize, active parameters)
    let cases = [
        (
            "mixtral-8x7b-v0.1.json",
            8,
            2,
            14336,
            None,
            true,
            12_879_925_248,
        ),
        (
            "qwen1.5-moe-a2.7b.json",
            60,
            4,
            1408,
            Some(5632),
            false,
            2_689_173_504,
        ),
        ("qwen3-30b-a3b.json", 128, 8, 768, None, true, 3_353_032_704),
    ];
    for (file, experts, k, width, shared, renormalize, active) in cases {
        let c = load(file);
        let moe = c
            .moe
            .clone()
            .unwrap_or_else(|| panic!("{file}: no experts"));
        assert_eq!(
            (
                moe.num_experts,
                moe.experts_per_token,
                moe.expert_intermediate_size,
                moe.shared_expert_intermediate_size,
                moe.renormalize
            ),
            (experts, k, width, shared, renormalize),
            "{file}"
        );
        assert!(moe.sparse_layers.iter().all(|&s| s), "{file}");
        assert_eq!(c.num_active_parameters(), active, "{file}");
        assert!(resolve(&c).unwrap().experts.is_some(), "{file}");
    }
    let dense = load("llama-3-8b.json");
    assert_eq!(dense.num_active_parameters(), dense.num_parameters());
}

#[test]
fn public_configs_parse_and_resolve() {
    for e in &EXPECTED {
        let c = load(e.file);
        let dims = [
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.vocab_size,
            c.max_position_embeddings,
        ];
        assert_eq!(c.architecture, e.architecture, "{}", e.file);
        assert_eq!(dims, e.dims, "{}", e.file);
        assert_eq!(c.rope_theta, e.rope_theta, "{}", e.file);
        assert_eq!(c.tie_word_embeddings, e.tied, "{}", e.file);
        assert_eq!(c.sliding_window, e.sliding_window, "{}", e.file);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.as_slice()),
            (e.bos, e.eos),
            "{}",
            e.file
        );
        assert_eq!(c.num_parameters(), e.parameters, "{}", e.file);
        let v = resolve(&c).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert_eq!(v.qkv_bias, e.qkv_bias, "{}", e.file);
        assert_eq!(v.sliding_window, e.sliding_window, "{}", e.file);
        assert!(c.rms_norm_eps > 0.0 && c.quantization_config.is_none());
    }
}

#[test]
fn rope_and_dtype_details() {
    let llama31 = load("llama-3.1-8b-instruct.json");
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    assert_eq!(llama31.rope_scaling, Some(llama3));
    let llama32 = load("llama-3.2-1b-transformers5.json");
    assert!(matches!(
        llama32.rope_scaling,
        Some(RopeScaling::Llama3 { factor: 32.0, .. })
    ));
    assert_eq!(
        llama32.torch_dtype.as_deref(),
        Some("bfloat16"),
        "transformers-5 `dtype`"
    );
    assert_eq!(load("llama-2-7b.json").rope_scaling, None);
    assert_eq!(
        load("llama-2-7b.json").torch_dtype.as_deref(),
        Some("float16")
    );
    // transformers 5 writes the f32 value of 1e-5 widened to f64.
    assert_eq!(
        load("smollm2-135m-instruct-transformers5.json").rms_norm_eps,
        1e-5
    );
    assert_eq!(load("qwen2-0.5b.json").rms_norm_eps, 1e-6);
    // The two SmolLM2 configs describe the same decoder.
    let (v4, v5) = (
        load("smollm2-135m-instruct.json"),
        load("smollm2-135m-instruct-transformers5.json"),
    );
    assert_eq!(
        (v4.rope_theta, v4.rope_scaling, v4.head_dim, v4.rms_norm_eps),
        (v5.rope_theta, v5.rope_scaling, v5.head_dim, v5.rms_norm_eps)
    );
    assert_eq!(
        load("tinyllama-1.1b-chat-v1.0.json").kv_bytes_per_token(2),
        2 * 22 * 4 * 64 * 2
    );
}

#[test]
fn quantization_config_is_kept_raw() {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/fixtures/configs/tinyllama-1.1b-chat-v1.0.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let q = serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": false});
    v["quantization_config"] = q.clone();
    let c = ModelConfig::from_hf_json(&v.to_string()).unwrap();
    assert_eq!(c.quantization_config, Some(q));
}

#[test]
fn broken_public_configs_name_the_problem() {
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/fixtures/configs/llama-3-8b.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let broken = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v = base.clone();
        edit(v.as_object_mut().unwrap());
        ModelConfig::from_hf_json(&v.to_string()).unwrap_err()
    };
    assert_eq!(
        broken(&|m| {
            m.remove("vocab_size");
        }),
        ConfigError::Missing("vocab_size".into())
    );
    let e = broken(&|m| {
        m.insert("num_hidden_layers".into(), serde_json::json!(0));
    });
    assert!(
        e.to_string().contains("`num_hidden_layers`") && e.to_string().contains("positive"),
        "{e}"
    );
    let e = broken(&|m| {
        m.insert("architectures".into(), serde_json::json!([]));
    });
    assert!(e.to_string().contains("`architectures`"), "{e}");
    let e = broken(&|m| {
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "mrope", "factor": 2.0}),
        );
    });
    assert!(
        e.to_string().contains("mrope") && e.to_string().contains("longrope"),
        "{e}"
    );
    let e = broken(&|m| {
        m.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
        );
    });
    assert_eq!(
        e,
        ConfigError::Missing("rope_scaling.original_max_position_embeddings".into())
    );

    let mut gpt = base.clone();
    gpt["architectures"] = serde_json::json!(["FalconForCausalLM"]);
    let c = ModelConfig::from_hf_json(&gpt.to_string()).unwrap();
    let msg = resolve(&c).unwrap_err().to_string();
    assert!(
        msg.contains("FalconForCausalLM") && msg.contains(&registry::supported().join(", ")),
        "{msg}"
    );
}
