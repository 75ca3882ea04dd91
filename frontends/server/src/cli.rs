//! The command line (clap derive). Flag names and meanings follow `vllm
//! serve`; every `serve` flag can also come from `KILN_<FLAG>` (upper case,
//! `-` → `_`), e.g. `KILN_PORT=9000`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::{parse_bytes, parse_duration};

/// Kiln: an LLM inference and serving engine.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    /// `--log-level` and `--log-format`, accepted by every subcommand.
    #[command(flatten)]
    pub logging: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log settings, accepted by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter: error, warn, info, debug, trace, or directives such as `info,kiln_engine=debug`
    #[arg(long, global = true, env = "KILN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log line format on stderr
    #[arg(long, global = true, env = "KILN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over HTTP (OpenAI, TGI, Ollama and Prometheus APIs)
    Serve(Box<ServeArgs>),
    /// Download a model into the cache without serving it
    Pull(PullArgs),
    /// List cached models and their sizes
    List(ListArgs),
    /// Compute whether and how a model fits on a device (memory math from its config)
    Plan(PlanArgs),
    /// Generate completions offline for a batch of prompts (JSONL out)
    Generate(Box<GenerateArgs>),
    /// Benchmarks
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Backend plugins
    #[command(subcommand)]
    Backend(BackendCommand),
}

/// Which model, and at which hub revision.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model: a local directory or .gguf file, a catalog alias, or a hub id org/name[:FILE.gguf|:QUANT]
    /// [default: smollm2-135m-instruct]
    #[arg(value_name = "MODEL")]
    pub model_positional: Option<String>,
    /// The model, as a flag (MODEL wins when both are given) [default: smollm2-135m-instruct]
    #[arg(long = "model", env = "KILN_MODEL", value_name = "MODEL")]
    pub model_flag: Option<String>,
    /// Hub revision (branch, tag or commit) of a hub id
    #[arg(long, env = "KILN_REVISION", default_value = kiln_hub::DEFAULT_REVISION)]
    pub revision: String,
}

impl ModelArgs {
    /// The model as named, or the default model.
    pub fn model(&self) -> &str {
        self.model_positional
            .as_deref()
            .or(self.model_flag.as_deref())
            .unwrap_or(kiln_hub::DEFAULT_MODEL)
    }
}

/// `--dtype` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// float32 on CPU, bfloat16 on GPUs that support it (else float16)
    Auto,
    /// 32-bit floats
    Float32,
    /// 16-bit IEEE floats
    Float16,
    /// 16-bit brain floats
    Bfloat16,
}

/// `--pooling` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    /// The average of every token's final hidden state
    Mean,
    /// The last token's final hidden state
    Last,
    /// The first token's ([CLS]) final hidden state
    Cls,
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_bytes(s)
}

fn fraction_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]"))
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// Engine settings shared by `serve` and `generate` (vLLM names).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Activation and KV-cache dtype
    #[arg(long, env = "KILN_DTYPE", value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
    /// Weight quantization. gguf, gptq, awq, compressed-tensors, fp8: the
    /// checkpoint's own (detected from GGUF block types or config.json's
    /// quantization_config; naming one makes a checkpoint of another kind an
    /// error). int8 or fp8 on an unquantized checkpoint: quantize its 16/32-bit
    /// Linear weights at load to 8-bit blocks, or to FP8 E4M3 with a scale per
    /// row [default: the checkpoint's]
    #[arg(long, short = 'q', env = "KILN_QUANTIZATION", value_name = "METHOD")]
    pub quantization: Option<String>,
    /// Context length served, prompt plus output [default: the model's]
    #[arg(long, env = "KILN_MAX_MODEL_LEN", value_name = "TOKENS")]
    pub max_model_len: Option<usize>,
    /// Fraction of GPU memory Kiln may use for weights, buffers and the KV cache
    #[arg(long, env = "KILN_GPU_MEMORY_UTILIZATION", default_value = "0.9", value_parser = fraction_arg)]
    pub gpu_memory_utilization: f64,
    /// KV-cache size (4GiB, 512MiB, 1G, bytes); overrides --gpu-memory-utilization [default: GPU: what is left; CPU: 4 GiB capped at half the free RAM]
    #[arg(long, env = "KILN_KV_CACHE_MEMORY_BYTES", value_name = "SIZE", value_parser = size_arg)]
    pub kv_cache_memory_bytes: Option<u64>,
    /// Tokens per KV-cache block
    #[arg(long, env = "KILN_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Most sequences in one engine step [default: 256 on GPU, 64 on CPU]
    #[arg(long, env = "KILN_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<usize>,
    /// Token budget of one engine step (prefill chunks plus decodes) [default: 8192 on GPU, 512 on CPU]
    #[arg(long, env = "KILN_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// Reuse KV blocks of shared prompt prefixes (on by default)
    #[arg(
        long,
        env = "KILN_ENABLE_PREFIX_CACHING",
        overrides_with = "no_enable_prefix_caching"
    )]
    pub enable_prefix_caching: bool,
    /// Turn automatic prefix caching off
    #[arg(
        long,
        env = "KILN_NO_ENABLE_PREFIX_CACHING",
        overrides_with = "enable_prefix_caching"
    )]
    pub no_enable_prefix_caching: bool,
    /// GPUs to split the model over (only 1 is supported yet)
    #[arg(
        long,
        env = "KILN_TENSOR_PARALLEL_SIZE",
        default_value_t = 1,
        value_name = "N"
    )]
    pub tensor_parallel_size: usize,
    /// Never capture CUDA graphs (slower decode, faster start)
    #[arg(long, env = "KILN_ENFORCE_EAGER")]
    pub enforce_eager: bool,
    /// Chat template to use instead of the model's: a file path or an inline Jinja template
    #[arg(long, env = "KILN_CHAT_TEMPLATE", value_name = "FILE_OR_TEMPLATE")]
    pub chat_template: Option<String>,
    /// Base random seed for requests that bring none [default: random]
    #[arg(long, env = "KILN_SEED")]
    pub seed: Option<u64>,
    /// How embeddings pool hidden states [default: the model's sentence-transformers
    /// pooling, else mean for encoders and last for decoders]
    #[arg(long, env = "KILN_POOLING", value_enum)]
    pub pooling: Option<PoolingArg>,
    /// Backend: auto (CUDA when usable, else CPU), cpu, cuda, or a path to a backend library
    #[arg(
        long,
        env = "KILN_BACKEND",
        default_value = "auto",
        value_name = "auto|cpu|cuda|PATH"
    )]
    pub backend: String,
    /// Extra directories to search for backend libraries (repeatable; `:`-separated in the env var)
    #[arg(
        long,
        env = "KILN_BACKEND_PATH",
        value_delimiter = ':',
        value_name = "DIR"
    )]
    pub backend_path: Vec<PathBuf>,
    /// CPU threads [default: the CPU backend's choice (physical cores)]
    #[arg(long, env = "KILN_THREADS")]
    pub threads: Option<usize>,
}

