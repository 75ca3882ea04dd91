//! What a family's decoder is made of: a small, plain description
//! ([`DecoderVariant`]) that picks its norms, attention, MLP, block layout,
//! embeddings and output, decided from the family and its config by
//! [`describe`]. The decoder ([`crate::decoder`]) builds every family from
//! these parts; nothing there is written per model.

use crate::config::{ConfigError, HiddenAct, ModelConfig, WindowLayout, invalid};
use crate::registry::{Family, family_of_hf};

/// The normalization every norm of the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm (`x / rms(x) · w`; Gemma's `(1 + w)` is folded into `w` at load).
    Rms,
    /// LayerNorm, with or without a bias.
    Layer {
        /// The norm adds a learned bias.
        bias: bool,
    },
}

/// Normalization of queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// Queries and keys reach RoPE unnormalized.
    None,
    /// RMSNorm over each head, one `[head_dim]` weight (Qwen3, Gemma 3).
    PerHead,
    /// RMSNorm over all heads at once, a `[heads·head_dim]` weight (OLMo 2).
    Whole,
}

/// How the query, key and value projections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvLayout {
    /// Three matrices.
    Separate,
    /// One matrix whose rows are all of q, then k, then v (Phi-3, GPT-2,
    /// GPT-NeoX as llama.cpp stores it).
    Fused,
    /// One matrix whose rows are grouped per head: q, k, v of head 0, then
    /// head 1, ... (GPT-NeoX in Hugging Face form).
    FusedPerHead,
}

/// The dense feed-forward of a layer (sparse layers use [`Experts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// `down(act(gate(x)) · up(x))`: SwiGLU, GeGLU.
    Gated {
        /// Gate and up projections are one matrix, gate rows first (Phi-3).
        fused: bool,
    },
    /// `down(act(up(x)))`: GPT-2, OPT, Phi-2, NeoX, StarCoder2.
    Plain,
}

/// How a sparse layer weighs the k experts it routes a token to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Softmax over all experts in f32, the k largest probabilities as they are.
    SoftmaxTopK,
    /// As [`Routing::SoftmaxTopK`], then divided by their sum (Mixtral;
    /// Qwen-MoE with `norm_topk_prob`).
    SoftmaxTopKRenormalized,
}

/// A mixture-of-experts feed-forward, the MLP of sparse layers: a router
/// picks k of E gated experts per token (each `down(act(gate·x) ⊙ up·x)`,
/// with the dense MLP's activation), optionally plus a shared expert scaled
/// by `sigmoid(shared_gate·x)`. The other layers keep the dense [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
pub struct Experts {
    /// Experts per sparse layer (E).
    pub count: usize,
    /// Experts each token is routed to (k).
    pub top_k: usize,
    /// Inner width of one expert.
    pub intermediate: usize,
    /// How the k weights are formed.
    pub routing: Routing,
    /// Inner width of the shared expert (Qwen2-MoE), when there is one.
    pub shared_intermediate: Option<usize>,
    /// `[layers]`: which layers route through experts.
    pub sparse_layers: Vec<bool>,
}

impl Experts {
    /// Whether layer `i` routes through experts.
    pub fn on_layer(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }
}

/// Where the norms sit around attention and MLP in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockLayout {
    /// `x += attn(n1(x)); x += mlp(n2(x))`.
    PreNorm,
    /// `x += attn(n1(x)) + mlp(n2(x))` with both reading the same `x`;
    /// `shared_norm`: `n2` is `n1` (Phi-2).
    Parallel {
        /// One norm feeds both branches.
        shared_norm: bool,
    },
    /// Gemma 2/3: `x += n_post1(attn(n1(x))); x += n_post2(mlp(n2(x)))`.
    Sandwich,
    /// OLMo 2: `x += n1(attn(x)); x += n2(mlp(x))`.
    PostNorm,
    /// BERT: `x = n1(x + attn(x)); x = n2(x + mlp(x))`.
    PostResidual,
}

