//! Response pieces both endpoints share: ids, usage, finish reasons, logprobs.

use kiln_protocol::{Finished, GeneratedToken, StopReason};
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

/// Completions `logprobs` (`text_offset`, `token_logprobs`, `tokens`,
/// `top_logprobs`) for tokens whose text starts at character `offset`;
/// also returns the offset after them.
pub fn completion_logprobs<'a>(
    tokens: impl IntoIterator<Item = &'a GeneratedToken>,
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
        pieces.push(t.piece.clone());
        let mut alternatives = Map::new();
        alternatives.insert(t.piece.clone(), logprob_value(t.logprob));
        for a in &t.top_logprobs {
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
        let (v, end) = completion_logprobs(&tokens, 3);
        assert_eq!(end, 6);
        assert_eq!(v["text_offset"], json!([3, 5]));
        assert_eq!(v["tokens"], json!(["ab", "c"]));
        assert_eq!(v["top_logprobs"][1], json!({"c": -0.5, "x": -1.5}));
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
