//! TGI response bodies and the SSE event encoder. Pure.

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::{ApiError, Collected, Dialect, SequenceOutput};
use kiln_protocol::{
    FinishReason, Finished, GeneratedToken, StopReason, TokenEvent, TokenId, TopLogprob,
};
use serde_json::{Value, json};

/// TGI's `finish_reason` (`length`, `eos_token`, `stop_sequence`); `None`
/// for sequences that were aborted or failed.
pub fn finish_reason(f: &Finished) -> Option<&'static str> {
    match (f.reason, &f.stop_reason) {
        (FinishReason::Length, _) => Some("length"),
        (FinishReason::Stop, Some(StopReason::StopString(_))) => Some("stop_sequence"),
        (FinishReason::Stop, _) => Some("eos_token"),
        (FinishReason::Abort | FinishReason::Error, _) => None,
    }
}

/// The error for a sequence that ended without a TGI finish reason.
pub fn incomplete(f: &Finished) -> ApiError {
    ApiError::new(
        Dialect::Tgi,
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "Incomplete generation: the request ended with `{}`",
            f.reason.as_str()
        ),
    )
    .with_type("incomplete_generation")
}

/// A token of `details.tokens`: its own text, log-probability and specialness.
pub fn token_json(t: &GeneratedToken) -> Value {
    json!({"id": t.id, "text": t.piece, "logprob": t.logprob, "special": t.special})
}

/// `top_tokens` entries of one token.
pub fn top_tokens_json(
    alternatives: &[TopLogprob],
    n: u32,
    is_special: &dyn Fn(TokenId) -> bool,
) -> Value {
    alternatives
        .iter()
        .take(n as usize)
        .map(|a| json!({"id": a.id, "text": a.text, "logprob": a.logprob, "special": is_special(a.id)}))
        .collect()
}

/// What a response needs besides the engine's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseOptions {
    /// Return `details`.
    pub details: bool,
    /// Fill `details.prefill`.
    pub decoder_input_details: bool,
    /// Prepend the prompt to `generated_text`.
    pub return_full_text: bool,
    /// `top_tokens` per token (0: none).
    pub top_n_tokens: u32,
    /// `details.seed`.
    pub seed: Option<u64>,
    /// The prompt text.
    pub inputs: String,
}

/// The prompt tokens with their texts, for `details.prefill`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefill(pub Vec<(TokenId, String)>);

/// The `POST /generate` body (`POST /` wraps it in an array). With
/// `best_of`, the sequences come ranked most likely first: the first is the
/// answer, the others go to `details.best_of_sequences`.
pub fn generate_response(
    c: &Collected,
    o: &ResponseOptions,
    prefill: &Prefill,
    is_special: &dyn Fn(TokenId) -> bool,
) -> Result<Value, ApiError> {
    let Some((best, others)) = c.sequences.split_first() else {
        return Err(ApiError::new(
            Dialect::Tgi,
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the engine returned no sequence",
        )
        .with_type("incomplete_generation"));
    };
    let prefill: Vec<Value> = if o.decoder_input_details {
        let logprobs = c.prompt_logprobs.as_deref().unwrap_or_default();
        prefill
            .0
            .iter()
            .enumerate()
            .map(|(i, (id, t))| {
                let logprob = logprobs.get(i).and_then(|p| p.logprob);
                json!({"id": id, "text": t, "logprob": logprob})
            })
            .collect()
    } else {
        Vec::new()
    };
    let (text, details) = sequence_json(best, o, &prefill, is_special)?;
    let mut v = json!({"generated_text": text});
    if o.details || o.decoder_input_details {
        let mut details = details;
        if !others.is_empty() {
            let mut best_of = Vec::with_capacity(others.len());
            for s in others {
                let (text, mut d) = sequence_json(s, o, &prefill, is_special)?;
                d["generated_text"] = json!(text);
                best_of.push(d);
            }
            details["best_of_sequences"] = Value::Array(best_of);
        }
        v["details"] = details;
    }
    Ok(v)
}

