//! `kiln generate`: offline batch generation.
//!
//! Input: `--prompt` flags, and/or `--input FILE` (`-` = stdin) holding
//! either one prompt per line, or JSONL with one object per line:
//!
//! ```json
//! {"id": "q1", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
//! {"id": "q2", "messages": [{"role": "user", "content": "Hi"}], "metadata": {"split": "dev"}}
//! {"prompt_token_ids": [1, 504, 3458]}
//! ```
//!
//! Exactly one of `prompt`, `messages` (rendered with the chat template) or
//! `prompt_token_ids`; optional `id` (default: the 0-based position),
//! `metadata` (copied to the output) and per-line overrides of `max_tokens`,
//! `min_tokens`, `temperature`, `top_p`, `top_k`, `min_p`, `seed`, `stop`,
//! `n`, `ignore_eos`, `logprobs`. Unknown fields are errors.
//!
//! Output: one JSON object per input, in input order:
//!
//! ```json
//! {"id": "q1", "prompt": "The capital of France is", "outputs": [{"index": 0, "text": " Paris.",
//!   "token_ids": [7042, 30], "finish_reason": "stop", "logprobs": null}],
//!  "usage": {"prompt_tokens": 6, "completion_tokens": 2}, "metadata": null, "error": null}
//! ```
//!
//! A failed request has `"outputs": []` and `"error": "message"`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_engine::{EngineConfig, LLM, RequestOutput};
use kiln_engine_api::ChatOptions;
use kiln_hub::ProgressMode;
use kiln_protocol::{EngineError, GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};
use serde::Deserialize;
use serde_json::{Value, json};

use super::serve::{engine_config, resolve_for_running, validate_engine_args};
use super::{CliError, hub_from_env, parse_model};
use crate::cli::{GenerateArgs, SamplingArgs};

/// Errors of `kiln generate`.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A line of the input is invalid.
    #[error("{source_name} line {line}: {reason}")]
    Input {
        /// The input's name.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No prompts at all.
    #[error(
        "no prompts: pass --prompt TEXT (repeatable) or --input FILE (one prompt per line, or JSONL)"
    )]
    NoPrompts,
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] kiln_engine::StartError),
    /// Some requests failed (their lines carry the errors).
    #[error("{failed} of {total} requests failed; see the `error` fields of the output")]
    SomeFailed {
        /// Failed requests.
        failed: usize,
        /// All requests.
        total: usize,
    },
}

/// A prompt as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text (rendered with the chat template under `--chat`).
    Text(String),
    /// Chat messages (always rendered with the chat template).
    Messages(Vec<Value>),
    /// Token ids, used as they are.
    TokenIds(Vec<u32>),
}

/// Per-prompt sampling overrides: JSONL fields named as the `kiln generate`
/// flags (`max_tokens` for `--max-tokens`). `None` keeps the flag's value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    /// Seed of this prompt's sampling (no flag); `None` leaves it to the
    /// engine's `--seed`.
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    pub n: Option<u32>,
    pub ignore_eos: Option<bool>,
    pub logprobs: Option<u32>,
}

/// One prompt to run.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateItem {
    /// Its id in the output.
    pub id: Value,
    pub prompt: Prompt,
    /// Per-prompt overrides.
    pub overrides: Overrides,
    /// Copied to the output.
    pub metadata: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: Option<Value>,
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    prompt_token_ids: Option<Vec<u32>>,
    #[serde(default)]
    metadata: Value,
    #[serde(flatten)]
    overrides: Overrides,
}

/// How an input file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line.
    Jsonl,
    /// One prompt per line (empty lines skipped).
    Lines,
}

impl InputFormat {
    /// JSONL for `.jsonl`/`.json` files or when the first non-empty line starts with `{`.
    pub fn detect(name: &str, text: &str) -> InputFormat {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if name.ends_with(".jsonl") || name.ends_with(".json") || first.starts_with('{') {
            InputFormat::Jsonl
        } else {
            InputFormat::Lines
        }
    }
}

