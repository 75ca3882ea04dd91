//! `kiln.LLM`: vLLM's offline entry point. One engine per object; every
//! prompt of a call is submitted at once so the scheduler batches them.

use std::sync::Once;

use kiln_engine_api::{ChatOptions, EngineHandle};
use kiln_protocol::{GenerateRequest, PromptInput};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::batch::{RequestStreamIter, run_batch};
use crate::embeddings::{self, EmbeddingRequestOutput, PoolingParams};
use crate::engine_args;
use crate::errors::{EngineError, to_py};
use crate::outputs::RequestOutput;
use crate::prompts::{conversations, prompts, to_json};
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;

static LOGGING: Once = Once::new();

#[pyclass(module = "kiln", name = "LLM")]
pub struct Llm {
    /// Owns the engine: dropping the `LLM` stops it.
    #[allow(dead_code)]
    llm: kiln_engine::LLM,
    handle: EngineHandle,
}

/// A prompt ready to submit, and the text `RequestOutput.prompt` shows.
struct Prepared {
    prompt: PromptInput,
    shown: Option<String>,
    add_special_tokens: bool,
}

/// `sampling_params` of `generate`/`chat`: none (vLLM's defaults), one for
/// every prompt, or one per prompt.
fn params_per_prompt(
    sampling_params: Option<&Bound<'_, PyAny>>,
    prompts: usize,
) -> PyResult<Vec<SamplingParams>> {
    let Some(given) = sampling_params.filter(|p| !p.is_none()) else {
        return Ok(vec![SamplingParams::default(); prompts]);
    };
    if let Ok(list) = given.cast::<PyList>() {
        if list.len() != prompts {
            return Err(PyValueError::new_err(format!(
                "got {} sampling_params for {prompts} prompts; pass one, or one per prompt",
                list.len()
            )));
        }
        return list
            .iter()
            .map(|p| p.extract::<SamplingParams>().map_err(PyErr::from))
            .collect();
    }
    let one = given.extract::<SamplingParams>().map_err(PyErr::from)?;
    Ok(vec![one; prompts])
}

impl Llm {
    fn requests(
        &self,
        prepared: &[Prepared],
        params: &[SamplingParams],
    ) -> PyResult<Vec<GenerateRequest>> {
        prepared
            .iter()
            .zip(params)
            .map(|(p, params)| {
                let (sampling, stopping) = params.to_engine()?;
                Ok(GenerateRequest {
                    prompt: p.prompt.clone(),
                    sampling,
                    stopping,
                    add_special_tokens: p.add_special_tokens,
                    tag: None,
                })
            })
            .collect()
    }

    fn run(
        &self,
        py: Python<'_>,
        prepared: Vec<Prepared>,
        sampling_params: Option<&Bound<'_, PyAny>>,
        use_tqdm: bool,
    ) -> PyResult<Vec<RequestOutput>> {
        let params = params_per_prompt(sampling_params, prepared.len())?;
        let requests = self.requests(&prepared, &params)?;
        let outputs = run_batch(py, &self.handle, requests, use_tqdm)?;
        Ok(outputs
            .iter()
            .zip(prepared)
            .zip(&params)
            .map(|((out, p), params)| {
                RequestOutput::from_engine(
                    out,
                    p.shown,
                    params.n,
                    params.logprobs.is_some(),
                    &self.handle,
                )
            })
            .collect())
    }
}

fn prepare(prompt: PromptInput) -> Prepared {
    match prompt {
        PromptInput::Text(text) => Prepared {
            shown: Some(text.clone()),
            prompt: PromptInput::Text(text),
            add_special_tokens: true,
        },
        ids @ PromptInput::TokenIds(_) => Prepared {
            prompt: ids,
            shown: None,
            add_special_tokens: false,
        },
    }
}

#[pymethods]
impl Llm {
    /// Load `model` (a path, a catalog alias or a hub id; default: Kiln's
    /// default model) with `kiln serve`'s engine flags as keyword arguments,
    /// named as in vLLM: `max_model_len`, `dtype`, `quantization`,
    /// `gpu_memory_utilization`, `kv_cache_memory_bytes`, `seed`, ...
    #[new]
    #[pyo3(signature = (model=None, **kwargs))]
    fn new(
        py: Python<'_>,
        model: Option<String>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let args = engine_args::parse(engine_args::flags(model.as_deref(), kwargs)?)?;
        LOGGING.call_once(|| {
            // Another logger may already be installed by the host program.
            let _ = kiln::logging::init(&args.logging);
        });
        let plugins = crate::module_dir(py);
        let llm = py.detach(|| {
            let mut config = engine_args::engine_config_for(&args)?;
            config.backend_search_paths.extend(plugins);
            kiln_engine::LLM::new(config).map_err(|e| EngineError::new_err(e.to_string()))
        })?;
        let handle = llm.handle();
        Ok(Llm { llm, handle })
    }

