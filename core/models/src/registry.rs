//! Architecture registry: the model families Kiln runs, keyed by
//! `architectures[0]` of a `config.json`, by its `model_type`, or by GGUF
//! `general.architecture`. What each family is made of lives in
//! [`crate::parts`]; this module only names them.

use crate::config::ModelConfig;
use crate::parts::{DecoderVariant, describe};

/// A model family: one set of parts and tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 1–3, SmolLM, TinyLlama, DeepSeek-LLM/-Coder (Llama layout).
    Llama,
    /// Mistral: sliding-window attention on every layer.
    Mistral,
    /// Mixtral: Mistral with a mixture of experts in every layer (top-k
    /// routing, renormalized weights).
    Mixtral,
    /// Qwen2 / Qwen2.5: q/k/v biases, optional windows from a layer on.
    Qwen2,
    /// Qwen1.5-MoE / Qwen2-MoE: Qwen2 with routed experts plus a shared
    /// expert behind a sigmoid gate.
    Qwen2Moe,
    /// Qwen3: per-head q/k RMSNorm, no biases.
    Qwen3,
    /// Qwen3-MoE: Qwen3 with routed experts.
    Qwen3Moe,
    /// Gemma: RMSNorm with `(1 + w)`, GeGLU, embeddings scaled by √hidden.
    Gemma,
    /// Gemma 2: Gemma plus sandwich norms, soft-capping, alternating windows.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 plus q/k norm, local RoPE base on windowed layers.
    Gemma3,
    /// Phi-3: fused qkv and gate/up projections.
    Phi3,
    /// Phi-1/1.5/2: LayerNorm, partial rotary, parallel attention and MLP.
    Phi2,
    /// GPT-NeoX / Pythia: LayerNorm, partial rotary, per-head fused qkv.
    GptNeoX,
    /// GPT-2: learned positions, Conv1D (transposed) weights.
    Gpt2,
    /// OPT: learned positions with an offset of 2, ReLU MLP.
    Opt,
    /// StarCoder2: LayerNorm, biases, GELU MLP, sliding window.
    Starcoder2,
    /// OLMo 2: norms after attention and MLP, q/k norm over all heads.
    Olmo2,
    /// Granite: Llama with embedding, residual, attention and logit multipliers.
    Granite,
    /// BERT encoders (sentence-transformers models such as all-MiniLM):
    /// bidirectional attention, learned positions, norms after each
    /// residual add, GELU; embeddings only.
    Bert,
}

/// Every family, in the order messages list them.
pub const FAMILIES: [Family; 19] = [
    Family::Llama,
    Family::Mistral,
    Family::Mixtral,
    Family::Qwen2,
    Family::Qwen2Moe,
    Family::Qwen3,
    Family::Qwen3Moe,
    Family::Gemma,
    Family::Gemma2,
    Family::Gemma3,
    Family::Phi3,
    Family::Phi2,
    Family::GptNeoX,
    Family::Gpt2,
    Family::Opt,
    Family::Starcoder2,
    Family::Olmo2,
    Family::Granite,
    Family::Bert,
];

impl Family {
    /// The Hugging Face `model_type` (`llama`, `gemma3_text`, `gpt_neox`).
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Mixtral => "mixtral",
            Family::Qwen2 => "qwen2",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Gemma => "gemma",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3_text",
            Family::Phi3 => "phi3",
            Family::Phi2 => "phi",
            Family::GptNeoX => "gpt_neox",
            Family::Gpt2 => "gpt2",
            Family::Opt => "opt",
            Family::Starcoder2 => "starcoder2",
            Family::Olmo2 => "olmo2",
            Family::Granite => "granite",
            Family::Bert => "bert",
        }
    }

    /// Whether the family only embeds: it has no LM head and attends both ways.
    pub fn is_encoder(self) -> bool {
        self == Family::Bert
    }

    /// Short name for logs and Ollama's `details.family`: the GGUF
    /// architecture where llama.cpp has one, else the `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mistral => "mistral",
            Family::Mixtral => "mixtral",
            other => other.gguf_architecture().unwrap_or(other.model_type()),
        }
    }

    /// The GGUF `general.architecture` llama.cpp's converter writes (`None`
    /// for OPT, which it does not convert). Mistral and Mixtral convert to
    /// `llama` (Mixtral's with `llama.expert_count`).
    pub fn gguf_architecture(self) -> Option<&'static str> {
        Some(match self {
            Family::Llama | Family::Mistral | Family::Mixtral => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen2Moe => "qwen2moe",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3moe",
            Family::Gemma => "gemma",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
            Family::Phi2 => "phi2",
            Family::GptNeoX => "gptneox",
            Family::Gpt2 => "gpt2",
            Family::Bert => "bert",
            Family::Opt => return None,
            Family::Starcoder2 => "starcoder2",
            Family::Olmo2 => "olmo2",
            Family::Granite => "granite",
        })
    }

    /// The Hugging Face architecture name (`LlamaForCausalLM`).
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Mixtral => "MixtralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen2Moe => "Qwen2MoeForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Qwen3Moe => "Qwen3MoeForCausalLM",
            Family::Gemma => "GemmaForCausalLM",
            Family::Gemma2 => "Gemma2ForCausalLM",
            Family::Gemma3 => "Gemma3ForCausalLM",
            Family::Phi3 => "Phi3ForCausalLM",
            Family::Phi2 => "PhiForCausalLM",
            Family::GptNeoX => "GPTNeoXForCausalLM",
            Family::Gpt2 => "GPT2LMHeadModel",
            Family::Opt => "OPTForCausalLM",
            Family::Starcoder2 => "Starcoder2ForCausalLM",
            Family::Olmo2 => "Olmo2ForCausalLM",
            Family::Granite => "GraniteForCausalLM",
            Family::Bert => "BertModel",
        }
    }
}

