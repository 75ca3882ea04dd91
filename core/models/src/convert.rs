//! Write an f32 Hugging Face copy of a GGUF model (`model.safetensors` +
//! `config.json`), the same tensors transformers produces when it loads the
//! GGUF and saves it: HF names, Q/K rows un-permuted, everything dequantized
//! to f32, no `lm_head` when the embeddings are tied.

use std::collections::HashMap;
use std::path::Path;

use crate::config::{ModelConfig, RopeScaling};
use crate::weights::dequant::dequantize_view;
use crate::weights::gguf::GgufFile;
use crate::weights::{WeightError, WeightSource};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeightError + '_ {
    move |source| WeightError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The HF `config.json` for a config.
pub fn hf_config_json(c: &ModelConfig) -> serde_json::Value {
    let mut v = serde_json::json!({
        "architectures": [c.architecture],
        "model_type": c.model_type,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.attention_bias,
        "torch_dtype": "float32",
    });
    if let Some(bos) = c.bos_token_id {
        v["bos_token_id"] = bos.into();
    }
    match c.eos_token_ids.as_slice() {
        [] => {}
        [one] => v["eos_token_id"] = (*one).into(),
        many => v["eos_token_id"] = many.to_vec().into(),
    }
    if let Some(RopeScaling::Linear { factor }) = c.rope_scaling {
        v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
    }
    v
}

/// Convert `gguf_path` into `out_dir/model.safetensors` and `out_dir/config.json`.
pub fn gguf_to_safetensors_f32(gguf_path: &Path, out_dir: &Path) -> Result<(), WeightError> {
    let g = GgufFile::open(gguf_path)?;
    let config = ModelConfig::from_gguf(&g).map_err(|e| WeightError::Format {
        path: gguf_path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in g.tensor_names() {
        let view = g.tensor(&name)?.ok_or_else(|| WeightError::Format {
            path: gguf_path.display().to_string(),
            reason: format!("tensor {name} vanished"),
        })?;
        let values = dequantize_view(&view).ok_or_else(|| WeightError::Format {
            path: gguf_path.display().to_string(),
            reason: format!("cannot dequantize {name} ({:?})", view.dtype),
        })?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, view.shape.clone(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map_err(|e| WeightError::Format {
                        path: n.clone(),
                        reason: e.to_string(),
                    });
            view.map(|v| (n.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let st_path = out_dir.join("model.safetensors");
    safetensors::tensor::serialize_to_file(views, Some(meta), &st_path).map_err(|e| {
        WeightError::Format {
            path: st_path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let cfg_path = out_dir.join("config.json");
    let text = serde_json::to_string_pretty(&hf_config_json(&config)).unwrap_or_default();
    std::fs::write(&cfg_path, text).map_err(io(&cfg_path))?;
    Ok(())
}
