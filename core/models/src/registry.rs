//! Architecture registry: `architectures[0]` (or GGUF `general.architecture`)
//! to the decoder variant that runs it.

use crate::config::ModelConfig;

/// Flags that distinguish members of the Llama family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderVariant {
    /// Family name (`llama`, `mistral`, `qwen2`).
    pub family: &'static str,
    /// q/k/v projections carry biases.
    pub qkv_bias: bool,
    /// Sliding-window attention.
    pub sliding_window: Option<usize>,
}

/// The unsupported-architecture error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported architecture `{name}`; supported: {}", supported().join(", "))]
pub struct UnsupportedArchitecture {
    /// What the model declared.
    pub name: String,
}

const HF: [(&str, &str); 4] = [
    ("LlamaForCausalLM", "llama"),
    ("MistralForCausalLM", "mistral"),
    ("Qwen2ForCausalLM", "qwen2"),
    ("LLaMAForCausalLM", "llama"),
];

/// Architectures Kiln runs.
pub fn supported() -> Vec<&'static str> {
    HF.iter().take(3).map(|(a, _)| *a).collect()
}

/// Resolve an HF architecture name with its config.
pub fn resolve_architecture(
    name: &str,
    config: &ModelConfig,
) -> Result<DecoderVariant, UnsupportedArchitecture> {
    let family = HF
        .iter()
        .find(|(a, _)| *a == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| UnsupportedArchitecture {
            name: name.to_string(),
        })?;
    Ok(DecoderVariant {
        family,
        qkv_bias: config.attention_bias,
        sliding_window: config.sliding_window,
    })
}

/// Resolve a GGUF `general.architecture` value.
pub fn resolve_gguf_architecture(name: &str) -> Result<DecoderVariant, UnsupportedArchitecture> {
    let family = match name {
        "llama" => "llama",
        "mistral" => "mistral",
        "qwen2" => "qwen2",
        other => {
            return Err(UnsupportedArchitecture {
                name: format!("{other} (GGUF)"),
            });
        }
    };
    Ok(DecoderVariant {
        family,
        qkv_bias: family == "qwen2",
        sliding_window: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architectures_list_the_supported_ones() {
        let c = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8,"num_attention_heads":2,"intermediate_size":8,
              "num_hidden_layers":1,"vocab_size":8}"#,
        )
        .unwrap();
        let e = resolve_architecture("GPTNeoXForCausalLM", &c).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("GPTNeoXForCausalLM") && msg.contains("LlamaForCausalLM"),
            "{msg}"
        );
        assert_eq!(
            resolve_architecture("MistralForCausalLM", &c)
                .unwrap()
                .family,
            "mistral"
        );
        assert!(resolve_gguf_architecture("qwen2").unwrap().qkv_bias);
        assert!(resolve_gguf_architecture("falcon").is_err());
    }
}
