//! Tensor names by role: what each family calls its tensors in Hugging Face
//! form, and the name llama.cpp's converter gives each role in GGUF form.
//! The decoder asks for a [`Role`]; only this module knows the spellings.

use crate::registry::Family;

/// What a tensor is for in a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Token embeddings `[vocab, hidden]`.
    Embed,
    /// Learned position embeddings `[positions, hidden]`.
    Positions,
    /// Token-type (segment) embeddings `[types, hidden]` (BERT).
    TokenTypes,
    /// The norm applied to the summed embeddings (BERT).
    EmbedNorm,
    /// The norm before the LM head.
    FinalNorm,
    /// The LM head `[vocab, hidden]`.
    LmHead,
    /// The norm before attention (OLMo 2 has none).
    AttnNorm,
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Fused q/k/v projection.
    Qkv,
    /// Attention output projection.
    O,
    /// Query norm.
    QNorm,
    /// Key norm.
    KNorm,
    /// The norm applied to the attention output (Gemma 2/3, OLMo 2).
    PostAttnNorm,
    /// The norm before the MLP.
    FfnNorm,
    /// The norm applied to the MLP output (Gemma 2/3, OLMo 2).
    PostFfnNorm,
    /// MLP gate projection.
    Gate,
    /// MLP up projection (or the first layer of a plain MLP).
    Up,
    /// Fused gate and up projection (Phi-3).
    GateUp,
    /// MLP down projection (or the second layer of a plain MLP).
    Down,
    /// A sparse layer's router `[experts, hidden]`.
    Router,
    /// The experts' gate projections, stacked `[experts, inter, hidden]`
    /// (checkpoints in Hugging Face form hold one `[inter, hidden]` tensor
    /// per expert: [`hf_expert_name`]).
    ExpertGates,
    /// The experts' up projections, stacked like [`Role::ExpertGates`].
    ExpertUps,
    /// The experts' down projections, stacked `[experts, hidden, inter]`.
    ExpertDowns,
    /// The shared expert's gate projection (Qwen2-MoE).
    SharedGate,
    /// The shared expert's up projection.
    SharedUp,
    /// The shared expert's down projection.
    SharedDown,
    /// The `[1, hidden]` logit whose sigmoid scales the shared expert's output.
    SharedExpertGate,
}

impl Role {
    /// The stacked per-expert roles.
    pub fn is_expert_stack(self) -> bool {
        matches!(
            self,
            Role::ExpertGates | Role::ExpertUps | Role::ExpertDowns
        )
    }
}

/// A weight or its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The `<prefix>.weight` tensor.
    Weight,
    /// The `<prefix>.bias` tensor.
    Bias,
}

impl Part {
    fn suffix(self) -> &'static str {
        match self {
            Part::Weight => "weight",
            Part::Bias => "bias",
        }
    }
}

/// Hugging Face stems of one family: `(global prefix-free names, layer prefix, layer names)`.
struct HfNames {
    embed: &'static str,
    positions: &'static str,
    token_types: &'static str,
    embed_norm: &'static str,
    final_norm: &'static str,
    lm_head: &'static str,
    layers: &'static str,
    layer: fn(Role) -> Option<&'static str>,
}

fn llama_layer(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::AttnNorm => "input_layernorm",
        Role::Q => "self_attn.q_proj",
        Role::K => "self_attn.k_proj",
        Role::V => "self_attn.v_proj",
        Role::Qkv => "self_attn.qkv_proj",
        Role::O => "self_attn.o_proj",
        Role::QNorm => "self_attn.q_norm",
        Role::KNorm => "self_attn.k_norm",
        Role::FfnNorm => "post_attention_layernorm",
        Role::Gate => "mlp.gate_proj",
        Role::Up => "mlp.up_proj",
        Role::GateUp => "mlp.gate_up_proj",
        Role::Down => "mlp.down_proj",
        _ => return None,
    })
}

/// Mixtral: the experts of `block_sparse_moe`, `w1` gate, `w3` up, `w2` down.
fn mixtral_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::Router => Some("block_sparse_moe.gate"),
        Role::ExpertGates => Some("block_sparse_moe.experts.w1"),
        Role::ExpertUps => Some("block_sparse_moe.experts.w3"),
        Role::ExpertDowns => Some("block_sparse_moe.experts.w2"),
        other => llama_layer(other),
    }
}

