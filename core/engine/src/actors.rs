//! The four actors. Each is a thin shell around a pure core: it receives a
//! plain-data message, calls its core, and forwards the result.
//!
//! | actor | core | runs on |
//! |---|---|---|
//! | [`SchedulerActor`] | `kiln_scheduler::Scheduler` | the engine arbiter; owns the step loop |
//! | [`BlockManagerActor`] | `kiln_scheduler::BlockManager` | the engine arbiter |
//! | [`SamplerActor`] | `kiln_sampler::SamplerCore` | the engine arbiter |
//! | [`RunnerActor`] | [`ModelRunner`] | its own thread (`SyncArbiter`): device work blocks |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use actix::prelude::*;
use kiln_engine_api::{AdmittedEmbedding, AdmittedRequest, EmbeddingReply};
use kiln_protocol::step::{
    AllocateForStep, DeviceSample, RowSampling, StepAllocation, StepLogits, StepOutput, StepPlan,
    TokenMask,
};
use kiln_protocol::{
    Embedding, EngineError, EngineEvent, FinishReason, RequestId, RequestMetrics, SeqId, StepStats,
    TokenEvent,
};
use kiln_sampler::{SamplerCore, SequenceGroup, StepDraws};
use kiln_scheduler::{BlockManager, NewRequest, Scheduler};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::runner::ModelRunner;

/// Seconds since the engine started: the one clock every core sees.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }
    /// Seconds since start.
    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// State shared between the actors and the `EngineService` (lock-free gauges).
#[derive(Debug, Default)]
pub struct Shared {
    /// False after a fatal error or shutdown.
    pub healthy: AtomicBool,
    /// Sequences running after the last step.
    pub running: AtomicU32,
    /// Requests waiting after the last step (plus those submitted since).
    pub waiting: AtomicU32,
    /// KV usage × 1e6 after the last step.
    pub kv_usage_ppm: AtomicU64,
}

// ---------------------------------------------------------------- block manager

pub struct BlockManagerActor {
    core: BlockManager,
}

impl BlockManagerActor {
    /// Wrap a block manager.
    pub fn new(core: BlockManager) -> Self {
        BlockManagerActor { core }
    }
}

impl Actor for BlockManagerActor {
    type Context = Context<Self>;
}

/// One batched allocation per step.
#[derive(Message)]
#[rtype(result = "StepAllocation")]
pub struct Allocate(pub AllocateForStep);

impl Handler<Allocate> for BlockManagerActor {
    type Result = MessageResult<Allocate>;
    fn handle(&mut self, msg: Allocate, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.allocate_for_step(msg.0))
    }
}

/// Forget every prefix-cache entry (after a failed step wrote garbage).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResetPrefixCache;

impl Handler<ResetPrefixCache> for BlockManagerActor {
    type Result = ();
    fn handle(&mut self, _: ResetPrefixCache, _: &mut Self::Context) {
        self.core.reset_prefix_cache();
    }
}

// ---------------------------------------------------------------- runner

/// The model-runner actor.
pub struct RunnerActor {
    runner: ModelRunner,
    /// Dropped with the runner, which tells a stopping engine that the
    /// runner's memory is free (nothing is ever sent).
    _alive: std::sync::mpsc::Sender<()>,
}

impl RunnerActor {
    /// Wraps a runner; `alive` disconnects when the actor is dropped.
    pub fn new(runner: ModelRunner, alive: std::sync::mpsc::Sender<()>) -> Self {
        RunnerActor {
            runner,
            _alive: alive,
        }
    }
}

impl Actor for RunnerActor {
    type Context = SyncContext<Self>;
}

/// Run one step's plan.
#[derive(Message)]
#[rtype(result = "Result<StepLogits, String>")]
pub struct Execute {
    pub plan: StepPlan,
    /// Device-side draws of the plan's single-sample rows that have one.
    pub sampling: Vec<(SeqId, RowSampling)>,
    /// Rows left on the device for a [`DrawDeferred`] (their masks are
    /// computed while this step runs).
    pub deferred: Vec<SeqId>,
}

impl Handler<Execute> for RunnerActor {
    type Result = Result<StepLogits, String>;
    fn handle(&mut self, msg: Execute, _: &mut Self::Context) -> Self::Result {
        self.runner
            .execute_deferring(&msg.plan, &msg.sampling, &msg.deferred)
            .map_err(|e| e.to_string())
    }
}

