//! `SamplingParams` and `StructuredOutputsParams`, with vLLM's names and
//! defaults (notably `max_tokens=16`), converted to the engine's sampling and
//! stopping settings in one place.

use kiln_protocol::{StoppingCriteria, StructuredOutput};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::to_py;

/// What the output must conform to; give exactly one field.
#[pyclass(module = "kiln", get_all, set_all, from_py_object)]
#[derive(Debug, Clone, Default)]
pub struct StructuredOutputsParams {
    /// A JSON Schema (given as a dict or a JSON string; kept as JSON text).
    pub json: Option<String>,
    pub regex: Option<String>,
    pub choice: Option<Vec<String>>,
    /// Lark, or GBNF (`root ::= ...`).
    pub grammar: Option<String>,
    /// Any JSON object.
    pub json_object: Option<bool>,
}

#[pymethods]
impl StructuredOutputsParams {
    #[new]
    #[pyo3(signature = (*, json=None, regex=None, choice=None, grammar=None, json_object=None))]
    fn new(
        json: Option<&Bound<'_, PyAny>>,
        regex: Option<String>,
        choice: Option<Vec<String>>,
        grammar: Option<String>,
        json_object: Option<bool>,
    ) -> PyResult<Self> {
        let params = StructuredOutputsParams {
            json: json.map(schema_text).transpose()?,
            regex,
            choice,
            grammar,
            json_object,
        };
        params.to_engine()?;
        Ok(params)
    }

    fn __repr__(&self) -> PyResult<String> {
        Ok(format!("StructuredOutputsParams({})", self.describe()?))
    }
}

/// A schema given as a dict or as JSON text, as JSON text.
fn schema_text(schema: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = schema.cast::<PyString>() {
        return Ok(s.to_string());
    }
    if schema.cast::<PyDict>().is_ok() {
        return schema
            .py()
            .import("json")?
            .call_method1("dumps", (schema,))?
            .extract();
    }
    Err(PyValueError::new_err(
        "structured_outputs json must be a dict or a JSON string",
    ))
}

impl StructuredOutputsParams {
    fn describe(&self) -> PyResult<String> {
        Ok(match self.to_engine()? {
            StructuredOutput::JsonSchema(s) => format!("json={s}"),
            StructuredOutput::JsonObject => "json_object=True".into(),
            StructuredOutput::Regex(r) => format!("regex={r:?}"),
            StructuredOutput::Choice(c) => format!("choice={c:?}"),
            StructuredOutput::Grammar(g) => format!("grammar={g:?}"),
        })
    }

    fn to_engine(&self) -> PyResult<StructuredOutput> {
        let mut given = Vec::new();
        if let Some(schema) = &self.json {
            given.push(StructuredOutput::JsonSchema(schema.clone()));
        }
        if let Some(r) = &self.regex {
            given.push(StructuredOutput::Regex(r.clone()));
        }
        if let Some(c) = &self.choice {
            given.push(StructuredOutput::Choice(c.clone()));
        }
        if let Some(g) = &self.grammar {
            given.push(StructuredOutput::Grammar(g.clone()));
        }
        if self.json_object == Some(true) {
            given.push(StructuredOutput::JsonObject);
        }
        match given.len() {
            1 => Ok(given.remove(0)),
            0 => Err(PyValueError::new_err(
                "StructuredOutputsParams needs one of json, regex, choice, grammar or json_object",
            )),
            _ => Err(PyValueError::new_err(
                "StructuredOutputsParams takes only one of json, regex, choice, grammar or json_object",
            )),
        }
    }
}

/// How to sample and when to stop, per request.
#[pyclass(module = "kiln", get_all, set_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub n: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 or -1 keeps every token.
    pub top_k: i64,
    pub min_p: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// `None`: up to the end of the context.
    pub max_tokens: Option<u32>,
    pub min_tokens: u32,
    /// Top alternatives reported per generated token (0: only the sampled one).
    pub logprobs: Option<u32>,
    /// Top alternatives reported per prompt token (0: only the prompt token).
    pub prompt_logprobs: Option<u32>,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// Token id → additive bias in [-100, 100].
    pub logit_bias: Option<Vec<(u32, f32)>>,
    pub structured_outputs: Option<StructuredOutputsParams>,
}

/// `stop` as vLLM takes it: one string or a list.
#[derive(FromPyObject)]
pub enum StopArg {
    One(String),
    Many(Vec<String>),
}