/// `kiln serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Which model to serve: MODEL or `--model`, and `--revision`.
    #[command(flatten)]
    pub model: ModelArgs,
    /// `--dtype`, `--max-model-len` and the other engine flags shared with `generate`.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to listen on
    #[arg(long, env = "KILN_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on
    #[arg(long, env = "KILN_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Names the model answers to in requests (several allowed; the first is reported) [default: the model as given]
    #[arg(long, env = "KILN_SERVED_MODEL_NAME", num_args = 1.., value_delimiter = ',', value_name = "NAME")]
    pub served_model_name: Vec<String>,
    /// Require `Authorization: Bearer KEY` on API routes (health and metrics stay open)
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Requests allowed to wait for a slot before new ones get HTTP 429
    #[arg(long, env = "KILN_MAX_WAITING_REQUESTS", default_value_t = 1024)]
    pub max_waiting_requests: usize,
    /// How long to let running requests finish after SIGTERM/Ctrl-C (30, 30s, 500ms, 2m)
    #[arg(long, env = "KILN_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration_arg, value_name = "DURATION")]
    pub shutdown_timeout: Duration,
    /// Format of the tool calls models write: hermes, llama3_json or mistral [default: from the chat template, else hermes]
    #[arg(long, env = "KILN_TOOL_CALL_PARSER", value_name = "NAME")]
    pub tool_call_parser: Option<kiln_http::tool_calls::ToolCallParser>,
    /// Allow `tool_choice: "auto"` (the model decides whether to call tools; calls are parsed from its text)
    #[arg(long, env = "KILN_ENABLE_AUTO_TOOL_CHOICE")]
    pub enable_auto_tool_choice: bool,
    /// API families to expose (comma-separated)
    #[arg(
        long,
        env = "KILN_FRONTEND",
        value_parser = crate::frontends::parser(),
        value_delimiter = ',',
        default_value = crate::frontends::DEFAULT_FRONTENDS
    )]
    pub frontend: Vec<String>,
    /// Do not serve the browser playground at /ui
    #[arg(long, env = "KILN_NO_UI")]
    pub no_ui: bool,
}

/// `kiln pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Which model to download: MODEL or `--model`, and `--revision`.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print only the local path of the model on stdout (for scripts)
    #[arg(long)]
    pub print_path: bool,
    /// No progress bars
    #[arg(long, short)]
    pub quiet: bool,
}

/// `kiln list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `--device` values of `kiln plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanDevice {
    /// NVIDIA GPUs
    Cuda,
    /// The CPU, planned against system RAM
    Cpu,
}

