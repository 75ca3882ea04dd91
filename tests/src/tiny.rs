//! Tiny random-weight Llama-family models, written as a Hugging Face
//! safetensors directory or as a GGUF file, with a byte-level tokenizer of
//! 256 byte tokens plus three ChatML control tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use kiln_models::weights::WeightDType;
use kiln_models::weights::gguf::{GgufValue, GgufWriter};
use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};

/// Shape and flavour of a tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    /// `architectures[0]`.
    pub architecture: String,
    /// Hidden size.
    pub hidden: usize,
    /// MLP size.
    pub intermediate: usize,
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; fewer than `heads` makes it grouped-query attention.
    pub kv_heads: usize,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: bool,
    /// Tied embeddings.
    pub tie: bool,
    /// Context length.
    pub max_positions: usize,
    /// Weight seed.
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            architecture: "LlamaForCausalLM".into(),
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            qkv_bias: false,
            tie: false,
            max_positions: 512,
            seed: 42,
        }
    }
}

/// Vocabulary: 256 bytes, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`.
pub const VOCAB: usize = 259;
/// `<|im_end|>`, the EOS.
pub const EOS: u32 = 258;
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's byte → printable character mapping.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shift).unwrap_or('?')
}

/// The byte-level tokenizer spec (GGUF form).
pub fn tokenizer_spec() -> GgufTokenizerSpec {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.extend(["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
    let mut types = vec![1; 256];
    types.extend([3, 3, 3]);
    GgufTokenizerSpec {
        model: "gpt2".into(),
        tokens,
        token_types: types,
        bos_token_id: Some(257),
        eos_token_id: Some(EOS),
        chat_template: Some(CHATML.into()),
        ..Default::default()
    }
}

use crate::Rng;

/// HF-named f32 tensors of a tiny model, `[rows, cols]` or `[len]`.
pub fn weights(spec: &TinySpec) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng(spec.seed);
    let hd = spec.hidden / spec.heads;
    let (q, kv) = (spec.heads * hd, spec.kv_heads * hd);
    let mut out = Vec::new();
    let mut matrix = |name: String, rows: usize, cols: usize, scale: f32| {
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() * scale).collect();
        out.push((name, vec![rows, cols], v));
    };
    matrix("model.embed_tokens.weight".into(), VOCAB, spec.hidden, 1.0);
    for l in 0..spec.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let s = 1.0 / (spec.hidden as f32).sqrt();
        matrix(p("self_attn.q_proj.weight"), q, spec.hidden, s * 2.0);
        matrix(p("self_attn.k_proj.weight"), kv, spec.hidden, s * 2.0);
        matrix(p("self_attn.v_proj.weight"), kv, spec.hidden, s);
        matrix(p("self_attn.o_proj.weight"), spec.hidden, q, s);
        matrix(p("mlp.gate_proj.weight"), spec.intermediate, spec.hidden, s);
        matrix(p("mlp.up_proj.weight"), spec.intermediate, spec.hidden, s);
        matrix(
            p("mlp.down_proj.weight"),
            spec.hidden,
            spec.intermediate,
            1.0 / (spec.intermediate as f32).sqrt(),
        );
    }
    if !spec.tie {
        matrix("lm_head.weight".into(), VOCAB, spec.hidden, 0.5);
    }
    let mut vectors = Vec::new();
    for l in 0..spec.layers {
        for n in ["input_layernorm", "post_attention_layernorm"] {
            vectors.push((
                format!("model.layers.{l}.{n}.weight"),
                spec.hidden,
                1.0,
                0.2,
            ));
        }
        if spec.qkv_bias {
            vectors.push((
                format!("model.layers.{l}.self_attn.q_proj.bias"),
                q,
                0.0,
                0.1,
            ));
            vectors.push((
                format!("model.layers.{l}.self_attn.k_proj.bias"),
                kv,
                0.0,
                0.1,
            ));
            vectors.push((
                format!("model.layers.{l}.self_attn.v_proj.bias"),
                kv,
                0.0,
                0.1,
            ));
        }
    }
    vectors.push(("model.norm.weight".into(), spec.hidden, 1.0, 0.2));
    for (name, len, base, scale) in vectors {
        let v: Vec<f32> = (0..len).map(|_| base + rng.next_f32() * scale).collect();
        out.push((name, vec![len], v));
    }
    out
}

fn config_json(spec: &TinySpec) -> serde_json::Value {
    serde_json::json!({
        "architectures": [spec.architecture],
        "model_type": if spec.architecture.starts_with("Qwen2") { "qwen2" } else { "llama" },
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "vocab_size": VOCAB,
        "max_position_embeddings": spec.max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": spec.tie,
        "attention_bias": spec.qkv_bias,
        "bos_token_id": 257,
        "eos_token_id": EOS,
    })
}

