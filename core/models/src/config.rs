//! The one config of the Llama-family decoder, read from a Hugging Face
//! `config.json` (transformers 4 `rope_theta`/`rope_scaling` and
//! transformers 5 `rope_parameters` alike) or from GGUF metadata
//! (`{arch}.*` keys).

use serde_json::{Map, Value};

use crate::registry::{self, Family};
use crate::weights::gguf::GgufFile;

/// Errors reading a config. Each names the field or key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON (or not a JSON object).
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    /// A required field or key is absent.
    #[error("`{0}` is missing; Kiln needs it to build the decoder")]
    Missing(String),
    /// A field has the wrong type, an impossible value, or asks for
    /// something Kiln does not support.
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// The field (`rope_scaling.factor`) or GGUF key.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (positions stretched).
    Linear {
        /// Scale factor (> 0).
        factor: f32,
    },
    /// Llama 3.1 frequency-dependent scaling: long wavelengths divided by
    /// `factor`, short ones kept, a smooth blend between.
    Llama3 {
        /// Scale factor for long wavelengths.
        factor: f32,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// Context length the model was pre-trained with, in tokens.
        original_max_position_embeddings: usize,
    },
}

/// Decoder hyper-parameters of a Llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `architectures[0]` (`LlamaForCausalLM`); for GGUF, the Hugging Face
    /// name of `general.architecture`, or that value itself when unknown.
    pub architecture: String,
    /// `model_type` (`llama`, `qwen2`, `mistral`).
    pub model_type: String,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Size of one head (even).
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Context length the model supports, in tokens.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// The output projection reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Attention projections carry biases (always true for Qwen2's q/k/v).
    pub attention_bias: bool,
    /// MLP projections carry biases (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Sliding attention window in tokens, applied on every layer.
    pub sliding_window: Option<usize>,
    /// BOS token id.
    pub bos_token_id: Option<u32>,
    /// EOS token ids (`eos_token_id` may be one id or a list).
    pub eos_token_ids: Vec<u32>,
    /// Checkpoint dtype (`torch_dtype` or transformers-5 `dtype`: `bfloat16`, ...).
    pub torch_dtype: Option<String>,
    /// Raw `quantization_config`, when present.
    pub quantization_config: Option<Value>,
}

/// Typed access to one JSON object, naming fields with a prefix in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A field that is present and not `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn object(&self, name: &str) -> Result<Option<Fields<'a>>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                prefix: format!("{}.", self.path(name)),
            })),
            Some(other) => Err(invalid(
                self.path(name),
                format!("expected an object, got {other}"),
            )),
        }
    }

    fn usize(&self, name: &str) -> Result<Option<usize>, ConfigError> {
        self.get(name)
            .map(|x| {
                x.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            self.path(name),
                            format!("expected a non-negative integer, got {x}"),
                        )
                    })
            })
            .transpose()
    }

    fn positive(&self, name: &str) -> Result<Option<usize>, ConfigError> {
        match self.usize(name)? {
            Some(0) => Err(invalid(self.path(name), "must be positive")),
            other => Ok(other),
        }
    }

    fn required(&self, name: &str) -> Result<usize, ConfigError> {
        self.positive(name)?
            .ok_or_else(|| ConfigError::Missing(self.path(name)))
    }

    fn number(&self, name: &str) -> Result<Option<f64>, ConfigError> {
        self.get(name)
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| invalid(self.path(name), format!("expected a number, got {x}")))
            })
            .transpose()
    }

    /// A finite number > 0, as f32.
    fn positive_f32(&self, name: &str) -> Result<Option<f32>, ConfigError> {
        match self.number(name)? {
            Some(x) if !(x.is_finite() && x > 0.0) => Err(invalid(
                self.path(name),
                format!("must be a positive number, got {x}"),
            )),
            other => Ok(other.map(|x| x as f32)),
        }
    }

    fn required_f32(&self, name: &str) -> Result<f32, ConfigError> {
        self.positive_f32(name)?
            .ok_or_else(|| ConfigError::Missing(self.path(name)))
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        self.get(name)
            .map(|x| {
                x.as_bool().ok_or_else(|| {
                    invalid(self.path(name), format!("expected true or false, got {x}"))
                })
            })
            .transpose()
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, ConfigError> {
        self.get(name)
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| invalid(self.path(name), format!("expected a string, got {x}")))
            })
            .transpose()
    }

    /// One token id, or a list of them.
    fn ids(&self, name: &str) -> Result<Vec<u32>, ConfigError> {
        let one = |x: &Value| {
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid(self.path(name), format!("expected token ids, got {x}")))
        };
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(x) => one(x).map(|id| vec![id]),
        }
    }
}

