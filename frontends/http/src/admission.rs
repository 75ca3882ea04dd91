//! Submitting requests with the HTTP layer's bound on waiting requests.

use kiln_engine_api::{EngineHandle, RequestStream};
use kiln_protocol::{EngineError, GenerateRequest};

use crate::config::HttpConfig;

/// The waiting-request bound in force: the configured one, else the
/// engine's; `None` when unbounded (0).
pub fn waiting_limit(handle: &EngineHandle, config: &HttpConfig) -> Option<u32> {
    let limit = config
        .max_waiting_requests
        .unwrap_or(handle.info().max_waiting_requests);
    (limit > 0).then_some(limit)
}

/// `Overloaded` when as many requests wait as the bound allows.
pub fn check_capacity(handle: &EngineHandle, config: &HttpConfig) -> Result<(), EngineError> {
    let Some(limit) = waiting_limit(handle, config) else {
        return Ok(());
    };
    let waiting = handle.load().waiting;
    if waiting >= limit {
        return Err(EngineError::Overloaded {
            waiting: waiting as usize,
            limit: limit as usize,
        });
    }
    Ok(())
}

/// Checks capacity, then validates, tokenizes and queues the request.
pub fn submit(
    handle: &EngineHandle,
    config: &HttpConfig,
    request: GenerateRequest,
) -> Result<RequestStream, EngineError> {
    check_capacity(handle, config)?;
    handle.submit(request)
}
