//! A request's `prompt_logprobs`: each prompt token's log-probability under
//! the raw distribution of the row before it, its rank and the row's top
//! alternatives, gathered as the prompt's rows arrive (a chunked prompt
//! brings them over several steps; a recomputed one brings some twice, and
//! the first copy is kept).

use kiln_protocol::{PromptToken, TokenId, TopLogprob};

use crate::detok::TokenDecoder;
use crate::kernels::{log_sum_exp, top_n_into};

/// One scored prompt position.
#[derive(Debug, Clone, PartialEq)]
struct Scored {
    logprob: f32,
    rank: u32,
    top: Vec<(f32, TokenId)>,
}

/// The prompt positions scored so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromptLogprobs {
    prompt: Vec<TokenId>,
    top_n: usize,
    /// `[prompt_len]`; position 0 stays `None` (nothing predicts it).
    scored: Vec<Option<Scored>>,
    /// The event went out.
    pub sent: bool,
}

impl PromptLogprobs {
    pub fn new(prompt: &[TokenId], top_n: u32) -> Self {
        PromptLogprobs {
            prompt: prompt.to_vec(),
            top_n: top_n as usize,
            scored: vec![None; prompt.len()],
            sent: false,
        }
    }

    /// Scores the positions predicted by `logits` (`[rows × vocab]`, row
    /// `j` at position `first_position + j`); rows past the prompt are
    /// ignored.
    pub fn record(&mut self, first_position: u32, logits: &[f32], vocab: usize) {
        if vocab == 0 {
            return;
        }
        let mut top = Vec::new();
        for (j, row) in logits.chunks_exact(vocab).enumerate() {
            let target = first_position as usize + j + 1;
            let Some(&token) = self.prompt.get(target) else {
                break;
            };
            if self.scored[target].is_some() {
                continue;
            }
            let normalizer = log_sum_exp(row);
            let logit = row
                .get(token as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            top_n_into(row, self.top_n, &mut top);
            self.scored[target] = Some(Scored {
                logprob: logit - normalizer,
                rank: 1 + row.iter().filter(|&&x| x > logit).count() as u32,
                top: top.iter().map(|&(l, id)| (l - normalizer, id)).collect(),
            });
        }
    }

    /// Every position after the first is scored.
    #[cfg(test)]
    fn is_complete(&self) -> bool {
        self.scored.iter().skip(1).all(Option::is_some)
    }

    /// The event's payload: every prompt token, the first without a
    /// log-probability (as are positions never scored).
    pub fn tokens(&self, decoder: &dyn TokenDecoder) -> Vec<PromptToken> {
        self.prompt
            .iter()
            .zip(&self.scored)
            .map(|(&id, scored)| PromptToken {
                id,
                piece: decoder.decode(&[id], false),
                logprob: scored.as_ref().map(|s| s.logprob),
                rank: scored.as_ref().map_or(0, |s| s.rank),
                top_logprobs: scored.as_ref().map_or_else(Vec::new, |s| {
                    s.top
                        .iter()
                        .map(|&(logprob, id)| TopLogprob {
                            id,
                            logprob,
                            text: decoder.decode(&[id], false),
                        })
                        .collect()
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Digits;
    impl TokenDecoder for Digits {
        fn decode(&self, ids: &[u32], _skip_special: bool) -> String {
            ids.iter().map(|i| i.to_string()).collect()
        }
        fn is_special(&self, _: u32) -> bool {
            false
        }
        fn vocab_size(&self) -> usize {
            4
        }
    }

    fn log_softmax(row: &[f32]) -> Vec<f32> {
        let z = row.iter().map(|x| x.exp()).sum::<f32>().ln();
        row.iter().map(|x| x - z).collect()
    }

    #[test]
    fn each_position_is_scored_by_the_row_before_it() {
        let mut p = PromptLogprobs::new(&[3, 1, 2], 2);
        let rows = [[0.0, 2.0, 1.0, 0.5], [1.0, 0.0, 3.0, 0.0]];
        assert!(!p.is_complete());
        p.record(0, &rows[0], 4);
        assert!(!p.is_complete());
        p.record(1, &rows[1], 4);
        assert!(p.is_complete());
        let t = p.tokens(&Digits);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].id, t[0].logprob, t[0].rank), (3, None, 0));
        assert!(t[0].top_logprobs.is_empty());
        let want = log_softmax(&rows[0]);
        assert!((t[1].logprob.unwrap() - want[1]).abs() < 1e-5);
        assert_eq!(t[1].rank, 1);
        let top: Vec<u32> = t[1].top_logprobs.iter().map(|x| x.id).collect();
        assert_eq!(top, vec![1, 2]);
        assert_eq!(t[1].top_logprobs[1].text, "2");
        let want = log_softmax(&rows[1]);
        assert!((t[2].logprob.unwrap() - want[2]).abs() < 1e-5);
        assert_eq!(t[2].rank, 1);
    }

    #[test]
    fn ranks_count_the_more_likely_tokens_and_repeats_keep_the_first() {
        let mut p = PromptLogprobs::new(&[0, 3], 0);
        p.record(0, &[1.0, 4.0, 3.0, 2.0], 4);
        p.record(0, &[9.0, 0.0, 0.0, 0.0], 4);
        let t = p.tokens(&Digits);
        assert_eq!(t[1].rank, 3);
        assert!(t[1].top_logprobs.is_empty());
        assert!((t[1].logprob.unwrap() - log_softmax(&[1.0, 4.0, 3.0, 2.0])[3]).abs() < 1e-5);
    }

    #[test]
    fn rows_past_the_prompt_and_one_token_prompts_are_harmless() {
        let mut p = PromptLogprobs::new(&[2], 1);
        assert!(p.is_complete());
        p.record(0, &[0.0; 8], 4);
        assert_eq!(p.tokens(&Digits)[0].logprob, None);
    }
}
