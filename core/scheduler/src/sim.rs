//! A synchronous simulator: [`Scheduler`] and [`BlockManager`] wired
//! together with a stand-in for the model and the sampler. Every step it
//! checks the invariants (block accounting, token budget, sequence limit, and
//! that each sequence's KV is computed exactly over its own tokens, in order,
//! from position 0). The engine's and this crate's tests use it.

use std::collections::HashMap;

use kiln_protocol::step::{SampledToken, StepAllocation, StepOutput, StepPlan};
use kiln_protocol::{FinishReason, RequestId, SeqId, TokenId};

use crate::block_manager::{BlockManager, BlockManagerConfig};
use crate::scheduler::{NewRequest, Scheduler, SchedulerConfig};

/// Simulator settings.
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
    /// Prefix caching.
    pub enable_prefix_caching: bool,
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
        }
    }
}

#[derive(Debug, Clone)]
struct SimSeq {
    request: RequestId,
    known: Vec<TokenId>,
    kv: Vec<TokenId>,
    generated: Vec<TokenId>,
    max_tokens: usize,
    done: bool,
    admitted: bool,
}

/// The stand-in for model and sampler: next token after a history, and whether it ends the sequence.
pub type SampleFn<'a> = dyn FnMut(SeqId, &[TokenId]) -> (TokenId, bool) + 'a;

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The block manager's answer.
    pub allocation: StepAllocation,
    /// The plan that ran.
    pub plan: StepPlan,
}

