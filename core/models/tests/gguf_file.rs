//! GGUF writer/reader round trips, Hugging Face views, and corrupt files.

mod common;

use std::borrow::Cow;

use common::{Rng, Scratch, TinySpec, random_tensor, tiny_gguf, tiny_tensors};
use kiln_models::weights::gguf::{GgufFile, GgufValue, GgufWriter};
use kiln_models::weights::{WeightDType, WeightSource};
use proptest::prelude::*;

fn every_value_type() -> Vec<(&'static str, GgufValue)> {
    vec![
        ("t.u8", GgufValue::U8(200)),
        ("t.i8", GgufValue::I8(-100)),
        ("t.u16", GgufValue::U16(60000)),
        ("t.i16", GgufValue::I16(-30000)),
        ("t.u32", GgufValue::U32(4_000_000_000)),
        ("t.i32", GgufValue::I32(-2_000_000_000)),
        ("t.f32", GgufValue::F32(-1.5e-7)),
        ("t.bool", GgufValue::Bool(true)),
        ("t.string", GgufValue::String("héllo ▁wörld".into())),
        ("t.empty_string", GgufValue::String(String::new())),
        ("t.u64", GgufValue::U64(u64::MAX)),
        ("t.i64", GgufValue::I64(i64::MIN)),
        ("t.f64", GgufValue::F64(std::f64::consts::PI)),
        (
            "t.strings",
            GgufValue::Array(vec![
                GgufValue::String("a b".into()),
                GgufValue::String("".into()),
            ]),
        ),
        (
            "t.i32s",
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-6)]),
        ),
        (
            "t.f32s",
            GgufValue::Array(vec![GgufValue::F32(0.5), GgufValue::F32(-2.0)]),
        ),
        ("t.empty", GgufValue::Array(vec![])),
        (
            "t.nested",
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::U16(7), GgufValue::U16(8)]),
                GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::Bool(false)])]),
            ]),
        ),
    ]
}

const TENSOR_TYPES: [(WeightDType, u64); 11] = [
    (WeightDType::F32, 3),
    (WeightDType::F16, 5),
    (WeightDType::BF16, 7),
    (WeightDType::Q4_0, 64),
    (WeightDType::Q4_1, 32),
    (WeightDType::Q5_0, 32),
    (WeightDType::Q8_0, 96),
    (WeightDType::Q4_K, 256),
    (WeightDType::Q6_K, 512),
    (WeightDType::I8, 9),
    (WeightDType::I32, 1),
];

/// A writer with every metadata type and one tensor of each type in `TENSOR_TYPES`.
fn full_writer(version: u32, alignment: Option<u32>) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.version(version);
    for (k, v) in every_value_type() {
        w.metadata(k, v);
    }
    if let Some(a) = alignment {
        w.metadata("general.alignment", GgufValue::U32(a));
    }
    let mut rng = Rng(version as u64 * 1000 + alignment.unwrap_or(0) as u64);
    let mut datas = Vec::new();
    for (i, (dtype, row)) in TENSOR_TYPES.iter().enumerate() {
        let ne = [*row, 2 + i as u64 % 3];
        let data = random_tensor(&mut rng, *dtype, (ne[0] * ne[1]) as usize);
        w.tensor(&format!("x.{i}.{dtype}"), *dtype, &ne, data.clone());
        datas.push(data);
    }
    (w, datas)
}

