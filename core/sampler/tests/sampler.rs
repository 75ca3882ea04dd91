//! Sampler behaviour through its public API, against a toy byte-level
//! vocabulary in which single tokens are bytes of multi-byte UTF-8
//! characters.

use std::sync::Arc;

use kiln_protocol::step::{LogitsRow, StepLogits};
use kiln_protocol::{
    EngineError, FinishReason, Finished, GeneratedToken, SamplingParams, StopReason,
    StoppingCriteria, TokenEvent,
};
use kiln_sampler::draw::{DrawScratch, sequence_rng};
use kiln_sampler::{SampleResult, SamplerCore, SequenceGroup, TokenDecoder};
use proptest::prelude::*;

/// Ids below 256 are bytes; then `<eos>` (special), "é", "ab", `<|x|>` (special).
struct Bytes;

const EOS: u32 = 256;
const E_ACUTE: u32 = 257;
const AB: u32 = 258;
const SPECIAL: u32 = 259;
const VOCAB: usize = 260;

impl TokenDecoder for Bytes {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let mut b = Vec::new();
        for &i in ids {
            match i {
                0..=255 => b.push(i as u8),
                EOS if !skip_special_tokens => b.extend_from_slice(b"<eos>"),
                E_ACUTE => b.extend_from_slice("é".as_bytes()),
                AB => b.extend_from_slice(b"ab"),
                SPECIAL if !skip_special_tokens => b.extend_from_slice(b"<|x|>"),
                _ => {}
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }
    fn is_special(&self, id: u32) -> bool {
        id == EOS || id == SPECIAL
    }
    fn vocab_size(&self) -> usize {
        VOCAB
    }
}

fn sampler() -> SamplerCore {
    SamplerCore::new(Arc::new(Bytes), vec![EOS])
}

/// A request whose id is its first sequence's id.
fn group(
    seqs: Vec<u64>,
    sampling: SamplingParams,
    stopping: StoppingCriteria,
    max_tokens: u32,
) -> SequenceGroup {
    SequenceGroup {
        request_id: seqs[0],
        seq_ids: seqs,
        prompt_token_ids: vec![b'x' as u32],
        sampling,
        stopping,
        max_tokens,
        arrival_seconds: 0.0,
    }
}

fn one_hot(id: u32) -> Vec<f32> {
    let mut v = vec![0.0; VOCAB];
    v[id as usize] = 10.0;
    v
}

fn step(rows: Vec<(u64, u32)>, logits: Vec<f32>) -> StepLogits {
    StepLogits {
        step_id: 0,
        rows: rows
            .into_iter()
            .map(|(seq_id, num_samples)| LogitsRow {
                seq_id,
                num_samples,
            })
            .collect(),
        vocab_size: VOCAB,
        logits,
        sampled: Vec::new(),
        embeddings: Vec::new(),
        prompt: Vec::new(),
    }
}

/// Forces `tokens` through one greedy sequence (one-hot rows) until it
/// finishes; `max_tokens` is the number of tokens.
fn force(tokens: &[u32], stopping: StoppingCriteria) -> Vec<TokenEvent> {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams::greedy(),
        stopping,
        tokens.len() as u32,
    ));
    let mut events = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        if !s.has_request(1) {
            break;
        }
        let out = s.sample(&step(vec![(1, 1)], one_hot(t)), i as f64);
        assert_eq!(out.output.tokens[0].token_id, t);
        events.extend(out.events.into_iter().map(|e| e.1));
    }
    events
}

