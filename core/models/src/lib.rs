//! # kiln-models
//!
//! What a model is: its config ([`config::ModelConfig`], from a Hugging Face
//! `config.json` or GGUF metadata) and architecture ([`registry`]: which
//! Llama-family members Kiln runs, and their flags), where its weights come
//! from ([`weights`]: memory-mapped safetensors and GGUF files under Hugging
//! Face names, a GGUF writer, the reference dequantizer), an f32 converter
//! for GGUF files ([`convert`]), its RoPE tables ([`rope`]), and the
//! Llama-family decoder written as backend operations ([`llama`]).
//!
//! Depends on `kiln-plugin-abi` (the safe device wrapper) and file-format
//! crates; never on the engine, actors, async runtimes, frontends, the
//! plugin host or a particular backend.
//!
//! ```
//! use kiln_models::config::ModelConfig;
//! use kiln_models::registry::resolve;
//! let c = ModelConfig::from_hf_json(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,
//!   "num_attention_heads":4,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":256}"#).unwrap();
//! assert_eq!(c.head_dim, 16);
//! assert_eq!(resolve(&c).unwrap().family, "llama");
//! ```

pub mod config;
pub mod convert;
pub mod llama;
pub mod registry;
pub mod rope;
pub mod weights;
