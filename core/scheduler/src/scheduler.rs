//! The continuous-batching scheduler.
//!
//! There are no prefill and decode phases: each step gives every scheduled
//! sequence some tokens under one token budget (`max_num_batched_tokens`) —
//! a chunk of its prompt (chunked prefill), a recomputed history after
//! preemption, or its last sampled token.
//!
//! # A step
//! A step is three calls, so that the block manager can be another actor
//! that receives one batched message per step:
//! 1. [`Scheduler::begin_step`] runs the phases `schedule_running` (running
//!    sequences in priority order: arrival, then sequence id; a prefilling one
//!    gets `min(remaining known tokens, budget left)`, a decoding one 1),
//!    `preempt_if_needed` (when the running sequences need more new blocks
//!    than are free, the newest running sequences are preempted by
//!    recompute until the rest fit) and `admit_waiting` (first come first
//!    served, possibly a partial first chunk, never skipping a request that
//!    does not fit; skipped in a step that preempted). It returns the
//!    [`AllocateForStep`] for the block manager.
//! 2. [`Scheduler::finish_step`] applies the block manager's grants and
//!    returns the [`StepPlan`] for the model runner.
//! 3. [`Scheduler::on_step_output`] applies the sampled tokens.
//!
//! # Block accounting
//! The scheduler mirrors every block table from the grants (and forks) and
//! keeps its own reference counts, so it knows exactly how many blocks each
//! release frees and whether a forked sequence's partial last block is still
//! shared (then its next extension needs one more block for copy-on-write).
//! Starting from the free count of the last [`StepAllocation`] (initially
//! the whole pool), its demand for running sequences is exact: an `Extend`
//! is never denied. Admissions are estimated as `ceil(tokens / block_size)`
//! blocks; prefix-cache hits on free blocks can make the block manager deny
//! one, which is harmless (the sequence goes back to the front of the queue).
//!
//! With [`SchedulerConfig::sliding_window`] (every layer of the model
//! slides), `begin_step` first turns into holes the blocks of every running
//! sequence that lie behind its next row's window, exactly as the block
//! manager does when it receives the message (see [`crate::window`]), and
//! counts the blocks that frees. A sequence then never holds more than
//! [`max_blocks_per_sequence`] blocks, which is what a request must fit in
//! the pool to be accepted, whatever its length.
//!
//! # Lengths
//! The engine resolves `max_tokens` so that prompt + `max_tokens` fits
//! `max_model_len`, and the sampler ends a sequence with `Length` when it
//! reaches `max_tokens`. The scheduler rejects a request that breaks that
//! rule, and fails a sequence that would need a KV position at or past
//! `max_model_len` (a sampler bug) rather than scheduling it.
//!
//! # Failures and progress
//! A request that can never run — no sequence ids, an empty prompt,
//! `max_tokens` of 0, longer than the context, or needing more KV blocks
//! than the pool has — is rejected at [`Scheduler::add_request`]; one whose
//! sampled token never arrived (a running sequence with nothing to compute,
//! or forks that were drawn but never delivered) is failed at the next
//! [`Scheduler::begin_step`]. Both come out of [`Scheduler::take_rejected`]
//! for the caller to turn into error events; their blocks are released.
//! With that, every `begin_step` that does not return `None` leads to a plan
//! that computes at least one token, drops a sequence, or fails a request:
//! the oldest running sequence is never preempted unless it alone cannot
//! fit, which validation rules out.
//!
//! # Embeddings
//! An embedding request ([`NewRequest::embed`]) is admitted only whole, in
//! first-come order like any other (a later request never overtakes one
//! waiting for room in the budget), without the prefix cache and with no
//! sample. [`Scheduler::finish_step`] finishes it as soon as it is planned:
//! its blocks go back with the next step's message, and the next plan drops
//! it from the runner, so it holds KV blocks for exactly one step. It must
//! fit `max_num_batched_tokens`, `max_model_len` and the pool, or it is
//! rejected.
//!
//! # Aborts
//! [`Scheduler::abort`] works in any state. A sequence whose demand is in
//! flight is still computed once by the plan (with no sample), because the
//! block manager may already have registered its blocks in the prefix cache;
//! it is released right after. Sampled tokens arriving for aborted sequences
//! are ignored.

use std::collections::{HashMap, VecDeque};

use kiln_protocol::step::{
    AllocateForStep, BlockDemand, DemandKind, Fork, Granted, SampledToken, ScheduledSeq,
    StepAllocation, StepOutput, StepPlan,
};
use kiln_protocol::{BlockId, EngineError, NO_BLOCK, RequestId, SeqId, TokenId};

use crate::window::{blocks_behind_window, max_blocks_per_sequence};

/// Scheduler settings. Values below 1 for the budgets and the block size are
/// treated as 1 (see [`SchedulerConfig::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget per step (prefill chunks and decodes together).
    pub max_num_batched_tokens: usize,
    /// Most sequences per step, and most running sequences before admitting
    /// more (forks of an `n > 1` request may exceed it).
    pub max_num_seqs: usize,
    /// Served context length in tokens.
    pub max_model_len: usize,
    /// Tokens per KV block (must match the block manager's).
    pub block_size: usize,
    /// Blocks in the KV pool (must match the block manager's).
    pub num_blocks: usize,
    /// Look up and register prefix-cache blocks.
    pub enable_prefix_caching: bool,
    /// The window of every attention layer, when all of them slide (must
    /// match the block manager's): blocks behind it are freed.
    pub sliding_window: Option<usize>,
}

impl SchedulerConfig {
    /// Reject settings the scheduler would have to clamp.
    pub fn validate(&self) -> Result<(), EngineError> {
        let positive = [
            ("max_num_batched_tokens", self.max_num_batched_tokens),
            ("max_num_seqs", self.max_num_seqs),
            ("max_model_len", self.max_model_len),
            ("block_size", self.block_size),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(EngineError::invalid(
                name,
                format!("{name} must be at least 1"),
            )),
            None => Ok(()),
        }
    }
}

/// A request entering the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// Its id (unique among live requests).
    pub request_id: RequestId,
    /// One id per sequence (`n`); the first is prefilled, the others fork
    /// from it when its first sample is drawn.
    pub seq_ids: Vec<SeqId>,
    /// `[prompt_len]` prompt tokens.
    pub prompt_token_ids: Vec<TokenId>,
    /// Resolved `max_tokens` (at least 1; prompt + `max_tokens` ≤ `max_model_len`).
    pub max_tokens: u32,
    /// Arrival order key (smaller arrived earlier; ties go by sequence id).
    pub arrival: u64,
    /// An embedding request: its whole prompt runs in one step, nothing is
    /// sampled (`max_tokens` is ignored), and its blocks are released right
    /// after that step.
    pub embed: bool,
    /// The prompt's logits rows go back to the host (`prompt_logprobs`): the
    /// whole prompt is computed, without the prefix cache.
    pub prompt_logprobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Queued; holds no blocks.
    Waiting,
    /// Holds blocks (possibly waiting for a fork to reach the block manager).
    Running,
}

/// A demand sent in `begin_step` whose grant has not been applied yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Admit,
    Extend { tokens: usize },
}