fn token_events(events: &[TokenEvent]) -> Vec<&GeneratedToken> {
    events
        .iter()
        .filter_map(|e| match e {
            TokenEvent::Token(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn streamed(events: &[TokenEvent]) -> String {
    token_events(events)
        .iter()
        .map(|t| t.text.as_str())
        .collect()
}

fn finished(events: &[TokenEvent]) -> &Finished {
    match events.last() {
        Some(TokenEvent::Finished(f)) => f,
        other => panic!("expected Finished last, got {other:?}"),
    }
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn stop_on(strings: &[&str]) -> StoppingCriteria {
    StoppingCriteria {
        stop: strings.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

// ------------------------------------------------------------ detokenization

#[test]
fn multibyte_characters_split_across_tokens_are_never_split_in_output() {
    // "é" is C3 A9; "😀" is F0 9F 98 80.
    let toks = [0xC3, 0xA9, b' ' as u32, 0xF0, 0x9F, 0x98, 0x80, E_ACUTE];
    let events = force(&toks, StoppingCriteria::default());
    let texts: Vec<&str> = token_events(&events)
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(texts, vec!["", "é", " ", "", "", "", "😀", "é"]);
    let pieces: Vec<&str> = token_events(&events)
        .iter()
        .map(|t| t.piece.as_str())
        .collect();
    assert_eq!(pieces[7], "é");
    assert_eq!(pieces[0], "\u{FFFD}");
}

#[test]
fn an_unfinished_character_is_flushed_at_the_length_limit() {
    let events = force(&[b'a' as u32, 0xF0, 0x9F], StoppingCriteria::default());
    assert_eq!(streamed(&events), "a\u{FFFD}");
    assert_eq!(finished(&events).reason, FinishReason::Length);
}

#[test]
fn special_tokens_are_skipped_or_kept() {
    let toks = [b'a' as u32, SPECIAL, b'b' as u32];
    let skipped = force(&toks, StoppingCriteria::default());
    assert_eq!(streamed(&skipped), "ab");
    let t = token_events(&skipped)[1];
    assert!(t.special && t.text.is_empty() && t.piece == "<|x|>");
    let kept = force(
        &toks,
        StoppingCriteria {
            skip_special_tokens: false,
            ..Default::default()
        },
    );
    assert_eq!(streamed(&kept), "a<|x|>b");
}

// ------------------------------------------------------------ stop rules

#[test]
fn eos_is_a_token_event_without_text_and_counts() {
    let events = force(
        &[b'h' as u32, EOS, b'z' as u32],
        StoppingCriteria::default(),
    );
    assert_eq!(streamed(&events), "h");
    let t = token_events(&events)[1];
    assert!(t.special && t.text.is_empty() && t.id == EOS);
    let f = finished(&events);
    assert_eq!(
        (f.reason, f.stop_reason.clone()),
        (FinishReason::Stop, Some(StopReason::Eos(EOS)))
    );
    assert_eq!(f.usage.completion_tokens, 2);
    assert_eq!(f.usage.prompt_tokens, 1);
}

#[test]
fn eos_text_is_hidden_even_when_special_tokens_are_kept_unless_included() {
    let toks = [b'h' as u32, EOS];
    let hidden = force(
        &toks,
        StoppingCriteria {
            skip_special_tokens: false,
            ..Default::default()
        },
    );
    assert_eq!(streamed(&hidden), "h");
    let shown = force(
        &toks,
        StoppingCriteria {
            skip_special_tokens: false,
            include_stop_str_in_output: true,
            ..Default::default()
        },
    );
    assert_eq!(streamed(&shown), "h<eos>");
}

#[test]
fn ignore_eos_keeps_going() {
    let events = force(
        &[b'h' as u32, EOS, b'i' as u32],
        StoppingCriteria {
            ignore_eos: true,
            ..Default::default()
        },
    );
    assert_eq!(streamed(&events), "hi");
    assert_eq!(finished(&events).reason, FinishReason::Length);
    assert_eq!(finished(&events).usage.completion_tokens, 3);
}

#[test]
fn stop_token_ids_stop_and_their_text_is_not_emitted() {
    let events = force(
        &bytes("ab.cd"),
        StoppingCriteria {
            stop_token_ids: vec![b'.' as u32],
            ..Default::default()
        },
    );
    assert_eq!(streamed(&events), "ab");
    let f = finished(&events);
    assert_eq!(f.stop_reason, Some(StopReason::StopToken(b'.' as u32)));
    assert_eq!(f.usage.completion_tokens, 3);
}

#[test]
fn a_stop_token_flushes_an_unfinished_character_before_it() {
    let events = force(
        &[b'a' as u32, 0xC3, b'.' as u32],
        StoppingCriteria {
            stop_token_ids: vec![b'.' as u32],
            ..Default::default()
        },
    );
    assert_eq!(streamed(&events), "a\u{FFFD}");
}

#[test]
fn eos_wins_over_stop_token_for_the_same_id() {
    let events = force(
        &[EOS],
        StoppingCriteria {
            stop_token_ids: vec![EOS],
            ..Default::default()
        },
    );
    assert_eq!(finished(&events).stop_reason, Some(StopReason::Eos(EOS)));
}

#[test]
fn stop_strings_across_tokens_are_not_emitted() {
    let mut toks = bytes("hello ST");
    toks.extend(bytes("OP!"));
    let events = force(&toks, stop_on(&["STOP"]));
    assert_eq!(streamed(&events), "hello ");
    let f = finished(&events);
    assert_eq!(f.reason, FinishReason::Stop);
    assert_eq!(f.stop_reason, Some(StopReason::StopString("STOP".into())));
    assert_eq!(f.usage.completion_tokens, 10);
    // The text was held back while it could still become the stop string.
    let texts: Vec<&str> = token_events(&events)
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(texts[6..], ["", "", "", ""]);
}

#[test]
fn text_after_a_stop_string_in_the_same_token_is_dropped() {
    let events = force(&[b'x' as u32, AB, b'z' as u32], stop_on(&["a"]));
    assert_eq!(streamed(&events), "x");
    assert_eq!(finished(&events).usage.completion_tokens, 2);
}

#[test]
fn include_stop_str_in_output_keeps_the_stop_string_only() {
    let mut stopping = stop_on(&["a"]);
    stopping.include_stop_str_in_output = true;
    let events = force(&[b'x' as u32, AB, b'z' as u32], stopping.clone());
    assert_eq!(streamed(&events), "xa");
    // Nothing is held back when the stop string is part of the output.
    let events = force(&bytes("xyz"), stop_on_included(&["yq"]));
    let texts: Vec<&str> = token_events(&events)
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(texts, vec!["x", "y", "z"]);
}

fn stop_on_included(strings: &[&str]) -> StoppingCriteria {
    StoppingCriteria {
        include_stop_str_in_output: true,
        ..stop_on(strings)
    }
}

#[test]
fn held_text_is_released_when_it_stops_matching() {
    let events = force(&bytes("a S T x"), stop_on(&["S T Z"]));
    assert_eq!(streamed(&events), "a S T x");
    let texts: Vec<&str> = token_events(&events)
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(texts, vec!["a", " ", "", "", "", "", "S T x"]);
}

#[test]
fn held_text_is_flushed_when_the_sequence_ends_otherwise() {
    let events = force(&bytes("a ST"), stop_on(&["STOP"]));
    assert_eq!(streamed(&events), "a ST");
    assert_eq!(finished(&events).reason, FinishReason::Length);
}

#[test]
fn multibyte_stop_strings_match_across_split_bytes() {
    // "é" arrives as two byte tokens; the stop string is "éa".
    let events = force(
        &[b'x' as u32, 0xC3, 0xA9, b'a' as u32, b'y' as u32],
        stop_on(&["éa"]),
    );
    assert_eq!(streamed(&events), "x");
    assert_eq!(finished(&events).usage.completion_tokens, 4);
}

#[test]
fn the_first_stop_string_to_complete_wins() {
    let events = force(&bytes("xabcd"), stop_on(&["abcd", "bc"]));
    assert_eq!(streamed(&events), "xa");
    assert_eq!(
        finished(&events).stop_reason,
        Some(StopReason::StopString("bc".into()))
    );
}

#[test]
fn long_outputs_still_match_stop_strings_across_the_trimmed_text() {
    let mut toks: Vec<u32> = "ab é".repeat(2000).bytes().map(u32::from).collect();
    toks.extend(bytes("STOP tail"));
    let body = "ab é".repeat(2000);
    let events = force(&toks, stop_on(&["STOP"]));
    assert_eq!(streamed(&events), body);
    let events = force(&toks, stop_on_included(&["STOP"]));
    assert_eq!(streamed(&events), body + "STOP");
}

#[test]
fn min_tokens_masks_eos_and_stop_tokens() {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams::greedy(),
        StoppingCriteria {
            min_tokens: 2,
            stop_token_ids: vec![7],
            ..Default::default()
        },
        10,
    ));
    let mut logits = vec![0.0; VOCAB];
    logits[EOS as usize] = 10.0;
    logits[7] = 9.0;
    logits[5] = 1.0;
    let out = |s: &mut SamplerCore| s.sample(&step(vec![(1, 1)], logits.clone()), 0.0);
    // EOS and 7 are masked for the first two tokens: the argmax falls to 5.
    assert_eq!(out(&mut s).output.tokens[0].token_id, 5);
    assert_eq!(out(&mut s).output.tokens[0].token_id, 5);
    let third = out(&mut s);
    assert_eq!(third.output.tokens[0].token_id, EOS);
    assert_eq!(third.output.tokens[0].finished, Some(FinishReason::Stop));
}

#[test]
fn min_tokens_suppresses_stop_strings() {
    let mut stopping = stop_on(&["b"]);
    stopping.min_tokens = 3;
    // The first "b" comes before min_tokens and is kept; the second stops.
    let events = force(&bytes("ababa"), stopping);
    assert_eq!(streamed(&events), "aba");
    assert_eq!(finished(&events).usage.completion_tokens, 4);
}

#[test]
fn max_tokens_ends_with_length_and_stop_strings_take_precedence() {
    let events = force(&bytes("abc"), StoppingCriteria::default());
    assert_eq!(finished(&events).reason, FinishReason::Length);
    let events = force(&bytes("abc"), stop_on(&["c"]));
    assert_eq!(finished(&events).reason, FinishReason::Stop);
    assert_eq!(streamed(&events), "ab");
}

// ------------------------------------------------------------ logprobs

#[test]
fn logprobs_come_from_the_raw_distribution_with_texts() {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams {
            logprobs: Some(3),
            // Processing changes the draw but not the reported logprobs.
            logit_bias: vec![(67, 50.0)],
            ..SamplingParams::greedy()
        },
        StoppingCriteria::default(),
        1,
    ));
    let mut logits = vec![0.0f32; VOCAB];
    logits[65] = 2.0;
    logits[66] = 2.0;
    logits[E_ACUTE as usize] = 1.0;
    let out = s.sample(&step(vec![(1, 1)], logits.clone()), 0.0);
    let TokenEvent::Token(t) = &out.events[0].1 else {
        panic!("{:?}", out.events)
    };
    assert_eq!(t.id, 67);
    let z: f64 = logits.iter().map(|&v| f64::from(v).exp()).sum();
    assert!((f64::from(t.logprob.unwrap()) + z.ln()).abs() < 1e-5);
    let top: Vec<(u32, &str)> = t
        .top_logprobs
        .iter()
        .map(|a| (a.id, a.text.as_str()))
        .collect();
    assert_eq!(top, vec![(65, "A"), (66, "B"), (E_ACUTE, "é")]);
    assert!((f64::from(t.top_logprobs[0].logprob) - (2.0 - z.ln())).abs() < 1e-5);
}

#[test]
fn logprobs_zero_reports_only_the_sampled_token() {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams {
            logprobs: Some(0),
            ..SamplingParams::greedy()
        },
        StoppingCriteria::default(),
        1,
    ));
    let out = s.sample(&step(vec![(1, 1)], one_hot(70)), 0.0);
    let TokenEvent::Token(t) = &out.events[0].1 else {
        panic!()
    };
    assert!(t.logprob.is_some() && t.top_logprobs.is_empty());
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        1,
    ));
    let out = s.sample(&step(vec![(1, 1)], one_hot(70)), 0.0);
    let TokenEvent::Token(t) = &out.events[0].1 else {
        panic!()
    };
    assert!(t.logprob.is_none());
}

