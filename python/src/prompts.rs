//! The prompt shapes vLLM's `generate` and `chat` accept, normalized to a
//! list of engine prompts or a list of conversations.

use kiln_protocol::PromptInput;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// One prompt as given: `str`, a list of token ids, or a dict with `prompt`
/// or `prompt_token_ids`.
fn one_prompt(item: &Bound<'_, PyAny>) -> PyResult<PromptInput> {
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(PromptInput::Text(s.to_string()));
    }
    if let Ok(d) = item.cast::<PyDict>() {
        let text = d.get_item("prompt")?;
        let ids = d.get_item("prompt_token_ids")?;
        return match (text, ids) {
            (Some(t), None) => Ok(PromptInput::Text(t.extract()?)),
            (None, Some(ids)) => token_ids(&ids),
            _ => Err(PyValueError::new_err(
                "a prompt dict needs exactly one of `prompt` or `prompt_token_ids`",
            )),
        };
    }
    if item.cast::<PyList>().is_ok() || item.cast::<PyTuple>().is_ok() {
        return token_ids(item);
    }
    Err(PyTypeError::new_err(format!(
        "a prompt must be a str, a list of token ids or a dict, not {}",
        item.get_type().name()?
    )))
}

fn token_ids(ids: &Bound<'_, PyAny>) -> PyResult<PromptInput> {
    let ids: Vec<u32> = ids.extract().map_err(|_| {
        PyTypeError::new_err("prompt_token_ids must be a list of non-negative ints")
    })?;
    if ids.is_empty() {
        return Err(PyValueError::new_err("prompt_token_ids must not be empty"));
    }
    Ok(PromptInput::TokenIds(ids))
}

fn is_int_list(obj: &Bound<'_, PyAny>) -> bool {
    let Ok(list) = obj.cast::<PyList>() else {
        return false;
    };
    !list.is_empty() && list.iter().all(|x| x.extract::<u32>().is_ok())
}

/// `prompts` of `generate`: one prompt, or a list of them. A flat list of
/// ints is one tokenized prompt, as in vLLM.
pub fn prompts(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PromptInput>> {
    if obj.cast::<PyString>().is_ok() || obj.cast::<PyDict>().is_ok() || is_int_list(obj) {
        return Ok(vec![one_prompt(obj)?]);
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        return obj.try_iter()?.map(|item| one_prompt(&item?)).collect();
    }
    Err(PyTypeError::new_err(format!(
        "prompts must be a str, a dict, a list of token ids, or a list of those, not {}",
        obj.get_type().name()?
    )))
}

/// `messages` of `chat`: one conversation (a list of message dicts) or a list
/// of conversations, each message as JSON for the chat template.
pub fn conversations(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<serde_json::Value>>> {
    let list = obj
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("messages must be a list of message dicts"))?;
    let first = list
        .iter()
        .next()
        .ok_or_else(|| PyValueError::new_err("messages must not be empty"))?;
    let batch: Vec<Bound<'_, PyAny>> = if first.cast::<PyDict>().is_ok() {
        vec![obj.clone()]
    } else {
        list.iter().collect()
    };
    let dumps = obj.py().import("json")?.getattr("dumps")?;
    batch
        .iter()
        .map(|conversation| {
            let messages = conversation.cast::<PyList>().map_err(|_| {
                PyTypeError::new_err("each conversation must be a list of message dicts")
            })?;
            if messages.is_empty() {
                return Err(PyValueError::new_err("a conversation must not be empty"));
            }
            messages
                .iter()
                .map(|m| {
                    if m.cast::<PyDict>().is_err() {
                        return Err(PyTypeError::new_err(
                            "a message must be a dict with `role` and `content`",
                        ));
                    }
                    let text: String = dumps.call1((&m,))?.extract()?;
                    serde_json::from_str(&text)
                        .map_err(|e| PyValueError::new_err(format!("message is not JSON: {e}")))
                })
                .collect()
        })
        .collect()
}

/// A Python object (dict, list) as JSON.
pub fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(format!("not JSON: {e}")))
}