    /// Complete every prompt; returns one `RequestOutput` per prompt, in order.
    #[pyo3(signature = (prompts, sampling_params=None, *, use_tqdm=true))]
    fn generate(
        &self,
        py: Python<'_>,
        prompts: &Bound<'_, PyAny>,
        sampling_params: Option<&Bound<'_, PyAny>>,
        use_tqdm: bool,
    ) -> PyResult<Vec<RequestOutput>> {
        let prepared = self::prompts(prompts)?.into_iter().map(prepare).collect();
        self.run(py, prepared, sampling_params, use_tqdm)
    }

    /// Answer one conversation (a list of `{"role", "content"}` dicts) or a
    /// list of conversations, rendered with the model's chat template (or
    /// `chat_template`).
    #[pyo3(signature = (
        messages, sampling_params=None, *, use_tqdm=true, chat_template=None,
        add_generation_prompt=true, chat_template_kwargs=None, tools=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        sampling_params: Option<&Bound<'_, PyAny>>,
        use_tqdm: bool,
        chat_template: Option<String>,
        add_generation_prompt: bool,
        chat_template_kwargs: Option<&Bound<'_, PyDict>>,
        tools: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RequestOutput>> {
        let extra = match chat_template_kwargs
            .map(|k| to_json(k.as_any()))
            .transpose()?
        {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let options = ChatOptions {
            add_generation_prompt,
            tools: tools.map(to_json).transpose()?,
            extra,
            template: chat_template,
        };
        let prepared = conversations(messages)?
            .iter()
            .map(|conversation| {
                let text = self
                    .handle
                    .apply_chat_template(conversation, &options)
                    .map_err(to_py)?;
                // The template writes the special tokens itself.
                Ok(Prepared {
                    prompt: PromptInput::Text(text.clone()),
                    shown: Some(text),
                    add_special_tokens: false,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.run(py, prepared, sampling_params, use_tqdm)
    }

    /// Stream one prompt: an iterator of `RequestOutput`s, each holding all
    /// text so far; breaking out of the loop aborts the request.
    #[pyo3(signature = (prompt, sampling_params=None))]
    fn generate_stream(
        &self,
        prompt: &Bound<'_, PyAny>,
        sampling_params: Option<SamplingParams>,
    ) -> PyResult<RequestStreamIter> {
        let mut all = prompts(prompt)?;
        if all.len() != 1 {
            return Err(PyValueError::new_err(
                "generate_stream takes one prompt; use generate for a batch",
            ));
        }
        let prepared = prepare(all.remove(0));
        let params = sampling_params.unwrap_or_default();
        let request = self
            .requests(
                std::slice::from_ref(&prepared),
                std::slice::from_ref(&params),
            )?
            .remove(0);
        let stream = self.handle.submit(request).map_err(to_py)?;
        Ok(RequestStreamIter::new(
            stream,
            prepared.shown,
            params.n,
            params.logprobs.is_some(),
            self.handle.clone(),
        ))
    }

    /// Embed each input (the same prompt shapes as `generate`) with an
    /// embedding model; `truncate=True` cuts inputs longer than the model's
    /// context instead of raising.
    #[pyo3(signature = (prompts, pooling_params=None, *, truncate=false, use_tqdm=true))]
    fn embed(
        &self,
        py: Python<'_>,
        prompts: &Bound<'_, PyAny>,
        pooling_params: Option<PoolingParams>,
        truncate: bool,
        use_tqdm: bool,
    ) -> PyResult<Vec<EmbeddingRequestOutput>> {
        let inputs = self::prompts(prompts)?;
        let pooling = pooling_params.unwrap_or_default();
        embeddings::embed(py, &self.handle, inputs, &pooling, truncate, use_tqdm)
    }

    fn get_tokenizer(&self) -> Tokenizer {
        Tokenizer {
            handle: self.handle.clone(),
        }
    }

    /// What was loaded and how the engine is configured (as `/v1/server_info`
    /// reports it): architecture, parameters, dtype, quantization, context, KV blocks.
    fn model_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = serde_json::to_string(self.handle.info())
            .map_err(|e| EngineError::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (info,))
    }

    fn __repr__(&self) -> String {
        let info = self.handle.info();
        format!(
            "LLM(model={:?}, backend={:?}, max_model_len={})",
            info.model_id, info.backend, info.max_model_len
        )
    }
}
