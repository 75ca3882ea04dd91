//! TGI's validation rules (HTTP 422 `validation`) and the conversion to an
//! engine request. Pure.

use kiln_http::{ApiError, Dialect};
use kiln_protocol::{
    GenerateRequest, MAX_TOP_LOGPROBS, PromptInput, SamplingParams, StoppingCriteria,
};

use crate::grammar::grammar_spec;
use crate::request::{GenerateIn, Parameters};

/// Most stop sequences per request (TGI's default `--max-stop-sequences`).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Largest `best_of` (TGI's default `--max-best-of`).
pub const MAX_BEST_OF: u32 = 2;

/// A TGI validation error (422) with TGI's message prefix.
pub fn validation(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Dialect::Tgi,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        format!("Input validation error: {message}"),
    )
    .with_type("validation")
}

/// Which route a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /generate`: one object, `return_full_text` defaults to false.
    Generate,
    /// `POST /generate_stream`: SSE, `return_full_text` defaults to false.
    GenerateStream,
    /// `POST /`: an array or SSE (`stream`), `return_full_text` defaults to true.
    Compat,
}

impl Route {
    /// Whether this request streams.
    pub fn streams(self, body_stream: Option<bool>) -> bool {
        match self {
            Route::Generate => false,
            Route::GenerateStream => true,
            Route::Compat => body_stream.unwrap_or(false),
        }
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct TgiPlan {
    /// What the engine runs (prompt as text; truncation applied later).
    pub request: GenerateRequest,
    /// Keep only the last N prompt tokens.
    pub truncate: Option<usize>,
    /// Return `details`.
    pub details: bool,
    /// Return the prompt tokens in `details.prefill`.
    pub decoder_input_details: bool,
    /// Prepend the prompt to `generated_text`.
    pub return_full_text: bool,
    /// Alternatives per token in `top_tokens` (0: none).
    pub top_n_tokens: u32,
    /// Seed reported in `details.seed` (null when greedy).
    pub seed: Option<u64>,
    /// SSE instead of JSON.
    pub stream: bool,
}

/// A seed for a sampling request without one (TGI draws one and reports it),
/// derived from a fresh id of the configured id source (random in service,
/// reproducible in tests).
pub fn seed_from_id(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn check_ranges(p: &Parameters) -> Result<(), ApiError> {
    if p.temperature.is_some_and(|t| t.is_nan() || t <= 0.0) {
        return Err(validation("`temperature` must be strictly positive"));
    }
    if p.repetition_penalty.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(validation("`repetition_penalty` must be strictly positive"));
    }
    if let Some(f) = p.frequency_penalty
        && !(-2.0..=2.0).contains(&f)
    {
        return Err(validation("`frequency_penalty` must be >= -2.0 and <= 2.0"));
    }
    if let Some(p) = p.top_p
        && !(p > 0.0 && p < 1.0)
    {
        return Err(validation("`top_p` must be > 0.0 and < 1.0"));
    }
    if let Some(t) = p.typical_p {
        if !(t > 0.0 && t < 1.0) {
            return Err(validation("`typical_p` must be > 0.0 and < 1.0"));
        }
        return Err(validation(
            "`typical_p` sampling is not supported by Kiln: remove it",
        ));
    }
    if let Some(k) = p.top_k
        && k <= 0
    {
        return Err(validation("`top_k` must be strictly positive"));
    }
    if p.max_new_tokens == Some(0) {
        return Err(validation("`max_new_tokens` must be strictly positive"));
    }
    let stops = p.stop.as_ref().map_or(0, Vec::len);
    if stops > MAX_STOP_SEQUENCES {
        return Err(validation(format!(
            "`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {stops}"
        )));
    }
    if p.stop.iter().flatten().any(String::is_empty) {
        return Err(validation("`stop` sequences must not be empty"));
    }
    if let Some(n) = p.top_n_tokens
        && n > MAX_TOP_LOGPROBS
    {
        return Err(validation(format!(
            "`top_n_tokens` must be >= 0 and <= {MAX_TOP_LOGPROBS}. Given: {n}"
        )));
    }
    Ok(())
}

/// TGI's `best_of` rules: at most [`MAX_BEST_OF`]; above 1 only when
/// sampling, without a `seed` and without streaming.
fn check_best_of(p: &Parameters, stream: bool, sampling: bool) -> Result<u32, ApiError> {
    let best_of = p.best_of.unwrap_or(1);
    if best_of == 0 || best_of > MAX_BEST_OF {
        return Err(validation(format!(
            "`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}"
        )));
    }
    if best_of > 1 {
        if stream {
            return Err(validation(
                "`best_of` != 1 is not supported when streaming tokens",
            ));
        }
        if !sampling {
            return Err(validation("you must use sampling when `best_of` is > 1"));
        }
        if p.seed.is_some() {
            return Err(validation("`seed` must not be set when `best_of` > 1"));
        }
    }
    Ok(best_of)
}

fn check_unsupported(p: &Parameters, stream: bool, max_input_tokens: u32) -> Result<(), ApiError> {
    if stream && p.decoder_input_details == Some(true) {
        return Err(validation(
            "`decoder_input_details` == true is not supported when streaming tokens",
        ));
    }
    if let Some(t) = p.truncate
        && (t == 0 || t > max_input_tokens)
    {
        return Err(validation(format!(
            "`truncate` must be strictly positive and less than {max_input_tokens}. Given: {t}"
        )));
    }
    if p.watermark == Some(true) {
        return Err(validation(
            "`watermark` is not supported by Kiln: remove it",
        ));
    }
    if p.adapter_id.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(validation(
            "LoRA adapters (`adapter_id`) are not supported by Kiln",
        ));
    }
    Ok(())
}

/// Whether TGI would sample: `do_sample`, or any warper away from its default.
pub fn samples(p: &Parameters, defaults_applied: bool) -> bool {
    p.do_sample.unwrap_or(defaults_applied)
        || p.temperature.is_some_and(|t| t != 1.0)
        || p.top_k.is_some_and(|k| k > 0)
        || p.top_p.is_some_and(|t| t < 1.0)
}

/// Limits and defaults [`plan`] needs from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanContext {
    /// Which route the body came through.
    pub route: Route,
    /// Bound of `truncate` (TGI's `max_input_tokens`).
    pub max_input_tokens: u32,
    /// Seed used when sampling without one.
    pub fallback_seed: u64,
}

