//! `LLM.embed`: vLLM's `PoolingParams`, `EmbeddingOutput` and
//! `EmbeddingRequestOutput`, over the engine's embedding requests.

use kiln_engine_api::EngineHandle;
use kiln_protocol::{EmbedRequest, EngineError, PromptInput, finish_embedding};
use pyo3::prelude::*;

use crate::batch::run_embeddings;
use crate::errors::to_py;

/// How an embedding is finished: `dimensions` keeps the first values (only
/// for models trained for it), `normalize` scales to unit length (default:
/// the model's own setting).
#[pyclass(module = "kiln", get_all, set_all, from_py_object)]
#[derive(Debug, Clone, Default)]
pub struct PoolingParams {
    pub dimensions: Option<u32>,
    pub normalize: Option<bool>,
}

#[pymethods]
impl PoolingParams {
    #[new]
    #[pyo3(signature = (*, dimensions=None, normalize=None))]
    fn new(dimensions: Option<u32>, normalize: Option<bool>) -> Self {
        PoolingParams {
            dimensions,
            normalize,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "PoolingParams(dimensions={:?}, normalize={:?})",
            self.dimensions, self.normalize
        )
    }
}

#[pyclass(module = "kiln", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct EmbeddingOutput {
    pub embedding: Vec<f32>,
}

#[pymethods]
impl EmbeddingOutput {
    #[getter]
    fn hidden_size(&self) -> usize {
        self.embedding.len()
    }

    fn __repr__(&self) -> String {
        format!("EmbeddingOutput(hidden_size={})", self.embedding.len())
    }
}

#[pyclass(module = "kiln", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct EmbeddingRequestOutput {
    pub request_id: String,
    pub prompt_token_ids: Vec<u32>,
    pub outputs: EmbeddingOutput,
    pub finished: bool,
}

#[pymethods]
impl EmbeddingRequestOutput {
    fn __repr__(&self) -> String {
        format!(
            "EmbeddingRequestOutput(request_id={:?}, prompt_tokens={}, hidden_size={})",
            self.request_id,
            self.prompt_token_ids.len(),
            self.outputs.embedding.len()
        )
    }
}

/// Embed every input in one batch.
pub fn embed(
    py: Python<'_>,
    handle: &EngineHandle,
    inputs: Vec<PromptInput>,
    pooling: &PoolingParams,
    truncate: bool,
    progress: bool,
) -> PyResult<Vec<EmbeddingRequestOutput>> {
    let spec = handle.info().embedding.clone().ok_or_else(|| {
        to_py(EngineError::invalid(
            "model",
            format!(
                "{} does not compute embeddings; load an embedding model (e.g. all-minilm-l6-v2)",
                handle.info().model_id
            ),
        ))
    })?;
    if let Some(d) = pooling.dimensions {
        spec.check_dimensions(d).map_err(to_py)?;
    }
    let normalize = pooling.normalize.unwrap_or(spec.normalize);
    // Token ids are shown as tokenized: text inputs get the model's special tokens.
    let prompt_token_ids = inputs
        .iter()
        .map(|input| match input {
            PromptInput::Text(text) => handle.tokenize(text, true).map_err(to_py),
            PromptInput::TokenIds(ids) => Ok(ids.clone()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    let requests = inputs
        .into_iter()
        .map(|input| EmbedRequest {
            input,
            truncate,
            tag: None,
        })
        .collect();
    let vectors = run_embeddings(py, handle, requests, progress)?;
    Ok(vectors
        .into_iter()
        .zip(prompt_token_ids)
        .enumerate()
        .map(|(i, (e, mut ids))| {
            let kept = e.prompt_tokens as usize;
            if ids.len() > kept {
                // Truncation keeps a closing special token (`[SEP]`) last.
                let last = ids[ids.len() - 1];
                ids.truncate(kept);
                if kept > 1 && handle.is_special(last) {
                    ids[kept - 1] = last;
                }
            }
            EmbeddingRequestOutput {
                request_id: i.to_string(),
                prompt_token_ids: ids,
                outputs: EmbeddingOutput {
                    embedding: finish_embedding(e.vector, pooling.dimensions, normalize),
                },
                finished: true,
            }
        })
        .collect())
}
