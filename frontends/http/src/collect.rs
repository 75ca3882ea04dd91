//! Gathering a request's events for non-streaming responses.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kiln_engine_api::RequestStream;
use kiln_protocol::{EngineError, Finished, GeneratedToken, PromptToken, TokenEvent, TokenId};

use crate::config::Clock;

/// Everything one of a request's `n` sequences produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceOutput {
    /// Sequence index within the request (0-based).
    pub index: u32,
    /// The visible output text (concatenated `GeneratedToken::text`).
    pub text: String,
    /// Every generated token, in order.
    pub tokens: Vec<GeneratedToken>,
    /// How the sequence ended.
    pub finished: Finished,
}

impl SequenceOutput {
    /// The sum of its tokens' log-probabilities (`best_of` ranks by it);
    /// tokens without one count as 0.
    pub fn cumulative_logprob(&self) -> f64 {
        self.tokens
            .iter()
            .filter_map(|t| t.logprob)
            .map(f64::from)
            .sum()
    }
}

/// `best_of`: the sequences ordered most likely first (by cumulative
/// log-probability; ties keep the lower index first).
pub fn rank_by_likelihood(sequences: &mut [SequenceOutput]) {
    sequences.sort_by(|a, b| {
        b.cumulative_logprob()
            .total_cmp(&a.cumulative_logprob())
            .then(a.index.cmp(&b.index))
    });
}

/// When things happened, as times since the Unix epoch from the configured clock.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Collection started (just after submission).
    pub submitted: Duration,
    /// The first token arrived.
    pub first_token: Option<Duration>,
    /// The last token arrived.
    pub last_token: Option<Duration>,
    /// The last event arrived.
    pub finished: Duration,
}

impl Timings {
    /// Submission to first token (prompt processing).
    pub fn prompt_duration(&self) -> Duration {
        self.first_token
            .map_or(Duration::ZERO, |t| t.saturating_sub(self.submitted))
    }

    /// First to last token (generation).
    pub fn generation_duration(&self) -> Duration {
        match (self.first_token, self.last_token) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        }
    }

    /// Submission to the end.
    pub fn total_duration(&self) -> Duration {
        self.finished.saturating_sub(self.submitted)
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// `[prompt_len]` the prompt as the engine tokenized it.
    pub prompt_token_ids: Vec<TokenId>,
    /// One entry per sequence, by index.
    pub sequences: Vec<SequenceOutput>,
    /// The prompt's log-probabilities, when the request asked for them.
    pub prompt_logprobs: Option<Vec<PromptToken>>,
    /// When things happened.
    pub timings: Timings,
}

#[derive(Debug, Default)]
struct Partial {
    text: String,
    tokens: Vec<GeneratedToken>,
    finished: Option<Finished>,
}

impl Collected {
    /// The request's first sequence; a finished request without one is an
    /// engine bug, reported as an internal error.
    pub fn first_sequence(&self) -> Result<&SequenceOutput, EngineError> {
        self.sequences
            .first()
            .ok_or_else(|| EngineError::Internal("the engine returned no sequence".into()))
    }
}

/// Folds [`TokenEvent`]s into per-sequence outputs (pure).
#[derive(Debug, Default)]
pub struct Collector {
    seqs: BTreeMap<u32, Partial>,
    prompt_logprobs: Option<Vec<PromptToken>>,
}

impl Collector {
    /// Adds one event; a `Failed` event is returned as the error.
    pub fn push(&mut self, event: TokenEvent) -> Result<(), EngineError> {
        match event {
            TokenEvent::Prompt(tokens) => self.prompt_logprobs = Some(tokens),
            TokenEvent::Token(t) => {
                let seq = self.seqs.entry(t.index).or_default();
                seq.text.push_str(&t.text);
                seq.tokens.push(t);
            }
            TokenEvent::Finished(f) => {
                let index = f.index;
                self.seqs.entry(index).or_default().finished = Some(f);
            }
            TokenEvent::Failed { error } => return Err(error),
        }
        Ok(())
    }

    /// The prompt's log-probabilities, once their event arrived.
    pub fn take_prompt_logprobs(&mut self) -> Option<Vec<PromptToken>> {
        self.prompt_logprobs.take()
    }