/// Draw the rows the last [`Execute`] deferred.
#[derive(Message)]
#[rtype(result = "Result<Vec<DeviceSample>, String>")]
pub struct DrawDeferred(pub Vec<(SeqId, RowSampling)>);

impl Handler<DrawDeferred> for RunnerActor {
    type Result = Result<Vec<DeviceSample>, String>;
    fn handle(&mut self, msg: DrawDeferred, _: &mut Self::Context) -> Self::Result {
        self.runner.draw_deferred(&msg.0).map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------- sampler

/// The sampler actor: owns each request's event channel.
pub struct SamplerActor {
    core: SamplerCore,
    senders: HashMap<RequestId, mpsc::UnboundedSender<TokenEvent>>,
    events: broadcast::Sender<EngineEvent>,
    clock: Clock,
}

impl SamplerActor {
    /// Publish the metrics of sequences that an abort or failure ended now,
    /// rather than with the next step: when they were the last ones running
    /// there is no next step, and `/metrics` would miss them until new
    /// traffic came.
    fn publish_ended_metrics(&mut self) {
        for m in self.core.take_finished_metrics() {
            let _ = self.events.send(EngineEvent::SequenceFinished(m));
        }
    }

    /// Wrap a sampler core.
    pub fn new(core: SamplerCore, events: broadcast::Sender<EngineEvent>, clock: Clock) -> Self {
        SamplerActor {
            core,
            senders: HashMap::new(),
            events,
            clock,
        }
    }

    fn route(&mut self, events: Vec<(RequestId, TokenEvent)>) {
        for (id, ev) in events {
            if let Some(tx) = self.senders.get(&id) {
                // A closed receiver means the client left; the abort is on its way.
                let _ = tx.send(ev);
            }
        }
        let core = &self.core;
        self.senders.retain(|id, _| core.has_request(*id));
    }
}

impl Actor for SamplerActor {
    type Context = Context<Self>;
}

/// A new request's sampling state and event channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Sampling state.
    pub group: SequenceGroup,
    /// Where the request's events go.
    pub events: mpsc::UnboundedSender<TokenEvent>,
}

impl Handler<Register> for SamplerActor {
    type Result = ();
    fn handle(&mut self, msg: Register, _: &mut Self::Context) {
        self.senders.insert(msg.group.request_id, msg.events);
        self.core.register(msg.group);
    }
}

/// Sample a step's logits.
#[derive(Message)]
#[rtype(result = "StepOutput")]
pub struct Sample {
    pub logits: StepLogits,
    /// Sequences computed in this step, each with the tokens its KV cache
    /// held before it (first-scheduling times and prefix-cache hits).
    pub scheduled: Vec<(SeqId, u32)>,
}

impl Handler<Sample> for SamplerActor {
    type Result = MessageResult<Sample>;
    fn handle(&mut self, msg: Sample, _: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        for &(seq, computed) in &msg.scheduled {
            self.core.mark_scheduled(seq, computed, now);
        }
        let result = self.core.sample(&msg.logits, now);
        for m in result.finished_metrics {
            let _ = self.events.send(EngineEvent::SequenceFinished(m));
        }
        self.route(result.events);
        MessageResult(result.output)
    }
}

/// How to draw the rows of a planned step, given as `(sequence, samples)`:
/// the device draws come from the sampler's state, so that the scheduler
/// keeps none.
#[derive(Message)]
#[rtype(result = "StepDraws")]
pub struct PlanDraws(pub Vec<(SeqId, u32)>);

impl Handler<PlanDraws> for SamplerActor {
    type Result = MessageResult<PlanDraws>;
    fn handle(&mut self, msg: PlanDraws, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.step_draws(&msg.0))
    }
}

/// Compute the grammar masks of these sequences' next draws (sent while
/// the forward pass runs); the reply holds them for device-side draws.
#[derive(Message)]
#[rtype(result = "Vec<(SeqId, TokenMask)>")]
pub struct ComputeMasks(pub Vec<SeqId>);

impl Handler<ComputeMasks> for SamplerActor {
    type Result = MessageResult<ComputeMasks>;
    fn handle(&mut self, msg: ComputeMasks, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.compute_masks(&msg.0))
    }
}

/// End a request with `Finished{abort}` events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AbortRequest(pub RequestId);