/// `architectures[0]` and `model_type`; either may stand in for the other.
fn identify(f: &Fields<'_>) -> Result<(String, String), ConfigError> {
    let model_type = f.string("model_type")?;
    let architecture = match f.get("architectures") {
        Some(Value::Array(a)) if !a.is_empty() => a[0]
            .as_str()
            .ok_or_else(|| {
                invalid(
                    "architectures",
                    format!("expected class names, got {}", a[0]),
                )
            })?
            .to_string(),
        Some(other) => {
            return Err(invalid(
                "architectures",
                format!("expected a non-empty list of class names, got {other}"),
            ));
        }
        None => model_type
            .and_then(registry::family_of_name)
            .map(|fam| fam.hf_architecture().to_string())
            .ok_or_else(|| ConfigError::Missing("architectures".into()))?,
    };
    let model_type = model_type
        .map(str::to_string)
        .or_else(|| registry::family_of_hf(&architecture).map(|fam| fam.name().to_string()))
        .unwrap_or_else(|| "llama".to_string());
    Ok((architecture, model_type))
}

/// Heads and head size, checked for consistency.
struct AttentionShape {
    hidden_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl AttentionShape {
    /// Checks shared by both sources; `key` names a field in messages.
    fn check(self, key: impl Fn(&str) -> String) -> Result<AttentionShape, ConfigError> {
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(invalid(
                key("num_key_value_heads"),
                format!(
                    "{} query heads cannot be shared evenly by {} KV heads",
                    self.heads, self.kv_heads
                ),
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(invalid(
                key("head_dim"),
                format!(
                    "RoPE needs an even, positive head size, got {}",
                    self.head_dim
                ),
            ));
        }
        Ok(self)
    }
}

/// `hidden / heads`, which must divide exactly.
fn default_head_dim(hidden: usize, heads: usize, field: String) -> Result<usize, ConfigError> {
    if hidden.is_multiple_of(heads) {
        Ok(hidden / heads)
    } else {
        Err(invalid(
            field,
            format!(
                "hidden size {hidden} is not a multiple of {heads} heads, and no head size is given"
            ),
        ))
    }
}

fn hf_attention_shape(f: &Fields<'_>) -> Result<AttentionShape, ConfigError> {
    let hidden_size = f.required("hidden_size")?;
    let heads = f.required("num_attention_heads")?;
    let kv_heads = f.positive("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match f.positive("head_dim")? {
        Some(d) => d,
        None => default_head_dim(hidden_size, heads, "head_dim".into())?,
    };
    AttentionShape {
        hidden_size,
        heads,
        kv_heads,
        head_dim,
    }
    .check(str::to_string)
}

/// A `rope_scaling` or `rope_parameters` object (`rope_type` or legacy `type`).
fn parse_rope_scaling(f: &Fields<'_>) -> Result<Option<RopeScaling>, ConfigError> {
    let kind = match f.string("rope_type")? {
        Some(k) => Some(k),
        None => f.string("type")?,
    };
    match kind.unwrap_or("default") {
        "default" | "none" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: f.required_f32("factor")?,
        })),
        "llama3" => {
            let low_freq_factor = f.required_f32("low_freq_factor")?;
            let high_freq_factor = f.required_f32("high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(invalid(
                    f.path("high_freq_factor"),
                    format!(
                        "must exceed low_freq_factor ({high_freq_factor} <= {low_freq_factor})"
                    ),
                ));
            }
            Ok(Some(RopeScaling::Llama3 {
                factor: f.required_f32("factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: f.required("original_max_position_embeddings")?,
            }))
        }
        other => Err(invalid(
            f.path("rope_type"),
            format!("RoPE scaling `{other}` is not supported (supported: default, linear, llama3)"),
        )),
    }
}

