//! Structured outputs in the sampler: a toy grammar ("the output is one of
//! these words") over letters, driven through host and device draws.

use std::sync::Arc;

use kiln_protocol::step::{DeviceSample, LogitsRow, StepLogits, TokenMask};
use kiln_protocol::{
    EngineError, FinishReason, SamplingParams, StoppingCriteria, StructuredOutput, TokenEvent,
};
use kiln_sampler::{
    ConstraintFactory, DeviceDraws, SampleResult, SamplerCore, SequenceGroup, TokenConstraint,
    TokenDecoder,
};
use proptest::prelude::*;

/// Token `i < 26` is the letter `a + i`; 26 is EOS.
struct Letters;
const EOS: u32 = 26;
const VOCAB: usize = 27;

impl TokenDecoder for Letters {
    fn decode(&self, ids: &[u32], _skip: bool) -> String {
        ids.iter()
            .filter(|&&i| i < 26)
            .map(|&i| char::from(b'a' + i as u8))
            .collect()
    }
    fn is_special(&self, id: u32) -> bool {
        id == EOS
    }
    fn vocab_size(&self) -> usize {
        VOCAB
    }
}

/// The output must be one of the words of a `Choice`.
struct Words {
    words: Vec<String>,
    text: String,
}

impl TokenConstraint for Words {
    fn allowed_tokens(&mut self) -> Result<TokenMask, String> {
        let mut mask = TokenMask::empty(VOCAB);
        for w in &self.words {
            if let Some(rest) = w.strip_prefix(self.text.as_str()) {
                match rest.bytes().next() {
                    Some(b) => mask.insert(u32::from(b - b'a')),
                    None => mask.insert(EOS),
                }
            }
        }
        Ok(mask)
    }
    fn consume(&mut self, token: u32) -> Result<(), String> {
        let c = char::from(b'a' + token as u8);
        self.text.push(c);
        if self.words.iter().any(|w| w.starts_with(&self.text)) {
            Ok(())
        } else {
            Err(format!("{:?} leads nowhere", self.text))
        }
    }
    fn is_complete(&self) -> bool {
        false
    }
    fn fork(&self) -> Box<dyn TokenConstraint> {
        Box::new(Words {
            words: self.words.clone(),
            text: self.text.clone(),
        })
    }
}

struct WordsFactory;

impl ConstraintFactory for WordsFactory {
    fn start(&self, spec: &StructuredOutput) -> Result<Box<dyn TokenConstraint>, String> {
        match spec {
            StructuredOutput::Choice(words) => Ok(Box::new(Words {
                words: words.clone(),
                text: String::new(),
            })),
            other => Err(format!("{} is not supported here", other.kind())),
        }
    }
    fn eos_token(&self) -> u32 {
        EOS
    }
}

fn sampler() -> SamplerCore {
    let mut s = SamplerCore::new(Arc::new(Letters), vec![EOS]);
    s.set_constraint_factory(Arc::new(WordsFactory));
    s
}

fn words() -> Vec<String> {
    ["cab", "cabbage", "dog", "dot"].map(String::from).to_vec()
}

fn register(s: &mut SamplerCore, n: u32, temperature: f32, seed: u64, max_tokens: u32) -> Vec<u64> {
    let seq_ids: Vec<u64> = (1..=u64::from(n)).collect();
    s.register(SequenceGroup {
        request_id: 1,
        seq_ids: seq_ids.clone(),
        prompt_token_ids: vec![0],
        sampling: SamplingParams {
            n,
            temperature,
            seed: Some(seed),
            structured: Some(StructuredOutput::Choice(words())),
            ..Default::default()
        },
        stopping: StoppingCriteria::default(),
        max_tokens,
        arrival_seconds: 0.0,
    });
    seq_ids
}

