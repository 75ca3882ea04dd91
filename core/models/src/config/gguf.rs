//! `ModelConfig` from GGUF metadata (`{arch}.*` keys, as llama.cpp's
//! converter writes them), with biases and tied embeddings read off the
//! tensors.

use super::{
    AttentionShape, ConfigError, HiddenAct, ModelConfig, MoeConfig, Multipliers, RopeScaling,
    check_window, checked_layer_count, default_head_dim, invalid,
};
use crate::registry::{self, Family};
use crate::weights::gguf::GgufFile;

impl ModelConfig {
    /// Read the config from GGUF metadata (`{arch}.block_count`, ...), with
    /// tied embeddings when `output.weight` is absent and biases when the
    /// tensors have them.
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig, ConfigError> {
        let arch = g
            .architecture()
            .ok_or_else(|| ConfigError::Missing("general.architecture".into()))?;
        let keys = GgufKeys { g, arch };
        let expert_count = keys.positive("expert_count")?;
        let family = registry::family_of_gguf_experts(arch, expert_count.is_some());
        let learned_positions = matches!(family, Some(Family::Gpt2 | Family::Bert));
        let shape = keys.attention_shape()?;
        let rotary_dim = match learned_positions {
            true => 0,
            false => keys.rotary_dim(shape.head_dim)?,
        };
        let rope_theta = keys.positive_f32("rope.freq_base")?.unwrap_or(10000.0);
        let rope_scaling = keys.rope_scaling(rotary_dim.max(2), rope_theta)?;
        let has = |name: &str| g.tensor_info(name).is_some();
        let layers = checked_layer_count(keys.required("block_count")?, &keys.key("block_count"))?;
        let context = keys.positive("context_length")?.unwrap_or(2048);
        // llama.cpp writes 0 for "no window" (Phi-3 without one).
        let sliding_window = match g.get_u64(&keys.key("attention.sliding_window")) {
            Some(0) => None,
            _ => keys.positive("attention.sliding_window")?,
        };
        check_window(
            sliding_window,
            context,
            &keys.key("attention.sliding_window"),
        )?;
        let sliding_layers = match sliding_window {
            None => vec![false; layers],
            Some(_) => keys.sliding_layers(family, layers)?,
        };
        let eps = match keys.positive_f32("attention.layer_norm_rms_epsilon")? {
            Some(e) => e,
            None => keys
                .positive_f32("attention.layer_norm_epsilon")?
                .ok_or_else(|| {
                    ConfigError::Missing(keys.key("attention.layer_norm_rms_epsilon"))
                })?,
        };
        let gemma3 = family == Some(Family::Gemma3);
        ModelConfig {
            architecture: family.map_or(arch.to_string(), |fam| fam.hf_architecture().to_string()),
            model_type: arch.to_string(),
            hidden_size: shape.hidden_size,
            intermediate_size: keys.intermediate_size()?,
            num_hidden_layers: layers,
            num_attention_heads: shape.heads,
            num_key_value_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            vocab_size: keys.vocab_size()?,
            max_position_embeddings: context,
            rms_norm_eps: eps,
            rope_theta,
            // Gemma 3's windowed layers: `rope.freq_base_swa`, else llama.cpp's fixed base.
            rope_local_theta: match gemma3 {
                true => Some(keys.positive_f32("rope.freq_base_swa")?.unwrap_or(10000.0)),
                false => None,
            },
            rope_scaling,
            rotary_dim,
            tie_word_embeddings: !has("output.weight"),
            attention_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
            mlp_bias: has("blk.0.ffn_up.bias"),
            sliding_window,
            sliding_layers,
            hidden_act: match family {
                Some(Family::Gemma | Family::Gemma2 | Family::Gemma3 | Family::Starcoder2) => {
                    HiddenAct::GeluTanh
                }
                Some(Family::Phi2 | Family::Gpt2) => HiddenAct::GeluTanh,
                Some(Family::GptNeoX | Family::Bert) => HiddenAct::Gelu,
                Some(Family::Opt) => HiddenAct::Relu,
                _ => HiddenAct::Silu,
            },
            query_pre_attn_scalar: None,
            attn_logit_softcapping: keys.positive_f32("attn_logit_softcapping")?,
            final_logit_softcapping: keys.positive_f32("final_logit_softcapping")?,
            llama_cpp_layout: true,
            multipliers: Multipliers {
                embedding: keys.positive_f32("embedding_scale")?,
                residual: keys.positive_f32("residual_scale")?,
                attention: keys.positive_f32("attention.scale")?,
                logits_scaling: keys.positive_f32("logit_scale")?,
            },
            use_parallel_residual: match family {
                Some(Family::GptNeoX) => g
                    .get_bool(&keys.key("use_parallel_residual"))
                    .unwrap_or(true),
                Some(Family::Phi2) => true,
                _ => false,
            },
            bos_token_id: g.get_u32("tokenizer.ggml.bos_token_id"),
            eos_token_ids: g
                .get_u32("tokenizer.ggml.eos_token_id")
                .into_iter()
                .collect(),
            torch_dtype: None,
            quantization_config: None,
            moe: match expert_count {
                Some(n) => Some(keys.moe(family, n, layers)?),
                None => None,
            },
        }
        .within_limits()
    }
}