/// θ and scaling from top-level `rope_theta`/`rope_scaling` or
/// transformers-5 `rope_parameters`.
fn hf_rope(f: &Fields<'_>) -> Result<(f32, Option<RopeScaling>), ConfigError> {
    let params = f.object("rope_parameters")?;
    let theta = match &params {
        Some(p) => p.positive_f32("rope_theta")?,
        None => None,
    };
    let theta = match theta {
        Some(t) => t,
        None => f.positive_f32("rope_theta")?.unwrap_or(10000.0),
    };
    let scaling = match (f.object("rope_scaling")?, params) {
        (Some(s), _) => parse_rope_scaling(&s)?,
        (None, Some(p)) => parse_rope_scaling(&p)?,
        (None, None) => None,
    };
    Ok((theta, scaling))
}

/// How many layers use sliding-window attention.
enum WindowedLayers {
    None,
    All,
    Some(usize),
}

/// Qwen2: layers listed as `sliding_attention` in `layer_types`, else (with
/// `use_sliding_window`) the layers from `max_window_layers` on.
fn qwen2_windowed_layers(f: &Fields<'_>, layers: usize) -> Result<WindowedLayers, ConfigError> {
    let count = if let Some(types) = f.get("layer_types") {
        let types = types
            .as_array()
            .ok_or_else(|| invalid("layer_types", format!("expected a list, got {types}")))?;
        types
            .iter()
            .filter(|t| t.as_str() == Some("sliding_attention"))
            .count()
    } else if f.bool("use_sliding_window")? == Some(true) {
        let first = f.usize("max_window_layers")?.unwrap_or(28);
        layers.saturating_sub(first)
    } else {
        0
    };
    Ok(match count {
        0 => WindowedLayers::None,
        n if n >= layers => WindowedLayers::All,
        n => WindowedLayers::Some(n),
    })
}

fn hf_sliding_window(
    f: &Fields<'_>,
    family: Option<Family>,
    layers: usize,
) -> Result<Option<usize>, ConfigError> {
    let windowed = match family {
        Some(Family::Llama) => WindowedLayers::None,
        Some(Family::Qwen2) => qwen2_windowed_layers(f, layers)?,
        Some(Family::Mistral) | None => WindowedLayers::All,
    };
    match windowed {
        WindowedLayers::None => Ok(None),
        WindowedLayers::All => f.positive("sliding_window"),
        WindowedLayers::Some(n) => Err(invalid(
            "sliding_window",
            format!(
                "sliding-window attention on {n} of {layers} layers is not supported (only all or none)"
            ),
        )),
    }
}