/// Qwen2/3-MoE: routed experts and the shared expert under `mlp`; dense
/// layers (`mlp_only_layers`) keep Llama's `mlp.*_proj`.
fn qwen_moe_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::Router => Some("mlp.gate"),
        Role::ExpertGates => Some("mlp.experts.gate_proj"),
        Role::ExpertUps => Some("mlp.experts.up_proj"),
        Role::ExpertDowns => Some("mlp.experts.down_proj"),
        Role::SharedGate => Some("mlp.shared_expert.gate_proj"),
        Role::SharedUp => Some("mlp.shared_expert.up_proj"),
        Role::SharedDown => Some("mlp.shared_expert.down_proj"),
        Role::SharedExpertGate => Some("mlp.shared_expert_gate"),
        other => llama_layer(other),
    }
}

fn gemma2_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::PostAttnNorm => Some("post_attention_layernorm"),
        Role::FfnNorm => Some("pre_feedforward_layernorm"),
        Role::PostFfnNorm => Some("post_feedforward_layernorm"),
        other => llama_layer(other),
    }
}

fn olmo2_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::AttnNorm | Role::FfnNorm => None,
        Role::PostAttnNorm => Some("post_attention_layernorm"),
        Role::PostFfnNorm => Some("post_feedforward_layernorm"),
        other => llama_layer(other),
    }
}

fn starcoder2_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::Up => Some("mlp.c_fc"),
        Role::Down => Some("mlp.c_proj"),
        other => llama_layer(other),
    }
}

fn phi2_layer(role: Role) -> Option<&'static str> {
    match role {
        Role::O => Some("self_attn.dense"),
        Role::Up => Some("mlp.fc1"),
        Role::Down => Some("mlp.fc2"),
        Role::FfnNorm => None,
        other => llama_layer(other),
    }
}

fn neox_layer(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::AttnNorm => "input_layernorm",
        Role::Qkv => "attention.query_key_value",
        Role::O => "attention.dense",
        Role::FfnNorm => "post_attention_layernorm",
        Role::Up => "mlp.dense_h_to_4h",
        Role::Down => "mlp.dense_4h_to_h",
        _ => return None,
    })
}

fn gpt2_layer(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::AttnNorm => "ln_1",
        Role::Qkv => "attn.c_attn",
        Role::O => "attn.c_proj",
        Role::FfnNorm => "ln_2",
        Role::Up => "mlp.c_fc",
        Role::Down => "mlp.c_proj",
        _ => return None,
    })
}

fn opt_layer(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::AttnNorm => "self_attn_layer_norm",
        Role::Q => "self_attn.q_proj",
        Role::K => "self_attn.k_proj",
        Role::V => "self_attn.v_proj",
        Role::O => "self_attn.out_proj",
        Role::FfnNorm => "final_layer_norm",
        Role::Up => "fc1",
        Role::Down => "fc2",
        _ => return None,
    })
}

fn bert_layer(role: Role) -> Option<&'static str> {
    Some(match role {
        Role::Q => "attention.self.query",
        Role::K => "attention.self.key",
        Role::V => "attention.self.value",
        Role::O => "attention.output.dense",
        Role::PostAttnNorm => "attention.output.LayerNorm",
        Role::Up => "intermediate.dense",
        Role::Down => "output.dense",
        Role::PostFfnNorm => "output.LayerNorm",
        _ => return None,
    })
}

fn hf_names(family: Family) -> HfNames {
    let llama = HfNames {
        embed: "model.embed_tokens",
        positions: "",
        token_types: "",
        embed_norm: "",
        final_norm: "model.norm",
        lm_head: "lm_head",
        layers: "model.layers",
        layer: llama_layer,
    };
    match family {
        Family::Gemma2 | Family::Gemma3 => HfNames {
            layer: gemma2_layer,
            ..llama
        },
        Family::Olmo2 => HfNames {
            layer: olmo2_layer,
            ..llama
        },
        Family::Mixtral => HfNames {
            layer: mixtral_layer,
            ..llama
        },
        Family::Qwen2Moe | Family::Qwen3Moe => HfNames {
            layer: qwen_moe_layer,
            ..llama
        },
        Family::Starcoder2 => HfNames {
            layer: starcoder2_layer,
            ..llama
        },
        Family::Phi2 => HfNames {
            final_norm: "model.final_layernorm",
            layer: phi2_layer,
            ..llama
        },
        Family::GptNeoX => HfNames {
            embed: "gpt_neox.embed_in",
            final_norm: "gpt_neox.final_layer_norm",
            lm_head: "embed_out",
            layers: "gpt_neox.layers",
            layer: neox_layer,
            ..llama
        },
        Family::Gpt2 => HfNames {
            embed: "transformer.wte",
            positions: "transformer.wpe",
            final_norm: "transformer.ln_f",
            layers: "transformer.h",
            layer: gpt2_layer,
            ..llama
        },
        Family::Opt => HfNames {
            embed: "model.decoder.embed_tokens",
            positions: "model.decoder.embed_positions",
            final_norm: "model.decoder.final_layer_norm",
            layers: "model.decoder.layers",
            layer: opt_layer,
            ..llama
        },
        Family::Bert => HfNames {
            embed: "embeddings.word_embeddings",
            positions: "embeddings.position_embeddings",
            token_types: "embeddings.token_type_embeddings",
            embed_norm: "embeddings.LayerNorm",
            final_norm: "",
            lm_head: "",
            layers: "encoder.layer",
            layer: bert_layer,
        },
        _ => llama,
    }
}

