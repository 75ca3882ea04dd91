//! A synchronous simulator for tests: [`Scheduler`] and [`BlockManager`]
//! wired together with stand-ins for the model runner and the sampler.
//!
//! The runner stand-in keeps block tables from the plans' diffs exactly like
//! the engine's runner, performs the block copies, and writes into each KV
//! slot a fingerprint of the token prefix ending there. Every step it panics
//! when an invariant breaks:
//! - the block manager's own invariants, and the scheduler's copy of every
//!   running table equals the block manager's;
//! - no `Extend` is denied (the scheduler's block accounting is exact);
//! - the token budget and `max_num_seqs` hold, and the step makes progress
//!   (computes a token, drops a sequence or fails a request);
//! - every scheduled sequence computes exactly its own next known tokens, at
//!   positions below `max_model_len`, its runner table equals the block
//!   manager's, and the KV it attends to (positions `0..num_computed_tokens`,
//!   or with a sliding window the positions its first row sees, prefix-cache
//!   hits and fork-shared blocks included) holds its own prefix;
//! - with a sliding window, no sequence holds more than
//!   [`max_blocks_per_sequence`] blocks, holes are a prefix of each table and
//!   no position a scheduled row sees is in one;
//! - samples are drawn exactly when a chunk reaches the end of the known
//!   tokens, `n` at once for the first sample of an `n > 1` request;
//! - an embedding request is computed whole in one step, never sampled,
//!   and ends with that step (its output is an empty list);
//! - at idle, every block is free and the runner holds no table.
//!
//! The sampler stand-in asks a closure for each token:
//! `sample(seq, history) -> (token, stop)`, where `history` is the sequence's
//! known tokens (for the forks of an `n > 1` request, those of the first
//! sequence). A sequence also ends after `max_tokens` tokens.
//!
//! ```
//! use kiln_scheduler::sim::{Sim, SimConfig};
//! let mut sim = Sim::new(SimConfig::default());
//! sim.add(1, vec![1, 2, 3], 4, 2);
//! let out = sim.run_to_completion(|seq, history| (history.len() as u32 + seq as u32, false));
//! assert_eq!(out[&1].len(), 2);
//! assert!(out[&1].iter().all(|o| o.len() == 4));
//! ```

use std::collections::HashMap;

use kiln_protocol::step::{
    AllocateForStep, DemandKind, SampledToken, StepAllocation, StepOutput, StepPlan,
};
use kiln_protocol::{BlockId, EngineError, FinishReason, RequestId, SeqId, TokenId};

use crate::block_manager::{BlockManager, BlockManagerConfig};
use crate::scheduler::{NewRequest, Scheduler, SchedulerConfig};
use crate::window::max_blocks_per_sequence;
use kiln_protocol::NO_BLOCK;

/// Simulator settings (shared by the scheduler and the block manager).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// KV blocks.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Token budget per step.
    pub max_num_batched_tokens: usize,
    /// Sequences per step.
    pub max_num_seqs: usize,
    /// Context length.
    pub max_model_len: usize,
    pub enable_prefix_caching: bool,
    /// Every layer's sliding window (blocks behind it are freed).
    pub sliding_window: Option<usize>,
}

impl SimConfig {
    /// First position a row at `position` sees.
    fn first_key(&self, position: usize) -> usize {
        self.sliding_window
            .map_or(0, |w| (position + 1).saturating_sub(w))
    }

    /// The most blocks a sequence may hold.
    fn max_blocks_per_sequence(&self) -> usize {
        max_blocks_per_sequence(
            self.max_model_len,
            self.block_size,
            self.sliding_window,
            self.max_num_batched_tokens,
        )
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            num_blocks: 64,
            block_size: 4,
            max_num_batched_tokens: 32,
            max_num_seqs: 8,
            max_model_len: 128,
            enable_prefix_caching: true,
            sliding_window: None,
        }
    }
}

/// The stand-in for model and sampler: the next token after a history, and
/// whether it ends the sequence.
pub type SampleFn<'a> = dyn FnMut(SeqId, &[TokenId]) -> (TokenId, bool) + 'a;

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The message sent to the block manager.
    pub message: AllocateForStep,
    /// The block manager's answer.
    pub allocation: StepAllocation,
    /// The plan that ran.
    pub plan: StepPlan,
    /// The sampled tokens.
    pub output: StepOutput,
}

