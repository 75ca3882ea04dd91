//! Binding, serving and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use kiln_engine_api::EngineHandle;
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::frontend::Frontend;
use crate::router::{BuildError, build_router};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The frontends could not be composed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("HTTP server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A listening socket with its router, ready to [`run`](BoundServer::run).
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    router: Router,
    shutdown_timeout: Duration,
}

impl BoundServer {
    /// Composes the frontends and binds `config.addr` (port 0 picks a free port).
    pub async fn bind(
        config: ServeConfig,
        handle: EngineHandle,
        frontends: &[Box<dyn Frontend>],
    ) -> Result<Self, ServeError> {
        let router = build_router(handle, config.http, frontends)?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr,
                source,
            })?;
        Ok(BoundServer {
            listener,
            router,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets running
    /// requests finish for at most the shutdown timeout, and drops the rest
    /// (which aborts them in the engine).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, waiting for running requests");
            let _ = tx.send(true);
        };
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(graceful);
        let timeout = self.shutdown_timeout;
        let deadline = async move {
            if rx.wait_for(|stopping| *stopping).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            biased;
            result = server.into_future() => Ok(result?),
            () = deadline => {
                tracing::warn!(?timeout, "shutdown timeout reached: dropping the remaining connections");
                Ok(())
            }
        }
    }
}

/// Serves `frontends` over `handle` on `config.addr` until `shutdown` completes.
///
/// ```no_run
/// # async fn run(handle: kiln_engine_api::EngineHandle, frontends: Vec<Box<dyn kiln_http::Frontend>>) {
/// let config = kiln_http::ServeConfig {
///     addr: "0.0.0.0:8000".parse().unwrap(),
///     http: kiln_http::HttpConfig::default(),
///     shutdown_timeout: std::time::Duration::from_secs(30),
/// };
/// kiln_http::serve(config, handle, &frontends, kiln_http::shutdown_signal()).await.unwrap();
/// # }
/// ```
pub async fn serve(
    config: ServeConfig,
    handle: EngineHandle,
    frontends: &[Box<dyn Frontend>],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let server = BoundServer::bind(config, handle, frontends).await?;
    if let Ok(addr) = server.local_addr() {
        tracing::info!(%addr, "listening");
    }
    server.run(shutdown).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
