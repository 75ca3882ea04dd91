//! Reading JSON request bodies with the dialect's content-type rule, size
//! limit and error shapes.

use std::marker::PhantomData;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::DEFAULT_BODY_LIMIT_BYTES;
use crate::dialect::{ContentTypeRule, Dialect};
use crate::error::ApiError;

/// The request body limit in bytes, put into request extensions by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// A marker type naming a dialect at compile time (for [`ApiJson`]).
pub trait DialectTag: Send + Sync + 'static {
    /// Whose error shape rejections take.
    const DIALECT: Dialect;
}

/// Marker for [`Dialect::OpenAi`].
#[derive(Debug)]
pub struct OpenAiDialect;
/// Marker for [`Dialect::Tgi`].
#[derive(Debug)]
pub struct TgiDialect;
/// Marker for [`Dialect::Ollama`].
#[derive(Debug)]
pub struct OllamaDialect;

impl DialectTag for OpenAiDialect {
    const DIALECT: Dialect = Dialect::OpenAi;
}
impl DialectTag for TgiDialect {
    const DIALECT: Dialect = Dialect::Tgi;
}
impl DialectTag for OllamaDialect {
    const DIALECT: Dialect = Dialect::Ollama;
}

/// A JSON body extractor whose rejections (wrong content type, too large,
/// empty, bad JSON, wrong field types) come in dialect `D`'s error shape.
#[derive(Debug)]
pub struct ApiJson<T, D>(pub T, pub PhantomData<D>);

impl<T, D> ApiJson<T, D> {
    /// The parsed body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T, D, S> FromRequest<S> for ApiJson<T, D>
where
    T: DeserializeOwned,
    D: DialectTag,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT_BYTES, |l| l.0);
        let (parts, body) = req.into_parts();
        let value = read_json_value(D::DIALECT, &parts.headers, body, limit).await?;
        Ok(ApiJson(from_value(D::DIALECT, value)?, PhantomData))
    }
}

