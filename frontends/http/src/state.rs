//! What a dialect's handlers hold: the engine, the HTTP settings, and the
//! dialect that shapes their errors.

use std::fmt;
use std::marker::PhantomData;

use kiln_engine_api::{EngineHandle, RequestStream};
use kiln_protocol::{EngineError, GenerateRequest};

use crate::body::DialectTag;
use crate::config::HttpConfig;
use crate::error::ApiError;

/// The state every handler of dialect `D` holds.
pub struct DialectState<D> {
    /// The engine.
    pub handle: EngineHandle,
    /// HTTP settings.
    pub config: HttpConfig,
    // `fn() -> D`: the state is Send, Sync and Clone whatever the marker.
    dialect: PhantomData<fn() -> D>,
}

impl<D: DialectTag> DialectState<D> {
    /// The state of a server over `handle`.
    pub fn new(handle: EngineHandle, config: HttpConfig) -> Self {
        DialectState {
            handle,
            config,
            dialect: PhantomData,
        }
    }

    /// An engine error in `D`'s shape (overload errors carry the configured
    /// `Retry-After`).
    pub fn engine_error(&self, e: &EngineError) -> ApiError {
        ApiError::from_engine(D::DIALECT, e, self.config.retry_after_seconds)
    }

    /// Checks capacity, then validates, tokenizes and queues `request`.
    pub fn submit(&self, request: GenerateRequest) -> Result<RequestStream, ApiError> {
        crate::submit(&self.handle, &self.config, request).map_err(|e| self.engine_error(&e))
    }
}

impl<D> Clone for DialectState<D> {
    fn clone(&self) -> Self {
        DialectState {
            handle: self.handle.clone(),
            config: self.config.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D: DialectTag> fmt::Debug for DialectState<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialectState")
            .field("dialect", &D::DIALECT)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
