//! `/v1/completions` responses: the JSON body and the SSE chunk encoder.

use std::collections::HashMap;

use kiln_http::stream::{EventEncoder, Flow, Frame};
use kiln_http::{ApiError, Collected, Dialect, rank_by_likelihood};
use kiln_protocol::{PromptToken, TokenEvent};
use serde_json::{Value, json};

use crate::wire::{
    LogprobToken, ResponseMeta, UsageCounts, completion_logprobs, finish_reason, stop_reason,
    usage_json, vllm_prompt_logprobs,
};

/// Which log-probabilities a completions response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogprobsShape {
    /// `logprobs` for the generated tokens.
    pub tokens: bool,
    /// With `tokens` and `echo`: the prompt's tokens lead each `logprobs`.
    pub echo: bool,
    /// vLLM's `prompt_logprobs` in each choice.
    pub vllm_prompt: bool,
}

/// A choice's `prompt_logprobs` field.
fn prompt_field(shape: LogprobsShape, prompt: Option<&[PromptToken]>) -> Value {
    match prompt {
        Some(tokens) if shape.vllm_prompt => vllm_prompt_logprobs(tokens),
        _ => Value::Null,
    }
}

/// One prompt's result, with the text to echo if `echo` was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptResult {
    /// The prompt text (set only with `echo`).
    pub echo: Option<String>,
    /// What the engine produced.
    pub collected: Collected,
}

/// `best_of`: the `n` most likely sequences, indexed 0.. in that order
/// (usage then counts the returned ones, as vLLM's does).
pub fn keep_best(mut collected: Collected, n: u32) -> Collected {
    if collected.sequences.len() <= n as usize {
        return collected;
    }
    rank_by_likelihood(&mut collected.sequences);
    collected.sequences.truncate(n as usize);
    for (rank, s) in collected.sequences.iter_mut().enumerate() {
        s.index = rank as u32;
        s.finished.index = rank as u32;
    }
    collected
}

/// Usage over every prompt and choice.
pub fn usage_of(results: &[PromptResult]) -> UsageCounts {
    let mut u = UsageCounts::default();
    for r in results {
        u.prompt += r.collected.prompt_token_ids.len() as u32;
        u.completion += r
            .collected
            .sequences
            .iter()
            .map(|s| s.finished.usage.completion_tokens)
            .sum::<u32>();
        u.cached += r
            .collected
            .sequences
            .first()
            .map_or(0, |s| s.finished.usage.cached_prompt_tokens);
    }
    u
}

/// The non-streaming body; choice `i` of prompt `p` has index `p * n + i`.
pub fn completion_response(
    meta: &ResponseMeta,
    results: &[PromptResult],
    n: u32,
    shape: LogprobsShape,
) -> Value {
    let mut choices = Vec::new();
    for (p, r) in results.iter().enumerate() {
        let prompt = r.collected.prompt_logprobs.as_deref();
        let echoed = match prompt {
            Some(tokens) if shape.echo => tokens,
            _ => &[],
        };
        for s in &r.collected.sequences {
            let echo = r.echo.as_deref().unwrap_or("");
            let lp = if shape.tokens {
                let tokens = echoed
                    .iter()
                    .map(LogprobToken::from)
                    .chain(s.tokens.iter().map(LogprobToken::from));
                completion_logprobs(tokens, 0).0
            } else {
                Value::Null
            };
            choices.push(json!({
                "index": p as u32 * n + s.index,
                "text": format!("{echo}{}", s.text),
                "logprobs": lp,
                "finish_reason": finish_reason(&s.finished),
                "stop_reason": stop_reason(&s.finished),
                "prompt_logprobs": prompt_field(shape, prompt),
            }));
        }
    }
    json!({
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        "usage": usage_json(usage_of(results)),
    })
}

/// Settings of a completions stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionStreamConfig {
    /// Shared fields.
    pub meta: ResponseMeta,
    /// Choices per prompt.
    pub n: u32,
    /// Per prompt: the text to echo first, if any.
    pub echo: Vec<Option<String>>,
    /// Which log-probabilities to include.
    pub logprobs: LogprobsShape,
    /// Final usage chunk.
    pub include_usage: bool,
    /// Usage on every chunk.
    pub continuous_usage: bool,
    /// Prompt tokens over all prompts.
    pub prompt_tokens: u32,
}

/// SSE chunks of `/v1/completions`; events are tagged with their prompt's position.
#[derive(Debug)]
pub struct CompletionStream {
    config: CompletionStreamConfig,
    completion_tokens: u32,
    offsets: HashMap<u32, usize>,
    failed: bool,
}