#[test]
fn every_metadata_type_and_tensor_type_round_trips() {
    for version in [1, 2, 3] {
        for alignment in [None, Some(1), Some(8), Some(64), Some(4096)] {
            let (w, datas) = full_writer(version, alignment);
            let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
            let align = alignment.map_or(32, u64::from);
            assert_eq!(g.version, version);
            assert_eq!(g.alignment(), align);
            assert_eq!(g.data_start() % align, 0);
            for (k, v) in every_value_type() {
                assert_eq!(g.metadata(k), Some(&v), "v{version} {k}");
            }
            assert_eq!(g.tensors().len(), TENSOR_TYPES.len());
            for ((info, (dtype, row)), data) in g.tensors().iter().zip(TENSOR_TYPES).zip(&datas) {
                assert_eq!(info.dtype, dtype);
                assert_eq!(info.ne[0], row);
                assert_eq!(info.offset % align, 0, "{}", info.name);
                assert_eq!(g.tensor_data(info), Some(&data[..]));
                let raw = g.raw_tensor(&info.name).unwrap();
                assert_eq!(raw.shape, vec![info.ne[1] as usize, row as usize]);
                assert!(matches!(raw.data, Cow::Borrowed(_)));
            }
        }
    }
}

#[test]
fn typed_getters() {
    let (w, _) = full_writer(3, None);
    let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(g.get_u32("t.u32"), Some(4_000_000_000));
    assert_eq!(g.get_u32("t.u64"), None, "does not fit");
    assert_eq!(g.get_u32("t.i8"), None, "negative");
    assert_eq!(g.get_u64("t.u16"), Some(60000));
    assert_eq!(g.get_f32("t.f64"), Some(std::f32::consts::PI));
    assert_eq!(g.get_str("t.string"), Some("héllo ▁wörld"));
    assert_eq!(g.get_str("t.u8"), None);
    assert_eq!(g.get_bool("t.bool"), Some(true));
    assert_eq!(g.get_str_array("t.strings"), Some(vec!["a b", ""]));
    assert_eq!(g.get_str_array("t.i32s"), None);
    assert_eq!(g.get_i32_array("t.i32s"), Some(vec![1, -6]));
    assert_eq!(g.get_f32_array("t.f32s"), Some(vec![0.5, -2.0]));
    assert_eq!(g.get_f32_array("t.empty"), Some(vec![]));
    assert_eq!(g.array_len("t.nested"), Some(2));
    assert_eq!(g.get_u64("absent"), None);
    assert_eq!(g.metadata_entries().len(), every_value_type().len());
}

