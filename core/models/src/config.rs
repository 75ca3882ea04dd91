//! The one config of the Llama-family decoder, read from a Hugging Face
//! `config.json` (both `rope_theta` and transformers-5 `rope_parameters`) or
//! from GGUF metadata.

use serde_json::Value;

use crate::weights::gguf::GgufFile;

/// Errors reading a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON.
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("config is missing `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type or an impossible value.
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear {
        /// Scale factor.
        factor: f32,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// Scale factor.
        factor: f32,
        /// Low-frequency factor.
        low_freq_factor: f32,
        /// High-frequency factor.
        high_freq_factor: f32,
        /// Context length the model was trained with.
        original_max_position_embeddings: usize,
    },
}

/// Decoder hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `architectures[0]` (e.g. `LlamaForCausalLM`).
    pub architecture: String,
    /// `model_type` (e.g. `llama`, `qwen2`, `mistral`).
    pub model_type: String,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Native context length.
    pub max_position_embeddings: usize,
    /// RMS norm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Output projection shares the embedding.
    pub tie_word_embeddings: bool,
    /// q/k/v projections have biases.
    pub attention_bias: bool,
    /// MLP projections have biases.
    pub mlp_bias: bool,
    /// Sliding attention window.
    pub sliding_window: Option<usize>,
    /// BOS token id.
    pub bos_token_id: Option<u32>,
    /// EOS token ids.
    pub eos_token_ids: Vec<u32>,
    /// Checkpoint dtype (`float32`, `bfloat16`, ...).
    pub torch_dtype: Option<String>,
    /// Raw `quantization_config`, when present.
    pub quantization_config: Option<Value>,
}

fn usize_field(v: &Value, field: &'static str) -> Result<Option<usize>, ConfigError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or(ConfigError::Invalid {
                field,
                reason: format!("expected a non-negative integer, got {x}"),
            }),
    }
}

fn f32_field(v: &Value, field: &'static str) -> Result<Option<f32>, ConfigError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(|n| Some(n as f32))
            .ok_or(ConfigError::Invalid {
                field,
                reason: format!("expected a number, got {x}"),
            }),
    }
}

fn bool_field(v: &Value, field: &'static str) -> Option<bool> {
    v.get(field).and_then(Value::as_bool)
}

fn id_list(v: &Value, field: &'static str) -> Result<Vec<u32>, ConfigError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Number(n)) => Ok(n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64().map(|n| n as u32).ok_or(ConfigError::Invalid {
                    field,
                    reason: format!("expected token ids, got {x}"),
                })
            })
            .collect(),
        Some(x) => Err(ConfigError::Invalid {
            field,
            reason: format!("expected an id or a list of ids, got {x}"),
        }),
    }
}

fn parse_rope_scaling(v: &Value) -> Result<Option<RopeScaling>, ConfigError> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = || f32_field(v, "factor")?.ok_or(ConfigError::Missing("rope_scaling.factor"));
    match kind {
        "default" | "none" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear { factor: factor()? })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f32_field(v, "low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: f32_field(v, "high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: usize_field(v, "original_max_position_embeddings")?
                .unwrap_or(8192),
        })),
        other => Err(ConfigError::Invalid {
            field: "rope_scaling",
            reason: format!(
                "RoPE scaling `{other}` is not supported (supported: default, linear, llama3)"
            ),
        }),
    }
}

