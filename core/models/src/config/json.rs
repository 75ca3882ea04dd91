//! `ModelConfig` from a Hugging Face `config.json`.

use serde_json::{Map, Value};

use super::{
    AttentionShape, ConfigError, HiddenAct, ModelConfig, MoeConfig, Multipliers, RopeScaling,
    check_window, checked_layer_count, default_head_dim, invalid, rotary_dim_of,
};
use crate::registry::{self, Family};
use crate::rope::yarn_mscale;

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

    /// A list of non-negative integers (absent: empty).
    fn usizes(&self, name: &str) -> Result<Vec<usize>, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        let bad = || {
            invalid(
                self.path(name),
                format!("expected a list of integers, got {v}"),
            )
        };
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(bad)
            })
            .collect()
    }

    /// The first of several spellings that is present (`hidden_size`, `n_embd`).
    fn first(&self, names: &[&'a str]) -> &'a str {
        names
            .iter()
            .copied()
            .find(|n| self.get(n).is_some())
            .unwrap_or(names[0])
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
        .or_else(|| registry::family_of_hf(&architecture).map(|fam| fam.model_type().to_string()))
        .unwrap_or_else(|| "llama".to_string());
    Ok((architecture, model_type))
}

fn hf_attention_shape(f: &Fields<'_>) -> Result<AttentionShape, ConfigError> {
    let hidden_size = f.required(f.first(&["hidden_size", "n_embd"]))?;
    let heads_field = f.first(&["num_attention_heads", "n_head"]);
    let heads = f.required(heads_field)?;
    let kv_heads = f.positive("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = match f.positive("head_dim")? {
        Some(d) => d,
        None => default_head_dim(hidden_size, heads, heads_field.into())?,
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
/// `top` is the whole config (Phi-3 keeps `original_max_position_embeddings`
/// there) and `max_positions` its `max_position_embeddings`.
fn parse_rope_scaling(
    f: &Fields<'_>,
    top: &Fields<'_>,
    max_positions: usize,
) -> Result<Option<RopeScaling>, ConfigError> {
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
        "yarn" => {
            let original = original_context(f, top)?;
            let factor = match f.positive_f32("factor")? {
                Some(x) => x,
                None => max_positions as f32 / original as f32,
            };
            let (scale, m, m_all) = (
                factor as f64,
                f.number("mscale")?,
                f.number("mscale_all_dim")?,
            );
            let attention_factor = match (f.positive_f32("attention_factor")?, m, m_all) {
                (Some(x), _, _) => x,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    (yarn_mscale(scale, m) / yarn_mscale(scale, all)) as f32
                }
                _ => yarn_mscale(scale, 1.0) as f32,
            };
            let beta = |name: &str, default: f32| -> Result<f32, ConfigError> {
                // transformers treats 0 and absent alike (`get(...) or default`).
                Ok(match f.number(name)? {
                    Some(x) if x != 0.0 => x as f32,
                    _ => default,
                })
            };
            Ok(Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: beta("beta_fast", 32.0)?,
                beta_slow: beta("beta_slow", 1.0)?,
                attention_factor,
                truncate: f.bool("truncate")?.unwrap_or(true),
            }))
        }
        "dynamic" => Ok(Some(RopeScaling::DynamicNtk {
            factor: f.required_f32("factor")?,
            native_context: max_positions,
        })),
        "longrope" | "su" => {
            let original = original_context(f, top)?;
            let factors = |name: &str| -> Result<Vec<f32>, ConfigError> {
                let list = f
                    .get(name)
                    .ok_or_else(|| ConfigError::Missing(f.path(name)))?
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| invalid(f.path(name), "expected a list of numbers"))?;
                list.iter()
                    .map(|x| {
                        x.as_f64()
                            .filter(|x| x.is_finite() && *x > 0.0)
                            .map(|x| x as f32)
                            .ok_or_else(|| {
                                invalid(f.path(name), format!("expected positive numbers, got {x}"))
                            })
                    })
                    .collect()
            };
            let (short_factor, long_factor) = (factors("short_factor")?, factors("long_factor")?);
            if short_factor.len() != long_factor.len() {
                return Err(invalid(
                    f.path("long_factor"),
                    format!(
                        "has {} values but short_factor has {}",
                        long_factor.len(),
                        short_factor.len()
                    ),
                ));
            }
            let factor = match f.positive_f32("factor")? {
                Some(x) => x as f64,
                None => max_positions as f64 / original as f64,
            };
            let attention_factor = match f.positive_f32("attention_factor")? {
                Some(x) => x,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt() as f32,
            };
            Ok(Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: original,
                attention_factor,
            }))
        }
        other => Err(invalid(
            f.path("rope_type"),
            format!(
                "RoPE scaling `{other}` is not supported (supported: default, linear, llama3, \
                 yarn, dynamic, longrope)"
            ),
        )),
    }
}

