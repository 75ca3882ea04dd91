//! JSON errors in the shape of the dialect that was called.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_protocol::EngineError;
use serde_json::{Value, json};

use crate::dialect::Dialect;

/// An error answered to a client, rendered in its dialect's shape:
/// OpenAI `{"error":{"message","type","param","code"}}`, TGI
/// `{"error","error_type"}`, Ollama `{"error"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Shape of the body.
    pub dialect: Dialect,
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The offending request field (OpenAI `param`).
    pub param: Option<String>,
    /// Overrides the type derived from the status (OpenAI `type`, TGI `error_type`).
    pub error_type: Option<&'static str>,
    /// Seconds for a `Retry-After` header (HTTP 429).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with the dialect's default type for `status`.
    pub fn new(dialect: Dialect, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            dialect,
            status,
            message: message.into(),
            param: None,
            error_type: None,
            retry_after: None,
        }
    }

    /// HTTP 400 about one request field.
    pub fn bad_request(dialect: Dialect, param: &str, message: impl Into<String>) -> Self {
        ApiError::new(dialect, StatusCode::BAD_REQUEST, message).with_param(param)
    }

    /// Names the offending field.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the type name explicitly.
    pub fn with_type(mut self, error_type: &'static str) -> Self {
        self.error_type = Some(error_type);
        self
    }

    /// Adds `Retry-After: seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Maps an engine error to the dialect's status and type. Client faults
    /// are 400 (TGI: 422 `validation`), overload is 429 with `Retry-After`,
    /// a stopped engine 503, internal failures 500 (TGI: 424 `generation`).
    pub fn from_engine(dialect: Dialect, error: &EngineError, retry_after_seconds: u32) -> Self {
        let message = error.to_string();
        let param = match error {
            EngineError::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        };
        let mut e = match (dialect, error) {
            (Dialect::Tgi, e) if e.is_client_error() => ApiError::new(
                dialect,
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Input validation error: {message}"),
            ),
            (_, e) if e.is_client_error() => {
                ApiError::new(dialect, StatusCode::BAD_REQUEST, message)
            }
            (_, EngineError::Overloaded { .. }) => {
                ApiError::new(dialect, StatusCode::TOO_MANY_REQUESTS, message)
                    .with_retry_after(retry_after_seconds)
            }
            (_, EngineError::EngineDead(_)) => {
                ApiError::new(dialect, StatusCode::SERVICE_UNAVAILABLE, message)
            }
            (Dialect::Tgi, _) => ApiError::new(
                dialect,
                StatusCode::FAILED_DEPENDENCY,
                format!("Request failed during generation: {message}"),
            ),
            _ => ApiError::new(dialect, StatusCode::INTERNAL_SERVER_ERROR, message),
        };
        e.param = param;
        e
    }

    /// The type name: explicit, else derived from the status.
    pub fn type_name(&self) -> &'static str {
        self.error_type.unwrap_or_else(|| match self.dialect {
            Dialect::OpenAi => openai_type(self.status),
            Dialect::Tgi => tgi_type(self.status),
            Dialect::Ollama => "",
        })
    }

    /// The JSON body (also what a stream carries when it fails mid-way).
    pub fn body(&self) -> Value {
        match self.dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.type_name(),
                "param": self.param,
                "code": self.status.as_u16(),
            }}),
            Dialect::Tgi => json!({"error": self.message, "error_type": self.type_name()}),
            Dialect::Ollama => json!({"error": self.message}),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        405 => "MethodNotAllowedError",
        413 => "RequestEntityTooLargeError",
        415 => "UnsupportedMediaTypeError",
        422 => "UnprocessableEntityError",
        429 => "RateLimitError",
        501 => "NotImplementedError",
        503 => "ServiceUnavailableError",
        _ => "InternalServerError",
    }
}

fn tgi_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "validation",
        401 => "authentication",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "overloaded",
        503 => "unhealthy",
        _ => "generation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape_has_integer_code_and_param() {
        let e = ApiError::bad_request(Dialect::OpenAi, "temperature", "bad");
        assert_eq!(
            e.body(),
            json!({"error":{"message":"bad","type":"BadRequestError","param":"temperature","code":400}})
        );
    }

    #[test]
    fn tgi_client_errors_are_validation_422() {
        let e = ApiError::from_engine(Dialect::Tgi, &EngineError::invalid("top_p", "nope"), 1);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.body(),
            json!({"error":"Input validation error: nope","error_type":"validation"})
        );
    }

    #[test]
    fn overload_is_429_with_retry_after() {
        let err = EngineError::Overloaded {
            waiting: 3,
            limit: 3,
        };
        for d in [Dialect::OpenAi, Dialect::Tgi, Dialect::Ollama] {
            let e = ApiError::from_engine(d, &err, 2);
            assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
            let r = e.into_response();
            assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        }
    }

    #[test]
    fn context_overflow_is_a_client_error_everywhere() {
        let err = EngineError::ContextLengthExceeded {
            prompt_tokens: 10,
            max_new_tokens: 5,
            max_model_len: 12,
        };
        assert_eq!(ApiError::from_engine(Dialect::OpenAi, &err, 1).status, 400);
        assert_eq!(ApiError::from_engine(Dialect::Ollama, &err, 1).status, 400);
        let tgi = ApiError::from_engine(Dialect::Tgi, &err, 1);
        assert_eq!(tgi.status, 422);
        assert!(tgi.message.contains("12") && tgi.message.contains("15"));
    }

    #[test]
    fn ollama_shape_is_a_bare_string() {
        let e = ApiError::new(
            Dialect::Ollama,
            StatusCode::NOT_FOUND,
            "model 'x' not found",
        );
        assert_eq!(e.body(), json!({"error":"model 'x' not found"}));
    }

    #[test]
    fn engine_failures_map_to_server_errors() {
        let dead = EngineError::EngineDead("gone".into());
        assert_eq!(ApiError::from_engine(Dialect::OpenAi, &dead, 1).status, 503);
        let backend = EngineError::Backend("oom".into());
        assert_eq!(
            ApiError::from_engine(Dialect::OpenAi, &backend, 1).status,
            500
        );
        assert_eq!(ApiError::from_engine(Dialect::Tgi, &backend, 1).status, 424);
    }
}
