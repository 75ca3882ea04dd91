//! Response pieces both endpoints share: ids, usage, finish reasons, logprobs.

use kiln_protocol::{Finished, GeneratedToken, PromptToken, StopReason, TopLogprob};
use serde_json::{Map, Value, json};

/// The fields every response and chunk of one request repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMeta {
    /// `cmpl-…` / `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name reported.
    pub model: String,
    /// `system_fingerprint` (chat): always a string.
    pub system_fingerprint: String,
}

/// `finish_reason` as OpenAI names it.
pub fn finish_reason(f: &Finished) -> &'static str {
    f.reason.as_str()
}

/// vLLM's `stop_reason`: the matched stop string, the stop token id, or null (EOS, length).
pub fn stop_reason(f: &Finished) -> Value {
    match &f.stop_reason {
        Some(StopReason::StopString(s)) => json!(s),
        Some(StopReason::StopToken(id)) => json!(id),
        Some(StopReason::Eos(_)) | None => Value::Null,
    }
}

/// Token counts for a response or the final usage chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageCounts {
    /// Prompt tokens (summed over prompts, once per prompt).
    pub prompt: u32,
    /// Generated tokens (summed over every choice).
    pub completion: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached: u32,
}

/// `{"prompt_tokens","completion_tokens","total_tokens","prompt_tokens_details"}`.
pub fn usage_json(u: UsageCounts) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached},
    })
}

fn logprob_value(lp: Option<f32>) -> Value {
    lp.map_or(Value::Null, |v| json!(v))
}

/// One chat `logprobs.content` entry with `top` alternatives.
pub fn chat_logprob_entry(t: &GeneratedToken, top: u32) -> Value {
    let top_logprobs: Vec<Value> = t
        .top_logprobs
        .iter()
        .take(top as usize)
        .map(|a| json!({"token": a.text, "logprob": a.logprob, "bytes": a.text.as_bytes()}))
        .collect();
    json!({
        "token": t.piece,
        "logprob": logprob_value(t.logprob),
        "bytes": t.piece.as_bytes(),
        "top_logprobs": top_logprobs,
    })
}

/// Chat `logprobs`: `{"content":[...]}`.
pub fn chat_logprobs<'a>(tokens: impl IntoIterator<Item = &'a GeneratedToken>, top: u32) -> Value {
    let content: Vec<Value> = tokens
        .into_iter()
        .map(|t| chat_logprob_entry(t, top))
        .collect();
    json!({"content": content})
}

/// One token of a completions `logprobs` object: a generated token, or a
/// prompt token (`echo`), whose first has no log-probability.
#[derive(Debug, Clone, Copy)]
pub struct LogprobToken<'a> {
    /// The token decoded on its own.
    pub piece: &'a str,
    /// Its log-probability (`None`: the first prompt token).
    pub logprob: Option<f32>,
    /// Top alternatives.
    pub top: &'a [TopLogprob],
}

impl<'a> From<&'a GeneratedToken> for LogprobToken<'a> {
    fn from(t: &'a GeneratedToken) -> Self {
        LogprobToken {
            piece: &t.piece,
            logprob: t.logprob,
            top: &t.top_logprobs,
        }
    }
}

impl<'a> From<&'a PromptToken> for LogprobToken<'a> {
    fn from(t: &'a PromptToken) -> Self {
        LogprobToken {
            piece: &t.piece,
            logprob: t.logprob,
            top: &t.top_logprobs,
        }
    }
}

/// Completions `logprobs` (`text_offset`, `token_logprobs`, `tokens`,
/// `top_logprobs`) for tokens whose text starts at character `offset`;
/// also returns the offset after them. A token without a log-probability
/// (the first echoed prompt token) has `null` in both lists, as in OpenAI's.
pub fn completion_logprobs<'a>(
    tokens: impl IntoIterator<Item = LogprobToken<'a>>,
    mut offset: usize,
) -> (Value, usize) {
    let mut text_offset = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut pieces = Vec::new();
    let mut top = Vec::new();
    for t in tokens {
        text_offset.push(offset);
        offset += t.piece.chars().count();
        token_logprobs.push(logprob_value(t.logprob));
        pieces.push(t.piece.to_string());
        if t.logprob.is_none() {
            top.push(Value::Null);
            continue;
        }
        let mut alternatives = Map::new();
        alternatives.insert(t.piece.to_string(), logprob_value(t.logprob));
        for a in t.top {
            alternatives
                .entry(a.text.clone())
                .or_insert_with(|| json!(a.logprob));
        }
        top.push(Value::Object(alternatives));
    }
    let v = json!({
        "text_offset": text_offset,
        "token_logprobs": token_logprobs,
        "tokens": pieces,
        "top_logprobs": top,
    });
    (v, offset)
}

