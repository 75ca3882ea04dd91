//! The real default model (SmolLM2-135M-Instruct Q4_1). Skipped with a
//! message when the file is absent; `KILN_TEST_GGUF` points at it.
//! Reference values come from gguf-py and transformers
//! (`fixtures/make_qk_fixture.py`).

use std::path::PathBuf;

use kiln_models::config::ModelConfig;
use kiln_models::registry::resolve;
use kiln_models::weights::dequant::dequantize_view;
use kiln_models::weights::gguf::GgufFile;
use kiln_models::weights::{WeightDType, WeightSource};

fn model() -> Option<GgufFile> {
    let p = std::env::var_os("KILN_TEST_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if p.exists() {
        Some(GgufFile::open(&p).expect("open the default model"))
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the default model is missing: CI sets KILN_TEST_GGUF after `kiln pull`"
        );
        eprintln!(
            "skipping: default model not found at {} (set KILN_TEST_GGUF)",
            p.display()
        );
        None
    }
}

#[test]
fn header_and_hyperparameters() {
    let Some(g) = model() else { return };
    assert_eq!(g.version, 3);
    assert_eq!(g.metadata("general.alignment"), None);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_start(), 1_785_664);
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.file_type(), Some(3));
    assert_eq!(g.file_type_name(), Some("MOSTLY_Q4_1"));
    let u = |k: &str| g.get_u32(&format!("llama.{k}"));
    assert_eq!(u("block_count"), Some(30));
    assert_eq!(u("embedding_length"), Some(576));
    assert_eq!(u("feed_forward_length"), Some(1536));
    assert_eq!(u("attention.head_count"), Some(9));
    assert_eq!(u("attention.head_count_kv"), Some(3));
    assert_eq!(u("rope.dimension_count"), Some(64));
    assert_eq!(u("context_length"), Some(8192));
    assert_eq!(u("vocab_size"), Some(49152));
    assert_eq!(g.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(
        g.get_f32("llama.attention.layer_norm_rms_epsilon"),
        Some(1e-5)
    );
}

#[test]
fn tokenizer_keys() {
    let Some(g) = model() else { return };
    let t = g.tokenizer_metadata().unwrap();
    assert_eq!(
        (t.model.as_str(), t.pre.as_deref()),
        ("gpt2", Some("smollm"))
    );
    assert_eq!(t.tokens.len(), 49152);
    assert_eq!(t.token_types.len(), 49152);
    let control: Vec<usize> = (0..t.token_types.len())
        .filter(|&i| t.token_types[i] == 3)
        .collect();
    assert_eq!(control, (0..17).collect::<Vec<_>>());
    assert_eq!(t.merges.len(), 48900);
    assert!(t.merges.iter().all(|m| m.contains(' ')));
    assert_eq!(t.scores, None);
    assert_eq!((t.bos_token_id, t.eos_token_id), (Some(1), Some(2)));
    assert_eq!((t.unknown_token_id, t.padding_token_id), (Some(0), Some(2)));
    assert_eq!(
        (t.add_bos_token, t.add_space_prefix),
        (Some(false), Some(false))
    );
    assert_eq!(t.tokens[1], "<|im_start|>");
    assert!(t.chat_template.unwrap().contains("<|im_start|>"));
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").map(|v| v.len()),
        Some(49152)
    );
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").map(|v| v[0]),
        Some(3)
    );
}

#[test]
fn tensor_types_names_and_shapes() {
    let Some(g) = model() else { return };
    assert_eq!(g.tensors().len(), 272);
    assert_eq!(
        g.type_counts(),
        vec![
            (WeightDType::Q4_1, 210),
            (WeightDType::F32, 61),
            (WeightDType::Q8_0, 1)
        ]
    );
    assert_eq!(
        g.tensor_info("token_embd.weight").unwrap().dtype,
        WeightDType::Q8_0
    );
    assert!(
        g.tensors()
            .iter()
            .filter(|t| t.name.ends_with("norm.weight"))
            .all(|t| t.dtype == WeightDType::F32)
    );
    assert_eq!(g.quantization_label().as_deref(), Some("Q4_1"));
    assert!(g.unmapped_tensors().is_empty());
    let names = g.tensor_names();
    assert_eq!(names.len(), 272);
    assert!(
        g.tensor("lm_head.weight").unwrap().is_none(),
        "tied embeddings"
    );
    let shape = |n: &str| g.tensor(n).unwrap().unwrap().shape;
    assert_eq!(shape("model.embed_tokens.weight"), vec![49152, 576]);
    assert_eq!(
        shape("model.layers.0.self_attn.q_proj.weight"),
        vec![576, 576]
    );
    assert_eq!(
        shape("model.layers.29.self_attn.k_proj.weight"),
        vec![192, 576]
    );
    assert_eq!(
        shape("model.layers.3.mlp.down_proj.weight"),
        vec![576, 1536]
    );
    assert_eq!(shape("model.norm.weight"), vec![576]);
    let s = g.summary().to_string();
    assert!(
        s.contains("MOSTLY_Q4_1") && s.contains("272 tensors") && s.contains("Q4_1 ×210"),
        "{s}"
    );
}

#[test]
fn config_matches_what_transformers_writes() {
    let Some(g) = model() else { return };
    let c = ModelConfig::from_gguf(&g).unwrap();
    let reference = ModelConfig::from_hf_json(include_str!(
        "fixtures/configs/smollm2-135m-instruct-transformers5.json"
    ))
    .unwrap();
    // The GGUF form differs only in recording llama.cpp's Q/K row layout.
    assert_eq!(
        c,
        ModelConfig {
            torch_dtype: None,
            llama_cpp_layout: true,
            ..reference
        }
    );
    assert_eq!(c.num_parameters(), 134_515_008);
    let v = resolve(&c).unwrap();
    assert_eq!(
        (v.family, v.qkv_bias, v.sliding_window),
        ("llama", false, None)
    );
}

fn bits(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn rows_match_gguf_py_and_transformers_reverse_permutation() {
    let Some(g) = model() else { return };
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/qk_rows.json")).expect("fixture");
    let mut checked = 0;
    for (gguf_name, case) in fixture.as_object().unwrap() {
        let hf = kiln_models::weights::gguf::hf_name(gguf_name).unwrap();
        let view = g.tensor(&hf).unwrap().unwrap();
        let w = dequantize_view(&view).unwrap();
        if let Some(values) = case.get("values") {
            let want = bits(values);
            let got: Vec<u32> = w[..want.len()].iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{hf}");
            checked += 1;
            continue;
        }
        let cols = view.shape[1];
        let c = bits(&case["columns"]);
        let picked: Vec<usize> = (c[0]..c[1]).chain(c[2]..c[3]).map(|x| x as usize).collect();
        for (row, expected) in case["rows"].as_object().unwrap() {
            let r: usize = row.parse().unwrap();
            let got: Vec<u32> = picked.iter().map(|&j| w[r * cols + j].to_bits()).collect();
            assert_eq!(got, bits(expected), "{hf} row {r}");
            checked += 1;
        }
    }
    assert_eq!(checked, 34);
}
