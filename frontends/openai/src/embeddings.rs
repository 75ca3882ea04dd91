//! `POST /v1/embeddings`: `input` shaped as a completion's `prompt`,
//! `encoding_format` `float` or `base64` (little-endian f32), `dimensions`
//! only for models trained for shortened vectors, `usage` counting input
//! tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kiln_http::embed::{embed_inputs, embedding_spec, f32_base64};
use kiln_http::{ApiError, ApiJson, Dialect, OpenAiDialect};
use kiln_protocol::{Embedding, EmbeddingSpec, finish_embedding};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::convert::{parse_inputs, response_model};
use crate::routes::AppState;

/// The request body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name (any name is accepted: one model is served).
    pub model: Option<String>,
    /// A string, a list of strings, a token-id list or a list of token-id lists.
    pub input: Option<Value>,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    /// Keep the first N dimensions (matryoshka models only).
    pub dimensions: Option<u32>,
    /// Accepted and ignored.
    pub user: Option<String>,
    /// vLLM's truncation: -1 cuts each input to the model's limit.
    pub truncate_prompt_tokens: Option<i64>,
}

/// How vectors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Dialect::OpenAi, param, message)
}

/// `encoding_format`, `dimensions` and `truncate_prompt_tokens` checked
/// against the model.
pub fn options(
    req: &EmbeddingRequest,
    spec: &EmbeddingSpec,
) -> Result<(EncodingFormat, Option<u32>, bool), ApiError> {
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(bad(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got \"{other}\""),
            ));
        }
    };
    if let Some(d) = req.dimensions {
        spec.check_dimensions(d)
            .map_err(|e| bad("dimensions", e.to_string()))?;
    }
    let truncate = match req.truncate_prompt_tokens {
        None => false,
        Some(-1) => true,
        Some(other) => {
            return Err(bad(
                "truncate_prompt_tokens",
                format!(
                    "embeddings take `truncate_prompt_tokens` -1 (cut each input to the model's \
                     limit) or nothing, got {other}"
                ),
            ));
        }
    };
    Ok((format, req.dimensions, truncate))
}

/// The response body.
pub fn response(
    model: String,
    embeddings: Vec<Embedding>,
    spec: &EmbeddingSpec,
    format: EncodingFormat,
    dimensions: Option<u32>,
) -> Value {
    let tokens: u64 = embeddings.iter().map(|e| u64::from(e.prompt_tokens)).sum();
    // Shortened vectors are renormalized, as OpenAI's are.
    let normalize = spec.normalize || dimensions.is_some_and(|d| d != spec.dimensions);
    let data: Vec<Value> = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let v = finish_embedding(e.vector, dimensions, normalize);
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => json!(f32_base64(&v)),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    ApiJson(req, _): ApiJson<EmbeddingRequest, OpenAiDialect>,
) -> Response {
    match run(&st, req).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(st: &AppState, req: EmbeddingRequest) -> Result<Value, ApiError> {
    let spec = embedding_spec(&st.handle).map_err(|e| st.engine_error(&e))?;
    let (format, dimensions, truncate) = options(&req, &spec)?;
    let inputs = parse_inputs("input", req.input.as_ref())?;
    let fix = "send \"truncate_prompt_tokens\": -1";
    let embeddings = embed_inputs(&st.handle, &st.config, inputs, truncate, fix)
        .await
        .map_err(|e| st.engine_error(&e))?;
    let info = st.handle.info();
    let model = response_model(
        &info.served_model_names,
        &info.model_id,
        req.model.as_deref(),
    );
    Ok(response(model, embeddings, &spec, format, dimensions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::Pooling;

    fn spec(matryoshka: Vec<u32>) -> EmbeddingSpec {
        EmbeddingSpec {
            dimensions: 4,
            pooling: Pooling::Mean,
            normalize: false,
            matryoshka_dimensions: matryoshka,
            generates: false,
        }
    }

    #[test]
    fn dimensions_need_a_matryoshka_model() {
        let req = EmbeddingRequest {
            dimensions: Some(2),
            ..Default::default()
        };
        let e = options(&req, &spec(vec![])).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("matryoshka"), "{}", e.message);
        assert!(options(&req, &spec(vec![2, 4])).is_ok());
    }

    #[test]
    fn shortened_vectors_are_renormalized_and_usage_counts_tokens() {
        let e = |v: Vec<f32>, t| Embedding {
            vector: v,
            prompt_tokens: t,
        };
        let body = response(
            "m".into(),
            vec![
                e(vec![3.0, 4.0, 9.0, 9.0], 3),
                e(vec![0.0, 2.0, 1.0, 1.0], 2),
            ],
            &spec(vec![2]),
            EncodingFormat::Float,
            Some(2),
        );
        assert_eq!(body["data"][0]["embedding"], json!([0.6f32, 0.8f32]));
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 5, "total_tokens": 5})
        );
        let b64 = response(
            "m".into(),
            vec![e(vec![1.0], 1)],
            &spec(vec![]),
            EncodingFormat::Base64,
            None,
        );
        assert_eq!(b64["data"][0]["embedding"], "AACAPw==");
    }

    #[test]
    fn unknown_encodings_are_refused() {
        let req = EmbeddingRequest {
            encoding_format: Some("int8".into()),
            ..Default::default()
        };
        assert!(options(&req, &spec(vec![])).is_err());
    }
}
