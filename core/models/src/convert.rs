//! Write an f32 Hugging Face copy of a GGUF model (`model.safetensors` +
//! `config.json`): the tensors transformers produces when it loads the GGUF
//! and saves it. Hugging Face names, Q/K rows un-permuted, every tensor
//! dequantized to f32 with the reference dequantizer (gguf-py's arithmetic),
//! no `lm_head.weight` when the embeddings are tied. Tensors are written in
//! name order, one at a time (memory holds one dequantized tensor).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use crate::config::{ModelConfig, RopeScaling};
use crate::registry::{Family, family_of_hf};
use crate::weights::dequant::{self, dequantize_view};
use crate::weights::gguf::{GgufFile, GgufTensorInfo, gguf_name};
use crate::weights::{WeightError, WeightSource};

/// The Hugging Face `config.json` for a config (f32 weights).
pub fn hf_config_json(c: &ModelConfig) -> serde_json::Value {
    let mut v = json!({
        "architectures": [c.architecture],
        "model_type": c.model_type,
        "hidden_act": "silu",
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
        "rope_scaling": rope_scaling_json(c.rope_scaling.as_ref()),
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": c.attention_bias,
        "mlp_bias": c.mlp_bias,
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
    match family_of_hf(&c.architecture) {
        Some(Family::Mistral) => v["sliding_window"] = json!(c.sliding_window),
        Some(Family::Qwen2) => {
            v["use_sliding_window"] = c.sliding_window.is_some().into();
            v["sliding_window"] = json!(c.sliding_window);
            v["max_window_layers"] = 0.into();
        }
        _ => {}
    }
    v
}

fn rope_scaling_json(s: Option<&RopeScaling>) -> serde_json::Value {
    match s {
        None => serde_json::Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        }) => json!({
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": original_max_position_embeddings,
            "beta_fast": beta_fast,
            "beta_slow": beta_slow,
            "attention_factor": attention_factor,
            "truncate": truncate,
        }),
        Some(RopeScaling::DynamicNtk { factor, .. }) => {
            json!({"rope_type": "dynamic", "factor": factor})
        }
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        }) => json!({
            "rope_type": "longrope",
            "short_factor": short_factor,
            "long_factor": long_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
            "attention_factor": attention_factor,
        }),
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertSummary {
    /// The config written to `config.json`.
    pub config: ModelConfig,
    /// Number of tensors in `model.safetensors`.
    pub tensors: usize,
    /// Bytes of f32 tensor data.
    pub tensor_bytes: u64,
}

/// One tensor, dequantized when the serializer asks for its bytes. A
/// failure is recorded in `failure` (the serializer cannot return one) and
/// the bytes are zeros of the right length; the caller then deletes the file.
struct LazyF32<'a> {
    source: &'a GgufFile,
    name: String,
    shape: Vec<usize>,
    failure: &'a RefCell<Option<WeightError>>,
}

impl LazyF32<'_> {
    fn bytes(&self) -> Result<Vec<u8>, WeightError> {
        let fail = |reason: String| WeightError::format(self.source.path().display(), reason);
        let view = self
            .source
            .tensor(&self.name)?
            .ok_or_else(|| fail(format!("tensor `{}` disappeared", self.name)))?;
        let values = dequantize_view(&view).ok_or_else(|| {
            fail(format!(
                "cannot dequantize `{}` ({})",
                self.name, view.dtype
            ))
        })?;
        Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

impl safetensors::View for LazyF32<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self.bytes() {
            Ok(b) => Cow::Owned(b),
            Err(e) => {
                self.failure.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// The tensors to write: HF name and GGUF info, each dequantizable.
fn plan(g: &GgufFile) -> Result<Vec<(String, &GgufTensorInfo)>, WeightError> {
    g.tensor_names()
        .into_iter()
        .map(|name| {
            let info = gguf_name(&name)
                .and_then(|n| g.tensor_info(&n))
                .ok_or_else(|| {
                    WeightError::format(
                        g.path().display(),
                        format!("tensor `{name}` has no GGUF entry"),
                    )
                })?;
            if !dequant::supports(info.dtype) {
                return Err(WeightError::format(
                    g.path().display(),
                    format!(
                        "tensor `{}` is {}, which the reference dequantizer does not handle",
                        info.name, info.dtype
                    ),
                ));
            }
            Ok((name, info))
        })
        .collect()
}

/// Convert `gguf_path` into `out_dir/model.safetensors` (F32) and
/// `out_dir/config.json`, creating `out_dir` if needed.
pub fn gguf_to_safetensors_f32(
    gguf_path: &Path,
    out_dir: &Path,
) -> Result<ConvertSummary, WeightError> {
    let g = GgufFile::open(gguf_path)?;
    let config = ModelConfig::from_gguf(&g)
        .map_err(|e| WeightError::format(gguf_path.display(), e.to_string()))?;
    let tensors = plan(&g)?;
    std::fs::create_dir_all(out_dir).map_err(|e| WeightError::io(out_dir.display(), e))?;

    let failure = RefCell::new(None);
    let views: Vec<(String, LazyF32<'_>)> = tensors
        .iter()
        .map(|(name, info)| {
            let view = LazyF32 {
                source: &g,
                name: name.clone(),
                shape: info.hf_shape(),
                failure: &failure,
            };
            (name.clone(), view)
        })
        .collect();
    let count = views.len();
    let tensor_bytes = views
        .iter()
        .map(|(_, v)| safetensors::View::data_len(v) as u64)
        .sum();
    let st_path = out_dir.join("model.safetensors");
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let written = safetensors::tensor::serialize_to_file(views, Some(meta), &st_path)
        .map_err(|e| WeightError::format(st_path.display(), e.to_string()));
    if let Some(e) = failure.into_inner() {
        // Best effort: a partial file must not look like a finished conversion.
        let _ = std::fs::remove_file(&st_path);
        return Err(e);
    }
    written?;

    let cfg_path = out_dir.join("config.json");
    let text = serde_json::to_string_pretty(&hf_config_json(&config))
        .map_err(|e| WeightError::format(cfg_path.display(), e.to_string()))?;
    std::fs::write(&cfg_path, text + "\n").map_err(|e| WeightError::io(cfg_path.display(), e))?;
    Ok(ConvertSummary {
        config,
        tensors: count,
        tensor_bytes,
    })
}