/// Parse an input file's text; ids default to `first_index` + position.
pub fn parse_input(
    name: &str,
    text: &str,
    format: InputFormat,
    first_index: usize,
) -> Result<Vec<GenerateItem>, GenerateError> {
    let mut items = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let index = first_index + items.len();
        let item = match format {
            InputFormat::Lines => GenerateItem {
                id: json!(index.to_string()),
                prompt: Prompt::Text(line.to_string()),
                overrides: Overrides::default(),
                metadata: Value::Null,
            },
            InputFormat::Jsonl => {
                parse_line(line, index).map_err(|reason| GenerateError::Input {
                    source_name: name.to_string(),
                    line: i + 1,
                    reason,
                })?
            }
        };
        items.push(item);
    }
    Ok(items)
}

fn parse_line(line: &str, index: usize) -> Result<GenerateItem, String> {
    let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let prompt = match (l.prompt, l.messages, l.prompt_token_ids) {
        (Some(p), None, None) => Prompt::Text(p),
        (None, Some(m), None) if !m.is_empty() => Prompt::Messages(m),
        (None, None, Some(ids)) if !ids.is_empty() => Prompt::TokenIds(ids),
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err("`messages` and `prompt_token_ids` must not be empty".into());
        }
        _ => return Err("give exactly one of `prompt`, `messages` or `prompt_token_ids`".into()),
    };
    let id = match l.id {
        None | Some(Value::Null) => json!(index.to_string()),
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        Some(other) => return Err(format!("`id` must be a string or a number, got {other}")),
    };
    Ok(GenerateItem {
        id,
        prompt,
        overrides: l.overrides,
        metadata: l.metadata,
    })
}

/// The engine request for an item; `rendered` is its chat-templated text.
pub fn build_request(
    item: &GenerateItem,
    sampling: &SamplingArgs,
    rendered: Option<String>,
) -> GenerateRequest {
    let o = &item.overrides;
    let (prompt, add_special_tokens) = match (&item.prompt, rendered) {
        (_, Some(text)) => (PromptInput::Text(text), false),
        (Prompt::TokenIds(ids), None) => (PromptInput::TokenIds(ids.clone()), false),
        (Prompt::Text(t), None) => (PromptInput::Text(t.clone()), true),
        (Prompt::Messages(_), None) => (PromptInput::Text(String::new()), true),
    };
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            n: o.n.unwrap_or(sampling.n),
            temperature: o.temperature.unwrap_or(sampling.temperature),
            top_k: o.top_k.unwrap_or(sampling.top_k),
            top_p: o.top_p.unwrap_or(sampling.top_p),
            min_p: o.min_p.unwrap_or(sampling.min_p),
            repetition_penalty: sampling.repetition_penalty,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            seed: o.seed,
            logprobs: o.logprobs.or(sampling.logprobs),
            ..SamplingParams::default()
        },
        stopping: StoppingCriteria {
            max_tokens: Some(o.max_tokens.unwrap_or(sampling.max_tokens)),
            min_tokens: o.min_tokens.unwrap_or(sampling.min_tokens),
            stop: o.stop.clone().unwrap_or_else(|| sampling.stop.clone()),
            ignore_eos: o.ignore_eos.unwrap_or(sampling.ignore_eos),
            ..StoppingCriteria::default()
        },
        add_special_tokens,
        tag: Some(match &item.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    }
}

/// The messages an item is rendered from, if it is rendered at all.
pub fn chat_messages(item: &GenerateItem, chat: bool) -> Option<Vec<Value>> {
    match &item.prompt {
        Prompt::Messages(m) => Some(m.clone()),
        Prompt::Text(t) if chat => Some(vec![json!({"role": "user", "content": t})]),
        _ => None,
    }
}

/// One output line.
pub fn output_line(item: &GenerateItem, result: &Result<RequestOutput, EngineError>) -> Value {
    let prompt = match &item.prompt {
        Prompt::Text(t) => json!(t),
        Prompt::Messages(m) => json!(m),
        Prompt::TokenIds(ids) => json!(ids),
    };
    match result {
        Ok(out) => {
            let outputs: Vec<Value> = out
                .outputs
                .iter()
                .map(|o| {
                    json!({
                        "index": o.index,
                        "text": o.text,
                        "token_ids": o.token_ids,
                        "finish_reason": o.finish_reason.map(|f| f.as_str()),
                        "logprobs": if o.logprobs.iter().all(Option::is_none) { Value::Null } else { json!(o.logprobs) },
                    })
                })
                .collect();
            let completion: u32 = out.outputs.iter().map(|o| o.usage.completion_tokens).sum();
            json!({
                "id": item.id,
                "prompt": prompt,
                "outputs": outputs,
                "usage": {"prompt_tokens": out.prompt_token_ids.len(), "completion_tokens": completion},
                "metadata": item.metadata,
                "error": null,
            })
        }
        Err(e) => json!({
            "id": item.id,
            "prompt": prompt,
            "outputs": [],
            "usage": null,
            "metadata": item.metadata,
            "error": e.to_string(),
        }),
    }
}

