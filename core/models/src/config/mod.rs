//! The one config of every decoder Kiln runs, read from a Hugging Face
//! `config.json` ([`json`]: transformers 4 `rope_theta`/`rope_scaling` and
//! transformers 5 `rope_parameters` alike, GPT-2's `n_embd` spellings) or
//! from GGUF metadata ([`gguf`]: `{arch}.*` keys). Which parts a family's
//! decoder is built from is decided from this config by [`crate::parts`].

mod gguf;
mod json;
mod window;

use serde_json::Value;

pub use window::WindowLayout;

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

/// Most decoder layers a config may declare. Published models have under
/// 200; a larger count is a corrupt file, refused before per-layer tables
/// are sized from it.
pub const MAX_LAYERS: usize = 1024;

/// The largest width, vocabulary, context and expert count a config may
/// declare, far above any published model's. With them (and
/// [`MAX_LAYERS`]) every size derived from a config — a parameter count,
/// a weight's bytes — fits in a u64; a larger value is a corrupt file.
const SIZE_LIMITS: [(&str, usize); 8] = [
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 19),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("head_dim", 1 << 14),
    ("vocab_size", 1 << 24),
    ("max_position_embeddings", 1 << 27),
    ("num_experts", 1 << 10),
];

impl ModelConfig {
    /// This config, or the error naming the first size above its limit.
    pub(crate) fn within_limits(self) -> Result<ModelConfig, ConfigError> {
        let moe = self.moe.as_ref();
        let sizes = [
            self.hidden_size,
            self.intermediate_size.max(moe.map_or(0, |m| {
                m.expert_intermediate_size
                    .max(m.shared_expert_intermediate_size.unwrap_or(0))
            })),
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.vocab_size,
            self.max_position_embeddings,
            moe.map_or(0, |m| m.num_experts),
        ];
        for ((field, limit), value) in SIZE_LIMITS.into_iter().zip(sizes) {
            if value > limit {
                return Err(invalid(
                    field,
                    format!("{value} is above any model's (at most {limit}); the file is corrupt"),
                ));
            }
        }
        Ok(self)
    }
}

/// `layers`, or the error naming `field` when it exceeds [`MAX_LAYERS`].
pub(crate) fn checked_layer_count(layers: usize, field: &str) -> Result<usize, ConfigError> {
    if layers > MAX_LAYERS {
        return Err(invalid(
            field,
            format!(
                "{layers} layers is more than any model has (at most {MAX_LAYERS}); the file is corrupt"
            ),
        ));
    }
    Ok(layers)
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
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
    /// YaRN ("NTK-by-parts"): frequencies that turn fewer than `beta_slow`
    /// times over the original context are divided by `factor`, those that
    /// turn more than `beta_fast` times are kept, a linear ramp between;
    /// cos and sin are multiplied by `attention_factor`.
    Yarn {
        /// Context extension factor.
        factor: f32,
        /// Context length the model was pre-trained with, in tokens.
        original_max_position_embeddings: usize,
        /// Rotations over the original context above which a frequency is kept.
        beta_fast: f32,
        /// Rotations below which a frequency is fully interpolated.
        beta_slow: f32,
        /// Multiplier of cos and sin (`0.1·ln(factor) + 1` unless the config says).
        attention_factor: f32,
        /// Round the ramp's ends to whole dimensions (transformers' default).
        truncate: bool,
    },
    /// Dynamic NTK: θ grows once the served context passes the native one,
    /// `θ·(factor·served/native − (factor − 1))^(d/(d−2))`. Transformers
    /// recomputes it per forward pass from the sequence length; Kiln computes
    /// it once from the served context (`--max-model-len`), so the tables are
    /// transformers' own whenever that fits the native context, and every
    /// position of a longer sequence uses one consistent θ.
    DynamicNtk {
        /// Scale factor.
        factor: f32,
        /// `max_position_embeddings`: the context the model was trained with.
        native_context: usize,
    },
    /// LongRoPE (Phi-3): each frequency divided by a per-frequency factor,
    /// the short set when the served context fits the original one, the long
    /// set otherwise (llama.cpp's rule: one set for every position, so the
    /// KV cache stays consistent); cos and sin are multiplied by
    /// `attention_factor`.
    LongRope {
        /// Divisors `[rotary_dim / 2]` within the original context.
        short_factor: Vec<f32>,
        /// Divisors `[rotary_dim / 2]` beyond it.
        long_factor: Vec<f32>,
        /// Context length the model was pre-trained with, in tokens.
        original_max_position_embeddings: usize,
        /// Multiplier of cos and sin (`√(1 + ln(factor)/ln(original))` unless the config says).
        attention_factor: f32,
    },
}

