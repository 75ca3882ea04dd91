//! # kiln-sampler
//!
//! Turns a step's logits ([`StepLogits`]: rows of raw f32 logits) into the
//! tokens the scheduler appends ([`StepOutput`]) and the events clients
//! receive ([`TokenEvent`]), on the host CPU:
//!
//! * logits processors, in order: `logit_bias` → `min_tokens` masking →
//!   repetition penalty (HF) → presence/frequency penalties (OpenAI)
//!   ([`process`]);
//! * temperature → top-k → top-p → min-p → draw, or one argmax pass when
//!   greedy ([`draw`]); no full sort unless top-p needs the whole vocabulary;
//! * log-probabilities of the sampled token and the top alternatives, from
//!   the *raw* logits ([`kernels`]);
//! * stop conditions after each token: EOS, stop tokens, stop strings
//!   matched across token boundaries and never emitted ([`stop`]),
//!   `max_tokens`;
//! * incremental UTF-8-safe detokenization ([`detok`]) whose released
//!   `text` fields concatenate to exactly the final output;
//! * `n > 1` forks (one row, `n` draws, one per sequence) and per-sequence
//!   timing metrics ([`metrics`]).
//!
//! Each sequence owns a ChaCha8 stream seeded from the request's seed and
//! the sequence's index, and a draw reads only its own stream and its own
//! logits row: a seeded request produces the same tokens whatever else is
//! in the batch.
//!
//! Pure and synchronous: depends on `kiln-protocol`, `rand` and
//! `rand_chacha` only, and must not depend on actors, async runtimes, I/O,
//! devices or a tokenizer implementation (tokenizers are reached through
//! [`TokenDecoder`]).
//!
//! ```
//! use std::sync::Arc;
//! use kiln_protocol::step::{LogitsRow, StepLogits};
//! use kiln_protocol::{SamplingParams, StoppingCriteria, TokenEvent};
//! use kiln_sampler::{SamplerCore, SequenceGroup, TokenDecoder};
//!
//! /// Token i is the letter `a + i`.
//! struct Letters;
//! impl TokenDecoder for Letters {
//!     fn decode(&self, ids: &[u32], _skip_special: bool) -> String {
//!         ids.iter().map(|&i| char::from(b'a' + i as u8)).collect()
//!     }
//!     fn is_special(&self, _: u32) -> bool { false }
//!     fn vocab_size(&self) -> usize { 26 }
//! }
//!
//! let mut sampler = SamplerCore::new(Arc::new(Letters), vec![25]);
//! sampler.register(SequenceGroup {
//!     request_id: 1,
//!     seq_ids: vec![7],
//!     prompt_token_ids: vec![0],
//!     sampling: SamplingParams::greedy(),
//!     stopping: StoppingCriteria::default(),
//!     max_tokens: 1,
//!     arrival_seconds: 0.0,
//! });
//! let mut logits = vec![0.0; 26];
//! logits[7] = 5.0;
//! let step = StepLogits {
//!     step_id: 1,
//!     rows: vec![LogitsRow { seq_id: 7, num_samples: 1 }],
//!     vocab_size: 26,
//!     logits,
//!     ..StepLogits::default()
//! };
//! let result = sampler.sample(&step, 0.1);
//! assert_eq!(result.output.tokens[0].token_id, 7);
//! assert!(matches!(&result.events[0].1, TokenEvent::Token(t) if t.text == "h"));
//! assert!(!sampler.has_request(1)); // max_tokens reached: state dropped
//! ```

pub mod constraint;
pub mod detok;
pub mod device;
pub mod draw;
pub mod kernels;
pub mod metrics;
pub mod process;
mod prompt_logprobs;
mod sequence;
pub mod stop;

use std::collections::HashMap;
use std::sync::Arc;

use kiln_protocol::step::{
    DeviceSample, LogitsRow, RowSampling, SampledToken, StepLogits, StepOutput, TokenMask,
};
use kiln_protocol::{
    EngineError, FinishReason, Finished, GeneratedToken, RequestId, RequestMetrics, SamplingParams,
    SeqId, StoppingCriteria, TokenEvent, TokenId, TopLogprob, Usage,
};

pub use constraint::{ConstraintFactory, TokenConstraint};
pub use detok::{IncrementalDecoder, SpecialTokens, TokenDecoder};
pub use device::{DeviceDraws, StepDraws};
use draw::{DrawScratch, entropy_seed, mix64};
use kernels::{log_sum_exp, top_n_into};
use metrics::{FinishedSequence, finished_metrics};
use process::{RowContext, apply_processors, needs_processing};
use sequence::{Finish, Group, GroupInit, Seq};