impl Handler<AbortRequest> for SamplerActor {
    type Result = ();
    fn handle(&mut self, msg: AbortRequest, _: &mut Self::Context) {
        let events = self.core.abort(msg.0, self.clock.now());
        self.route(events);
        self.senders.remove(&msg.0);
        self.publish_ended_metrics();
    }
}

/// End requests with a `Failed` event.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FailRequests {
    /// The requests.
    pub ids: Vec<RequestId>,
    /// Why.
    pub error: EngineError,
}

impl Handler<FailRequests> for SamplerActor {
    type Result = ();
    fn handle(&mut self, msg: FailRequests, _: &mut Self::Context) {
        for id in msg.ids {
            let events = self.core.fail(id, msg.error.clone(), self.clock.now());
            self.route(events);
            self.senders.remove(&id);
        }
        self.publish_ended_metrics();
    }
}

// ---------------------------------------------------------------- scheduler

/// Addresses of the other actors.
pub struct Peers {
    pub block_manager: Addr<BlockManagerActor>,
    pub runner: Addr<RunnerActor>,
    pub sampler: Addr<SamplerActor>,
}

/// The scheduler actor: owns the step loop.
pub struct SchedulerActor {
    core: Scheduler,
    peers: Peers,
    events: broadcast::Sender<EngineEvent>,
    shared: Arc<Shared>,
    clock: Clock,
    in_flight: bool,
    next_seq: SeqId,
    arrivals: u64,
    last_alloc: StepAllocation,
    /// Embedding requests not answered yet, by request.
    embeddings: HashMap<RequestId, PendingEmbedding>,
}

/// Where an embedding's vector goes.
struct PendingEmbedding {
    seq_id: SeqId,
    prompt_tokens: u32,
    /// Engine-clock seconds at submission.
    arrival_seconds: f64,
    reply: oneshot::Sender<EmbeddingReply>,
}

impl PendingEmbedding {
    /// What the metrics record of an embedding request, as of a generation
    /// request that produced no token: its prompt, its outcome, its queue
    /// time (arrival to the start of the step that computed it; the whole
    /// wait when it never ran) and arrival to answer.
    fn metrics(
        &self,
        request_id: RequestId,
        reason: FinishReason,
        scheduled_seconds: Option<f64>,
        now: f64,
    ) -> RequestMetrics {
        RequestMetrics {
            request_id,
            index: 0,
            reason: Some(reason),
            prompt_tokens: self.prompt_tokens,
            queue_seconds: (scheduled_seconds.unwrap_or(now) - self.arrival_seconds).max(0.0),
            e2e_seconds: (now - self.arrival_seconds).max(0.0),
            n: 1,
            ..RequestMetrics::default()
        }
    }
}

/// Construction parameters of [`SchedulerActor`].
pub struct SchedulerParts {
    /// The pure scheduler.
    pub core: Scheduler,
    /// The other actors.
    pub peers: Peers,
    /// Engine event broadcast.
    pub events: broadcast::Sender<EngineEvent>,
    /// Shared gauges.
    pub shared: Arc<Shared>,
    /// The engine clock.
    pub clock: Clock,
    /// KV blocks in the pool (for usage before the first step).
    pub num_blocks: u32,
}

impl SchedulerActor {
    /// Assemble the actor.
    pub fn new(p: SchedulerParts) -> Self {
        SchedulerActor {
            core: p.core,
            peers: p.peers,
            events: p.events,
            shared: p.shared,
            clock: p.clock,
            in_flight: false,
            next_seq: 1,
            arrivals: 0,
            last_alloc: StepAllocation {
                num_free_blocks: p.num_blocks,
                num_total_blocks: p.num_blocks,
                ..Default::default()
            },
            embeddings: HashMap::new(),
        }
    }

    /// Publishes the end of an embedding request for the metrics.
    fn embedding_ended(
        &self,
        id: RequestId,
        p: &PendingEmbedding,
        reason: FinishReason,
        scheduled_seconds: Option<f64>,
    ) {
        let m = p.metrics(id, reason, scheduled_seconds, self.clock.now());
        let _ = self.events.send(EngineEvent::SequenceFinished(m));
    }