#[test]
fn files_on_disk_are_mapped() {
    let dir = Scratch::new("gguf-open");
    let path = dir.0.join("m.gguf");
    let (w, datas) = full_writer(3, Some(64));
    w.write(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.path(), path.as_path());
    assert_eq!(g.tensor_data(&g.tensors()[3]), Some(&datas[3][..]));
    let missing = GgufFile::open(dir.0.join("nope.gguf"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.gguf"), "{missing}");
    std::fs::write(dir.0.join("empty.gguf"), b"").unwrap();
    let empty = GgufFile::open(dir.0.join("empty.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains("empty.gguf") && empty.contains("magic"),
        "{empty}"
    );
}

#[test]
fn hf_view_unpermutes_llama_q_and_k_only() {
    for arch in ["llama", "qwen2"] {
        let spec = TinySpec {
            arch,
            qkv_bias: true,
            matrix_type: WeightDType::Q4_1,
            ..TinySpec::default()
        };
        let tensors = tiny_tensors(&spec, 7);
        let g = GgufFile::from_bytes(tiny_gguf(&spec, &tensors).to_bytes().unwrap()).unwrap();
        let mut names: Vec<String> = tensors.iter().map(|t| t.hf_name.clone()).collect();
        names.sort();
        assert_eq!(g.tensor_names(), names);
        for t in &tensors {
            let view = g.tensor(&t.hf_name).unwrap().unwrap();
            assert_eq!(view.shape, t.shape, "{}", t.hf_name);
            assert_eq!(view.dtype, t.dtype);
            assert_eq!(view.data.as_ref(), &t.hf_bytes[..], "{arch} {}", t.hf_name);
            let permuted = arch == "llama"
                && (t.gguf_name.contains("attn_q") || t.gguf_name.contains("attn_k"));
            assert_eq!(
                matches!(view.data, Cow::Owned(_)),
                permuted,
                "{}",
                t.hf_name
            );
        }
        assert!(g.tensor("lm_head.weight").unwrap().is_none());
        let total: usize = tensors.iter().map(|t| t.hf_bytes.len()).sum();
        assert_eq!(g.total_bytes(), total as u64);
    }
}

#[test]
fn summary_and_labels() {
    let spec = TinySpec::default();
    let tensors = tiny_tensors(&spec, 1);
    let g = GgufFile::from_bytes(tiny_gguf(&spec, &tensors).to_bytes().unwrap()).unwrap();
    assert_eq!(g.quantization_label().as_deref(), Some("Q8_0"));
    assert_eq!(
        g.type_counts(),
        vec![(WeightDType::Q8_0, 15), (WeightDType::F32, 5)]
    );
    assert_eq!(g.file_type_name(), Some("MOSTLY_Q8_0"));
    let s = g.summary().to_string();
    assert!(
        s.starts_with("tiny (llama, GGUF v3, MOSTLY_Q8_0): 20 tensors"),
        "{s}"
    );
    assert!(s.ends_with("Q8_0 ×15, F32 ×5"), "{s}");
    assert!(g.unmapped_tensors().is_empty());
}

#[test]
fn q_rows_that_cannot_be_unpermuted_are_errors() {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.attention.head_count", GgufValue::U32(3))
        .tensor(
            "blk.0.attn_q.weight",
            WeightDType::F32,
            &[4, 4],
            vec![0; 64],
        )
        .tensor(
            "blk.0.attn_k.weight",
            WeightDType::F32,
            &[4, 6],
            vec![0; 96],
        );
    let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let e = g
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("3 heads"),
        "{e}"
    );
    // 6 rows over 3 KV heads (head_count_kv falls back to head_count) is fine.
    assert!(g.tensor("model.layers.0.self_attn.k_proj.weight").is_ok());

    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .tensor(
            "blk.0.attn_q.weight",
            WeightDType::F32,
            &[4, 4],
            vec![0; 64],
        );
    let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let e = g
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .unwrap_err()
        .to_string();
    assert!(e.contains("llama.attention.head_count"), "{e}");
}

#[test]
fn writer_refuses_inconsistent_input() {
    let bad = |f: &dyn Fn(&mut GgufWriter), words: &str| {
        let mut w = GgufWriter::new();
        f(&mut w);
        let e = w.to_bytes().unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
    };
    bad(
        &|w| {
            w.metadata("a", GgufValue::U8(1))
                .metadata("a", GgufValue::U8(2));
        },
        "twice",
    );
    bad(
        &|w| {
            w.metadata(
                "a",
                GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(2)]),
            );
        },
        "one type",
    );
    bad(
        &|w| {
            w.metadata("general.alignment", GgufValue::U32(24));
        },
        "power of two",
    );
    bad(
        &|w| {
            w.tensor("t", WeightDType::Q8_0, &[32], vec![0; 33]);
        },
        "needs 34 bytes",
    );
    bad(
        &|w| {
            w.tensor("t", WeightDType::Q4_K, &[128, 2], vec![0; 144]);
        },
        "impossible",
    );
    bad(
        &|w| {
            w.tensor("t", WeightDType::U8, &[1], vec![0]);
        },
        "no ggml type",
    );
    bad(
        &|w| {
            w.tensor("t", WeightDType::F32, &[1], vec![0; 4]).tensor(
                "t",
                WeightDType::F32,
                &[1],
                vec![0; 4],
            );
        },
        "twice",
    );
    bad(
        &|w| {
            w.version(4);
        },
        "version 4",
    );
}

/// A small valid file for corruption tests, with its tensor-info position.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.attention.head_count", GgufValue::U32(2))
        .metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(vec![
                GgufValue::String("a".into()),
                GgufValue::String("b".into()),
            ]),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(3)]),
        )
        .tensor(
            "blk.0.attn_q.weight",
            WeightDType::Q8_0,
            &[32, 4],
            vec![1; 4 * 34],
        )
        .tensor("token_embd.weight", WeightDType::F32, &[2, 2], vec![0; 16]);
    w.to_bytes().unwrap()
}

