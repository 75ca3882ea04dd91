use serde::{Deserialize, Serialize};

use crate::{EngineError, RequestId, TokenId};

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// EOS, a stop token or a stop string ([`StopReason`] says which).
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// Aborted by the client (or a disconnect).
    Abort,
    /// Failed inside the engine.
    Error,
}

impl FinishReason {
    /// The lower-case name used on the wire by OpenAI and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
        }
    }
}

/// What exactly stopped a sequence that finished with [`FinishReason::Stop`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The model's end-of-sequence token.
    Eos(TokenId),
    /// One of the request's `stop_token_ids`.
    StopToken(TokenId),
    /// One of the request's stop strings (the string itself).
    StopString(String),
}

/// One alternative token with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Token id.
    pub id: TokenId,
    /// Natural-log probability under the raw model distribution.
    pub logprob: f32,
    /// The token decoded on its own.
    pub text: String,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedToken {
    /// Which of the request's `n` sequences this belongs to (0-based).
    pub index: u32,
    /// The token id.
    pub id: TokenId,
    /// Text to append to the visible output now. May be empty (incomplete
    /// UTF-8, a special token, or text held back while it could still become
    /// a stop string) and may include text held back from earlier tokens.
    pub text: String,
    /// The token decoded on its own (for per-token details and logprobs).
    pub piece: String,
    /// Whether the token is a special (control) token.
    pub special: bool,
    /// Log-probability of this token, when requested.
    pub logprob: Option<f32>,
    /// Top alternatives, most likely first, when requested.
    pub top_logprobs: Vec<TopLogprob>,
}

/// One prompt token with its log-probability given the tokens before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptToken {
    /// The token id.
    pub id: TokenId,
    /// The token decoded on its own.
    pub piece: String,
    /// `None` for the first prompt token, which nothing predicts.
    pub logprob: Option<f32>,
    /// 1 + the number of tokens the model found more likely (0 with `logprob`).
    pub rank: u32,
    /// Top alternatives at this position, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// Token counts of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Length of the prompt after tokenization, cached tokens included.
    pub prompt_tokens: u32,
    /// Tokens generated for this sequence.
    pub completion_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached_prompt_tokens: u32,
}

/// The end of one sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Which of the request's `n` sequences ended.
    pub index: u32,
    /// Why it ended.
    pub reason: FinishReason,
    /// For [`FinishReason::Stop`]: the token or string that stopped it.
    pub stop_reason: Option<StopReason>,
    /// Token counts.
    pub usage: Usage,
}

/// What a client receives about its request, in order. With
/// `prompt_logprobs`, one `Prompt` first; then for each sequence index: zero
/// or more `Token`s, then exactly one `Finished`; or a single `Failed` for
/// the whole request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TokenEvent {
    /// Every prompt token with its log-probability (`prompt_logprobs`).
    Prompt(Vec<PromptToken>),
    /// A new token.
    Token(GeneratedToken),
    /// A sequence ended.
    Finished(Finished),
    /// The whole request failed; nothing more follows.
    Failed {
        /// What went wrong.
        error: EngineError,
    },
}

/// Per-step statistics the scheduler publishes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepStats {
    /// Sequences holding KV blocks and being computed.
    pub num_running: u32,
    /// Requests waiting to be admitted (including preempted ones).
    pub num_waiting: u32,
    /// KV blocks in use (referenced by a sequence).
    pub kv_blocks_used: u32,
    /// KV blocks in the pool.
    pub kv_blocks_total: u32,
    /// Sequences preempted in this step.
    pub num_preemptions: u32,
    /// Prompt tokens looked up in the prefix cache this step.
    pub prefix_cache_queries: u32,
    /// Prompt tokens found in the prefix cache this step.
    pub prefix_cache_hits: u32,
    /// Tokens computed in this step (prefill chunks plus decodes).
    pub num_batched_tokens: u32,
    /// Wall time of the step in seconds.
    pub step_seconds: f64,
}

/// Everything metrics need about a finished sequence. Durations in seconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestMetrics {
    /// The request the sequence belongs to; `index` tells its sequences apart.
    pub request_id: RequestId,
    /// Sequence index within the request.
    pub index: u32,
    /// Why it ended.
    pub reason: Option<FinishReason>,
    /// Length of the prompt after tokenization, the same for each of the
    /// request's sequences.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub generation_tokens: u32,
    /// Arrival to first scheduling.
    pub queue_seconds: f64,
    /// Arrival to first token.
    pub ttft_seconds: f64,
    /// First scheduling to first token.
    pub prefill_seconds: f64,
    /// First token to last token.
    pub decode_seconds: f64,
    /// Arrival to finish.
    pub e2e_seconds: f64,
    /// Gaps between consecutive tokens.
    pub inter_token_seconds: Vec<f64>,
    /// The request's `n`.
    pub n: u32,
    /// The request's `max_tokens`, when set.
    pub max_tokens: Option<u32>,
}

/// What the engine broadcasts to observers (metrics, logging).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EngineEvent {
    /// A request entered the waiting queue.
    RequestArrived {
        /// Id the request's later events carry.
        request_id: RequestId,
        /// Length of the prompt after tokenization.
        prompt_tokens: u32,
    },
    /// A step finished.
    Step(StepStats),
    /// A sequence ended: one event per sequence, not per request.
    SequenceFinished(RequestMetrics),
}