    /// Answer the embedding requests whose vectors `logits` carries (the
    /// step that computed them began `started`).
    fn deliver_embeddings(&mut self, logits: &mut StepLogits, started: Instant) {
        let step_began = (self.clock.now() - started.elapsed().as_secs_f64()).max(0.0);
        for e in std::mem::take(&mut logits.embeddings) {
            let Some(rid) = self
                .embeddings
                .iter()
                .find(|(_, p)| p.seq_id == e.seq_id)
                .map(|(rid, _)| *rid)
            else {
                continue;
            };
            if let Some(p) = self.embeddings.remove(&rid) {
                self.embedding_ended(rid, &p, FinishReason::Stop, Some(step_began));
                // A closed receiver means the client left.
                let _ = p.reply.send(Ok(Embedding {
                    vector: e.vector,
                    prompt_tokens: p.prompt_tokens,
                }));
            }
        }
    }

    /// Answer every pending embedding with `error`.
    fn fail_embeddings(&mut self, error: &EngineError) {
        for (id, p) in std::mem::take(&mut self.embeddings) {
            self.embedding_ended(id, &p, FinishReason::Error, None);
            let _ = p.reply.send(Err(error.clone()));
        }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if !self.in_flight {
            self.begin(ctx);
        }
    }

    /// Phase 1: ask the block manager for this step's slots.
    fn begin(&mut self, ctx: &mut Context<Self>) {
        let Some(msg) = self.core.begin_step() else {
            self.publish_stats(StepStats::default());
            return;
        };
        self.in_flight = true;
        let started = Instant::now();
        ctx.spawn(
            self.peers
                .block_manager
                .send(Allocate(msg))
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(alloc) => act.plan(alloc, started, ctx),
                    Err(e) => act.fatal(format!("the block manager stopped: {e}")),
                }),
        );
    }

    /// Phase 2: turn the grants into a plan and run it.
    fn plan(&mut self, alloc: StepAllocation, started: Instant, ctx: &mut Context<Self>) {
        self.last_alloc = alloc.clone();
        let plan = self.core.finish_step(alloc);
        self.fail_rejected();
        if plan.seqs.is_empty() && plan.dropped.is_empty() && plan.block_copies.is_empty() {
            self.in_flight = false;
            self.publish_stats(StepStats {
                step_seconds: started.elapsed().as_secs_f64(),
                ..Default::default()
            });
            return;
        }
        let scheduled: Vec<(SeqId, u32)> = plan
            .seqs
            .iter()
            .map(|s| (s.seq_id, s.num_computed_tokens))
            .collect();
        let batched = plan.num_batched_tokens() as u32;
        let actors = (self.peers.runner.clone(), self.peers.sampler.clone());
        ctx.spawn(
            run_step(actors, plan)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(logits) => act.sample(logits, scheduled, batched, started, ctx),
                    Err(StepError::Device(message)) => act.step_failed(message, ctx),
                    Err(StepError::Stopped(message)) => act.fatal(message),
                }),
        );
    }

    /// Phase 3: sample (skipped when no row samples).
    fn sample(
        &mut self,
        mut logits: StepLogits,
        scheduled: Vec<(SeqId, u32)>,
        batched: u32,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        self.deliver_embeddings(&mut logits, started);
        let step_id = logits.step_id;
        if logits.is_empty() {
            self.finish(
                StepOutput {
                    step_id,
                    tokens: vec![],
                },
                batched,
                started,
                ctx,
            );
            return;
        }
        ctx.spawn(
            self.peers
                .sampler
                .send(Sample { logits, scheduled })
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(output) => act.finish(output, batched, started, ctx),
                    Err(e) => act.fatal(format!("the sampler stopped: {e}")),
                }),
        );
    }

    /// Phase 4: apply the output, publish stats, loop.
    fn finish(&mut self, out: StepOutput, batched: u32, started: Instant, ctx: &mut Context<Self>) {
        self.core.on_step_output(out);
        self.in_flight = false;
        self.publish_stats(StepStats {
            num_batched_tokens: batched,
            step_seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        });
        self.begin(ctx);
    }

    fn fail_rejected(&mut self) {
        let rejected = self.core.take_rejected();
        if rejected.is_empty() {
            return;
        }
        for (id, error) in rejected {
            if let Some(p) = self.embeddings.remove(&id) {
                self.embedding_ended(id, &p, FinishReason::Error, None);
                let _ = p.reply.send(Err(error));
                continue;
            }
            self.peers.sampler.do_send(FailRequests {
                ids: vec![id],
                error,
            });
        }
    }

    /// A step failed on the device: fail every active request (their KV may be
    /// corrupt), forget cached prefixes, and carry on with new requests.
    fn step_failed(&mut self, message: String, ctx: &mut Context<Self>) {
        tracing::error!("step failed: {message}");
        let ids = self.core.active_requests();
        for id in &ids {
            self.core.abort(*id);
        }
        self.peers.block_manager.do_send(ResetPrefixCache);
        let error = EngineError::Backend(message);
        self.fail_embeddings(&error);
        self.peers.sampler.do_send(FailRequests { ids, error });
        self.in_flight = false;
        self.begin(ctx);
    }

    fn fatal(&mut self, message: String) {
        tracing::error!("engine stopped: {message}");
        self.shared.healthy.store(false, Ordering::SeqCst);
        let ids = self.core.active_requests();
        for id in &ids {
            self.core.abort(*id);
        }
        let error = EngineError::EngineDead(message);
        self.fail_embeddings(&error);
        self.peers.sampler.do_send(FailRequests { ids, error });
        self.in_flight = false;
    }

    fn publish_stats(&mut self, mut stats: StepStats) {
        let a = &self.last_alloc;
        stats.num_running = self.core.num_running() as u32;
        stats.num_waiting = self.core.num_waiting() as u32;
        stats.kv_blocks_total = a.num_total_blocks;
        stats.kv_blocks_used = a.num_total_blocks.saturating_sub(a.num_free_blocks);
        stats.num_preemptions = self.core.take_preemptions() as u32;
        stats.prefix_cache_queries = std::mem::take(&mut self.last_alloc.prefix_cache_queries);
        stats.prefix_cache_hits = std::mem::take(&mut self.last_alloc.prefix_cache_hits);
        self.shared
            .running
            .store(stats.num_running, Ordering::Relaxed);
        self.shared
            .waiting
            .store(stats.num_waiting, Ordering::Relaxed);
        let usage = if stats.kv_blocks_total == 0 {
            0.0
        } else {
            f64::from(stats.kv_blocks_used) / f64::from(stats.kv_blocks_total)
        };
        self.shared
            .kv_usage_ppm
            .store((usage * 1e6) as u64, Ordering::Relaxed);
        let _ = self.events.send(EngineEvent::Step(stats));
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;
}

