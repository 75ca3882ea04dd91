//! Malformed checkpoints are refused with one line naming what is wrong,
//! never a panic or an allocation sized from a corrupt number:
//! - GGUF files: random byte mutations and truncations of a real K-quant
//!   fixture (header, metadata, tensor infos, block data) through the whole
//!   loader (a stable corpus-mutation test CI always runs);
//! - quantized safetensors: unknown bits, a group size that does not divide
//!   the input dimension, missing `qzeros`/`scales`, shapes that disagree
//!   with the config, an unknown method.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use kiln_engine::load_model;
use kiln_tests::{cpu_config, fixtures};
use proptest::prelude::*;

fn config(path: &Path) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(path);
    c.max_model_len = Some(512);
    c.kv_cache_memory_bytes = Some(16 << 20);
    c
}

/// Load `bytes` as a GGUF file; `Err` is fine, a panic is not.
fn load_gguf_bytes(bytes: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.gguf");
    std::fs::write(&path, bytes).unwrap();
    match catch_unwind(AssertUnwindSafe(|| load_model(&config(&path)).map(drop))) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => panic!("loading a mutated GGUF file panicked"),
    }
}

fn original() -> Vec<u8> {
    std::fs::read(fixtures().join("kquant/tiny-Q4_K_M.gguf")).unwrap()
}

#[test]
fn the_unmutated_fixture_loads() {
    load_gguf_bytes(&original()).unwrap();
}

#[test]
fn truncated_files_are_refused_with_one_line() {
    let bytes = original();
    for len in [
        0,
        3,
        4,
        8,
        23,
        24,
        100,
        4096,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let e = load_gguf_bytes(&bytes[..len]).expect_err("a truncated file must be refused");
        eprintln!("truncated to {len}: {e}");
        assert!(!e.contains('\n'), "one line, got: {e}");
    }
}

#[test]
fn an_unknown_tensor_type_is_named() {
    let mut bytes = original();
    // The first tensor info's type id follows its name and dims; find the
    // name `output.weight` and its u32 type after n_dims and two u64 dims.
    let name = b"output.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("output.weight in the header");
    let ty = at + name.len() + 4 + 16;
    bytes[ty..ty + 4].copy_from_slice(&77u32.to_le_bytes());
    let e = load_gguf_bytes(&bytes).expect_err("type 77 does not exist");
    assert!(e.contains("77") && e.contains("output.weight"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random overwrites anywhere in the first 64 KiB (header, metadata,
    /// tensor infos, the start of the data) and anywhere in the file.
    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((0usize..65_536, any::<u8>()), 1..8),
        far in prop::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..3),
    ) {
        let mut bytes = original();
        for (at, v) in edits {
            if at < bytes.len() {
                bytes[at] = v;
            }
        }
        for (at, v) in far {
            let at = at.index(bytes.len() - 8);
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        if let Err(e) = load_gguf_bytes(&bytes) {
            prop_assert!(!e.contains('\n'), "one line, got: {}", e);
        }
    }
}

/// A copy of a quantized fixture with `edit` applied to its config.json.
fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = fixtures().join("quantized").join(name);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    dir
}

/// The same fixture with tensors whose names end in `suffix` left out.
fn without_tensors(name: &str, suffix: &str) -> tempfile::TempDir {
    let dir = with_config(name, |_| {});
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with(suffix))
        .collect();
    safetensors::serialize_to_file(kept, None, &path).unwrap();
    dir
}

fn refusal(dir: &Path) -> String {
    let e = load_model(&config(dir)).err().expect("refused").to_string();
    eprintln!("refused: {e}");
    assert!(!e.contains('\n'), "one line, got: {e}");
    e
}

#[test]
fn bad_quantization_configs_name_the_field() {
    let set = |key: &'static str, v: serde_json::Value| {
        move |c: &mut serde_json::Value| c["quantization_config"][key] = v
    };
    let e = refusal(with_config("gptq-b4-g32", set("bits", 5.into())).path());
    assert!(e.contains("quantization_config.bits 5"), "{e}");
    let e = refusal(with_config("gptq-b4-g32", set("group_size", 48.into())).path());
    assert!(e.contains("group_size 48"), "{e}");
    let e = refusal(with_config("gptq-b4-g32", set("quant_method", "hqq".into())).path());
    assert!(e.contains("\"hqq\""), "{e}");
    let e = refusal(with_config("gptq-b4-g32", set("checkpoint_format", "marlin".into())).path());
    assert!(e.contains("checkpoint_format"), "{e}");
    // 64 divides 128 but not the 8-bit fixture's group layout: scales disagree.
    let e = refusal(with_config("gptq-b8-g32", set("group_size", 64.into())).path());
    assert!(e.contains("qzeros") || e.contains("scales"), "{e}");
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let e = refusal(without_tensors("gptq-b4-g32", ".qzeros").path());
    assert!(e.contains("qzeros") && e.contains("is missing"), "{e}");
    let e = refusal(without_tensors("awq-b4-g32", ".scales").path());
    assert!(e.contains("scales") && e.contains("is missing"), "{e}");
    let e = refusal(with_config("gptq-b4-g32", |c| c["intermediate_size"] = 512.into()).path());
    assert!(e.contains("mlp") && e.contains("shape"), "{e}");
}
