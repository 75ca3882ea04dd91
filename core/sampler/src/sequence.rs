//! The state of one request ([`Group`]) and of each of its sequences
//! ([`Seq`]), and what happens when a sequence receives a token: counts,
//! text, stop conditions and the text released to the client.

use kiln_protocol::{
    FinishReason, RequestId, SamplingParams, SeqId, StopReason, StoppingCriteria, TokenId,
};

use kiln_protocol::step::TokenMask;

use crate::constraint::TokenConstraint;
use crate::detok::{IncrementalDecoder, SpecialTokens, TokenDecoder};
use crate::draw::{SeqRng, sequence_rng};
use crate::metrics::TokenTimes;
use crate::process::{OutputCounts, RowContext, distinct_sorted};
use crate::prompt_logprobs::PromptLogprobs;
use crate::stop::{StopStringOutput, StopStrings, floor_char_boundary};

/// Released text is dropped from a sequence's buffer beyond this many bytes.
const TEXT_TRIM_AT: usize = 4096;

/// A request's shared sampling state.
pub(crate) struct Group {
    pub request_id: RequestId,
    pub seq_ids: Vec<SeqId>,
    pub prompt_tokens: u32,
    /// Distinct prompt tokens (only when a repetition penalty is set).
    pub prompt_distinct: Vec<TokenId>,
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
    pub stops: StopStrings,
    /// EOS (unless `ignore_eos`) and stop tokens: masked before
    /// `min_tokens`, allowed wherever a grammar may end.
    pub min_tokens_mask: Vec<TokenId>,
    pub eos: Vec<TokenId>,
    pub max_tokens: usize,
    pub arrival: f64,
    pub first_scheduled: Option<f64>,
    /// Prompt tokens the prefix cache held when the request was first
    /// scheduled (`usage.prompt_tokens_details.cached_tokens`).
    pub cached_prompt_tokens: u32,
    /// Sequences not finished yet.
    pub live: usize,
    /// With `prompt_logprobs`: the prompt positions scored so far.
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// What a request registers with.
pub(crate) struct GroupInit<'a> {
    pub request_id: RequestId,
    pub prompt: &'a [TokenId],
    pub sampling: SamplingParams,
    pub stopping: StoppingCriteria,
    pub eos: &'a [TokenId],
    pub max_tokens: u32,
    pub arrival: f64,
    pub seq_ids: Vec<SeqId>,
}

impl Group {
    pub fn new(init: GroupInit<'_>) -> Self {
        let stopping = init.stopping;
        let eos: Vec<TokenId> = if stopping.ignore_eos {
            Vec::new()
        } else {
            init.eos.to_vec()
        };
        let mut min_tokens_mask = stopping.stop_token_ids.clone();
        min_tokens_mask.extend(&eos);
        let output = if stopping.include_stop_str_in_output {
            StopStringOutput::Include
        } else {
            StopStringOutput::Exclude
        };
        let prompt_distinct = if init.sampling.repetition_penalty != 1.0 {
            distinct_sorted(init.prompt)
        } else {
            Vec::new()
        };
        Group {
            request_id: init.request_id,
            live: init.seq_ids.len(),
            seq_ids: init.seq_ids,
            prompt_tokens: init.prompt.len() as u32,
            prompt_distinct,
            stops: StopStrings::new(&stopping.stop, output),
            min_tokens_mask,
            eos,
            max_tokens: init.max_tokens as usize,
            arrival: init.arrival,
            first_scheduled: None,
            cached_prompt_tokens: 0,
            prompt_logprobs: init
                .sampling
                .prompt_logprobs
                .map(|n| PromptLogprobs::new(init.prompt, n)),
            sampling: init.sampling,
            stopping,
        }
    }

    /// Why `token` ends a sequence that generated at least `min_tokens`.
    fn token_stop(&self, token: TokenId) -> Option<StopReason> {
        if self.eos.contains(&token) {
            Some(StopReason::Eos(token))
        } else if self.stopping.stop_token_ids.contains(&token) {
            Some(StopReason::StopToken(token))
        } else {
            None
        }
    }
}

/// One sequence's state.
pub(crate) struct Seq {
    pub request: RequestId,
    pub index: u32,
    pub num_generated: usize,
    pub counts: OutputCounts,
    pub rng: SeqRng,
    /// Seed of the sequence's device-side stream (see `crate::device`).
    pub device_seed: u64,
    detok: IncrementalDecoder,
    /// The tail of the decoded output (released text far enough back is dropped).
    text: String,
    /// Bytes of `text` already released to the client.
    released: usize,
    pub times: TokenTimes,
    /// The sequence's grammar position (structured outputs).
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// The tokens the grammar allows next, once computed for this position.
    pub mask: Option<TokenMask>,
    /// Why the grammar cannot go on; the request fails at its next token.
    pub constraint_error: Option<String>,
}

/// How a sequence ended.
pub(crate) type Finish = (FinishReason, Option<StopReason>);

/// What one accepted token produced.
pub(crate) struct Accepted {
    /// Text released with this token.
    pub text: String,
    /// Set when the sequence ended with it.
    pub finish: Option<Finish>,
}

