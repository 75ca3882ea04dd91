//! Request bodies as clients send them. Unknown fields are accepted and
//! ignored (as vLLM does); fields whose shape varies (`prompt`, `stop`,
//! message `content`) are kept as JSON and checked in [`crate::convert`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `stream_options`: only valid with `stream: true`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `choices: []` and the usage.
    pub include_usage: Option<bool>,
    /// Put the running usage on every chunk.
    pub continuous_usage_stats: Option<bool>,
}

/// vLLM's extra stopping, prompt and output parameters, accepted on both
/// endpoints (its extra sampling parameters are in [`SamplingFields`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VllmExtras {
    /// EOS and stop tokens are ignored before this many tokens.
    pub min_tokens: Option<u32>,
    /// Keep generating past EOS.
    pub ignore_eos: Option<bool>,
    /// Token ids that end a sequence.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Keep the matched stop string in the output.
    pub include_stop_str_in_output: Option<bool>,
    /// Leave special tokens out of the text (default true).
    pub skip_special_tokens: Option<bool>,
    /// Accepted and ignored.
    pub spaces_between_special_tokens: Option<bool>,
    /// Beam search (not supported: rejected when true).
    pub use_beam_search: Option<bool>,
    /// Keep only the last N prompt tokens (-1: the context length).
    pub truncate_prompt_tokens: Option<i64>,
    /// Log-probabilities of the prompt's tokens: null or the number of
    /// alternatives per token (0..=20).
    pub prompt_logprobs: Option<Value>,
    /// Whether to add the tokenizer's special tokens (BOS) to the prompt.
    pub add_special_tokens: Option<bool>,
    /// Structured output: one of `json`, `regex`, `choice`, `grammar`, `json_object`.
    pub structured_outputs: Option<Value>,
    /// A JSON schema the output follows (older vLLM name).
    pub guided_json: Option<Value>,
    /// A regex the output matches (older vLLM name).
    pub guided_regex: Option<Value>,
    /// Strings the output is one of (older vLLM name).
    pub guided_choice: Option<Value>,
    /// A Lark or GBNF grammar the output follows (older vLLM name).
    pub guided_grammar: Option<Value>,
}

/// The sampling fields (and `stop`) of chat, completions and Responses,
/// OpenAI's and vLLM's: flattened into each body and read only by
/// `convert::generate_request`. The one wire form of sampling parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SamplingFields {
    /// Softmax temperature (0: greedy; default 1).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1] (default 1: off).
    pub top_p: Option<f32>,
    /// Sequences per prompt (chat: choices).
    pub n: Option<u32>,
    /// Seed of the request's random stream (any i64; reinterpreted as u64).
    pub seed: Option<i64>,
    /// Subtracted from the logit of every token already generated, once.
    pub presence_penalty: Option<f32>,
    /// Subtracted from a generated token's logit once per occurrence.
    pub frequency_penalty: Option<f32>,
    /// Token id (as a decimal string) → bias added to its logit.
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// A stop string or a list of them.
    pub stop: Option<Value>,
    /// vLLM: keep the `top_k` most likely tokens; 0 or -1: off.
    pub top_k: Option<i64>,
    /// vLLM: drop tokens less likely than `min_p` × the most likely one's
    /// probability (0..=1; 0: off).
    pub min_p: Option<f32>,
    /// vLLM: HF-style repetition penalty, dividing positive logits of
    /// tokens seen in the prompt or output (1.0: off).
    pub repetition_penalty: Option<f32>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// Model name (any name is accepted: one model is served).
    pub model: Option<String>,
    /// A string, a list of strings, a token-id list or a list of token-id lists.
    pub prompt: Option<Value>,
    /// Most new tokens (default 16).
    pub max_tokens: Option<u32>,
    /// Stream SSE chunks.
    pub stream: Option<bool>,
    /// Streaming options (only with `stream: true`).
    pub stream_options: Option<StreamOptions>,
    /// Prepend the prompt to the output.
    pub echo: Option<bool>,
    /// Top log-probabilities per token (0..=20).
    pub logprobs: Option<i64>,
    /// Insertion suffix (not supported: rejected when set).
    pub suffix: Option<String>,
    /// Candidates per prompt (only `n` is supported).
    pub best_of: Option<u32>,
    /// Accepted and ignored.
    pub user: Option<String>,
    /// Sampling parameters and `stop`.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// vLLM extras.
    #[serde(flatten)]
    pub extra: VllmExtras,
}

/// One chat message.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatMessageIn {
    /// `system`, `developer`, `user`, `assistant`, `tool`.
    pub role: String,
    /// A string, a list of content parts, or null.
    #[serde(default)]
    pub content: Option<Value>,
    /// Participant name.
    pub name: Option<String>,
    /// Tool calls of an assistant message (passed to the template).
    pub tool_calls: Option<Value>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatRequest {
    /// Model name (any name is accepted: one model is served).
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessageIn>,
    /// Deprecated alias of `max_completion_tokens`.
    pub max_tokens: Option<u32>,
    /// Most new tokens (default: the rest of the context).
    pub max_completion_tokens: Option<u32>,
    /// Stream SSE chunks.
    pub stream: Option<bool>,
    /// Streaming options (only with `stream: true`).
    pub stream_options: Option<StreamOptions>,
    /// Return log-probabilities of the output tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per token (0..=20, needs `logprobs`).
    pub top_logprobs: Option<u32>,
    /// `text`, `json_object`, or `json_schema` with `{name, schema, strict}`.
    pub response_format: Option<Value>,
    /// Function tools the model may call.
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name": ...}}`.
    pub tool_choice: Option<Value>,
    /// With `tool_choice: required`, allow more than one call (default true).
    pub parallel_tool_calls: Option<bool>,
    /// Accepted and ignored.
    pub user: Option<String>,
    /// Append the assistant-turn opener (default true).
    pub add_generation_prompt: Option<bool>,
    /// Continue the last (assistant) message instead of starting a new turn.
    pub continue_final_message: Option<bool>,
    /// A per-request chat template.
    pub chat_template: Option<String>,
    /// Extra template variables.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Not supported for chat (rejected when true).
    pub echo: Option<bool>,
    /// Sampling parameters and `stop`.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// vLLM extras.
    #[serde(flatten)]
    pub extra: VllmExtras,
}

/// `POST /tokenize` (vLLM form): a prompt or a conversation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TokenizeRequest {
    /// Ignored (one model is served).
    pub model: Option<String>,
    /// Text to tokenize.
    pub prompt: Option<String>,
    /// A conversation to render with the chat template, then tokenize.
    pub messages: Option<Vec<ChatMessageIn>>,
    /// Add special tokens (default: true for `prompt`, false for `messages`).
    pub add_special_tokens: Option<bool>,
    /// Append the assistant-turn opener (default true).
    pub add_generation_prompt: Option<bool>,
    /// Also return each token's text.
    pub return_token_strs: Option<bool>,
    /// A per-request chat template.
    pub chat_template: Option<String>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DetokenizeRequest {
    /// Ignored (one model is served).
    pub model: Option<String>,
    /// Token ids.
    pub tokens: Vec<u32>,
}