/// `original_max_position_embeddings` from the scaling object, else the
/// config's top level (Phi-3).
fn original_context(f: &Fields<'_>, top: &Fields<'_>) -> Result<usize, ConfigError> {
    match f.positive("original_max_position_embeddings")? {
        Some(n) => Ok(n),
        None => top.required("original_max_position_embeddings"),
    }
}

/// RoPE settings: θ (of full-attention layers), θ of windowed layers when it
/// differs, scaling, and the rotated fraction of each head when given.
struct Rope {
    theta: f32,
    local_theta: Option<f32>,
    scaling: Option<RopeScaling>,
    fraction: Option<(f64, String)>,
}

/// From top-level `rope_theta`/`rope_scaling`/`rope_local_base_freq`/
/// `partial_rotary_factor`, or transformers-5 `rope_parameters` (flat, or
/// per layer type as Gemma 3 writes it).
fn hf_rope(f: &Fields<'_>, default_theta: f32, max_positions: usize) -> Result<Rope, ConfigError> {
    let params = f.object("rope_parameters")?;
    let (full, sliding) = match &params {
        Some(p) => match (p.object("full_attention")?, p.object("sliding_attention")?) {
            (None, None) => (
                Some(Fields {
                    obj: p.obj,
                    prefix: p.prefix.clone(),
                }),
                None,
            ),
            (full, sliding) => (full, sliding),
        },
        None => (None, None),
    };
    let theta_of = |p: &Option<&Fields<'_>>| -> Result<Option<f32>, ConfigError> {
        match p {
            Some(p) => p.positive_f32("rope_theta"),
            None => Ok(None),
        }
    };
    let theta = match theta_of(&full.as_ref())? {
        Some(t) => t,
        None => match f.positive_f32(f.first(&["rope_theta", "rotary_emb_base"]))? {
            Some(t) => t,
            None => default_theta,
        },
    };
    let local_theta = match theta_of(&sliding.as_ref())? {
        Some(t) => Some(t),
        None => f.positive_f32("rope_local_base_freq")?,
    };
    let scaling = match (f.object("rope_scaling")?, &full) {
        (Some(s), _) => parse_rope_scaling(&s, f, max_positions)?,
        (None, Some(p)) => parse_rope_scaling(p, f, max_positions)?,
        (None, None) => None,
    };
    let mut fraction = None;
    for (fields, name) in [
        (full.as_ref(), "partial_rotary_factor"),
        (Some(f), "partial_rotary_factor"),
        (Some(f), "rotary_pct"),
    ] {
        if let Some(fields) = fields
            && fraction.is_none()
            && let Some(x) = fields.number(name)?
        {
            fraction = Some((x, fields.path(name)));
        }
    }
    Ok(Rope {
        theta,
        local_theta,
        scaling,
        fraction,
    })
}