/// Run every item on a fresh engine, rendering chat prompts first; calls
/// `on_done(finished)` as requests complete. Results are in item order.
pub fn run_generate(
    config: EngineConfig,
    items: &[GenerateItem],
    args: &GenerateArgs,
    on_done: impl FnMut(usize),
) -> Result<Vec<Result<RequestOutput, EngineError>>, GenerateError> {
    let llm = LLM::new(config)?;
    let handle = llm.handle();
    let options = ChatOptions {
        add_generation_prompt: true,
        ..ChatOptions::default()
    };
    let mut results: Vec<Option<Result<RequestOutput, EngineError>>> = vec![None; items.len()];
    let mut requests = Vec::new();
    let mut positions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let rendered = match chat_messages(item, args.chat) {
            Some(messages) => match handle.apply_chat_template(&messages, &options) {
                Ok(text) => Some(text),
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            },
            None => None,
        };
        requests.push(build_request(item, &args.sampling, rendered));
        positions.push(i);
    }
    let outputs = llm.generate_with_progress(requests, on_done);
    for (pos, out) in positions.into_iter().zip(outputs) {
        results[pos] = Some(out);
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(EngineError::Internal("request lost".into()))))
        .collect())
}

fn read_input(path: &Path) -> Result<(String, String), CliError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        return Ok(("stdin".into(), text));
    }
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

/// All items from the flags and the input file, in order.
pub fn collect_items(args: &GenerateArgs) -> Result<Vec<GenerateItem>, CliError> {
    let mut items: Vec<GenerateItem> = args
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| GenerateItem {
            id: json!(i.to_string()),
            prompt: Prompt::Text(p.clone()),
            overrides: Overrides::default(),
            metadata: Value::Null,
        })
        .collect();
    if let Some(path) = &args.input {
        let (name, text) = read_input(path)?;
        let format = InputFormat::detect(&name, &text);
        items.extend(parse_input(&name, &text, format, items.len())?);
    }
    if items.is_empty() {
        return Err(GenerateError::NoPrompts.into());
    }
    Ok(items)
}

fn open_output(path: Option<&PathBuf>) -> Result<Box<dyn Write>, CliError> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| CliError::Io {
                path: p.clone(),
                source,
            },
        )?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// `kiln generate`.