impl ModelConfig {
    /// Parse a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<ModelConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        if !v.is_object() {
            return Err(ConfigError::Json("the top level is not an object".into()));
        }
        let architecture = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .ok_or(ConfigError::Missing("architectures"))?
            .to_string();
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama")
            .to_string();
        let req = |f: &'static str| usize_field(&v, f)?.ok_or(ConfigError::Missing(f));
        let hidden_size = req("hidden_size")?;
        let num_attention_heads = req("num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size == 0 {
            return Err(ConfigError::Invalid {
                field: "hidden_size",
                reason: "hidden_size and num_attention_heads must be positive".into(),
            });
        }
        let num_key_value_heads =
            usize_field(&v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ConfigError::Invalid {
                field: "num_key_value_heads",
                reason: format!(
                    "{num_attention_heads} query heads cannot be grouped over {num_key_value_heads} KV heads"
                ),
            });
        }
        let head_dim = usize_field(&v, "head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        let rope_params = v.get("rope_parameters");
        let rope_theta = f32_field(&v, "rope_theta")?
            .or(rope_params
                .map(|p| f32_field(p, "rope_theta"))
                .transpose()?
                .flatten())
            .unwrap_or(10000.0);
        let rope_scaling = match v
            .get("rope_scaling")
            .filter(|s| !s.is_null())
            .or(rope_params)
        {
            Some(s) => parse_rope_scaling(s)?,
            None => None,
        };
        let is_qwen2 = architecture.starts_with("Qwen2");
        let sliding_window = match usize_field(&v, "sliding_window")? {
            Some(w) if !is_qwen2 || bool_field(&v, "use_sliding_window") == Some(true) => Some(w),
            _ => None,
        };
        Ok(ModelConfig {
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            num_hidden_layers: req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: req("vocab_size")?,
            max_position_embeddings: usize_field(&v, "max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: f32_field(&v, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: bool_field(&v, "tie_word_embeddings").unwrap_or(false),
            attention_bias: bool_field(&v, "attention_bias").unwrap_or(is_qwen2),
            mlp_bias: bool_field(&v, "mlp_bias").unwrap_or(false),
            sliding_window,
            bos_token_id: id_list(&v, "bos_token_id")?.first().copied(),
            eos_token_ids: id_list(&v, "eos_token_id")?,
            torch_dtype: v
                .get("torch_dtype")
                .or_else(|| v.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
            quantization_config: v.get("quantization_config").cloned(),
            architecture,
            model_type,
        })
    }

    /// Read the config from GGUF metadata (`<arch>.*` keys).
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let arch = g.architecture().unwrap_or("llama").to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &'static str| g.get_u64(&key(k)).map(|x| x as usize);
        let req = |k: &'static str| u(k).ok_or(ConfigError::Missing(k));
        let hidden_size = req("embedding_length")?;
        let heads = req("attention.head_count")?;
        if heads == 0 {
            return Err(ConfigError::Invalid {
                field: "attention.head_count",
                reason: "must be positive".into(),
            });
        }
        let kv_heads = u("attention.head_count_kv").unwrap_or(heads);
        let head_dim = u("attention.key_length").unwrap_or(hidden_size / heads);
        let vocab_size = u("vocab_size")
            .or_else(|| g.array_len("tokenizer.ggml.tokens"))
            .ok_or(ConfigError::Missing("vocab_size"))?;
        let rope_scaling = match g.get_str(&key("rope.scaling.type")) {
            Some("linear") => Some(RopeScaling::Linear {
                factor: g.get_f32(&key("rope.scaling.factor")).unwrap_or(1.0),
            }),
            _ => None,
        };
        let architecture = match arch.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        }
        .to_string();
        let eos = g
            .get_u64("tokenizer.ggml.eos_token_id")
            .map(|x| vec![x as u32])
            .unwrap_or_default();
        Ok(ModelConfig {
            architecture,
            model_type: arch.clone(),
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_hidden_layers: req("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size,
            max_position_embeddings: u("context_length").unwrap_or(2048),
            rms_norm_eps: g
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: g.get_f32(&key("rope.freq_base")).unwrap_or(10000.0),
            rope_scaling,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            attention_bias: g.tensor_info("blk.0.attn_q.bias").is_some(),
            mlp_bias: false,
            sliding_window: None,
            bos_token_id: g.get_u64("tokenizer.ggml.bos_token_id").map(|x| x as u32),
            eos_token_ids: eos,
            torch_dtype: None,
            quantization_config: None,
        })
    }

    /// Parameter count (embeddings counted once when tied).
    pub fn num_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let layer = h * q + 2 * h * kv + q * h + bias + 3 * h * i + 2 * h;
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers as u64 * layer + h
    }

    /// KV-cache bytes per token: 2 × layers × kv_heads × head_dim × bytes.
    pub fn kv_bytes_per_token(&self, dtype_bytes: u64) -> u64 {
        2 * self.num_hidden_layers as u64
            * self.num_key_value_heads as u64
            * self.head_dim as u64
            * dtype_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_V5: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
      "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
      "vocab_size":49152,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"tie_word_embeddings":true,
      "rope_parameters":{"rope_theta":100000.0,"rope_type":"default"},"bos_token_id":1,"eos_token_id":2}"#;

    #[test]
    fn transformers5_rope_parameters() {
        let c = ModelConfig::from_hf_json(SMOLLM2_V5).unwrap();
        assert_eq!(c.rope_theta, 100000.0);
        assert_eq!(c.rope_scaling, None);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.num_parameters(), 134_515_008);
        assert_eq!(c.kv_bytes_per_token(2), 2 * 30 * 3 * 64 * 2);
    }

    #[test]
    fn llama31_rope_scaling() {
        let json = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
          "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
          "max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,
          "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
          "original_max_position_embeddings":8192,"rope_type":"llama3"},"eos_token_id":[128001,128008,128009]}"#;
        let c = ModelConfig::from_hf_json(json).unwrap();
        assert!(
            matches!(c.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0)
        );
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(c.num_parameters(), 8_030_261_248);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_ignores_window_unless_enabled() {
        let json = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":896,"intermediate_size":4864,
          "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,
          "max_position_embeddings":32768,"rope_theta":1000000.0,"sliding_window":32768,
          "use_sliding_window":false,"tie_word_embeddings":true}"#;
        let c = ModelConfig::from_hf_json(json).unwrap();
        assert!(c.attention_bias);
        assert_eq!(c.sliding_window, None);
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert!(matches!(
            ModelConfig::from_hf_json("{"),
            Err(ConfigError::Json(_))
        ));
        assert_eq!(
            ModelConfig::from_hf_json(r#"{"hidden_size":8}"#),
            Err(ConfigError::Missing("architectures"))
        );
        let e = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":"big","num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        let e = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":3,
              "intermediate_size":8,"num_hidden_layers":1,"vocab_size":8}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
        let e = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,
              "intermediate_size":8,"num_hidden_layers":1,"vocab_size":8,"rope_scaling":{"type":"yarn","factor":4}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("yarn"), "{e}");
    }
}