impl ModelConfig {
    /// Parse a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<ModelConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::Json("the top level is not a JSON object".into()))?;
        let f = Fields {
            obj,
            prefix: String::new(),
        };
        let (architecture, model_type) = identify(&f)?;
        let family = registry::family_of_hf(&architecture);
        let shape = hf_attention_shape(&f)?;
        let (rope_theta, rope_scaling) = hf_rope(&f)?;
        let num_hidden_layers = f.required("num_hidden_layers")?;
        let attention_bias = match family {
            Some(Family::Qwen2) => true,
            Some(Family::Mistral) => false,
            Some(Family::Llama) | None => f.bool("attention_bias")?.unwrap_or(false),
        };
        let mlp_bias = match family {
            Some(Family::Llama) | None => f.bool("mlp_bias")?.unwrap_or(false),
            Some(Family::Mistral | Family::Qwen2) => false,
        };
        let torch_dtype = match f.string("torch_dtype")? {
            Some(d) => Some(d),
            None => f.string("dtype")?,
        };
        Ok(ModelConfig {
            sliding_window: hf_sliding_window(&f, family, num_hidden_layers)?,
            hidden_size: shape.hidden_size,
            intermediate_size: f.required("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads: shape.heads,
            num_key_value_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            vocab_size: f.required("vocab_size")?,
            max_position_embeddings: f.positive("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: f.positive_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias,
            mlp_bias,
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.ids("eos_token_id")?,
            torch_dtype: torch_dtype.map(str::to_string),
            quantization_config: f.get("quantization_config").cloned(),
            architecture,
            model_type,
        })
    }

    /// Read the config from GGUF metadata (`{arch}.block_count`, ...), with
    /// tied embeddings when `output.weight` is absent and biases when the
    /// tensors have them.
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let arch = g
            .architecture()
            .ok_or_else(|| ConfigError::Missing("general.architecture".into()))?;
        let keys = GgufKeys { g, arch };
        let family = registry::family_of_name(arch);
        let shape = keys.attention_shape()?;
        let rope_theta = keys.positive_f32("rope.freq_base")?.unwrap_or(10000.0);
        let rope_scaling = keys.rope_scaling(shape.head_dim, rope_theta)?;
        let has = |name: &str| g.tensor_info(name).is_some();
        Ok(ModelConfig {
            architecture: family.map_or(arch.to_string(), |fam| fam.hf_architecture().to_string()),
            model_type: arch.to_string(),
            hidden_size: shape.hidden_size,
            intermediate_size: keys.required("feed_forward_length")?,
            num_hidden_layers: keys.required("block_count")?,
            num_attention_heads: shape.heads,
            num_key_value_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            vocab_size: keys.vocab_size()?,
            max_position_embeddings: keys.positive("context_length")?.unwrap_or(2048),
            rms_norm_eps: keys
                .positive_f32("attention.layer_norm_rms_epsilon")?
                .ok_or_else(|| {
                    ConfigError::Missing(keys.key("attention.layer_norm_rms_epsilon"))
                })?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: !has("output.weight"),
            attention_bias: has("blk.0.attn_q.bias"),
            mlp_bias: has("blk.0.ffn_up.bias"),
            sliding_window: keys.positive("attention.sliding_window")?,
            bos_token_id: g.get_u32("tokenizer.ggml.bos_token_id"),
            eos_token_ids: g
                .get_u32("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
            torch_dtype: None,
            quantization_config: None,
        })
    }

    /// Parameter count, embeddings counted once when tied (biases as the
    /// family places them: Qwen2 on q/k/v, Llama `attention_bias` on q/k/v/o).
    pub fn num_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let o_bias = self.attention_bias
            && registry::family_of_hf(&self.architecture) != Some(Family::Qwen2);
        let attn = h * q + 2 * h * kv + q * h;
        let attn_bias =
            if self.attention_bias { q + 2 * kv } else { 0 } + if o_bias { h } else { 0 };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + attn_bias + mlp + 2 * h;
        let embed = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers as u64 * layer + h
    }

    /// KV-cache bytes per token: 2 × layers × kv_heads × head_dim × `dtype_bytes`.
    pub fn kv_bytes_per_token(&self, dtype_bytes: u64) -> u64 {
        2 * self.num_hidden_layers as u64
            * self.num_key_value_heads as u64
            * self.head_dim as u64
            * dtype_bytes
    }
}

/// Typed access to `{arch}.*` GGUF keys, naming the full key in errors.
struct GgufKeys<'a> {
    g: &'a GgufFile,
    arch: &'a str,
}

