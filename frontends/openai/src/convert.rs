//! Pure request → engine-request conversion and validation.

use std::collections::BTreeMap;

use kiln_engine_api::ChatOptions;
use kiln_http::{ApiError, Dialect};
use kiln_protocol::{
    GenerateRequest, MAX_TOP_LOGPROBS, PromptInput, SamplingParams, StoppingCriteria, TokenId,
};
use serde_json::{Value, json};

use crate::request::{
    ChatMessageIn, ChatRequest, CompletionRequest, SamplingFields, StreamOptions, VllmExtras,
};
use crate::structured::structured_output;
use crate::tools::{ToolPlan, chat_tools, check_tool_message, template_tool_calls};
use kiln_http::tool_calls::forced_calls_constraint;

/// Default `max_tokens` of `/v1/completions`.
pub const COMPLETION_DEFAULT_MAX_TOKENS: u32 = 16;
/// Most prompts in one completions request.
pub const MAX_BATCH_PROMPTS: usize = 64;

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Dialect::OpenAi, param, message)
}

/// How to answer: one JSON body or an SSE stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// One JSON body.
    Off,
    /// SSE.
    On {
        /// A final `choices: []` chunk with the usage.
        include_usage: bool,
        /// The running usage on every chunk.
        continuous_usage: bool,
    },
}

/// `stream` + `stream_options`: options without streaming are a 400.
pub fn stream_mode(
    stream: Option<bool>,
    options: Option<&StreamOptions>,
) -> Result<StreamMode, ApiError> {
    match (stream.unwrap_or(false), options) {
        (false, None) => Ok(StreamMode::Off),
        (false, Some(_)) => Err(bad(
            "stream_options",
            "`stream_options` can only be set when `stream` is true",
        )),
        (true, o) => Ok(StreamMode::On {
            include_usage: o.and_then(|o| o.include_usage).unwrap_or(false),
            continuous_usage: o.and_then(|o| o.continuous_usage_stats).unwrap_or(false),
        }),
    }
}

/// `stop`: a string or a list of strings.
pub fn parse_stop(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop", "`stop` must be a string or a list of strings"))
            })
            .collect(),
        Some(_) => Err(bad("stop", "`stop` must be a string or a list of strings")),
    }
}

/// `logit_bias`: token-id strings → bias.
pub fn parse_logit_bias(
    bias: Option<&BTreeMap<String, f32>>,
) -> Result<Vec<(TokenId, f32)>, ApiError> {
    bias.into_iter()
        .flatten()
        .map(|(k, v)| {
            k.trim().parse::<TokenId>().map(|id| (id, *v)).map_err(|_| {
                bad(
                    "logit_bias",
                    format!("`logit_bias` keys must be token ids, got {k:?}"),
                )
            })
        })
        .collect()
}

/// `top_k`: 0 and -1 disable; other negatives are a 400.
pub fn parse_top_k(top_k: Option<i64>) -> Result<u32, ApiError> {
    match top_k {
        None | Some(0) | Some(-1) => Ok(0),
        Some(k) if k > 0 => Ok(u32::try_from(k).unwrap_or(u32::MAX)),
        Some(k) => Err(bad(
            "top_k",
            format!("`top_k` must be -1 (off) or at least 1, got {k}"),
        )),
    }
}

/// Rejects the vLLM extras Kiln does not implement, naming each.
pub fn check_unsupported_extras(extra: &VllmExtras) -> Result<(), ApiError> {
    if extra.use_beam_search == Some(true) {
        return Err(bad(
            "use_beam_search",
            "beam search is not supported: remove `use_beam_search`",
        ));
    }
    Ok(())
}

/// vLLM's `prompt_logprobs`: null, or the number of top alternatives per
/// prompt token (0: only the prompt token's own log-probability).
pub fn parse_prompt_logprobs(value: Option<&Value>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(k) if k <= u64::from(MAX_TOP_LOGPROBS) => Ok(Some(k as u32)),
            _ => Err(bad(
                "prompt_logprobs",
                format!(
                    "`prompt_logprobs` must be null or between 0 and {MAX_TOP_LOGPROBS}, got {v}"
                ),
            )),
        },
    }
}