#[pymethods]
impl SamplingParams {
    #[new]
    #[pyo3(signature = (
        *, n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
        temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=None,
        stop_token_ids=None, ignore_eos=false, max_tokens=Some(16), min_tokens=0,
        logprobs=None, prompt_logprobs=None, include_stop_str_in_output=false, skip_special_tokens=true,
        logit_bias=None, structured_outputs=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        n: u32,
        presence_penalty: f32,
        frequency_penalty: f32,
        repetition_penalty: f32,
        temperature: f32,
        top_p: f32,
        top_k: i64,
        min_p: f32,
        seed: Option<u64>,
        stop: Option<StopArg>,
        stop_token_ids: Option<Vec<u32>>,
        ignore_eos: bool,
        max_tokens: Option<u32>,
        min_tokens: u32,
        logprobs: Option<u32>,
        prompt_logprobs: Option<u32>,
        include_stop_str_in_output: bool,
        skip_special_tokens: bool,
        logit_bias: Option<std::collections::BTreeMap<u32, f32>>,
        structured_outputs: Option<StructuredOutputsParams>,
    ) -> PyResult<Self> {
        let params = SamplingParams {
            n,
            presence_penalty,
            frequency_penalty,
            repetition_penalty,
            temperature,
            top_p,
            top_k,
            min_p,
            seed,
            stop: match stop {
                None => Vec::new(),
                Some(StopArg::One(s)) => vec![s],
                Some(StopArg::Many(v)) => v,
            },
            stop_token_ids: stop_token_ids.unwrap_or_default(),
            ignore_eos,
            max_tokens,
            min_tokens,
            logprobs,
            prompt_logprobs,
            include_stop_str_in_output,
            skip_special_tokens,
            logit_bias: logit_bias.map(|m| m.into_iter().collect()),
            structured_outputs,
        };
        // Fail at construction, as vLLM does, not at the first generate.
        params.to_engine()?;
        Ok(params)
    }

    fn __repr__(&self) -> String {
        format!(
            "SamplingParams(n={}, presence_penalty={}, frequency_penalty={}, repetition_penalty={}, \
             temperature={}, top_p={}, top_k={}, min_p={}, seed={:?}, stop={:?}, stop_token_ids={:?}, \
             ignore_eos={}, max_tokens={:?}, min_tokens={}, logprobs={:?}, \
             prompt_logprobs={:?}, include_stop_str_in_output={}, skip_special_tokens={}, structured_outputs={})",
            self.n,
            self.presence_penalty,
            self.frequency_penalty,
            self.repetition_penalty,
            self.temperature,
            self.top_p,
            self.top_k,
            self.min_p,
            self.seed,
            self.stop,
            self.stop_token_ids,
            self.ignore_eos,
            self.max_tokens,
            self.min_tokens,
            self.logprobs,
            self.prompt_logprobs,
            self.include_stop_str_in_output,
            self.skip_special_tokens,
            if self.structured_outputs.is_some() {
                "set"
            } else {
                "None"
            },
        )
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            n: 1,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            max_tokens: Some(16),
            min_tokens: 0,
            logprobs: None,
            prompt_logprobs: None,
            include_stop_str_in_output: false,
            skip_special_tokens: true,
            logit_bias: None,
            structured_outputs: None,
        }
    }
}

impl SamplingParams {
    /// The engine's settings, validated (a bad value is a `ValueError` naming it).
    pub fn to_engine(&self) -> PyResult<(kiln_protocol::SamplingParams, StoppingCriteria)> {
        let sampling = kiln_protocol::SamplingParams {
            n: self.n,
            temperature: self.temperature,
            top_k: self.top_k.max(0) as u32,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias.clone().unwrap_or_default(),
            seed: self.seed,
            logprobs: self.logprobs,
            prompt_logprobs: self.prompt_logprobs,
            structured: self
                .structured_outputs
                .as_ref()
                .map(StructuredOutputsParams::to_engine)
                .transpose()?,
        };
        let stopping = StoppingCriteria {
            max_tokens: self.max_tokens,
            min_tokens: self.min_tokens,
            stop: self.stop.clone(),
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: self.ignore_eos,
            include_stop_str_in_output: self.include_stop_str_in_output,
            skip_special_tokens: self.skip_special_tokens,
        };
        sampling.validate().map_err(to_py)?;
        stopping.validate().map_err(to_py)?;
        Ok((sampling, stopping))
    }
}
