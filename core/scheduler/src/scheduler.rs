//! The continuous-batching scheduler.
//!
//! There are no prefill and decode phases: each step gives every scheduled
//! sequence some tokens under one token budget (`max_num_batched_tokens`) —
//! a chunk of its prompt (chunked prefill), a recomputed history after
//! preemption, or its last sampled token. Running sequences go first, in
//! arrival order; waiting ones are admitted first-come first-served and never
//! overtake each other. When the KV pool cannot hold the running sequences'
//! next tokens, the newest running sequences are preempted by recompute: their
//! blocks are released and they return to the front of the waiting queue.
//!
//! A step is three calls, so that the block manager can be another actor that
//! receives one batched message per step: [`Scheduler::begin_step`] →
//! (block manager) → [`Scheduler::finish_step`] → (model runner, sampler) →
//! [`Scheduler::on_step_output`].
//!
//! Length limits: the engine admits a request only when prompt + `max_tokens`
//! fits `max_model_len`, and the sampler ends a sequence at `max_tokens`; the
//! scheduler never schedules a sequence past `max_model_len` and fails a
//! request that could never fit the KV pool instead of waiting forever.

use std::collections::{HashMap, VecDeque};

use kiln_protocol::step::{
    AllocateForStep, BlockDemand, DemandKind, Fork, ScheduledSeq, StepAllocation, StepOutput,
    StepPlan,
};
use kiln_protocol::{EngineError, RequestId, SeqId, TokenId};

/// Scheduler settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget per step.
    pub max_num_batched_tokens: usize,
    /// Most sequences per step.
    pub max_num_seqs: usize,
    /// Served context length.
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Blocks in the KV pool.
    pub num_blocks: usize,
    /// Look up and register prefix-cache blocks.
    pub enable_prefix_caching: bool,
}

/// A request entering the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// Its id.
    pub request_id: RequestId,
    /// One id per sequence (`n`); the first is prefilled, the others fork from it.
    pub seq_ids: Vec<SeqId>,
    /// `[prompt_len]` prompt tokens.
    pub prompt_token_ids: Vec<TokenId>,
    /// Resolved `max_tokens`.
    pub max_tokens: u32,
    /// Arrival order key (smaller arrived earlier).
    pub arrival: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    /// Sent to the block manager in an `Admit` demand, reply pending.
    Admitting,
    Running,
}

#[derive(Debug, Clone)]
struct Seq {
    request: RequestId,
    /// Prompt plus generated tokens.
    tokens: Vec<TokenId>,
    /// Tokens whose KV is (or is being) computed.
    computed: usize,
    /// Blocks the sequence holds (for the block estimate).
    held_blocks: usize,
    /// The last block is shared with a fork sibling and partial: the next
    /// extension copies it.
    shared_tail: bool,
    status: Status,
    arrival: u64,
}

#[derive(Debug, Clone)]
struct Request {
    seq_ids: Vec<SeqId>,
    forked: bool,
    live: usize,
    arrival: u64,
}

#[derive(Debug, Clone)]
enum Pending {
    Admit(SeqId),
    Extend(SeqId, usize),
}

/// The pure scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    seqs: HashMap<SeqId, Seq>,
    requests: HashMap<RequestId, Request>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    releases: Vec<SeqId>,
    forks: Vec<Fork>,
    dropped: Vec<SeqId>,
    in_flight: Vec<Pending>,
    free_blocks: usize,
    /// Blocks held by sequences in `releases` (returned before the next demands).
    release_blocks: usize,
    step_id: u64,
    rejected: Vec<(RequestId, EngineError)>,
    preemptions_since_taken: usize,
    preemptions_total: u64,
}