/// Which layers use the sliding window: `layer_types` when present, else
/// the family's rule.
fn hf_sliding_layers(
    f: &Fields<'_>,
    family: Option<Family>,
    layers: usize,
) -> Result<Vec<bool>, ConfigError> {
    if let Some(types) = f.get("layer_types") {
        let types = types
            .as_array()
            .filter(|t| t.len() == layers)
            .ok_or_else(|| {
                invalid(
                    "layer_types",
                    format!("expected a list of {layers} layer types, got {types}"),
                )
            })?;
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(invalid(
                    "layer_types",
                    format!(
                        "`{t}` is not supported (supported: full_attention, sliding_attention)"
                    ),
                )),
            })
            .collect();
    }
    let all = |on: bool| vec![on; layers];
    Ok(match family {
        Some(Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe | Family::Qwen3Moe) => {
            if f.bool("use_sliding_window")? == Some(true) {
                let first = f.usize("max_window_layers")?.unwrap_or(28);
                (0..layers).map(|i| i >= first).collect()
            } else {
                all(false)
            }
        }
        Some(Family::Gemma2) => (0..layers).map(|i| i % 2 == 0).collect(),
        Some(Family::Gemma3) => {
            let pattern = f.positive("sliding_window_pattern")?.unwrap_or(6);
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
        Some(Family::Mistral | Family::Mixtral | Family::Phi3 | Family::Starcoder2) | None => {
            all(true)
        }
        Some(_) => all(false),
    })
}

fn hf_activation(f: &Fields<'_>, family: Option<Family>) -> Result<HiddenAct, ConfigError> {
    let default = match family {
        Some(Family::Gemma | Family::Gemma2 | Family::Gemma3 | Family::Starcoder2) => {
            "gelu_pytorch_tanh"
        }
        Some(Family::Phi2 | Family::Gpt2) => "gelu_new",
        Some(Family::GptNeoX | Family::Bert) => "gelu",
        Some(Family::Opt) => "relu",
        _ => "silu",
    };
    // Gemma reads `hidden_activation` first; GPT-2 and OPT spell it `activation_function`.
    let field = f.first(&["hidden_activation", "hidden_act", "activation_function"]);
    let name = f.string(field)?.unwrap_or(default);
    HiddenAct::from_name(name).ok_or_else(|| {
        invalid(
            field,
            format!("activation `{name}` is not supported (supported: silu, gelu, gelu_pytorch_tanh, gelu_new, relu)"),
        )
    })
}

/// The experts of a mixture-of-experts family: Mixtral routes every layer
/// through `num_local_experts` experts of `intermediate_size` and always
/// renormalizes the top-k weights; Qwen2/3-MoE name them `num_experts` of
/// `moe_intermediate_size`, renormalize when `norm_topk_prob`, and keep a
/// dense MLP on `mlp_only_layers` and on layers off `decoder_sparse_step`.
fn hf_moe(
    f: &Fields<'_>,
    family: Option<Family>,
    layers: usize,
    intermediate_size: usize,
) -> Result<Option<MoeConfig>, ConfigError> {
    let qwen = matches!(family, Some(Family::Qwen2Moe | Family::Qwen3Moe));
    if !qwen && family != Some(Family::Mixtral) {
        return Ok(None);
    }
    let experts_field = f.first(&["num_local_experts", "num_experts"]);
    let num_experts = match f.usize(experts_field)? {
        // Qwen2/3-MoE with no experts is a dense model.
        Some(0) | None if qwen => return Ok(None),
        Some(0) => return Err(invalid(experts_field, "must be positive")),
        Some(n) => n,
        None => return Err(ConfigError::Missing(experts_field.into())),
    };
    let experts_per_token = f.required("num_experts_per_tok")?;
    let moe = if qwen {
        let step = f.positive("decoder_sparse_step")?.unwrap_or(1);
        let dense = f.usizes("mlp_only_layers")?;
        if let Some(&bad) = dense.iter().find(|&&i| i >= layers) {
            return Err(invalid(
                "mlp_only_layers",
                format!("names layer {bad} of a {layers}-layer model"),
            ));
        }
        MoeConfig {
            num_experts,
            experts_per_token,
            expert_intermediate_size: f.required("moe_intermediate_size")?,
            shared_expert_intermediate_size: match family {
                Some(Family::Qwen2Moe) => f.positive("shared_expert_intermediate_size")?,
                _ => None,
            },
            renormalize: f.bool("norm_topk_prob")?.unwrap_or(false),
            sparse_layers: (0..layers)
                .map(|i| !dense.contains(&i) && (i + 1).is_multiple_of(step))
                .collect(),
        }
    } else {
        MoeConfig {
            num_experts,
            experts_per_token,
            expert_intermediate_size: intermediate_size,
            shared_expert_intermediate_size: None,
            renormalize: true,
            sparse_layers: vec![true; layers],
        }
    };
    moe.check(|field| match field {
        "num_experts_per_tok" => field.to_string(),
        _ => experts_field.to_string(),
    })
    .map(Some)
}