/// `truncate_prompt_tokens`: keep the last N prompt tokens (-1: the context length).
pub fn parse_truncation(value: Option<i64>, max_model_len: u32) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(-1) => Ok(Some(max_model_len as usize)),
        Some(k) if k >= 1 => Ok(Some(k as usize)),
        Some(k) => Err(bad(
            "truncate_prompt_tokens",
            format!("`truncate_prompt_tokens` must be -1 or at least 1, got {k}"),
        )),
    }
}

/// The engine request a chat or completions body asks for, before the
/// prompt, `logprobs` and `max_tokens` (which the endpoints spell
/// differently) are filled in; `response_format` is chat's.
pub fn generate_request(
    fields: &SamplingFields,
    extra: &VllmExtras,
    response_format: Option<&Value>,
    add_special_tokens: bool,
) -> Result<GenerateRequest, ApiError> {
    check_unsupported_extras(extra)?;
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        n: fields.n.unwrap_or(1),
        temperature: fields.temperature.unwrap_or(defaults.temperature),
        top_k: parse_top_k(fields.top_k)?,
        top_p: fields.top_p.unwrap_or(defaults.top_p),
        min_p: fields.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: fields
            .repetition_penalty
            .unwrap_or(defaults.repetition_penalty),
        presence_penalty: fields.presence_penalty.unwrap_or(0.0),
        frequency_penalty: fields.frequency_penalty.unwrap_or(0.0),
        logit_bias: parse_logit_bias(fields.logit_bias.as_ref())?,
        seed: fields.seed.map(|s| s as u64),
        logprobs: None,
        prompt_logprobs: parse_prompt_logprobs(extra.prompt_logprobs.as_ref())?,
        structured: structured_output(response_format, extra)?,
    };
    let stopping = StoppingCriteria {
        max_tokens: None,
        min_tokens: extra.min_tokens.unwrap_or(0),
        stop: parse_stop(fields.stop.as_ref())?,
        stop_token_ids: extra.stop_token_ids.clone().unwrap_or_default(),
        ignore_eos: extra.ignore_eos.unwrap_or(false),
        include_stop_str_in_output: extra.include_stop_str_in_output.unwrap_or(false),
        skip_special_tokens: extra.skip_special_tokens.unwrap_or(true),
    };
    Ok(GenerateRequest {
        prompt: PromptInput::default(),
        sampling,
        stopping,
        add_special_tokens: extra.add_special_tokens.unwrap_or(add_special_tokens),
        tag: None,
    })
}

/// `prompt`: a string, strings, token ids, or lists of token ids.
pub fn parse_prompts(prompt: Option<&Value>) -> Result<Vec<PromptInput>, ApiError> {
    parse_inputs("prompt", prompt)
}