/// `kiln plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Model: as for serve, or a bare config.json (hub ids fetch only config.json)
    #[command(flatten)]
    pub model: ModelArgs,
    /// Memory of one GPU (24GiB, 80GB, ...) [default: nvidia-smi's answer]
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub gpu_memory: Option<u64>,
    /// Device to plan for [default: cuda with --gpu-memory or when nvidia-smi finds a GPU, else cpu]
    #[arg(long, value_enum)]
    pub device: Option<PlanDevice>,
    /// Context length to serve [default: the model's]
    #[arg(long, value_name = "TOKENS")]
    pub max_model_len: Option<usize>,
    /// GPUs the model is split over (1, 2, 4 and 8 are always shown)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub tensor_parallel_size: usize,
    /// Activation and KV-cache dtype
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    pub dtype: DtypeArg,
    /// Fraction of GPU memory to use
    #[arg(long, default_value = "0.9", value_parser = fraction_arg)]
    pub gpu_memory_utilization: f64,
    /// Fixed KV-cache size per device instead of what is left
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub kv_cache_memory_bytes: Option<u64>,
    /// Tokens per KV-cache block
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Most sequences per step [default: 256 on GPU, 64 on CPU]
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Tokens per step [default: 8192 on GPU, 512 on CPU]
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// Print the plan as JSON (schema: frontends/server/PLAN_SCHEMA.md)
    #[arg(long)]
    pub json: bool,
}

/// Sampling settings of `kiln generate` (defaults as vLLM's `SamplingParams`, except max-tokens).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most new tokens per completion
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Fewest new tokens before EOS or stop tokens count
    #[arg(long, default_value_t = 0)]
    pub min_tokens: u32,
    /// Softmax temperature; 0 is greedy
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus sampling mass; 1 disables
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Drop tokens below min-p × the top probability; 0 disables
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Multiplicative penalty on tokens already seen; 1 disables
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Additive penalty on tokens present in the output; 0 disables
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Penalty proportional to a token's count in the output; 0 disables
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Stop string (repeatable)
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-sequence token
    #[arg(long)]
    pub ignore_eos: bool,
    /// Completions per prompt
    #[arg(long, default_value_t = 1)]
    pub n: u32,
    /// Report log-probabilities with this many alternatives per token
    #[arg(long, value_name = "N")]
    pub logprobs: Option<u32>,
}

/// `kiln generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Which model to run: MODEL or `--model`, and `--revision`.
    #[command(flatten)]
    pub model: ModelArgs,
    /// `--dtype`, `--max-model-len` and the other engine flags shared with `serve`.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Sampling flags: the defaults for every prompt, which JSONL fields override per prompt.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A prompt (repeatable)
    #[arg(long = "prompt", short = 'p', value_name = "TEXT")]
    pub prompts: Vec<String>,
    /// Prompts from a file: JSONL (`.jsonl`, or lines starting with `{`) or one prompt per line; `-` is stdin
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Where to write the JSONL results [default: stdout]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Treat text prompts as a user message and apply the chat template
    #[arg(long)]
    pub chat: bool,
    /// No progress bar (long form only: `-q` is `--quantization`, as in vLLM)
    #[arg(long)]
    pub quiet: bool,
}

/// `kiln bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Benchmark an OpenAI-compatible server: TTFT, inter-token latency, throughput
    Serve(BenchServeArgs),
}

/// `kiln bench serve`.
#[derive(Debug, Clone, Args)]
pub struct BenchServeArgs {
    /// Base URL of the server
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Model name to send [default: the first of GET /v1/models]
    #[arg(long)]
    pub model: Option<String>,
    /// Concurrent clients, one run per value (comma-separated) [default: 1]
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "request_rate",
        value_name = "N,..."
    )]
    pub concurrency: Vec<usize>,
    /// Poisson request rates in requests/s, one run per value (`inf` sends all at once)
    #[arg(long, value_delimiter = ',', value_name = "R,...")]
    pub request_rate: Vec<f64>,
    /// Requests per run
    #[arg(long, default_value_t = 64)]
    pub num_prompts: usize,
    /// Prompt length in tokens (exact when the server has /tokenize)
    #[arg(long, default_value_t = 128, conflicts_with = "dataset")]
    pub input_len: usize,
    /// Tokens to generate per request (sent as max_tokens with ignore_eos)
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Prompts from a JSONL file: {"prompt": "...", "output_len": N (optional)}
    #[arg(long, value_name = "FILE")]
    pub dataset: Option<PathBuf>,
    /// Seed of the synthetic prompts and arrival times
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Untimed requests sent before each run
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Bearer token for the server
    #[arg(long, env = "KILN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Per-request timeout
    #[arg(long, default_value = "600s", value_parser = duration_arg)]
    pub timeout: Duration,
    /// Also write the results as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Constrain every request to this JSON Schema (vLLM's
    /// `structured_outputs`), to measure structured-output overhead. Pick a
    /// schema no output of --output-len tokens can complete (a long array, many
    /// required properties): requests keep generating with `ignore_eos` and
    /// `min_tokens`, so a finished grammar would leave no token to draw
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

/// `kiln backend …`.
#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Load a backend plugin and compare every operation it declares with the CPU backend
    Check(BackendCheckArgs),
}

/// `kiln backend check`.
#[derive(Debug, Clone, Args)]
pub struct BackendCheckArgs {
    /// The plugin library (e.g. target/release/libkiln_backend_cuda.so)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// JSON parameters for opening its device 0
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub device_params: String,
}