/// A family's decoder, as parts.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderVariant {
    /// The family.
    pub kind: Family,
    /// Short family name (`llama`, `gemma3`), for logs and Ollama.
    pub family: &'static str,
    /// Every norm's kind.
    pub norm: Norm,
    /// Added to every norm weight at load (Gemma's `(1 + w)` in Hugging Face form).
    pub norm_weight_offset: f32,
    /// q/k/v projections carry biases.
    pub qkv_bias: bool,
    /// The output projection carries a bias.
    pub o_proj_bias: bool,
    /// MLP projections carry biases.
    pub mlp_bias: bool,
    /// q/k normalization.
    pub qk_norm: QkNorm,
    /// How q/k/v are stored.
    pub qkv_layout: QkvLayout,
    /// Linear weights are stored `[in, out]` (GPT-2's Conv1D) and transposed at load.
    pub transposed_linears: bool,
    /// The dense MLP (of every layer without experts).
    pub mlp: Mlp,
    /// The mixture of experts of sparse layers, for MoE families.
    pub experts: Option<Experts>,
    /// The MLP's activation.
    pub act: HiddenAct,
    /// Block layout.
    pub layout: BlockLayout,
    /// Sliding-window span in tokens, when any layer uses one.
    pub sliding_window: Option<usize>,
    /// `[layers]`: each layer's window (`None`: full attention).
    pub layer_windows: Vec<Option<usize>>,
    /// `[layers]`: each layer's RoPE table (0: the model's θ; 1: the local θ).
    pub layer_rope: Vec<usize>,
    /// Softmax scale of attention logits.
    pub attention_scale: f32,
    /// Attention logit soft-cap.
    pub attn_softcap: Option<f32>,
    /// Output logit soft-cap.
    pub final_softcap: Option<f32>,
    /// Embeddings are multiplied by this (Gemma: √hidden; Granite).
    pub embed_scale: Option<f32>,
    /// Attention and MLP outputs are multiplied by this before the residual add (Granite).
    pub residual_scale: Option<f32>,
    /// Logits are multiplied by this (Granite: `1 / logits_scaling`).
    pub logit_scale: Option<f32>,
    /// Learned absolute position embeddings, and the first row position 0
    /// uses (OPT: 2).
    pub learned_positions: Option<usize>,
    /// The LM head carries a bias (Phi-2).
    pub lm_head_bias: bool,
    /// An encoder (BERT): attention sees the whole sequence both ways, the
    /// summed embeddings (tokens, positions, token type 0) are normed, and
    /// there is no final norm or LM head: the model only embeds.
    pub encoder: bool,
}

impl DecoderVariant {
    /// How the layers slide (what the KV cache may free).
    pub fn window_layout(&self) -> WindowLayout {
        WindowLayout::of_layers(&self.layer_windows)
    }

    /// Whether layer `i` uses the second (local) RoPE table.
    pub fn uses_local_rope(&self, layer: usize) -> bool {
        self.layer_rope.get(layer) == Some(&1)
    }

    /// Whether the model needs RoPE at all.
    pub fn has_rope(&self) -> bool {
        self.learned_positions.is_none()
    }
}

