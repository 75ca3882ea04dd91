//! `POST /api/embed` (`input`: a string or strings; `truncate`, default
//! true; `dimensions`; answers `embeddings`, always L2-normalized, with
//! `total_duration`, `load_duration` and `prompt_eval_count`) and the
//! older `POST /api/embeddings` (`prompt` → `embedding`, as pooled, not
//! normalized, as Ollama answers it).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_http::embed::embed_inputs;
use kiln_http::{ApiError, ApiJson, Dialect, OllamaDialect};
use kiln_protocol::{EmbeddingSpec, PromptInput, finish_embedding};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::convert::bad;
use crate::request::from_body;
use crate::routes::AppState;

/// `POST /api/embed`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EmbedIn {
    /// Model name.
    pub model: Option<String>,
    /// A string or a list of strings.
    pub input: Option<Value>,
    /// Cut inputs longer than the context (default true); false makes them an error.
    pub truncate: Option<bool>,
    /// Keep the first N dimensions (matryoshka models only).
    pub dimensions: Option<u32>,
    /// Accepted and ignored.
    pub options: Option<Value>,
    /// Accepted and ignored: the model stays loaded.
    pub keep_alive: Option<Value>,
}

/// `POST /api/embeddings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EmbeddingsIn {
    /// Model name.
    pub model: Option<String>,
    /// The text.
    pub prompt: Option<String>,
    /// Accepted and ignored.
    pub options: Option<Value>,
    /// Accepted and ignored.
    pub keep_alive: Option<Value>,
}

/// The texts of `input`.
pub fn parse_input(input: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        None | Some(Value::Null) => {
            return Err(bad("input is required: a string or a list of strings"));
        }
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("input must be a string or a list of strings"))?,
        Some(_) => return Err(bad("input must be a string or a list of strings")),
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(bad("input is empty: send at least one non-empty string"));
    }
    Ok(texts)
}

fn spec(st: &AppState, model: &str) -> Result<EmbeddingSpec, ApiError> {
    st.handle.info().embedding.clone().ok_or_else(|| {
        ApiError::new(
            Dialect::Ollama,
            StatusCode::BAD_REQUEST,
            format!("\"{model}\" does not support embeddings"),
        )
    })
}

fn nanos(since: Instant) -> u64 {
    since.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// `POST /api/embed`.
pub async fn embed(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    let started = Instant::now();
    match run_embed(&st, body, started).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run_embed(st: &AppState, body: Value, started: Instant) -> Result<Value, ApiError> {
    let req: EmbedIn = from_body(body)?;
    let model = st.resolve(req.model.as_deref()).await?;
    let spec = spec(st, &model)?;
    if let Some(d) = req.dimensions {
        spec.check_dimensions(d).map_err(|e| bad(e.to_string()))?;
    }
    let inputs = parse_input(req.input.as_ref())?
        .into_iter()
        .map(PromptInput::Text)
        .collect();
    let truncate = req.truncate.unwrap_or(true);
    let embeddings = embed_inputs(
        &st.handle,
        &st.config,
        inputs,
        truncate,
        "set \"truncate\": true",
    )
    .await
    .map_err(|e| st.engine_error(&e))?;
    let tokens: u64 = embeddings.iter().map(|e| u64::from(e.prompt_tokens)).sum();
    let vectors: Vec<Vec<f32>> = embeddings
        .into_iter()
        .map(|e| finish_embedding(e.vector, req.dimensions, true))
        .collect();
    Ok(json!({
        "model": model,
        "embeddings": vectors,
        "total_duration": nanos(started),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }))
}

/// `POST /api/embeddings`.
pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    match run_embeddings(&st, body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run_embeddings(st: &AppState, body: Value) -> Result<Value, ApiError> {
    let req: EmbeddingsIn = from_body(body)?;
    let model = st.resolve(req.model.as_deref()).await?;
    spec(st, &model)?;
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return Err(bad("prompt is empty: send the text to embed"));
    }
    let input = vec![PromptInput::Text(prompt)];
    let mut embeddings = embed_inputs(&st.handle, &st.config, input, true, "shorten it")
        .await
        .map_err(|e| st.engine_error(&e))?;
    Ok(json!({"embedding": embeddings.remove(0).vector}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_a_string_or_strings() {
        assert_eq!(parse_input(Some(&json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(
            parse_input(Some(&json!(["a", "b"]))).unwrap(),
            vec!["a", "b"]
        );
        for bad in [json!([]), json!(""), json!([1]), json!({"a": 1})] {
            let e = parse_input(Some(&bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(parse_input(None).is_err());
    }
}