impl CompletionStream {
    /// A new encoder.
    pub fn new(config: CompletionStreamConfig) -> Self {
        CompletionStream {
            config,
            completion_tokens: 0,
            offsets: HashMap::new(),
            failed: false,
        }
    }

    fn usage(&self) -> Value {
        usage_json(UsageCounts {
            prompt: self.config.prompt_tokens,
            completion: self.completion_tokens,
            cached: 0,
        })
    }

    fn chunk(&self, choice: Value) -> Frame {
        let m = &self.config.meta;
        let mut v = json!({
            "id": m.id,
            "object": "text_completion",
            "created": m.created,
            "model": m.model,
            "choices": [choice],
        });
        if self.config.continuous_usage {
            v["usage"] = self.usage();
        }
        Frame::Json(v)
    }
}

impl CompletionStream {
    /// The echo chunks need the prompt's log-probabilities, which arrive
    /// with the engine's first event, not at the start.
    fn waits_for_prompt(&self) -> bool {
        self.config.logprobs.tokens && self.config.logprobs.echo
    }

    /// Each choice's first chunk once its prompt's log-probabilities came:
    /// the echoed text with its tokens' `logprobs`, and vLLM's
    /// `prompt_logprobs` when asked.
    fn prompt_chunks(&mut self, prompt: usize, tokens: &[PromptToken], out: &mut Vec<Frame>) {
        let shape = self.config.logprobs;
        let echo = self.config.echo.get(prompt).cloned().flatten();
        let echoes = self.waits_for_prompt() && echo.is_some();
        if !echoes && !shape.vllm_prompt {
            return;
        }
        for i in 0..self.config.n {
            let index = prompt as u32 * self.config.n + i;
            let (text, logprobs) = if echoes {
                let (v, end) = completion_logprobs(tokens.iter().map(LogprobToken::from), 0);
                self.offsets.insert(index, end);
                (echo.clone().unwrap_or_default(), v)
            } else {
                (String::new(), Value::Null)
            };
            let choice = json!({"index": index, "text": text, "logprobs": logprobs,
                "finish_reason": null, "stop_reason": null,
                "prompt_logprobs": prompt_field(shape, Some(tokens))});
            out.push(self.chunk(choice));
        }
    }
}

impl EventEncoder for CompletionStream {
    type Event = (usize, TokenEvent);

    fn start(&mut self, out: &mut Vec<Frame>) {
        if self.waits_for_prompt() {
            return;
        }
        for (p, echo) in self.config.echo.iter().enumerate() {
            let Some(text) = echo else { continue };
            for i in 0..self.config.n {
                let choice = json!({"index": p as u32 * self.config.n + i, "text": text,
                    "logprobs": null, "finish_reason": null, "stop_reason": null});
                out.push(self.chunk(choice));
            }
        }
    }

    fn event(&mut self, (prompt, event): (usize, TokenEvent), out: &mut Vec<Frame>) -> Flow {
        let base = prompt as u32 * self.config.n;
        match event {
            TokenEvent::Prompt(tokens) => self.prompt_chunks(prompt, &tokens, out),
            TokenEvent::Token(t) => {
                self.completion_tokens += 1;
                if t.text.is_empty() && !self.config.logprobs.tokens {
                    return Flow::Continue;
                }
                let index = base + t.index;
                let logprobs = if self.config.logprobs.tokens {
                    let offset = self.offsets.entry(index).or_insert(0);
                    let (v, end) = completion_logprobs([LogprobToken::from(&t)], *offset);
                    *offset = end;
                    v
                } else {
                    Value::Null
                };
                let choice = json!({"index": index, "text": t.text, "logprobs": logprobs,
                    "finish_reason": null, "stop_reason": null});
                out.push(self.chunk(choice));
            }
            TokenEvent::Finished(f) => {
                let choice = json!({"index": base + f.index, "text": "", "logprobs": null,
                    "finish_reason": finish_reason(&f), "stop_reason": stop_reason(&f)});
                out.push(self.chunk(choice));
            }
            TokenEvent::Failed { error } => {
                self.failed = true;
                out.push(Frame::Json(
                    ApiError::from_engine(Dialect::OpenAi, &error, 1).body(),
                ));
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn end(&mut self, out: &mut Vec<Frame>) {
        if self.config.include_usage && !self.failed {
            let m = &self.config.meta;
            out.push(Frame::Json(json!({
                "id": m.id,
                "object": "text_completion",
                "created": m.created,
                "model": m.model,
                "choices": [],
                "usage": self.usage(),
            })));
        }
        out.push(Frame::Done);
    }
}
