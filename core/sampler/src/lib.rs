//! # kiln-sampler
//!
//! Turns a step's logits into tokens and client events: logits processors
//! (bias, `min_tokens`, repetition/presence/frequency penalties), greedy or
//! seeded random draws (temperature, top-k, top-p, min-p), log-probabilities
//! with top alternatives, stop conditions (EOS, stop tokens, stop strings
//! matched across token boundaries and never emitted, `max_tokens`),
//! incremental UTF-8-safe detokenization, `n > 1` forks, and per-sequence
//! timing metrics.
//!
//! Each sequence owns its random stream (ChaCha8 seeded from the request's
//! seed and the sequence index), so a seeded request draws the same tokens
//! whatever else is in the batch.
//!
//! Depends on `kiln-protocol` and `rand_chacha` only; the tokenizer is
//! reached through the [`TokenDecoder`] trait.
//!
//! ```
//! use std::sync::Arc;
//! use kiln_protocol::step::{LogitsRow, StepLogits};
//! use kiln_protocol::{SamplingParams, StoppingCriteria};
//! use kiln_sampler::{SamplerCore, SequenceGroup, TokenDecoder};
//! struct Letters;
//! impl TokenDecoder for Letters {
//!     fn decode(&self, ids: &[u32], _: bool) -> String { ids.iter().map(|&i| (b'a' + i as u8) as char).collect() }
//!     fn is_special(&self, _: u32) -> bool { false }
//!     fn vocab_size(&self) -> usize { 26 }
//! }
//! let mut s = SamplerCore::new(Arc::new(Letters), vec![25]);
//! s.register(SequenceGroup {
//!     request_id: 1, seq_ids: vec![7], prompt_token_ids: vec![0],
//!     sampling: SamplingParams::greedy(), stopping: StoppingCriteria::default(),
//!     max_tokens: 1, arrival_seconds: 0.0,
//! });
//! let mut logits = vec![0.0; 26];
//! logits[7] = 5.0;
//! let out = s.sample(&StepLogits { step_id: 1, rows: vec![LogitsRow { seq_id: 7, num_samples: 1 }], vocab_size: 26, logits }, 0.1);
//! assert_eq!(out.output.tokens[0].token_id, 7);
//! ```

mod detok;
pub mod process;

use std::collections::HashMap;
use std::sync::Arc;

use kiln_protocol::step::{SampledToken, StepLogits, StepOutput};
use kiln_protocol::{
    EngineError, FinishReason, Finished, GeneratedToken, RequestId, RequestMetrics, SamplingParams,
    SeqId, StopReason, StoppingCriteria, TokenEvent, TokenId, TopLogprob, Usage,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

pub use detok::{IncrementalDecoder, TokenDecoder, find_stop, held_back};
use process::{
    RowContext, apply_processors, argmax, draw, log_normalizer, needs_processing, top_n,
};

/// A request's sampling state, registered before its first step.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceGroup {
    /// The request.
    pub request_id: RequestId,
    /// Its sequences (`n`); the first is sampled first, the others when it forks.
    pub seq_ids: Vec<SeqId>,
    /// `[prompt_len]` prompt tokens.
    pub prompt_token_ids: Vec<TokenId>,
    /// How to draw.
    pub sampling: SamplingParams,
    /// When to stop.
    pub stopping: StoppingCriteria,
    /// Resolved `max_tokens`.
    pub max_tokens: u32,
    /// Arrival time (engine clock, seconds).
    pub arrival_seconds: f64,
}

/// The result of sampling one step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleResult {
    /// Tokens for the scheduler.
    pub output: StepOutput,
    /// Events for clients, by request.
    pub events: Vec<(RequestId, TokenEvent)>,
    /// Metrics of sequences that finished.
    pub finished_metrics: Vec<RequestMetrics>,
}

struct Group {
    seq_ids: Vec<SeqId>,
    prompt: Arc<Vec<TokenId>>,
    sampling: SamplingParams,
    stopping: StoppingCriteria,
    max_tokens: usize,
    arrival: f64,
    live: usize,
    stop_ids: Vec<TokenId>,
}