/// Runs every live sequence to its end on rows of `logits` (host draws),
/// the first row drawing all `n` forks; returns each sequence's text and
/// finish reason.
fn run_host(s: &mut SamplerCore, seq_ids: &[u64], logits: &[f32]) -> Vec<(String, FinishReason)> {
    let mut text = vec![String::new(); seq_ids.len()];
    let mut reasons = vec![None; seq_ids.len()];
    let mut first = true;
    for _ in 0..32 {
        let live: Vec<u64> = if first {
            vec![seq_ids[0]]
        } else {
            seq_ids
                .iter()
                .copied()
                .filter(|&q| reasons[q as usize - 1].is_none())
                .collect()
        };
        if live.is_empty() {
            break;
        }
        let rows = live
            .iter()
            .map(|&seq_id| LogitsRow {
                seq_id,
                num_samples: if first { seq_ids.len() as u32 } else { 1 },
            })
            .collect::<Vec<_>>();
        first = false;
        let step = StepLogits {
            step_id: 0,
            vocab_size: VOCAB,
            logits: rows.iter().flat_map(|_| logits.iter().copied()).collect(),
            rows,
            sampled: Vec::new(),
            embeddings: Vec::new(),
            prompt: Vec::new(),
        };
        collect(s.sample(&step, 0.0), &mut text, &mut reasons);
    }
    text.into_iter()
        .zip(reasons)
        .map(|(t, r)| (t, r.expect("every sequence ends")))
        .collect()
}

fn collect(r: SampleResult, text: &mut [String], reasons: &mut [Option<FinishReason>]) {
    for (_, event) in r.events {
        match event {
            TokenEvent::Token(t) => text[t.index as usize].push_str(&t.text),
            TokenEvent::Finished(f) => reasons[f.index as usize] = Some(f.reason),
            TokenEvent::Failed { error } => panic!("{error}"),
            TokenEvent::Prompt(_) => panic!("no prompt log-probabilities were asked"),
        }
    }
}

proptest! {
    #[test]
    fn every_sequence_spells_one_of_the_words(
        logits in proptest::collection::vec(-5.0f32..5.0, VOCAB),
        n in 1u32..4,
        temperature in prop_oneof![Just(0.0f32), 0.5f32..2.0],
        seed in any::<u64>(),
    ) {
        let mut s = sampler();
        let ids = register(&mut s, n, temperature, seed, 64);
        for (text, reason) in run_host(&mut s, &ids, &logits) {
            prop_assert!(words().contains(&text), "{text:?}");
            prop_assert_eq!(reason, FinishReason::Stop);
        }
    }
}

#[test]
fn max_tokens_cuts_a_constrained_sequence_with_length() {
    let mut s = sampler();
    let ids = register(&mut s, 1, 0.0, 7, 3);
    // Prefer "cabbage": 'b' and 'g' and 'a' and 'e' over EOS.
    let mut logits = vec![0.0; VOCAB];
    for (t, v) in [(1, 3.0), (6, 3.0), (0, 3.0), (4, 3.0)] {
        logits[t] = v;
    }
    let out = run_host(&mut s, &ids, &logits);
    assert_eq!(out, vec![("cab".to_string(), FinishReason::Length)]);
}

#[test]
fn masks_reach_the_device_form_and_device_draws_advance_the_grammar() {
    let mut s = sampler();
    let ids = register(&mut s, 1, 0.0, 7, 16);
    let masks = s.compute_masks(&ids);
    assert_eq!(masks.len(), 1);
    let allowed: Vec<u32> = masks[0].1.iter().collect();
    assert_eq!(allowed, vec![2, 3]); // 'c' or 'd'
    assert_eq!(s.row_sampling(1).unwrap().allowed, Some(masks[0].1.clone()));
    let draw = |token| StepLogits {
        step_id: 0,
        vocab_size: VOCAB,
        sampled: vec![DeviceSample {
            seq_id: 1,
            token_id: token,
            ..Default::default()
        }],
        ..Default::default()
    };
    s.sample(&draw(3), 0.0);
    // The next draw's mask is not known until computed again.
    assert_eq!(s.row_sampling(1).unwrap().allowed, None);
    let next: Vec<u32> = s.compute_masks(&ids)[0].1.iter().collect();
    assert_eq!(next, vec![14]); // 'o'
    // A device draw outside the grammar fails the request.
    let r = s.sample(&draw(0), 0.0);
    assert!(matches!(
        &r.events[..],
        [(1, TokenEvent::Failed { error: EngineError::Internal(m) })] if m.contains("leads nowhere")
    ));
    assert_eq!(r.output.tokens[0].finished, Some(FinishReason::Error));
    assert!(!s.has_request(1));
}