/// The MLP's activation function (`hidden_act`, `hidden_activation`,
/// `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `silu` / `swish`.
    Silu,
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `gelu`: exact (erf).
    Gelu,
    /// `relu`: `max(0, x)`.
    Relu,
}

impl HiddenAct {
    /// The activation named `name` in transformers' `ACT2FN`.
    pub fn from_name(name: &str) -> Option<HiddenAct> {
        Some(match name {
            "silu" | "swish" => HiddenAct::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu_python_tanh" => {
                HiddenAct::GeluTanh
            }
            "gelu" => HiddenAct::Gelu,
            "relu" => HiddenAct::Relu,
            _ => return None,
        })
    }
}

/// Granite's scalar multipliers (absent: 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Multipliers {
    /// Embeddings are multiplied by this (`embedding_multiplier`).
    pub embedding: Option<f32>,
    /// Attention and MLP outputs are multiplied by this before the residual add
    /// (`residual_multiplier`).
    pub residual: Option<f32>,
    /// Softmax scale instead of `1/√head_dim` (`attention_multiplier`).
    pub attention: Option<f32>,
    /// Logits are divided by this (`logits_scaling`).
    pub logits_scaling: Option<f32>,
}

/// Mixture-of-experts feed-forward settings (Mixtral, Qwen2-MoE, Qwen3-MoE).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// E, routed experts per sparse layer (`num_local_experts`, `num_experts`).
    pub num_experts: usize,
    /// k, experts each token is routed to (`num_experts_per_tok`; `1 ≤ k ≤ E`).
    pub experts_per_token: usize,
    /// Inner width of one routed expert (`moe_intermediate_size`; Mixtral's
    /// `intermediate_size`).
    pub expert_intermediate_size: usize,
    /// Inner width of the always-on shared expert, whose output is scaled by
    /// a sigmoid gate (Qwen2-MoE `shared_expert_intermediate_size`).
    pub shared_expert_intermediate_size: Option<usize>,
    /// The k routing weights are divided by their sum (`norm_topk_prob`;
    /// always for Mixtral).
    pub renormalize: bool,
    /// `[num_hidden_layers]`: which layers route through experts; the others
    /// keep a dense MLP of `intermediate_size` (`mlp_only_layers`,
    /// `decoder_sparse_step`).
    pub sparse_layers: Vec<bool>,
}

impl MoeConfig {
    /// Whether layer `i` routes through experts.
    pub fn is_sparse(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }

    /// Checks both sources share; `key` names a field in messages.
    pub(crate) fn check(self, key: impl Fn(&str) -> String) -> Result<MoeConfig, ConfigError> {
        if self.experts_per_token > self.num_experts {
            return Err(invalid(
                key("num_experts_per_tok"),
                format!(
                    "routes each token to {} experts, but there are only {} (`num_local_experts`)",
                    self.experts_per_token, self.num_experts
                ),
            ));
        }
        Ok(self)
    }
}