/// vLLM's `prompt_logprobs`: per prompt token, `null` for the first, else
/// `{"<id>": {"logprob", "rank", "decoded_token"}}` for the token itself
/// and its top alternatives (ranks 1, 2, … by likelihood).
pub fn vllm_prompt_logprobs(tokens: &[PromptToken]) -> Value {
    let entries: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let Some(logprob) = t.logprob else {
                return Value::Null;
            };
            let mut m = Map::new();
            for (rank, a) in t.top_logprobs.iter().enumerate() {
                m.insert(
                    a.id.to_string(),
                    json!({"logprob": a.logprob, "rank": rank + 1, "decoded_token": a.text}),
                );
            }
            m.insert(
                t.id.to_string(),
                json!({"logprob": logprob, "rank": t.rank, "decoded_token": t.piece}),
            );
            Value::Object(m)
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{FinishReason, TopLogprob, Usage};

    fn token(piece: &str, lp: f32) -> GeneratedToken {
        GeneratedToken {
            index: 0,
            id: 9,
            text: piece.into(),
            piece: piece.into(),
            special: false,
            logprob: Some(lp),
            top_logprobs: vec![
                TopLogprob {
                    id: 9,
                    logprob: lp,
                    text: piece.into(),
                },
                TopLogprob {
                    id: 10,
                    logprob: lp - 1.0,
                    text: "x".into(),
                },
            ],
        }
    }

    #[test]
    fn stop_reasons() {
        let mut f = Finished {
            index: 0,
            reason: FinishReason::Stop,
            stop_reason: Some(StopReason::StopString("###".into())),
            usage: Usage::default(),
        };
        assert_eq!(stop_reason(&f), json!("###"));
        f.stop_reason = Some(StopReason::StopToken(7));
        assert_eq!(stop_reason(&f), json!(7));
        f.stop_reason = Some(StopReason::Eos(2));
        assert_eq!(stop_reason(&f), Value::Null);
        assert_eq!(finish_reason(&f), "stop");
    }

    #[test]
    fn chat_logprob_shape() {
        let e = chat_logprob_entry(&token("hé", -0.5), 1);
        assert_eq!(
            e,
            json!({"token": "hé", "logprob": -0.5, "bytes": [104, 195, 169],
                   "top_logprobs": [{"token": "hé", "logprob": -0.5, "bytes": [104, 195, 169]}]})
        );
    }

    #[test]
    fn completion_logprobs_track_offsets() {
        let tokens = [token("ab", -0.25), token("c", -0.5)];
        let (v, end) = completion_logprobs(tokens.iter().map(LogprobToken::from), 3);
        assert_eq!(end, 6);
        assert_eq!(v["text_offset"], json!([3, 5]));
        assert_eq!(v["tokens"], json!(["ab", "c"]));
        assert_eq!(v["top_logprobs"][1], json!({"c": -0.5, "x": -1.5}));
    }

    fn prompt_token(id: u32, piece: &str, logprob: Option<f32>) -> PromptToken {
        PromptToken {
            id,
            piece: piece.into(),
            logprob,
            rank: if logprob.is_some() { 2 } else { 0 },
            top_logprobs: match logprob {
                Some(_) => vec![TopLogprob {
                    id: 7,
                    logprob: -0.125,
                    text: "x".into(),
                }],
                None => vec![],
            },
        }
    }

    #[test]
    fn echoed_prompt_tokens_lead_with_nulls() {
        let prompt = [
            prompt_token(1, "a", None),
            prompt_token(4, "bc", Some(-2.0)),
        ];
        let generated = [token("d", -0.5)];
        let entries = prompt
            .iter()
            .map(LogprobToken::from)
            .chain(generated.iter().map(LogprobToken::from));
        let (v, end) = completion_logprobs(entries, 0);
        assert_eq!(end, 4);
        assert_eq!(v["tokens"], json!(["a", "bc", "d"]));
        assert_eq!(v["token_logprobs"], json!([null, -2.0, -0.5]));
        assert_eq!(v["top_logprobs"][0], Value::Null);
        assert_eq!(v["top_logprobs"][1], json!({"bc": -2.0, "x": -0.125}));
        assert_eq!(v["text_offset"], json!([0, 1, 3]));
    }

    #[test]
    fn vllm_prompt_logprobs_key_by_token_id_with_ranks() {
        let v = vllm_prompt_logprobs(&[
            prompt_token(1, "a", None),
            prompt_token(4, "bc", Some(-2.0)),
        ]);
        assert_eq!(v[0], Value::Null);
        assert_eq!(
            v[1],
            json!({"4": {"logprob": -2.0, "rank": 2, "decoded_token": "bc"},
                   "7": {"logprob": -0.125, "rank": 1, "decoded_token": "x"}})
        );
    }

    #[test]
    fn usage_totals() {
        let u = usage_json(UsageCounts {
            prompt: 3,
            completion: 4,
            cached: 1,
        });
        assert_eq!(u["total_tokens"], 7);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 1);
    }
}