impl Seq {
    /// Sequence `index` of `group`, drawing from the stream `(seed, index)`.
    pub fn new(group: &Group, index: u32, prompt: &[TokenId], seed: u64) -> Self {
        Seq {
            request: group.request_id,
            index,
            num_generated: 0,
            counts: OutputCounts::new(),
            rng: sequence_rng(seed, index),
            device_seed: crate::device::device_stream_seed(seed, index),
            detok: IncrementalDecoder::new(
                prompt,
                SpecialTokens::from_skip(group.stopping.skip_special_tokens),
            ),
            text: String::new(),
            released: 0,
            times: TokenTimes::default(),
            constraint: None,
            mask: None,
            constraint_error: None,
        }
    }

    /// Computes the grammar's mask for the next token unless it is known
    /// (no-op without a grammar). Errors are kept in `constraint_error`.
    pub fn prepare_mask(&mut self, end_tokens: &[TokenId], eos: TokenId) {
        if self.mask.is_some() || self.constraint_error.is_some() {
            return;
        }
        let Some(c) = self.constraint.as_mut() else {
            return;
        };
        match c.allowed_tokens() {
            Ok(m) => self.mask = Some(crate::constraint::with_end_tokens(m, eos, end_tokens)),
            Err(e) => self.constraint_error = Some(e),
        }
    }

    /// Moves the grammar past `token` (when the sequence goes on after it):
    /// `Some` when that ends the sequence.
    fn advance_constraint(&mut self, token: TokenId, ends_anyway: bool) -> Option<Finish> {
        self.mask = None;
        let c = self.constraint.as_mut()?;
        if ends_anyway {
            return None;
        }
        if let Err(e) = c.consume(token) {
            self.constraint_error = Some(e);
            return Some((FinishReason::Error, None));
        }
        c.is_complete().then_some((FinishReason::Stop, None))
    }

    /// The processors' view of this sequence for its next token.
    pub fn row_context<'a>(&'a self, group: &'a Group) -> RowContext<'a> {
        // A grammar decides where the text may end, so `min_tokens` gives way to it.
        let masked: &[TokenId] = if self.num_generated < group.stopping.min_tokens as usize
            && self.constraint.is_none()
        {
            &group.min_tokens_mask
        } else {
            &[]
        };
        RowContext {
            params: &group.sampling,
            prompt_distinct: &group.prompt_distinct,
            output_counts: &self.counts,
            masked,
            allowed: self.mask.as_ref(),
        }
    }

    /// Appends `token`: updates counts and times, decodes, checks the stop
    /// conditions and releases the text that can no longer be cut.
    ///
    /// EOS, then stop tokens, end the sequence (once `min_tokens` were
    /// generated), else `max_tokens` does; a stop string completed by the
    /// new text overrides either, since it also cuts the text.
    pub fn accept(
        &mut self,
        token: TokenId,
        group: &Group,
        decoder: &dyn TokenDecoder,
        now: f64,
    ) -> Accepted {
        self.num_generated += 1;
        *self.counts.entry(token).or_default() += 1;
        self.times.on_token(now);
        let min_reached = self.num_generated >= group.stopping.min_tokens as usize;
        let token_stop = min_reached.then(|| group.token_stop(token)).flatten();
        let grammar_end = self.advance_constraint(token, token_stop.is_some());
        let old_len = self.text.len();
        // A stop token's own text is left out unless stop strings are part
        // of the output; everything the decoder holds is flushed at the end.
        if token_stop.is_none() || group.stops.output() == StopStringOutput::Include {
            self.detok.push(decoder, token, &mut self.text);
        }
        if token_stop.is_some() || grammar_end.is_some() || self.num_generated >= group.max_tokens {
            self.detok.flush(decoder, &mut self.text);
        }
        let mut finish = match token_stop {
            Some(reason) => Some((FinishReason::Stop, Some(reason))),
            None if grammar_end.is_some() => grammar_end,
            None if self.num_generated >= group.max_tokens => Some((FinishReason::Length, None)),
            None => None,
        };
        let mut visible_end = self.text.len();
        if min_reached && let Some(m) = group.stops.find(&self.text, old_len) {
            visible_end = group.stops.cut(m);
            let matched = group.stops.get(m.index).to_string();
            finish = Some((FinishReason::Stop, Some(StopReason::StopString(matched))));
        }
        let release_to = if finish.is_some() {
            visible_end
        } else {
            self.text.len() - group.stops.held_back(&self.text[self.released..])
        };
        let text = self.release(release_to);
        self.trim(group.stops.max_len());
        Accepted { text, finish }
    }

    fn release(&mut self, to: usize) -> String {
        let to = to.clamp(self.released, self.text.len());
        let text = self.text[self.released..to].to_string();
        self.released = to;
        text
    }

    /// Drops released text that no stop string can reach any more.
    fn trim(&mut self, max_stop_len: usize) {
        let keep_from = floor_char_boundary(&self.text, self.released.saturating_sub(max_stop_len));
        if keep_from > TEXT_TRIM_AT {
            self.text.drain(..keep_from);
            self.released -= keep_from;
        }
    }
}