/// Decoder hyper-parameters of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `architectures[0]` (`LlamaForCausalLM`); for GGUF, the Hugging Face
    /// name of `general.architecture`, or that value itself when unknown.
    pub architecture: String,
    /// `model_type` (`llama`, `qwen2`, `gemma3_text`); for GGUF, `general.architecture`.
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
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Context length the model supports, in tokens.
    pub max_position_embeddings: usize,
    /// Epsilon of every norm (RMSNorm or LayerNorm).
    pub rms_norm_eps: f32,
    /// RoPE base θ (of full-attention layers when windowed layers differ).
    pub rope_theta: f32,
    /// RoPE base θ of sliding-window layers (Gemma 3's local base), if it differs.
    pub rope_local_theta: Option<f32>,
    /// RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Dimensions of each head that RoPE rotates (even, ≤ `head_dim`); 0
    /// for models with learned absolute positions (GPT-2, OPT).
    pub rotary_dim: usize,
    /// The output projection reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Attention projections carry biases.
    pub attention_bias: bool,
    /// MLP projections carry biases.
    pub mlp_bias: bool,
    /// Sliding attention window in tokens, when some layer uses one.
    pub sliding_window: Option<usize>,
    /// `[num_hidden_layers]`: which layers use the sliding window (all
    /// false when `sliding_window` is `None`).
    pub sliding_layers: Vec<bool>,
    /// The MLP's activation.
    pub hidden_act: HiddenAct,
    /// Attention scale is `query_pre_attn_scalar^-½` instead of `head_dim^-½` (Gemma 2/3).
    pub query_pre_attn_scalar: Option<f32>,
    /// Attention logits are soft-capped at this value (Gemma 2).
    pub attn_logit_softcapping: Option<f32>,
    /// Output logits are soft-capped at this value (Gemma 2).
    pub final_logit_softcapping: Option<f32>,
    /// The tensors are laid out as llama.cpp's converter writes them (GGUF):
    /// Gemma norm weights hold `1 + w`, GPT-2's Conv1D weights are stored
    /// `[out, in]`, GPT-NeoX's fused q/k/v rows are grouped q, k, v rather
    /// than per head.
    pub llama_cpp_layout: bool,
    /// Granite's multipliers.
    pub multipliers: Multipliers,
    /// Attention and MLP read the same residual and add to it together
    /// (GPT-NeoX `use_parallel_residual`; always for Phi-2).
    pub use_parallel_residual: bool,
    /// `bos_token_id` (the first, if a list) or GGUF's
    /// `tokenizer.ggml.bos_token_id`; `None` when the checkpoint has none.
    pub bos_token_id: Option<u32>,
    /// EOS token ids (`eos_token_id` may be one id or a list).
    pub eos_token_ids: Vec<u32>,
    /// Checkpoint dtype (`torch_dtype` or transformers-5 `dtype`: `bfloat16`, ...).
    pub torch_dtype: Option<String>,
    /// Raw `quantization_config`, when present.
    pub quantization_config: Option<Value>,
    /// Mixture-of-experts settings; `None` for dense models.
    pub moe: Option<MoeConfig>,
}

/// Heads and head size, checked for consistency.
pub(crate) struct AttentionShape {
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Checks shared by both sources; `key` names a field in messages.
    pub(crate) fn check(self, key: impl Fn(&str) -> String) -> Result<AttentionShape, ConfigError> {
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
                format!("heads need an even, positive size, got {}", self.head_dim),
            ));
        }
        Ok(self)
    }
}

/// `hidden / heads`, which must divide exactly.
pub(crate) fn default_head_dim(
    hidden: usize,
    heads: usize,
    field: String,
) -> Result<usize, ConfigError> {
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

/// Rotated dimensions of a head for a rotary fraction (Phi's
/// `partial_rotary_factor`, NeoX's `rotary_pct`), as transformers rounds it.
pub(crate) fn rotary_dim_of(
    head_dim: usize,
    fraction: f64,
    field: &str,
) -> Result<usize, ConfigError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(invalid(field, format!("must be in (0, 1], got {fraction}")));
    }
    let dim = (head_dim as f64 * fraction) as usize;
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(invalid(
            field,
            format!(
                "rotates {dim} of {head_dim} head dimensions; RoPE needs an even, positive count"
            ),
        ));
    }
    Ok(dim)
}

/// Checks every family shares: a window no larger than the context.
pub(crate) fn check_window(
    window: Option<usize>,
    context: usize,
    field: &str,
) -> Result<(), ConfigError> {
    match window {
        Some(w) if w > context => Err(invalid(
            field,
            format!("a sliding window of {w} tokens is larger than the {context}-token context"),
        )),
        _ => Ok(()),
    }
}

impl ModelConfig {
    /// Parameter count, embeddings counted once when tied, biases and norms
    /// as the family places them (falls back to the Llama layout for an
    /// architecture Kiln does not run).
    pub fn num_parameters(&self) -> u64 {
        crate::parts::count_parameters(self).total
    }

    /// Parameters one token computes with: all of them for a dense model;
    /// for a mixture of experts, the k routed experts of each sparse layer
    /// instead of all E.
    pub fn num_active_parameters(&self) -> u64 {
        crate::parts::count_parameters(self).active
    }

    /// KV-cache bytes per token: 2 × layers × kv_heads × head_dim × `dtype_bytes`.
    pub fn kv_bytes_per_token(&self, dtype_bytes: u64) -> u64 {
        2 * self.num_hidden_layers as u64
            * self.num_key_value_heads as u64
            * self.head_dim as u64
            * dtype_bytes
    }

    /// Whether layer `i` attends through the sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && self.sliding_layers.get(layer).copied().unwrap_or(false)
    }
}
