//! Waiting on the engine from Python: with the GIL released, waking every
//! [`TICK`] to run Python's signal handlers so that Ctrl-C aborts the
//! requests (dropping a request's stream aborts it in the engine) and raises
//! `KeyboardInterrupt`.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kiln_engine::llm::collect;
use kiln_engine_api::{EngineHandle, RequestStream};
use kiln_hub::ProgressMode;
use kiln_protocol::{EmbedRequest, Embedding, EngineError, GenerateRequest};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::outputs::RequestOutput;

/// Longest time Ctrl-C waits to be noticed.
pub const TICK: Duration = Duration::from_millis(50);

fn runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start a waiter: {e}")))
}

/// Submit every request, wait for all of them, and return the outputs in
/// request order; a progress bar counts finished requests when `progress`
/// is set. The first error (a rejected prompt, a failed step) aborts the
/// rest and is raised.
pub fn run_batch(
    py: Python<'_>,
    handle: &EngineHandle,
    requests: Vec<GenerateRequest>,
    progress: bool,
) -> PyResult<Vec<kiln_engine::RequestOutput>> {
    let mut pending = Vec::with_capacity(requests.len());
    for request in requests {
        // On error, the streams already submitted are dropped, which aborts them.
        let stream = handle.submit(request).map_err(to_py)?;
        pending.push(collect(stream));
    }
    wait_all(py, pending, progress)
}

/// Embed every input; vectors come back in input order, pooled but not yet
/// truncated or normalized.
pub fn run_embeddings(
    py: Python<'_>,
    handle: &EngineHandle,
    requests: Vec<EmbedRequest>,
    progress: bool,
) -> PyResult<Vec<Embedding>> {
    let mut pending = Vec::with_capacity(requests.len());
    for request in requests {
        pending.push(handle.embed(request).map_err(to_py)?);
    }
    wait_all(py, pending, progress)
}

/// Drive `futures` to completion with the GIL released, in their order.
/// Dropping a pending future aborts its request, which is what an error or
/// Ctrl-C does to the rest.
fn wait_all<T, F>(py: Python<'_>, futures: Vec<F>, progress: bool) -> PyResult<Vec<T>>
where
    T: Send,
    F: Future<Output = Result<T, EngineError>> + Send,
{
    let rt = runtime()?;
    let mode = if progress {
        ProgressMode::Bars
    } else {
        ProgressMode::Hidden
    };
    let bar = mode.count_bar("Processed prompts", futures.len() as u64);
    let mut results: Vec<Option<T>> = (0..futures.len()).map(|_| None).collect();
    let mut pending: FuturesUnordered<_> = futures
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect();
    loop {
        let next =
            py.detach(|| rt.block_on(async { tokio::time::timeout(TICK, pending.next()).await }));
        match next {
            Ok(Some((i, Ok(out)))) => {
                results[i] = Some(out);
                bar.inc(1);
            }
            Ok(Some((_, Err(e)))) => {
                bar.abandon();
                return Err(to_py(e));
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if let Err(interrupt) = py.check_signals() {
            bar.abandon();
            return Err(interrupt);
        }
    }
    bar.finish_and_clear();
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| to_py(EngineError::Internal("request lost".into()))))
        .collect()
}

/// The running view of one request, yielded after every event
/// (`LLM.generate_stream`): each item is a `RequestOutput` holding everything
/// generated so far; the last one has `finished=True`.
#[pyclass(module = "kiln")]
pub struct RequestStreamIter {
    state: Mutex<Option<StreamState>>,
}

struct StreamState {
    stream: RequestStream,
    output: kiln_engine::RequestOutput,
    prompt: Option<String>,
    n: u32,
    want_logprobs: bool,
    handle: EngineHandle,
}

impl RequestStreamIter {
    pub fn new(
        stream: RequestStream,
        prompt: Option<String>,
        n: u32,
        want_logprobs: bool,
        handle: EngineHandle,
    ) -> Self {
        let output = kiln_engine::RequestOutput {
            request_id: stream.id(),
            prompt_token_ids: stream.prompt_token_ids().to_vec(),
            prompt_logprobs: None,
            outputs: Vec::new(),
        };
        RequestStreamIter {
            state: Mutex::new(Some(StreamState {
                stream,
                output,
                prompt,
                n,
                want_logprobs,
                handle,
            })),
        }
    }
}

#[pymethods]
impl RequestStreamIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<RequestOutput>> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the stream was poisoned by an earlier panic"))?;
        let Some(state) = guard.as_mut() else {
            return Ok(None);
        };
        let rt = runtime()?;
        let event = loop {
            let next = py.detach(|| {
                rt.block_on(async { tokio::time::timeout(TICK, state.stream.next_event()).await })
            });
            if let Ok(event) = next {
                break event;
            }
            if let Err(interrupt) = py.check_signals() {
                *guard = None;
                return Err(interrupt);
            }
        };
        let Some(event) = event else {
            *guard = None;
            return Ok(None);
        };
        if let Err(e) = state.output.apply(event) {
            *guard = None;
            return Err(to_py(e));
        }
        let view = RequestOutput::from_engine(
            &state.output,
            state.prompt.clone(),
            state.n,
            state.want_logprobs,
            &state.handle,
        );
        if view.finished {
            *guard = None;
        }
        Ok(Some(view))
    }

    /// Abort the request now (also happens when the iterator is dropped).
    fn close(&self) {
        if let Ok(mut guard) = self.state.lock() {
            *guard = None;
        }
    }
}