/// Why a step with constrained rows did not produce logits.
enum StepError {
    /// The device failed (the engine carries on).
    Device(String),
    /// An actor stopped (the engine cannot go on).
    Stopped(String),
}

/// Runs one step: asks the sampler how its rows are drawn, then runs the
/// forward pass, drawing on the device the rows that need no grammar mask.
/// With constrained rows, their masks are computed on the sampler's thread
/// while the forward pass runs on the runner's; then the `deferred` rows
/// are drawn on the device with their masks. Constrained rows drawn on the
/// host find their masks in the sampler.
async fn run_step(
    (runner, sampler): (Addr<RunnerActor>, Addr<SamplerActor>),
    plan: StepPlan,
) -> Result<StepLogits, StepError> {
    let stopped =
        |who: &str, e: MailboxError| StepError::Stopped(format!("the {who} stopped: {e}"));
    let rows = plan
        .seqs
        .iter()
        .map(|s| (s.seq_id, s.num_samples))
        .collect();
    let draws = sampler
        .send(PlanDraws(rows))
        .await
        .map_err(|e| stopped("sampler", e))?;
    let StepDraws {
        device,
        deferred,
        constrained,
    } = draws;
    let execute = runner.send(Execute {
        plan,
        sampling: device,
        deferred: deferred.iter().map(|(seq, _)| *seq).collect(),
    });
    if constrained.is_empty() {
        return execute
            .await
            .map_err(|e| stopped("model runner", e))?
            .map_err(StepError::Device);
    }
    let (logits, masks) = futures::join!(execute, sampler.send(ComputeMasks(constrained)));
    let mut logits = logits
        .map_err(|e| stopped("model runner", e))?
        .map_err(StepError::Device)?;
    let masks: HashMap<SeqId, TokenMask> = masks
        .map_err(|e| stopped("sampler", e))?
        .into_iter()
        .collect();
    if deferred.is_empty() {
        return Ok(logits);
    }
    let rows = deferred
        .into_iter()
        .map(|(seq, mut draw)| {
            draw.allowed = masks.get(&seq).cloned();
            (seq, draw)
        })
        .collect();
    let drawn = runner
        .send(DrawDeferred(rows))
        .await
        .map_err(|e| stopped("model runner", e))?
        .map_err(StepError::Device)?;
    logits.sampled.extend(drawn);
    Ok(logits)
}

