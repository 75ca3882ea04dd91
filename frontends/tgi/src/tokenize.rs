//! TGI's `POST /tokenize` (`{inputs}` → `[{id,text,start,stop}]`), reached
//! through the shared `/tokenize` route when the body has `inputs`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use kiln_engine_api::EngineHandle;
use kiln_http::body::from_value;
use kiln_http::{ApiError, Dialect};
use kiln_protocol::TokenId;
use serde_json::{Value, json};

use crate::request::GenerateIn;

/// Whether a `/tokenize` body is TGI's (`inputs`).
pub fn claims(body: &Value) -> bool {
    body.get("inputs").is_some()
}

/// Each token with its byte range in `input`: a token whose text is found
/// at the current position gets that range; one that is not (a special token
/// the tokenizer added, a partial UTF-8 byte) gets an empty range there.
pub fn token_spans(input: &str, tokens: &[(TokenId, String)]) -> Vec<Value> {
    let mut pos = 0;
    tokens
        .iter()
        .map(|(id, piece)| {
            let (start, stop) = if !piece.is_empty() && input[pos..].starts_with(piece.as_str()) {
                (pos, pos + piece.len())
            } else {
                (pos, pos)
            };
            pos = stop;
            json!({"id": id, "text": &input[start..stop], "start": start, "stop": stop})
        })
        .collect()
}

/// The `/tokenize` answer.
pub fn tokenize(handle: &EngineHandle, body: &GenerateIn) -> Result<Value, ApiError> {
    let ids = handle
        .tokenize(&body.inputs, true)
        .map_err(|e| ApiError::from_engine(Dialect::Tgi, &e, 1))?;
    let tokens: Vec<(TokenId, String)> = ids
        .iter()
        .map(|&id| (id, handle.token_text(id).unwrap_or_default()))
        .collect();
    Ok(Value::Array(token_spans(&body.inputs, &tokens)))
}

/// Shared-route handler for a claimed body.
pub async fn tokenize_value(handle: EngineHandle, body: Value) -> Response {
    match from_value::<GenerateIn>(Dialect::Tgi, body).and_then(|b| tokenize(&handle, &b)) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_input() {
        let toks = vec![
            (0, "<s>".to_string()),
            (1, "Hello".into()),
            (2, " wo".into()),
            (3, "rld".into()),
        ];
        let spans = token_spans("Hello world", &toks);
        assert_eq!(
            spans[0],
            json!({"id": 0, "text": "", "start": 0, "stop": 0})
        );
        assert_eq!(
            spans[1],
            json!({"id": 1, "text": "Hello", "start": 0, "stop": 5})
        );
        assert_eq!(
            spans[3],
            json!({"id": 3, "text": "rld", "start": 8, "stop": 11})
        );
    }

    #[test]
    fn unmatched_pieces_are_empty_spans() {
        let toks = vec![(7, "\u{fffd}".to_string()), (8, "a".into())];
        let spans = token_spans("éa", &toks);
        assert_eq!(spans[0]["stop"], 0);
        assert_eq!(spans[1]["start"], 0);
    }
}
