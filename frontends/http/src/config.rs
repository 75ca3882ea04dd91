//! Settings of the HTTP layer and the injectable clock and id sources.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::model_store::ModelStore;
use crate::tool_calls::ToolCallSettings;

/// Default request body limit: 16 MiB (a long prompt as a JSON token-id list fits).
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// Wall time for response fields (`created`, `created_at`) and durations.
pub trait Clock: Send + Sync + 'static {
    /// Time since the Unix epoch.
    fn since_epoch(&self) -> Duration;
}

/// Ids for response objects (`chatcmpl-<id>`) and requests without `x-request-id`.
pub trait IdSource: Send + Sync + 'static {
    /// A fresh id: ASCII letters and digits only.
    fn next_id(&self) -> String;
}

/// The real clock: the Unix time at construction advanced by a monotonic timer,
/// so durations never go backwards when the system clock is adjusted.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch_at_start: Duration,
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            epoch_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn since_epoch(&self) -> Duration {
        self.epoch_at_start + self.start.elapsed()
    }
}

/// A clock that always reads the same time (golden tests: every duration is 0).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Duration);

impl Clock for FixedClock {
    fn since_epoch(&self) -> Duration {
        self.0
    }
}

/// Random 32-hex-digit ids (UUID v4 without dashes).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// Counting ids `1`, `2`, ... (golden tests).
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdSource for SequentialIds {
    fn next_id(&self) -> String {
        (self.0.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }
}

/// Settings every frontend sees.
#[derive(Clone)]
pub struct HttpConfig {
    /// Bearer key required on every route but `/health` and `/metrics`; `None`: no auth.
    pub api_key: Option<String>,
    /// Largest accepted request body in bytes (larger: HTTP 413).
    pub body_limit_bytes: usize,
    /// Requests allowed to wait before new ones get HTTP 429; `None`: the
    /// engine's `max_waiting_requests` (0 there means unbounded).
    pub max_waiting_requests: Option<u32>,
    /// `Retry-After` value sent with HTTP 429, in seconds.
    pub retry_after_seconds: u32,
    /// Names of the mounted frontends (filled in by [`build_router`](crate::build_router)).
    pub enabled_frontends: Vec<String>,
    /// Wall clock for `created` fields and durations.
    pub clock: Arc<dyn Clock>,
    /// Response and request ids.
    pub ids: Arc<dyn IdSource>,
    /// How tool calls are found in chat output.
    pub tool_calls: ToolCallSettings,
    /// The model cache (`None`: model management routes answer that there
    /// is none).
    pub model_store: Option<Arc<dyn ModelStore>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            api_key: None,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            max_waiting_requests: None,
            retry_after_seconds: 1,
            enabled_frontends: Vec::new(),
            clock: Arc::new(SystemClock::default()),
            ids: Arc::new(RandomIds),
            tool_calls: ToolCallSettings::default(),
            model_store: None,
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("max_waiting_requests", &self.max_waiting_requests)
            .field("retry_after_seconds", &self.retry_after_seconds)
            .field("enabled_frontends", &self.enabled_frontends)
            .field("tool_calls", &self.tool_calls)
            .field("model_store", &self.model_store.as_ref().map(|s| s.root()))
            .finish_non_exhaustive()
    }
}

impl HttpConfig {
    /// Unix time in whole seconds (for `created` fields).
    pub fn unix_seconds(&self) -> u64 {
        self.clock.since_epoch().as_secs()
    }
}

/// Where and how [`serve`](crate::serve) listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind (`0.0.0.0:8000`).
    pub addr: SocketAddr,
    /// Settings passed to every frontend.
    pub http: HttpConfig,
    /// After the shutdown signal, how long running requests may go on before
    /// their connections are dropped (which aborts them in the engine).
    pub shutdown_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_count_up() {
        let ids = SequentialIds::default();
        assert_eq!(ids.next_id(), "1");
        assert_eq!(ids.next_id(), "2");
    }

    #[test]
    fn random_ids_are_hex_and_distinct() {
        let a = RandomIds.next_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, RandomIds.next_id());
    }

    #[test]
    fn debug_hides_the_api_key() {
        let c = HttpConfig {
            api_key: Some("secret".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
