use serde::{Deserialize, Serialize};

use crate::{EngineError, StructuredOutput, TokenId};

/// The prompt of a request, before tokenization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PromptInput {
    /// Raw text, tokenized by the engine.
    Text(String),
    /// Token ids, used as given.
    TokenIds(Vec<TokenId>),
}

impl Default for PromptInput {
    fn default() -> Self {
        PromptInput::Text(String::new())
    }
}

/// One message of a chat conversation, as chat templates expect it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

/// How to pick the next token from the model's distribution.
///
/// Processing order (as in vLLM): `logit_bias` → `min_tokens` masking →
/// repetition / presence / frequency penalties → temperature → top-k → top-p →
/// min-p → draw. Log-probabilities are reported from the raw model
/// distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Number of sequences to generate from the prompt (they share its KV blocks).
    pub n: u32,
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probability mass reaches `top_p`; `1.0` disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the top probability; `0.0` disables.
    pub min_p: f32,
    /// HF-style multiplicative penalty on tokens seen in prompt or output; `1.0` disables.
    pub repetition_penalty: f32,
    /// OpenAI-style additive penalty on tokens present in the output; `0.0` disables.
    pub presence_penalty: f32,
    /// OpenAI-style penalty proportional to a token's count in the output; `0.0` disables.
    pub frequency_penalty: f32,
    /// Additive biases applied to logits: `(token id, bias)`.
    pub logit_bias: Vec<(TokenId, f32)>,
    /// Per-request seed: the same seed gives the same output whatever else is batched.
    pub seed: Option<u64>,
    /// Report the sampled token's log-probability plus this many top alternatives
    /// (`Some(0)`: only the sampled token's); `None`: no log-probabilities.
    pub logprobs: Option<u32>,
    /// Report each prompt token's log-probability given the tokens before
    /// it, plus this many top alternatives per position (`Some(0)`: only the
    /// prompt token's). Such a request computes its whole prompt (no prefix
    /// cache), and its logits rows cross back to the host.
    #[serde(default)]
    pub prompt_logprobs: Option<u32>,
    /// What the output must conform to; each draw is masked to the tokens
    /// that keep it valid.
    #[serde(default)]
    pub structured: Option<StructuredOutput>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            n: 1,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
            prompt_logprobs: None,
            structured: None,
        }
    }
}

/// Largest `n` a request may ask for.
pub const MAX_N: u32 = 128;
/// Largest number of top alternatives reported per token.
pub const MAX_TOP_LOGPROBS: u32 = 20;

impl SamplingParams {
    /// Greedy decoding (temperature 0), everything else default.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// True when the next token is the argmax of the processed logits.
    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-5 || self.top_k == 1
    }

    /// Checks every field's range; the error names the parameter.
    pub fn validate(&self) -> Result<(), EngineError> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(EngineError::invalid(
                    name,
                    format!("`{name}` must be a finite number"),
                ))
            }
        };
        if self.n == 0 || self.n > MAX_N {
            return Err(EngineError::invalid(
                "n",
                format!("`n` must be between 1 and {MAX_N}, got {}", self.n),
            ));
        }
        finite("temperature", self.temperature)?;
        if self.temperature < 0.0 {
            return Err(EngineError::invalid(
                "temperature",
                format!(
                    "`temperature` must be non-negative, got {}",
                    self.temperature
                ),
            ));
        }
        finite("top_p", self.top_p)?;
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::invalid(
                "top_p",
                format!("`top_p` must be in (0, 1], got {}", self.top_p),
            ));
        }
        finite("min_p", self.min_p)?;
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(EngineError::invalid(
                "min_p",
                format!("`min_p` must be in [0, 1], got {}", self.min_p),
            ));
        }
        finite("repetition_penalty", self.repetition_penalty)?;
        if self.repetition_penalty <= 0.0 {
            return Err(EngineError::invalid(
                "repetition_penalty",
                format!(
                    "`repetition_penalty` must be positive, got {}",
                    self.repetition_penalty
                ),
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            finite(name, v)?;
            if !(-2.0..=2.0).contains(&v) {
                return Err(EngineError::invalid(
                    name,
                    format!("`{name}` must be in [-2, 2], got {v}"),
                ));
            }
        }
        for &(_, bias) in &self.logit_bias {
            finite("logit_bias", bias)?;
            if !(-100.0..=100.0).contains(&bias) {
                return Err(EngineError::invalid(
                    "logit_bias",
                    format!("`logit_bias` values must be in [-100, 100], got {bias}"),
                ));
            }
        }
        for (name, k) in [
            ("logprobs", self.logprobs),
            ("prompt_logprobs", self.prompt_logprobs),
        ] {
            if let Some(k) = k
                && k > MAX_TOP_LOGPROBS
            {
                return Err(EngineError::invalid(
                    name,
                    format!("at most {MAX_TOP_LOGPROBS} top log-probabilities per token, got {k}"),
                ));
            }
        }
        Ok(())
    }
}

/// When a sequence stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoppingCriteria {
    /// Most tokens to generate; `None` means up to the context length.
    pub max_tokens: Option<u32>,
    /// EOS and stop tokens are ignored until this many tokens were generated.
    pub min_tokens: u32,
    /// Stop strings: matched across token boundaries, never emitted (unless
    /// `include_stop_str_in_output`).
    pub stop: Vec<String>,
    /// Token ids that end the sequence like EOS does.
    pub stop_token_ids: Vec<TokenId>,
    /// Keep generating past EOS.
    pub ignore_eos: bool,
    /// Emit the matched stop string as part of the output.
    pub include_stop_str_in_output: bool,
    /// Leave special tokens out of the output text.
    pub skip_special_tokens: bool,
}

impl Default for StoppingCriteria {
    fn default() -> Self {
        StoppingCriteria {
            max_tokens: None,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            include_stop_str_in_output: false,
            skip_special_tokens: true,
        }
    }
}

impl StoppingCriteria {
    /// Checks ranges; the error names the parameter.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.max_tokens == Some(0) {
            return Err(EngineError::invalid(
                "max_tokens",
                "`max_tokens` must be at least 1",
            ));
        }
        if let Some(max) = self.max_tokens
            && self.min_tokens > max
        {
            return Err(EngineError::invalid(
                "min_tokens",
                format!(
                    "`min_tokens` ({}) must not exceed `max_tokens` ({max})",
                    self.min_tokens
                ),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(EngineError::invalid(
                "stop",
                "stop strings must not be empty",
            ));
        }
        Ok(())
    }
}

/// A generation request as the engine accepts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The prompt (chat templates are rendered before this point).
    pub prompt: PromptInput,
    /// How to choose tokens.
    pub sampling: SamplingParams,
    /// When to stop.
    pub stopping: StoppingCriteria,
    /// Whether tokenizing a text prompt adds the model's special tokens (BOS).
    pub add_special_tokens: bool,
    /// A caller-chosen label that appears in every log line about the request.
    pub tag: Option<String>,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: PromptInput::default(),
            sampling: SamplingParams::default(),
            stopping: StoppingCriteria::default(),
            add_special_tokens: true,
            tag: None,
        }
    }
}
