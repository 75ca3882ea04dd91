//! `LLM(model, **kwargs)` → the engine configuration `kiln serve` would
//! build. Keyword arguments are turned into the CLI's own flags
//! (`max_model_len=2048` → `--max-model-len 2048`) and parsed by the CLI's
//! parser, so names, defaults, environment variables, validation and model
//! resolution are the command line's, defined once.

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use kiln::cli::{EngineArgs, LogArgs, ModelArgs};
use kiln::commands::serve::{engine_config, resolve_for_running, validate_engine_args};
use kiln::commands::{hub_from_env, parse_model};
use kiln_engine::EngineConfig;
use kiln_hub::ProgressMode;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyTuple};

use crate::errors::EngineError;

#[derive(Debug, Parser)]
#[command(name = "kiln.LLM", no_binary_name = true, disable_help_flag = true)]
pub struct LlmArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub logging: LogArgs,
}

/// vLLM arguments that mean nothing to Kiln's engine and are accepted so
/// that vLLM code runs unchanged: tokenizer loading is always the model's own
/// and needs no remote code.
const ACCEPTED_AND_IGNORED: &[&str] = &["trust_remote_code", "tokenizer_mode", "disable_log_stats"];

/// The CLI flags for `model` and the keyword arguments.
pub fn flags(model: Option<&str>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<String>> {
    let mut flags = Vec::new();
    if let Some(model) = model {
        flags.push("--model".to_string());
        flags.push(model.to_string());
    }
    let Some(kwargs) = kwargs else {
        return Ok(flags);
    };
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        if ACCEPTED_AND_IGNORED.contains(&key.as_str()) || value.is_none() {
            continue;
        }
        if key == "model" {
            return Err(PyTypeError::new_err(
                "LLM() got the model twice; pass it once, as `model`",
            ));
        }
        let flag = format!("--{}", key.replace('_', "-"));
        if let Ok(b) = value.cast::<PyBool>() {
            match (b.is_true(), key.as_str()) {
                (true, _) => flags.push(flag),
                // The one boolean that defaults to on has a negative flag.
                (false, "enable_prefix_caching") => flags.push("--no-enable-prefix-caching".into()),
                (false, _) => {}
            }
            continue;
        }
        let text = if value.cast::<PyList>().is_ok() || value.cast::<PyTuple>().is_ok() {
            let items: Vec<String> = value
                .try_iter()?
                .map(|item| item.and_then(|i| i.str().map(|s| s.to_string())))
                .collect::<PyResult<_>>()?;
            items.join(":")
        } else {
            value.str()?.to_string()
        };
        flags.push(flag);
        flags.push(text);
    }
    Ok(flags)
}

/// Parse the flags as the CLI would. Unknown keywords are `TypeError`s, bad
/// values `ValueError`s, both with the parser's one-line reason.
pub fn parse(flags: Vec<String>) -> PyResult<LlmArgs> {
    LlmArgs::try_parse_from(flags).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid argument")
            .trim_start_matches("error: ")
            .to_string();
        match (e.kind(), e.get(ContextKind::InvalidArg)) {
            (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => {
                PyTypeError::new_err(format!(
                    "LLM() got an unexpected keyword argument '{}'",
                    flag.trim_start_matches('-').replace('-', "_")
                ))
            }
            _ => PyValueError::new_err(first),
        }
    })
}

/// Resolve the model (cache, catalog alias or hub, as `kiln serve` does) and
/// build the engine configuration.
pub fn engine_config_for(args: &LlmArgs) -> PyResult<EngineConfig> {
    validate_engine_args(&args.engine).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let hub = hub_from_env(ProgressMode::Bars).map_err(|e| EngineError::new_err(e.to_string()))?;
    let spec = parse_model(&args.model).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let model = resolve_for_running(&hub, &spec, &args.model.revision)
        .map_err(|e| EngineError::new_err(e.to_string()))?;
    Ok(engine_config(&model, &args.engine))
}