/// The Hugging Face name of `role` (in `layer` for per-layer roles) in
/// `family`'s checkpoints; `None` when the family has no such tensor.
pub fn hf_name(family: Family, role: Role, layer: Option<usize>, part: Part) -> Option<String> {
    let n = hf_names(family);
    let global = match role {
        Role::Embed => Some(n.embed),
        Role::Positions => Some(n.positions),
        Role::TokenTypes => Some(n.token_types),
        Role::EmbedNorm => Some(n.embed_norm),
        Role::FinalNorm => Some(n.final_norm),
        Role::LmHead => Some(n.lm_head),
        _ => None,
    };
    let suffix = part.suffix();
    match (global, layer) {
        (Some(""), _) => None,
        (Some(g), _) => Some(format!("{g}.{suffix}")),
        (None, Some(i)) => (n.layer)(role).map(|s| format!("{}.{i}.{s}.{suffix}", n.layers)),
        (None, None) => None,
    }
}

/// The Hugging Face name of expert `expert`'s slice of a stacked role
/// ([`Role::is_expert_stack`]) in `layer`, as checkpoints store them
/// (`model.layers.0.mlp.experts.3.up_proj.weight`).
pub fn hf_expert_name(family: Family, role: Role, layer: usize, expert: usize) -> Option<String> {
    if !role.is_expert_stack() {
        return None;
    }
    let stacked = hf_name(family, role, Some(layer), Part::Weight)?;
    let (before, after) = stacked.split_once(".experts.")?;
    Some(format!("{before}.experts.{expert}.{after}"))
}

/// The names transformers 5 gives the experts of `layer` in memory, when a
/// checkpoint stores them so: one `[experts, 2·inter, hidden]` tensor of
/// each expert's gate rows then up rows, and one `[experts, hidden, inter]`
/// of down projections (`model.layers.0.mlp.experts.gate_up_proj`, no suffix).
pub fn hf_fused_expert_names(family: Family, layer: usize) -> Option<(String, String)> {
    hf_name(family, Role::Router, Some(layer), Part::Weight)?;
    let layers = hf_names(family).layers;
    let prefix = format!("{layers}.{layer}.mlp.experts");
    Some((
        format!("{prefix}.gate_up_proj"),
        format!("{prefix}.down_proj"),
    ))
}