/// The simulator.
pub struct Sim {
    /// The scheduler under test.
    pub scheduler: Scheduler,
    /// The block manager under test.
    pub blocks: BlockManager,
    config: SimConfig,
    seqs: HashMap<SeqId, SimSeq>,
    requests: HashMap<RequestId, Vec<SeqId>>,
    finished: HashMap<RequestId, Vec<Vec<TokenId>>>,
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
            }),
            blocks: BlockManager::new(BlockManagerConfig {
                num_blocks: config.num_blocks,
                block_size: config.block_size,
                enable_prefix_caching: config.enable_prefix_caching,
            }),
            config,
            seqs: HashMap::new(),
            requests: HashMap::new(),
            finished: HashMap::new(),
            arrivals: 0,
            steps: 0,
            first_scheduled: HashMap::new(),
        }
    }

    /// Queue a request with `n` sequences (ids `request·1000 + i`).
    pub fn add(&mut self, request: RequestId, prompt: Vec<TokenId>, max_tokens: usize, n: usize) {
        let ids: Vec<SeqId> = (0..n as u64).map(|i| request * 1000 + i).collect();
        for &id in &ids {
            self.seqs.insert(
                id,
                SimSeq {
                    request,
                    known: prompt.clone(),
                    kv: Vec::new(),
                    generated: Vec::new(),
                    max_tokens,
                    done: false,
                    admitted: false,
                },
            );
        }
        self.requests.insert(request, ids.clone());
        self.arrivals += 1;
        self.scheduler.add_request(NewRequest {
            request_id: request,
            seq_ids: ids,
            prompt_token_ids: prompt,
            max_tokens: max_tokens as u32,
            arrival: self.arrivals,
        });
    }

    /// Abort a request.
    pub fn abort(&mut self, request: RequestId) {
        self.scheduler.abort(request);
        if let Some(ids) = self.requests.remove(&request) {
            for id in ids {
                self.seqs.remove(&id);
            }
        }
    }

    /// Requests still running or waiting.
    pub fn active(&self) -> usize {
        self.requests.len()
    }

    /// One step; `sample(seq, history)` gives the next token after the
    /// sequence's tokens so far, and whether it ends the sequence.
    pub fn step(&mut self, sample: &mut SampleFn<'_>) -> Option<StepReport> {
        let msg = self.scheduler.begin_step()?;
        self.steps += 1;
        let allocation = self.blocks.allocate_for_step(msg);
        if let Err(e) = self.blocks.check_invariants() {
            panic!("block manager invariant broken at step {}: {e}", self.steps);
        }
        let plan = self.scheduler.finish_step(allocation.clone());
        for (rid, _) in self.scheduler.take_rejected() {
            self.finish_request_early(rid);
        }
        self.check_plan(&plan);
        let out = self.run_model(&plan, sample);
        self.scheduler.on_step_output(out);
        Some(StepReport { allocation, plan })
    }

    fn finish_request_early(&mut self, rid: RequestId) {
        if let Some(ids) = self.requests.remove(&rid) {
            let outs = ids
                .iter()
                .filter_map(|id| self.seqs.remove(id))
                .map(|s| s.generated)
                .collect();
            self.finished.insert(rid, outs);
        }
    }

    fn check_plan(&mut self, plan: &StepPlan) {
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
        // Dropped sequences are forgotten before the step runs (the runner does the same).
        for id in &plan.dropped {
            if let Some(s) = self.seqs.get_mut(id) {
                s.kv.clear();
                s.admitted = false;
            }
        }
        for s in &plan.seqs {
            let Some(sim) = self.seqs.get_mut(&s.seq_id) else {
                panic!("sequence {} scheduled but unknown", s.seq_id)
            };
            let start = s.num_computed_tokens as usize;
            if !sim.admitted {
                // A (re)admission: the cached prefix must be this sequence's own tokens.
                assert!(
                    start < sim.known.len(),
                    "seq {}: the whole history came from the cache",
                    s.seq_id
                );
                sim.kv = sim.known[..start].to_vec();
                sim.admitted = true;
            }
            assert_eq!(
                sim.kv.len(),
                start,
                "seq {}: KV holds {} tokens, plan starts at {start}",
                s.seq_id,
                sim.kv.len()
            );
            sim.kv.extend_from_slice(&s.token_ids);
            assert_eq!(
                &sim.known[..sim.kv.len()],
                &sim.kv[..],
                "seq {}: computed tokens differ from its own tokens",
                s.seq_id
            );
            assert!(sim.kv.len() <= self.config.max_model_len);
            self.first_scheduled
                .entry(sim.request)
                .or_insert(self.steps);
        }
    }

    fn run_model(&mut self, plan: &StepPlan, sample: &mut SampleFn<'_>) -> StepOutput {
        let mut tokens = Vec::new();
        for s in &plan.seqs {
            if s.num_samples == 0 {
                continue;
            }
            let rid = self.seqs[&s.seq_id].request;
            let targets: Vec<SeqId> = if s.num_samples > 1 {
                self.requests[&rid].clone()
            } else {
                vec![s.seq_id]
            };
            for target in targets {
                let parent = self
                    .seqs
                    .get(&s.seq_id)
                    .map(|p| (p.kv.clone(), p.known[..p.kv.len()].to_vec()));
                let (parent_kv, history) = parent.unwrap_or_default();
                let history = if target == s.seq_id {
                    self.seqs
                        .get(&target)
                        .map(|t| t.known.clone())
                        .unwrap_or_default()
                } else {
                    history
                };
                let (tok, stop) = sample(target, &history);
                let Some(sim) = self.seqs.get_mut(&target) else {
                    continue;
                };
                if target != s.seq_id {
                    // A fork shares the parent's computed prompt.
                    sim.kv = parent_kv;
                    sim.admitted = true;
                }
                sim.known.push(tok);
                sim.generated.push(tok);
                let done = stop || sim.generated.len() >= sim.max_tokens;
                tokens.push(SampledToken {
                    seq_id: target,
                    token_id: tok,
                    finished: done.then_some(if stop {
                        FinishReason::Stop
                    } else {
                        FinishReason::Length
                    }),
                });
                if done {
                    self.finish_seq(target);
                }
            }
        }
        StepOutput {
            step_id: plan.step_id,
            tokens,
        }
    }

    fn finish_seq(&mut self, id: SeqId) {
        let Some(rid) = self.seqs.get(&id).map(|s| s.request) else {
            return;
        };
        if let Some(s) = self.seqs.get_mut(&id) {
            s.done = true;
        }
        let ids = self.requests.get(&rid).cloned().unwrap_or_default();
        if ids.iter().all(|i| self.seqs.get(i).is_some_and(|s| s.done)) {
            self.finish_request_early(rid);
        }
    }

    /// Run until idle (panics after a bound that only a livelock would reach).
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
        assert_eq!(self.active(), 0, "idle with requests still active");
        assert_eq!(
            self.blocks.num_free_blocks(),
            self.blocks.num_total_blocks(),
            "idle but blocks are still held"
        );
        std::mem::take(&mut self.finished)
    }
}