/// A field shaped as `prompt` is (also the embeddings route's `input`).
pub fn parse_inputs(field: &str, prompt: Option<&Value>) -> Result<Vec<PromptInput>, ApiError> {
    let invalid = || {
        bad(
            field,
            format!(
                "`{field}` must be a string, a list of strings, a list of token ids or a list of \
                 token-id lists"
            ),
        )
    };
    let token_ids = |items: &[Value]| -> Option<Vec<TokenId>> {
        items
            .iter()
            .map(|v| v.as_u64().and_then(|x| TokenId::try_from(x).ok()))
            .collect()
    };
    let prompts = match prompt {
        None | Some(Value::Null) => return Err(bad(field, format!("`{field}` is required"))),
        Some(Value::String(s)) => vec![PromptInput::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(bad(field, format!("`{field}` must not be an empty list")));
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|v| v.as_str().map(|s| PromptInput::Text(s.to_string())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(invalid)?,
            Value::Number(_) => vec![PromptInput::TokenIds(token_ids(items).ok_or_else(invalid)?)],
            Value::Array(_) => items
                .iter()
                .map(|v| {
                    v.as_array()
                        .and_then(|a| token_ids(a))
                        .map(PromptInput::TokenIds)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(invalid)?,
            _ => return Err(invalid()),
        },
        Some(_) => return Err(invalid()),
    };
    if prompts.len() > MAX_BATCH_PROMPTS {
        return Err(bad(
            field,
            format!(
                "at most {MAX_BATCH_PROMPTS} inputs per request, got {}",
                prompts.len()
            ),
        ));
    }
    Ok(prompts)
}

/// What a completions request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionPlan {
    /// One entry per prompt.
    pub prompts: Vec<PromptInput>,
    /// Parameters shared by every prompt (`sampling.n` is `best_of` when
    /// that is larger than `n`).
    pub request: GenerateRequest,
    /// Choices returned per prompt: the most likely `n` of `sampling.n`.
    pub n: u32,
    /// The client asked for `logprobs`.
    pub logprobs: bool,
    /// Prepend the prompt to each output.
    pub echo: bool,
    /// Report vLLM's `prompt_logprobs` (asked for by name, not implied by
    /// `echo` with `logprobs`).
    pub vllm_prompt_logprobs: bool,
    /// Keep only the last N prompt tokens.
    pub truncate: Option<usize>,
    /// JSON or SSE.
    pub stream: StreamMode,
}

/// Validates a completions request.
pub fn completion_plan(
    req: &CompletionRequest,
    max_model_len: u32,
) -> Result<CompletionPlan, ApiError> {
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            "suffix",
            "`suffix` (fill-in-the-middle) is not supported: remove it",
        ));
    }
    let n = req.sampling.n.unwrap_or(1);
    let best_of = match req.best_of {
        Some(b) if b < n => {
            return Err(bad(
                "best_of",
                format!("`best_of` must be at least `n` ({n}), got {b}"),
            ));
        }
        Some(b) if b > n => Some(b),
        _ => None,
    };
    if best_of.is_some() && req.stream == Some(true) {
        return Err(bad(
            "best_of",
            "`best_of` greater than `n` cannot be streamed: set `stream` to false or drop `best_of`",
        ));
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(k) if (0..=i64::from(MAX_TOP_LOGPROBS)).contains(&k) => Some(k as u32),
        Some(k) => {
            return Err(bad(
                "logprobs",
                format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ));
        }
    };
    let echo = req.echo.unwrap_or(false);
    let mut request = generate_request(&req.sampling, &req.extra, None, true)?;
    request.sampling.logprobs = logprobs;
    request.stopping.max_tokens = Some(req.max_tokens.unwrap_or(COMPLETION_DEFAULT_MAX_TOKENS));
    if let Some(b) = best_of {
        // Rank the `best_of` sequences by their tokens' log-probabilities.
        request.sampling.n = b;
        request.sampling.logprobs.get_or_insert(0);
    }
    let vllm_prompt_logprobs = request.sampling.prompt_logprobs.is_some();
    if echo && let Some(k) = logprobs {
        // The echoed prompt's tokens carry log-probabilities too.
        let wanted = request.sampling.prompt_logprobs.get_or_insert(k);
        *wanted = (*wanted).max(k);
    }
    Ok(CompletionPlan {
        prompts: parse_prompts(req.prompt.as_ref())?,
        request,
        n,
        logprobs: logprobs.is_some(),
        echo,
        vllm_prompt_logprobs,
        truncate: parse_truncation(req.extra.truncate_prompt_tokens, max_model_len)?,
        stream: stream_mode(req.stream, req.stream_options.as_ref())?,
    })
}

