//! # kiln-models
//!
//! What a model is: its config ([`config::ModelConfig`]) and architecture
//! ([`registry`]), where its weights come from ([`weights`]: safetensors
//! directories and GGUF files, with a reference dequantizer), its RoPE tables
//! ([`rope`]), and the Llama-family decoder written as backend operations
//! ([`llama`]).
//!
//! Depends on `kiln-plugin-abi` (the safe device wrapper) and file-format
//! crates; never on the engine, actors, frontends or a particular backend.
//!
//! ```
//! use kiln_models::config::ModelConfig;
//! let c = ModelConfig::from_hf_json(r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,
//!   "num_attention_heads":4,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":256}"#).unwrap();
//! assert_eq!(c.head_dim, 16);
//! ```

pub mod config;
pub mod convert;
pub mod llama;
pub mod registry;
pub mod rope;
pub mod weights;