impl GgufKeys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch)
    }

    fn positive(&self, name: &str) -> Result<Option<usize>, ConfigError> {
        let key = self.key(name);
        match self.g.metadata(&key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| invalid(key, format!("expected a positive integer, got {v:?}"))),
        }
    }

    fn required(&self, name: &str) -> Result<usize, ConfigError> {
        self.positive(name)?
            .ok_or_else(|| ConfigError::Missing(self.key(name)))
    }

    fn positive_f32(&self, name: &str) -> Result<Option<f32>, ConfigError> {
        let key = self.key(name);
        match self.g.metadata(&key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .map(|x| Some(x as f32))
                .ok_or_else(|| invalid(key, format!("expected a positive number, got {v:?}"))),
        }
    }

    fn attention_shape(&self) -> Result<AttentionShape, ConfigError> {
        let hidden_size = self.required("embedding_length")?;
        let heads = self.required("attention.head_count")?;
        let kv_heads = self.positive("attention.head_count_kv")?.unwrap_or(heads);
        let head_dim = match self.positive("attention.key_length")? {
            Some(d) => d,
            None => default_head_dim(hidden_size, heads, self.key("attention.key_length"))?,
        };
        if let Some(v) = self.positive("attention.value_length")?
            && v != head_dim
        {
            return Err(invalid(
                self.key("attention.value_length"),
                format!(
                    "value heads of size {v} differ from key heads of size {head_dim}; not supported"
                ),
            ));
        }
        if let Some(r) = self.positive("rope.dimension_count")?
            && r != head_dim
        {
            return Err(invalid(
                self.key("rope.dimension_count"),
                format!(
                    "RoPE on {r} of {head_dim} head dimensions (partial rotary) is not supported"
                ),
            ));
        }
        AttentionShape {
            hidden_size,
            heads,
            kv_heads,
            head_dim,
        }
        .check(|field| match field {
            "num_key_value_heads" => self.key("attention.head_count_kv"),
            _ => self.key("attention.key_length"),
        })
    }

    /// `{arch}.vocab_size`, else the token list's length, else the embedding rows.
    fn vocab_size(&self) -> Result<usize, ConfigError> {
        if let Some(v) = self.positive("vocab_size")? {
            return Ok(v);
        }
        self.g
            .array_len("tokenizer.ggml.tokens")
            .filter(|&n| n > 0)
            .or_else(|| {
                self.g
                    .tensor_info("token_embd.weight")
                    .and_then(|t| t.ne.get(1))
                    .map(|&n| n as usize)
            })
            .ok_or_else(|| ConfigError::Missing(self.key("vocab_size")))
    }

    /// Scaling from `{arch}.rope.scaling.*` keys or a `rope_freqs.weight` tensor.
    fn rope_scaling(
        &self,
        head_dim: usize,
        theta: f32,
    ) -> Result<Option<RopeScaling>, ConfigError> {
        if self.g.tensor_info("rope_freqs.weight").is_some() {
            return self.llama3_from_rope_freqs(head_dim, theta);
        }
        let type_key = self.key("rope.scaling.type");
        let kind = match self.g.metadata(&type_key) {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| {
                invalid(type_key.clone(), format!("expected a string, got {v:?}"))
            })?),
        };
        match kind {
            None => match self.positive_f32("rope.scale_linear")? {
                Some(f) if f != 1.0 => Ok(Some(RopeScaling::Linear { factor: f })),
                _ => Ok(None),
            },
            Some("none") => Ok(None),
            Some("linear") => Ok(Some(RopeScaling::Linear {
                factor: self
                    .positive_f32("rope.scaling.factor")?
                    .ok_or_else(|| ConfigError::Missing(self.key("rope.scaling.factor")))?,
            })),
            Some(other) => Err(invalid(
                type_key,
                format!(
                    "RoPE scaling `{other}` is not supported (supported: none, linear, Llama 3 rope_freqs)"
                ),
            )),
        }
    }

    /// llama.cpp stores Llama 3.1 scaling as per-frequency divisors in
    /// `rope_freqs.weight`; recognise them as [`RopeScaling::Llama3`] with
    /// Llama 3's low/high frequency factors (1, 4) and original context
    /// (`rope.scaling.original_context_length`, else 8192).
    fn llama3_from_rope_freqs(
        &self,
        head_dim: usize,
        theta: f32,
    ) -> Result<Option<RopeScaling>, ConfigError> {
        let field = "rope_freqs.weight";
        let factors = self
            .g
            .raw_tensor(field)
            .filter(|t| {
                t.dtype == crate::weights::WeightDType::F32 && t.num_elements() == head_dim / 2
            })
            .map(|t| {
                t.data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<f32>>()
            })
            .ok_or_else(|| {
                invalid(
                    field,
                    format!("expected {} F32 values (head size / 2)", head_dim / 2),
                )
            })?;
        let factor = factors.iter().copied().fold(f32::MIN, f32::max);
        if !(factor.is_finite() && factor > 0.0) {
            return Err(invalid(
                field,
                "RoPE frequency factors must be positive numbers",
            ));
        }
        if factors.iter().all(|&x| x == 1.0) {
            return Ok(None);
        }
        let scaling = RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: self
                .positive("rope.scaling.original_context_length")?
                .unwrap_or(8192),
        };
        let base = crate::rope::inverse_frequencies(head_dim, theta, None);
        let scaled = crate::rope::inverse_frequencies(head_dim, theta, Some(&scaling));
        let matches = factors
            .iter()
            .zip(base.iter().zip(&scaled))
            .all(|(&stored, (&b, &s))| ((b / s) - stored).abs() <= 1e-3 * stored.abs());
        if matches {
            Ok(Some(scaling))
        } else {
            Err(invalid(
                field,
                "per-frequency RoPE factors that do not follow Llama 3 scaling are not supported",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_V5: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
      "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
      "vocab_size":49152,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"tie_word_embeddings":true,
      "rope_parameters":{"rope_theta":100000.0,"rope_type":"default"},"bos_token_id":1,"eos_token_id":2}"#;

    fn with(extra: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::from_hf_json(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,
               "intermediate_size":8,"num_hidden_layers":1,"vocab_size":8{extra}}}"#
        ))
    }

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
    fn rope_scaling_spellings() {
        let c = with(r#","rope_scaling":{"type":"linear","factor":2.0}"#).unwrap();
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        let c = with(
            r#","rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
               "high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 { factor: 8.0, .. })
        ));
        assert_eq!(
            with(r#","rope_scaling":null,"rope_theta":5.0"#)
                .unwrap()
                .rope_theta,
            5.0
        );
        assert_eq!(with("").unwrap().rope_theta, 10000.0);
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                r#","rope_scaling":{"type":"yarn","factor":4}"#,
                "rope_scaling.rope_type",
                "yarn",
            ),
            (
                r#","rope_scaling":{"rope_type":"linear"}"#,
                "rope_scaling.factor",
                "missing",
            ),
            (
                r#","rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1,"original_max_position_embeddings":8192}"#,
                "rope_scaling.high_freq_factor",
                "exceed",
            ),
            (r#","rope_scaling":"linear""#, "rope_scaling", "object"),
            (r#","rope_theta":-1"#, "rope_theta", "positive"),
            (
                r#","num_key_value_heads":3"#,
                "num_key_value_heads",
                "evenly",
            ),
            (r#","head_dim":15"#, "head_dim", "even"),
            (
                r#","tie_word_embeddings":"yes""#,
                "tie_word_embeddings",
                "true or false",
            ),
            (r#","eos_token_id":[2,-1]"#, "eos_token_id", "token ids"),
            (r#","rms_norm_eps":0"#, "rms_norm_eps", "positive"),
        ];
        for (extra, field, words) in cases {
            let e = with(extra).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`{field}`")) && msg.contains(words),
                "{extra}: {msg}"
            );
        }
        assert!(matches!(
            ModelConfig::from_hf_json("{"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            ModelConfig::from_hf_json("[1]"),
            Err(ConfigError::Json(_))
        ));
        assert_eq!(
            ModelConfig::from_hf_json(r#"{"hidden_size":8}"#),
            Err(ConfigError::Missing("architectures".into()))
        );
        assert_eq!(
            ModelConfig::from_hf_json(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8}"#),
            Err(ConfigError::Missing("num_attention_heads".into()))
        );
    }

    #[test]
    fn model_type_stands_in_for_architectures() {
        let c = ModelConfig::from_hf_json(
            r#"{"model_type":"mistral","hidden_size":64,"num_attention_heads":4,"intermediate_size":8,
               "num_hidden_layers":1,"vocab_size":8,"sliding_window":32}"#,
        )
        .unwrap();
        assert_eq!(c.architecture, "MistralForCausalLM");
        assert_eq!(c.sliding_window, Some(32));
    }

    #[test]
    fn qwen2_windows_follow_layer_types() {
        let qwen = |extra: &str| {
            ModelConfig::from_hf_json(&format!(
                r#"{{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"num_attention_heads":4,
                   "intermediate_size":8,"num_hidden_layers":2,"vocab_size":8,"sliding_window":16{extra}}}"#
            ))
        };
        assert_eq!(qwen("").unwrap().sliding_window, None);
        assert_eq!(
            qwen(r#","use_sliding_window":true,"max_window_layers":0"#)
                .unwrap()
                .sliding_window,
            Some(16)
        );
        assert_eq!(
            qwen(r#","use_sliding_window":true,"max_window_layers":2"#)
                .unwrap()
                .sliding_window,
            None
        );
        assert!(qwen(r#","use_sliding_window":true,"max_window_layers":1"#).is_err());
        let all = r#","layer_types":["sliding_attention","sliding_attention"]"#;
        assert_eq!(qwen(all).unwrap().sliding_window, Some(16));
        assert!(qwen(r#","attention_bias":false"#).unwrap().attention_bias);
    }
}