struct Seq {
    request: RequestId,
    index: u32,
    generated: Vec<TokenId>,
    counts: HashMap<TokenId, u32>,
    rng: ChaCha8Rng,
    detok: IncrementalDecoder,
    text: String,
    emitted: usize,
    first_scheduled: Option<f64>,
    first_token: Option<f64>,
    last_token: Option<f64>,
    gaps: Vec<f64>,
}

/// The sampler's pure core.
pub struct SamplerCore {
    decoder: Arc<dyn TokenDecoder>,
    eos: Vec<TokenId>,
    groups: HashMap<RequestId, Group>,
    seqs: HashMap<SeqId, Seq>,
    default_seed: Option<u64>,
    scratch: Vec<f32>,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn stream_seed(seed: u64, index: u32) -> u64 {
    seed ^ (u64::from(index) + 1).wrapping_mul(GOLDEN)
}

impl SamplerCore {
    /// A sampler over a tokenizer with the model's EOS ids.
    pub fn new(decoder: Arc<dyn TokenDecoder>, eos_token_ids: Vec<TokenId>) -> Self {
        SamplerCore {
            decoder,
            eos: eos_token_ids,
            groups: HashMap::new(),
            seqs: HashMap::new(),
            default_seed: None,
            scratch: Vec::new(),
        }
    }

    /// Seed unseeded requests deterministically from this value and their id (`--seed`).
    pub fn set_default_seed(&mut self, seed: u64) {
        self.default_seed = Some(seed);
    }

    /// Whether a request is still known.
    pub fn has_request(&self, id: RequestId) -> bool {
        self.groups.contains_key(&id)
    }

    /// Register a request.
    pub fn register(&mut self, g: SequenceGroup) {
        let seed = g.sampling.seed.unwrap_or_else(|| match self.default_seed {
            Some(s) => s ^ g.request_id.wrapping_mul(GOLDEN),
            None => fresh_entropy(g.request_id),
        });
        let prompt = Arc::new(g.prompt_token_ids);
        for (i, &id) in g.seq_ids.iter().enumerate() {
            self.seqs.insert(
                id,
                Seq {
                    request: g.request_id,
                    index: i as u32,
                    generated: Vec::new(),
                    counts: HashMap::new(),
                    rng: ChaCha8Rng::seed_from_u64(stream_seed(seed, i as u32)),
                    detok: IncrementalDecoder::new(
                        self.decoder.clone(),
                        &prompt,
                        g.stopping.skip_special_tokens,
                    ),
                    text: String::new(),
                    emitted: 0,
                    first_scheduled: None,
                    first_token: None,
                    last_token: None,
                    gaps: Vec::new(),
                },
            );
        }
        let mut stop_ids = g.stopping.stop_token_ids.clone();
        if !g.stopping.ignore_eos {
            stop_ids.extend(&self.eos);
        }
        self.groups.insert(
            g.request_id,
            Group {
                live: g.seq_ids.len(),
                seq_ids: g.seq_ids,
                prompt,
                sampling: g.sampling,
                stopping: g.stopping,
                max_tokens: g.max_tokens as usize,
                arrival: g.arrival_seconds,
                stop_ids,
            },
        );
    }

    /// Note the first time a sequence is scheduled (queue and prefill timings).
    pub fn mark_scheduled(&mut self, seq: SeqId, now: f64) {
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.first_scheduled.get_or_insert(now);
        }
    }

    /// Sample every row of a step.
    pub fn sample(&mut self, logits: &StepLogits, now: f64) -> SampleResult {
        let mut result = SampleResult {
            output: StepOutput {
                step_id: logits.step_id,
                tokens: Vec::new(),
            },
            ..Default::default()
        };
        let v = logits.vocab_size;
        for (r, row) in logits.rows.iter().enumerate() {
            let Some(slice) = logits.logits.get(r * v..(r + 1) * v) else {
                break;
            };
            let Some(request) = self.seqs.get(&row.seq_id).map(|s| s.request) else {
                continue;
            };
            let targets: Vec<SeqId> = match self.groups.get(&request) {
                Some(g) if row.num_samples > 1 => g.seq_ids.clone(),
                Some(_) => vec![row.seq_id],
                None => continue,
            };
            let lse = self.needs_logprobs(request).then(|| log_normalizer(slice));
            for target in targets {
                self.sample_one(target, slice, lse, now, &mut result);
            }
        }
        result
    }