/// `(attention_bias, mlp_bias)` as each family defines them.
fn hf_biases(f: &Fields<'_>, family: Option<Family>) -> Result<(bool, bool), ConfigError> {
    Ok(match family {
        Some(Family::Qwen2) => (true, false),
        Some(Family::Qwen2Moe) => (f.bool("qkv_bias")?.unwrap_or(true), false),
        Some(Family::Mistral | Family::Mixtral | Family::Gemma | Family::Gemma2 | Family::Phi3) => {
            (false, false)
        }
        Some(Family::Phi2 | Family::Gpt2 | Family::Bert) => (true, true),
        Some(Family::GptNeoX) => (f.bool("attention_bias")?.unwrap_or(true), true),
        Some(Family::Opt) => {
            let b = f.bool("enable_bias")?.unwrap_or(true);
            (b, b)
        }
        Some(Family::Starcoder2) => {
            let b = f.bool("use_bias")?.unwrap_or(true);
            (b, b)
        }
        Some(Family::Gemma3 | Family::Qwen3 | Family::Qwen3Moe | Family::Olmo2) => {
            (f.bool("attention_bias")?.unwrap_or(false), false)
        }
        Some(Family::Llama | Family::Granite) | None => (
            f.bool("attention_bias")?.unwrap_or(false),
            f.bool("mlp_bias")?.unwrap_or(false),
        ),
    })
}

