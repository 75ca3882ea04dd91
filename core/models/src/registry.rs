//! Architecture registry: which checkpoints the one Llama-family decoder
//! runs, keyed by `architectures[0]` of a `config.json` or by GGUF
//! `general.architecture`, and the flags that tell the members apart.
//!
//! Every supported architecture uses rotate-half (NeoX) RoPE on Hugging Face
//! row order; GGUF Q/K rows are un-permuted at load, so no variant needs the
//! interleaved-pair layout.

use crate::config::ModelConfig;

/// A member of the Llama family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 1–3, SmolLM, TinyLlama, ...: optional biases (`attention_bias`
    /// on q/k/v/o, `mlp_bias` on the MLP), full attention.
    Llama,
    /// Mistral: no biases, optional sliding-window attention.
    Mistral,
    /// Qwen2: q/k/v biases always, optional sliding window.
    Qwen2,
}

impl Family {
    /// Short name (`llama`, `mistral`, `qwen2`), also the GGUF architecture
    /// and the Hugging Face `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }

    /// The Hugging Face architecture name (`LlamaForCausalLM`).
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Every family, in the order messages list them.
pub const FAMILIES: [Family; 3] = [Family::Llama, Family::Mistral, Family::Qwen2];

/// Older spellings of architecture names that map to a family.
const HF_ALIASES: [(&str, Family); 1] = [("LLaMAForCausalLM", Family::Llama)];

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

/// The family of a GGUF `general.architecture` or HF `model_type` value.
pub fn family_of_name(name: &str) -> Option<Family> {
    FAMILIES.into_iter().find(|f| f.name() == name)
}

/// Flags that distinguish members of the Llama family for the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderVariant {
    /// Family name (`llama`, `mistral`, `qwen2`).
    pub family: &'static str,
    /// q/k/v projections carry biases.
    pub qkv_bias: bool,
    /// The output projection (`o_proj`) carries a bias (Llama with `attention_bias`).
    pub o_proj_bias: bool,
    /// gate/up/down projections carry biases (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Sliding-window attention span in tokens, on every layer.
    pub sliding_window: Option<usize>,
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
    FAMILIES.iter().map(|f| f.name()).collect()
}

/// The decoder variant of a family, with biases and window from `config`.
pub fn variant_for(family: Family, config: &ModelConfig) -> DecoderVariant {
    let (qkv_bias, o_proj_bias, mlp_bias) = match family {
        Family::Llama => (
            config.attention_bias,
            config.attention_bias,
            config.mlp_bias,
        ),
        Family::Mistral => (false, false, false),
        Family::Qwen2 => (config.attention_bias, false, false),
    };
    DecoderVariant {
        family: family.name(),
        qkv_bias,
        o_proj_bias,
        mlp_bias,
        sliding_window: match family {
            Family::Llama => None,
            Family::Mistral | Family::Qwen2 => config.sliding_window,
        },
    }
}

/// Resolve a config (from `config.json` or GGUF metadata) by its
/// `architecture`.
pub fn resolve(config: &ModelConfig) -> Result<DecoderVariant, UnsupportedArchitecture> {
    resolve_architecture(&config.architecture, config)
}

/// Resolve a Hugging Face architecture name with its config.
pub fn resolve_architecture(
    name: &str,
    config: &ModelConfig,
) -> Result<DecoderVariant, UnsupportedArchitecture> {
    let family = family_of_hf(name).ok_or_else(|| UnsupportedArchitecture {
        name: name.to_string(),
    })?;
    Ok(variant_for(family, config))
}

/// Resolve a GGUF `general.architecture` value alone (biases as the family
/// usually has them; prefer [`resolve`] on [`ModelConfig::from_gguf`], which
/// also looks at the tensors).
pub fn resolve_gguf_architecture(name: &str) -> Result<DecoderVariant, UnsupportedArchitecture> {
    let family = family_of_name(name).ok_or_else(|| UnsupportedArchitecture {
        name: name.to_string(),
    })?;
    Ok(DecoderVariant {
        family: family.name(),
        qkv_bias: family == Family::Qwen2,
        o_proj_bias: false,
        mlp_bias: false,
        sliding_window: None,
    })
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
        let msg = resolve_architecture("GPTNeoXForCausalLM", &c)
            .unwrap_err()
            .to_string();
        for part in [
            "`GPTNeoXForCausalLM`",
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "Qwen2ForCausalLM",
            "qwen2",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert!(resolve_gguf_architecture("falcon").is_err());
    }

    #[test]
    fn families_set_their_flags() {
        let llama = config(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],"attention_bias":true,"mlp_bias":true,"sliding_window":16,{BASE}}}"#
        ));
        let v = resolve(&llama).unwrap();
        assert_eq!(
            v,
            DecoderVariant {
                family: "llama",
                qkv_bias: true,
                o_proj_bias: true,
                mlp_bias: true,
                sliding_window: None,
            }
        );
        let qwen = config(&format!(
            r#"{{"architectures":["Qwen2ForCausalLM"],{BASE}}}"#
        ));
        let v = resolve(&qwen).unwrap();
        assert!(v.qkv_bias && !v.o_proj_bias && !v.mlp_bias);
        let mistral = config(&format!(
            r#"{{"architectures":["MistralForCausalLM"],"sliding_window":4096,{BASE}}}"#
        ));
        let v = resolve(&mistral).unwrap();
        assert_eq!(
            (v.family, v.qkv_bias, v.sliding_window),
            ("mistral", false, Some(4096))
        );
        assert_eq!(
            resolve_architecture("LLaMAForCausalLM", &llama)
                .unwrap()
                .family,
            "llama"
        );
        assert!(resolve_gguf_architecture("qwen2").unwrap().qkv_bias);
        assert!(!resolve_gguf_architecture("llama").unwrap().qkv_bias);
        assert_eq!(family_of_name("mistral"), Some(Family::Mistral));
        assert_eq!(family_of_hf("Qwen3ForCausalLM"), None);
    }
}