fn encode(dtype: WeightDType, v: &[f32]) -> Vec<u8> {
    match dtype {
        WeightDType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        WeightDType::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Write an HF directory (`config.json`, `model.safetensors` in `dtype`,
/// `tokenizer.json`, `tokenizer_config.json`). Returns the directory.
pub fn write_safetensors(dir: &Path, spec: &TinySpec, dtype: WeightDType) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let tensors = weights(spec);
    let st_dtype = match dtype {
        WeightDType::F16 => safetensors::Dtype::F16,
        WeightDType::BF16 => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F32,
    };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), encode(dtype, v)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(
        views,
        None::<HashMap<String, String>>,
        &dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config_json(spec).to_string()).unwrap();
    let tok = Tokenizer::from_gguf(tokenizer_spec()).unwrap();
    tok.save_tokenizer_json(&dir.join("tokenizer.json"))
        .unwrap();
    let tc = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    dir.to_path_buf()
}

/// GGUF name of an HF tensor.
fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.", "token_embd."),
        ("model.norm.", "output_norm."),
        ("lm_head.", "output."),
    ];
    for (a, b) in map {
        if let Some(rest) = hf.strip_prefix(a) {
            return format!("{b}{rest}");
        }
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
    let parts = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    for (a, b) in parts {
        if let Some(suffix) = part.strip_prefix(a) {
            return format!("blk.{layer}.{b}{suffix}");
        }
    }
    hf.to_string()
}

/// llama.cpp's converter permutation (the inverse of Kiln's un-permutation).
fn permute(v: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        let (h, rem) = (r / hd, r % hd);
        let (s, j) = (rem / (hd / 2), rem % (hd / 2));
        let g = h * hd + 2 * j + s;
        out[g * cols..(g + 1) * cols].copy_from_slice(&v[r * cols..(r + 1) * cols]);
    }
    out
}

fn quantize(dtype: WeightDType, v: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    match dtype {
        WeightDType::Q8_0 => {
            for b in v.chunks_exact(32) {
                let amax = b.iter().fold(0f32, |a, x| a.max(x.abs()));
                let d = amax / 127.0;
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|x| {
                    if d > 0.0 {
                        (x / d).round() as i8 as u8
                    } else {
                        0
                    }
                }));
            }
        }
        WeightDType::Q4_0 => {
            for b in v.chunks_exact(32) {
                let max = b
                    .iter()
                    .fold(0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                let q = |x: f32| ((x * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
        }
        WeightDType::Q4_1 => {
            for b in v.chunks_exact(32) {
                let (min, max) = b
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                let d = (max - min) / 15.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                let q = |x: f32| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
        }
        other => out = encode(other, v),
    }
    out
}

/// Write a GGUF file with matrices in `matrix_type` (norms stay F32).
pub fn write_gguf(path: &Path, spec: &TinySpec, matrix_type: WeightDType) -> PathBuf {
    let arch = if spec.architecture.starts_with("Qwen2") {
        "qwen2"
    } else {
        "llama"
    };
    let t = tokenizer_spec();
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{arch}.{k}");
    w.metadata("general.architecture", GgufValue::String(arch.into()))
        .metadata("general.name", GgufValue::String("tiny".into()))
        .metadata(&key("block_count"), GgufValue::U32(spec.layers as u32))
        .metadata(
            &key("context_length"),
            GgufValue::U32(spec.max_positions as u32),
        )
        .metadata(&key("embedding_length"), GgufValue::U32(spec.hidden as u32))
        .metadata(
            &key("feed_forward_length"),
            GgufValue::U32(spec.intermediate as u32),
        )
        .metadata(
            &key("attention.head_count"),
            GgufValue::U32(spec.heads as u32),
        )
        .metadata(
            &key("attention.head_count_kv"),
            GgufValue::U32(spec.kv_heads as u32),
        )
        .metadata(&key("rope.freq_base"), GgufValue::F32(10000.0))
        .metadata(
            &key("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-5),
        )
        .metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(
                t.tokens
                    .iter()
                    .map(|s| GgufValue::String(s.clone()))
                    .collect(),
            ),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            GgufValue::Array(t.token_types.iter().map(|&x| GgufValue::I32(x)).collect()),
        )
        .metadata("tokenizer.ggml.merges", GgufValue::Array(vec![]))
        .metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(257))
        .metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(EOS))
        .metadata("tokenizer.chat_template", GgufValue::String(CHATML.into()));
    for (name, shape, v) in weights(spec) {
        let g = gguf_name(&name);
        let rows = shape[0];
        let v = if arch == "llama" && g.ends_with("attn_q.weight") {
            permute(&v, rows, shape[1], spec.heads)
        } else if arch == "llama" && g.ends_with("attn_k.weight") {
            permute(&v, rows, shape[1], spec.kv_heads)
        } else {
            v
        };
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if shape.len() == 1 {
            w.tensor(&g, WeightDType::F32, &ne, encode(WeightDType::F32, &v));
        } else {
            w.tensor(&g, matrix_type, &ne, quantize(matrix_type, &v));
        }
    }
    w.write(path).unwrap();
    path.to_path_buf()
}
