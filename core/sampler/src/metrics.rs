//! Per-sequence timings and the [`RequestMetrics`] of a finished sequence.
//! All times are the engine clock's seconds passed to the sampler.

use kiln_protocol::{FinishReason, RequestId, RequestMetrics};

/// When a sequence produced its tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenTimes {
    first: Option<f64>,
    last: Option<f64>,
    /// Seconds between consecutive tokens.
    gaps: Vec<f64>,
}

impl TokenTimes {
    /// Records a token produced at `now`.
    pub fn on_token(&mut self, now: f64) {
        if let Some(last) = self.last {
            self.gaps.push((now - last).max(0.0));
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
    }
}

/// Everything [`finished_metrics`] combines.
#[derive(Debug, Clone)]
pub struct FinishedSequence<'a> {
    pub request_id: RequestId,
    /// The sequence's index in the request.
    pub index: u32,
    /// Why it ended.
    pub reason: FinishReason,
    /// Tokens in the prompt, cached ones included.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub generation_tokens: u32,
    /// The request's arrival.
    pub arrival: f64,
    /// When the request was first scheduled, if it was.
    pub first_scheduled: Option<f64>,
    /// The sequence's token times.
    pub times: &'a TokenTimes,
    /// When it ended.
    pub now: f64,
    /// The request's `n`.
    pub n: u32,
    /// The request's `max_tokens`, when set.
    pub max_tokens: Option<u32>,
}

/// Metrics of a finished sequence. A sequence that never got a token has
/// zero TTFT, prefill and decode times; one never scheduled spent its whole
/// life queued.
pub fn finished_metrics(f: &FinishedSequence<'_>) -> RequestMetrics {
    let since = |from: f64, to: f64| (to - from).max(0.0);
    let e2e = since(f.arrival, f.now);
    let queue = f.first_scheduled.map_or(e2e, |s| since(f.arrival, s));
    let (ttft, prefill, decode) = match (f.times.first, f.times.last) {
        (Some(first), Some(last)) => (
            since(f.arrival, first),
            since(f.first_scheduled.unwrap_or(f.arrival), first),
            since(first, last),
        ),
        _ => (0.0, 0.0, 0.0),
    };
    RequestMetrics {
        request_id: f.request_id,
        index: f.index,
        reason: Some(f.reason),
        prompt_tokens: f.prompt_tokens,
        generation_tokens: f.generation_tokens,
        queue_seconds: queue,
        ttft_seconds: ttft,
        prefill_seconds: prefill,
        decode_seconds: decode,
        e2e_seconds: e2e,
        inter_token_seconds: f.times.gaps.clone(),
        n: f.n,
        max_tokens: f.max_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(times: &TokenTimes, scheduled: Option<f64>) -> RequestMetrics {
        finished_metrics(&FinishedSequence {
            request_id: 3,
            index: 1,
            reason: FinishReason::Length,
            prompt_tokens: 7,
            generation_tokens: 3,
            arrival: 10.0,
            first_scheduled: scheduled,
            times,
            now: 14.5,
            n: 2,
            max_tokens: Some(3),
        })
    }

    #[test]
    fn timings_split_into_queue_prefill_and_decode() {
        let mut t = TokenTimes::default();
        for now in [12.0, 13.0, 14.5] {
            t.on_token(now);
        }
        let m = finished(&t, Some(11.0));
        assert_eq!(m.queue_seconds, 1.0);
        assert_eq!(m.ttft_seconds, 2.0);
        assert_eq!(m.prefill_seconds, 1.0);
        assert_eq!(m.decode_seconds, 2.5);
        assert_eq!(m.e2e_seconds, 4.5);
        assert_eq!(m.inter_token_seconds, vec![1.0, 1.5]);
        assert_eq!((m.request_id, m.index, m.n), (3, 1, 2));
        assert_eq!(m.reason, Some(FinishReason::Length));
    }

    #[test]
    fn a_sequence_without_tokens_or_scheduling() {
        let m = finished(&TokenTimes::default(), None);
        assert_eq!(m.queue_seconds, 4.5);
        assert_eq!(
            (m.ttft_seconds, m.prefill_seconds, m.decode_seconds),
            (0.0, 0.0, 0.0)
        );
        assert!(m.inter_token_seconds.is_empty());
    }
}