// ------------------------------------------------------------ forks, lifecycle

#[test]
fn n_samples_fork_into_independent_streams_with_their_own_stops() {
    let mut s = sampler();
    s.register(group(
        vec![10, 11, 12],
        SamplingParams {
            seed: Some(5),
            top_k: 4,
            ..Default::default()
        },
        StoppingCriteria {
            stop_token_ids: vec![b'A' as u32],
            ..Default::default()
        },
        6,
    ));
    let mut logits = vec![f32::NEG_INFINITY; VOCAB];
    for t in b"ABCD" {
        logits[*t as usize] = 0.0;
    }
    let first = s.sample(&step(vec![(10, 3)], logits.clone()), 1.0);
    let ids: Vec<u64> = first.output.tokens.iter().map(|t| t.seq_id).collect();
    assert_eq!(ids, vec![10, 11, 12]);
    let indices: Vec<u32> =
        token_events(&first.events.iter().map(|e| e.1.clone()).collect::<Vec<_>>())
            .iter()
            .map(|t| t.index)
            .collect();
    assert_eq!(indices, vec![0, 1, 2]);
    // Keep stepping every live sequence until all finished.
    let mut all: Vec<SampleResult> = vec![first];
    for k in 0..6 {
        let live: Vec<u64> = [10, 11, 12]
            .into_iter()
            .filter(|id| {
                all.iter()
                    .flat_map(|r| &r.output.tokens)
                    .all(|t| t.seq_id != *id || t.finished.is_none())
            })
            .collect();
        if live.is_empty() {
            break;
        }
        let rows: Vec<(u64, u32)> = live.iter().map(|&i| (i, 1)).collect();
        let logits_all: Vec<f32> = live.iter().flat_map(|_| logits.iter().copied()).collect();
        all.push(s.sample(&step(rows, logits_all), 2.0 + k as f64));
    }
    assert!(!s.has_request(10));
    let per_seq = |id: u64| -> Vec<u32> {
        all.iter()
            .flat_map(|r| &r.output.tokens)
            .filter(|t| t.seq_id == id)
            .map(|t| t.token_id)
            .collect()
    };
    let (a, b, c) = (per_seq(10), per_seq(11), per_seq(12));
    assert!(a != b || b != c, "three seeded streams agree: {a:?}");
    for seq in [&a, &b, &c] {
        // Each stops at its own 'A' or at max_tokens.
        let stop = seq.iter().position(|&t| t == b'A' as u32);
        assert_eq!(seq.len(), stop.map_or(6, |p| p + 1));
    }
    let metrics: Vec<_> = all.iter().flat_map(|r| &r.finished_metrics).collect();
    assert_eq!(metrics.len(), 3);
    assert!(metrics.iter().all(|m| m.n == 3 && m.request_id == 10));
}

