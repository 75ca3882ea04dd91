//! The example backend in the engine: loaded from its shared library by the
//! real plugin host, it must generate the CPU backend's tokens on tiny
//! random models; and what it cannot run must fail with clear errors.

mod common;

use std::path::{Path, PathBuf};

use common::{example_device, library};
use kiln_engine::{BackendChoice, DTypeChoice, Engine, EngineConfig, StartError};
use kiln_models::weights::WeightDType;
use kiln_plugin_abi::safe::WeightSpec;
use kiln_plugin_abi::{KILN_F32, KILN_I32, KILN_WEIGHT_F32, KilnOp, ops};
use kiln_tests::tiny::{TinySpec, write_gguf, write_safetensors};
use kiln_tests::{greedy, start};

fn config(model: &Path, backend: BackendChoice) -> EngineConfig {
    let mut c = EngineConfig::new(model);
    c.backend = backend;
    c.kv_cache_memory_bytes = Some(16 << 20);
    c
}

#[test]
fn tiny_models_give_the_cpu_backends_tokens_through_the_library() {
    let Some(lib) = library() else { return };
    let qwen2 = TinySpec {
        architecture: "Qwen2ForCausalLM".into(),
        qkv_bias: true,
        tie: true,
        seed: 7,
        ..TinySpec::default()
    };
    // A short prompt, one over three KV blocks, and two sequences sharing a
    // partial block (copied on write once both append to it).
    let requests = || {
        let mut shared = greedy((0..21).map(|i| 40 + i * 3).collect(), 8);
        shared.sampling.n = 2;
        vec![
            greedy(vec![72, 105, 33], 12),
            greedy((0..40).map(|i| 32 + (i * 7) % 90).collect(), 12),
            shared,
        ]
    };
    for spec in [TinySpec::default(), qwen2] {
        let dir = tempfile::tempdir().unwrap();
        let model = write_safetensors(&dir.path().join("tiny"), &spec, WeightDType::F32);
        let example = start(config(&model, BackendChoice::Path(lib.clone())));
        assert_eq!(example.engine().summary().info.backend, "example");
        let got = example.generate(requests());
        drop(example);
        let mut cpu = kiln_tests::cpu_config(&model);
        cpu.max_model_len = None;
        cpu.kv_cache_memory_bytes = Some(16 << 20);
        let want = start(cpu).generate(requests());
        for (g, w) in got.iter().zip(&want) {
            let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
            assert!(!g.outputs.is_empty());
            assert_eq!(g.outputs.len(), w.outputs.len());
            for (a, b) in g.outputs.iter().zip(&w.outputs) {
                assert!(!a.token_ids.is_empty());
                assert_eq!(a.token_ids, b.token_ids, "{} differs", spec.architecture);
            }
        }
    }
}

fn start_error(config: EngineConfig) -> StartError {
    match Engine::start(config) {
        Ok(_) => panic!("the engine started on a model the example backend cannot run"),
        Err(e) => e,
    }
}

#[test]
fn quantized_checkpoints_fail_with_the_unsupported_format_error() {
    let Some(lib) = library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tiny = write_gguf(
        &dir.path().join("tiny.gguf"),
        &TinySpec::default(),
        WeightDType::Q8_0,
    );
    // The default model (Q8_0 embeddings, Q4_1 matrices) when it is present.
    let models: Vec<PathBuf> = std::iter::once(tiny)
        .chain(kiln_tests::default_model())
        .collect();
    for model in models {
        let mut c = config(&model, BackendChoice::Path(lib.clone()));
        c.max_model_len = Some(256);
        let error = start_error(c);
        let message = error.to_string();
        assert!(matches!(error, StartError::Decoder(_)), "{message}");
        assert!(
            message.contains("is stored as Q8_0, which the example backend cannot run"),
            "{message}"
        );
    }
}

#[test]
fn fp8_weights_fail_naming_the_format() {
    let Some(lib) = library() else { return };
    let quantized = kiln_tests::fixtures().join("quantized");
    let checkpoints = [
        (
            quantized.join("rtn-ct-fp8-channel"),
            None,
            "compressed-tensors-FP8 weight",
        ),
        (quantized.join("rtn-fp8-tensor"), None, "FP8 weight"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let f32_model = write_safetensors(dir.path(), &TinySpec::default(), WeightDType::F32);
    let at_load = (
        f32_model,
        Some("fp8"),
        "FP8 E4M3 (--quantization fp8) weight",
    );
    for (model, flag, what) in checkpoints.into_iter().chain([at_load]) {
        let mut c = config(&model, BackendChoice::Path(lib.clone()));
        c.max_model_len = Some(256);
        c.quantization = flag.map(String::from);
        let error = start_error(c);
        let message = error.to_string();
        assert!(matches!(error, StartError::Decoder(_)), "{message}");
        assert!(
            message.contains(&format!(
                "is a {what}, which the example backend cannot run"
            )),
            "{message}"
        );
    }
}

#[test]
fn sixteen_bit_activations_are_refused_at_start_up() {
    let Some(lib) = library() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(
        &dir.path().join("tiny"),
        &TinySpec::default(),
        WeightDType::BF16,
    );
    let mut c = config(&model, BackendChoice::Path(lib));
    c.dtype = DTypeChoice::BFloat16;
    let error = start_error(c);
    let message = error.to_string();
    assert!(matches!(error, StartError::Config(_)), "{message}");
    assert!(message.contains("not supported on example0"), "{message}");
}

#[test]
fn bad_operations_are_errors_with_messages_not_panics() {
    let Some(dev) = example_device() else { return };
    assert!(dev.backend().open(1, "{}").is_err());
    let buf = dev.alloc(64).unwrap();
    let ids = dev.alloc(4).unwrap();
    dev.write(&ids, 0, &7i32.to_le_bytes()).unwrap();

    let mut sample = KilnOp::new(ops::OP_SAMPLE);
    sample.tensors[0] = buf.view(0, KILN_F32, &[1, 16]);
    let e = dev.execute(&[sample]).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(e.message.contains("sample"), "{e}");

    let table = [0u8; 4 * 8];
    let weight = dev
        .prepare_weight(&WeightSpec::single("embed", KILN_WEIGHT_F32, 2, 4, &table))
        .unwrap();
    let lookup = ops::embedding(
        ids.view(0, KILN_I32, &[1]),
        weight.raw(),
        buf.view(0, KILN_F32, &[1, 4]),
    );
    let e = dev.execute(&[lookup]).unwrap_err();
    assert!(e.message.contains("token id 7 outside 0..2"), "{e}");

    let mismatched = ops::add(
        buf.view(0, KILN_F32, &[16]),
        buf.view(0, KILN_F32, &[16]),
        buf.view(32, KILN_F32, &[8]),
    );
    let e = dev.execute(&[mismatched]).unwrap_err();
    assert!(
        e.message
            .starts_with("add: an output has 16 elements, expected 8"),
        "{e}"
    );
}