/// A message's content as one string: text parts joined by newlines.
pub fn message_text(index: usize, content: Option<&Value>) -> Result<String, ApiError> {
    let param = format!("messages.{index}.content");
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            bad(&param, "a text content part needs a string `text`")
                        })?)
                    }
                    Some(other) => {
                        return Err(bad(
                            &param,
                            format!(
                                "content parts of type `{other}` are not supported: this model takes text only"
                            ),
                        ));
                    }
                    None => return Err(bad(&param, "every content part needs a `type`")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(bad(
            &param,
            "`content` must be a string or a list of content parts",
        )),
    }
}

/// Messages as the chat template expects them (`role`, string `content`, extras).
pub fn template_messages(messages: &[ChatMessageIn]) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.role.trim().is_empty() {
                return Err(bad(
                    &format!("messages.{i}.role"),
                    "`role` must not be empty",
                ));
            }
            let mut v = json!({"role": m.role, "content": message_text(i, m.content.as_ref())?});
            if let Some(name) = &m.name {
                v["name"] = json!(name);
            }
            if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_null()) {
                v["tool_calls"] = template_tool_calls(i, &m.role, calls)?;
            }
            check_tool_message(i, &m.role, m.tool_call_id.as_deref())?;
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = json!(id);
            }
            Ok(v)
        })
        .collect()
}

/// What a chat request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPlan {
    /// Messages for the chat template.
    pub messages: Vec<Value>,
    /// Template options.
    pub options: ChatOptions,
    /// Continue the final message: the rendered prompt is cut right after its content.
    pub continue_final_message: bool,
    /// Sampling and stopping.
    pub request: GenerateRequest,
    /// Alternatives per token, when `logprobs` is true.
    pub top_logprobs: Option<u32>,
    /// JSON or SSE.
    pub stream: StreamMode,
    /// Tool calling.
    pub tools: ToolPlan,
}