#[test]
fn abort_finishes_every_unfinished_sequence() {
    let mut s = sampler();
    s.register(group(
        vec![1, 2],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    s.sample(&step(vec![(1, 2)], one_hot(b'a' as u32)), 1.0);
    let events = s.abort(1, 2.0);
    assert_eq!(events.len(), 2);
    for (i, (rid, e)) in events.iter().enumerate() {
        assert_eq!(*rid, 1);
        match e {
            TokenEvent::Finished(f) => {
                assert_eq!(
                    (f.index, f.reason, f.usage.completion_tokens),
                    (i as u32, FinishReason::Abort, 1)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!s.has_request(1));
    assert!(s.abort(1, 3.0).is_empty());
    let m = s.take_finished_metrics();
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|m| m.reason == Some(FinishReason::Abort)));
    // A later step for the aborted sequence is ignored.
    let out = s.sample(&step(vec![(1, 1)], one_hot(b'a' as u32)), 4.0);
    assert!(out.output.tokens.is_empty() && out.events.is_empty());
}

#[test]
fn abort_metrics_come_with_the_next_step_when_not_taken() {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    s.register(group(
        vec![2],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    s.abort(1, 1.0);
    let out = s.sample(&step(vec![(2, 1)], one_hot(3)), 2.0);
    assert_eq!(out.finished_metrics.len(), 1);
    assert_eq!(out.finished_metrics[0].request_id, 1);
    assert!(s.take_finished_metrics().is_empty());
}

#[test]
fn fail_emits_one_failed_event_and_remove_is_silent() {
    let mut s = sampler();
    s.register(group(
        vec![1, 2],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    let events = s.fail(1, EngineError::Backend("device lost".into()), 1.0);
    assert_eq!(events.len(), 1);
    assert!(matches!(
        &events[0],
        (
            1,
            TokenEvent::Failed {
                error: EngineError::Backend(_)
            }
        )
    ));
    assert!(!s.has_request(1));
    assert_eq!(s.take_finished_metrics().len(), 2);
    assert!(
        s.fail(1, EngineError::Internal("again".into()), 2.0)
            .is_empty()
    );

    s.register(group(
        vec![3],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    s.remove(3);
    assert_eq!(s.num_requests(), 0);
    assert!(s.take_finished_metrics().is_empty());
}

#[test]
fn malformed_logits_fail_the_rows_requests() {
    let mut s = sampler();
    s.register(group(
        vec![1, 2],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        9,
    ));
    let out = s.sample(&step(vec![(1, 2)], vec![0.0; VOCAB - 1]), 1.0);
    assert!(matches!(out.events[..], [(1, TokenEvent::Failed { .. })]));
    let finished: Vec<(u64, Option<FinishReason>)> = out
        .output
        .tokens
        .iter()
        .map(|t| (t.seq_id, t.finished))
        .collect();
    assert_eq!(
        finished,
        vec![
            (1, Some(FinishReason::Error)),
            (2, Some(FinishReason::Error))
        ]
    );
    assert!(!s.has_request(1));
}

#[test]
fn metrics_follow_the_clock() {
    let mut s = sampler();
    let mut g = group(
        vec![1],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        3,
    );
    g.arrival_seconds = 10.0;
    s.register(g);
    s.mark_scheduled(1, 0, 10.5);
    s.mark_scheduled(1, 0, 11.5); // only the first counts
    let mut metrics = Vec::new();
    for now in [12.0, 12.25, 13.0] {
        metrics.extend(
            s.sample(&step(vec![(1, 1)], one_hot(3)), now)
                .finished_metrics,
        );
    }
    let m = &metrics[0];
    assert_eq!(m.queue_seconds, 0.5);
    assert_eq!(m.prefill_seconds, 1.5);
    assert_eq!(m.ttft_seconds, 2.0);
    assert_eq!(m.decode_seconds, 1.0);
    assert_eq!(m.e2e_seconds, 3.0);
    assert_eq!(m.inter_token_seconds, vec![0.25, 0.75]);
    assert_eq!((m.prompt_tokens, m.generation_tokens), (1, 3));
    assert_eq!(m.reason, Some(FinishReason::Length));
}

#[test]
fn usage_reports_the_prefix_cache_hit_of_the_first_scheduling() {
    let mut s = sampler();
    let mut g = group(
        vec![1],
        SamplingParams::greedy(),
        StoppingCriteria::default(),
        1,
    );
    g.prompt_token_ids = vec![7; 40];
    s.register(g);
    // Admitted with 32 prompt tokens from the prefix cache; a later
    // scheduling (a recompute after preemption, say) does not change it.
    s.mark_scheduled(1, 32, 1.0);
    s.mark_scheduled(1, 0, 2.0);
    let out = s.sample(&step(vec![(1, 1)], one_hot(3)), 3.0);
    let finished = out
        .events
        .iter()
        .find_map(|(_, e)| match e {
            TokenEvent::Finished(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a finished event");
    assert_eq!(finished.usage.prompt_tokens, 40);
    assert_eq!(finished.usage.cached_prompt_tokens, 32);
}

#[test]
fn penalties_steer_greedy_decoding_away_from_repeats() {
    let mut s = sampler();
    s.register(group(
        vec![1],
        SamplingParams {
            frequency_penalty: 1.0,
            ..SamplingParams::greedy()
        },
        StoppingCriteria::default(),
        4,
    ));
    let mut logits = vec![0.0f32; VOCAB];
    logits[b'a' as usize] = 3.0;
    logits[b'b' as usize] = 2.5;
    let ids: Vec<u32> = (0..4)
        .map(|_| {
            s.sample(&step(vec![(1, 1)], logits.clone()), 0.0)
                .output
                .tokens[0]
                .token_id
        })
        .collect();
    // a (3) → b (2.5 vs 2) → a (2 vs 1.5)... ties go to the lower id.
    assert_eq!(ids, bytes("abab"));
}

// ------------------------------------------------------------ proptests

/// The text clients see, computed from the whole token list: everything up
/// to the first EOS (its text only when included), cut at the first stop
/// string to complete.
fn expected_text(tokens: &[u32], stopping: &StoppingCriteria) -> String {
    let end = tokens.iter().position(|&t| t == EOS);
    let body = match end {
        Some(e) if stopping.include_stop_str_in_output => &tokens[..=e],
        Some(e) => &tokens[..e],
        None => tokens,
    };
    let text = Bytes.decode(body, stopping.skip_special_tokens);
    for (e, _) in text.char_indices().skip(1).chain([(text.len(), ' ')]) {
        let done = &text[..e];
        let hit = stopping
            .stop
            .iter()
            .filter(|s| done.ends_with(s.as_str()))
            .max_by_key(|s| s.len());
        if let Some(s) = hit {
            let cut = if stopping.include_stop_str_in_output {
                e
            } else {
                e - s.len()
            };
            return text[..cut].to_string();
        }
    }
    text
}

fn alphabet() -> Vec<u32> {
    vec![
        0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0xE2, 0x82, 0xAC, E_ACUTE, AB, SPECIAL, EOS, 97, 98,
        32, 83, 84,
    ]
}

fn stop_pool() -> Vec<String> {
    [
        "ab", "é a", "ST", "\u{FFFD}", "€", "b€", "😀", "a", " é", "TS T",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) The streamed text always equals the final text: the full decode,
    /// cut at the first stop string to complete (or EOS).
    #[test]
    fn streamed_text_equals_the_final_text(
        toks in prop::collection::vec(prop::sample::select(alphabet()), 1..40),
        stops in prop::sample::subsequence(stop_pool(), 0..3),
        include in any::<bool>(),
        skip in any::<bool>(),
    ) {
        let stopping = StoppingCriteria {
            stop: stops,
            include_stop_str_in_output: include,
            skip_special_tokens: skip,
            ..Default::default()
        };
        let events = force(&toks, stopping.clone());
        prop_assert_eq!(streamed(&events), expected_text(&toks, &stopping));
        let finishes = events.iter().filter(|e| matches!(e, TokenEvent::Finished(_))).count();
        prop_assert_eq!(finishes, 1);
        prop_assert_eq!(finished(&events).usage.completion_tokens as usize, token_events(&events).len());
    }

    /// (b) A seeded request draws the same tokens alone and in any batch.
    #[test]
    fn seeded_draws_ignore_the_batch(
        seed in any::<u64>(),
        n in 1u32..3,
        others in 0usize..5,
        position in 0usize..6,
        temperature in 0.3f32..2.0,
        top_k in 0u32..40,
        top_p in 0.5f32..1.0,
        min_p in 0.0f32..0.2,
        frequency in 0.0f32..1.0,
    ) {
        let params = SamplingParams {
            n, temperature, top_k, top_p, min_p, frequency_penalty: frequency,
            seed: Some(seed),
            ..Default::default()
        };
        let alone = run_batch(&params, 0, 0, 1);
        let batched = run_batch(&params, others, position, 2);
        prop_assert_eq!(alone, batched);
    }

    /// (c) Top-k, top-p and min-p never let a token outside their set through.
    #[test]
    fn restricted_draws_stay_in_the_allowed_set(
        logits in prop::collection::vec(-40i32..40, 2..300),
        temperature in 0.1f32..3.0,
        top_k in 0u32..20,
        top_p in 0.05f32..1.0,
        min_p in 0.0f32..0.5,
        seed in any::<u64>(),
    ) {
        let row: Vec<f32> = logits.iter().map(|&v| v as f32 / 8.0).collect();
        let params = SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
        let allowed = reference_allowed(&row, &params);
        let mut scratch = DrawScratch::default();
        let prepared = scratch.prepare(&row, &params);
        let mut rng = sequence_rng(seed, 0);
        for _ in 0..200 {
            let t = prepared.draw(&mut rng);
            prop_assert!(allowed.contains(&t), "drew {} outside {:?}", t, allowed);
        }
    }

    /// (d) Greedy is the argmax of the processed row, lowest id on ties.
    #[test]
    fn greedy_is_argmax(
        rows in prop::collection::vec(prop::collection::vec(-20i32..20, VOCAB), 1..6),
        top_k_one in any::<bool>(),
    ) {
        let params = if top_k_one {
            SamplingParams { top_k: 1, temperature: 0.7, ..Default::default() }
        } else {
            SamplingParams::greedy()
        };
        let mut s = sampler();
        for i in 0..rows.len() as u64 {
            s.register(group(vec![i], params.clone(), StoppingCriteria::default(), 5));
        }
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32 / 4.0).collect();
        let out = s.sample(&step((0..rows.len() as u64).map(|i| (i, 1)).collect(), flat), 0.0);
        for (row, t) in rows.iter().zip(&out.output.tokens) {
            let max = *row.iter().max().unwrap();
            let want = row.iter().position(|&v| v == max).unwrap() as u32;
            prop_assert_eq!(t.token_id, want);
        }
    }
}

/// Tokens each sequence of a seeded request draws over 6 steps, alone or
/// among `others` random requests with its rows at `position`.
fn run_batch(params: &SamplingParams, others: usize, position: usize, noise: u64) -> Vec<Vec<u32>> {
    let mut s = sampler();
    let n = params.n as u64;
    let target: Vec<u64> = (1000..1000 + n).collect();
    s.register(group(
        target.clone(),
        params.clone(),
        StoppingCriteria {
            ignore_eos: true,
            ..Default::default()
        },
        6,
    ));
    for i in 0..others as u64 {
        let p = SamplingParams {
            temperature: 1.0,
            seed: (i % 2 == 0).then_some(i * noise),
            ..Default::default()
        };
        s.register(group(vec![i], p, StoppingCriteria::default(), 6));
    }
    let mut drawn = vec![Vec::new(); n as usize];
    for k in 0..6u64 {
        let mut rows: Vec<(u64, u32, Vec<f32>)> = (0..others as u64)
            .filter(|&i| s.has_request(i))
            .map(|i| (i, 1, noise_row(k * 31 + i * noise)))
            .collect();
        let mine: Vec<(u64, u32, Vec<f32>)> = if k == 0 {
            vec![(target[0], n as u32, target_row(k, 0))]
        } else {
            target
                .iter()
                .enumerate()
                .map(|(j, &id)| (id, 1, target_row(k, j as u64)))
                .collect()
        };
        let at = position.min(rows.len());
        rows.splice(at..at, mine);
        let out = s.sample(
            &step(
                rows.iter().map(|r| (r.0, r.1)).collect(),
                rows.iter().flat_map(|r| r.2.iter().copied()).collect(),
            ),
            k as f64,
        );
        for t in &out.output.tokens {
            if let Some(j) = target.iter().position(|&id| id == t.seq_id) {
                drawn[j].push(t.token_id);
            }
        }
    }
    drawn
}

fn hash_row(salt: u64) -> Vec<f32> {
    (0..VOCAB as u64)
        .map(|i| {
            let h = (i ^ salt.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) % 1000) as f32 / 200.0
        })
        .collect()
}

/// The target's row at step `k` for its sequence `j` (the same in every run).
fn target_row(k: u64, j: u64) -> Vec<f32> {
    hash_row(k * 7 + j * 1_000_003)
}

fn noise_row(salt: u64) -> Vec<f32> {
    hash_row(salt ^ 0xDEAD_BEEF)
}

/// Tokens a reference (full sort, f64 softmax) allows, with a little slack
/// at the top-p and min-p thresholds for rounding.
fn reference_allowed(row: &[f32], p: &SamplingParams) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    if p.top_k > 0 {
        ids.truncate(p.top_k as usize);
    }
    let max = f64::from(row[ids[0] as usize]);
    let w: Vec<f64> = ids
        .iter()
        .map(|&i| ((f64::from(row[i as usize]) - max) / f64::from(p.temperature)).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut keep = ids.len();
    let mut cum = 0.0;
    for (j, wj) in w.iter().enumerate() {
        if cum >= (f64::from(p.top_p) + 1e-4) * total {
            keep = j;
            break;
        }
        cum += wj;
    }
    ids.iter()
        .zip(&w)
        .take(keep)
        .filter(|(_, wj)| **wj >= f64::from(p.min_p) - 1e-4)
        .map(|(&i, _)| i)
        .collect()
}

/// Best of 3 wall times of sampling 256 rows × 49152 logits under `params`.
fn time_big_batch(params: &SamplingParams) -> std::time::Duration {
    let (rows, vocab) = (256u64, 49152usize);
    let logits: Vec<f32> = (0..rows as usize * vocab)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
        .collect();
    let step = StepLogits {
        step_id: 0,
        rows: (1..=rows)
            .map(|seq_id| LogitsRow {
                seq_id,
                num_samples: 1,
            })
            .collect(),
        vocab_size: vocab,
        logits,
        sampled: Vec::new(),
        embeddings: Vec::new(),
        prompt: Vec::new(),
    };
    let mut s = SamplerCore::new(Arc::new(Bytes), vec![]);
    for i in 1..=rows {
        s.register(group(
            vec![i],
            params.clone(),
            StoppingCriteria::default(),
            100,
        ));
    }
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let out = s.sample(&step, 0.0);
        best = best.min(started.elapsed());
        assert_eq!(out.output.tokens.len(), rows as usize);
    }
    best
}

/// Timings of every sampling path (printed, not asserted: speed is a
/// benchmark's business, and a busy machine would fail a timed test); run
/// with `--release --ignored --nocapture`.
#[test]
#[ignore = "timing report"]
fn sampling_timings() {
    let cases = [
        ("greedy", SamplingParams::greedy()),
        (
            "temperature 0.8",
            SamplingParams {
                temperature: 0.8,
                ..Default::default()
            },
        ),
        (
            "top_k 50",
            SamplingParams {
                top_k: 50,
                ..Default::default()
            },
        ),
        (
            "top_p 0.9",
            SamplingParams {
                top_p: 0.9,
                ..Default::default()
            },
        ),
        (
            "top_k 50 + top_p 0.9 + min_p 0.05",
            SamplingParams {
                top_k: 50,
                top_p: 0.9,
                min_p: 0.05,
                ..Default::default()
            },
        ),
        (
            "greedy + logprobs 5",
            SamplingParams {
                logprobs: Some(5),
                ..SamplingParams::greedy()
            },
        ),
        (
            "greedy + repetition 1.1",
            SamplingParams {
                repetition_penalty: 1.1,
                ..SamplingParams::greedy()
            },
        ),
    ];
    for (name, p) in cases {
        eprintln!("256 × 49152 {name}: {:?}", time_big_batch(&p));
    }
}

#[test]
fn prompt_logprobs_arrive_once_before_the_first_token_from_chunked_rows() {
    use kiln_protocol::step::PromptLogits;
    let mut s = sampler();
    let sampling = SamplingParams {
        n: 2,
        prompt_logprobs: Some(1),
        ..SamplingParams::greedy()
    };
    let mut g = group(vec![1, 2], sampling, StoppingCriteria::default(), 2);
    g.prompt_token_ids = vec![b'a' as u32, b'b' as u32, b'c' as u32];
    s.register(g);
    // The prompt's first chunk: row 0 predicts `b` (its second most likely token).
    let mut first = one_hot(b'z' as u32);
    first[b'b' as usize] = 5.0;
    let mut chunk = step(vec![], vec![]);
    chunk.prompt = vec![PromptLogits {
        seq_id: 1,
        first_position: 0,
        logits: first,
    }];
    let out = s.sample(&chunk, 0.0);
    assert!(out.events.is_empty(), "nothing before the first token");
    // The last chunk: row 1 predicts `c`, and the sample row draws for both sequences.
    let mut last = step(vec![(1, 2)], one_hot(b'q' as u32));
    last.prompt = vec![PromptLogits {
        seq_id: 1,
        first_position: 1,
        logits: one_hot(b'c' as u32),
    }];
    let out = s.sample(&last, 1.0);
    let events: Vec<&TokenEvent> = out.events.iter().map(|(_, e)| e).collect();
    let TokenEvent::Prompt(prompt) = events[0] else {
        panic!("the prompt's event comes first: {events:?}");
    };
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, TokenEvent::Prompt(_)))
            .count(),
        1,
        "once per request, not per sequence"
    );
    assert!(matches!(events[1], TokenEvent::Token(_)));
    let ids: Vec<u32> = prompt.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![b'a' as u32, b'b' as u32, b'c' as u32]);
    assert_eq!((prompt[0].logprob, prompt[0].rank), (None, 0));
    assert_eq!(prompt[1].rank, 2);
    assert_eq!(prompt[1].top_logprobs[0].id, b'z' as u32);
    assert!(prompt[1].logprob.unwrap() < prompt[1].top_logprobs[0].logprob);
    assert_eq!(prompt[2].rank, 1);
    assert!(prompt[2].logprob.unwrap() > -0.02);
    assert_eq!(prompt[2].piece, "c");
}
