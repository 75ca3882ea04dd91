//! A minimal OpenAI-compatible client for benchmarking: model discovery,
//! token counting through the server's tokenize route, and one streaming
//! `/v1/completions` request timed chunk by chunk.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where a server counts tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizeRoute {
    /// vLLM/Kiln: `POST /tokenize {"model", "prompt"}` → `{"count"}` or `{"tokens"}`.
    Tokenize,
    /// llama.cpp's server: `POST /tokenize {"content"}` → `{"tokens"}`.
    TokenizeContent,
    /// llama-cpp-python: `POST /extras/tokenize/count {"input"}` → `{"count"}`.
    ExtrasCount,
}

impl TokenizeRoute {
    /// Every route, in the order they are tried.
    pub const ALL: [TokenizeRoute; 3] = [
        TokenizeRoute::Tokenize,
        TokenizeRoute::TokenizeContent,
        TokenizeRoute::ExtrasCount,
    ];

    /// Path appended to the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            TokenizeRoute::Tokenize | TokenizeRoute::TokenizeContent => "/tokenize",
            TokenizeRoute::ExtrasCount => "/extras/tokenize/count",
        }
    }

    fn body(self, model: &str, text: &str) -> Value {
        match self {
            TokenizeRoute::Tokenize => json!({"model": model, "prompt": text}),
            TokenizeRoute::TokenizeContent => json!({"content": text}),
            TokenizeRoute::ExtrasCount => json!({"model": model, "input": text}),
        }
    }
}

/// The measurements of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRecord {
    /// Whether it completed.
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// Prompt tokens (server-reported when it said, else the planned count).
    pub input_tokens: usize,
    /// Generated tokens (server-reported usage, else content chunks).
    pub output_tokens: usize,
    /// Tokens asked for (`max_tokens`).
    pub requested_tokens: usize,
    /// Seconds to the first content chunk.
    pub ttft: Option<f64>,
    /// Seconds between consecutive content chunks.
    pub itl: Vec<f64>,
    /// Seconds from sending to the end of the stream.
    pub e2e: f64,
}

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchRequest {
    /// Prompt text.
    pub prompt: String,
    /// Planned prompt tokens.
    pub input_tokens: usize,
    /// `max_tokens` (sent with `ignore_eos` and an equal `min_tokens`, for servers without `ignore_eos`).
    pub output_len: usize,
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    /// Fields added to every completion body.
    extra_body: serde_json::Map<String, Value>,
}

/// Failures talking to the server outside a measured request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct ClientError {
    /// Full URL of the request: the base URL plus the route's path.
    pub url: String,
    /// What failed.
    pub reason: String,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8000`), each call bounded by `timeout`.
    pub fn new(base: &str, api_key: Option<String>, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(1024)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            agent,
            extra_body: serde_json::Map::new(),
        }
    }

    /// Adds `fields` to every completion request's body.
    pub fn with_extra_body(mut self, fields: serde_json::Map<String, Value>) -> Client {
        self.extra_body = fields;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let url = self.url(path);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        req.send(body.to_string().as_bytes())
            .map_err(|e| ClientError {
                url,
                reason: e.to_string(),
            })
    }

    fn read_json(
        &self,
        path: &str,
        resp: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| ClientError {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !(200..300).contains(&status) {
            return Err(ClientError {
                url,
                reason: format!(
                    "HTTP {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError {
            url,
            reason: format!("invalid JSON: {e}"),
        })
    }

    /// The first model of `GET /v1/models`.
    pub fn first_model(&self) -> Result<String, ClientError> {
        let path = "/v1/models";
        let url = self.url(path);
        let mut req = self.agent.get(&url);
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = req.call().map_err(|e| ClientError {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let v = self.read_json(path, &mut resp)?;
        v.pointer("/data/0/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError {
                url,
                reason: "no models listed; pass --model".into(),
            })
    }

    /// Tokens in `text` as the server counts them through `route`.
    pub fn count_tokens(
        &self,
        route: TokenizeRoute,
        model: &str,
        text: &str,
    ) -> Result<usize, ClientError> {
        let path = route.path();
        let mut resp = self.post_json(path, &route.body(model, text))?;
        let v = self.read_json(path, &mut resp)?;
        v.get("count")
            .and_then(Value::as_u64)
            .map(|c| c as usize)
            .or_else(|| v.get("tokens").and_then(Value::as_array).map(Vec::len))
            .ok_or_else(|| ClientError {
                url: self.url(path),
                reason: "the answer has neither `count` nor `tokens`".into(),
            })
    }

    /// The first tokenize route that answers sensibly, if any.
    pub fn probe_tokenizer(&self, model: &str) -> Option<TokenizeRoute> {
        TokenizeRoute::ALL.into_iter().find(|&r| {
            self.count_tokens(r, model, "hello world")
                .is_ok_and(|n| (1..=16).contains(&n))
        })
    }

    /// Send one streaming completion and time it.
    pub fn completion(&self, model: &str, request: &BenchRequest) -> RequestRecord {
        let mut body = json!({
            "model": model,
            "prompt": request.prompt,
            "max_tokens": request.output_len,
            "ignore_eos": true,
            "min_tokens": request.output_len,
            "temperature": 0.0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(fields) = body.as_object_mut() {
            fields.extend(self.extra_body.clone());
        }
        let start = Instant::now();
        let mut record = RequestRecord {
            input_tokens: request.input_tokens,
            requested_tokens: request.output_len,
            ..RequestRecord::default()
        };
        let result = self
            .post_json("/v1/completions", &body)
            .map_err(|e| e.reason)
            .and_then(|resp| read_stream(resp, start, &mut record));
        record.e2e = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => record.ok = true,
            Err(e) => record.error = Some(e),
        }
        record
    }
}

/// Read an SSE completion stream into `record`.
fn read_stream(
    mut resp: ureq::http::Response<ureq::Body>,
    start: Instant,
    record: &mut RequestRecord,
) -> Result<(), String> {
    let status = resp.status().as_u16();
    if status != 200 {
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 16)
            .read_to_string()
            .unwrap_or_default();
        return Err(format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    let reader = BufReader::new(resp.body_mut().with_config().limit(u64::MAX).reader());
    let mut last: Option<Instant> = None;
    let mut chunks = 0usize;
    let mut usage_tokens = None;
    let mut done = false;
    for line in reader.lines() {
        let line = line.map_err(|e| format!("stream broke after {chunks} chunks: {e}"))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("bad SSE event `{data}`: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("server error: {err}"));
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage_tokens = u.get("completion_tokens").and_then(Value::as_u64);
            if let Some(p) = u.get("prompt_tokens").and_then(Value::as_u64) {
                record.input_tokens = p as usize;
            }
        }
        let text = v
            .pointer("/choices/0/text")
            .and_then(Value::as_str)
            .unwrap_or("");
        if text.is_empty() {
            continue;
        }
        let now = Instant::now();
        match last {
            None => record.ttft = Some(now.duration_since(start).as_secs_f64()),
            Some(prev) => record.itl.push(now.duration_since(prev).as_secs_f64()),
        }
        last = Some(now);
        chunks += 1;
    }
    if !done {
        return Err(format!(
            "the stream ended without [DONE] after {chunks} chunks"
        ));
    }
    record.output_tokens = usage_tokens.map(|t| t as usize).unwrap_or(chunks);
    if chunks == 0 {
        return Err("the server streamed no text".into());
    }
    Ok(())
}