fn error_of(bytes: Vec<u8>) -> String {
    GgufFile::from_bytes(bytes).unwrap_err().to_string()
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

#[test]
fn every_truncation_is_an_error() {
    let good = small_file();
    GgufFile::from_bytes(good.clone()).unwrap();
    for cut in 0..good.len() {
        let e = error_of(good[..cut].to_vec());
        assert!(e.contains("<in-memory GGUF>"), "cut {cut}: {e}");
    }
}

#[test]
fn corrupt_headers_are_clear_errors() {
    let good = small_file();
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        error_of(b)
    };
    assert!(patch(0, b"GGUG").contains("magic"));
    for v in [0u32, 4, 9] {
        let e = patch(4, &v.to_le_bytes());
        assert!(e.contains(&format!("version {v}")), "{e}");
    }
    assert!(patch(8, &u64::MAX.to_le_bytes()).contains("tensor count"));
    assert!(patch(16, &(1u64 << 40).to_le_bytes()).contains("metadata count"));
    // First key's length.
    assert!(patch(24, &u64::MAX.to_le_bytes()).contains("string length"));
    // First value's type (after the 20-byte key `general.architecture`).
    let e = patch(24 + 8 + 20, &13u32.to_le_bytes());
    assert!(
        e.contains("unknown metadata value type 13") && e.contains("general.architecture"),
        "{e}"
    );
    // The token array's length.
    let at = find(&good, b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 4 + 4;
    let e = patch(at, &(u64::MAX / 2).to_le_bytes());
    assert!(e.contains("array length"), "{e}");
    // Invalid UTF-8 in a string.
    let at = find(&good, b"gpt2");
    assert!(patch(at, &[0xFF]).contains("UTF-8"));
    // Tensor infos: name, n_dims, ne, type, offset.
    let q = find(&good, b"blk.0.attn_q.weight") + "blk.0.attn_q.weight".len();
    assert!(patch(q, &5u32.to_le_bytes()).contains("5 dimensions"));
    assert!(patch(q + 4, &33u64.to_le_bytes()).contains("impossible for Q8_0"));
    assert!(patch(q + 4, &u64::MAX.to_le_bytes()).contains("impossible"));
    assert!(patch(q + 20, &4u32.to_le_bytes()).contains("ggml type 4"));
    assert!(patch(q + 24, &7u64.to_le_bytes()).contains("not a multiple of the alignment"));
    let e = patch(q + 24, &(1u64 << 20).to_le_bytes());
    assert!(
        e.contains("beyond the end of the file") && e.contains("blk.0.attn_q.weight"),
        "{e}"
    );
}

#[test]
fn duplicate_names_and_bad_alignment_are_errors() {
    let mut w = GgufWriter::new();
    w.metadata("k.a", GgufValue::U8(1))
        .metadata("k.b", GgufValue::U8(2))
        .tensor("t.aa", WeightDType::F32, &[1], vec![0; 4])
        .tensor("t.bb", WeightDType::F32, &[1], vec![0; 4]);
    let good = w.to_bytes().unwrap();
    let mut b = good.clone();
    let at = find(&b, b"k.b");
    b[at..at + 3].copy_from_slice(b"k.a");
    assert!(error_of(b).contains("metadata key `k.a` appears twice"));
    let mut b = good.clone();
    let at = find(&b, b"t.bb");
    b[at..at + 4].copy_from_slice(b"t.aa");
    assert!(error_of(b).contains("tensor `t.aa` appears twice"));

    let mut w = GgufWriter::new();
    w.metadata("general.alignment", GgufValue::U32(16));
    let mut b = w.to_bytes().unwrap();
    let at = b.len() - 4;
    b[at..].copy_from_slice(&24u32.to_le_bytes());
    assert!(error_of(b).contains("power of two"));
    let mut w = GgufWriter::new();
    w.metadata("general.alignmenX", GgufValue::String("x".into()));
    let mut b = w.to_bytes().unwrap();
    let at = find(&b, b"general.alignmenX");
    b[at + 16] = b't';
    assert!(error_of(b).contains("power of two"));
}

#[test]
fn deep_nesting_is_refused() {
    let mut v = GgufValue::U8(1);
    for _ in 0..6 {
        v = GgufValue::Array(vec![v]);
    }
    let mut w = GgufWriter::new();
    w.metadata("deep", v);
    assert!(error_of(w.to_bytes().unwrap()).contains("nested"));
}

/// Parse, then touch everything a loader touches; must never panic.
fn exercise(bytes: Vec<u8>) {
    if let Ok(g) = GgufFile::from_bytes(bytes) {
        for n in g.tensor_names() {
            let _ = g.tensor(&n);
        }
        for t in g.tensors() {
            let _ = g.raw_tensor(&t.name);
        }
        let _ = g.tokenizer_metadata();
        let _ = kiln_models::config::ModelConfig::from_gguf(&g);
        let _ = g.summary().to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut b = small_file();
        let len = b.len();
        for (at, byte) in flips {
            b[at % len] = byte;
        }
        exercise(b);
    }

    #[test]
    fn truncated_and_extended_files_never_panic(cut in any::<usize>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = small_file();
        b.truncate(cut % (b.len() + 1));
        b.extend(tail);
        exercise(b);
    }
}

#[test]
fn tokenizer_metadata_is_checked() {
    let base = || {
        let mut w = GgufWriter::new();
        w.metadata("tokenizer.ggml.model", GgufValue::String("llama".into()));
        w
    };
    let strings =
        |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect());
    let parse = |w: &GgufWriter| {
        GgufFile::from_bytes(w.to_bytes().unwrap())
            .unwrap()
            .tokenizer_metadata()
    };

    let mut w = base();
    w.metadata("tokenizer.ggml.tokens", strings(&["<unk>", "a"]))
        .metadata(
            "tokenizer.ggml.scores",
            GgufValue::Array(vec![GgufValue::F32(0.0), GgufValue::F32(-1.5)]),
        )
        .metadata("tokenizer.ggml.padding_token_id", GgufValue::I32(-1))
        .metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
    let t = parse(&w).unwrap();
    assert_eq!(t.tokens, vec!["<unk>", "a"]);
    assert_eq!(t.scores, Some(vec![0.0, -1.5]));
    assert_eq!((t.padding_token_id, t.add_bos_token), (None, Some(true)));
    assert!(t.token_types.is_empty() && t.merges.is_empty());

    let mut w = base();
    w.metadata(
        "tokenizer.ggml.tokens",
        GgufValue::Array(vec![GgufValue::U32(1), GgufValue::U32(2)]),
    );
    let e = parse(&w).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("element 0"),
        "{e}"
    );

    let mut w = base();
    w.metadata("tokenizer.ggml.tokens", strings(&["a", "b"]))
        .metadata(
            "tokenizer.ggml.token_type",
            GgufValue::Array(vec![GgufValue::I32(1)]),
        );
    let e = parse(&w).unwrap_err().to_string();
    assert!(
        e.contains("token_type") && e.contains("1 entries") && e.contains("2 tokens"),
        "{e}"
    );

    let mut w = base();
    w.metadata("tokenizer.ggml.tokens", strings(&["a"]))
        .metadata("tokenizer.ggml.eos_token_id", GgufValue::String("2".into()));
    let e = parse(&w).unwrap_err().to_string();
    assert!(e.contains("eos_token_id") && e.contains("token id"), "{e}");

    let e = parse(&GgufWriter::new()).unwrap_err().to_string();
    assert!(e.contains("no tokenizer"), "{e}");
}