/// The parts of `family`'s decoder for `c`; errors name the field at fault.
pub fn describe(family: Family, c: &ModelConfig) -> Result<DecoderVariant, ConfigError> {
    check_consistency(c)?;
    let gemma = matches!(family, Family::Gemma | Family::Gemma2 | Family::Gemma3);
    let layer_norm = matches!(
        family,
        Family::Phi2
            | Family::GptNeoX
            | Family::Gpt2
            | Family::Opt
            | Family::Starcoder2
            | Family::Bert
    );
    let norm = if layer_norm {
        Norm::Layer { bias: true }
    } else {
        Norm::Rms
    };
    let gguf = c.llama_cpp_layout;
    let qkv_layout = match family {
        Family::Phi3 | Family::Gpt2 => QkvLayout::Fused,
        Family::GptNeoX if gguf => QkvLayout::Fused,
        Family::GptNeoX => QkvLayout::FusedPerHead,
        _ => QkvLayout::Separate,
    };
    let mlp = match family {
        Family::Phi2
        | Family::GptNeoX
        | Family::Gpt2
        | Family::Opt
        | Family::Starcoder2
        | Family::Bert => Mlp::Plain,
        Family::Phi3 => Mlp::Gated { fused: true },
        _ => Mlp::Gated { fused: false },
    };
    let layout = match family {
        Family::Gemma2 | Family::Gemma3 => BlockLayout::Sandwich,
        Family::Olmo2 => BlockLayout::PostNorm,
        Family::Bert => BlockLayout::PostResidual,
        Family::Phi2 => BlockLayout::Parallel { shared_norm: true },
        Family::GptNeoX if c.use_parallel_residual => BlockLayout::Parallel { shared_norm: false },
        _ => BlockLayout::PreNorm,
    };
    let qk_norm = match family {
        Family::Qwen3 | Family::Qwen3Moe | Family::Gemma3 => QkNorm::PerHead,
        Family::Olmo2 => QkNorm::Whole,
        _ => QkNorm::None,
    };
    let layer_windows: Vec<Option<usize>> = (0..c.num_hidden_layers)
        .map(|i| c.layer_window(i))
        .collect();
    let layer_rope = (0..c.num_hidden_layers)
        .map(|i| usize::from(c.rope_local_theta.is_some() && c.is_sliding(i)))
        .collect();
    let attention_scale = match (c.multipliers.attention, c.query_pre_attn_scalar) {
        (Some(m), _) => m,
        (None, Some(s)) => 1.0 / s.sqrt(),
        (None, None) => 1.0 / (c.head_dim as f32).sqrt(),
    };
    let embed_scale = match family {
        // transformers rounds √hidden to the activation dtype; in f32 it is exact enough.
        _ if gemma => Some((c.hidden_size as f32).sqrt()),
        Family::Granite => c.multipliers.embedding,
        _ => None,
    };
    Ok(DecoderVariant {
        kind: family,
        family: family.name(),
        norm,
        norm_weight_offset: if gemma && !gguf { 1.0 } else { 0.0 },
        qkv_bias: c.attention_bias,
        o_proj_bias: c.attention_bias
            && !matches!(family, Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe),
        mlp_bias: c.mlp_bias,
        qk_norm,
        qkv_layout,
        transposed_linears: family == Family::Gpt2 && !gguf,
        mlp,
        experts: c.moe.as_ref().map(|m| Experts {
            count: m.num_experts,
            top_k: m.experts_per_token,
            intermediate: m.expert_intermediate_size,
            routing: match m.renormalize {
                true => Routing::SoftmaxTopKRenormalized,
                false => Routing::SoftmaxTopK,
            },
            shared_intermediate: m.shared_expert_intermediate_size,
            sparse_layers: m.sparse_layers.clone(),
        }),
        act: c.hidden_act,
        layout,
        sliding_window: c
            .sliding_window
            .filter(|_| layer_windows.iter().any(Option::is_some)),
        layer_windows,
        layer_rope,
        attention_scale,
        attn_softcap: c.attn_logit_softcapping,
        final_softcap: c.final_logit_softcapping,
        embed_scale,
        residual_scale: c.multipliers.residual.filter(|_| family == Family::Granite),
        logit_scale: c
            .multipliers
            .logits_scaling
            .filter(|_| family == Family::Granite)
            .map(|s| 1.0 / s),
        learned_positions: match family {
            Family::Gpt2 | Family::Bert => Some(0),
            Family::Opt => Some(2),
            _ => None,
        },
        lm_head_bias: family == Family::Phi2,
        encoder: family.is_encoder(),
    })
}

/// Shape checks every family shares; each error names the field.
fn check_consistency(c: &ModelConfig) -> Result<(), ConfigError> {
    if c.rotary_dim > c.head_dim || !c.rotary_dim.is_multiple_of(2) {
        return Err(invalid(
            "partial_rotary_factor",
            format!(
                "rotates {} of {} head dimensions; must be even and at most the head size",
                c.rotary_dim, c.head_dim
            ),
        ));
    }
    if let Some(moe) = &c.moe
        && moe.sparse_layers.len() != c.num_hidden_layers
    {
        return Err(invalid(
            "mlp_only_layers",
            format!(
                "{} sparse-layer flags for {} layers",
                moe.sparse_layers.len(),
                c.num_hidden_layers
            ),
        ));
    }
    if c.sliding_layers.len() != c.num_hidden_layers {
        return Err(invalid(
            "layer_types",
            format!(
                "{} layer types for {} layers",
                c.sliding_layers.len(),
                c.num_hidden_layers
            ),
        ));
    }
    Ok(())
}