/// Older or alternative spellings of architecture names.
const HF_ALIASES: [(&str, Family); 2] = [
    ("LLaMAForCausalLM", Family::Llama),
    ("GPT2Model", Family::Gpt2),
];

/// The family of a Hugging Face architecture name (`architectures[0]`).
pub fn family_of_hf(architecture: &str) -> Option<Family> {
    FAMILIES
        .into_iter()
        .find(|f| f.hf_architecture() == architecture)
        .or_else(|| {
            HF_ALIASES
                .iter()
                .find(|(a, _)| *a == architecture)
                .map(|(_, f)| *f)
        })
}

/// The family of a GGUF `general.architecture` value (`llama` is Llama).
pub fn family_of_gguf(name: &str) -> Option<Family> {
    FAMILIES
        .into_iter()
        .find(|f| f.gguf_architecture() == Some(name))
}

/// The family of a GGUF file's `general.architecture`, knowing whether it
/// declares experts (`{arch}.expert_count`): a `llama` file with experts is
/// Mixtral.
pub fn family_of_gguf_experts(name: &str, has_experts: bool) -> Option<Family> {
    match family_of_gguf(name) {
        Some(Family::Llama) if has_experts => Some(Family::Mixtral),
        other => other,
    }
}

/// The family of a Hugging Face `model_type` or GGUF architecture value.
pub fn family_of_name(name: &str) -> Option<Family> {
    FAMILIES
        .into_iter()
        .find(|f| f.model_type() == name)
        .or_else(|| family_of_gguf(name))
}

/// The error for a model Kiln cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported architecture `{name}`; supported: {} (GGUF: {})", supported().join(", "), supported_gguf().join(", "))]
pub struct UnsupportedArchitecture {
    /// What the model declared.
    pub name: String,
}

/// Hugging Face architecture names Kiln runs.
pub fn supported() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.hf_architecture()).collect()
}

/// GGUF `general.architecture` values Kiln runs.
pub fn supported_gguf() -> Vec<&'static str> {
    let mut v: Vec<&str> = FAMILIES
        .iter()
        .filter_map(|f| f.gguf_architecture())
        .collect();
    v.dedup();
    v
}

/// Why a config cannot become a decoder: an unknown architecture or an
/// inconsistent field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// No family has this name.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedArchitecture),
    /// The family is known but the config cannot be run as given.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Resolve a config (from `config.json` or GGUF metadata) by its
/// `architecture` into the parts its decoder is built from.
pub fn resolve(config: &ModelConfig) -> Result<DecoderVariant, ResolveError> {
    resolve_architecture(&config.architecture, config)
}

/// Resolve a Hugging Face architecture name with its config.
pub fn resolve_architecture(
    name: &str,
    config: &ModelConfig,
) -> Result<DecoderVariant, ResolveError> {
    let family = family_of_hf(name).ok_or_else(|| UnsupportedArchitecture {
        name: name.to_string(),
    })?;
    Ok(describe(family, config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::from_hf_json(json).unwrap()
    }

    const BASE: &str = r#""hidden_size":8,"num_attention_heads":2,"intermediate_size":8,"num_hidden_layers":1,"vocab_size":8"#;

    #[test]
    fn unknown_architectures_list_the_supported_ones() {
        let c = config(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],{BASE}}}"#
        ));
        let msg = resolve_architecture("FalconForCausalLM", &c)
            .unwrap_err()
            .to_string();
        for part in [
            "`FalconForCausalLM`",
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "Qwen2ForCausalLM",
            "Gemma3ForCausalLM",
            "GPTNeoXForCausalLM",
            "qwen2",
            "gemma3",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn names_round_trip() {
        for f in FAMILIES {
            assert_eq!(family_of_hf(f.hf_architecture()), Some(f));
            assert_eq!(family_of_name(f.model_type()), Some(f));
            if let Some(g) = f.gguf_architecture()
                && !matches!(f, Family::Mistral | Family::Mixtral)
            {
                assert_eq!(family_of_gguf(g), Some(f));
                assert_eq!(family_of_gguf_experts(g, false), Some(f));
            }
        }
        assert_eq!(family_of_gguf("llama"), Some(Family::Llama));
        assert_eq!(family_of_gguf_experts("llama", true), Some(Family::Mixtral));
        assert_eq!(
            family_of_gguf_experts("qwen3moe", true),
            Some(Family::Qwen3Moe)
        );
        assert_eq!(Family::Mixtral.name(), "mixtral");
        assert_eq!(Family::Qwen2Moe.name(), "qwen2moe");
        assert_eq!(family_of_hf("LLaMAForCausalLM"), Some(Family::Llama));
        assert_eq!(family_of_hf("FalconForCausalLM"), None);
        assert_eq!(Family::Gemma3.name(), "gemma3");
        assert_eq!(Family::Mistral.name(), "mistral");
        assert_eq!(Family::Opt.name(), "opt");
    }
}
