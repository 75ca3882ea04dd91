//! Model management: `POST /api/pull`, `DELETE /api/delete`, `POST
//! /api/copy`, over the server's model cache ([`kiln_http::ModelStore`]).
//!
//! Kiln serves the one model chosen at start-up, so:
//! - `pull` fetches a catalog alias or a hub id (`org/name[:FILE|:QUANT]`,
//!   also written `hf.co/org/name:QUANT` as Ollama users do) into the cache,
//!   streaming Ollama's progress objects; it does not load the model;
//! - `delete` removes a cached model or a name made by `copy`, and refuses
//!   the model being served (409);
//! - `copy` gives the served model or a cached one another name; a name of
//!   the served model is served at once and kept in the cache's table of
//!   names, so it is served again after a restart on the same model.
//!
//! A request naming a cached model that is not loaded gets a 400 saying
//! which model is served and how to serve the other one.
//!
//! The store blocks on disk and network, so every call runs in
//! `spawn_blocking`; a pull's progress crosses to the response stream
//! through a channel. A client that leaves mid-pull does not stop the
//! download: it completes into the cache.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kiln_http::stream::{EventEncoder, Flow, Frame, Framing};
use kiln_http::{
    ApiError, ApiJson, Dialect, ModelStore, OllamaDialect, PullEvent, PullReporter, StoreError,
    StoredModel, stream_response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::convert::{bad, tagged};
use crate::request::from_body;
use crate::routes::AppState;

/// `POST /api/pull`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PullIn {
    /// What to fetch.
    pub model: Option<String>,
    /// Legacy alias of `model`.
    pub name: Option<String>,
    /// Stream progress (default true).
    pub stream: Option<bool>,
    /// Accepted and ignored (downloads always use TLS when the source does).
    pub insecure: Option<bool>,
}

/// `DELETE /api/delete`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeleteIn {
    /// What to delete.
    pub model: Option<String>,
    /// Legacy alias of `model`.
    pub name: Option<String>,
}

/// `POST /api/copy`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CopyIn {
    /// The existing name.
    pub source: Option<String>,
    /// The new name.
    pub destination: Option<String>,
}

fn required(value: Option<String>, what: &str) -> Result<String, ApiError> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(format!("{what} is required")))
}

/// `name` as Kiln's model resolution reads it: without Ollama's `:latest`
/// tag and without an `hf.co/` prefix.
pub fn pull_name(name: &str) -> String {
    let mut plain = name;
    for prefix in ["https://huggingface.co/", "huggingface.co/", "hf.co/"] {
        plain = plain.strip_prefix(prefix).unwrap_or(plain);
    }
    plain.strip_suffix(":latest").unwrap_or(plain).to_string()
}

/// The names `name` may have in the cache: as given, as
/// [`pull_name`] reads it, and tagged.
pub fn cache_names(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    for candidate in [pull_name(name), tagged(name)] {
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

/// Whether a cached model's path is the one the engine loaded (compared
/// resolved, so it touches the disk: call it off the async runtime).
pub fn is_served_path(path: &Path, served: &str) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(path) == canonical(Path::new(served))
}

fn store_of(st: &AppState) -> Result<Arc<dyn ModelStore>, ApiError> {
    st.config.model_store.clone().ok_or_else(|| {
        ApiError::new(
            Dialect::Ollama,
            StatusCode::NOT_IMPLEMENTED,
            "this server has no model cache: set KILN_CACHE (or HOME) before starting kiln",
        )
    })
}

/// Status of a store failure.
pub fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        StoreError::Upstream(_) => StatusCode::BAD_GATEWAY,
        StoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn store_error(e: &StoreError) -> ApiError {
    ApiError::new(Dialect::Ollama, store_status(e), e.to_string())
}

/// Runs a blocking store call off the async runtime.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|e| Err(StoreError::Internal(format!("the store task failed: {e}"))))
}

/// A cached model (or copy), and whether its files are the served model's.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEntry {
    pub model: StoredModel,
    /// Whether it names the files the engine loaded.
    pub served: bool,
}

fn entry(model: StoredModel, served_path: &str) -> CachedEntry {
    CachedEntry {
        served: is_served_path(&model.path, served_path),
        model,
    }
}

/// The first cached model (or copy) known under one of `name`'s cache names.
pub async fn find_cached(
    st: &AppState,
    store: Arc<dyn ModelStore>,
    name: &str,
) -> Result<Option<CachedEntry>, StoreError> {
    let names = cache_names(name);
    let served_path = st.handle.info().model_path.clone();
    blocking(move || {
        for n in &names {
            if let Some(m) = store.find(n)? {
                return Ok(Some(entry(m, &served_path)));
            }
        }
        Ok(None)
    })
    .await
}