/// Validates a body and builds the engine request.
pub fn plan(body: &GenerateIn, ctx: PlanContext) -> Result<TgiPlan, ApiError> {
    let PlanContext {
        route,
        max_input_tokens,
        fallback_seed,
    } = ctx;
    if body.inputs.is_empty() {
        return Err(validation("`inputs` cannot be empty"));
    }
    let stream = route.streams(body.stream);
    let defaults_applied = body.parameters.is_none();
    let p = body.parameters.clone().unwrap_or_default();
    check_ranges(&p)?;
    check_unsupported(&p, stream, max_input_tokens)?;
    let sampling_on = samples(&p, defaults_applied);
    let best_of = check_best_of(&p, stream, sampling_on)?;
    let seed = sampling_on.then(|| p.seed.unwrap_or(fallback_seed));
    let details = p.details.unwrap_or(false);
    let decoder_input_details = p.decoder_input_details.unwrap_or(false);
    let top_n_tokens = p.top_n_tokens.unwrap_or(0);
    // `best_of` ranks its sequences by their tokens' log-probabilities.
    let wants_logprobs =
        details || decoder_input_details || stream || top_n_tokens > 0 || best_of > 1;
    let sampling = SamplingParams {
        n: best_of,
        temperature: if sampling_on {
            p.temperature.unwrap_or(1.0)
        } else {
            0.0
        },
        top_k: p.top_k.map_or(0, |k| u32::try_from(k).unwrap_or(u32::MAX)),
        top_p: p.top_p.unwrap_or(1.0),
        repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
        seed,
        logprobs: wants_logprobs.then_some(top_n_tokens),
        prompt_logprobs: decoder_input_details.then_some(0),
        structured: grammar_spec(p.grammar.as_ref())?,
        ..SamplingParams::default()
    };
    let stopping = StoppingCriteria {
        max_tokens: p.max_new_tokens,
        stop: p.stop.clone().unwrap_or_default(),
        include_stop_str_in_output: true,
        ..StoppingCriteria::default()
    };
    Ok(TgiPlan {
        request: GenerateRequest {
            prompt: PromptInput::Text(body.inputs.clone()),
            sampling,
            stopping,
            add_special_tokens: true,
            tag: None,
        },
        truncate: p.truncate.map(|t| t as usize),
        details,
        decoder_input_details,
        return_full_text: p.return_full_text.unwrap_or(route == Route::Compat),
        top_n_tokens,
        seed,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> GenerateIn {
        serde_json::from_value(v).unwrap()
    }

    fn plan(b: &GenerateIn, route: Route, max_input_tokens: u32) -> Result<TgiPlan, ApiError> {
        super::plan(
            b,
            PlanContext {
                route,
                max_input_tokens,
                fallback_seed: 99,
            },
        )
    }

    #[test]
    fn absent_parameters_mean_sampling() {
        let p = plan(&body(json!({"inputs": "hi"})), Route::Generate, 100).unwrap();
        assert_eq!(p.request.sampling.temperature, 1.0);
        assert_eq!(p.seed, Some(99));
        assert!(!p.return_full_text);
        let compat = plan(&body(json!({"inputs": "hi"})), Route::Compat, 100).unwrap();
        assert!(compat.return_full_text && !compat.stream);
    }

    #[test]
    fn present_parameters_default_to_greedy() {
        let p = plan(
            &body(json!({"inputs": "hi", "parameters": {"max_new_tokens": 5}})),
            Route::Generate,
            100,
        )
        .unwrap();
        assert_eq!(p.request.sampling.temperature, 0.0);
        assert_eq!(p.seed, None);
        assert_eq!(p.request.stopping.max_tokens, Some(5));
        assert!(p.request.stopping.include_stop_str_in_output);
        let p = plan(
            &body(json!({"inputs": "hi", "parameters": {"top_k": 5, "seed": 3}})),
            Route::Generate,
            100,
        )
        .unwrap();
        assert_eq!((p.request.sampling.top_k, p.seed), (5, Some(3)));
    }

    #[test]
    fn best_of_samples_that_many_sequences_with_logprobs() {
        let p = plan(
            &body(json!({"inputs": "hi", "parameters": {"best_of": 2, "do_sample": true}})),
            Route::Generate,
            100,
        )
        .unwrap();
        assert_eq!(p.request.sampling.n, 2);
        assert_eq!(p.request.sampling.logprobs, Some(0));
    }

    #[test]
    fn tgi_rejects_what_vllm_accepts() {
        for params in [
            json!({"top_p": 1.0}),
            json!({"top_p": 0.0}),
            json!({"temperature": 0.0}),
            json!({"top_k": 0}),
            json!({"max_new_tokens": 0}),
            json!({"repetition_penalty": 0.0}),
            json!({"frequency_penalty": 3.0}),
            json!({"typical_p": 0.5}),
            json!({"stop": ["a", "b", "c", "d", "e"]}),
            json!({"best_of": 2}),
            json!({"best_of": 3, "do_sample": true}),
            json!({"best_of": 2, "do_sample": true, "seed": 1}),
            json!({"truncate": 0}),
            json!({"truncate": 1000}),
            json!({"watermark": true}),
            json!({"grammar": {"type": "xml", "value": {}}}),
            json!({"top_n_tokens": 50}),
            json!({"adapter_id": "x"}),
        ] {
            let e = plan(
                &body(json!({"inputs": "hi", "parameters": params})),
                Route::Generate,
                100,
            )
            .unwrap_err();
            assert_eq!(e.status, 422, "{params}");
            assert_eq!(e.body()["error_type"], "validation");
        }
    }

    #[test]
    fn streaming_rules() {
        let b = body(json!({"inputs": "hi", "parameters": {"decoder_input_details": true}}));
        assert!(plan(&b, Route::GenerateStream, 100).is_err());
        assert!(plan(&b, Route::Generate, 100).is_ok());
        let b = body(json!({"inputs": "hi", "stream": true}));
        assert!(plan(&b, Route::Compat, 100).unwrap().stream);
        assert!(!plan(&b, Route::Generate, 100).unwrap().stream);
    }

    #[test]
    fn empty_inputs() {
        let e = plan(&body(json!({"inputs": ""})), Route::Generate, 100).unwrap_err();
        assert!(e.message.contains("`inputs` cannot be empty"));
    }
}