#[test]
fn an_unsupported_constraint_fails_at_the_first_draw() {
    let mut s = sampler();
    s.register(SequenceGroup {
        request_id: 1,
        seq_ids: vec![1],
        prompt_token_ids: vec![0],
        sampling: SamplingParams {
            structured: Some(StructuredOutput::Regex("x".into())),
            ..SamplingParams::greedy()
        },
        stopping: StoppingCriteria::default(),
        max_tokens: 4,
        arrival_seconds: 0.0,
    });
    let step = StepLogits {
        step_id: 0,
        rows: vec![LogitsRow {
            seq_id: 1,
            num_samples: 1,
        }],
        vocab_size: VOCAB,
        logits: vec![0.0; VOCAB],
        sampled: Vec::new(),
        embeddings: Vec::new(),
        prompt: Vec::new(),
    };
    let r = s.sample(&step, 0.0);
    assert!(matches!(&r.events[..], [(1, TokenEvent::Failed { .. })]));
    assert_eq!(r.output.tokens.len(), 1);
}

/// Registers request `id` with `n` sequences starting at `first_seq`,
/// constrained or not.
fn register_request(s: &mut SamplerCore, id: u64, first_seq: u64, n: u32, constrained: bool) {
    s.register(SequenceGroup {
        request_id: id,
        seq_ids: (first_seq..first_seq + u64::from(n)).collect(),
        prompt_token_ids: vec![0],
        sampling: SamplingParams {
            n,
            temperature: 0.7,
            structured: constrained.then(|| StructuredOutput::Choice(words())),
            ..Default::default()
        },
        stopping: StoppingCriteria::default(),
        max_tokens: 8,
        arrival_seconds: 0.0,
    });
}

proptest! {
    /// Every row of a step is drawn in exactly one place: single-sample
    /// rows on the device when it can (constrained ones only when it
    /// applies masks, after their masks), the rest on the host; rows
    /// without a sample are drawn nowhere, and only sampled constrained
    /// rows get masks.
    #[test]
    fn step_draws_place_every_row_once(
        requests in proptest::collection::vec((1u32..=3, any::<bool>()), 1..5),
        samples in proptest::collection::vec(0u32..=3, 12),
        device in proptest::option::of(any::<bool>()),
    ) {
        let mut s = sampler();
        if let Some(masks) = device {
            s.set_device_draws(DeviceDraws { masks });
        }
        let mut constrained_seqs = Vec::new();
        let mut next_seq = 1;
        for (id, &(n, constrained)) in requests.iter().enumerate() {
            register_request(&mut s, id as u64 + 1, next_seq, n, constrained);
            if constrained {
                constrained_seqs.extend(next_seq..next_seq + u64::from(n));
            }
            next_seq += u64::from(n);
        }
        // Some rows name sequences the sampler does not know.
        let rows: Vec<(u64, u32)> = samples
            .iter()
            .enumerate()
            .map(|(i, &k)| (i as u64 + 1, k))
            .collect();
        let draws = s.step_draws(&rows);
        for &(seq, k) in &rows {
            let known = seq < next_seq;
            let constrained = constrained_seqs.contains(&seq);
            let on_device = draws.device.iter().any(|(q, _)| *q == seq);
            let deferred = draws.deferred.iter().any(|(q, _)| *q == seq);
            prop_assert_eq!(draws.constrained.contains(&seq), constrained && k > 0);
            let device_draws = known && k == 1 && device.is_some();
            prop_assert_eq!(on_device, device_draws && !constrained);
            prop_assert_eq!(deferred, device_draws && constrained && device == Some(true));
        }
        for (seq, row) in draws.device.iter().chain(&draws.deferred) {
            prop_assert_eq!(Some(row.clone()), s.row_sampling(*seq));
        }
    }
}