/// Every cached model and copy (empty without a store).
pub async fn list_cached(st: &AppState) -> Vec<CachedEntry> {
    let Some(store) = st.config.model_store.clone() else {
        return Vec::new();
    };
    let served_path = st.handle.info().model_path.clone();
    let listed = blocking(move || {
        Ok(store
            .list()?
            .into_iter()
            .map(|m| entry(m, &served_path))
            .collect())
    })
    .await;
    listed.unwrap_or_else(|e| {
        tracing::warn!("listing the model cache failed: {e}");
        Vec::new()
    })
}

/// The 400 for `name`, the cached `model` that is not the one being
/// served; it names the served model and the command that serves `model`
/// (for a copy, what the copy names: `kiln serve` reads no copy names).
pub fn not_loaded(st: &AppState, name: &str, model: &StoredModel) -> ApiError {
    let info = st.handle.info();
    let served = info
        .served_model_names
        .first()
        .cloned()
        .unwrap_or_else(|| info.model_id.clone());
    let serve_as = model.copy_of.as_deref().unwrap_or(&model.name);
    bad(format!(
        "model '{name}' is in Kiln's cache but not loaded: Kiln serves one model ('{served}'); \
         to use '{name}', restart with `kiln serve {serve_as}`"
    ))
}

/// One item of a pull's response stream.
#[derive(Debug)]
pub enum PullItem {
    /// Progress.
    Event(PullEvent),
    /// The outcome.
    Done(Result<StoredModel, StoreError>),
}

/// Ollama's progress objects for a pull.
#[derive(Debug, Default)]
pub struct PullStream;

/// The JSON object of one progress event.
pub fn progress_json(event: &PullEvent) -> Value {
    match event {
        PullEvent::Status(status) => json!({"status": status}),
        PullEvent::Progress {
            file,
            sha256,
            total,
            completed,
        } => {
            let mut v = json!({
                "status": format!("downloading {file}"),
                "total": total,
                "completed": completed,
            });
            if let Some(sha) = sha256 {
                v["digest"] = json!(format!("sha256:{sha}"));
            }
            v
        }
    }
}

impl EventEncoder for PullStream {
    type Event = PullItem;

    fn event(&mut self, event: PullItem, out: &mut Vec<Frame>) -> Flow {
        match event {
            PullItem::Event(e) => {
                out.push(Frame::Json(progress_json(&e)));
                Flow::Continue
            }
            PullItem::Done(Ok(_)) => {
                out.push(Frame::Json(json!({"status": "writing manifest"})));
                out.push(Frame::Json(json!({"status": "success"})));
                Flow::Stop
            }
            PullItem::Done(Err(e)) => {
                out.push(Frame::Json(json!({"error": e.to_string()})));
                Flow::Stop
            }
        }
    }

    fn end(&mut self, _out: &mut Vec<Frame>) {}
}

/// `POST /api/pull`.
pub async fn pull(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    run_pull(&st, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run_pull(st: &AppState, body: Value) -> Result<Response, ApiError> {
    let req: PullIn = from_body(body)?;
    let name = required(req.model.or(req.name), "model")?;
    let store = store_of(st)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let report: PullReporter = Arc::new(move |event| {
        // A closed channel means the client left; the pull goes on.
        let _ = tx.send(event);
    });
    let target = pull_name(&name);
    let task = tokio::task::spawn_blocking(move || store.pull(&target, report));
    if !req.stream.unwrap_or(true) {
        let result = task
            .await
            .unwrap_or_else(|e| Err(StoreError::Internal(format!("the pull task failed: {e}"))));
        return match result {
            Ok(_) => Ok(Json(json!({"status": "success"})).into_response()),
            Err(e) => Err(store_error(&e)),
        };
    }
    let source = futures::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
        let task = task?;
        match rx.recv().await {
            Some(event) => Some((PullItem::Event(event), (rx, Some(task)))),
            // Every sender is gone: the pull returned.
            None => {
                let result = task.await.unwrap_or_else(|e| {
                    Err(StoreError::Internal(format!("the pull task failed: {e}")))
                });
                Some((PullItem::Done(result), (rx, None)))
            }
        }
    });
    let mut source = Box::pin(source);
    // A pull that fails before any byte count (an unknown name, a hub that
    // refuses the listing) gets an error status rather than a stream: the
    // stages before it are held back until then.
    let mut held = Vec::new();
    while let Some(item) = source.next().await {
        match item {
            PullItem::Done(Err(e)) => return Err(store_error(&e)),
            PullItem::Event(PullEvent::Status(_)) => held.push(item),
            other => {
                held.push(other);
                break;
            }
        }
    }
    let source = futures::stream::iter(held).chain(source);
    Ok(stream_response(
        Box::pin(source),
        PullStream,
        Framing::Ndjson,
    ))
}