pub(crate) struct GgufKeys<'a> {
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

    /// The MLP width as the tensors have it (llama.cpp's GPT-2 and Phi-2
    /// converters write `4 × hidden` whatever the model uses), else
    /// `{arch}.feed_forward_length`.
    fn intermediate_size(&self) -> Result<usize, ConfigError> {
        let from_tensor = self
            .g
            .tensor_info("blk.0.ffn_down.weight")
            .and_then(|t| t.ne.first())
            .map(|&n| n as usize)
            .filter(|&n| n > 0);
        match from_tensor {
            Some(n) => Ok(n),
            None => self.required("feed_forward_length"),
        }
    }

    /// The experts: `{arch}.expert_used_count`, the expert width from
    /// `{arch}.expert_feed_forward_length` (else the `ffn_gate_exps` tensor,
    /// else `feed_forward_length`, Mixtral's spelling), the shared expert's
    /// from `expert_shared_feed_forward_length`, renormalization from
    /// `expert_weights_norm` (else llama.cpp's per-architecture choice: all
    /// but Qwen2-MoE renormalize), and sparse layers by their router tensor
    /// (`blk.N.ffn_gate_inp`), since llama.cpp writes no key for dense ones.
    fn moe(
        &self,
        family: Option<Family>,
        num_experts: usize,
        layers: usize,
    ) -> Result<MoeConfig, ConfigError> {
        let sparse_layers: Vec<bool> = (0..layers)
            .map(|i| {
                self.g
                    .tensor_info(&format!("blk.{i}.ffn_gate_inp.weight"))
                    .is_some()
            })
            .collect();
        let first_sparse = sparse_layers.iter().position(|&s| s).unwrap_or(0);
        // Rows of a `[.., rows, h]` tensor of the first sparse layer.
        let rows_of = |part: &str| {
            self.g
                .tensor_info(&format!("blk.{first_sparse}.{part}.weight"))
                .and_then(|t| t.ne.get(1))
                .map(|&n| n as usize)
                .filter(|&n| n > 0)
        };
        let expert_intermediate_size = match self.positive("expert_feed_forward_length")? {
            Some(n) => n,
            None => match rows_of("ffn_gate_exps") {
                Some(n) => n,
                None => self.required("feed_forward_length")?,
            },
        };
        let renormalize = match self.g.metadata(&self.key("expert_weights_norm")) {
            Some(v) => v.as_bool().ok_or_else(|| {
                invalid(
                    self.key("expert_weights_norm"),
                    format!("expected true or false, got {v:?}"),
                )
            })?,
            None => family != Some(Family::Qwen2Moe),
        };
        MoeConfig {
            num_experts,
            experts_per_token: self.required("expert_used_count")?,
            expert_intermediate_size,
            shared_expert_intermediate_size: match self
                .positive("expert_shared_feed_forward_length")?
            {
                Some(n) => Some(n),
                None => rows_of("ffn_gate_shexp"),
            },
            renormalize,
            sparse_layers,
        }
        .check(|field| match field {
            "num_experts_per_tok" => self.key("expert_used_count"),
            _ => self.key("expert_count"),
        })
    }

    /// `{arch}.rope.dimension_count` (even, ≤ the head size), else the head size.
    fn rotary_dim(&self, head_dim: usize) -> Result<usize, ConfigError> {
        match self.positive("rope.dimension_count")? {
            None => Ok(head_dim),
            Some(r) if r <= head_dim && r.is_multiple_of(2) => Ok(r),
            Some(r) => Err(invalid(
                self.key("rope.dimension_count"),
                format!(
                    "RoPE on {r} of {head_dim} head dimensions: must be even and at most the head size"
                ),
            )),
        }
    }

    /// Which layers use the window: `{arch}.attention.sliding_window_pattern`
    /// (a period or one flag per layer) when present, else the family's
    /// pattern as llama.cpp hard-codes it (Gemma 2: even layers; Gemma 3: five
    /// of every six), else every layer.
    fn sliding_layers(
        &self,
        family: Option<Family>,
        layers: usize,
    ) -> Result<Vec<bool>, ConfigError> {
        let key = self.key("attention.sliding_window_pattern");
        let period = |n: usize| (0..layers).map(|i| i % n < n - 1).collect::<Vec<bool>>();
        match self.g.metadata(&key) {
            Some(v) => {
                if let Some(n) = v.as_u64().filter(|&n| n > 0) {
                    return Ok(period(n as usize));
                }
                let flags = self
                    .g
                    .get_array(&key)
                    .map(|a| a.iter().map(|x| x.as_bool()).collect::<Option<Vec<bool>>>())
                    .unwrap_or(None)
                    .filter(|f| f.len() == layers);
                flags.ok_or_else(|| {
                    invalid(
                        key,
                        format!("expected a period or {layers} flags, got {v:?}"),
                    )
                })
            }
            None => Ok(match family {
                Some(Family::Gemma2) => period(2),
                Some(Family::Gemma3) => period(6),
                _ => vec![true; layers],
            }),
        }
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
        if self.g.tensor_info("rope_factors_long.weight").is_some() {
            return self.longrope(head_dim).map(Some);
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
            Some("yarn") => {
                let factor = self
                    .positive_f32("rope.scaling.factor")?
                    .ok_or_else(|| ConfigError::Missing(self.key("rope.scaling.factor")))?;
                Ok(Some(RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: self.original_context()?,
                    beta_fast: self
                        .positive_f32("rope.scaling.yarn_beta_fast")?
                        .unwrap_or(32.0),
                    beta_slow: self
                        .positive_f32("rope.scaling.yarn_beta_slow")?
                        .unwrap_or(1.0),
                    attention_factor: match self.positive_f32("rope.scaling.yarn_attn_factor")? {
                        Some(x) => x,
                        None => crate::rope::yarn_mscale(factor as f64, 1.0) as f32,
                    },
                    truncate: true,
                }))
            }
            Some(other) => Err(invalid(
                type_key,
                format!(
                    "RoPE scaling `{other}` is not supported (supported: none, linear, yarn, Llama 3 rope_freqs, LongRoPE factor tensors)"
                ),
            )),
        }
    }

    fn original_context(&self) -> Result<usize, ConfigError> {
        self.positive("rope.scaling.original_context_length")?
            .ok_or_else(|| ConfigError::Missing(self.key("rope.scaling.original_context_length")))
    }

    /// `rot / 2` F32 values of a tensor.
    fn factor_tensor(&self, name: &str, half: usize) -> Result<Vec<f32>, ConfigError> {
        self.g
            .raw_tensor(name)
            .filter(|t| t.dtype == crate::weights::WeightDType::F32 && t.num_elements() == half)
            .map(|t| {
                t.data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<f32>>()
            })
            .filter(|v| v.iter().all(|x| x.is_finite() && *x > 0.0))
            .ok_or_else(|| {
                invalid(
                    name,
                    format!("expected {half} positive F32 values (rotated size / 2)"),
                )
            })
    }

    /// Phi-3's LongRoPE: llama.cpp's converter writes the two factor sets
    /// as `rope_factors_{long,short}.weight` and the attention factor as
    /// `rope.scaling.attn_factor`.
    fn longrope(&self, rotary_dim: usize) -> Result<RopeScaling, ConfigError> {
        let half = rotary_dim / 2;
        Ok(RopeScaling::LongRope {
            short_factor: self.factor_tensor("rope_factors_short.weight", half)?,
            long_factor: self.factor_tensor("rope_factors_long.weight", half)?,
            original_max_position_embeddings: self.original_context()?,
            attention_factor: self
                .positive_f32("rope.scaling.attn_factor")?
                .unwrap_or(1.0),
        })
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
        let base = crate::rope::inverse_frequencies(head_dim, theta, None, 0);
        let scaled = crate::rope::inverse_frequencies(head_dim, theta, Some(&scaling), 0);
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