impl Scheduler {
    /// An idle scheduler.
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            seqs: HashMap::new(),
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            releases: Vec::new(),
            forks: Vec::new(),
            dropped: Vec::new(),
            in_flight: Vec::new(),
            free_blocks: config.num_blocks,
            release_blocks: 0,
            step_id: 0,
            rejected: Vec::new(),
            preemptions_since_taken: 0,
            preemptions_total: 0,
        }
    }

    /// Queue a request.
    pub fn add_request(&mut self, r: NewRequest) {
        let Some(&first) = r.seq_ids.first() else {
            self.rejected.push((
                r.request_id,
                EngineError::Internal("a request needs at least one sequence".into()),
            ));
            return;
        };
        let worst =
            (r.prompt_token_ids.len() + r.max_tokens as usize).min(self.config.max_model_len);
        if worst.div_ceil(self.config.block_size) > self.config.num_blocks
            || r.prompt_token_ids.is_empty()
        {
            self.rejected.push((
                r.request_id,
                EngineError::InvalidRequest {
                    message: format!(
                        "the request needs up to {worst} tokens of KV cache but the cache holds {} tokens",
                        self.config.num_blocks * self.config.block_size
                    ),
                    param: None,
                },
            ));
            return;
        }
        self.seqs.insert(
            first,
            Seq {
                request: r.request_id,
                tokens: r.prompt_token_ids,
                computed: 0,
                held_blocks: 0,
                shared_tail: false,
                status: Status::Waiting,
                arrival: r.arrival,
            },
        );
        self.insert_waiting(first);
        self.requests.insert(
            r.request_id,
            Request {
                live: 1,
                seq_ids: r.seq_ids,
                forked: false,
                arrival: r.arrival,
            },
        );
    }

    fn order_key(&self, seq: SeqId) -> (u64, SeqId) {
        (self.seqs.get(&seq).map_or(u64::MAX, |s| s.arrival), seq)
    }

    fn insert_waiting(&mut self, seq: SeqId) {
        let key = self.order_key(seq);
        let pos = self
            .waiting
            .iter()
            .position(|&s| self.order_key(s) > key)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(pos, seq);
    }

    fn insert_running(&mut self, seq: SeqId) {
        let key = self.order_key(seq);
        let pos = self
            .running
            .iter()
            .position(|&s| self.order_key(s) > key)
            .unwrap_or(self.running.len());
        self.running.insert(pos, seq);
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    /// Phase 1: decide what runs and ask for its KV slots. `None` when idle.
    pub fn begin_step(&mut self) -> Option<AllocateForStep> {
        if self.running.is_empty()
            && self.waiting.is_empty()
            && self.releases.is_empty()
            && self.forks.is_empty()
        {
            return None;
        }
        self.step_id += 1;
        let mut budget = Budget {
            tokens: self.config.max_num_batched_tokens,
            seqs: self.config.max_num_seqs,
            // Blocks released in this message come back before the demands
            // (optimistic for shared blocks; a denial is handled in finish_step).
            blocks: self.free_blocks + std::mem::take(&mut self.release_blocks),
        };
        let mut demands = Vec::new();
        self.schedule_running(&mut budget, &mut demands);
        self.admit_waiting(&mut budget, &mut demands);
        Some(AllocateForStep {
            step_id: self.step_id,
            releases: std::mem::take(&mut self.releases),
            forks: std::mem::take(&mut self.forks),
            demands,
        })
    }

    fn queue_release(&mut self, id: SeqId, held_blocks: usize) {
        self.releases.push(id);
        self.release_blocks += held_blocks;
    }

    fn schedule_running(&mut self, budget: &mut Budget, demands: &mut Vec<BlockDemand>) {
        let mut i = 0;
        while i < self.running.len() {
            if budget.tokens == 0 || budget.seqs == 0 {
                break;
            }
            let id = self.running[i];
            let s = &self.seqs[&id];
            let remaining = s.tokens.len().saturating_sub(s.computed);
            if remaining == 0 {
                i += 1;
                continue;
            }
            let n = remaining.min(budget.tokens);
            let cow =
                usize::from(s.shared_tail && !s.computed.is_multiple_of(self.config.block_size));
            let need = self
                .blocks_for(s.computed + n)
                .saturating_sub(s.held_blocks)
                + cow;
            if need > budget.blocks {
                // Preempt the newest running sequence (possibly this one) and retry.
                let victim = *self.running.last().unwrap_or(&id);
                budget.blocks += self.preempt(victim);
                // The freed blocks are returned before this step's demands.
                self.release_blocks = 0;
                continue;
            }
            let (start, end) = (s.computed, s.computed + n);
            demands.push(BlockDemand {
                seq_id: id,
                kind: DemandKind::Extend {
                    token_ids: s.tokens[start..end].to_vec(),
                },
            });
            self.in_flight.push(Pending::Extend(id, n));
            budget.tokens -= n;
            budget.seqs -= 1;
            budget.blocks -= need;
            i += 1;
        }
    }

    fn admit_waiting(&mut self, budget: &mut Budget, demands: &mut Vec<BlockDemand>) {
        while let Some(&id) = self.waiting.front() {
            if budget.tokens == 0 || budget.seqs == 0 {
                break;
            }
            let s = &self.seqs[&id];
            let n = s.tokens.len().min(budget.tokens);
            let need = self.blocks_for(n);
            if need > budget.blocks {
                break;
            }
            demands.push(BlockDemand {
                seq_id: id,
                kind: DemandKind::Admit {
                    token_ids: s.tokens.clone(),
                    max_new_tokens: n as u32,
                    use_prefix_cache: self.config.enable_prefix_caching,
                },
            });
            self.waiting.pop_front();
            if let Some(s) = self.seqs.get_mut(&id) {
                s.status = Status::Admitting;
            }
            self.in_flight.push(Pending::Admit(id));
            budget.tokens -= n;
            budget.seqs -= 1;
            budget.blocks -= need;
        }
    }

    /// Preempt by recompute; returns the blocks the sequence held.
    fn preempt(&mut self, id: SeqId) -> usize {
        let Some(s) = self.seqs.get_mut(&id) else {
            return 0;
        };
        let held = s.held_blocks;
        s.status = Status::Waiting;
        s.computed = 0;
        s.held_blocks = 0;
        s.shared_tail = false;
        self.running.retain(|&r| r != id);
        self.queue_release(id, held);
        self.dropped.push(id);
        self.insert_waiting(id);
        self.preemptions_since_taken += 1;
        self.preemptions_total += 1;
        held
    }

    fn samples_for(&self, id: SeqId, reaches_end: bool) -> u32 {
        if !reaches_end {
            return 0;
        }
        let Some(s) = self.seqs.get(&id) else {
            return 0;
        };
        match self.requests.get(&s.request) {
            Some(r) if !r.forked && r.seq_ids.len() > 1 && r.seq_ids[0] == id => {
                r.seq_ids.len() as u32
            }
            _ => 1,
        }
    }

    /// Phase 2: apply the block manager's answer and produce the step's plan.
    pub fn finish_step(&mut self, alloc: StepAllocation) -> StepPlan {
        self.free_blocks = alloc.num_free_blocks as usize;
        let pending = std::mem::take(&mut self.in_flight);
        let mut seqs = Vec::new();
        for (p, grant) in pending.into_iter().zip(alloc.grants) {
            let (id, granted) = match p {
                Pending::Admit(id) | Pending::Extend(id, _) if id == grant.seq_id => {
                    (id, grant.granted)
                }
                _ => {
                    // The reply does not match the demands (a wiring bug): fail safe.
                    if grant.granted.is_some() {
                        self.queue_release(grant.seq_id, 0);
                    }
                    continue;
                }
            };
            let Some(s) = self.seqs.get(&id) else {
                // Aborted while the allocation was in flight: give the blocks back.
                if let Some(g) = granted {
                    self.queue_release(id, g.table_keep as usize + g.new_blocks.len());
                }
                continue;
            };
            let status = s.status;
            match (p, granted) {
                (Pending::Admit(_), Some(g)) if status == Status::Admitting => {
                    let start = g.num_cached_tokens as usize;
                    let n = g.num_new_tokens as usize;
                    let reaches_end = start + n == s.tokens.len();
                    let token_ids = s.tokens[start..start + n].to_vec();
                    let samples = self.samples_for(id, reaches_end);
                    if let Some(s) = self.seqs.get_mut(&id) {
                        s.status = Status::Running;
                        s.computed = start + n;
                        s.held_blocks = g.new_blocks.len();
                    }
                    self.insert_running(id);
                    seqs.push(ScheduledSeq {
                        seq_id: id,
                        token_ids,
                        num_computed_tokens: start as u32,
                        table_keep: 0,
                        new_blocks: g.new_blocks,
                        num_samples: samples,
                    });
                }
                (Pending::Admit(_), None) => {
                    if let Some(s) = self.seqs.get_mut(&id) {
                        s.status = Status::Waiting;
                    }
                    self.insert_waiting(id);
                }
                (Pending::Extend(_, n), Some(g)) if status == Status::Running => {
                    let start = s.computed;
                    let token_ids = s.tokens[start..start + n].to_vec();
                    let samples = self.samples_for(id, start + n == s.tokens.len());
                    if let Some(s) = self.seqs.get_mut(&id) {
                        s.computed = start + n;
                        s.held_blocks = g.table_keep as usize + g.new_blocks.len();
                        s.shared_tail = false;
                    }
                    seqs.push(ScheduledSeq {
                        seq_id: id,
                        token_ids,
                        num_computed_tokens: start as u32,
                        table_keep: g.table_keep,
                        new_blocks: g.new_blocks,
                        num_samples: samples,
                    });
                }
                (Pending::Extend(..), None) => {
                    self.preempt(id);
                }
                (_, Some(g)) => self.queue_release(id, g.table_keep as usize + g.new_blocks.len()),
            }
        }
        StepPlan {
            step_id: alloc.step_id,
            dropped: std::mem::take(&mut self.dropped),
            block_copies: alloc.copies,
            seqs,
        }
    }

    /// Phase 3: apply sampled tokens; finished sequences release their blocks
    /// in the next step's message.
    pub fn on_step_output(&mut self, out: StepOutput) {
        // Forks first: a parent that ends with its first token still hands its
        // prompt blocks to its siblings (the block manager forks before releasing).
        for t in &out.tokens {
            if !self.seqs.contains_key(&t.seq_id) {
                self.create_fork(t.seq_id);
            }
        }
        for t in &out.tokens {
            let Some(s) = self.seqs.get_mut(&t.seq_id) else {
                continue;
            };
            s.tokens.push(t.token_id);
            if s.tokens.len() > self.config.max_model_len && t.finished.is_none() {
                // The engine admits only requests that fit; this would be a bug upstream.
                let rid = s.request;
                self.rejected.push((
                    rid,
                    EngineError::Internal("a sequence outgrew max_model_len".into()),
                ));
                self.abort(rid);
            }
        }
        for t in &out.tokens {
            if t.finished.is_some() {
                self.finish_seq(t.seq_id);
            }
        }
    }

    /// Create the fork child `child` of an `n > 1` request from its first sequence.
    fn create_fork(&mut self, child: SeqId) -> bool {
        let Some((rid, parent)) = self
            .requests
            .iter()
            .find(|(_, r)| !r.forked && r.seq_ids.iter().skip(1).any(|&s| s == child))
            .map(|(rid, r)| (*rid, r.seq_ids[0]))
        else {
            return false;
        };
        let Some(p) = self.seqs.get(&parent).cloned() else {
            return false;
        };
        let bs = self.config.block_size;
        // The parent's history up to the shared prompt (its own new token is appended separately).
        let base = p.tokens[..p.computed].to_vec();
        let shared_tail = !p.computed.is_multiple_of(bs);
        for &sid in self.requests[&rid].seq_ids.clone().iter().skip(1) {
            self.seqs.insert(
                sid,
                Seq {
                    tokens: base.clone(),
                    shared_tail,
                    ..p.clone()
                },
            );
            self.forks.push(Fork { parent, child: sid });
            self.insert_running(sid);
        }
        if let Some(s) = self.seqs.get_mut(&parent) {
            s.shared_tail = shared_tail;
        }
        if let Some(r) = self.requests.get_mut(&rid) {
            r.forked = true;
            r.live = r.seq_ids.len();
        }
        true
    }

    fn finish_seq(&mut self, id: SeqId) {
        let Some(s) = self.seqs.remove(&id) else {
            return;
        };
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&w| w != id);
        self.queue_release(id, s.held_blocks);
        self.dropped.push(id);
        if let Some(r) = self.requests.get_mut(&s.request) {
            r.live = r.live.saturating_sub(1);
            if r.live == 0 {
                self.requests.remove(&s.request);
            }
        }
    }

    /// Abort a request in any state.
    pub fn abort(&mut self, request: RequestId) {
        let Some(r) = self.requests.remove(&request) else {
            return;
        };
        for id in r.seq_ids {
            if let Some(s) = self.seqs.remove(&id) {
                self.running.retain(|&x| x != id);
                self.waiting.retain(|&x| x != id);
                if s.status != Status::Waiting || s.held_blocks > 0 {
                    self.queue_release(id, s.held_blocks);
                    self.dropped.push(id);
                }
            }
        }
    }

    /// Requests not yet finished.
    pub fn active_requests(&self) -> Vec<RequestId> {
        let mut v: Vec<(u64, RequestId)> = self
            .requests
            .iter()
            .map(|(id, r)| (r.arrival, *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Requests the scheduler gave up on (to be failed by the caller).
    pub fn take_rejected(&mut self) -> Vec<(RequestId, EngineError)> {
        std::mem::take(&mut self.rejected)
    }

    /// Preemptions since the last call.
    pub fn take_preemptions(&mut self) -> usize {
        std::mem::take(&mut self.preemptions_since_taken)
    }

    /// Preemptions since start.
    pub fn total_preemptions(&self) -> u64 {
        self.preemptions_total
    }

    /// Sequences holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is queued, running or pending release.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
            && self.waiting.is_empty()
            && self.releases.is_empty()
            && self.forks.is_empty()
    }

    /// A sequence's tokens (prompt + generated), for tests and tools.
    pub fn tokens(&self, seq: SeqId) -> Option<&[TokenId]> {
        self.seqs.get(&seq).map(|s| s.tokens.as_slice())
    }
}

struct Budget {
    tokens: usize,
    seqs: usize,
    blocks: usize,
}
