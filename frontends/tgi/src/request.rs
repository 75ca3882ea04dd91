//! TGI request bodies.

use serde::Deserialize;
use serde_json::Value;

/// `parameters` of a generate request (every field nullable; clients send nulls).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Parameters {
    /// Candidates to pick the best from (only 1 is supported).
    pub best_of: Option<u32>,
    /// Softmax temperature; must be > 0.
    pub temperature: Option<f32>,
    /// HF-style repetition penalty; must be > 0.
    pub repetition_penalty: Option<f32>,
    /// OpenAI-style frequency penalty in [-2, 2].
    pub frequency_penalty: Option<f32>,
    /// Top-k; must be > 0.
    pub top_k: Option<i64>,
    /// Nucleus mass; must be in (0, 1).
    pub top_p: Option<f32>,
    /// Typical sampling mass; must be in (0, 1) (not supported by Kiln).
    pub typical_p: Option<f32>,
    /// Sample instead of greedy decoding.
    pub do_sample: Option<bool>,
    /// Most new tokens; must be > 0 (default: the rest of the context).
    pub max_new_tokens: Option<u32>,
    /// Prepend the prompt to `generated_text`.
    pub return_full_text: Option<bool>,
    /// Stop sequences (at most 4).
    pub stop: Option<Vec<String>>,
    /// Keep only the last N prompt tokens.
    pub truncate: Option<u32>,
    /// Watermarking (not supported).
    pub watermark: Option<bool>,
    /// Return `details`.
    pub details: Option<bool>,
    /// Return the prompt tokens in `details.prefill`.
    pub decoder_input_details: Option<bool>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Alternatives per token in `top_tokens`.
    pub top_n_tokens: Option<u32>,
    /// Grammar-constrained generation: `{type: json|json_schema|regex, value}`.
    pub grammar: Option<Value>,
    /// LoRA adapter (not supported).
    pub adapter_id: Option<String>,
}

/// `POST /generate`, `/generate_stream`, `/` and `/tokenize` bodies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerateIn {
    /// The prompt.
    pub inputs: String,
    /// Generation parameters; absent means TGI's defaults (`do_sample: true`).
    pub parameters: Option<Parameters>,
    /// Stream (only on `POST /`).
    pub stream: Option<bool>,
}
