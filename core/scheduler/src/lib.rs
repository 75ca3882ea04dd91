//! # kiln-scheduler
//!
//! Kiln's two scheduling state machines, pure and synchronous: the paged KV
//! [`BlockManager`] (reference counts, automatic prefix caching, LRU reuse of
//! freed cached blocks, copy-on-write for `n > 1`) and the continuous-batching
//! [`Scheduler`] (one token budget per step, chunked prefill, preemption by
//! recompute, FCFS). They talk through the plain-data messages of
//! `kiln_protocol::step`, so the engine can put each in its own actor; [`sim`]
//! drives them together synchronously for tests.
//!
//! Depends on `kiln-protocol` only: no I/O, no clocks, no threads.
//!
//! ```
//! use kiln_scheduler::sim::{Sim, SimConfig};
//! let mut sim = Sim::new(SimConfig::default());
//! sim.add(1, vec![1, 2, 3], 4, 1);
//! let finished = sim.run_to_completion(|_seq, history| (history.len() as u32, false));
//! assert_eq!(finished[&1][0].len(), 4);
//! ```

pub mod block_manager;
pub mod scheduler;
pub mod sim;

pub use block_manager::{BlockManager, BlockManagerConfig};
pub use scheduler::{NewRequest, Scheduler, SchedulerConfig};
