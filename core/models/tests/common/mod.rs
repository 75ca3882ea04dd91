//! Shared helpers: a seeded generator, random tensors of any storage type,
//! and a small random-weight Llama-family GGUF.

#![allow(dead_code)]

use half::{bf16, f16};
use kiln_models::weights::WeightDType;
use kiln_models::weights::gguf::{GgufValue, GgufWriter, permute_rows};

/// SplitMix64: small, seeded, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Byte offsets of the f16 scale fields in one block of each GGUF type.
fn scale_fields(dtype: WeightDType) -> &'static [usize] {
    match dtype {
        WeightDType::Q4_0 | WeightDType::Q5_0 | WeightDType::Q8_0 => &[0],
        WeightDType::Q4_1 | WeightDType::Q5_1 | WeightDType::Q4_K | WeightDType::Q5_K => &[0, 2],
        WeightDType::Q2_K => &[80, 82],
        WeightDType::Q3_K => &[108],
        WeightDType::Q6_K => &[208],
        _ => &[],
    }
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `elements` random values stored as `dtype`: finite floats for float
/// types, random blocks with small finite scales for GGUF block types.
pub fn random_tensor(rng: &mut Rng, dtype: WeightDType, elements: usize) -> Vec<u8> {
    match dtype {
        WeightDType::F32 => f32_bytes(&(0..elements).map(|_| rng.unit()).collect::<Vec<_>>()),
        WeightDType::F16 => (0..elements)
            .flat_map(|_| f16::from_f32(rng.unit()).to_le_bytes())
            .collect(),
        WeightDType::BF16 => (0..elements)
            .flat_map(|_| bf16::from_f32(rng.unit()).to_le_bytes())
            .collect(),
        _ => {
            let bytes = dtype.bytes_for(elements).expect("whole blocks");
            let mut data = rng.bytes(bytes);
            for block in data.chunks_exact_mut(dtype.type_size()) {
                for &off in scale_fields(dtype) {
                    let scale = f16::from_f32(rng.unit() * 0.05);
                    block[off..off + 2].copy_from_slice(&scale.to_le_bytes());
                }
            }
            data
        }
    }
}

/// Dimensions of a small Llama-family model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub matrix_type: WeightDType,
    pub tied: bool,
    pub qkv_bias: bool,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            arch: "llama",
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 96,
            matrix_type: WeightDType::Q8_0,
            tied: true,
            qkv_bias: false,
        }
    }
}

/// One tensor of the tiny model: HF name, HF shape, HF-order bytes.
pub struct TinyTensor {
    pub hf_name: String,
    pub gguf_name: String,
    pub shape: Vec<usize>,
    pub dtype: WeightDType,
    pub hf_bytes: Vec<u8>,
}

/// The tiny model's tensors in HF row order (before any GGUF permutation).
pub fn tiny_tensors(spec: &TinySpec, seed: u64) -> Vec<TinyTensor> {
    let mut rng = Rng(seed);
    let hd = spec.hidden / spec.heads;
    let (h, i, kv) = (spec.hidden, spec.intermediate, spec.kv_heads * hd);
    let mut list: Vec<(String, String, Vec<usize>)> = vec![
        (
            "model.embed_tokens.weight".into(),
            "token_embd.weight".into(),
            vec![spec.vocab, h],
        ),
        (
            "model.norm.weight".into(),
            "output_norm.weight".into(),
            vec![h],
        ),
    ];
    if !spec.tied {
        list.push((
            "lm_head.weight".into(),
            "output.weight".into(),
            vec![spec.vocab, h],
        ));
    }
    for l in 0..spec.layers {
        let hf = |p: &str| format!("model.layers.{l}.{p}");
        let g = |p: &str| format!("blk.{l}.{p}");
        list.push((hf("input_layernorm.weight"), g("attn_norm.weight"), vec![h]));
        list.push((
            hf("self_attn.q_proj.weight"),
            g("attn_q.weight"),
            vec![h, h],
        ));
        list.push((
            hf("self_attn.k_proj.weight"),
            g("attn_k.weight"),
            vec![kv, h],
        ));
        list.push((
            hf("self_attn.v_proj.weight"),
            g("attn_v.weight"),
            vec![kv, h],
        ));
        if spec.qkv_bias {
            list.push((hf("self_attn.q_proj.bias"), g("attn_q.bias"), vec![h]));
            list.push((hf("self_attn.k_proj.bias"), g("attn_k.bias"), vec![kv]));
            list.push((hf("self_attn.v_proj.bias"), g("attn_v.bias"), vec![kv]));
        }
        list.push((
            hf("self_attn.o_proj.weight"),
            g("attn_output.weight"),
            vec![h, h],
        ));
        list.push((
            hf("post_attention_layernorm.weight"),
            g("ffn_norm.weight"),
            vec![h],
        ));
        list.push((hf("mlp.gate_proj.weight"), g("ffn_gate.weight"), vec![i, h]));
        list.push((hf("mlp.up_proj.weight"), g("ffn_up.weight"), vec![i, h]));
        list.push((hf("mlp.down_proj.weight"), g("ffn_down.weight"), vec![h, i]));
    }
    list.into_iter()
        .map(|(hf_name, gguf_name, shape)| {
            let dtype = if shape.len() == 1 {
                WeightDType::F32
            } else {
                spec.matrix_type
            };
            let hf_bytes = random_tensor(&mut rng, dtype, shape.iter().product());
            TinyTensor {
                hf_name,
                gguf_name,
                shape,
                dtype,
                hf_bytes,
            }
        })
        .collect()
}

/// A GGUF writer holding the tiny model: metadata as llama.cpp writes it,
/// Q/K rows permuted for architectures llama.cpp permutes.
pub fn tiny_gguf(spec: &TinySpec, tensors: &[TinyTensor]) -> GgufWriter {
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{}.{k}", spec.arch);
    let u32v = |x: usize| GgufValue::U32(x as u32);
    w.metadata("general.architecture", GgufValue::String(spec.arch.into()))
        .metadata("general.name", GgufValue::String("tiny".into()))
        .metadata("general.file_type", GgufValue::U32(7))
        .metadata(&key("block_count"), u32v(spec.layers))
        .metadata(&key("context_length"), u32v(256))
        .metadata(&key("embedding_length"), u32v(spec.hidden))
        .metadata(&key("feed_forward_length"), u32v(spec.intermediate))
        .metadata(&key("attention.head_count"), u32v(spec.heads))
        .metadata(&key("attention.head_count_kv"), u32v(spec.kv_heads))
        .metadata(&key("rope.freq_base"), GgufValue::F32(10000.0))
        .metadata(&key("rope.dimension_count"), u32v(spec.hidden / spec.heads))
        .metadata(
            &key("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-5),
        )
        .metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(
                (0..spec.vocab)
                    .map(|t| GgufValue::String(format!("t{t}")))
                    .collect(),
            ),
        )
        .metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1))
        .metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
    let permuted = spec.arch == "llama";
    for t in tensors {
        let heads = if t.gguf_name.contains(".attn_q.") {
            Some(spec.heads)
        } else if t.gguf_name.contains(".attn_k.") {
            Some(spec.kv_heads)
        } else {
            None
        };
        let data = match heads {
            Some(n) if permuted => permute_rows(&t.hf_bytes, t.shape[0], n).expect("permutable"),
            _ => t.hf_bytes.clone(),
        };
        let ne: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        w.tensor(&t.gguf_name, t.dtype, &ne, data);
    }
    w
}

/// A unique scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("kiln-models-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
