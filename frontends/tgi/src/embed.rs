//! `POST /embed`, as text-embeddings-inference serves it beside TGI:
//! `inputs` (a string or strings), `normalize` (default true), `truncate`
//! (default false), `dimensions`; the answer is a list of vectors.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_http::embed::{embed_inputs, embedding_spec};
use kiln_http::{ApiError, ApiJson, Dialect, TgiDialect};
use kiln_protocol::{PromptInput, finish_embedding};
use serde::Deserialize;
use serde_json::Value;

use crate::routes::AppState;

/// The request body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EmbedIn {
    /// A string or a list of strings.
    pub inputs: Option<Value>,
    /// Scale each vector to unit length (default true).
    pub normalize: Option<bool>,
    /// Cut inputs longer than the model's limit (default false: an error).
    pub truncate: Option<bool>,
    /// Keep the first N dimensions (matryoshka models only).
    pub dimensions: Option<u32>,
    /// Accepted and ignored (TEI's side to cut from is always the right).
    pub truncation_direction: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Dialect::Tgi, StatusCode::UNPROCESSABLE_ENTITY, message).with_type("validation")
}

/// The texts of `inputs`.
pub fn parse_inputs(inputs: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let shape = || invalid("`inputs` must be a string or a list of strings");
    let texts = match inputs {
        None | Some(Value::Null) => return Err(invalid("`inputs` is required")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(shape)?,
        Some(_) => return Err(shape()),
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(invalid(
            "`inputs` is empty: send at least one non-empty string",
        ));
    }
    Ok(texts)
}

/// `POST /embed`.
pub async fn embed(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<EmbedIn, TgiDialect>,
) -> Response {
    match run(&st, body).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(st: &AppState, req: EmbedIn) -> Result<Vec<Vec<f32>>, ApiError> {
    let spec = embedding_spec(&st.handle).map_err(|e| st.engine_error(&e))?;
    if let Some(d) = req.dimensions {
        spec.check_dimensions(d)
            .map_err(|e| invalid(e.to_string()))?;
    }
    let inputs = parse_inputs(req.inputs.as_ref())?
        .into_iter()
        .map(PromptInput::Text)
        .collect();
    let truncate = req.truncate.unwrap_or(false);
    let embeddings = embed_inputs(
        &st.handle,
        &st.config,
        inputs,
        truncate,
        "send \"truncate\": true",
    )
    .await
    .map_err(|e| st.engine_error(&e))?;
    let normalize = req.normalize.unwrap_or(true);
    Ok(embeddings
        .into_iter()
        .map(|e| finish_embedding(e.vector, req.dimensions, normalize))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_a_string_or_strings() {
        assert_eq!(parse_inputs(Some(&json!("a"))).unwrap(), vec!["a"]);
        let e = parse_inputs(Some(&json!([]))).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["error_type"], "validation");
        assert!(parse_inputs(Some(&json!([1, 2]))).is_err());
    }
}