pub fn execute(args: &GenerateArgs) -> Result<(), CliError> {
    validate_engine_args(&args.engine)?;
    let items = collect_items(args)?;
    let progress = if args.quiet {
        ProgressMode::Hidden
    } else {
        ProgressMode::Bars
    };
    let hub = hub_from_env(progress)?;
    let spec = parse_model(&args.model)?;
    let model = resolve_for_running(&hub, &spec, &args.model.revision)?;
    let config = engine_config(&model, &args.engine);
    let bar = progress.count_bar("generating", items.len() as u64);
    let results = run_generate(config, &items, args, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let out_path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("<stdout>"));
    let io_err = |source| CliError::Io {
        path: out_path.clone(),
        source,
    };
    let mut out = open_output(args.output.as_ref())?;
    for (item, result) in items.iter().zip(&results) {
        writeln!(out, "{}", output_line(item, result)).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        return Err(GenerateError::SomeFailed {
            failed,
            total: results.len(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn generate_args(argv: &[&str]) -> GenerateArgs {
        let mut full = vec!["kiln", "generate"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Generate(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(
            InputFormat::detect("p.txt", "hello\nworld"),
            InputFormat::Lines
        );
        assert_eq!(
            InputFormat::detect("p.txt", "\n  {\"prompt\": \"x\"}"),
            InputFormat::Jsonl
        );
        assert_eq!(InputFormat::detect("p.jsonl", ""), InputFormat::Jsonl);
    }

    #[test]
    fn jsonl_lines_with_overrides_and_errors() {
        let text = r#"{"id": "a", "prompt": "x", "max_tokens": 3, "temperature": 0, "metadata": {"k": 1}}

{"messages": [{"role": "user", "content": "hi"}]}
{"prompt_token_ids": [1, 2], "id": 7}"#;
        let items = parse_input("in.jsonl", text, InputFormat::Jsonl, 5).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].id, json!("a"));
        assert_eq!(items[0].overrides.max_tokens, Some(3));
        assert_eq!(items[0].metadata, json!({"k": 1}));
        assert_eq!(items[1].id, json!("6"));
        assert!(matches!(items[1].prompt, Prompt::Messages(_)));
        assert_eq!(items[2].prompt, Prompt::TokenIds(vec![1, 2]));
        assert_eq!(items[2].id, json!(7));
        for (bad, what) in [
            (r#"{"prompt": "x", "temprature": 0}"#, "temprature"),
            (r#"{"prompt": "x", "messages": []}"#, "exactly one"),
            (r#"{"id": [1], "prompt": "x"}"#, "`id`"),
            ("not json", "expected"),
        ] {
            let e = parse_input(
                "in.jsonl",
                &format!("{{\"prompt\": \"ok\"}}\n{bad}"),
                InputFormat::Jsonl,
                0,
            )
            .unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("in.jsonl line 2:") && msg.contains(what),
                "{msg}"
            );
        }
    }

    #[test]
    fn requests_take_flags_then_overrides() {
        let args = generate_args(&[
            "--prompt",
            "a",
            "--max-tokens",
            "9",
            "--temperature",
            "0.5",
            "--stop",
            "\n",
            "--chat",
        ]);
        let items = collect_items(&args).unwrap();
        assert_eq!(items[0].prompt, Prompt::Text("a".into()));
        let r = build_request(&items[0], &args.sampling, None);
        assert_eq!(r.stopping.max_tokens, Some(9));
        assert_eq!(r.sampling.temperature, 0.5);
        assert_eq!(r.stopping.stop, ["\n"]);
        assert!(r.add_special_tokens);
        let mut item = items[0].clone();
        item.overrides = Overrides {
            max_tokens: Some(2),
            temperature: Some(0.0),
            ..Overrides::default()
        };
        let r = build_request(&item, &args.sampling, Some("<chat>".into()));
        assert_eq!(r.stopping.max_tokens, Some(2));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.prompt, PromptInput::Text("<chat>".into()));
        assert!(
            !r.add_special_tokens,
            "a rendered template already holds its special tokens"
        );
        assert_eq!(chat_messages(&items[0], true).unwrap()[0]["content"], "a");
        assert!(chat_messages(&items[0], false).is_none());
        assert!(matches!(
            collect_items(&generate_args(&[])),
            Err(CliError::Generate(GenerateError::NoPrompts))
        ));
    }

    #[test]
    fn output_lines() {
        let item = GenerateItem {
            id: json!("q"),
            prompt: Prompt::Text("p".into()),
            overrides: Overrides::default(),
            metadata: json!({"m": true}),
        };
        let out = RequestOutput {
            request_id: 1,
            prompt_token_ids: vec![1, 2, 3],
            prompt_logprobs: None,
            outputs: vec![kiln_engine::CompletionOutput {
                index: 0,
                text: " x".into(),
                token_ids: vec![9],
                logprobs: vec![None],
                finish_reason: Some(kiln_protocol::FinishReason::Length),
                usage: kiln_protocol::Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1,
                    cached_prompt_tokens: 0,
                },
                ..Default::default()
            }],
        };
        let v = output_line(&item, &Ok(out));
        assert_eq!(v["outputs"][0]["finish_reason"], "length");
        assert_eq!(v["outputs"][0]["logprobs"], Value::Null);
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 1})
        );
        assert_eq!(v["metadata"], json!({"m": true}));
        let v = output_line(&item, &Err(EngineError::Internal("boom".into())));
        assert_eq!(v["outputs"], json!([]));
        assert!(v["error"].as_str().unwrap().contains("boom"));
    }
}
