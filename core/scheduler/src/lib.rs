//! # kiln-scheduler
//!
//! Kiln's two scheduling state machines, pure, synchronous and deterministic:
//! - [`BlockManager`]: the paged KV block pool — reference counts, automatic
//!   prefix caching with exact (collision-proof) hits, LRU reuse of freed
//!   cached blocks, copy-on-write for the forks of `n > 1` requests, and
//!   the return of blocks that fell behind a model's sliding window
//!   ([`window`]);
//! - [`Scheduler`]: continuous batching — one token budget per step shared by
//!   prefill chunks and decodes, chunked prefill, preemption by recompute of
//!   the newest sequences, first-come-first-served admission, failure instead
//!   of livelock for requests that can never run.
//!
//! They talk only through the plain-data messages of `kiln_protocol::step`
//! (one [`AllocateForStep`](kiln_protocol::step::AllocateForStep) per step),
//! so the engine can put each in its own actor. [`sim`] drives them together
//! with stand-ins for the model runner and the sampler, checking invariants
//! at every step; this crate's tests and the engine's use it.
//!
//! Depends on `kiln-protocol` only: no I/O, no async, no threads, no clocks,
//! no randomness. It must never depend on the engine, a backend or a model.
//!
//! ```
//! use kiln_scheduler::{BlockManager, BlockManagerConfig, NewRequest, Scheduler, SchedulerConfig};
//! use kiln_protocol::step::{SampledToken, StepOutput};
//! use kiln_protocol::FinishReason;
//!
//! let mut scheduler = Scheduler::new(SchedulerConfig {
//!     max_num_batched_tokens: 8,
//!     max_num_seqs: 4,
//!     max_model_len: 64,
//!     block_size: 4,
//!     num_blocks: 16,
//!     enable_prefix_caching: true,
//!     sliding_window: None,
//! });
//! let mut blocks = BlockManager::new(BlockManagerConfig {
//!     num_blocks: 16,
//!     block_size: 4,
//!     enable_prefix_caching: true,
//!     sliding_window: None,
//! });
//! scheduler.add_request(NewRequest {
//!     request_id: 1,
//!     seq_ids: vec![7],
//!     prompt_token_ids: (0..10).collect(),
//!     max_tokens: 2,
//!     arrival: 0,
//!     embed: false,
//!     prompt_logprobs: false,
//! });
//! // Step 1: a chunk of 8 prompt tokens (the budget), nothing sampled.
//! let msg = scheduler.begin_step().unwrap();
//! let plan = scheduler.finish_step(blocks.allocate_for_step(msg));
//! assert_eq!((plan.seqs[0].token_ids.len(), plan.seqs[0].num_samples), (8, 0));
//! scheduler.on_step_output(StepOutput { step_id: plan.step_id, tokens: vec![] });
//! // Step 2: the last 2 prompt tokens, then one sample.
//! let msg = scheduler.begin_step().unwrap();
//! let plan = scheduler.finish_step(blocks.allocate_for_step(msg));
//! assert_eq!((plan.seqs[0].num_computed_tokens, plan.seqs[0].num_samples), (8, 1));
//! scheduler.on_step_output(StepOutput {
//!     step_id: plan.step_id,
//!     tokens: vec![SampledToken { seq_id: 7, token_id: 42, finished: Some(FinishReason::Stop) }],
//! });
//! // Step 3 only returns the blocks; then the scheduler is idle.
//! let msg = scheduler.begin_step().unwrap();
//! assert_eq!(msg.releases, vec![7]);
//! blocks.allocate_for_step(msg);
//! assert!(scheduler.begin_step().is_none());
//! assert_eq!(blocks.num_free_blocks(), 16);
//! ```

pub mod block_manager;
pub mod scheduler;
pub mod sim;
pub mod window;

pub use block_manager::{BlockManager, BlockManagerConfig};
pub use scheduler::{NewRequest, Scheduler, SchedulerConfig};