#[derive(Debug, Clone)]
struct SimSeq {
    request: RequestId,
    /// Prompt plus sampled tokens.
    known: Vec<TokenId>,
    /// [known.len()] fingerprint of `known[..=i]`.
    prints: Vec<u64>,
    generated: Vec<TokenId>,
    /// Tokens the runner has computed (valid while it holds a table).
    computed: usize,
    done: bool,
    /// Its request was aborted or failed.
    gone: bool,
    /// Drawn as a fork and not yet computed: may start at its parent's KV.
    fork_pending: bool,
}

impl SimSeq {
    fn push(&mut self, t: TokenId) {
        let prev = self.prints.last().copied().unwrap_or(0x6b69_6c6e);
        self.prints.push(fingerprint(prev, t));
        self.known.push(t);
    }
}

/// 64-bit fingerprint of a prefix, chained one token at a time.
fn fingerprint(prev: u64, t: TokenId) -> u64 {
    let mut h = (prev ^ u64::from(t)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
}

#[derive(Debug, Clone)]
struct SimRequest {
    seq_ids: Vec<SeqId>,
    max_tokens: usize,
    /// The first sequence drew its `n` samples.
    forked: bool,
    embed: bool,
    /// With `prompt_logprobs`: which prompt positions after the first have
    /// had their predicting row returned.
    prompt_rows: Option<Vec<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generate,
    PromptLogprobs,
    Embed,
}

pub struct Sim {
    /// The scheduler under test.
    pub scheduler: Scheduler,
    /// The block manager under test.
    pub blocks: BlockManager,
    config: SimConfig,
    seqs: HashMap<SeqId, SimSeq>,
    requests: HashMap<RequestId, SimRequest>,
    /// Runner view: block tables built from plan diffs.
    tables: HashMap<SeqId, Vec<BlockId>>,
    /// [num_blocks × block_size] prefix fingerprint per KV slot (0 = never written).
    kv: Vec<u64>,
    finished: HashMap<RequestId, Vec<Vec<TokenId>>>,
    failed: HashMap<RequestId, EngineError>,
    /// Aborts to apply while the next step's allocation is in flight.
    aborts_in_flight: Vec<RequestId>,
    arrivals: u64,
    steps: u64,
    /// Step number at which each request was first scheduled.
    pub first_scheduled: HashMap<RequestId, u64>,
}

impl Sim {
    /// A new simulator.
    pub fn new(config: SimConfig) -> Sim {
        Sim {
            scheduler: Scheduler::new(SchedulerConfig {
                max_num_batched_tokens: config.max_num_batched_tokens,
                max_num_seqs: config.max_num_seqs,
                max_model_len: config.max_model_len,
                block_size: config.block_size,
                num_blocks: config.num_blocks,
                enable_prefix_caching: config.enable_prefix_caching,
                sliding_window: config.sliding_window,
            }),
            blocks: BlockManager::new(BlockManagerConfig {
                num_blocks: config.num_blocks,
                block_size: config.block_size,
                enable_prefix_caching: config.enable_prefix_caching,
                sliding_window: config.sliding_window,
            }),
            config,
            seqs: HashMap::new(),
            requests: HashMap::new(),
            tables: HashMap::new(),
            kv: vec![0; config.num_blocks * config.block_size],
            finished: HashMap::new(),
            failed: HashMap::new(),
            aborts_in_flight: Vec::new(),
            arrivals: 0,
            steps: 0,
            first_scheduled: HashMap::new(),
        }
    }

    /// Queue a request with `n` sequences (ids `request × 1000 + i`).
    pub fn add(&mut self, request: RequestId, prompt: Vec<TokenId>, max_tokens: usize, n: usize) {
        self.add_request(request, prompt, max_tokens, n, Kind::Generate);
    }

    /// [`add`](Self::add) with `prompt_logprobs`: the simulator checks that
    /// every prompt position after the first gets its predicting row back.
    pub fn add_with_prompt_logprobs(
        &mut self,
        request: RequestId,
        prompt: Vec<TokenId>,
        max_tokens: usize,
        n: usize,
    ) {
        self.add_request(request, prompt, max_tokens, n, Kind::PromptLogprobs);
    }

    /// Queue an embedding request (one sequence, id `request × 1000`).
    pub fn add_embedding(&mut self, request: RequestId, prompt: Vec<TokenId>) {
        self.add_request(request, prompt, 0, 1, Kind::Embed);
    }

    fn add_request(
        &mut self,
        request: RequestId,
        prompt: Vec<TokenId>,
        max_tokens: usize,
        n: usize,
        kind: Kind,
    ) {
        let embed = kind == Kind::Embed;
        let prompt_logprobs = kind == Kind::PromptLogprobs;
        let ids: Vec<SeqId> = (0..n as u64).map(|i| request * 1000 + i).collect();
        for &id in &ids {
            let mut s = SimSeq {
                request,
                known: Vec::new(),
                prints: Vec::new(),
                generated: Vec::new(),
                computed: 0,
                done: false,
                gone: false,
                fork_pending: false,
            };
            for &t in &prompt {
                s.push(t);
            }
            self.seqs.insert(id, s);
        }
        self.requests.insert(
            request,
            SimRequest {
                seq_ids: ids.clone(),
                max_tokens,
                forked: false,
                embed,
                prompt_rows: prompt_logprobs.then(|| vec![false; prompt.len().saturating_sub(1)]),
            },
        );
        self.arrivals += 1;
        self.scheduler.add_request(NewRequest {
            request_id: request,
            seq_ids: ids,
            prompt_token_ids: prompt,
            max_tokens: max_tokens as u32,
            arrival: self.arrivals,
            embed,
            prompt_logprobs,
        });
        self.collect_rejected();
    }

    /// Abort a request (its sequences may still be computed once, never sampled).
    pub fn abort(&mut self, request: RequestId) {
        self.scheduler.abort(request);
        self.forget(request);
    }

    /// Abort a request during the next step, between the block manager's
    /// answer and [`Scheduler::finish_step`] (as an actor-based engine may).
    pub fn abort_in_flight(&mut self, request: RequestId) {
        self.aborts_in_flight.push(request);
    }

    /// Requests neither finished, aborted nor failed.
    pub fn active(&self) -> usize {
        self.requests.len()
    }

    /// Requests the scheduler rejected or failed, with the error.
    pub fn failed(&self) -> &HashMap<RequestId, EngineError> {
        &self.failed
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn forget(&mut self, request: RequestId) {
        if let Some(r) = self.requests.remove(&request) {
            for id in r.seq_ids {
                if let Some(s) = self.seqs.get_mut(&id) {
                    s.gone = true;
                }
            }
        }
    }

    fn collect_rejected(&mut self) {
        for (rid, e) in self.scheduler.take_rejected() {
            self.forget(rid);
            self.failed.insert(rid, e);
        }
    }

    /// One step; `None` when the scheduler is idle.
    pub fn step(&mut self, sample: &mut SampleFn<'_>) -> Option<StepReport> {
        let message = self.scheduler.begin_step()?;
        self.steps += 1;
        let failed_before = self.failed.len();
        self.collect_rejected();
        let allocation = self.blocks.allocate_for_step(message.clone());
        self.check_allocation(&message, &allocation);
        let aborted_in_flight = !self.aborts_in_flight.is_empty();
        for rid in std::mem::take(&mut self.aborts_in_flight) {
            self.abort(rid);
        }
        let plan = self.scheduler.finish_step(allocation.clone());
        self.collect_rejected();
        self.check_mirror();
        self.check_limits(
            &plan,
            aborted_in_flight || self.failed.len() > failed_before,
        );
        self.run_plan(&plan);
        let output = self.sample(&plan, sample);
        self.scheduler.on_step_output(output.clone());
        self.collect_rejected();
        Some(StepReport {
            message,
            allocation,
            plan,
            output,
        })
    }

    fn check_allocation(&self, msg: &AllocateForStep, alloc: &StepAllocation) {
        if let Err(e) = self.blocks.check_invariants() {
            panic!("block manager invariant broken at step {}: {e}", self.steps);
        }
        let cap = self.config.max_blocks_per_sequence();
        for id in self.blocks.sequences() {
            let held = self.blocks.num_resident_blocks(id).unwrap_or(0);
            assert!(
                held <= cap,
                "step {}: seq {id} holds {held} blocks, more than {cap}",
                self.steps
            );
        }
        for (d, g) in msg.demands.iter().zip(&alloc.grants) {
            if matches!(d.kind, DemandKind::Extend { .. }) {
                assert!(
                    g.granted.is_some(),
                    "step {}: extension of seq {} denied; the scheduler's accounting is off",
                    self.steps,
                    d.seq_id
                );
            }
        }
    }

    /// The scheduler's copy of each running table equals the block
    /// manager's, and every sequence the block manager holds is running or
    /// queued for release (nothing leaks).
    fn check_mirror(&self) {
        for id in self.blocks.sequences() {
            assert!(
                self.scheduler.block_table(id).is_some()
                    || self.scheduler.queued_releases().contains(&id),
                "step {}: the block manager holds seq {id}, which the scheduler forgot",
                self.steps
            );
        }
        for (&id, s) in &self.seqs {
            if s.gone || s.done {
                continue;
            }
            if let Some(t) = self.scheduler.block_table(id) {
                assert_eq!(
                    Some(t),
                    self.blocks.block_table(id),
                    "seq {id}: scheduler and block manager disagree on its table"
                );
            }
        }
    }

    /// `external`: a request was failed or aborted during the step.
    fn check_limits(&self, plan: &StepPlan, external: bool) {
        let tokens = plan.num_batched_tokens();
        assert!(
            tokens <= self.config.max_num_batched_tokens,
            "token budget exceeded: {tokens}"
        );
        assert!(
            plan.seqs.len() <= self.config.max_num_seqs,
            "too many sequences: {}",
            plan.seqs.len()
        );
        assert!(
            tokens > 0 || !plan.dropped.is_empty() || external,
            "step {}: no progress (nothing computed, dropped, failed or aborted)",
            self.steps
        );
    }

    fn slot(&self, table: &[BlockId], pos: usize) -> usize {
        let bs = self.config.block_size;
        table[pos / bs] as usize * bs + pos % bs
    }

    /// The runner stand-in: tables, copies, KV checks and writes.
    fn run_plan(&mut self, plan: &StepPlan) {
        for id in &plan.dropped {
            self.tables.remove(id);
            if let Some(sim) = self.seqs.get_mut(id) {
                sim.fork_pending = false;
            }
        }
        for s in &plan.seqs {
            if self.tables.contains_key(&s.seq_id) {
                assert_eq!(
                    s.num_computed_tokens as usize, self.seqs[&s.seq_id].computed,
                    "seq {}: positions not contiguous with its last step",
                    s.seq_id
                );
            } else if !self.config.enable_prefix_caching {
                let sim = &self.seqs[&s.seq_id];
                let fork =
                    sim.fork_pending && s.num_computed_tokens as usize + 1 == sim.known.len();
                assert!(
                    fork || s.num_computed_tokens == 0,
                    "seq {}: (re)admitted at {} without a prefix cache",
                    s.seq_id,
                    s.num_computed_tokens
                );
            }
            let table = self.tables.entry(s.seq_id).or_default();
            assert!(
                s.table_keep as usize <= table.len(),
                "seq {}: keep {} of a {}-block runner table",
                s.seq_id,
                s.table_keep,
                table.len()
            );
            table.truncate(s.table_keep as usize);
            table.extend_from_slice(&s.new_blocks);
            assert!(
                s.table_holes as usize <= table.len(),
                "seq {}: {} holes in a {}-block table",
                s.seq_id,
                s.table_holes,
                table.len()
            );
            table[..s.table_holes as usize].fill(NO_BLOCK);
            let rows = self
                .seqs
                .get(&s.seq_id)
                .and_then(|sim| self.requests.get_mut(&sim.request))
                .and_then(|r| r.prompt_rows.as_mut());
            if let Some(rows) = rows {
                let start = s.num_computed_tokens as usize;
                let computed = s.prompt_logprob_rows as usize;
                for seen in rows.iter_mut().skip(start).take(computed) {
                    *seen = true;
                }
            }
        }
        let bs = self.config.block_size;
        for c in &plan.block_copies {
            let (src, dst) = (c.src as usize * bs, c.dst as usize * bs);
            self.kv.copy_within(src..src + bs, dst);
        }
        // Everything a sequence attends to was computed by earlier steps.
        for s in &plan.seqs {
            self.check_scheduled(s.seq_id, s);
        }
        for s in &plan.seqs {
            let table = self.tables[&s.seq_id].clone();
            let start = s.num_computed_tokens as usize;
            for i in 0..s.token_ids.len() {
                let slot = self.slot(&table, start + i);
                self.kv[slot] = self.seqs[&s.seq_id].prints[start + i];
            }
            if let Some(sim) = self.seqs.get_mut(&s.seq_id) {
                sim.computed = start + s.token_ids.len();
                sim.fork_pending = false;
            }
            let rid = self.seqs[&s.seq_id].request;
            self.first_scheduled.entry(rid).or_insert(self.steps);
        }
        // Nobody's KV was overwritten.
        let ids: Vec<SeqId> = self.tables.keys().copied().collect();
        for id in ids {
            let computed = self.seqs[&id].computed;
            self.check_kv(id, computed, "after the step");
        }
    }

    fn check_scheduled(&self, id: SeqId, s: &kiln_protocol::step::ScheduledSeq) {
        let Some(sim) = self.seqs.get(&id) else {
            panic!("sequence {id} scheduled but never added")
        };
        let start = s.num_computed_tokens as usize;
        let end = start + s.token_ids.len();
        assert!(
            !s.token_ids.is_empty(),
            "seq {id}: scheduled with no tokens"
        );
        assert!(
            end <= sim.known.len() && sim.known[start..end] == s.token_ids[..],
            "seq {id}: computes tokens other than its own {start}..{end}"
        );
        assert!(
            end <= self.config.max_model_len,
            "seq {id}: past max_model_len"
        );
        let table = &self.tables[&id];
        assert_eq!(
            table.len(),
            end.div_ceil(self.config.block_size),
            "seq {id}: runner table does not cover {end} tokens"
        );
        assert_eq!(
            Some(table.as_slice()),
            self.blocks.block_table(id),
            "seq {id}: the runner's table differs from the block manager's"
        );
        let bs = self.config.block_size;
        let seen = self.config.first_key(start)..end;
        assert!(
            seen.clone().all(|pos| table[pos / bs] != NO_BLOCK),
            "seq {id}: a row of {start}..{end} sees positions {seen:?} in a hole: {table:?}"
        );
        self.check_kv(id, start, "before computing");
        // An aborted request is forgotten here while its last step may still run.
        let embed = s.embed;
        if !sim.gone {
            let requested = self.requests.get(&sim.request).is_some_and(|r| r.embed);
            assert_eq!(embed, requested, "seq {id}: embedding flag");
        }
        if embed {
            assert!(
                start == 0 && end == sim.known.len(),
                "seq {id}: an embedding computes {start}..{end} of {} tokens",
                sim.known.len()
            );
        }
        let expected = if sim.gone || embed || end < sim.known.len() {
            0
        } else if self.requests[&sim.request].seq_ids[0] == id
            && !self.requests[&sim.request].forked
        {
            self.requests[&sim.request].seq_ids.len() as u32
        } else {
            1
        };
        assert_eq!(s.num_samples, expected, "seq {id}: wrong number of samples");
        let prompt_rows = self
            .requests
            .get(&sim.request)
            .and_then(|r| r.prompt_rows.as_ref())
            .map_or(0, |rows| end.min(rows.len()).saturating_sub(start));
        if !sim.gone {
            assert_eq!(
                s.prompt_logprob_rows as usize, prompt_rows,
                "seq {id}: prompt logprob rows of {start}..{end}"
            );
        }
    }

    /// The KV a row at `upto` sees is the sequence's own.
    fn check_kv(&self, id: SeqId, upto: usize, when: &str) {
        let sim = &self.seqs[&id];
        let table = &self.tables[&id];
        for pos in self.config.first_key(upto)..upto {
            assert_eq!(
                self.kv[self.slot(table, pos)],
                sim.prints[pos],
                "seq {id}: KV at position {pos} is not its own ({when}, step {})",
                self.steps
            );
        }
    }

    /// The sampler stand-in; embeddings end with their step.
    fn sample(&mut self, plan: &StepPlan, sample: &mut SampleFn<'_>) -> StepOutput {
        for s in plan.seqs.iter().filter(|s| s.embed) {
            let rid = self.seqs[&s.seq_id].request;
            if self.requests.remove(&rid).is_some() {
                self.finished.insert(rid, Vec::new());
            }
            if let Some(sim) = self.seqs.get_mut(&s.seq_id) {
                sim.done = true;
            }
        }
        let mut tokens = Vec::new();
        for s in plan.seqs.iter().filter(|s| s.num_samples > 0) {
            let rid = self.seqs[&s.seq_id].request;
            let targets: Vec<SeqId> = if s.num_samples > 1 {
                let r = self.requests.get_mut(&rid).expect("live request");
                r.forked = true;
                r.seq_ids.clone()
            } else {
                vec![s.seq_id]
            };
            let history = self.seqs[&s.seq_id].known.clone();
            for target in targets {
                let (tok, stop) = sample(target, &history);
                let max_tokens = self.requests[&rid].max_tokens;
                let Some(sim) = self.seqs.get_mut(&target) else {
                    continue;
                };
                sim.fork_pending = target != s.seq_id;
                sim.push(tok);
                sim.generated.push(tok);
                let length = sim.generated.len() >= max_tokens;
                let finished = if stop {
                    Some(FinishReason::Stop)
                } else if length {
                    Some(FinishReason::Length)
                } else {
                    None
                };
                sim.done = finished.is_some();
                tokens.push(SampledToken {
                    seq_id: target,
                    token_id: tok,
                    finished,
                });
            }
            self.complete_if_done(rid);
        }
        StepOutput {
            step_id: plan.step_id,
            tokens,
        }
    }

    fn complete_if_done(&mut self, rid: RequestId) {
        let Some(r) = self.requests.get(&rid) else {
            return;
        };
        if r.seq_ids.iter().all(|id| self.seqs[id].done) {
            if let Some(rows) = &r.prompt_rows {
                assert!(
                    rows.iter().all(|&seen| seen),
                    "request {rid} finished without every prompt logprob row: {rows:?}"
                );
            }
            let outs = r
                .seq_ids
                .iter()
                .map(|id| self.seqs[id].generated.clone())
                .collect();
            self.finished.insert(rid, outs);
            self.requests.remove(&rid);
        }
    }

    /// Run until idle and return the outputs of the requests that finished
    /// (per request, one token list per sequence); panics when a request
    /// is left over, a block is still held, or no end comes in 100 000 steps.
    pub fn run_to_completion(
        &mut self,
        mut sample: impl FnMut(SeqId, &[TokenId]) -> (TokenId, bool),
    ) -> HashMap<RequestId, Vec<Vec<TokenId>>> {
        let mut guard = 0;
        while self.step(&mut sample).is_some() {
            guard += 1;
            assert!(
                guard < 100_000,
                "no completion after 100000 steps: livelock"
            );
        }
        self.check_idle();
        std::mem::take(&mut self.finished)
    }

    /// The checks that hold whenever the scheduler reports idle.
    pub fn check_idle(&self) {
        assert!(self.scheduler.is_idle(), "idle scheduler is not idle");
        assert_eq!(self.active(), 0, "idle with requests still active");
        assert!(
            self.scheduler.active_requests().is_empty(),
            "the scheduler still tracks requests"
        );
        assert_eq!(
            self.blocks.num_free_blocks(),
            self.blocks.num_total_blocks(),
            "idle but blocks are still held"
        );
        assert_eq!(self.blocks.num_sequences(), 0);
        assert!(
            self.tables.is_empty(),
            "the runner still holds tables: {:?}",
            self.tables.keys()
        );
    }
}