/// `DELETE /api/delete`: 200 with an empty body.
pub async fn delete(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    run_delete(&st, body)
        .await
        .map(|()| StatusCode::OK.into_response())
        .unwrap_or_else(IntoResponse::into_response)
}

fn being_served(name: &str) -> ApiError {
    ApiError::new(
        Dialect::Ollama,
        StatusCode::CONFLICT,
        format!(
            "model '{name}' is the model Kiln is serving and cannot be deleted: restart Kiln with another model first"
        ),
    )
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        Dialect::Ollama,
        StatusCode::NOT_FOUND,
        format!("model '{name}' not found"),
    )
}

async fn run_delete(st: &AppState, body: Value) -> Result<(), ApiError> {
    let req: DeleteIn = from_body(body)?;
    let name = required(req.model.or(req.name), "model")?;
    let info = st.handle.info();
    if crate::convert::resolve_model(info, Some(&name)).is_ok() {
        return Err(being_served(&name));
    }
    let store = st.config.model_store.clone();
    if st.forget_served_copy(&name) {
        if let Some(store) = store {
            // The name may also be recorded in the cache's table.
            let names = cache_names(&name);
            let _ = blocking(move || {
                for n in &names {
                    let _ = store.delete(n);
                }
                Ok(())
            })
            .await;
        }
        return Ok(());
    }
    let store = store_of(st)?;
    let Some(found) = find_cached(st, store.clone(), &name)
        .await
        .map_err(|e| store_error(&e))?
    else {
        return Err(not_found(&name));
    };
    if found.model.copy_of.is_none() && found.served {
        return Err(being_served(&name));
    }
    blocking(move || store.delete(&found.model.name))
        .await
        .map_err(|e| store_error(&e))
}

/// `POST /api/copy`: 200 with an empty body.
pub async fn copy(
    State(st): State<Arc<AppState>>,
    ApiJson(body, _): ApiJson<Value, OllamaDialect>,
) -> Response {
    run_copy(&st, body)
        .await
        .map(|()| StatusCode::OK.into_response())
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run_copy(st: &AppState, body: Value) -> Result<(), ApiError> {
    let req: CopyIn = from_body(body)?;
    let source = required(req.source, "source")?;
    let destination = tagged(&required(req.destination, "destination")?);
    if destination
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(format!(
            "destination '{destination}' contains whitespace: choose a plain name"
        )));
    }
    let info = st.handle.info();
    let store = st.config.model_store.clone();
    let served_source = st.resolve_loaded(Some(&source)).is_ok();
    let cached = match (&store, served_source) {
        (Some(store), false) => find_cached(st, store.clone(), &source)
            .await
            .map_err(|e| store_error(&e))?,
        _ => None,
    };
    let served = served_source || cached.as_ref().is_some_and(|c| c.served);
    if served {
        st.add_served_copy(&destination);
        if let Some(store) = store {
            let path = info.model_path.clone();
            let dest = destination.clone();
            if let Err(e) = blocking(move || store.copy(&path, &dest)).await {
                tracing::warn!("'{destination}' is served but not recorded in the cache: {e}");
            }
        }
        return Ok(());
    }
    let (Some(store), Some(found)) = (store, cached) else {
        return Err(not_found(&source));
    };
    blocking(move || store.copy(&found.model.name, &destination))
        .await
        .map_err(|e| store_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_decorations_are_dropped_for_the_cache() {
        assert_eq!(
            pull_name("smollm2-135m-instruct:latest"),
            "smollm2-135m-instruct"
        );
        assert_eq!(pull_name("hf.co/org/name:Q4_K_M"), "org/name:Q4_K_M");
        assert_eq!(
            cache_names("mine"),
            vec!["mine".to_string(), "mine:latest".to_string()]
        );
    }

    #[test]
    fn progress_objects_follow_ollama() {
        let v = progress_json(&PullEvent::Progress {
            file: "m.gguf".into(),
            sha256: Some("ab".into()),
            total: 10,
            completed: 4,
        });
        assert_eq!(
            v,
            json!({"status": "downloading m.gguf", "digest": "sha256:ab", "total": 10, "completed": 4})
        );
        assert_eq!(
            progress_json(&PullEvent::Status("pulling manifest".into())),
            json!({"status": "pulling manifest"})
        );
    }
}
