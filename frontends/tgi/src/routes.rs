//! Thin handlers over [`crate::validate`] and [`crate::response`].

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use kiln_http::stream::Framing;
use kiln_http::{
    ApiError, ApiJson, Collected, DialectState, RequestId, TgiDialect, collect, rank_by_likelihood,
    stream_response,
};
use kiln_protocol::PromptInput;
use serde_json::{Value, json};

use crate::request::GenerateIn;
use crate::response::{Prefill, ResponseOptions, TgiStream, generate_response};
use crate::validate::{self, MAX_BEST_OF, MAX_STOP_SEQUENCES, Route};

/// What every handler holds.
pub type AppState = DialectState<TgiDialect>;

/// `POST /generate`.
pub async fn generate(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(body, _): ApiJson<GenerateIn, TgiDialect>,
) -> Response {
    respond(run(&st, body, Route::Generate, rid).await)
}

/// `POST /generate_stream`.
pub async fn generate_stream(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(body, _): ApiJson<GenerateIn, TgiDialect>,
) -> Response {
    respond(run(&st, body, Route::GenerateStream, rid).await)
}

/// `POST /`: an array of one response, or SSE with `stream: true`.
pub async fn compat(
    State(st): State<Arc<AppState>>,
    rid: Option<Extension<RequestId>>,
    ApiJson(body, _): ApiJson<GenerateIn, TgiDialect>,
) -> Response {
    respond(run(&st, body, Route::Compat, rid).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// TGI's `max_input_tokens`: one less than the context.
pub fn max_input_tokens(max_model_len: u32) -> u32 {
    max_model_len.saturating_sub(1)
}

fn truncated_prompt(st: &AppState, inputs: &str, keep: usize) -> Result<PromptInput, ApiError> {
    let ids = st
        .handle
        .tokenize(inputs, true)
        .map_err(|e| st.engine_error(&e))?;
    let start = ids.len().saturating_sub(keep);
    Ok(PromptInput::TokenIds(ids[start..].to_vec()))
}

async fn run(
    st: &AppState,
    body: GenerateIn,
    route: Route,
    rid: Option<Extension<RequestId>>,
) -> Result<Response, ApiError> {
    let ctx = validate::PlanContext {
        route,
        max_input_tokens: max_input_tokens(st.handle.info().max_model_len),
        fallback_seed: validate::seed_from_id(&st.config.ids.next_id()),
    };
    let plan = validate::plan(&body, ctx)?;
    let mut request = plan.request.clone();
    request.tag = rid.map(|Extension(r)| r.0);
    if let Some(keep) = plan.truncate {
        request.prompt = truncated_prompt(st, &body.inputs, keep)?;
    }
    let stream = st.submit(request)?;
    let options = ResponseOptions {
        details: plan.details,
        decoder_input_details: plan.decoder_input_details,
        return_full_text: plan.return_full_text,
        top_n_tokens: plan.top_n_tokens,
        seed: plan.seed,
        inputs: body.inputs,
    };
    let handle = st.handle.clone();
    if plan.stream {
        let input_length = stream.prompt_token_ids().len() as u32;
        let is_special = Box::new(move |id| handle.is_special(id));
        return Ok(stream_response(
            stream,
            TgiStream::new(options, input_length, is_special),
            Framing::Sse,
        ));
    }
    let prefill = Prefill(
        stream
            .prompt_token_ids()
            .iter()
            .map(|&id| (id, handle.token_text(id).unwrap_or_default()))
            .collect(),
    );
    let mut collected = collect(stream, st.config.clock.as_ref())
        .await
        .map_err(|e| st.engine_error(&e))?;
    rank_by_likelihood(&mut collected.sequences);
    let value = generate_response(&collected, &options, &prefill, &|id| handle.is_special(id))?;
    let headers = timing_headers(&collected, &st.handle.info().backend);
    Ok(match route {
        Route::Compat => (headers, Json(json!([value]))).into_response(),
        _ => (headers, Json(value)).into_response(),
    })
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// `x-compute-type`, `x-*-time` (ms), `x-time-per-token` (ms), `x-prompt-tokens`, `x-generated-tokens`.
pub fn timing_headers(c: &Collected, backend: &str) -> HeaderMap {
    let generated: u32 = c
        .sequences
        .iter()
        .map(|s| s.finished.usage.completion_tokens)
        .sum();
    let t = &c.timings;
    let per_token = t
        .total_duration()
        .checked_div(generated.max(1))
        .unwrap_or_default();
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("x-compute-type", backend.to_string());
    put("x-total-time", millis(t.total_duration()));
    put("x-validation-time", "0".into());
    put("x-queue-time", millis(t.prompt_duration()));
    put("x-inference-time", millis(t.generation_duration()));
    put("x-time-per-token", millis(per_token));
    put("x-prompt-tokens", c.prompt_token_ids.len().to_string());
    put("x-generated-tokens", generated.to_string());
    h
}

/// The `GET /info` body.
pub fn info_json(info: &kiln_engine_api::EngineInfo, max_concurrent_requests: u32) -> Value {
    json!({
        "model_id": info.model_id,
        "model_sha": null,
        "model_dtype": info.dtype,
        "model_device_type": info.backend,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": max_concurrent_requests,
        "max_best_of": MAX_BEST_OF,
        "max_stop_sequences": MAX_STOP_SEQUENCES,
        "max_input_tokens": max_input_tokens(info.max_model_len),
        "max_total_tokens": info.max_model_len,
        "validation_workers": 1,
        "max_client_batch_size": 1,
        "router": "kiln",
        "version": info.version,
        "sha": null,
        "docker_label": null,
    })
}

/// `GET /info`.
pub async fn info(State(st): State<Arc<AppState>>) -> Json<Value> {
    let info = st.handle.info();
    let waiting = kiln_http::admission::waiting_limit(&st.handle, &st.config).unwrap_or(0);
    Json(info_json(info, info.max_num_seqs.saturating_add(waiting)))
}