    /// The outputs by index; a sequence without a `Finished` event is an error.
    pub fn into_sequences(self) -> Result<Vec<SequenceOutput>, EngineError> {
        self.seqs
            .into_iter()
            .map(|(index, p)| {
                let finished = p.finished.ok_or_else(|| {
                    EngineError::Internal(format!("sequence {index} ended without finishing"))
                })?;
                Ok(SequenceOutput {
                    index,
                    text: p.text,
                    tokens: p.tokens,
                    finished,
                })
            })
            .collect()
    }
}

/// Reads events to the end. Dropping the returned future (client gone)
/// drops the stream, which aborts the request.
pub async fn collect(stream: RequestStream, clock: &dyn Clock) -> Result<Collected, EngineError> {
    let prompt_token_ids = stream.prompt_token_ids().to_vec();
    Ok(Collected {
        prompt_token_ids,
        ..collect_events(stream, clock).await?
    })
}

/// Like [`collect`] over any event stream (without the prompt's token ids).
pub async fn collect_events(
    mut events: impl Stream<Item = TokenEvent> + Unpin,
    clock: &dyn Clock,
) -> Result<Collected, EngineError> {
    let mut timings = Timings {
        submitted: clock.since_epoch(),
        ..Default::default()
    };
    let mut collector = Collector::default();
    while let Some(event) = events.next().await {
        if matches!(event, TokenEvent::Token(_)) {
            let now = clock.since_epoch();
            timings.first_token.get_or_insert(now);
            timings.last_token = Some(now);
        }
        collector.push(event)?;
    }
    timings.finished = clock.since_epoch();
    Ok(Collected {
        prompt_token_ids: Vec::new(),
        prompt_logprobs: collector.take_prompt_logprobs(),
        sequences: collector.into_sequences()?,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{FinishReason, Usage};

    fn tok(index: u32, id: u32, text: &str) -> TokenEvent {
        TokenEvent::Token(GeneratedToken {
            index,
            id,
            text: text.into(),
            piece: text.into(),
            special: false,
            logprob: None,
            top_logprobs: vec![],
        })
    }

    fn fin(index: u32) -> TokenEvent {
        TokenEvent::Finished(Finished {
            index,
            reason: FinishReason::Length,
            stop_reason: None,
            usage: Usage::default(),
        })
    }

    #[test]
    fn best_of_ranks_by_cumulative_logprob() {
        let seq = |index: u32, logprobs: &[f32]| SequenceOutput {
            index,
            text: String::new(),
            tokens: logprobs
                .iter()
                .map(|&lp| GeneratedToken {
                    logprob: Some(lp),
                    ..match tok(index, 1, "x") {
                        TokenEvent::Token(t) => t,
                        _ => unreachable!(),
                    }
                })
                .collect(),
            finished: match fin(index) {
                TokenEvent::Finished(f) => f,
                _ => unreachable!(),
            },
        };
        let mut s = vec![seq(0, &[-1.0, -2.0]), seq(1, &[-0.5]), seq(2, &[-0.5])];
        rank_by_likelihood(&mut s);
        let order: Vec<u32> = s.iter().map(|s| s.index).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert_eq!(s[2].cumulative_logprob(), -3.0);
    }

    #[test]
    fn interleaved_sequences_are_separated() {
        let mut c = Collector::default();
        for e in [
            tok(1, 5, "b"),
            tok(0, 4, "a"),
            tok(1, 6, "c"),
            fin(0),
            fin(1),
        ] {
            c.push(e).unwrap();
        }
        let seqs = c.into_sequences().unwrap();
        assert_eq!(seqs.len(), 2);
        assert_eq!((seqs[0].index, seqs[0].text.as_str()), (0, "a"));
        assert_eq!((seqs[1].index, seqs[1].text.as_str()), (1, "bc"));
    }

    #[test]
    fn failures_and_unfinished_sequences_are_errors() {
        let mut c = Collector::default();
        let err = EngineError::Backend("x".into());
        assert_eq!(c.push(TokenEvent::Failed { error: err.clone() }), Err(err));
        let mut c = Collector::default();
        c.push(tok(0, 1, "a")).unwrap();
        assert!(c.into_sequences().is_err());
    }
}
