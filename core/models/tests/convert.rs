//! GGUF → f32 safetensors conversion on small random models.

mod common;

use common::{Scratch, TinySpec, tiny_gguf, tiny_tensors};
use kiln_models::config::ModelConfig;
use kiln_models::convert::gguf_to_safetensors_f32;
use kiln_models::weights::dequant::dequantize;
use kiln_models::weights::safetensors::SafetensorsSource;
use kiln_models::weights::{WeightDType, WeightSource};

fn convert(spec: &TinySpec, tag: &str) -> (Scratch, Vec<common::TinyTensor>) {
    let dir = Scratch::new(tag);
    let tensors = tiny_tensors(spec, 11);
    let gguf = dir.0.join("model.gguf");
    tiny_gguf(spec, &tensors).write(&gguf).unwrap();
    let summary = gguf_to_safetensors_f32(&gguf, &dir.0.join("hf")).unwrap();
    assert_eq!(summary.tensors, tensors.len());
    (dir, tensors)
}

#[test]
fn tensors_are_dequantized_in_hf_order_under_hf_names() {
    for (spec, tag) in [
        (TinySpec::default(), "q8"),
        (
            TinySpec {
                matrix_type: WeightDType::Q4_1,
                tied: false,
                qkv_bias: true,
                ..TinySpec::default()
            },
            "q41",
        ),
        (
            TinySpec {
                arch: "qwen2",
                matrix_type: WeightDType::Q4_K,
                hidden: 256,
                intermediate: 256,
                heads: 4,
                kv_heads: 2,
                qkv_bias: true,
                ..TinySpec::default()
            },
            "qwen",
        ),
    ] {
        let (dir, tensors) = convert(&spec, tag);
        let st = SafetensorsSource::open(dir.0.join("hf")).unwrap();
        let mut want_names: Vec<String> = tensors.iter().map(|t| t.hf_name.clone()).collect();
        want_names.sort();
        assert_eq!(st.tensor_names(), want_names, "{tag}");
        assert_eq!(st.tensor("lm_head.weight").unwrap().is_some(), !spec.tied);
        for t in &tensors {
            let got = st.tensor(&t.hf_name).unwrap().unwrap();
            assert_eq!(
                (got.dtype, &got.shape),
                (WeightDType::F32, &t.shape),
                "{}",
                t.hf_name
            );
            let want = dequantize(t.dtype, &t.hf_bytes, t.shape.iter().product()).unwrap();
            let want: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!(
                got.data.as_ref() == want.as_slice(),
                "{tag} {} differs",
                t.hf_name
            );
        }
    }
}

#[test]
fn config_json_describes_the_same_decoder() {
    let spec = TinySpec {
        tied: false,
        qkv_bias: true,
        ..TinySpec::default()
    };
    let (dir, _) = convert(&spec, "cfg");
    let text = std::fs::read_to_string(dir.0.join("hf/config.json")).unwrap();
    let written = ModelConfig::from_hf_json(&text).unwrap();
    let g = kiln_models::weights::gguf::GgufFile::open(dir.0.join("model.gguf")).unwrap();
    let mut original = ModelConfig::from_gguf(&g).unwrap();
    original.torch_dtype = Some("float32".into());
    // The converted directory is in Hugging Face layout, the file in llama.cpp's.
    original.llama_cpp_layout = false;
    assert_eq!(written, original);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(v["rope_theta"], serde_json::json!(10000.0));
    assert_eq!(v["tie_word_embeddings"], serde_json::json!(false));
}

#[test]
fn conversion_is_deterministic() {
    let spec = TinySpec::default();
    let (a, _) = convert(&spec, "det-a");
    let (b, _) = convert(&spec, "det-b");
    for f in ["hf/model.safetensors", "hf/config.json"] {
        assert_eq!(
            std::fs::read(a.0.join(f)).unwrap(),
            std::fs::read(b.0.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn unsupported_types_fail_before_writing() {
    let dir = Scratch::new("unsupported");
    let spec = TinySpec {
        matrix_type: WeightDType::MXFP4,
        ..TinySpec::default()
    };
    let mut tensors = tiny_tensors(&spec, 2);
    for t in &mut tensors {
        if t.dtype == WeightDType::MXFP4 {
            t.hf_bytes.iter_mut().for_each(|b| *b = 0);
        }
    }
    let gguf = dir.0.join("model.gguf");
    tiny_gguf(&spec, &tensors).write(&gguf).unwrap();
    let e = gguf_to_safetensors_f32(&gguf, &dir.0.join("hf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("MXFP4") && e.contains("model.gguf"), "{e}");
    assert!(!dir.0.join("hf/model.safetensors").exists());
}