/// One sequence's `generated_text` and `details`.
fn sequence_json(
    s: &SequenceOutput,
    o: &ResponseOptions,
    prefill: &[Value],
    is_special: &dyn Fn(TokenId) -> bool,
) -> Result<(String, Value), ApiError> {
    let reason = finish_reason(&s.finished).ok_or_else(|| incomplete(&s.finished))?;
    let text = if o.return_full_text {
        format!("{}{}", o.inputs, s.text)
    } else {
        s.text.clone()
    };
    let tokens: Vec<Value> = s.tokens.iter().map(token_json).collect();
    let mut details = json!({
        "finish_reason": reason,
        "generated_tokens": s.finished.usage.completion_tokens,
        "seed": o.seed,
        "prefill": prefill,
        "tokens": tokens,
    });
    if o.top_n_tokens > 0 {
        details["top_tokens"] = s
            .tokens
            .iter()
            .map(|t| top_tokens_json(&t.top_logprobs, o.top_n_tokens, is_special))
            .collect();
    }
    Ok((text, details))
}

/// SSE events of `/generate_stream` and streaming `POST /`: one per token;
/// the last also carries `generated_text` (and `details` when asked). No `[DONE]`.
pub struct TgiStream {
    options: ResponseOptions,
    input_length: u32,
    is_special: Box<dyn Fn(TokenId) -> bool + Send>,
    held: Option<GeneratedToken>,
    index: u32,
    text: String,
    finished: bool,
}

impl TgiStream {
    /// A new encoder; `input_length` is the prompt's token count.
    pub fn new(
        options: ResponseOptions,
        input_length: u32,
        is_special: Box<dyn Fn(TokenId) -> bool + Send>,
    ) -> Self {
        TgiStream {
            options,
            input_length,
            is_special,
            held: None,
            index: 0,
            text: String::new(),
            finished: false,
        }
    }

    fn event_json(&mut self, t: &GeneratedToken) -> Value {
        self.index += 1;
        let text = if t.special {
            t.piece.clone()
        } else {
            t.text.clone()
        };
        let mut v = json!({
            "index": self.index,
            "token": {"id": t.id, "text": text, "logprob": t.logprob, "special": t.special},
        });
        if self.options.top_n_tokens > 0 {
            v["top_tokens"] = top_tokens_json(
                &t.top_logprobs,
                self.options.top_n_tokens,
                &*self.is_special,
            );
        }
        v["generated_text"] = Value::Null;
        v["details"] = Value::Null;
        v
    }

    fn error(&mut self, e: ApiError, out: &mut Vec<Frame>) -> Flow {
        if let Some(t) = self.held.take() {
            let v = self.event_json(&t);
            out.push(Frame::Json(v));
        }
        self.finished = true;
        out.push(Frame::Json(e.body()));
        Flow::Stop
    }
}

impl EventEncoder for TgiStream {
    type Event = TokenEvent;