#[derive(Debug, Clone)]
struct Seq {
    request: RequestId,
    /// Prompt plus sampled tokens.
    tokens: Vec<TokenId>,
    /// Tokens whose KV is computed (or being computed by the current step).
    computed: usize,
    /// Mirror of the block manager's table; the first `holes` are [`NO_BLOCK`].
    table: Vec<BlockId>,
    /// Leading entries of `table` behind the sliding window.
    holes: usize,
    /// The model runner holds this sequence's table (plans send diffs).
    runner_knows: bool,
    status: Status,
    in_flight: Option<InFlight>,
    /// Aborted while a demand was in flight: computed once, then released.
    zombie: bool,
    arrival: u64,
    /// Computed once, in full, then released (an embedding request).
    embed: bool,
    /// With `prompt_logprobs`: the prompt's length.
    prompt_logprobs_len: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// A fork child whose first token has not been drawn.
    Pending,
    Live,
    Done,
}

#[derive(Debug, Clone)]
struct Request {
    seq_ids: Vec<SeqId>,
    members: Vec<Member>,
    /// The first sequence drew its `n` samples.
    forked: bool,
    arrival: u64,
}

impl Request {
    fn set(&mut self, seq: SeqId, m: Member) {
        if let Some(i) = self.seq_ids.iter().position(|&s| s == seq) {
            self.members[i] = m;
        }
    }

    fn member(&self, seq: SeqId) -> Option<Member> {
        let i = self.seq_ids.iter().position(|&s| s == seq)?;
        Some(self.members[i])
    }
}

/// Budgets left while building one step.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: usize,
    seqs: usize,
    free_blocks: usize,
}

/// The pure scheduler (see the module docs).
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    seqs: HashMap<SeqId, Seq>,
    requests: HashMap<RequestId, Request>,
    /// Every sequence id of a live request → its request.
    owner: HashMap<SeqId, RequestId>,
    /// Sorted by (arrival, seq id).
    waiting: VecDeque<SeqId>,
    /// Sorted by (arrival, seq id): priority order, newest last.
    running: Vec<SeqId>,
    /// Mirror reference counts, indexed by block id.
    refs: Vec<u32>,
    releases: Vec<SeqId>,
    forks: Vec<Fork>,
    dropped: Vec<SeqId>,
    /// Demands of the current step, in order.
    pending: Vec<SeqId>,
    /// Free blocks reported by the last allocation.
    free_blocks: usize,
    /// Blocks freed by releases queued since `free_blocks` was valid.
    freed_since: usize,
    step_id: u64,
    rejected: Vec<(RequestId, EngineError)>,
    stats: Stats,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    preemptions_last_step: usize,
    preemptions_untaken: usize,
    preemptions_total: u64,
    prefix_cache_queries: u32,
    prefix_cache_hits: u32,
}