/// A request's sampling state, registered before its first step.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceGroup {
    pub request_id: RequestId,
    /// Its `n` sequences: `seq_ids[0]` is prefilled and sampled first; the
    /// others start when a row of it draws `num_samples = n`.
    pub seq_ids: Vec<SeqId>,
    /// \[prompt_len\] prompt tokens.
    pub prompt_token_ids: Vec<TokenId>,
    /// How to draw.
    pub sampling: SamplingParams,
    /// When to stop.
    pub stopping: StoppingCriteria,
    /// Most tokens per sequence, resolved against the context length.
    pub max_tokens: u32,
    /// Arrival time, engine clock seconds.
    pub arrival_seconds: f64,
}

/// What one call to [`SamplerCore::sample`] produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleResult {
    /// Tokens for the scheduler, one per draw, in row order (a row's forks
    /// follow it in `seq_ids` order).
    pub output: StepOutput,
    /// Events for clients, in order, tagged with their request.
    pub events: Vec<(RequestId, TokenEvent)>,
    /// Metrics of every sequence that finished in this step, plus those
    /// ended by [`SamplerCore::abort`] / [`SamplerCore::fail`] since the
    /// last step and not taken with [`SamplerCore::take_finished_metrics`].
    pub finished_metrics: Vec<RequestMetrics>,
}

/// Log-probability data shared by every draw from one row.
struct RowLogprobs {
    /// `ln Σ e^logit` of the raw row.
    normalizer: f32,
    /// The top alternatives (empty when `logprobs == Some(0)`).
    top: Vec<TopLogprob>,
}

/// Reusable buffers of [`SamplerCore::sample`].
#[derive(Default)]
struct Scratch {
    /// \[vocab\] the row after processors.
    processed: Vec<f32>,
    draw: DrawScratch,
    /// `(logit, id)` of top alternatives.
    top: Vec<(f32, TokenId)>,
    /// `(sequence, token)` drawn from the current row.
    drawn: Vec<(SeqId, TokenId)>,
}

/// The sampler: per-request state plus the per-step sampling logic.
pub struct SamplerCore {
    decoder: Arc<dyn TokenDecoder>,
    eos: Vec<TokenId>,
    groups: HashMap<RequestId, Group>,
    seqs: HashMap<SeqId, Seq>,
    default_seed: Option<u64>,
    /// `None`: every row is drawn on the host.
    device_draws: Option<DeviceDraws>,
    scratch: Scratch,
    /// Metrics of sequences ended outside `sample`.
    pending_metrics: Vec<RequestMetrics>,
    /// Builds the grammars of structured outputs (`None`: requests with
    /// one fail).
    constraints: Option<Arc<dyn ConstraintFactory>>,
}

impl SamplerCore {
    /// A sampler decoding with `decoder` that ends sequences on any of
    /// `eos_token_ids` (unless a request sets `ignore_eos`).
    pub fn new(decoder: Arc<dyn TokenDecoder>, eos_token_ids: Vec<TokenId>) -> Self {
        SamplerCore {
            decoder,
            eos: eos_token_ids,
            groups: HashMap::new(),
            seqs: HashMap::new(),
            default_seed: None,
            device_draws: None,
            scratch: Scratch::default(),
            pending_metrics: Vec::new(),
            constraints: None,
        }
    }

    /// Enforces requests' structured outputs with grammars from `factory`.
    pub fn set_constraint_factory(&mut self, factory: Arc<dyn ConstraintFactory>) {
        self.constraints = Some(factory);
    }

    /// Seeds requests that bring no seed from `seed` and their request id
    /// (`--seed`) instead of OS entropy.
    pub fn set_default_seed(&mut self, seed: u64) {
        self.default_seed = Some(seed);
    }

    /// Whether the request has unfinished sequences here.
    pub fn has_request(&self, request_id: RequestId) -> bool {
        self.groups.contains_key(&request_id)
    }

    /// Requests with unfinished sequences.
    pub fn num_requests(&self) -> usize {
        self.groups.len()
    }

