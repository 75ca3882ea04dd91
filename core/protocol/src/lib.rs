//! # kiln-protocol
//!
//! The plain-data vocabulary every part of Kiln speaks: what a client asks for
//! ([`GenerateRequest`], [`SamplingParams`], [`StoppingCriteria`]), what the
//! scheduler, block manager, model runner and sampler tell each other once per
//! step ([`step`]), and what flows back to clients ([`TokenEvent`]) and to
//! observers ([`EngineEvent`]).
//!
//! Every type here is conceptually serializable: no device handles, no
//! channels, no tensors. This crate depends on `serde` and `thiserror` only and
//! must never depend on anything engine-, backend- or wire-format-specific.
//!
//! ```
//! use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};
//! let req = GenerateRequest {
//!     prompt: PromptInput::Text("Hello".into()),
//!     sampling: SamplingParams::greedy(),
//!     stopping: StoppingCriteria { max_tokens: Some(8), ..Default::default() },
//!     ..Default::default()
//! };
//! assert!(req.sampling.validate().is_ok());
//! ```
#![deny(missing_docs)]

mod embed;
mod error;
mod events;
mod request;
pub mod step;
mod structured;
mod vocab;
mod weights;

pub use embed::{EmbedRequest, Embedding, EmbeddingSpec, Pooling, finish_embedding};
pub use error::EngineError;
pub use events::{
    EngineEvent, FinishReason, Finished, GeneratedToken, PromptToken, RequestMetrics, StepStats,
    StopReason, TokenEvent, TopLogprob, Usage,
};
pub use request::{
    ChatMessage, GenerateRequest, MAX_N, MAX_TOP_LOGPROBS, PromptInput, SamplingParams,
    StoppingCriteria,
};
pub use structured::StructuredOutput;
pub use vocab::GgufTokenizerSpec;
pub use weights::FormatBytes;

/// Engine-assigned identifier of one client request (which may own `n` sequences).
pub type RequestId = u64;
/// Engine-assigned identifier of one generated sequence.
pub type SeqId = u64;
/// Index of one block in the paged KV cache.
pub type BlockId = u32;
/// A hole in a block table: the block that held these positions fell out of
/// the model's sliding window and went back to the pool. Holes are always a
/// prefix of the table, and no attention row can see their positions.
pub const NO_BLOCK: BlockId = BlockId::MAX;
/// A token id in the model's vocabulary.
pub type TokenId = u32;
