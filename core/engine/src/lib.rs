//! # kiln-engine
//!
//! Kiln's microkernel. Four actix actors — scheduler, block manager, sampler
//! and model runner — exchange the plain-data step messages of
//! `kiln_protocol::step`; each is a thin shell around a pure core
//! (`kiln-scheduler`, `kiln-sampler`, [`runner::ModelRunner`]). [`Engine`]
//! starts them from an [`EngineConfig`] and hands out an
//! [`EngineHandle`](kiln_engine_api::EngineHandle); [`LLM`] is the offline API.
//!
//! Depends on the pure crates, `kiln-models`, `kiln-tokenizer` and
//! `kiln-plugin-host`; never on frontends or on a particular backend.
//!
//! ```no_run
//! use kiln_engine::{Engine, EngineConfig};
//! let engine = Engine::start(EngineConfig::new("model.gguf")).unwrap();
//! println!("{}", engine.summary().kv.log_line());
//! ```

pub mod actors;
pub mod config;
pub mod defaults;
pub mod device_sampling;
pub mod embedding_config;
pub mod engine;
pub mod inputs;
pub mod llm;
pub mod memory;
pub mod model;
pub mod pooling;
pub mod runner;
pub mod service;

pub use config::{BackendChoice, DTypeChoice, EngineConfig};
pub use engine::{Engine, LoadedModel, StartError, StartHooks, StartupSummary, load_model};
pub use llm::{CompletionOutput, LLM, RequestOutput};