    /// Registers a request (replacing any state under the same id). Its
    /// sequence `i` draws from the stream `(seed, i)`; without a seed, the
    /// seed comes from the default seed and the request id, or from OS
    /// entropy. A group without sequences is ignored.
    pub fn register(&mut self, group: SequenceGroup) {
        self.remove(group.request_id);
        if group.seq_ids.is_empty() {
            return;
        }
        let seed = resolve_seed(&group.sampling, group.request_id, self.default_seed);
        let state = Group::new(GroupInit {
            request_id: group.request_id,
            prompt: &group.prompt_token_ids,
            sampling: group.sampling,
            stopping: group.stopping,
            eos: &self.eos,
            max_tokens: group.max_tokens,
            arrival: group.arrival_seconds,
            seq_ids: group.seq_ids,
        });
        let mut constraint = self.start_constraint(&state.sampling);
        for (i, &seq_id) in state.seq_ids.iter().enumerate() {
            let mut seq = Seq::new(&state, i as u32, &group.prompt_token_ids, seed);
            match &mut constraint {
                Some(Ok(first)) if i + 1 < state.seq_ids.len() => {
                    seq.constraint = Some(first.fork())
                }
                Some(Err(e)) => seq.constraint_error = Some(e.clone()),
                _ => {}
            }
            if i + 1 == state.seq_ids.len()
                && let Some(Ok(last)) = constraint.take()
            {
                seq.constraint = Some(last);
            }
            self.seqs.insert(seq_id, seq);
        }
        self.groups.insert(group.request_id, state);
    }

    /// The grammar of a request's structured output, when it has one.
    fn start_constraint(
        &self,
        sampling: &SamplingParams,
    ) -> Option<Result<Box<dyn TokenConstraint>, String>> {
        let spec = sampling.structured.as_ref()?;
        Some(match &self.constraints {
            Some(factory) => factory.start(spec),
            None => Err("structured outputs are not available in this engine".to_string()),
        })
    }

    /// Computes, for each of `seq_ids` that follows a grammar, the tokens it
    /// may draw next, and returns them. Runs while the step's forward pass
    /// does; a mask not computed here is computed when the row is drawn.
    pub fn compute_masks(&mut self, seq_ids: &[SeqId]) -> Vec<(SeqId, TokenMask)> {
        let mut out = Vec::new();
        for &seq_id in seq_ids {
            let Some(seq) = self.seqs.get_mut(&seq_id) else {
                continue;
            };
            let Some(group) = self.groups.get(&seq.request) else {
                continue;
            };
            let eos = self.constraints.as_ref().map_or(0, |f| f.eos_token());
            seq.prepare_mask(&group.min_tokens_mask, eos);
            if let Some(mask) = &seq.mask {
                out.push((seq_id, mask.clone()));
            }
        }
        out
    }

    /// Whether the request of `seq_id` follows a grammar.
    pub fn is_constrained(&self, seq_id: SeqId) -> bool {
        self.seqs
            .get(&seq_id)
            .is_some_and(|s| s.constraint.is_some() || s.constraint_error.is_some())
    }

    /// The next draw of `seq_id` in device form (`None` when unknown).
    pub fn row_sampling(&self, seq_id: SeqId) -> Option<RowSampling> {
        let seq = self.seqs.get(&seq_id)?;
        let group = self.groups.get(&seq.request)?;
        Some(device::row_sampling(group, seq))
    }

    /// Notes that `seq_id` was scheduled at `now_seconds` with
    /// `computed_tokens` already in the KV cache; the first call per request
    /// sets its queue time, starts its prefill time and records its
    /// prefix-cache hit (what was computed before its first step).
    pub fn mark_scheduled(&mut self, seq_id: SeqId, computed_tokens: u32, now_seconds: f64) {
        let Some(request) = self.seqs.get(&seq_id).map(|s| s.request) else {
            return;
        };
        if let Some(g) = self.groups.get_mut(&request)
            && g.first_scheduled.is_none()
        {
            g.first_scheduled = Some(now_seconds);
            g.cached_prompt_tokens = computed_tokens.min(g.prompt_tokens);
        }
    }

