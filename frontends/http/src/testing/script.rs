//! One scripted sequence: recites the story token by token and obeys the
//! request's stopping criteria the way the real engine documents them.

use kiln_engine_api::AdmittedRequest;
use kiln_protocol::{
    FinishReason, Finished, GeneratedToken, PromptToken, StopReason, StoppingCriteria, TokenId,
    TopLogprob, Usage,
};

use super::vocab;

/// Made-up but consistent log-probability of a token.
pub fn scripted_logprob(id: TokenId) -> f32 {
    -0.125 - (id % 7) as f32 * 0.25
}

/// SplitMix64: the start offset of a seeded sequence.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What one step of a sequence produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub token: GeneratedToken,
    /// Set when the sequence ended with it.
    pub finished: Option<Finished>,
}

/// The state of one scripted sequence.
#[derive(Debug, Clone)]
pub struct ScriptedSequence {
    index: u32,
    story: Vec<TokenId>,
    pos: usize,
    generated: u32,
    max_tokens: u32,
    prompt_tokens: u32,
    stopping: StoppingCriteria,
    logprobs: Option<u32>,
    /// Visible text so far (stop strings cut it).
    text: String,
    /// Bytes of `text` already released.
    released: usize,
}

impl ScriptedSequence {
    /// Sequence `index` of `request`: greedy requests start at the story's
    /// beginning; sampled ones at an offset drawn from `(seed, index)`. A
    /// `reply` replaces the story and is always recited from its start.
    pub fn new(
        request: &AdmittedRequest,
        index: u32,
        seed: u64,
        reply: Option<Vec<TokenId>>,
    ) -> Self {
        let scripted = reply.is_some();
        let story = reply.unwrap_or_else(vocab::story_tokens);
        let sampling = &request.request.sampling;
        let pos = if sampling.is_greedy() || scripted || story.is_empty() {
            0
        } else {
            (mix(seed ^ mix(u64::from(index))) % story.len() as u64) as usize
        };
        ScriptedSequence {
            index,
            story,
            pos,
            generated: 0,
            max_tokens: request.max_tokens,
            prompt_tokens: request.prompt_token_ids.len() as u32,
            stopping: request.request.stopping.clone(),
            logprobs: sampling.logprobs,
            text: String::new(),
            released: 0,
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> u32 {
        self.generated
    }

    fn eos_allowed(&self) -> bool {
        self.generated >= self.stopping.min_tokens
    }

    fn next_id(&mut self) -> TokenId {
        if self.story.is_empty() {
            return vocab::IM_END;
        }
        if self.pos >= self.story.len() {
            self.pos = 0;
            if !self.stopping.ignore_eos && self.eos_allowed() {
                return vocab::IM_END;
            }
        }
        let id = self.story[self.pos];
        self.pos += 1;
        id
    }

    /// Generates one token.
    pub fn step(&mut self) -> StepOutput {
        let id = self.next_id();
        self.generated += 1;
        let piece = vocab::token_text(id).unwrap_or_default();
        let special = vocab::is_special(id);
        let stop_token = self.eos_allowed() && self.stopping.stop_token_ids.contains(&id);
        let hidden = stop_token || (special && self.stopping.skip_special_tokens);
        if !hidden {
            self.text.push_str(&piece);
        }
        let mut finish = if id == vocab::IM_END {
            Some((FinishReason::Stop, Some(StopReason::Eos(id))))
        } else if stop_token {
            Some((FinishReason::Stop, Some(StopReason::StopToken(id))))
        } else {
            None
        };
        if finish.is_none()
            && let Some(stop) = self.cut_at_stop_string()
        {
            finish = Some((FinishReason::Stop, Some(StopReason::StopString(stop))));
        }
        if finish.is_none() && self.generated >= self.max_tokens {
            finish = Some((FinishReason::Length, None));
        }
        let release_to = if finish.is_some() {
            self.text.len()
        } else {
            self.text.len() - self.held_back()
        };
        let text = self.text[self.released..release_to].to_string();
        self.released = release_to;
        StepOutput {
            token: GeneratedToken {
                index: self.index,
                id,
                text,
                piece,
                special,
                logprob: self.logprobs.map(|_| scripted_logprob(id)),
                top_logprobs: self.top_logprobs(id),
            },
            finished: finish.map(|(reason, stop_reason)| Finished {
                index: self.index,
                reason,
                stop_reason,
                usage: Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: self.generated,
                    cached_prompt_tokens: 0,
                },
            }),
        }
    }

    /// Truncates the text at the first stop string (keeping it when asked) and names it.
    fn cut_at_stop_string(&mut self) -> Option<String> {
        let (at, stop) = self
            .stopping
            .stop
            .iter()
            .filter_map(|s| self.text.find(s.as_str()).map(|at| (at, s.clone())))
            .min_by_key(|(at, _)| *at)?;
        let end = if self.stopping.include_stop_str_in_output {
            at + stop.len()
        } else {
            at
        };
        self.text.truncate(end);
        self.released = self.released.min(end);
        Some(stop)
    }

    /// Bytes at the end of the text that could still become a stop string.
    fn held_back(&self) -> usize {
        let unreleased = self.text.len() - self.released;
        self.stopping
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
                    .max()
            })
            .max()
            .unwrap_or(0)
            .min(unreleased)
    }

    fn top_logprobs(&self, id: TokenId) -> Vec<TopLogprob> {
        alternatives(id, self.logprobs.unwrap_or(0))
    }
}