impl Scheduler {
    /// An idle scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let config = SchedulerConfig {
            max_num_batched_tokens: config.max_num_batched_tokens.max(1),
            max_num_seqs: config.max_num_seqs.max(1),
            max_model_len: config.max_model_len.max(1),
            block_size: config.block_size.max(1),
            sliding_window: config.sliding_window.filter(|&w| w > 0),
            ..config
        };
        Scheduler {
            config,
            seqs: HashMap::new(),
            requests: HashMap::new(),
            owner: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            refs: vec![0; config.num_blocks],
            releases: Vec::new(),
            forks: Vec::new(),
            dropped: Vec::new(),
            pending: Vec::new(),
            free_blocks: config.num_blocks,
            freed_since: 0,
            step_id: 0,
            rejected: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The settings in use (after clamping).
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    // ---------------------------------------------------------------- requests

    /// Queue a request; one that can never run goes to
    /// [`take_rejected`](Self::take_rejected) instead.
    pub fn add_request(&mut self, r: NewRequest) {
        if let Err(e) = self.check_request(&r) {
            self.rejected.push((r.request_id, e));
            return;
        }
        let first = r.seq_ids[0];
        let prompt_logprobs_len = r.prompt_logprobs.then_some(r.prompt_token_ids.len());
        let mut members = vec![Member::Pending; r.seq_ids.len()];
        members[0] = Member::Live;
        for &id in &r.seq_ids {
            self.owner.insert(id, r.request_id);
        }
        self.seqs.insert(
            first,
            Seq {
                request: r.request_id,
                tokens: r.prompt_token_ids,
                computed: 0,
                table: Vec::new(),
                holes: 0,
                runner_knows: false,
                status: Status::Waiting,
                in_flight: None,
                zombie: false,
                arrival: r.arrival,
                embed: r.embed,
                prompt_logprobs_len,
            },
        );
        self.insert_waiting(first);
        self.requests.insert(
            r.request_id,
            Request {
                seq_ids: r.seq_ids,
                members,
                forked: false,
                arrival: r.arrival,
            },
        );
    }

    fn check_request(&self, r: &NewRequest) -> Result<(), EngineError> {
        let c = &self.config;
        if r.seq_ids.is_empty() {
            return Err(EngineError::invalid("n", "n must be at least 1"));
        }
        if self.requests.contains_key(&r.request_id) {
            return Err(EngineError::Internal(format!(
                "request id {} is already in use",
                r.request_id
            )));
        }
        let mut ids = r.seq_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != r.seq_ids.len() || ids.iter().any(|id| self.owner.contains_key(id)) {
            return Err(EngineError::Internal(
                "a sequence id of the request is already in use".into(),
            ));
        }
        if r.prompt_token_ids.is_empty() {
            return Err(EngineError::invalid(
                "prompt",
                "the prompt is empty; send at least one token",
            ));
        }
        if r.embed {
            return self.check_embedding(r);
        }
        if r.max_tokens == 0 {
            return Err(EngineError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        let prompt = r.prompt_token_ids.len();
        if prompt + r.max_tokens as usize > c.max_model_len {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: prompt.min(u32::MAX as usize) as u32,
                max_new_tokens: r.max_tokens,
                max_model_len: c.max_model_len.min(u32::MAX as usize) as u32,
            });
        }
        // The last sampled token is never computed.
        let kv_tokens = prompt + r.max_tokens as usize - 1;
        if self.most_blocks_held(kv_tokens) > c.num_blocks {
            return Err(EngineError::invalid(
                "max_tokens",
                format!(
                    "the request needs up to {kv_tokens} tokens of KV cache but the cache holds \
                     {} tokens; lower max_tokens, shorten the prompt, or give the server more \
                     KV cache memory",
                    c.num_blocks * c.block_size
                ),
            ));
        }
        Ok(())
    }

    /// An embedding request must run whole in one step.
    fn check_embedding(&self, r: &NewRequest) -> Result<(), EngineError> {
        let c = &self.config;
        let tokens = r.prompt_token_ids.len();
        if r.seq_ids.len() != 1 {
            return Err(EngineError::invalid(
                "n",
                "an embedding request has one sequence",
            ));
        }
        if tokens > c.max_model_len {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens: tokens.min(u32::MAX as usize) as u32,
                max_new_tokens: 0,
                max_model_len: c.max_model_len.min(u32::MAX as usize) as u32,
            });
        }
        if tokens > c.max_num_batched_tokens {
            return Err(EngineError::invalid(
                "input",
                format!(
                    "the input has {tokens} tokens but one step computes at most {}; shorten \
                     the input, ask for truncation, or raise --max-num-batched-tokens",
                    c.max_num_batched_tokens
                ),
            ));
        }
        if self.most_blocks_held(tokens) > c.num_blocks {
            return Err(EngineError::invalid(
                "input",
                format!(
                    "the input needs {tokens} tokens of KV cache but the cache holds {} tokens; \
                     shorten the input or give the server more KV cache memory",
                    c.num_blocks * c.block_size
                ),
            ));
        }
        Ok(())
    }

    /// Abort a request in any state; its blocks are released by the next
    /// message. Unknown ids are ignored.
    pub fn abort(&mut self, request: RequestId) {
        let Some(r) = self.requests.remove(&request) else {
            return;
        };
        for id in &r.seq_ids {
            self.owner.remove(id);
            self.remove_seq(*id);
        }
    }

    /// Fail a request: it goes to [`take_rejected`](Self::take_rejected) and is aborted.
    fn fail(&mut self, request: RequestId, error: EngineError) {
        if self.requests.contains_key(&request) {
            self.rejected.push((request, error));
            self.abort(request);
        }
    }

    /// Forget a sequence of a removed request, releasing what it holds.
    fn remove_seq(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        if let Some(s) = self.seqs.get_mut(&id)
            && s.in_flight.is_some()
        {
            // Its grant is applied (and computed) in finish_step, then released.
            s.zombie = true;
            return;
        }
        let Some(s) = self.seqs.remove(&id) else {
            return;
        };
        if s.status == Status::Running {
            self.release_table(id, &s.table);
            self.dropped.push(id);
        }
    }

    // ---------------------------------------------------------------- queues

    fn order_key(&self, seq: SeqId) -> (u64, SeqId) {
        (self.seqs.get(&seq).map_or(u64::MAX, |s| s.arrival), seq)
    }

    fn insert_waiting(&mut self, seq: SeqId) {
        let key = self.order_key(seq);
        let pos = self.waiting.partition_point(|&s| self.order_key(s) < key);
        self.waiting.insert(pos, seq);
    }

    fn insert_running(&mut self, seq: SeqId) {
        let key = self.order_key(seq);
        let pos = self.running.partition_point(|&s| self.order_key(s) < key);
        self.running.insert(pos, seq);
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    /// The most blocks a sequence of `tokens` KV positions holds at once.
    fn most_blocks_held(&self, tokens: usize) -> usize {
        let c = &self.config;
        max_blocks_per_sequence(
            tokens,
            c.block_size,
            c.sliding_window,
            c.max_num_batched_tokens,
        )
    }

    /// Holes of a table of `len` blocks whose first row to compute is at `position`.
    fn expected_holes(&self, position: usize, len: usize) -> usize {
        self.config.sliding_window.map_or(0, |w| {
            blocks_behind_window(position, w, self.config.block_size).min(len)
        })
    }

    // ---------------------------------------------------------------- mirror

    fn ref_mut(&mut self, b: BlockId) -> &mut u32 {
        let i = b as usize;
        if i >= self.refs.len() {
            self.refs.resize(i + 1, 0);
        }
        &mut self.refs[i]
    }

    fn acquire(&mut self, blocks: &[BlockId]) {
        for &b in blocks.iter().filter(|&&b| b != NO_BLOCK) {
            *self.ref_mut(b) += 1;
        }
    }

    /// Drop references (holes hold none); returns how many blocks became free.
    fn drop_refs(&mut self, blocks: &[BlockId]) -> usize {
        let mut freed = 0;
        for &b in blocks.iter().filter(|&&b| b != NO_BLOCK) {
            let r = self.ref_mut(b);
            freed += usize::from(*r == 1);
            *r = r.saturating_sub(1);
        }
        freed
    }

    /// Queue the release of a sequence the block manager holds.
    fn release_table(&mut self, id: SeqId, table: &[BlockId]) {
        self.freed_since += self.drop_refs(table);
        if !self.releases.contains(&id) {
            self.releases.push(id);
        }
    }

    /// Mirror the block manager's first act on the next message: the blocks
    /// of each running sequence that its next row (at `computed`: the
    /// previous step has run) cannot see become holes.
    fn free_behind_windows(&mut self) {
        let Some(window) = self.config.sliding_window else {
            return;
        };
        let bs = self.config.block_size;
        let mut freed = Vec::new();
        for s in self.seqs.values_mut() {
            if s.status != Status::Running {
                continue;
            }
            let behind = blocks_behind_window(s.computed, window, bs).min(s.table.len());
            for i in s.holes..behind {
                freed.push(s.table[i]);
                s.table[i] = NO_BLOCK;
            }
            s.holes = s.holes.max(behind);
        }
        self.freed_since += self.drop_refs(&freed);
    }

    // ---------------------------------------------------------------- phase 1

    /// Phase 1: decide what runs and ask for its KV slots. `None` when idle
    /// (nothing running or waiting, nothing to release or fork).
    pub fn begin_step(&mut self) -> Option<AllocateForStep> {
        self.fail_stalled();
        if self.is_idle() {
            return None;
        }
        self.free_behind_windows();
        self.step_id += 1;
        self.stats.preemptions_last_step = 0;
        let mut budget = Budget {
            tokens: self.config.max_num_batched_tokens,
            seqs: self.config.max_num_seqs,
            free_blocks: self.free_blocks + std::mem::take(&mut self.freed_since),
        };
        let mut planned = self.schedule_running(&mut budget);
        self.preempt_if_needed(&mut planned, &mut budget);
        let mut demands = self.extend_demands(&planned);
        if self.stats.preemptions_last_step == 0 {
            self.admit_waiting(&mut budget, &mut demands);
        }
        Some(AllocateForStep {
            step_id: self.step_id,
            releases: std::mem::take(&mut self.releases),
            forks: std::mem::take(&mut self.forks),
            demands,
        })
    }

    /// Fail requests whose sampled token never arrived, so they cannot hold
    /// blocks forever.
    fn fail_stalled(&mut self) {
        let mut stalled: Vec<RequestId> = self
            .running
            .iter()
            .filter_map(|id| self.seqs.get(id))
            .filter(|s| s.computed >= s.tokens.len())
            .map(|s| s.request)
            .collect();
        stalled.extend(
            self.requests
                .iter()
                .filter(|(_, r)| r.forked && r.members.contains(&Member::Pending))
                .map(|(id, _)| *id),
        );
        stalled.sort_unstable();
        stalled.dedup();
        for rid in stalled {
            self.fail(
                rid,
                EngineError::Internal(
                    "a sampled token never reached the scheduler; the request was stopped".into(),
                ),
            );
        }
    }

    /// Running sequences in priority order under the token and sequence budgets.
    fn schedule_running(&self, budget: &mut Budget) -> Vec<(SeqId, usize)> {
        let mut planned = Vec::new();
        for (&id, s) in self
            .running
            .iter()
            .filter_map(|id| self.seqs.get_key_value(id))
        {
            if budget.tokens == 0 || budget.seqs == 0 {
                break;
            }
            let n = s.tokens.len().saturating_sub(s.computed).min(budget.tokens);
            if n == 0 {
                continue;
            }
            budget.tokens -= n;
            budget.seqs -= 1;
            planned.push((id, n));
        }
        planned
    }

    /// New blocks the planned extensions take, in demand order, including
    /// copy-on-write blocks for partial last blocks that are still shared.
    fn blocks_needed(&self, planned: &[(SeqId, usize)]) -> usize {
        let mut copied: HashMap<BlockId, u32> = HashMap::new();
        let mut total = 0;
        for &(id, n) in planned {
            let Some(s) = self.seqs.get(&id) else {
                continue;
            };
            total += self
                .blocks_for(s.computed + n)
                .saturating_sub(s.table.len());
            let partial = !s.computed.is_multiple_of(self.config.block_size);
            if let Some(&last) = s.table.last().filter(|_| partial) {
                let done = copied.entry(last).or_default();
                let refs = self.refs.get(last as usize).copied().unwrap_or(0);
                if refs.saturating_sub(*done) > 1 {
                    *done += 1;
                    total += 1;
                }
            }
        }
        total
    }

    /// Preempt the newest running sequences until the planned ones fit.
    fn preempt_if_needed(&mut self, planned: &mut Vec<(SeqId, usize)>, budget: &mut Budget) {
        loop {
            let need = self.blocks_needed(planned);
            if need <= budget.free_blocks {
                budget.free_blocks -= need;
                return;
            }
            let Some(&victim) = self.running.last() else {
                return;
            };
            if let Some(i) = planned.iter().position(|&(id, _)| id == victim) {
                budget.tokens += planned[i].1;
                budget.seqs += 1;
                planned.remove(i);
            }
            self.preempt(victim);
            budget.free_blocks += std::mem::take(&mut self.freed_since);
        }
    }

    /// Preempt by recompute: release every block, back to the waiting queue.
    fn preempt(&mut self, id: SeqId) {
        let Some(s) = self.seqs.get_mut(&id) else {
            return;
        };
        let table = std::mem::take(&mut s.table);
        s.holes = 0;
        s.status = Status::Waiting;
        s.computed = 0;
        s.runner_knows = false;
        self.running.retain(|&r| r != id);
        self.release_table(id, &table);
        self.dropped.push(id);
        self.insert_waiting(id);
        self.stats.preemptions_last_step += 1;
        self.stats.preemptions_untaken += 1;
        self.stats.preemptions_total += 1;
    }

    fn extend_demands(&mut self, planned: &[(SeqId, usize)]) -> Vec<BlockDemand> {
        let mut demands = Vec::with_capacity(planned.len());
        for &(id, n) in planned {
            let Some(s) = self.seqs.get_mut(&id) else {
                continue;
            };
            demands.push(BlockDemand {
                seq_id: id,
                kind: DemandKind::Extend {
                    token_ids: s.tokens[s.computed..s.computed + n].to_vec(),
                },
            });
            s.in_flight = Some(InFlight::Extend { tokens: n });
            self.pending.push(id);
        }
        demands
    }

    /// Admit waiting sequences first come first served while they fit.
    fn admit_waiting(&mut self, budget: &mut Budget, demands: &mut Vec<BlockDemand>) {
        let mut admitted = 0;
        while let Some(&id) = self.waiting.front() {
            if budget.tokens == 0
                || budget.seqs == 0
                || self.running.len() + admitted >= self.config.max_num_seqs
            {
                break;
            }
            let Some(s) = self.seqs.get(&id) else {
                self.waiting.pop_front();
                continue;
            };
            if s.embed && s.tokens.len() > budget.tokens {
                // An embedding runs whole; it waits for a step with room.
                break;
            }
            let n = s.tokens.len().min(budget.tokens);
            let estimate = self.blocks_for(n);
            let use_prefix_cache =
                self.config.enable_prefix_caching && !s.embed && s.prompt_logprobs_len.is_none();
            if estimate > budget.free_blocks {
                break;
            }
            demands.push(BlockDemand {
                seq_id: id,
                kind: DemandKind::Admit {
                    token_ids: s.tokens.clone(),
                    max_new_tokens: n as u32,
                    use_prefix_cache,
                },
            });
            self.waiting.pop_front();
            if let Some(s) = self.seqs.get_mut(&id) {
                s.in_flight = Some(InFlight::Admit);
            }
            self.pending.push(id);
            admitted += 1;
            budget.tokens -= n;
            budget.seqs -= 1;
            budget.free_blocks -= estimate;
        }
    }

    // ---------------------------------------------------------------- phase 2

    /// Phase 2: apply the block manager's answer and produce the step's plan.
    /// Denied sequences do not run this step (a denied admission goes back
    /// to the front of the waiting queue). `dropped` lists every sequence
    /// released since the last plan (finished, aborted, failed, preempted),
    /// except aborted ones computed by this very plan, which the next plan
    /// drops. A sequence the runner does not hold yet (an admission, or a
    /// fork's first step) gets its whole table (`table_keep` 0); the others
    /// get the block manager's diff. Call it once after each `begin_step`
    /// that returned a message.
    pub fn finish_step(&mut self, alloc: StepAllocation) -> StepPlan {
        self.free_blocks = alloc.num_free_blocks as usize;
        self.stats.prefix_cache_queries = alloc.prefix_cache_queries;
        self.stats.prefix_cache_hits = alloc.prefix_cache_hits;
        let mut grants: HashMap<SeqId, Option<Granted>> = HashMap::new();
        for g in alloc.grants {
            let asked = self
                .seqs
                .get(&g.seq_id)
                .is_some_and(|s| s.in_flight.is_some());
            if asked {
                grants.insert(g.seq_id, g.granted);
            } else if g.granted.is_some() && !self.seqs.contains_key(&g.seq_id) {
                // Blocks for a sequence nobody asked for: give them back.
                self.releases.push(g.seq_id);
            }
        }
        let mut seqs = Vec::new();
        let mut zombies = Vec::new();
        for id in std::mem::take(&mut self.pending) {
            let granted = grants.remove(&id).flatten();
            let Some(kind) = self.seqs.get_mut(&id).and_then(|s| s.in_flight.take()) else {
                continue;
            };
            let scheduled = match (kind, granted) {
                (InFlight::Admit, Some(g)) => self.apply_admit(id, g),
                (InFlight::Extend { tokens }, Some(g)) => self.apply_extend(id, tokens, g),
                (InFlight::Admit, None) => {
                    self.deny_admit(id);
                    None
                }
                (InFlight::Extend { .. }, None) => {
                    self.deny_extend(id);
                    None
                }
            };
            if let Some(s) = scheduled {
                seqs.push(s);
            }
            // Zombies and embeddings computed their one step: the next plan drops them.
            let released = match self.seqs.get(&id) {
                Some(s) if s.zombie => self.drop_zombie(id),
                Some(s) if s.embed => self.finish_embedding(id),
                _ => false,
            };
            if released {
                zombies.push(id);
            }
        }
        let dropped = std::mem::take(&mut self.dropped);
        // Zombies computed in this plan are forgotten before the next one.
        self.dropped = zombies;
        StepPlan {
            step_id: alloc.step_id,
            dropped,
            block_copies: alloc.copies,
            seqs,
        }
    }

    fn samples_for(&self, id: SeqId) -> u32 {
        let Some(s) = self.seqs.get(&id) else {
            return 0;
        };
        if s.zombie || s.embed || s.computed < s.tokens.len() {
            return 0;
        }
        match self.requests.get(&s.request) {
            Some(r) if !r.forked && r.seq_ids.len() > 1 && r.seq_ids[0] == id => {
                r.seq_ids.len() as u32
            }
            _ => 1,
        }
    }

    /// The plan entry of a sequence that just computed `start..computed`.
    fn scheduled(
        &mut self,
        id: SeqId,
        start: usize,
        diff: (u32, Vec<BlockId>),
    ) -> Option<ScheduledSeq> {
        let num_samples = self.samples_for(id);
        let s = self.seqs.get_mut(&id)?;
        let (table_keep, new_blocks) = if s.runner_knows {
            diff
        } else {
            // First plan entry since the runner last dropped it (admission, or
            // a fork child): send the whole table.
            (0, s.table.clone())
        };
        s.runner_knows = true;
        let token_ids = s.tokens[start..s.computed].to_vec();
        if num_samples > 1
            && let Some(r) = self.requests.get_mut(&s.request)
        {
            r.forked = true;
        }
        // Rows whose next token is still a prompt token.
        let prompt_logprob_rows = s.prompt_logprobs_len.map_or(0, |len| {
            s.computed.min(len.saturating_sub(1)).saturating_sub(start)
        });
        Some(ScheduledSeq {
            seq_id: id,
            token_ids,
            num_computed_tokens: start as u32,
            table_keep,
            new_blocks,
            table_holes: s.holes as u32,
            num_samples,
            embed: s.embed,
            prompt_logprob_rows: prompt_logprob_rows as u32,
        })
    }

    fn apply_admit(&mut self, id: SeqId, g: Granted) -> Option<ScheduledSeq> {
        self.acquire(&g.new_blocks);
        let bs = self.config.block_size;
        let start = g.num_cached_tokens as usize;
        let holes = self.expected_holes(start, g.new_blocks.len());
        let s = self.seqs.get_mut(&id)?;
        s.table = g.new_blocks;
        s.holes = g.table_holes as usize;
        s.status = Status::Running;
        let end = start + g.num_new_tokens as usize;
        let whole = start == 0 && end == s.tokens.len();
        let valid = g.num_new_tokens > 0
            && (whole || !s.embed)
            && start.is_multiple_of(bs)
            && end <= s.tokens.len()
            && end <= self.config.max_model_len
            && s.table.len() == end.div_ceil(bs)
            && s.holes == holes
            && table_has_holes(&s.table, holes);
        if !valid {
            let rid = s.request;
            s.computed = 0;
            self.fail(rid, EngineError::Internal(bad_grant(id)));
            return None;
        }
        s.computed = end;
        if !s.zombie && !s.embed {
            self.insert_running(id);
        }
        self.scheduled(id, start, (0, Vec::new()))
    }

    fn apply_extend(&mut self, id: SeqId, n: usize, g: Granted) -> Option<ScheduledSeq> {
        let bs = self.config.block_size;
        let s = self.seqs.get(&id)?;
        let keep = g.table_keep as usize;
        let start = s.computed;
        let valid = g.num_new_tokens as usize == n
            && keep <= s.table.len()
            && keep + 1 >= s.table.len()
            && keep >= s.holes
            && keep + g.new_blocks.len() == (start + n).div_ceil(bs)
            && g.table_holes as usize == s.holes
            && !g.new_blocks.contains(&NO_BLOCK);
        // Mirror the block manager: the copied-away block loses a reference
        // (already counted in the allocation's free count), new blocks gain one.
        let dropped_tail = s
            .table
            .get(keep.min(s.table.len())..)
            .unwrap_or(&[])
            .to_vec();
        self.drop_refs(&dropped_tail);
        self.acquire(&g.new_blocks);
        let s = self.seqs.get_mut(&id)?;
        s.table.truncate(keep);
        s.table.extend_from_slice(&g.new_blocks);
        if !valid {
            let rid = s.request;
            self.fail(rid, EngineError::Internal(bad_grant(id)));
            return None;
        }
        s.computed = start + n;
        self.scheduled(id, start, (g.table_keep, g.new_blocks))
    }

    fn deny_admit(&mut self, id: SeqId) {
        let Some(s) = self.seqs.get(&id) else {
            return;
        };
        if !s.zombie {
            self.insert_waiting(id);
        }
    }

    /// The accounting makes this unreachable; should the block manager still
    /// deny an extension, the sequence is preempted.
    fn deny_extend(&mut self, id: SeqId) {
        if self.seqs.get(&id).is_some_and(|s| !s.zombie) {
            self.preempt(id);
        }
    }

    /// Forget a zombie after its last (sample-free) computation; true when
    /// it held blocks (then the runner must drop it too).
    fn drop_zombie(&mut self, id: SeqId) -> bool {
        match self.seqs.remove(&id) {
            Some(s) if s.status == Status::Running => {
                self.release_table(id, &s.table);
                true
            }
            _ => false,
        }
    }

    /// Forget an embedding sequence after its one step; true when it held
    /// blocks (the runner drops it with the next plan).
    fn finish_embedding(&mut self, id: SeqId) -> bool {
        let Some(s) = self.seqs.remove(&id) else {
            return false;
        };
        let held = s.status == Status::Running;
        if held {
            self.release_table(id, &s.table);
        }
        if let Some(r) = self.requests.get_mut(&s.request) {
            r.set(id, Member::Done);
        }
        self.finish_request_if_done(s.request);
        held
    }

    // ---------------------------------------------------------------- phase 3

    /// Phase 3: apply sampled tokens. Tokens for the other sequences of an
    /// `n > 1` request create them as forks of the first (sent with the next
    /// message); finished sequences are released by the next message.
    pub fn on_step_output(&mut self, out: StepOutput) {
        // Forks first, from the parent's tokens before its own new one.
        for t in &out.tokens {
            if t.finished.is_none() && !self.seqs.contains_key(&t.seq_id) {
                self.start_fork(t.seq_id);
            }
        }
        let mut accepted = Vec::with_capacity(out.tokens.len());
        for t in &out.tokens {
            match self.seqs.get_mut(&t.seq_id) {
                Some(s) if s.zombie => {}
                // A sequence that was waiting for this sample.
                Some(s) if s.status == Status::Running && s.computed == s.tokens.len() => {
                    s.tokens.push(t.token_id);
                    accepted.push(*t);
                }
                // Ended without a sample of its own (the sampler failed its request).
                Some(_) if t.finished.is_some() => accepted.push(*t),
                Some(_) => {}
                None if t.finished.is_some() => self.end_pending_fork(t.seq_id),
                None => {}
            }
        }
        for t in accepted {
            self.after_token(t);
        }
    }

    fn after_token(&mut self, t: SampledToken) {
        let Some(s) = self.seqs.get(&t.seq_id) else {
            return;
        };
        let rid = s.request;
        if t.finished.is_some() {
            self.finish_seq(t.seq_id);
        } else if s.tokens.len() > self.config.max_model_len {
            self.fail(
                rid,
                EngineError::Internal(format!(
                    "sequence {} reached the context length ({}) without finishing",
                    t.seq_id, self.config.max_model_len
                )),
            );
        }
    }

    /// A first token for a not yet started sequence of an `n > 1` request:
    /// the sequence starts as a fork of the request's first sequence.
    fn start_fork(&mut self, child: SeqId) {
        let Some(&rid) = self.owner.get(&child) else {
            return;
        };
        let Some(r) = self.requests.get(&rid) else {
            return;
        };
        if r.member(child) != Some(Member::Pending) {
            return;
        }
        let parent_id = r.seq_ids[0];
        let parent = match self.seqs.get(&parent_id) {
            Some(p) if p.status == Status::Running && !p.zombie && p.computed == p.tokens.len() => {
                p.clone()
            }
            _ => {
                let error = format!("sequence {child} was drawn while its parent was not running");
                self.fail(rid, EngineError::Internal(error));
                return;
            }
        };
        self.acquire(&parent.table);
        self.seqs.insert(
            child,
            Seq {
                runner_knows: false,
                in_flight: None,
                ..parent
            },
        );
        self.forks.push(Fork {
            parent: parent_id,
            child,
        });
        self.insert_running(child);
        if let Some(r) = self.requests.get_mut(&rid) {
            r.set(child, Member::Live);
        }
    }

    /// A not yet started sequence ended with its first token (or was failed
    /// by the sampler): it never needs blocks.
    fn end_pending_fork(&mut self, seq: SeqId) {
        let Some(&rid) = self.owner.get(&seq) else {
            return;
        };
        if let Some(r) = self.requests.get_mut(&rid)
            && r.member(seq) == Some(Member::Pending)
        {
            r.set(seq, Member::Done);
            self.finish_request_if_done(rid);
        }
    }

    fn finish_seq(&mut self, id: SeqId) {
        let Some(s) = self.seqs.remove(&id) else {
            return;
        };
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        if s.status == Status::Running {
            self.release_table(id, &s.table);
            self.dropped.push(id);
        }
        if let Some(r) = self.requests.get_mut(&s.request) {
            r.set(id, Member::Done);
        }
        self.finish_request_if_done(s.request);
    }

    fn finish_request_if_done(&mut self, rid: RequestId) {
        let done = self
            .requests
            .get(&rid)
            .is_some_and(|r| r.members.iter().all(|&m| m == Member::Done));
        if done && let Some(r) = self.requests.remove(&rid) {
            for id in r.seq_ids {
                self.owner.remove(&id);
            }
        }
    }

    // ---------------------------------------------------------------- queries

    /// Requests not yet finished, in arrival order.
    pub fn active_requests(&self) -> Vec<RequestId> {
        let mut v: Vec<(u64, RequestId)> = self
            .requests
            .iter()
            .map(|(id, r)| (r.arrival, *id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Requests rejected or failed since the last call, with the error to
    /// report; the scheduler has already forgotten them.
    pub fn take_rejected(&mut self) -> Vec<(RequestId, EngineError)> {
        std::mem::take(&mut self.rejected)
    }

    /// Preemptions since the last call.
    pub fn take_preemptions(&mut self) -> usize {
        std::mem::take(&mut self.stats.preemptions_untaken)
    }

    /// Preemptions made by the latest [`begin_step`](Self::begin_step); reset
    /// there, not by reading (unlike [`take_preemptions`](Self::take_preemptions)).
    pub fn last_step_preemptions(&self) -> usize {
        self.stats.preemptions_last_step
    }

    /// Preemptions since start.
    pub fn total_preemptions(&self) -> u64 {
        self.stats.preemptions_total
    }

    /// `(queries, hits)` in prompt tokens, of the last allocation's admissions.
    pub fn last_prefix_cache_stats(&self) -> (u32, u32) {
        (
            self.stats.prefix_cache_queries,
            self.stats.prefix_cache_hits,
        )
    }

    /// Sequences holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for admission (new or preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is queued, running, in flight, or pending release.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
            && self.waiting.is_empty()
            && self.releases.is_empty()
            && self.forks.is_empty()
            && self.pending.is_empty()
    }

    /// A sequence's tokens (prompt + sampled), for tests and tools.
    pub fn tokens(&self, seq: SeqId) -> Option<&[TokenId]> {
        self.seqs.get(&seq).map(|s| s.tokens.as_slice())
    }

    /// Sequences whose release goes out with the next message.
    pub fn queued_releases(&self) -> &[SeqId] {
        &self.releases
    }

    /// The scheduler's copy of a running sequence's block table.
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs
            .get(&seq)
            .filter(|s| s.status == Status::Running)
            .map(|s| s.table.as_slice())
    }
}

/// The first `holes` entries of `table` are holes and no other is.
fn table_has_holes(table: &[BlockId], holes: usize) -> bool {
    holes <= table.len()
        && table[..holes].iter().all(|&b| b == NO_BLOCK)
        && !table[holes..].contains(&NO_BLOCK)
}

fn bad_grant(seq: SeqId) -> String {
    format!("the block manager's grant for sequence {seq} does not match its demand")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_manager::{BlockManager, BlockManagerConfig};
    use kiln_protocol::FinishReason;

    fn config(num_blocks: usize, budget: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: 8,
            max_model_len: 64,
            block_size: 4,
            num_blocks,
            enable_prefix_caching: true,
            sliding_window: None,
        }
    }

    struct Rig {
        s: Scheduler,
        b: BlockManager,
    }

    impl Rig {
        fn new(c: SchedulerConfig) -> Rig {
            Rig {
                s: Scheduler::new(c),
                b: BlockManager::new(BlockManagerConfig {
                    num_blocks: c.num_blocks,
                    block_size: c.block_size,
                    enable_prefix_caching: c.enable_prefix_caching,
                    sliding_window: c.sliding_window,
                }),
            }
        }

        fn add(&mut self, rid: RequestId, seqs: &[SeqId], prompt: Vec<TokenId>, max_tokens: u32) {
            self.s.add_request(NewRequest {
                request_id: rid,
                seq_ids: seqs.to_vec(),
                prompt_token_ids: prompt,
                max_tokens,
                arrival: rid,
                embed: false,
                prompt_logprobs: false,
            });
        }

        fn plan(&mut self) -> (AllocateForStep, StepAllocation, StepPlan) {
            let msg = self.s.begin_step().expect("not idle");
            let alloc = self.b.allocate_for_step(msg.clone());
            self.b.check_invariants().unwrap();
            let plan = self.s.finish_step(alloc.clone());
            (msg, alloc, plan)
        }

        /// Every sampling row draws token 100 + seq (and forks their own).
        fn output(&mut self, plan: &StepPlan, finish: &[SeqId]) {
            let mut tokens = Vec::new();
            for s in plan.seqs.iter().filter(|s| s.num_samples > 0) {
                let mut targets = vec![s.seq_id];
                if s.num_samples > 1 {
                    targets.extend((1..s.num_samples as u64).map(|i| s.seq_id + i));
                }
                for t in targets {
                    tokens.push(SampledToken {
                        seq_id: t,
                        token_id: 100 + t as u32,
                        finished: finish.contains(&t).then_some(FinishReason::Stop),
                    });
                }
            }
            self.s.on_step_output(StepOutput {
                step_id: plan.step_id,
                tokens,
            });
        }
    }

    fn scheduled(plan: &StepPlan) -> Vec<(SeqId, usize, u32)> {
        plan.seqs
            .iter()
            .map(|s| (s.seq_id, s.token_ids.len(), s.num_samples))
            .collect()
    }

    #[test]
    fn embeddings_run_whole_in_one_step_and_free_their_blocks() {
        let mut r = Rig::new(config(16, 8));
        r.s.add_request(NewRequest {
            request_id: 1,
            seq_ids: vec![1],
            prompt_token_ids: vec![1; 6],
            max_tokens: 0,
            arrival: 1,
            embed: true,
            prompt_logprobs: false,
        });
        r.add(2, &[2], vec![2; 4], 2);
        r.s.add_request(NewRequest {
            request_id: 3,
            seq_ids: vec![3],
            prompt_token_ids: vec![3; 5],
            max_tokens: 0,
            arrival: 3,
            embed: true,
            prompt_logprobs: false,
        });
        // A prompt may be chunked; an embedding never is: seq 3 waits.
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(1, 6, 0), (2, 2, 0)]);
        assert!(p.seqs[0].embed && !p.seqs[1].embed);
        r.output(&p, &[]);
        assert!(!r.s.active_requests().contains(&1));
        let (msg, alloc, p) = r.plan();
        assert_eq!(
            msg.releases,
            vec![1],
            "the embedding's blocks go back at once"
        );
        assert_eq!(p.dropped, vec![1]);
        assert_eq!(scheduled(&p), vec![(2, 2, 1), (3, 5, 0)]);
        assert_eq!(alloc.num_free_blocks, 16 - 1 - 2);
        r.output(&p, &[]);
        let (msg, _, _) = r.plan();
        assert_eq!(msg.releases, vec![3]);
    }

    #[test]
    fn embeddings_that_cannot_run_whole_are_rejected() {
        let mut s = Scheduler::new(config(4, 8));
        s.add_request(NewRequest {
            request_id: 1,
            seq_ids: vec![1],
            prompt_token_ids: vec![1; 9],
            max_tokens: 0,
            arrival: 1,
            embed: true,
            prompt_logprobs: false,
        });
        let rejected = s.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0]
                .1
                .to_string()
                .contains("--max-num-batched-tokens")
        );
    }

    #[test]
    fn idle_scheduler_returns_none() {
        let mut s = Scheduler::new(config(8, 8));
        assert!(s.begin_step().is_none());
        assert!(s.is_idle());
    }

    #[test]
    fn chunked_prefill_then_decode_under_one_budget() {
        let mut r = Rig::new(config(32, 8));
        r.add(1, &[1], (0..20).collect(), 4);
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(1, 8, 0)]);
        r.output(&p, &[]);
        r.add(2, &[2], (50..53).collect(), 4);
        let (_, _, p) = r.plan();
        // The running prefill takes the whole budget; the new one waits.
        assert_eq!(scheduled(&p), vec![(1, 8, 0)]);
        r.output(&p, &[]);
        let (_, _, p) = r.plan();
        // 4 prompt tokens finish seq 1 (and sample); seq 2 gets a chunk of 3... of 4 left.
        assert_eq!(scheduled(&p), vec![(1, 4, 1), (2, 3, 1)]);
        assert_eq!(p.seqs[0].num_computed_tokens, 16);
        r.output(&p, &[]);
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(1, 1, 1), (2, 1, 1)]);
        assert_eq!(p.seqs[0].token_ids, vec![101]);
    }

    #[test]
    fn admission_is_fcfs_and_never_skips() {
        let mut c = config(6, 64);
        c.max_num_seqs = 8;
        let mut r = Rig::new(c);
        r.add(1, &[1], vec![1; 12], 1); // 3 blocks
        r.add(2, &[2], vec![2; 16], 1); // 4 blocks: does not fit next to 1
        r.add(3, &[3], vec![3; 2], 1); // would fit, but must not overtake 2
        let (msg, _, p) = r.plan();
        assert_eq!(msg.demands.len(), 1);
        assert_eq!(scheduled(&p), vec![(1, 12, 1)]);
        r.output(&p, &[1]);
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(2, 16, 1), (3, 2, 1)]);
        assert_eq!(p.dropped, vec![1]);
    }

    #[test]
    fn max_num_seqs_limits_running_sequences() {
        let mut c = config(32, 64);
        c.max_num_seqs = 2;
        let mut r = Rig::new(c);
        for i in 1..=3 {
            r.add(i, &[i], vec![i as u32; 3], 5);
        }
        let (_, _, p) = r.plan();
        assert_eq!(p.seqs.len(), 2);
        r.output(&p, &[]);
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(1, 1, 1), (2, 1, 1)]);
        assert_eq!(r.s.num_waiting(), 1);
    }

    #[test]
    fn preemption_takes_the_newest_and_readmits_it_first() {
        // 4 blocks of 4: two sequences of 8 tokens fill the pool.
        let mut r = Rig::new(config(4, 64));
        r.add(1, &[1], vec![1; 8], 8);
        r.add(2, &[2], vec![2; 8], 8);
        r.add(3, &[3], vec![3; 1], 2);
        let (_, _, p) = r.plan();
        assert_eq!(p.seqs.len(), 2);
        r.output(&p, &[]);
        // Both need a fifth block; only one can have it: 2 is preempted.
        let (msg, _, p) = r.plan();
        assert_eq!(msg.releases, vec![2]);
        assert_eq!(scheduled(&p), vec![(1, 1, 1)]);
        assert_eq!(p.dropped, vec![2]);
        assert_eq!(r.s.last_step_preemptions(), 1);
        assert_eq!(r.s.take_preemptions(), 1);
        assert_eq!((r.s.num_running(), r.s.num_waiting()), (1, 2));
        r.output(&p, &[1]);
        // Seq 2 is readmitted before request 3 with its whole history recomputed.
        let (_, alloc, p) = r.plan();
        assert_eq!(p.seqs[0].seq_id, 2);
        assert_eq!(
            p.seqs[0].num_computed_tokens as usize,
            alloc.prefix_cache_hits as usize
        );
        assert_eq!(
            p.seqs[0].num_computed_tokens as usize + p.seqs[0].token_ids.len(),
            9
        );
        assert_eq!(p.seqs[0].table_keep, 0);
        assert_eq!(r.s.total_preemptions(), 1);
    }

    #[test]
    fn forks_share_the_prompt_and_send_full_tables() {
        let mut r = Rig::new(config(16, 64));
        r.add(1, &[10, 11, 12], (0..6).collect(), 4);
        let (_, _, p) = r.plan();
        assert_eq!(scheduled(&p), vec![(10, 6, 3)]);
        r.output(&p, &[]);
        let (msg, alloc, p) = r.plan();
        assert_eq!(msg.forks.len(), 2);
        assert_eq!(
            alloc.copies.len(),
            2,
            "two of three copy the shared half block"
        );
        assert_eq!(p.block_copies, alloc.copies);
        for s in &p.seqs {
            assert_eq!(s.num_computed_tokens, 6);
            assert_eq!(s.token_ids, vec![100 + s.seq_id as u32]);
            assert_eq!(s.num_samples, 1);
            // The runner never saw the children: whole tables.
            if s.seq_id != 10 {
                assert_eq!(s.table_keep, 0);
                assert_eq!(s.new_blocks, r.b.block_table(s.seq_id).unwrap());
            }
            assert_eq!(r.s.block_table(s.seq_id), r.b.block_table(s.seq_id));
        }
        assert!(
            msg.demands
                .iter()
                .all(|d| matches!(d.kind, DemandKind::Extend { .. }))
        );
        assert!(alloc.grants.iter().all(|g| g.granted.is_some()));
    }

    #[test]
    fn forks_ending_with_their_first_token_never_fork() {
        let mut r = Rig::new(config(16, 64));
        r.add(1, &[10, 11], (0..6).collect(), 1);
        let (_, _, p) = r.plan();
        r.output(&p, &[10, 11]);
        let (msg, _, p) = r.plan();
        assert!(msg.forks.is_empty());
        assert_eq!(msg.releases, vec![10]);
        assert_eq!(p.dropped, vec![10]);
        assert!(r.s.active_requests().is_empty());
        assert!(r.s.begin_step().is_none());
    }

    #[test]
    fn copy_on_write_block_is_part_of_the_running_demand() {
        // After the prompt (6 tokens, 2 blocks) the pool has 1 free block:
        // the parent can copy its shared half block, the child then owns it.
        let mut r = Rig::new(config(3, 64));
        r.add(1, &[10, 11], (0..6).collect(), 4);
        let (_, _, p) = r.plan();
        r.output(&p, &[]);
        let (msg, alloc, p) = r.plan();
        assert!(msg.releases.is_empty());
        assert_eq!(alloc.copies.len(), 1);
        assert_eq!(p.seqs.len(), 2);
        r.output(&p, &[]);
        // Next step both are at 8 tokens: no block needed, none copied.
        let (_, alloc, p) = r.plan();
        assert!(alloc.copies.is_empty());
        assert_eq!(p.seqs.len(), 2);
    }

    #[test]
    fn abort_while_admission_in_flight_still_computes_then_releases() {
        let mut r = Rig::new(config(16, 64));
        r.add(1, &[1], (0..9).collect(), 4);
        let msg = r.s.begin_step().unwrap();
        let alloc = r.b.allocate_for_step(msg);
        r.s.abort(1);
        let p = r.s.finish_step(alloc);
        // Computed (its blocks are in the prefix cache now), but not sampled.
        assert_eq!(scheduled(&p), vec![(1, 9, 0)]);
        r.output(&p, &[]);
        r.add(2, &[2], (0..9).collect(), 4);
        let (msg, alloc, p) = r.plan();
        assert_eq!(msg.releases, vec![1]);
        assert_eq!(p.dropped, vec![1]);
        assert_eq!(alloc.prefix_cache_hits, 8);
        let (_, _, _) = (msg, alloc, p);
        r.s.abort(2);
        let msg = r.s.begin_step().unwrap();
        r.b.allocate_for_step(msg);
        assert_eq!(r.b.num_free_blocks(), 16);
    }

    #[test]
    fn abort_in_every_state_frees_everything() {
        for when in 0..4 {
            let mut r = Rig::new(config(8, 4));
            r.add(1, &[1, 2], (0..10).collect(), 6);
            r.add(2, &[3], (0..10).collect(), 6);
            for _ in 0..when {
                let (_, _, p) = r.plan();
                r.output(&p, &[]);
            }
            r.s.abort(1);
            r.s.abort(2);
            r.s.abort(3); // unknown: ignored
            while let Some(msg) = r.s.begin_step() {
                let a = r.b.allocate_for_step(msg);
                let p = r.s.finish_step(a);
                assert!(p.seqs.is_empty());
            }
            assert_eq!(r.b.num_free_blocks(), 8, "abort after {when} steps");
            assert_eq!(r.b.num_sequences(), 0);
        }
    }

    #[test]
    fn tokens_for_aborted_sequences_are_ignored() {
        let mut r = Rig::new(config(8, 64));
        r.add(1, &[1, 2], (0..5).collect(), 6);
        let (_, _, p) = r.plan();
        r.s.abort(1);
        r.output(&p, &[]);
        assert!(r.s.tokens(1).is_none());
        assert!(r.s.tokens(2).is_none());
        let msg = r.s.begin_step().unwrap();
        assert!(msg.forks.is_empty());
        assert_eq!(msg.releases, vec![1]);
    }

    #[test]
    fn impossible_requests_are_rejected() {
        let mut s = Scheduler::new(config(4, 8));
        let base = NewRequest {
            request_id: 1,
            seq_ids: vec![1],
            prompt_token_ids: vec![1; 10],
            max_tokens: 4,
            arrival: 1,
            embed: false,
            prompt_logprobs: false,
        };
        let cases = [
            NewRequest {
                seq_ids: vec![],
                ..base.clone()
            },
            NewRequest {
                prompt_token_ids: vec![],
                ..base.clone()
            },
            NewRequest {
                max_tokens: 0,
                ..base.clone()
            },
            // 16 KV tokens fit the pool only without the last sampled token.
            NewRequest {
                max_tokens: 8,
                ..base.clone()
            },
            NewRequest {
                prompt_token_ids: vec![1; 60],
                max_tokens: 5,
                ..base.clone()
            },
            NewRequest {
                seq_ids: vec![5, 5],
                ..base.clone()
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            s.add_request(NewRequest {
                request_id: i as u64,
                ..c
            });
        }
        let rejected = s.take_rejected();
        assert_eq!(rejected.len(), 6);
        assert!(matches!(
            rejected[4].1,
            EngineError::ContextLengthExceeded { .. }
        ));
        assert!(rejected[3].1.to_string().contains("KV cache"));
        assert!(s.begin_step().is_none());
        // 10 + 7 - 1 = 16 KV tokens fit exactly.
        s.add_request(NewRequest {
            max_tokens: 7,
            ..base
        });
        assert!(s.take_rejected().is_empty());
        assert!(s.begin_step().is_some());
    }

    #[test]
    fn a_lost_sample_fails_the_request() {
        let mut r = Rig::new(config(8, 64));
        r.add(1, &[1], (0..5).collect(), 6);
        let (_, _, p) = r.plan();
        assert_eq!(p.seqs[0].num_samples, 1);
        r.s.on_step_output(StepOutput {
            step_id: p.step_id,
            tokens: vec![],
        });
        let msg = r.s.begin_step().unwrap();
        assert_eq!(msg.releases, vec![1]);
        let rejected = r.s.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 1);
    }

    #[test]
    fn a_sequence_outgrowing_the_context_is_failed() {
        let mut c = config(16, 64);
        c.max_model_len = 8;
        let mut r = Rig::new(c);
        r.add(1, &[1], (0..6).collect(), 2);
        let (_, _, p) = r.plan();
        r.output(&p, &[]);
        let (_, _, p) = r.plan();
        r.output(&p, &[]); // the sampler forgot max_tokens: 8 tokens, fine
        let (_, _, p) = r.plan();
        assert_eq!(p.seqs[0].num_computed_tokens, 7);
        r.output(&p, &[]); // a ninth token would need position 8
        assert_eq!(r.s.take_rejected().len(), 1);
        assert!(r.s.active_requests().is_empty());
    }

    #[test]
    fn stats_report_the_last_allocation() {
        let mut r = Rig::new(config(16, 64));
        r.add(1, &[1], (0..9).collect(), 1);
        let (_, _, p) = r.plan();
        r.output(&p, &[1]);
        r.add(2, &[2], (0..9).collect(), 1);
        let (_, _, _) = r.plan();
        assert_eq!(r.s.last_prefix_cache_stats(), (9, 8));
    }

    #[test]
    fn config_validation_names_the_setting() {
        let mut c = config(4, 8);
        assert!(c.validate().is_ok());
        c.max_num_seqs = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_num_seqs")
        );
        let s = Scheduler::new(c);
        assert_eq!(s.config().max_num_seqs, 1);
    }
}