    /// Samples every row of a step at engine time `now_seconds`.
    ///
    /// Rows of unknown or finished sequences are skipped (an abort may
    /// cross a step). When `logits` does not hold `rows × vocab_size`
    /// values, every request with a row fails: a `Failed` event, and an
    /// entry with `finished: Some(Error)` (token 0) for each of its
    /// sequences so that the scheduler releases them.
    pub fn sample(&mut self, logits: &StepLogits, now_seconds: f64) -> SampleResult {
        let mut out = SampleResult {
            output: StepOutput {
                step_id: logits.step_id,
                tokens: Vec::with_capacity(logits.rows.len()),
            },
            events: Vec::with_capacity(logits.rows.len() * 2),
            finished_metrics: std::mem::take(&mut self.pending_metrics),
        };
        let v = logits.vocab_size;
        for rows in &logits.prompt {
            let scored = self
                .seqs
                .get(&rows.seq_id)
                .and_then(|s| self.groups.get_mut(&s.request))
                .and_then(|g| g.prompt_logprobs.as_mut());
            if let Some(scored) = scored {
                scored.record(rows.first_position, &rows.logits, v);
            }
        }
        let well_formed = v > 0 && logits.rows.len().checked_mul(v) == Some(logits.logits.len());
        for (r, row) in logits.rows.iter().enumerate() {
            if well_formed {
                self.sample_row(
                    *row,
                    &logits.logits[r * v..(r + 1) * v],
                    now_seconds,
                    &mut out,
                );
            } else {
                let error = EngineError::Internal(format!(
                    "the model runner returned {} logits for {} rows of vocabulary size {v}; \
                     this is a bug in the backend",
                    logits.logits.len(),
                    logits.rows.len()
                ));
                self.fail_row(row.seq_id, error, now_seconds, &mut out);
            }
        }
        for drawn in &logits.sampled {
            self.accept_device_sample(drawn, now_seconds, &mut out);
        }
        out.finished_metrics.append(&mut self.pending_metrics);
        out
    }

    /// Delivers a token drawn on the device.
    fn accept_device_sample(&mut self, d: &DeviceSample, now: f64, out: &mut SampleResult) {
        let Some(group) = self
            .seqs
            .get(&d.seq_id)
            .and_then(|s| self.groups.get(&s.request))
        else {
            return;
        };
        let logprobs = match (group.sampling.logprobs, d.logprob) {
            (Some(n), Some(lp)) => {
                let decoder = self.decoder.as_ref();
                let top = d
                    .top_logprobs
                    .iter()
                    .take(n as usize)
                    .map(|&(id, logprob)| TopLogprob {
                        id,
                        logprob,
                        text: decoder.decode(&[id], false),
                    })
                    .collect();
                Some((lp, top))
            }
            _ => None,
        };
        self.deliver((d.seq_id, d.token_id), logprobs, now, out);
    }

    /// Ends every unfinished sequence of the request with
    /// `Finished { reason: Abort }` and drops its state. Their metrics come
    /// with the next [`sample`](Self::sample) or
    /// [`take_finished_metrics`](Self::take_finished_metrics).
    pub fn abort(
        &mut self,
        request_id: RequestId,
        now_seconds: f64,
    ) -> Vec<(RequestId, TokenEvent)> {
        let Some(group) = self.groups.get(&request_id) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for seq_id in group.seq_ids.clone() {
            if let Some((event, m)) =
                self.finish_seq(seq_id, (FinishReason::Abort, None), now_seconds)
            {
                events.push((request_id, event));
                self.pending_metrics.push(m);
            }
        }
        self.groups.remove(&request_id);
        events
    }

    /// Ends the request with one `Failed` event and drops its state; each
    /// unfinished sequence's metrics (reason `Error`) come as for
    /// [`abort`](Self::abort). Unknown requests give no event.
    pub fn fail(
        &mut self,
        request_id: RequestId,
        error: EngineError,
        now_seconds: f64,
    ) -> Vec<(RequestId, TokenEvent)> {
        if self.fail_sequences(request_id, now_seconds).is_empty() {
            return Vec::new();
        }
        vec![(request_id, TokenEvent::Failed { error })]
    }

    /// Forgets a request without any event or metrics.
    pub fn remove(&mut self, request_id: RequestId) {
        if let Some(group) = self.groups.remove(&request_id) {
            for seq_id in &group.seq_ids {
                if self
                    .seqs
                    .get(seq_id)
                    .is_some_and(|s| s.request == request_id)
                {
                    self.seqs.remove(seq_id);
                }
            }
        }
    }

    /// Metrics of sequences ended by `abort` or `fail` since the last step.
    pub fn take_finished_metrics(&mut self) -> Vec<RequestMetrics> {
        std::mem::take(&mut self.pending_metrics)
    }