/// Fields that only some families have and that Kiln cannot honour
/// otherwise: refused by name rather than ignored.
fn hf_refusals(f: &Fields<'_>, family: Option<Family>) -> Result<(), ConfigError> {
    match family {
        Some(Family::Opt) => {
            if f.bool("do_layer_norm_before")? == Some(false) {
                return Err(invalid(
                    "do_layer_norm_before",
                    "OPT with norms after each block (OPT-350m) is not supported",
                ));
            }
            if let (Some(p), Some(h)) = (f.usize("word_embed_proj_dim")?, f.usize("hidden_size")?)
                && p != h
            {
                return Err(invalid(
                    "word_embed_proj_dim",
                    format!("projected embeddings ({p} ≠ hidden size {h}) are not supported"),
                ));
            }
        }
        Some(Family::Phi2) if f.bool("qk_layernorm")? == Some(true) => {
            return Err(invalid(
                "qk_layernorm",
                "Phi with q/k LayerNorm is not supported",
            ));
        }
        Some(Family::Gpt2) if f.bool("scale_attn_by_inverse_layer_idx")? == Some(true) => {
            return Err(invalid(
                "scale_attn_by_inverse_layer_idx",
                "per-layer attention scaling is not supported",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn hf_multipliers(f: &Fields<'_>) -> Result<Multipliers, ConfigError> {
    Ok(Multipliers {
        embedding: f.positive_f32("embedding_multiplier")?,
        residual: f.positive_f32("residual_multiplier")?,
        attention: f.positive_f32("attention_multiplier")?,
        logits_scaling: f.positive_f32("logits_scaling")?,
    })
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
        hf_refusals(&f, family)?;
        let shape = hf_attention_shape(&f)?;
        let gemma = matches!(
            family,
            Some(Family::Gemma | Family::Gemma2 | Family::Gemma3)
        );
        let default_theta = if family == Some(Family::Gemma3) {
            1_000_000.0
        } else {
            10000.0
        };
        let max_position_embeddings = f
            .positive(f.first(&["max_position_embeddings", "n_positions"]))?
            .unwrap_or(2048);
        let rope = hf_rope(&f, default_theta, max_position_embeddings)?;
        let learned_positions = matches!(family, Some(Family::Gpt2 | Family::Opt | Family::Bert));
        let rotary_dim = match (&rope.fraction, learned_positions) {
            (_, true) => 0,
            (Some((x, field)), false) => rotary_dim_of(shape.head_dim, *x, field)?,
            (None, false) => match family {
                Some(Family::Phi2) => rotary_dim_of(shape.head_dim, 0.5, "partial_rotary_factor")?,
                Some(Family::GptNeoX) => rotary_dim_of(shape.head_dim, 0.25, "rotary_pct")?,
                _ => shape.head_dim,
            },
        };
        let layers_field = f.first(&["num_hidden_layers", "n_layer"]);
        let num_hidden_layers =
            checked_layer_count(f.required(layers_field)?, &f.path(layers_field))?;
        let (attention_bias, mlp_bias) = hf_biases(&f, family)?;
        let intermediate_size = match family {
            Some(Family::Gpt2) => f.positive("n_inner")?.unwrap_or(4 * shape.hidden_size),
            Some(Family::Opt) => f.required("ffn_dim")?,
            _ => f.required("intermediate_size")?,
        };
        let sliding_layers = hf_sliding_layers(&f, family, num_hidden_layers)?;
        let sliding_window = match sliding_layers.iter().any(|&s| s) {
            true => f.positive("sliding_window")?,
            false => None,
        };
        check_window(sliding_window, max_position_embeddings, "sliding_window")?;
        let eps_field = f.first(&[
            "rms_norm_eps",
            "layer_norm_eps",
            "layer_norm_epsilon",
            "norm_epsilon",
        ]);
        let default_eps = if family == Some(Family::Bert) {
            1e-12
        } else if learned_positions || family == Some(Family::GptNeoX) {
            1e-5
        } else {
            1e-6
        };
        let torch_dtype = match f.string("torch_dtype")? {
            Some(d) => Some(d),
            None => f.string("dtype")?,
        };
        let softcap = |name: &str, default: Option<f32>| -> Result<Option<f32>, ConfigError> {
            match f.obj.get(name) {
                Some(Value::Null) => Ok(None),
                Some(_) => f.positive_f32(name),
                None => Ok(default),
            }
        };
        ModelConfig {
            sliding_layers: match sliding_window {
                Some(_) => sliding_layers,
                None => vec![false; num_hidden_layers],
            },
            sliding_window,
            hidden_size: shape.hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads: shape.heads,
            num_key_value_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            vocab_size: f.required("vocab_size")?,
            max_position_embeddings,
            rms_norm_eps: f.positive_f32(eps_field)?.unwrap_or(default_eps),
            rope_theta: rope.theta,
            rope_local_theta: rope.local_theta.filter(|_| family == Some(Family::Gemma3)),
            rope_scaling: rope.scaling,
            rotary_dim,
            tie_word_embeddings: f
                .bool("tie_word_embeddings")?
                .unwrap_or(gemma || learned_positions),
            attention_bias,
            mlp_bias,
            hidden_act: hf_activation(&f, family)?,
            query_pre_attn_scalar: match family {
                Some(Family::Gemma2 | Family::Gemma3) => f.positive_f32("query_pre_attn_scalar")?,
                _ => None,
            },
            attn_logit_softcapping: match family {
                Some(Family::Gemma2) => softcap("attn_logit_softcapping", Some(50.0))?,
                Some(Family::Gemma3) => softcap("attn_logit_softcapping", None)?,
                _ => None,
            },
            final_logit_softcapping: match family {
                Some(Family::Gemma2) => softcap("final_logit_softcapping", Some(30.0))?,
                Some(Family::Gemma3) => softcap("final_logit_softcapping", None)?,
                _ => None,
            },
            llama_cpp_layout: false,
            multipliers: match family {
                Some(Family::Granite) => hf_multipliers(&f)?,
                _ => Multipliers::default(),
            },
            use_parallel_residual: match family {
                Some(Family::GptNeoX) => f.bool("use_parallel_residual")?.unwrap_or(true),
                Some(Family::Phi2) => true,
                _ => false,
            },
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.ids("eos_token_id")?,
            torch_dtype: torch_dtype.map(str::to_string),
            quantization_config: f.get("quantization_config").cloned(),
            moe: hf_moe(&f, family, num_hidden_layers, intermediate_size)?,
            architecture,
            model_type,
        }
        .within_limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

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
    fn absurd_sizes_are_refused_before_anything_is_sized_from_them() {
        let e = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":1099511627776,
               "num_attention_heads":4,"intermediate_size":8,"num_hidden_layers":1,"vocab_size":8}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`hidden_size`"), "{e}");
        let e = with(r#","max_position_embeddings":1000000000000"#).unwrap_err();
        assert!(e.to_string().contains("`max_position_embeddings`"), "{e}");
    }

    #[test]
    fn an_absurd_layer_count_is_refused() {
        let e = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,
               "intermediate_size":8,"num_hidden_layers":5000000,"vocab_size":8}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("`num_hidden_layers`") && e.to_string().contains("at most 1024"),
            "{e}"
        );
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
    fn long_context_rope_scalings() {
        let yarn = with(
            r#","rope_scaling":{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":4096}"#,
        )
        .unwrap();
        match yarn.rope_scaling {
            Some(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            }) => {
                assert_eq!((factor, original_max_position_embeddings), (4.0, 4096));
                assert_eq!((beta_fast, beta_slow, truncate), (32.0, 1.0, true));
                assert!((attention_factor - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
            }
            other => panic!("{other:?}"),
        }
        let dynamic = with(
            r#","max_position_embeddings":8192,"rope_scaling":{"type":"dynamic","factor":2.0}"#,
        )
        .unwrap();
        assert_eq!(
            dynamic.rope_scaling,
            Some(RopeScaling::DynamicNtk {
                factor: 2.0,
                native_context: 8192
            })
        );
        // Phi-3 keeps the original context at the top level; the factor is
        // max_position_embeddings / original (8192 / 4096 here).
        let longrope = with(
            r#","max_position_embeddings":8192,"original_max_position_embeddings":4096,"rope_scaling":{"type":"longrope","short_factor":[1.0,1.0],"long_factor":[2.0,4.0]}"#,
        )
        .unwrap();
        match longrope.rope_scaling {
            Some(RopeScaling::LongRope {
                original_max_position_embeddings,
                attention_factor,
                ..
            }) => {
                assert_eq!(original_max_position_embeddings, 4096);
                let expected = (1.0 + 2f64.ln() / 4096f64.ln()).sqrt() as f32;
                assert_eq!(attention_factor, expected);
            }
            other => panic!("{other:?}"),
        }
        let uneven = with(
            r#","original_max_position_embeddings":4096,"rope_scaling":{"type":"longrope","short_factor":[1.0],"long_factor":[2.0,4.0]}"#,
        );
        assert!(uneven.unwrap_err().to_string().contains("long_factor"));
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
                r#","rope_scaling":{"type":"mrope","factor":4}"#,
                "rope_scaling.rope_type",
                "mrope",
            ),
            (
                r#","rope_scaling":{"type":"yarn","factor":4}"#,
                "original_max_position_embeddings",
                "missing",
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
        let partial = qwen(r#","use_sliding_window":true,"max_window_layers":1"#).unwrap();
        assert_eq!(
            (partial.sliding_window, partial.sliding_layers.clone()),
            (Some(16), vec![false, true])
        );
        assert!(!partial.is_sliding(0) && partial.is_sliding(1));
        let all = r#","layer_types":["sliding_attention","sliding_attention"]"#;
        assert_eq!(qwen(all).unwrap().sliding_window, Some(16));
        assert!(qwen(r#","attention_bias":false"#).unwrap().attention_bias);
    }

    #[test]
    fn experts_and_their_layers() {
        let qwen = |extra: &str| {
            ModelConfig::from_hf_json(&format!(
                r#"{{"architectures":["Qwen2MoeForCausalLM"],"hidden_size":64,"num_attention_heads":4,
                   "intermediate_size":128,"num_hidden_layers":4,"vocab_size":8,"num_experts":8,
                   "num_experts_per_tok":2,"moe_intermediate_size":32{extra}}}"#
            ))
        };
        let c = qwen(r#","decoder_sparse_step":2,"mlp_only_layers":[3],"norm_topk_prob":true,"shared_expert_intermediate_size":64"#)
            .unwrap();
        let moe = c.moe.unwrap();
        assert_eq!(moe.sparse_layers, vec![false, true, false, false]);
        assert!(moe.renormalize && moe.is_sparse(1) && !moe.is_sparse(3));
        assert_eq!(moe.shared_expert_intermediate_size, Some(64));
        assert!(c.attention_bias, "Qwen2-MoE's qkv_bias defaults to true");
        assert_eq!(qwen(r#","num_experts":0"#).unwrap().moe, None);
        let mixtral = ModelConfig::from_hf_json(
            r#"{"architectures":["MixtralForCausalLM"],"hidden_size":64,"num_attention_heads":4,
               "intermediate_size":32,"num_hidden_layers":2,"vocab_size":8,"num_local_experts":4,
               "num_experts_per_tok":2}"#,
        )
        .unwrap();
        let moe = mixtral.moe.unwrap();
        assert_eq!((moe.expert_intermediate_size, moe.renormalize), (32, true));
        // transformers 5 writes Qwen3-MoE's expert count as `num_local_experts`.
        let qwen3 = ModelConfig::from_hf_json(
            r#"{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":64,"num_attention_heads":4,
               "intermediate_size":128,"num_hidden_layers":2,"vocab_size":8,"num_local_experts":4,
               "num_experts_per_tok":2,"moe_intermediate_size":32}"#,
        )
        .unwrap();
        assert_eq!(qwen3.moe.unwrap().num_experts, 4);
    }

    #[test]
    fn inconsistent_experts_name_the_field() {
        let cases = [
            (
                r#","num_experts_per_tok":9"#,
                "num_experts_per_tok",
                "only 8",
            ),
            (r#","mlp_only_layers":[4]"#, "mlp_only_layers", "layer 4"),
            (
                r#","decoder_sparse_step":0"#,
                "decoder_sparse_step",
                "positive",
            ),
            (
                r#","moe_intermediate_size":0"#,
                "moe_intermediate_size",
                "positive",
            ),
        ];
        for (extra, field, words) in cases {
            let msg = ModelConfig::from_hf_json(&format!(
                r#"{{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":64,"num_attention_heads":4,
                   "intermediate_size":128,"num_hidden_layers":4,"vocab_size":8,"num_experts":8,
                   "num_experts_per_tok":2,"moe_intermediate_size":32{extra}}}"#
            ))
            .unwrap_err()
            .to_string();
            assert!(
                msg.contains(&format!("`{field}`")) && msg.contains(words) && !msg.contains('\n'),
                "{extra}: {msg}"
            );
        }
    }
}