    fn needs_logprobs(&self, request: RequestId) -> bool {
        self.groups
            .get(&request)
            .is_some_and(|g| g.sampling.logprobs.is_some())
    }

    fn sample_one(
        &mut self,
        seq_id: SeqId,
        raw: &[f32],
        lse: Option<f32>,
        now: f64,
        out: &mut SampleResult,
    ) {
        let Some(seq) = self.seqs.get_mut(&seq_id) else {
            return;
        };
        let Some(group) = self.groups.get(&seq.request) else {
            return;
        };
        let min_reached = seq.generated.len() >= group.stopping.min_tokens as usize;
        let masked: &[TokenId] = if min_reached { &[] } else { &group.stop_ids };
        let ctx = RowContext {
            params: &group.sampling,
            prompt: &group.prompt,
            output_counts: &seq.counts,
            masked,
        };
        let token = if needs_processing(&ctx) {
            self.scratch.clear();
            self.scratch.extend_from_slice(raw);
            apply_processors(&mut self.scratch, &ctx);
            pick(&self.scratch, &group.sampling, &mut seq.rng)
        } else {
            pick(raw, &group.sampling, &mut seq.rng)
        };
        let logprob = lse.map(|l| raw[token as usize] - l);
        let top = match (lse, group.sampling.logprobs) {
            (Some(l), Some(n)) if n > 0 => top_n(raw, n as usize)
                .into_iter()
                .map(|(id, v)| TopLogprob {
                    id,
                    logprob: v - l,
                    text: self.decoder.decode(&[id], false),
                })
                .collect(),
            _ => Vec::new(),
        };
        self.accept(seq_id, token, (logprob, top), now, out);
    }

    /// Append a drawn token, detokenize, check stops, emit events.
    fn accept(
        &mut self,
        seq_id: SeqId,
        token: TokenId,
        (logprob, top): (Option<f32>, Vec<TopLogprob>),
        now: f64,
        out: &mut SampleResult,
    ) {
        let decoder = self.decoder.clone();
        let Some(seq) = self.seqs.get_mut(&seq_id) else {
            return;
        };
        let Some(group) = self.groups.get(&seq.request) else {
            return;
        };
        seq.generated.push(token);
        *seq.counts.entry(token).or_default() += 1;
        if let Some(last) = seq.last_token {
            seq.gaps.push(now - last);
        }
        seq.first_token.get_or_insert(now);
        seq.last_token = Some(now);
        let delta = seq.detok.push(token);
        let old_len = seq.text.len();
        seq.text.push_str(&delta);
        let min_reached = seq.generated.len() >= group.stopping.min_tokens as usize;
        let stops = &group.stopping.stop;
        let max_stop = stops.iter().map(String::len).max().unwrap_or(0);
        let mut finish: Option<(FinishReason, Option<StopReason>)> = None;
        if min_reached && group.stop_ids.contains(&token) {
            let reason =
                if self.eos.contains(&token) && !group.stopping.stop_token_ids.contains(&token) {
                    StopReason::Eos(token)
                } else {
                    StopReason::StopToken(token)
                };
            finish = Some((FinishReason::Stop, Some(reason)));
        } else if seq.generated.len() >= group.max_tokens {
            finish = Some((FinishReason::Length, None));
        }
        if finish.is_some() {
            // Flush characters the incremental decoder still buffers.
            let rest = seq.detok.flush();
            seq.text.push_str(&rest);
        }
        let mut visible_end = seq.text.len();
        if min_reached && !stops.is_empty() && !matches!(finish, Some((FinishReason::Stop, _))) {
            let from = old_len.saturating_sub(max_stop.saturating_sub(1));
            if let Some((pos, s)) = find_stop(&seq.text, from, stops) {
                visible_end = if group.stopping.include_stop_str_in_output {
                    pos + s.len()
                } else {
                    pos
                };
                finish = Some((FinishReason::Stop, Some(StopReason::StopString(s.clone()))));
            }
        }
        let emit_to = if finish.is_some() {
            visible_end
        } else {
            seq.text.len() - held_back(&seq.text, stops)
        };
        let emit_to = emit_to.max(seq.emitted);
        let text = seq.text[seq.emitted..emit_to].to_string();
        seq.emitted = emit_to;
        let request = seq.request;
        out.events.push((
            request,
            TokenEvent::Token(GeneratedToken {
                index: seq.index,
                id: token,
                text,
                piece: decoder.decode(&[token], false),
                special: decoder.is_special(token),
                logprob,
                top_logprobs: top,
            }),
        ));
        out.output.tokens.push(SampledToken {
            seq_id,
            token_id: token,
            finished: finish.as_ref().map(|f| f.0),
        });
        if let Some((reason, stop_reason)) = finish {
            self.finish(seq_id, reason, stop_reason, now, out);
        }
    }

