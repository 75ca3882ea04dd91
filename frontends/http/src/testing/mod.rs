//! A deterministic stand-in engine for frontend tests (a **test double**,
//! never a real model).
//!
//! [`ScriptedEngine`] implements [`EngineService`] with:
//! - a fake vocabulary ([`vocab`]): specials `<s>` `</s>` `<|im_start|>`
//!   `<|im_end|>`, one token per byte, and a fixed word list;
//! - generation that recites [`vocab::STORY`]: greedy requests from its start,
//!   sampled ones from an offset drawn from `(seed, sequence index)` (without
//!   a seed, one derived from the request id: reproducible per engine), ending with `<|im_end|>` (EOS) at the story's
//!   end unless `ignore_eos`; obeys `max_tokens`, `min_tokens`, stop strings
//!   (held back while they could still match), stop token ids and `n`;
//! - made-up but consistent logprobs ([`script::scripted_logprob`]): the
//!   sampled token is always the most likely;
//! - a prompt containing `[fail]` fails the request after two tokens;
//! - a prompt containing `[reply]TEXT[/reply]` recites TEXT instead of the
//!   story; a structured output recites the first text its grammar admits
//!   (constraints are checked as the real engine checks them) ([`reply`]);
//! - a simple ChatML chat template;
//! - `max_num_seqs` requests run at once, the rest wait (bounded by
//!   `max_waiting_requests`, like the real engine); `token_delay` between steps;
//! - engine events (`RequestArrived`, `Step`, `SequenceFinished`) with timings
//!   of a nominal 10 ms per token; a `Step` follows every release; every
//!   sequence ends with one `SequenceFinished` carrying the request's prompt
//!   length, `n` and `max_tokens`, also when aborted (reason `abort`, waiting
//!   ones included) or failed (reason `error`); an embedding is a request
//!   that arrives and finishes (`stop`) at once without generating;
//! - records of every admitted request and every abort, for assertions.

pub mod app;
pub mod reply;
pub mod script;
pub mod vocab;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kiln_engine_api::{
    AdmittedRequest, ChatOptions, EngineHandle, EngineInfo, EngineLoad, EngineService,
};
use kiln_protocol::{
    EngineError, EngineEvent, FinishReason, RequestId, RequestMetrics, StepStats, StructuredOutput,
    TokenEvent, TokenId,
};
use kiln_structured::{Grammars, Limits, Vocabulary};
use tokio::sync::{Semaphore, broadcast, mpsc};

use script::ScriptedSequence;

/// Seconds the scripted engine reports per generated token.
pub const NOMINAL_TOKEN_SECONDS: f64 = 0.01;
const KV_BLOCKS_TOTAL: u32 = 64;
const KV_BLOCKS_PER_SEQ: u32 = 2;

/// Settings of a [`ScriptedEngine`].
#[derive(Debug, Clone)]
pub struct ScriptedConfig {
    /// Pause before each step (0: just yield).
    pub token_delay: Duration,
    /// Requests running at once.
    pub max_num_seqs: u32,
    /// Requests allowed to wait (more: `Overloaded`).
    pub max_waiting_requests: u32,
    /// Context length.
    pub max_model_len: u32,
    /// Served names, primary first.
    pub served_model_names: Vec<String>,
    /// Embeddings the engine computes (`None`: it only generates). Each
    /// vector is a function of the input's token ids (see
    /// [`scripted_embedding`]).
    pub embedding: Option<kiln_protocol::EmbeddingSpec>,
}

impl Default for ScriptedConfig {
    fn default() -> Self {
        ScriptedConfig {
            token_delay: Duration::ZERO,
            max_num_seqs: 8,
            max_waiting_requests: 64,
            max_model_len: 128,
            served_model_names: vec!["scripted-model".into(), "kiln-test".into()],
            embedding: None,
        }
    }
}

#[derive(Default)]
struct Counters {
    running_seqs: u32,
    waiting: u32,
    admitted: Vec<AdmittedRequest>,
    aborted: Vec<RequestId>,
    tasks: HashMap<RequestId, tokio::task::AbortHandle>,
}