    fn event(&mut self, event: TokenEvent, out: &mut Vec<Frame>) -> Flow {
        match event {
            // `decoder_input_details` is refused when streaming.
            TokenEvent::Prompt(_) => Flow::Continue,
            TokenEvent::Token(t) => {
                self.text.push_str(&t.text);
                if let Some(prev) = self.held.replace(t) {
                    let v = self.event_json(&prev);
                    out.push(Frame::Json(v));
                }
                Flow::Continue
            }
            TokenEvent::Finished(f) => {
                let Some(reason) = finish_reason(&f) else {
                    return self.error(incomplete(&f), out);
                };
                let Some(last) = self.held.take() else {
                    return self.error(incomplete(&f), out);
                };
                let mut v = self.event_json(&last);
                v["generated_text"] = if self.options.return_full_text {
                    json!(format!("{}{}", self.options.inputs, self.text))
                } else {
                    json!(self.text)
                };
                if self.options.details {
                    v["details"] = json!({
                        "finish_reason": reason,
                        "generated_tokens": f.usage.completion_tokens,
                        "seed": self.options.seed,
                        "input_length": self.input_length,
                    });
                }
                self.finished = true;
                out.push(Frame::Json(v));
                Flow::Stop
            }
            TokenEvent::Failed { error } => {
                let e = ApiError::from_engine(Dialect::Tgi, &error, 1).with_type("generation");
                self.error(e, out)
            }
        }
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if !self.finished {
            let e = ApiError::new(
                Dialect::Tgi,
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Incomplete generation stream",
            )
            .with_type("incomplete_generation");
            out.push(Frame::Json(e.body()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_http::stream::encode_all;
    use kiln_protocol::Usage;

    fn tok(id: u32, text: &str, special: bool) -> TokenEvent {
        TokenEvent::Token(GeneratedToken {
            index: 0,
            id,
            text: if special { String::new() } else { text.into() },
            piece: text.into(),
            special,
            logprob: Some(-0.5),
            top_logprobs: vec![],
        })
    }

    fn fin(reason: FinishReason, stop: Option<StopReason>) -> TokenEvent {
        TokenEvent::Finished(Finished {
            index: 0,
            reason,
            stop_reason: stop,
            usage: Usage {
                prompt_tokens: 2,
                completion_tokens: 2,
                cached_prompt_tokens: 0,
            },
        })
    }

    fn options(details: bool) -> ResponseOptions {
        ResponseOptions {
            details,
            decoder_input_details: false,
            return_full_text: true,
            top_n_tokens: 0,
            seed: None,
            inputs: "Q:".into(),
        }
    }

    #[test]
    fn finish_reasons() {
        let f = |r, s| Finished {
            index: 0,
            reason: r,
            stop_reason: s,
            usage: Usage::default(),
        };
        assert_eq!(
            finish_reason(&f(FinishReason::Length, None)),
            Some("length")
        );
        assert_eq!(
            finish_reason(&f(FinishReason::Stop, Some(StopReason::Eos(1)))),
            Some("eos_token")
        );
        assert_eq!(
            finish_reason(&f(FinishReason::Stop, Some(StopReason::StopToken(1)))),
            Some("eos_token")
        );
        assert_eq!(
            finish_reason(&f(
                FinishReason::Stop,
                Some(StopReason::StopString("x".into()))
            )),
            Some("stop_sequence")
        );
        assert_eq!(finish_reason(&f(FinishReason::Abort, None)), None);
    }

    #[test]
    fn last_event_carries_text_and_details() {
        let enc = TgiStream::new(options(true), 2, Box::new(|_| false));
        let frames = encode_all(
            enc,
            [
                tok(5, " a", false),
                tok(1, "</s>", true),
                fin(FinishReason::Stop, Some(StopReason::Eos(1))),
            ],
        );
        assert_eq!(frames.len(), 2);
        let Frame::Json(first) = &frames[0] else {
            panic!()
        };
        assert_eq!(first["generated_text"], Value::Null);
        assert_eq!(first["index"], 1);
        let Frame::Json(last) = &frames[1] else {
            panic!()
        };
        assert_eq!(last["token"]["text"], "</s>");
        assert_eq!(last["generated_text"], "Q: a");
        assert_eq!(last["details"]["finish_reason"], "eos_token");
        assert_eq!(last["details"]["input_length"], 2);
    }

    #[test]
    fn a_stream_without_an_end_is_incomplete() {
        let frames = encode_all(
            TgiStream::new(options(false), 2, Box::new(|_| false)),
            [tok(5, " a", false)],
        );
        let Frame::Json(last) = frames.last().unwrap() else {
            panic!()
        };
        assert_eq!(last["error_type"], "incomplete_generation");
    }
}