/// A model's parameter count: every tensor, and what one token computes
/// with (a mixture of experts uses k of its E experts per sparse layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    /// Every parameter, embeddings counted once when tied.
    pub total: u64,
    /// Parameters one token computes with (`total` for dense models).
    pub active: u64,
}

/// Parameter count of `c` as its family lays the tensors out (the Llama
/// layout for an architecture Kiln does not run).
pub fn count_parameters(c: &ModelConfig) -> ParameterCount {
    let family = family_of_hf(&c.architecture).unwrap_or(Family::Llama);
    let Ok(v) = describe(family, c) else {
        let total = llama_parameters(c);
        return ParameterCount {
            total,
            active: total,
        };
    };
    let h = c.hidden_size as u64;
    let q = (c.num_attention_heads * c.head_dim) as u64;
    let kv = (c.num_key_value_heads * c.head_dim) as u64;
    let norm = match v.norm {
        Norm::Rms => h,
        Norm::Layer { bias } => h * (1 + u64::from(bias)),
    };
    let attn = h * q + 2 * h * kv + q * h;
    let attn_bias = if v.qkv_bias { q + 2 * kv } else { 0 } + if v.o_proj_bias { h } else { 0 };
    let qk_norm = match v.qk_norm {
        QkNorm::None => 0,
        QkNorm::PerHead => 2 * c.head_dim as u64,
        QkNorm::Whole => q + kv,
    };
    let dense_mlp = |i: u64| {
        let (weights, bias) = match v.mlp {
            Mlp::Gated { .. } => (3 * h * i, 2 * i + h),
            Mlp::Plain => (2 * h * i, i + h),
        };
        weights + if v.mlp_bias { bias } else { 0 }
    };
    let norms = match v.layout {
        BlockLayout::Sandwich => 4,
        BlockLayout::Parallel { shared_norm: true } => 1,
        _ => 2,
    };
    let common = attn + attn_bias + qk_norm + norms * norm;
    let dense_layer = common + dense_mlp(c.intermediate_size as u64);
    let (mut layers_total, mut layers_active) = (0u64, 0u64);
    for i in 0..c.num_hidden_layers {
        match &v.experts {
            Some(x) if x.on_layer(i) => {
                let expert = 3 * h * x.intermediate as u64;
                // The router, and the shared expert with its one-row gate.
                let always = common
                    + x.count as u64 * h
                    + x.shared_intermediate.map_or(0, |s| 3 * h * s as u64 + h);
                layers_total += always + x.count as u64 * expert;
                layers_active += always + x.top_k as u64 * expert;
            }
            _ => {
                layers_total += dense_layer;
                layers_active += dense_layer;
            }
        }
    }
    let vocab = c.vocab_size as u64;
    let embed = vocab * h;
    let positions = v.learned_positions.map_or(0, |offset| {
        (c.max_position_embeddings as u64 + offset as u64) * h
    });
    let head =
        if c.tie_word_embeddings { 0 } else { embed } + if v.lm_head_bias { vocab } else { 0 };
    // An encoder has two token types and the embedding norm, but no final norm or head.
    let outside_layers = match v.encoder {
        true => embed + positions + 2 * h + norm,
        false => embed + positions + head + norm,
    };
    ParameterCount {
        total: outside_layers + layers_total,
        active: outside_layers + layers_active,
    }
}

fn llama_parameters(c: &ModelConfig) -> u64 {
    let h = c.hidden_size as u64;
    let q = (c.num_attention_heads * c.head_dim) as u64;
    let kv = (c.num_key_value_heads * c.head_dim) as u64;
    let i = c.intermediate_size as u64;
    let layer = 2 * h * q + 2 * h * kv + 3 * h * i + 2 * h;
    let embed = c.vocab_size as u64 * h;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    embed + head + c.num_hidden_layers as u64 * layer + h
}