/// Queue an admitted request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub request: AdmittedRequest,
    /// Where its events go.
    pub events: mpsc::UnboundedSender<TokenEvent>,
}

impl Handler<Submit> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) {
        let r = msg.request;
        let n = r.request.sampling.n.max(1) as u64;
        let seq_ids: Vec<SeqId> = (self.next_seq..self.next_seq + n).collect();
        self.next_seq += n;
        self.arrivals += 1;
        let prompt_tokens = r.prompt_token_ids.len() as u32;
        let group = SequenceGroup {
            request_id: r.id,
            seq_ids: seq_ids.clone(),
            prompt_token_ids: r.prompt_token_ids.clone(),
            sampling: r.request.sampling.clone(),
            stopping: r.request.stopping.clone(),
            max_tokens: r.max_tokens,
            arrival_seconds: self.clock.now(),
        };
        self.peers.sampler.do_send(Register {
            group,
            events: msg.events,
        });
        self.core.add_request(NewRequest {
            request_id: r.id,
            seq_ids,
            prompt_token_ids: r.prompt_token_ids,
            max_tokens: r.max_tokens,
            arrival: self.arrivals,
            embed: false,
            prompt_logprobs: r.request.sampling.prompt_logprobs.is_some(),
        });
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(EngineEvent::RequestArrived {
            request_id: r.id,
            prompt_tokens,
        });
        self.kick(ctx);
    }
}

/// Queue an embedding.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitEmbedding {
    /// The input.
    pub request: AdmittedEmbedding,
    /// Where its vector goes.
    pub reply: oneshot::Sender<EmbeddingReply>,
}

impl Handler<SubmitEmbedding> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: SubmitEmbedding, ctx: &mut Self::Context) {
        let r = msg.request;
        let seq_id = self.next_seq;
        self.next_seq += 1;
        self.arrivals += 1;
        let prompt_tokens = r.prompt_token_ids.len() as u32;
        self.embeddings.insert(
            r.id,
            PendingEmbedding {
                seq_id,
                prompt_tokens,
                arrival_seconds: self.clock.now(),
                reply: msg.reply,
            },
        );
        let _ = self.events.send(EngineEvent::RequestArrived {
            request_id: r.id,
            prompt_tokens,
        });
        self.core.add_request(NewRequest {
            request_id: r.id,
            seq_ids: vec![seq_id],
            prompt_token_ids: r.prompt_token_ids,
            max_tokens: 0,
            arrival: self.arrivals,
            embed: true,
            prompt_logprobs: false,
        });
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.fail_rejected();
        self.kick(ctx);
    }
}

/// Abort a request in any state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abort(pub RequestId);

impl Handler<Abort> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: Abort, ctx: &mut Self::Context) {
        self.core.abort(msg.0);
        if let Some(p) = self.embeddings.remove(&msg.0) {
            self.embedding_ended(msg.0, &p, FinishReason::Abort, None);
        }
        self.peers.sampler.do_send(AbortRequest(msg.0));
        self.kick(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedding_counts_as_a_request_that_generated_nothing() {
        let (reply, _answer) = oneshot::channel();
        let pending = PendingEmbedding {
            seq_id: 1,
            prompt_tokens: 7,
            arrival_seconds: 1.0,
            reply,
        };
        let m = pending.metrics(3, FinishReason::Stop, Some(1.25), 2.0);
        assert_eq!(m.request_id, 3);
        assert_eq!((m.index, m.n, m.prompt_tokens), (0, 1, 7));
        assert_eq!(m.reason, Some(FinishReason::Stop));
        assert_eq!(m.generation_tokens, 0);
        assert_eq!(m.queue_seconds, 0.25);
        assert_eq!(m.e2e_seconds, 1.0);
        let never_ran = pending.metrics(3, FinishReason::Abort, None, 2.0);
        assert_eq!(never_ran.queue_seconds, 1.0, "the whole wait");
    }
}
