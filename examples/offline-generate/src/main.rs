//! # kiln-example-offline
//!
//! Offline batch generation with Kiln's library API, like vLLM's
//! `LLM.generate`: start an engine on a local model, submit every prompt as
//! one batch, and print what each produced. It uses the engine as a library
//! (`kiln-engine` with its request types) and links the CPU backend plugin
//! in; it must not depend on the HTTP frontend or on any backend's kernels.
//!
//! ```text
//! cargo run --release -p kiln-example-offline -- \
//!     --temperature 0.8 --seed 1 --max-tokens 48 \
//!     --max-model-len 4096 --kv-cache-memory-bytes 536870912 \
//!     "What is the capital of France?" "Write a haiku about a kiln."
//! ```

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_engine::{BackendChoice, EngineConfig, LLM, RequestOutput};
use kiln_engine_api::ChatOptions;
use kiln_protocol::{
    EngineError, FinishReason, GenerateRequest, PromptInput, SamplingParams, StoppingCriteria,
};

/// Kiln's default model.
const DEFAULT_MODEL: &str = "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Generate text for a batch of prompts with a local model.
#[derive(Debug, Parser)]
struct Args {
    /// A `.gguf` file or a Hugging Face model directory.
    #[arg(long, env = "KILN_TEST_GGUF", default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// The prompts, each sent as a user message through the model's chat template.
    #[arg(default_values = ["What is the capital of France?", "Name the three primary colours.", "Write one sentence about the sea."])]
    prompts: Vec<String>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Most tokens to generate per prompt.
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Seed of every request's random stream (same seed, same text).
    #[arg(long)]
    seed: Option<u64>,
    /// Context length to serve [default: the model's].
    #[arg(long)]
    max_model_len: Option<usize>,
    /// Bytes of KV cache [default: the engine's budget for the device].
    #[arg(long)]
    kv_cache_memory_bytes: Option<u64>,
    /// Send the prompts as plain text instead of chat messages.
    #[arg(long)]
    raw: bool,
    /// A backend plugin to load, by name (`cuda`) or library path, instead
    /// of the linked-in CPU backend.
    #[arg(long)]
    backend: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args) {
        Ok(outputs) => {
            print_outputs(&args.prompts, &outputs);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Start an engine and run every prompt as one batch; outputs come back in
/// prompt order.
fn generate(args: &Args) -> Result<Vec<Result<RequestOutput, EngineError>>, Box<dyn Error>> {
    let llm = LLM::new(engine_config(args))?;
    let requests = args
        .prompts
        .iter()
        .map(|prompt| request(args, &llm, prompt))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(llm.generate(requests))
}

fn engine_config(args: &Args) -> EngineConfig {
    let mut config = EngineConfig::new(&args.model);
    config.backend = match &args.backend {
        None => BackendChoice::Static {
            name: "cpu".into(),
            init: kiln_backend_cpu::kiln_static_registration,
        },
        Some(path) if path.contains('/') || path.ends_with(std::env::consts::DLL_SUFFIX) => {
            BackendChoice::Path(path.into())
        }
        Some(name) => BackendChoice::Named(name.clone()),
    };
    config.max_model_len = args.max_model_len;
    config.kv_cache_memory_bytes = args.kv_cache_memory_bytes;
    config
}

/// One request: the prompt (rendered as a chat turn unless `--raw`) with the
/// sampling flags.
fn request(args: &Args, llm: &LLM, prompt: &str) -> Result<GenerateRequest, EngineError> {
    let (text, add_special_tokens) = if args.raw {
        (prompt.to_string(), true)
    } else {
        let message = serde_json::json!({"role": "user", "content": prompt});
        let options = ChatOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        // The template writes the special tokens itself.
        (
            llm.handle().apply_chat_template(&[message], &options)?,
            false,
        )
    };
    Ok(GenerateRequest {
        prompt: PromptInput::Text(text),
        sampling: SamplingParams {
            temperature: args.temperature,
            seed: args.seed,
            ..Default::default()
        },
        stopping: StoppingCriteria {
            max_tokens: Some(args.max_tokens),
            ..Default::default()
        },
        add_special_tokens,
        tag: None,
    })
}

fn print_outputs(prompts: &[String], outputs: &[Result<RequestOutput, EngineError>]) {
    for (prompt, output) in prompts.iter().zip(outputs) {
        println!("prompt: {prompt:?}");
        match output {
            Ok(out) => {
                let c = &out.outputs[0];
                println!("text:   {:?}", c.text);
                println!(
                    "tokens: {} generated, finish reason: {}\n",
                    c.token_ids.len(),
                    c.finish_reason.map_or("none", FinishReason::as_str)
                );
            }
            Err(e) => println!("error:  {e}\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_knows_the_capital_of_france() {
        let args = Args::parse_from([
            "kiln-offline-generate",
            "--max-model-len=1024",
            "--kv-cache-memory-bytes=268435456",
            "What is the capital of France?",
        ]);
        if !args.model.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the default model is missing: CI sets KILN_TEST_GGUF after `kiln pull`"
            );
            eprintln!(
                "skipping: {} is absent (set KILN_TEST_GGUF)",
                args.model.display()
            );
            return;
        }
        assert_eq!(args.temperature, 0.0, "greedy by default");
        let outputs = generate(&args).unwrap();
        let text = &outputs[0].as_ref().unwrap().outputs[0].text;
        assert!(text.contains("Paris"), "{text:?}");
    }
}