struct Shared {
    counters: Mutex<Counters>,
    events: broadcast::Sender<EngineEvent>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_step(&self, batched: u32, prefix_queries: u32) {
        let stats = {
            let c = self.lock();
            StepStats {
                num_running: c.running_seqs,
                num_waiting: c.waiting,
                kv_blocks_used: c.running_seqs * KV_BLOCKS_PER_SEQ,
                kv_blocks_total: KV_BLOCKS_TOTAL,
                num_preemptions: 0,
                prefix_cache_queries: prefix_queries,
                prefix_cache_hits: 0,
                num_batched_tokens: batched,
                step_seconds: NOMINAL_TOKEN_SECONDS,
            }
        };
        let _ = self.events.send(EngineEvent::Step(stats));
    }
}

/// The scripted engine. See the [module docs](self).
pub struct ScriptedEngine {
    info: EngineInfo,
    config: ScriptedConfig,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    healthy: AtomicBool,
    next_id: AtomicU64,
    /// Checks structured outputs as the real engine does, over bytes.
    grammars: Grammars,
}

impl ScriptedEngine {
    /// A new engine.
    pub fn new(config: ScriptedConfig) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(ScriptedEngine {
            info: scripted_info(&config),
            permits: Arc::new(Semaphore::new(config.max_num_seqs.max(1) as usize)),
            config,
            shared: Arc::new(Shared {
                counters: Mutex::new(Counters::default()),
                events,
            }),
            healthy: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            grammars: Grammars::new(Vocabulary::bytes(), Limits::default())
                .expect("the byte vocabulary is valid"),
        })
    }

    /// A handle over this engine.
    pub fn handle(self: &Arc<Self>) -> EngineHandle {
        EngineHandle::new(self.clone())
    }

    /// Every request admitted so far, in order.
    pub fn admitted(&self) -> Vec<AdmittedRequest> {
        self.shared.lock().admitted.clone()
    }

    /// The most recently admitted request.
    pub fn last_admitted(&self) -> Option<AdmittedRequest> {
        self.shared.lock().admitted.last().cloned()
    }

    /// Ids of every request aborted so far.
    pub fn aborted(&self) -> Vec<RequestId> {
        self.shared.lock().aborted.clone()
    }

    /// Requests still running or waiting.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().tasks.len()
    }

    /// Marks the engine (un)healthy: unhealthy refuses requests and fails `/health`.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

fn scripted_info(config: &ScriptedConfig) -> EngineInfo {
    let names = if config.served_model_names.is_empty() {
        vec!["scripted-model".to_string()]
    } else {
        config.served_model_names.clone()
    };
    let mut model_info = BTreeMap::new();
    model_info.insert("general.architecture".into(), "llama".into());
    model_info.insert("general.parameter_count".into(), 1_000_000.into());
    model_info.insert("llama.context_length".into(), config.max_model_len.into());
    model_info.insert("llama.embedding_length".into(), 64.into());
    EngineInfo {
        model_id: names[0].clone(),
        served_model_names: names,
        model_path: "scripted://story".into(),
        architecture: "LlamaForCausalLM".into(),
        family: "llama".into(),
        num_parameters: 1_000_000,
        num_active_parameters: 1_000_000,
        dtype: "float32".into(),
        quantization: Some("Q4_1".into()),
        format: "gguf".into(),
        max_model_len: config.max_model_len,
        native_context_length: 2048,
        block_size: 16,
        num_kv_blocks: KV_BLOCKS_TOTAL,
        max_num_seqs: config.max_num_seqs,
        max_num_batched_tokens: 512,
        max_waiting_requests: config.max_waiting_requests,
        enable_prefix_caching: true,
        backend: "scripted".into(),
        device: "none (scripted test engine)".into(),
        weights_bytes: 1 << 20,
        weights_by_format: vec![
            kiln_protocol::FormatBytes {
                format: "Q4_1".into(),
                tensors: 7,
                bytes: 3 << 18,
            },
            kiln_protocol::FormatBytes {
                format: "F32".into(),
                tensors: 3,
                bytes: 1 << 18,
            },
        ],
        kv_cache_bytes: 1 << 20,
        vocab_size: vocab::vocab_size(),
        bos_token_id: Some(vocab::BOS),
        eos_token_ids: vec![vocab::EOS, vocab::IM_END],
        chat_template: Some(CHAT_TEMPLATE.into()),
        model_info,
        embedding: config.embedding.clone(),
        version: "0.0.0-scripted".into(),
        created: 1_700_000_000,
    }
}

