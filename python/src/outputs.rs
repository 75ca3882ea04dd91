//! `RequestOutput`, `CompletionOutput` and `Logprob`, shaped as vLLM's.

use std::collections::BTreeMap;

use kiln_engine_api::EngineHandle;
use kiln_protocol::{PromptToken, StopReason, TopLogprob};
use pyo3::prelude::*;

/// One token's log-probability; `rank` 1 is the most likely token.
#[pyclass(module = "kiln", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct Logprob {
    pub logprob: f32,
    pub rank: Option<u32>,
    pub decoded_token: Option<String>,
}

#[pymethods]
impl Logprob {
    fn __repr__(&self) -> String {
        format!(
            "Logprob(logprob={}, rank={:?}, decoded_token={:?})",
            self.logprob, self.rank, self.decoded_token
        )
    }
}

/// One generated sequence of a request.
#[pyclass(module = "kiln", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct CompletionOutput {
    pub index: u32,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Sum of the sampled tokens' log-probabilities; `None` unless `logprobs` was asked.
    pub cumulative_logprob: Option<f64>,
    /// Per generated token: token id → `Logprob`, the sampled token and the
    /// top alternatives; `None` unless `logprobs` was asked.
    pub logprobs: Option<Vec<BTreeMap<u32, Logprob>>>,
    /// `"stop"`, `"length"`, `"abort"`, or `None` while generating.
    pub finish_reason: Option<String>,
    /// The stop string or stop token id that ended it; `None` for EOS and length.
    pub stop_reason: Option<StopReasonValue>,
}

#[derive(Debug, Clone, IntoPyObject)]
pub enum StopReasonValue {
    Token(u32),
    Text(String),
}

#[pymethods]
impl CompletionOutput {
    fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "CompletionOutput(index={}, text={:?}, token_ids={:?}, cumulative_logprob={:?}, finish_reason={:?})",
            self.index, self.text, self.token_ids, self.cumulative_logprob, self.finish_reason
        )
    }
}

/// The result of one prompt.
#[pyclass(module = "kiln", get_all, from_py_object)]
#[derive(Debug, Clone)]
pub struct RequestOutput {
    pub request_id: String,
    /// The prompt text (the rendered template for `chat`); `None` for token-id prompts.
    pub prompt: Option<String>,
    pub prompt_token_ids: Vec<u32>,
    /// Per prompt token: `None` for the first, else token id → `Logprob`
    /// for the prompt token and its top alternatives; `None` unless
    /// `prompt_logprobs` was asked.
    pub prompt_logprobs: Option<Vec<Option<BTreeMap<u32, Logprob>>>>,
    pub outputs: Vec<CompletionOutput>,
    /// True once every sequence has ended.
    pub finished: bool,
}

#[pymethods]
impl RequestOutput {
    fn __repr__(&self) -> String {
        format!(
            "RequestOutput(request_id={:?}, prompt={:?}, prompt_token_ids={:?}, outputs=[{}], finished={})",
            self.request_id,
            self.prompt,
            self.prompt_token_ids,
            self.outputs
                .iter()
                .map(CompletionOutput::__repr__)
                .collect::<Vec<_>>()
                .join(", "),
            self.finished
        )
    }
}

impl RequestOutput {
    /// The Python view of an engine output. `n` sequences were asked for:
    /// the request is finished when all `n` have a finish reason.
    pub fn from_engine(
        out: &kiln_engine::RequestOutput,
        prompt: Option<String>,
        n: u32,
        want_logprobs: bool,
        handle: &EngineHandle,
    ) -> RequestOutput {
        let outputs: Vec<CompletionOutput> = out
            .outputs
            .iter()
            .map(|o| completion(o, want_logprobs, handle))
            .collect();
        let finished =
            outputs.len() == n as usize && outputs.iter().all(|o| o.finish_reason.is_some());
        RequestOutput {
            request_id: out.request_id.to_string(),
            prompt,
            prompt_token_ids: out.prompt_token_ids.clone(),
            prompt_logprobs: out.prompt_logprobs.as_deref().map(prompt_logprobs),
            outputs,
            finished,
        }
    }
}

fn prompt_logprobs(tokens: &[PromptToken]) -> Vec<Option<BTreeMap<u32, Logprob>>> {
    tokens
        .iter()
        .map(|t| {
            let logprob = t.logprob?;
            let mut map = top_alternatives(&t.top_logprobs);
            map.insert(
                t.id,
                Logprob {
                    logprob,
                    rank: Some(t.rank),
                    decoded_token: Some(t.piece.clone()),
                },
            );
            Some(map)
        })
        .collect()
}

/// Token id → `Logprob` of alternatives listed most likely first.
fn top_alternatives(top: &[TopLogprob]) -> BTreeMap<u32, Logprob> {
    top.iter()
        .enumerate()
        .map(|(i, t)| {
            let entry = Logprob {
                logprob: t.logprob,
                rank: Some(i as u32 + 1),
                decoded_token: Some(t.text.clone()),
            };
            (t.id, entry)
        })
        .collect()
}

fn completion(
    o: &kiln_engine::CompletionOutput,
    want_logprobs: bool,
    handle: &EngineHandle,
) -> CompletionOutput {
    let logprobs = want_logprobs.then(|| {
        o.token_ids
            .iter()
            .zip(&o.logprobs)
            .zip(&o.top_logprobs)
            .map(|((&id, &sampled), top)| {
                let mut map = top_alternatives(top);
                if let Some(logprob) = sampled {
                    map.entry(id).or_insert_with(|| Logprob {
                        logprob,
                        rank: None,
                        decoded_token: handle.token_text(id),
                    });
                }
                map
            })
            .collect()
    });
    let cumulative_logprob = if want_logprobs {
        o.logprobs
            .iter()
            .map(|l| l.map(f64::from))
            .sum::<Option<f64>>()
    } else {
        None
    };
    CompletionOutput {
        index: o.index,
        text: o.text.clone(),
        token_ids: o.token_ids.clone(),
        cumulative_logprob,
        logprobs,
        finish_reason: o.finish_reason.map(|f| f.as_str().to_string()),
        stop_reason: match &o.stop_reason {
            Some(StopReason::StopToken(id)) => Some(StopReasonValue::Token(*id)),
            Some(StopReason::StopString(s)) => Some(StopReasonValue::Text(s.clone())),
            Some(StopReason::Eos(_)) | None => None,
        },
    }
}