    fn finish(
        &mut self,
        seq_id: SeqId,
        reason: FinishReason,
        stop_reason: Option<StopReason>,
        now: f64,
        out: &mut SampleResult,
    ) {
        let Some(seq) = self.seqs.remove(&seq_id) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&seq.request) else {
            return;
        };
        out.events.push((
            seq.request,
            TokenEvent::Finished(Finished {
                index: seq.index,
                reason,
                stop_reason,
                usage: Usage {
                    prompt_tokens: group.prompt.len() as u32,
                    completion_tokens: seq.generated.len() as u32,
                    cached_prompt_tokens: 0,
                },
            }),
        ));
        let first_token = seq.first_token.unwrap_or(now);
        let scheduled = seq.first_scheduled.unwrap_or(first_token);
        out.finished_metrics.push(RequestMetrics {
            request_id: seq.request,
            index: seq.index,
            reason: Some(reason),
            prompt_tokens: group.prompt.len() as u32,
            generation_tokens: seq.generated.len() as u32,
            queue_seconds: (scheduled - group.arrival).max(0.0),
            ttft_seconds: (first_token - group.arrival).max(0.0),
            prefill_seconds: (first_token - scheduled).max(0.0),
            decode_seconds: (seq.last_token.unwrap_or(first_token) - first_token).max(0.0),
            e2e_seconds: (now - group.arrival).max(0.0),
            inter_token_seconds: seq.gaps,
            n: group.seq_ids.len() as u32,
            max_tokens: group.stopping.max_tokens,
        });
        group.live = group.live.saturating_sub(1);
        if group.live == 0 {
            self.groups.remove(&seq.request);
        }
    }

    /// End a request's unfinished sequences with `Finished{abort}`.
    pub fn abort(&mut self, request: RequestId, now: f64) -> Vec<(RequestId, TokenEvent)> {
        let Some(g) = self.groups.get(&request) else {
            return Vec::new();
        };
        let mut out = SampleResult::default();
        for id in g.seq_ids.clone() {
            self.finish(id, FinishReason::Abort, None, now, &mut out);
        }
        self.groups.remove(&request);
        out.events
    }

    /// End a request with one `Failed` event.
    pub fn fail(
        &mut self,
        request: RequestId,
        error: EngineError,
        _now: f64,
    ) -> Vec<(RequestId, TokenEvent)> {
        let Some(g) = self.groups.remove(&request) else {
            return Vec::new();
        };
        for id in g.seq_ids {
            self.seqs.remove(&id);
        }
        vec![(request, TokenEvent::Failed { error })]
    }

    /// Requests known to the sampler.
    pub fn num_requests(&self) -> usize {
        self.groups.len()
    }
}

fn pick(row: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> TokenId {
    if p.is_greedy() {
        argmax(row) as TokenId
    } else {
        draw(row, p, rng)
    }
}

/// A seed from the clock and the request id, for unseeded requests.
fn fresh_entropy(request: RequestId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    nanos ^ request.wrapping_mul(GOLDEN) ^ (&local as *const u8 as u64).rotate_left(17)
}