/// The template the scripted engine renders (ChatML), shown in `info().chat_template`.
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Renders ChatML without a template engine.
pub fn render_chatml(
    messages: &[serde_json::Value],
    add_generation_prompt: bool,
) -> Result<String, EngineError> {
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(|r| r.as_str());
        let content = m.get("content").and_then(|c| c.as_str());
        let (Some(role), Some(content)) = (role, content) else {
            return Err(EngineError::invalid(
                "messages",
                format!("message {i} needs a string `role` and a string `content`"),
            ));
        };
        out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    Ok(out)
}

/// What every `SequenceFinished` of a request repeats.
#[derive(Debug, Clone, Copy)]
struct RequestShape {
    prompt_tokens: u32,
    n: u32,
    max_tokens: Option<u32>,
}

impl RequestShape {
    fn of(request: &AdmittedRequest) -> Self {
        RequestShape {
            prompt_tokens: request.prompt_token_ids.len() as u32,
            n: request.request.sampling.n,
            max_tokens: request.request.stopping.max_tokens,
        }
    }
}

/// Returns a request's counters on drop: finished, aborted or failed alike.
struct Release {
    shared: Arc<Shared>,
    id: RequestId,
    shape: RequestShape,
    /// Reason reported for sequences still live when the request ends.
    unfinished: FinishReason,
    state: ReleaseState,
}

enum ReleaseState {
    Waiting,
    Running { live: Vec<(u32, u32)> },
}

impl Release {
    fn start_running(&mut self, n: u32) {
        {
            let mut c = self.shared.lock();
            c.waiting -= 1;
            c.running_seqs += n;
        }
        self.state = ReleaseState::Running {
            live: (0..n).map(|i| (i, 0)).collect(),
        };
    }

    fn finish_seq(&mut self, index: u32) {
        if let ReleaseState::Running { live } = &mut self.state {
            live.retain(|(i, _)| *i != index);
            self.shared.lock().running_seqs -= 1;
        }
    }