/// The GGUF name llama.cpp gives `role` (`blk.N.attn_q.weight`).
pub fn gguf_name(family: Family, role: Role, layer: Option<usize>, part: Part) -> Option<String> {
    let stem = match role {
        Role::Embed => "token_embd",
        Role::Positions => "position_embd",
        Role::TokenTypes => "token_types",
        Role::EmbedNorm => "token_embd_norm",
        Role::FinalNorm => "output_norm",
        Role::LmHead => "output",
        Role::AttnNorm => "attn_norm",
        Role::Q => "attn_q",
        Role::K => "attn_k",
        Role::V => "attn_v",
        Role::Qkv => "attn_qkv",
        Role::O => "attn_output",
        Role::QNorm => "attn_q_norm",
        Role::KNorm => "attn_k_norm",
        // BERT's norms after each residual add have names of their own.
        Role::PostAttnNorm if family == Family::Bert => "attn_output_norm",
        Role::PostAttnNorm => "post_attention_norm",
        // OLMo 2 has no pre-MLP norm; Gemma 2/3's `pre_feedforward_layernorm` is ffn_norm.
        Role::FfnNorm => "ffn_norm",
        Role::PostFfnNorm if family == Family::Bert => "layer_output_norm",
        Role::PostFfnNorm => "post_ffw_norm",
        Role::Gate => "ffn_gate",
        Role::Up | Role::GateUp => "ffn_up",
        Role::Down => "ffn_down",
        Role::Router => "ffn_gate_inp",
        Role::ExpertGates => "ffn_gate_exps",
        Role::ExpertUps => "ffn_up_exps",
        Role::ExpertDowns => "ffn_down_exps",
        Role::SharedGate => "ffn_gate_shexp",
        Role::SharedUp => "ffn_up_shexp",
        Role::SharedDown => "ffn_down_shexp",
        Role::SharedExpertGate => "ffn_gate_inp_shexp",
    };
    hf_name(family, role, layer.or(Some(0)), part)?;
    let suffix = part.suffix();
    Some(match (role, layer) {
        (
            Role::Embed
            | Role::Positions
            | Role::TokenTypes
            | Role::EmbedNorm
            | Role::FinalNorm
            | Role::LmHead,
            _,
        ) => {
            format!("{stem}.{suffix}")
        }
        (_, Some(i)) => format!("blk.{i}.{stem}.{suffix}"),
        (_, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_spell_their_tensors() {
        let hf = |f, r, l| hf_name(f, r, l, Part::Weight).unwrap();
        assert_eq!(
            hf(Family::Llama, Role::Q, Some(3)),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf(Family::Gemma3, Role::FfnNorm, Some(0)),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf(Family::Gpt2, Role::Qkv, Some(1)),
            "transformer.h.1.attn.c_attn.weight"
        );
        assert_eq!(
            hf(Family::Gpt2, Role::Positions, None),
            "transformer.wpe.weight"
        );
        assert_eq!(hf(Family::GptNeoX, Role::LmHead, None), "embed_out.weight");
        assert_eq!(
            hf_name(Family::Opt, Role::O, Some(0), Part::Bias).unwrap(),
            "model.decoder.layers.0.self_attn.out_proj.bias"
        );
        assert_eq!(
            hf_name(Family::Llama, Role::Positions, None, Part::Weight),
            None
        );
        assert_eq!(
            hf_name(Family::Olmo2, Role::AttnNorm, Some(0), Part::Weight),
            None
        );
        let gg = |f, r, l| gguf_name(f, r, l, Part::Weight).unwrap();
        assert_eq!(
            gg(Family::Gemma3, Role::PostFfnNorm, Some(2)),
            "blk.2.post_ffw_norm.weight"
        );
        assert_eq!(
            gg(Family::Phi3, Role::GateUp, Some(0)),
            "blk.0.ffn_up.weight"
        );
        assert_eq!(
            gg(Family::Qwen3, Role::KNorm, Some(1)),
            "blk.1.attn_k_norm.weight"
        );
        assert_eq!(
            gg(Family::Gpt2, Role::Positions, None),
            "position_embd.weight"
        );
        assert_eq!(
            gg(Family::Bert, Role::PostAttnNorm, Some(1)),
            "blk.1.attn_output_norm.weight"
        );
        assert_eq!(
            gg(Family::Bert, Role::TokenTypes, None),
            "token_types.weight"
        );
        assert_eq!(
            gg(Family::Bert, Role::EmbedNorm, None),
            "token_embd_norm.weight"
        );
    }

    #[test]
    fn experts_are_named_per_expert_and_stacked() {
        let hf = |f, r, l| hf_name(f, r, l, Part::Weight).unwrap();
        assert_eq!(
            hf(Family::Mixtral, Role::Router, Some(1)),
            "model.layers.1.block_sparse_moe.gate.weight"
        );
        assert_eq!(
            hf_expert_name(Family::Mixtral, Role::ExpertUps, 1, 7).unwrap(),
            "model.layers.1.block_sparse_moe.experts.7.w3.weight"
        );
        assert_eq!(
            hf_expert_name(Family::Qwen3Moe, Role::ExpertDowns, 0, 2).unwrap(),
            "model.layers.0.mlp.experts.2.down_proj.weight"
        );
        assert_eq!(
            hf(Family::Qwen2Moe, Role::SharedExpertGate, Some(0)),
            "model.layers.0.mlp.shared_expert_gate.weight"
        );
        assert_eq!(
            hf(Family::Qwen2Moe, Role::Gate, Some(0)),
            "model.layers.0.mlp.gate_proj.weight"
        );
        assert_eq!(hf_expert_name(Family::Qwen2Moe, Role::Up, 0, 0), None);
        assert_eq!(
            hf_name(Family::Llama, Role::Router, Some(0), Part::Weight),
            None
        );
        assert_eq!(
            hf_fused_expert_names(Family::Qwen3Moe, 3).unwrap().0,
            "model.layers.3.mlp.experts.gate_up_proj"
        );
        let gg = |f, r, l| gguf_name(f, r, l, Part::Weight).unwrap();
        assert_eq!(
            gg(Family::Mixtral, Role::ExpertGates, Some(0)),
            "blk.0.ffn_gate_exps.weight"
        );
        assert_eq!(
            gg(Family::Qwen2Moe, Role::SharedExpertGate, Some(1)),
            "blk.1.ffn_gate_inp_shexp.weight"
        );
    }
}
