//! # kiln (the command)
//!
//! The `kiln` command line: `serve` (vLLM-compatible flags onto an
//! [`kiln_engine::EngineConfig`]), `pull` and `list` (the model cache, via
//! `kiln-hub`), `plan` (deployment memory math from a model's own config),
//! `generate` (offline batches, JSONL out), `bench serve` (a latency and
//! throughput client for any OpenAI-compatible server) and `backend check`
//! (the conformance suite on any backend plugin).
//!
//! This crate is the top of the dependency graph: it may depend on every
//! Kiln crate, and nothing depends on it. Flag parsing and the pure parts
//! (plan math, bench statistics, input formats) are unit-tested here; the
//! binary in `main.rs` only parses, sets up logging and dispatches.
//!
//! ```
//! use clap::Parser;
//! let cli = kiln::cli::Cli::try_parse_from(["kiln", "serve", "model.gguf", "--port", "9000"]).unwrap();
//! match cli.command {
//!     kiln::cli::Command::Serve(args) => assert_eq!(args.port, 9000),
//!     _ => unreachable!(),
//! }
//! ```

pub mod bench;
pub mod cli;
pub mod commands;
pub mod frontends;
pub mod logging;
pub mod model_store;
pub mod plan;
pub mod startup;
pub mod units;
