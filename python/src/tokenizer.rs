//! `LLM.get_tokenizer()`: the model's own tokenizer and chat template, with
//! the method names of Hugging Face tokenizers that vLLM code calls.

use kiln_engine_api::{ChatOptions, EngineHandle};
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::prompts::conversations;

#[pyclass(module = "kiln")]
pub struct Tokenizer {
    pub handle: EngineHandle,
}

#[pymethods]
impl Tokenizer {
    #[pyo3(signature = (text, add_special_tokens=true))]
    fn encode(&self, text: &str, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        self.handle
            .tokenize(text, add_special_tokens)
            .map_err(to_py)
    }

    #[pyo3(signature = (token_ids, skip_special_tokens=true))]
    fn decode(&self, token_ids: Vec<u32>, skip_special_tokens: bool) -> PyResult<String> {
        self.handle
            .detokenize(&token_ids, skip_special_tokens)
            .map_err(to_py)
    }

    /// Render one conversation; with `tokenize=True`, its token ids.
    #[pyo3(signature = (conversation, tokenize=false, add_generation_prompt=true))]
    fn apply_chat_template<'py>(
        &self,
        py: Python<'py>,
        conversation: &Bound<'py, PyAny>,
        tokenize: bool,
        add_generation_prompt: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let messages = conversations(conversation)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let options = ChatOptions {
            add_generation_prompt,
            ..ChatOptions::default()
        };
        let text = self
            .handle
            .apply_chat_template(&messages, &options)
            .map_err(to_py)?;
        if tokenize {
            // The template writes the special tokens itself.
            let ids = self.handle.tokenize(&text, false).map_err(to_py)?;
            Ok(ids.into_pyobject(py)?.into_any())
        } else {
            Ok(text.into_pyobject(py)?.into_any())
        }
    }

    #[getter]
    fn vocab_size(&self) -> u32 {
        self.handle.info().vocab_size
    }

    fn __len__(&self) -> usize {
        self.handle.info().vocab_size as usize
    }
}