    fn set_generated(&mut self, index: u32, generated: u32) {
        if let ReleaseState::Running { live } = &mut self.state
            && let Some(entry) = live.iter_mut().find(|(i, _)| *i == index)
        {
            entry.1 = generated;
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let unfinished = match &self.state {
            ReleaseState::Waiting => {
                self.shared.lock().waiting -= 1;
                (0..self.shape.n).map(|i| (i, 0)).collect()
            }
            ReleaseState::Running { live } => {
                self.shared.lock().running_seqs -= live.len() as u32;
                live.clone()
            }
        };
        for (index, generated) in unfinished {
            let m = scripted_metrics(self.id, index, self.unfinished, self.shape, generated);
            let _ = self.shared.events.send(EngineEvent::SequenceFinished(m));
        }
        self.shared.lock().tasks.remove(&self.id);
        self.shared.publish_step(0, 0);
    }
}

fn scripted_metrics(
    request_id: RequestId,
    index: u32,
    reason: FinishReason,
    shape: RequestShape,
    generated: u32,
) -> RequestMetrics {
    let ttft = if generated > 0 {
        NOMINAL_TOKEN_SECONDS
    } else {
        0.0
    };
    let decode = NOMINAL_TOKEN_SECONDS * f64::from(generated.saturating_sub(1));
    RequestMetrics {
        request_id,
        index,
        reason: Some(reason),
        prompt_tokens: shape.prompt_tokens,
        generation_tokens: generated,
        queue_seconds: 0.0,
        ttft_seconds: ttft,
        prefill_seconds: ttft,
        decode_seconds: decode,
        e2e_seconds: ttft + decode,
        inter_token_seconds: vec![NOMINAL_TOKEN_SECONDS; generated.saturating_sub(1) as usize],
        n: shape.n,
        max_tokens: shape.max_tokens,
    }
}

struct RunContext {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    delay: Duration,
    request: AdmittedRequest,
    /// What the sequences recite instead of the story.
    reply: Option<Vec<TokenId>>,
    /// Dropped before `events`, so the load and the engine events are
    /// settled by the time the client's stream ends.
    release: Release,
    events: mpsc::UnboundedSender<TokenEvent>,
}

async fn pause(delay: Duration) {
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

/// The request's seed, else one derived from its id (ids count from 1 per
/// engine, so unseeded runs are reproducible in tests yet differ per request).
fn request_seed(request: &AdmittedRequest) -> u64 {
    request
        .request
        .sampling
        .seed
        .unwrap_or_else(|| script::mix(request.id ^ 0x5EED))
}

fn should_fail(request: &AdmittedRequest) -> bool {
    vocab::detokenize(&request.prompt_token_ids, false).is_some_and(|p| p.contains("[fail]"))
}

async fn run_request(mut ctx: RunContext) {
    let Ok(_permit) = ctx.permits.clone().acquire_owned().await else {
        return;
    };
    let n = ctx.request.request.sampling.n;
    ctx.release.start_running(n);
    if let Some(top) = ctx.request.request.sampling.prompt_logprobs {
        let prompt = script::scripted_prompt_logprobs(&ctx.request.prompt_token_ids, top);
        let _ = ctx.events.send(TokenEvent::Prompt(prompt));
    }
    let seed = request_seed(&ctx.request);
    let shape = ctx.release.shape;
    let mut seqs: Vec<ScriptedSequence> = (0..n)
        .map(|i| ScriptedSequence::new(&ctx.request, i, seed, ctx.reply.clone()))
        .collect();
    let mut live: Vec<bool> = vec![true; n as usize];
    let fail = should_fail(&ctx.request);
    let mut step = 0u32;
    while live.iter().any(|l| *l) {
        pause(ctx.delay).await;
        if fail && step == 2 {
            let error = EngineError::Backend("scripted failure after 2 tokens".into());
            let _ = ctx.events.send(TokenEvent::Failed { error });
            ctx.release.unfinished = FinishReason::Error;
            return;
        }
        let mut batched = 0;
        for (i, seq) in seqs.iter_mut().enumerate() {
            if !live[i] {
                continue;
            }
            let out = seq.step();
            batched += 1;
            ctx.release.set_generated(i as u32, seq.generated());
            let _ = ctx.events.send(TokenEvent::Token(out.token));
            if let Some(finished) = out.finished {
                live[i] = false;
                let m = scripted_metrics(
                    ctx.request.id,
                    i as u32,
                    finished.reason,
                    shape,
                    seq.generated(),
                );
                ctx.release.finish_seq(i as u32);
                let _ = ctx.shared.events.send(EngineEvent::SequenceFinished(m));
                let _ = ctx.events.send(TokenEvent::Finished(finished));
            }
        }
        let queries = if step == 0 { shape.prompt_tokens } else { 0 };
        ctx.shared.publish_step(batched, queries);
        step += 1;
    }
}

/// The scripted engine's pooled vector of `ids`: `dimensions` values, the
/// i-th is `1 + (Σ ids + i) mod 7`.
pub fn scripted_embedding(ids: &[TokenId], dimensions: u32) -> Vec<f32> {
    let sum: u64 = ids.iter().map(|&id| u64::from(id)).sum();
    (0..u64::from(dimensions))
        .map(|i| 1.0 + ((sum + i) % 7) as f32)
        .collect()
}

impl EngineService for ScriptedEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenId>, EngineError> {
        Ok(vocab::tokenize(text, add_special_tokens))
    }

    fn detokenize(
        &self,
        ids: &[TokenId],
        skip_special_tokens: bool,
    ) -> Result<String, EngineError> {
        vocab::detokenize(ids, skip_special_tokens).ok_or_else(|| {
            EngineError::invalid(
                "tokens",
                format!(
                    "a token id is outside the vocabulary (size {})",
                    vocab::vocab_size()
                ),
            )
        })
    }

    fn token_text(&self, id: TokenId) -> Option<String> {
        vocab::token_text(id)
    }

    fn is_special(&self, id: TokenId) -> bool {
        vocab::is_special(id)
    }

    fn apply_chat_template(
        &self,
        messages: &[serde_json::Value],
        options: &ChatOptions,
    ) -> Result<String, EngineError> {
        if options.template.is_some() {
            return Err(EngineError::invalid(
                "chat_template",
                "the scripted engine renders only its built-in ChatML template",
            ));
        }
        render_chatml(messages, options.add_generation_prompt)
    }

    fn check_structured(&self, spec: &StructuredOutput) -> Result<(), EngineError> {
        self.grammars
            .check(spec)
            .map_err(|e| EngineError::invalid(e.param, e.to_string()))
    }

    fn enqueue_embedding(
        &self,
        request: kiln_engine_api::AdmittedEmbedding,
        reply: tokio::sync::oneshot::Sender<kiln_engine_api::EmbeddingReply>,
    ) -> Result<(), EngineError> {
        let Some(spec) = &self.info.embedding else {
            return Err(EngineError::invalid(
                "model",
                "the scripted engine was started without embeddings",
            ));
        };
        let prompt_tokens = request.prompt_token_ids.len() as u32;
        let _ = self.shared.events.send(EngineEvent::RequestArrived {
            request_id: request.id,
            prompt_tokens,
        });
        let _ = reply.send(Ok(kiln_protocol::Embedding {
            vector: scripted_embedding(&request.prompt_token_ids, spec.dimensions),
            prompt_tokens,
        }));
        let shape = RequestShape {
            prompt_tokens,
            n: 1,
            max_tokens: None,
        };
        let m = scripted_metrics(request.id, 0, FinishReason::Stop, shape, 0);
        let _ = self.shared.events.send(EngineEvent::SequenceFinished(m));
        Ok(())
    }

    fn enqueue(
        &self,
        request: AdmittedRequest,
        events: mpsc::UnboundedSender<TokenEvent>,
    ) -> Result<(), EngineError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            EngineError::Internal("the scripted engine needs a Tokio runtime".into())
        })?;
        let mut c = self.shared.lock();
        if c.waiting >= self.config.max_waiting_requests {
            return Err(EngineError::Overloaded {
                waiting: c.waiting as usize,
                limit: self.config.max_waiting_requests as usize,
            });
        }
        c.waiting += 1;
        c.admitted.push(request.clone());
        let id = request.id;
        let _ = self.shared.events.send(EngineEvent::RequestArrived {
            request_id: id,
            prompt_tokens: request.prompt_token_ids.len() as u32,
        });
        let shape = RequestShape::of(&request);
        let reply = reply::reply_tokens(
            &request.request.prompt,
            request.request.sampling.structured.as_ref(),
            &self.grammars,
        );
        let ctx = RunContext {
            shared: self.shared.clone(),
            permits: self.permits.clone(),
            delay: self.config.token_delay,
            request,
            reply,
            events,
            release: Release {
                shared: self.shared.clone(),
                id,
                shape,
                unfinished: FinishReason::Abort,
                state: ReleaseState::Waiting,
            },
        };
        // The lock is held while spawning so the task's release cannot run before
        // its abort handle is registered.
        let task = runtime.spawn(run_request(ctx));
        c.tasks.insert(id, task.abort_handle());
        Ok(())
    }

    fn abort(&self, id: RequestId) {
        let mut c = self.shared.lock();
        c.aborted.push(id);
        if let Some(task) = c.tasks.remove(&id) {
            task.abort();
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.events.subscribe()
    }

    fn load(&self) -> EngineLoad {
        let c = self.shared.lock();
        EngineLoad {
            running: c.running_seqs,
            waiting: c.waiting,
            kv_usage: f64::from(c.running_seqs * KV_BLOCKS_PER_SEQ).min(f64::from(KV_BLOCKS_TOTAL))
                / f64::from(KV_BLOCKS_TOTAL),
        }
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    fn next_request_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};

    fn req(prompt: &str, n: u32, max_tokens: u32) -> GenerateRequest {
        GenerateRequest {
            prompt: PromptInput::Text(prompt.into()),
            sampling: SamplingParams {
                n,
                ..SamplingParams::greedy()
            },
            stopping: StoppingCriteria {
                max_tokens: Some(max_tokens),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn generates_and_releases() {
        let engine = ScriptedEngine::new(ScriptedConfig::default());
        let handle = engine.handle();
        let stream = handle.submit(req("Hello", 2, 3)).unwrap();
        let events: Vec<TokenEvent> = stream.collect().await;
        assert_eq!(events.len(), 8, "{events:?}");
        tokio::task::yield_now().await;
        assert_eq!(handle.load(), EngineLoad::default());
        assert!(engine.aborted().is_empty());
    }

    #[tokio::test]
    async fn dropping_the_stream_aborts() {
        let engine = ScriptedEngine::new(ScriptedConfig {
            token_delay: Duration::from_millis(20),
            ..Default::default()
        });
        let handle = engine.handle();
        let mut stream = handle.submit(req("Hello", 1, 50)).unwrap();
        let id = stream.id();
        assert!(stream.next().await.is_some());
        drop(stream);
        assert_eq!(engine.aborted(), vec![id]);
        for _ in 0..50 {
            if handle.load() == EngineLoad::default() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(handle.load(), EngineLoad::default());
    }

    #[tokio::test]
    async fn fail_trigger_fails_the_request() {
        let engine = ScriptedEngine::new(ScriptedConfig::default());
        let events: Vec<TokenEvent> = engine
            .handle()
            .submit(req("x [fail]", 1, 10))
            .unwrap()
            .collect()
            .await;
        assert!(matches!(events.last(), Some(TokenEvent::Failed { .. })));
        assert_eq!(events.len(), 3);
    }

    /// Drains every `SequenceFinished` broadcast so far.
    fn finished_events(rx: &mut broadcast::Receiver<EngineEvent>) -> Vec<RequestMetrics> {
        let mut out = Vec::new();
        while let Ok(event) = rx.try_recv() {
            if let EngineEvent::SequenceFinished(m) = event {
                out.push(m);
            }
        }
        out
    }

    #[tokio::test]
    async fn every_sequence_ends_with_its_metrics() {
        let engine = ScriptedEngine::new(ScriptedConfig::default());
        let mut rx = engine.handle().subscribe();
        let stream = engine.handle().submit(req("Hello", 2, 3)).unwrap();
        let _: Vec<TokenEvent> = stream.collect().await;
        let mut seen = finished_events(&mut rx);
        seen.sort_by_key(|m| m.index);
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (i, m) in seen.iter().enumerate() {
            assert_eq!(m.index, i as u32);
            assert_eq!((m.n, m.max_tokens), (2, Some(3)));
            assert_eq!(m.reason, Some(FinishReason::Length));
            assert_eq!(m.generation_tokens, 3);
            assert!(m.prompt_tokens > 0);
        }

        let failed = engine.handle().submit(req("x [fail]", 1, 10)).unwrap();
        let _: Vec<TokenEvent> = failed.collect().await;
        tokio::task::yield_now().await;
        let seen = finished_events(&mut rx);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].reason, Some(FinishReason::Error));
        assert_eq!(seen[0].generation_tokens, 2);
    }

    #[tokio::test]
    async fn waiting_is_bounded() {
        let engine = ScriptedEngine::new(ScriptedConfig {
            token_delay: Duration::from_millis(50),
            max_num_seqs: 1,
            max_waiting_requests: 1,
            ..Default::default()
        });
        let h = engine.handle();
        let _a = h.submit(req("a", 1, 10)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _b = h.submit(req("b", 1, 10)).unwrap();
        let c = h.submit(req("c", 1, 10));
        assert!(matches!(c, Err(EngineError::Overloaded { .. })), "{c:?}");
    }

    #[test]
    fn chatml_rendering() {
        let msgs = vec![serde_json::json!({"role": "user", "content": "hi"})];
        assert_eq!(
            render_chatml(&msgs, true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(render_chatml(&[serde_json::json!({"role": "user"})], true).is_err());
    }
}