/// `k` alternatives led by `id` itself (rank 1), then its neighbours.
fn alternatives(id: TokenId, k: u32) -> Vec<TopLogprob> {
    (0..k)
        .map(|j| {
            let alt = if j == 0 { id } else { vocab::neighbour(id, j) };
            TopLogprob {
                id: alt,
                logprob: scripted_logprob(id) - 0.5 * j as f32,
                text: vocab::token_text(alt).unwrap_or_default(),
            }
        })
        .collect()
}

/// The scripted `prompt_logprobs` of a prompt: every token after the
/// first the most likely at its position, with `top` alternatives.
pub fn scripted_prompt_logprobs(prompt: &[TokenId], top: u32) -> Vec<PromptToken> {
    prompt
        .iter()
        .enumerate()
        .map(|(i, &id)| PromptToken {
            id,
            piece: vocab::token_text(id).unwrap_or_default(),
            logprob: (i > 0).then(|| scripted_logprob(id)),
            rank: u32::from(i > 0),
            top_logprobs: if i > 0 {
                alternatives(id, top)
            } else {
                Vec::new()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{GenerateRequest, SamplingParams};

    fn request(
        max_tokens: u32,
        stopping: StoppingCriteria,
        sampling: SamplingParams,
    ) -> AdmittedRequest {
        AdmittedRequest {
            id: 1,
            prompt_token_ids: vec![0, 300],
            max_tokens,
            request: GenerateRequest {
                sampling,
                stopping,
                ..Default::default()
            },
        }
    }

    fn run(seq: &mut ScriptedSequence) -> (String, Finished) {
        let mut text = String::new();
        loop {
            let out = seq.step();
            text.push_str(&out.token.text);
            if let Some(f) = out.finished {
                return (text, f);
            }
        }
    }

    #[test]
    fn greedy_recites_the_story_then_eos() {
        let mut s = ScriptedSequence::new(
            &request(1000, Default::default(), SamplingParams::greedy()),
            0,
            0,
            None,
        );
        let (text, fin) = run(&mut s);
        assert_eq!(text, vocab::STORY);
        assert_eq!(fin.reason, FinishReason::Stop);
        assert_eq!(fin.stop_reason, Some(StopReason::Eos(vocab::IM_END)));
        assert_eq!(
            fin.usage.completion_tokens as usize,
            vocab::story_tokens().len() + 1
        );
    }

    #[test]
    fn max_tokens_gives_length() {
        let mut s = ScriptedSequence::new(
            &request(3, Default::default(), SamplingParams::greedy()),
            0,
            0,
            None,
        );
        let (text, fin) = run(&mut s);
        assert_eq!(text, "Once upon a");
        assert_eq!(fin.reason, FinishReason::Length);
    }

    #[test]
    fn stop_strings_cut_and_are_never_half_emitted() {
        let stopping = StoppingCriteria {
            stop: vec![" bread".into()],
            ..Default::default()
        };
        let mut s = ScriptedSequence::new(
            &request(100, stopping.clone(), SamplingParams::greedy()),
            0,
            0,
            None,
        );
        let (text, fin) = run(&mut s);
        assert_eq!(text, "Once upon a time, a little kiln baked");
        assert_eq!(
            fin.stop_reason,
            Some(StopReason::StopString(" bread".into()))
        );
        let include = StoppingCriteria {
            include_stop_str_in_output: true,
            ..stopping
        };
        let mut s =
            ScriptedSequence::new(&request(100, include, SamplingParams::greedy()), 0, 0, None);
        assert_eq!(run(&mut s).0, "Once upon a time, a little kiln baked bread");
    }

    #[test]
    fn seeds_pick_the_start() {
        let sampling = SamplingParams {
            seed: Some(7),
            ..Default::default()
        };
        let req = request(5, Default::default(), sampling);
        let a = run(&mut ScriptedSequence::new(&req, 0, 7, None)).0;
        let b = run(&mut ScriptedSequence::new(&req, 0, 7, None)).0;
        let c = run(&mut ScriptedSequence::new(&req, 1, 7, None)).0;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ignore_eos_wraps_and_min_tokens_delays_eos() {
        let stopping = StoppingCriteria {
            ignore_eos: true,
            ..Default::default()
        };
        let n = vocab::story_tokens().len() as u32 + 3;
        let mut s =
            ScriptedSequence::new(&request(n, stopping, SamplingParams::greedy()), 0, 0, None);
        let (text, fin) = run(&mut s);
        assert_eq!(fin.reason, FinishReason::Length);
        assert!(text.ends_with("The end.Once upon a"), "{text}");
    }

    #[test]
    fn logprobs_are_consistent() {
        let sampling = SamplingParams {
            logprobs: Some(3),
            ..SamplingParams::greedy()
        };
        let mut s = ScriptedSequence::new(&request(2, Default::default(), sampling), 0, 0, None);
        let t = s.step().token;
        assert_eq!(t.top_logprobs.len(), 3);
        assert_eq!(t.top_logprobs[0].id, t.id);
        assert_eq!(Some(t.top_logprobs[0].logprob), t.logprob);
        assert!(
            t.top_logprobs
                .windows(2)
                .all(|w| w[0].logprob > w[1].logprob)
        );
    }
}
