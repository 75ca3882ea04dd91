//! # kiln-models
//!
//! What a model is: its config ([`config::ModelConfig`], from a Hugging Face
//! `config.json` or GGUF metadata), its family ([`registry`]: which
//! architectures Kiln runs) and the parts its decoder is built from
//! ([`parts`]), its tensors' names by role in either format ([`names`],
//! [`gguf_weights`]), where its weights come from ([`weights`]:
//! memory-mapped safetensors and GGUF files, a GGUF writer, the reference
//! dequantizer), an f32 converter for GGUF files ([`convert`]), its RoPE
//! tables ([`rope`]), and the one decoder every family runs, written as
//! backend operations ([`decoder`]).
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
pub mod decoder;
pub mod gguf_weights;
pub mod names;
pub mod parts;
pub mod registry;
pub mod rope;
pub mod weights;