    /// Draws `row.num_samples` tokens from one row and delivers them.
    fn sample_row(&mut self, row: LogitsRow, raw: &[f32], now: f64, out: &mut SampleResult) {
        if row.num_samples == 0 {
            return;
        }
        let Some(request) = self.seqs.get(&row.seq_id).map(|s| s.request) else {
            return;
        };
        let Some(group) = self.groups.get(&request) else {
            return;
        };
        let targets = fork_targets(group, &self.seqs, row);
        if group.sampling.structured.is_some() {
            self.compute_masks(&targets[..1]);
            if let Some(error) = self.constraint_error(row.seq_id) {
                self.fail_row(row.seq_id, error, now, out);
                return;
            }
        }
        let Some(group) = self.groups.get(&request) else {
            return;
        };
        let logprobs = group.sampling.logprobs.map(|n| {
            row_logprobs(
                raw,
                n as usize,
                self.decoder.as_ref(),
                &mut self.scratch.top,
            )
        });
        self.scratch
            .draw_targets(raw, group, &mut self.seqs, &targets);
        let drawn = std::mem::take(&mut self.scratch.drawn);
        for &(seq_id, token) in &drawn {
            let lp = logprobs
                .as_ref()
                .map(|l| (raw[token as usize] - l.normalizer, l.top.clone()));
            self.deliver((seq_id, token), lp, now, out);
        }
        self.scratch.drawn = drawn;
    }

    /// Appends a drawn token to its sequence and emits its events.
    fn deliver(
        &mut self,
        (seq_id, token): (SeqId, TokenId),
        logprobs: Option<(f32, Vec<TopLogprob>)>,
        now: f64,
        out: &mut SampleResult,
    ) {
        let Some(seq) = self.seqs.get_mut(&seq_id) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&seq.request) else {
            return;
        };
        let decoder = self.decoder.as_ref();
        if let Some(prompt) = group.prompt_logprobs.as_mut().filter(|p| !p.sent) {
            prompt.sent = true;
            out.events
                .push((seq.request, TokenEvent::Prompt(prompt.tokens(decoder))));
        }
        let accepted = seq.accept(token, group, decoder, now);
        let request = seq.request;
        if seq.constraint_error.is_some() {
            let error = self.constraint_error(seq_id).expect("checked above");
            self.fail_row(seq_id, error, now, out);
            return;
        }
        out.events.push((
            request,
            TokenEvent::Token(GeneratedToken {
                index: seq.index,
                id: token,
                text: accepted.text,
                piece: decoder.decode(&[token], false),
                special: decoder.is_special(token),
                logprob: logprobs.as_ref().map(|l| l.0),
                top_logprobs: logprobs.map(|l| l.1).unwrap_or_default(),
            }),
        ));
        out.output.tokens.push(SampledToken {
            seq_id,
            token_id: token,
            finished: accepted.finish.as_ref().map(|f| f.0),
        });
        if let Some(finish) = accepted.finish
            && let Some((event, m)) = self.finish_seq(seq_id, finish, now)
        {
            out.events.push((request, event));
            out.finished_metrics.push(m);
        }
    }

    /// Removes a finished sequence: its `Finished` event and metrics. Drops
    /// the request once no sequence is left.
    fn finish_seq(
        &mut self,
        seq_id: SeqId,
        (reason, stop_reason): Finish,
        now: f64,
    ) -> Option<(TokenEvent, RequestMetrics)> {
        let seq = self.seqs.remove(&seq_id)?;
        let group = self.groups.get_mut(&seq.request)?;
        let generated = seq.num_generated as u32;
        let event = TokenEvent::Finished(Finished {
            index: seq.index,
            reason,
            stop_reason,
            usage: Usage {
                prompt_tokens: group.prompt_tokens,
                completion_tokens: generated,
                cached_prompt_tokens: group.cached_prompt_tokens,
            },
        });
        let m = finished_metrics(&FinishedSequence {
            request_id: seq.request,
            index: seq.index,
            reason,
            prompt_tokens: group.prompt_tokens,
            generation_tokens: generated,
            arrival: group.arrival,
            first_scheduled: group.first_scheduled,
            times: &seq.times,
            now,
            n: group.seq_ids.len() as u32,
            max_tokens: group.stopping.max_tokens,
        });
        group.live = group.live.saturating_sub(1);
        if group.live == 0 {
            self.groups.remove(&seq.request);
        }
        Some((event, m))
    }

    /// Ends the request's unfinished sequences with reason `Error` (metrics
    /// kept for later) and drops it; returns those sequences.
    fn fail_sequences(&mut self, request_id: RequestId, now: f64) -> Vec<SeqId> {
        let Some(group) = self.groups.get(&request_id) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        for seq_id in group.seq_ids.clone() {
            if let Some((_, m)) = self.finish_seq(seq_id, (FinishReason::Error, None), now) {
                self.pending_metrics.push(m);
                ended.push(seq_id);
            }
        }
        self.groups.remove(&request_id);
        ended
    }

    /// The error of a sequence whose grammar cannot go on.
    fn constraint_error(&self, seq_id: SeqId) -> Option<EngineError> {
        let message = self.seqs.get(&seq_id)?.constraint_error.as_ref()?;
        Some(EngineError::Internal(format!(
            "structured output: {message}"
        )))
    }

    /// Fails the request owning `seq_id` during a step (see [`sample`](Self::sample)).
    fn fail_row(&mut self, seq_id: SeqId, error: EngineError, now: f64, out: &mut SampleResult) {
        let Some(request) = self.seqs.get(&seq_id).map(|s| s.request) else {
            return;
        };
        for ended in self.fail_sequences(request, now) {
            out.output.tokens.push(SampledToken {
                seq_id: ended,
                token_id: 0,
                finished: Some(FinishReason::Error),
            });
        }
        out.events.push((request, TokenEvent::Failed { error }));
    }
}