/// Checks the content type, reads at most `limit` bytes and parses them as JSON.
pub async fn read_json_value(
    dialect: Dialect,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Value, ApiError> {
    check_content_type(dialect, headers)?;
    let bytes = read_limited(dialect, headers, body, limit).await?;
    parse_json(dialect, &bytes)
}

/// Rejects a content type the dialect does not read as JSON.
pub fn check_content_type(dialect: Dialect, headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match dialect.content_type_rule() {
        ContentTypeRule::Any => Ok(()),
        _ if content_type.is_some_and(is_json_media_type) => Ok(()),
        ContentTypeRule::JsonOr400 => Err(ApiError::new(
            dialect,
            StatusCode::BAD_REQUEST,
            format!(
                "Unsupported Media Type: only 'application/json' is allowed, got {}",
                content_type.map_or("no Content-Type".into(), |c| format!("'{c}'"))
            ),
        )),
        ContentTypeRule::JsonOr415 => Err(ApiError::new(
            dialect,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        )),
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large(dialect: Dialect, limit: usize) -> ApiError {
    ApiError::new(
        dialect,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

async fn read_limited(
    dialect: Dialect,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(dialect, limit));
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                dialect,
                StatusCode::BAD_REQUEST,
                format!("failed to read the request body: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(dialect, limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Parses a body as JSON; an empty or malformed body is the dialect's error.
pub fn parse_json(dialect: Dialect, bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let message = match dialect {
            Dialect::Ollama => "missing request body".to_string(),
            _ => "the request body is empty: send a JSON object".to_string(),
        };
        return Err(body_error(dialect, message));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let message = match dialect {
            Dialect::OpenAi => format!("Invalid JSON in the request body: {e}"),
            Dialect::Tgi => format!("Failed to parse the request body as JSON: {e}"),
            Dialect::Ollama => format!("invalid JSON in the request body: {e}"),
        };
        body_error(dialect, message)
    })
}

/// Deserializes a parsed body into `T`; a wrong type or a missing field is
/// the dialect's error naming the field's dotted path.
pub fn from_value<T: DeserializeOwned>(dialect: Dialect, value: Value) -> Result<T, ApiError> {
    let object = value.as_object().cloned();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        if path == "."
            && let Some(key) = object
                .as_ref()
                .and_then(|o| flattened_culprit::<T>(o, &inner.to_string()))
        {
            path = key;
        }
        let located = if path == "." {
            inner.to_string()
        } else {
            format!("`{path}`: {inner}")
        };
        let message = match dialect {
            Dialect::OpenAi => format!("Invalid request: {located}"),
            Dialect::Tgi => {
                format!("Failed to deserialize the JSON body into the target type: {located}")
            }
            Dialect::Ollama => format!("invalid request: {located}"),
        };
        let error = body_error(dialect, message);
        match (path.as_str(), missing_field(&located)) {
            (".", Some(field)) => error.with_param(field),
            (".", None) => error,
            (_, Some(field)) => error.with_param(format!("{path}.{field}")),
            (_, None) => error.with_param(path),
        }
    })
}

/// serde reports an error inside a `#[serde(flatten)]` field at the root
/// (`.`), without the key. The key at fault is the one whose removal lets
/// `T` deserialize, or changes the error to anything but that key missing.
/// Runs on the error path only, once per top-level key.
fn flattened_culprit<T: DeserializeOwned>(
    object: &serde_json::Map<String, Value>,
    message: &str,
) -> Option<String> {
    if message.starts_with("missing field `") {
        return None;
    }
    object.keys().find_map(|key| {
        let mut without = object.clone();
        without.remove(key);
        let blamed = match serde_json::from_value::<T>(Value::Object(without)) {
            Ok(_) => true,
            Err(e) => {
                let other = e.to_string();
                other != message && missing_field(&other) != Some(key.as_str())
            }
        };
        blamed.then(|| key.clone())
    })
}

/// The field name of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("missing field `")? + "missing field `".len()..];
    rest.split('`').next()
}

/// Body errors: 400, except TGI's 422 `validation`.
fn body_error(dialect: Dialect, message: String) -> ApiError {
    let status = match dialect {
        Dialect::Tgi => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(dialect, status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(c) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.api+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
    }

    #[test]
    fn content_type_rules_per_dialect() {
        let form = headers(Some("application/x-www-form-urlencoded"));
        assert_eq!(
            check_content_type(Dialect::OpenAi, &form)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_content_type(Dialect::Tgi, &form).unwrap_err().status,
            415
        );
        assert!(check_content_type(Dialect::Ollama, &form).is_ok());
        assert_eq!(
            check_content_type(Dialect::OpenAi, &headers(None))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn bad_json_per_dialect() {
        assert_eq!(parse_json(Dialect::OpenAi, b"{").unwrap_err().status, 400);
        assert_eq!(parse_json(Dialect::Tgi, b"{").unwrap_err().status, 422);
        let e = parse_json(Dialect::Ollama, b"").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "missing request body")
        );
        assert!(parse_json(Dialect::OpenAi, b"\xff\xfe").is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Req {
        n: u32,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        x: f32,
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = from_value::<Req>(
            Dialect::OpenAi,
            serde_json::json!({"n": 1, "inner": {"x": "a"}}),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("inner.x"));
        assert!(e.message.contains("`inner.x`"), "{}", e.message);
        let missing = from_value::<Req>(Dialect::Tgi, serde_json::json!({})).unwrap_err();
        assert_eq!(missing.status, 422);
        assert!(
            missing.message.contains("missing field `n`"),
            "{}",
            missing.message
        );
        assert_eq!(missing.param.as_deref(), Some("n"));
        let nested = from_value::<Req>(Dialect::Ollama, serde_json::json!({"n": 1, "inner": {}}))
            .unwrap_err();
        assert_eq!(nested.param.as_deref(), Some("inner.x"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        n: u32,
        #[serde(flatten)]
        shared: Shared,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shared {
        temperature: Option<f32>,
        top_p: Option<f32>,
    }

    #[test]
    fn wrong_types_inside_flattened_fields_name_the_key() {
        let body = serde_json::json!({"n": 1, "temperature": 0.5, "top_p": "high"});
        let e = from_value::<Outer>(Dialect::OpenAi, body).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_p"));
        assert!(e.message.contains("`top_p`: invalid type"), "{}", e.message);
        let missing = from_value::<Outer>(Dialect::OpenAi, serde_json::json!({"top_p": 1.0}));
        assert_eq!(missing.unwrap_err().param.as_deref(), Some("n"));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let h = headers(Some("application/json"));
        let e = read_json_value(Dialect::OpenAi, &h, Body::from(vec![b' '; 100]), 10)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = read_json_value(Dialect::OpenAi, &h, Body::from("{}"), 10).await;
        assert_eq!(ok.unwrap(), serde_json::json!({}));
    }
}