/// Validates a chat request.
pub fn chat_plan(req: &ChatRequest) -> Result<ChatPlan, ApiError> {
    let tools = chat_tools(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    if req.echo == Some(true) {
        return Err(bad("echo", "`echo` is not supported for chat completions"));
    }
    let top_logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if k > MAX_TOP_LOGPROBS => {
            return Err(bad(
                "top_logprobs",
                format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ));
        }
        (false, Some(k)) if k > 0 => {
            return Err(bad("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
        }
        (true, k) => Some(k.unwrap_or(0)),
        (false, _) => None,
    };
    let continue_final = req.continue_final_message.unwrap_or(false);
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(!continue_final);
    if continue_final && add_generation_prompt {
        return Err(bad(
            "continue_final_message",
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
        ));
    }
    let messages = template_messages(&req.messages)?;
    if parse_truncation(req.extra.truncate_prompt_tokens, u32::MAX)?.is_some() {
        return Err(bad(
            "truncate_prompt_tokens",
            "`truncate_prompt_tokens` is supported on /v1/completions only",
        ));
    }
    let mut request = generate_request(
        &req.sampling,
        &req.extra,
        req.response_format.as_ref(),
        false,
    )?;
    request.sampling.logprobs = top_logprobs;
    request.stopping.max_tokens = req.max_completion_tokens.or(req.max_tokens);
    if let ToolPlan::Forced(forced) = &tools.plan {
        if request.sampling.structured.is_some() {
            return Err(bad(
                "tool_choice",
                "a required or named `tool_choice` cannot be combined with a structured output",
            ));
        }
        request.sampling.structured = Some(forced_calls_constraint(forced));
    }
    Ok(ChatPlan {
        messages,
        options: ChatOptions {
            add_generation_prompt,
            tools: tools.template_tools,
            extra: req.chat_template_kwargs.clone().unwrap_or_default(),
            template: req.chat_template.clone(),
        },
        continue_final_message: continue_final,
        request,
        top_logprobs,
        stream: stream_mode(req.stream, req.stream_options.as_ref())?,
        tools: tools.plan,
    })
}

/// Cuts a rendered conversation right after the final message's content, so
/// that generation continues that message.
pub fn continue_final(rendered: &str, messages: &[Value]) -> Result<String, ApiError> {
    let content = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    kiln_http::chat::cut_after_final_message(rendered, content).ok_or_else(|| {
        bad(
            "continue_final_message",
            "the final message is empty or not found in the rendered conversation",
        )
    })
}

/// The model name to report: the requested one if it is served, else the primary name.
pub fn response_model(served: &[String], primary: &str, requested: Option<&str>) -> String {
    match requested {
        Some(r) if served.iter().any(|s| s == r) => r.to_string(),
        _ => primary.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(body: Value) -> Result<CompletionPlan, ApiError> {
        let req: CompletionRequest = serde_json::from_value(body).unwrap();
        completion_plan(&req, 100)
    }

    fn chat(body: Value) -> Result<ChatPlan, ApiError> {
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        chat_plan(&req)
    }

    #[test]
    fn completion_defaults() {
        let p = completion(json!({"prompt": "hi"})).unwrap();
        assert_eq!(p.prompts, vec![PromptInput::Text("hi".into())]);
        assert_eq!(p.request.stopping.max_tokens, Some(16));
        assert_eq!(p.request.sampling.temperature, 1.0);
        assert!(p.request.add_special_tokens);
        assert_eq!(p.stream, StreamMode::Off);
    }

    #[test]
    fn vllm_extras_reach_the_engine_request() {
        let p = completion(json!({
            "prompt": [1, 2], "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.2, "ignore_eos": true,
            "min_tokens": 2, "stop_token_ids": [7], "include_stop_str_in_output": true,
            "skip_special_tokens": false, "seed": 42, "stop": ["a", "b"], "logit_bias": {"5": 1.5}
        }))
        .unwrap();
        let r = p.request;
        assert_eq!(p.prompts, vec![PromptInput::TokenIds(vec![1, 2])]);
        assert_eq!(
            (
                r.sampling.top_k,
                r.sampling.min_p,
                r.sampling.repetition_penalty
            ),
            (5, 0.1, 1.2)
        );
        assert_eq!(r.sampling.seed, Some(42));
        assert_eq!(r.sampling.logit_bias, vec![(5, 1.5)]);
        assert!(r.stopping.ignore_eos && r.stopping.include_stop_str_in_output);
        assert!(!r.stopping.skip_special_tokens);
        assert_eq!(
            (r.stopping.min_tokens, r.stopping.stop_token_ids.clone()),
            (2, vec![7])
        );
        assert_eq!(r.stopping.stop, vec!["a", "b"]);
    }

    #[test]
    fn prompt_shapes() {
        assert_eq!(parse_prompts(Some(&json!(["a", "b"]))).unwrap().len(), 2);
        assert_eq!(parse_prompts(Some(&json!([[1], [2, 3]]))).unwrap().len(), 2);
        for bad_prompt in [
            json!(null),
            json!([]),
            json!(3),
            json!([1, "a"]),
            json!([-1]),
            json!([{}]),
        ] {
            assert!(parse_prompts(Some(&bad_prompt)).is_err(), "{bad_prompt}");
        }
    }

    #[test]
    fn unsupported_completion_features_are_rejected_by_name() {
        for (body, param) in [
            (json!({"prompt": "a", "suffix": "x"}), "suffix"),
            (json!({"prompt": "a", "n": 2, "best_of": 1}), "best_of"),
            (
                json!({"prompt": "a", "best_of": 3, "stream": true}),
                "best_of",
            ),
            (json!({"prompt": "a", "logprobs": 21}), "logprobs"),
            (json!({"prompt": "a", "logprobs": -1}), "logprobs"),
            (
                json!({"prompt": "a", "prompt_logprobs": 21}),
                "prompt_logprobs",
            ),
            (
                json!({"prompt": "a", "prompt_logprobs": "x"}),
                "prompt_logprobs",
            ),
            (
                json!({"prompt": "a", "use_beam_search": true}),
                "use_beam_search",
            ),
            (json!({"prompt": "a", "guided_json": 3}), "guided_json"),
            (json!({"prompt": "a", "top_k": -2}), "top_k"),
            (
                json!({"prompt": "a", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (json!({"prompt": "a", "stop": [1]}), "stop"),
            (
                json!({"prompt": "a", "logit_bias": {"x": 1.0}}),
                "logit_bias",
            ),
            (
                json!({"prompt": "a", "truncate_prompt_tokens": 0}),
                "truncate_prompt_tokens",
            ),
        ] {
            let e = completion(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn chat_defaults_leave_max_tokens_to_the_context() {
        let p = chat(json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(p.request.stopping.max_tokens, None);
        assert!(!p.request.add_special_tokens);
        assert!(p.options.add_generation_prompt);
        assert_eq!(p.messages, vec![json!({"role": "user", "content": "hi"})]);
        let p = chat(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 7})).unwrap();
        assert_eq!(p.request.stopping.max_tokens, Some(7));
    }

    #[test]
    fn chat_content_parts_and_logprobs() {
        let p = chat(json!({
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "logprobs": true, "top_logprobs": 2
        }))
        .unwrap();
        assert_eq!(p.messages[0]["content"], "a\nb");
        assert_eq!(p.top_logprobs, Some(2));
        assert_eq!(p.request.sampling.logprobs, Some(2));
    }

    #[test]
    fn unsupported_chat_features_are_rejected_by_name() {
        let m = json!([{"role": "user", "content": "hi"}]);
        for (extra, param) in [
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format",
            ),
            (json!({"tools": [{"type": "function"}]}), "tools.0.function"),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (
                json!({"logprobs": true, "top_logprobs": 50}),
                "top_logprobs",
            ),
            (json!({"echo": true}), "echo"),
            (
                json!({"continue_final_message": true, "add_generation_prompt": true}),
                "continue_final_message",
            ),
        ] {
            let mut body = extra.clone();
            body["messages"] = m.clone();
            let e = chat(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{extra}");
        }
        assert_eq!(
            chat(json!({"messages": []})).unwrap_err().param.as_deref(),
            Some("messages")
        );
        let img = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
        assert_eq!(
            chat(img).unwrap_err().param.as_deref(),
            Some("messages.0.content")
        );
    }

    #[test]
    fn tools_with_choice_none_are_left_out_of_the_template() {
        let tool = json!({"type": "function", "function": {"name": "f"}});
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool], "tool_choice": "none", "response_format": {"type": "text"}});
        let p = chat(body).unwrap();
        assert_eq!((p.tools, p.options.tools), (ToolPlan::Off, None));
    }

    #[test]
    fn forced_tool_choice_constrains_the_output() {
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool], "tool_choice": "required"});
        let p = chat(body.clone()).unwrap();
        assert!(matches!(
            p.request.sampling.structured,
            Some(kiln_protocol::StructuredOutput::JsonSchema(_))
        ));
        assert_eq!(p.options.tools, Some(json!([tool])));
        let mut with_format = body;
        with_format["response_format"] = json!({"type": "json_object"});
        assert_eq!(
            chat(with_format).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
    }

    #[test]
    fn continue_final_cuts_after_the_content() {
        let msgs = vec![json!({"role": "assistant", "content": "The answer is"})];
        let rendered = "<|im_start|>assistant\nThe answer is<|im_end|>\n";
        assert_eq!(
            continue_final(rendered, &msgs).unwrap(),
            "<|im_start|>assistant\nThe answer is"
        );
    }

    #[test]
    fn model_names() {
        let served = vec!["a".to_string(), "b".to_string()];
        assert_eq!(response_model(&served, "a", Some("b")), "b");
        assert_eq!(response_model(&served, "a", Some("tgi")), "a");
        assert_eq!(response_model(&served, "a", None), "a");
    }
}