/// The sequences a row's draws go to: the row's own, then (when it draws
/// more than one) the request's other sequences that have not started, in
/// `seq_ids` order.
fn fork_targets(group: &Group, seqs: &HashMap<SeqId, Seq>, row: LogitsRow) -> Vec<SeqId> {
    let extra = (row.num_samples as usize).saturating_sub(1);
    let mut targets = Vec::with_capacity(1 + extra);
    targets.push(row.seq_id);
    targets.extend(
        group
            .seq_ids
            .iter()
            .copied()
            .filter(|&s| s != row.seq_id && seqs.get(&s).is_some_and(|q| q.num_generated == 0))
            .take(extra),
    );
    targets
}

/// The seed a request draws from: its own, else one derived from the
/// default seed (`--seed`) and the request id, else OS entropy. Resolved
/// once, at registration: host and device draws of the request share it.
fn resolve_seed(
    sampling: &SamplingParams,
    request_id: RequestId,
    default_seed: Option<u64>,
) -> u64 {
    sampling.seed.unwrap_or_else(|| match default_seed {
        Some(base) => mix64(base ^ mix64(request_id)),
        None => entropy_seed(),
    })
}

/// Log-softmax normalizer of the raw row and its `n` most likely tokens.
fn row_logprobs(
    raw: &[f32],
    n: usize,
    decoder: &dyn TokenDecoder,
    buf: &mut Vec<(f32, TokenId)>,
) -> RowLogprobs {
    let normalizer = log_sum_exp(raw);
    top_n_into(raw, n, buf);
    let top = buf
        .iter()
        .map(|&(logit, id)| TopLogprob {
            id,
            logprob: logit - normalizer,
            text: decoder.decode(&[id], false),
        })
        .collect();
    RowLogprobs { normalizer, top }
}

/// `raw` itself when no processor applies, else the processed copy in `buf`.
fn processed_row<'a>(raw: &'a [f32], ctx: &RowContext<'_>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    if !needs_processing(ctx) {
        return raw;
    }
    buf.clear();
    buf.extend_from_slice(raw);
    apply_processors(buf, ctx);
    buf
}

impl Scratch {
    /// Draws one token per target from `raw` into `drawn`. Targets that have
    /// not generated anything (a fork's first draw) see the same processed
    /// row, so it is prepared once; each still draws from its own stream.
    fn draw_targets(
        &mut self,
        raw: &[f32],
        group: &Group,
        seqs: &mut HashMap<SeqId, Seq>,
        targets: &[SeqId],
    ) {
        let Scratch {
            processed,
            draw,
            drawn,
            ..
        } = self;
        drawn.clear();
        let fresh = targets.len() > 1
            && targets
                .iter()
                .all(|t| seqs.get(t).is_some_and(|s| s.num_generated == 0));
        if fresh {
            let Some(first) = seqs.get(&targets[0]) else {
                return;
            };
            let source = processed_row(raw, &first.row_context(group), processed);
            let prepared = draw.prepare(source, &group.sampling);
            for &t in targets {
                if let Some(seq) = seqs.get_mut(&t) {
                    drawn.push((t, prepared.draw(&mut seq.rng)));
                }
            }
            return;
        }
        for &t in targets {
            let Some(seq) = seqs.get_mut(&t) else {
                continue;
            };
            let source = processed_row(raw, &seq.row_context(group), processed);
            let token = draw.prepare(source, &group.sampling).draw(&mut seq.rng);
            drawn.push((t, token));
        }
    }
}
