//! Engine configuration: what the `kiln serve` flags (vLLM names) map onto.

use std::path::PathBuf;

/// Which backend plugin runs the model.
#[derive(Debug, Clone, Default)]
pub enum BackendChoice {
    /// The best available: CUDA when a GPU is usable, else CPU.
    #[default]
    Auto,
    /// A backend by name (`cpu`, `cuda`): the best-scoring `kiln_backend_<name>*` library.
    Named(String),
    /// A library file.
    Path(PathBuf),
    /// A backend linked into the binary (tests, single-binary builds).
    Static {
        /// Name for logs.
        name: String,
        /// Its registration function (`kiln_static_registration`).
        init: kiln_plugin_host::StaticInit,
    },
}

/// Activation dtype (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DTypeChoice {
    /// float32 on CPU; bfloat16 on GPUs that support it, else float16.
    #[default]
    Auto,
    Float32,
    Float16,
    BFloat16,
}

impl std::str::FromStr for DTypeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DTypeChoice::Auto),
            "float32" | "f32" | "float" => Ok(DTypeChoice::Float32),
            "float16" | "f16" | "half" => Ok(DTypeChoice::Float16),
            "bfloat16" | "bf16" => Ok(DTypeChoice::BFloat16),
            other => Err(format!(
                "unknown dtype `{other}`; expected auto, float32, float16 or bfloat16"
            )),
        }
    }
}

/// Everything needed to start an engine. Defaults follow vLLM where it has a flag.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A local model: a Hugging Face directory or a `.gguf` file (resolve hub ids and aliases first).
    pub model: PathBuf,
    /// Names the model answers to; the first is the primary (`--served-model-name`).
    /// Empty: derived from the model path.
    pub served_model_names: Vec<String>,
    /// `--backend`: a backend by name, a library path, or automatic by score.
    pub backend: BackendChoice,
    /// Extra places to look for backend libraries (`--backend-path`).
    pub backend_search_paths: Vec<PathBuf>,
    /// Device index within the backend.
    pub device_index: u32,
    /// CPU threads (`--threads`); `None`: the backend's default (physical cores).
    pub threads: Option<usize>,
    /// Activation dtype (`--dtype`).
    pub dtype: DTypeChoice,
    /// The weight quantization the checkpoint must have (`--quantization`:
    /// `gguf`, `gptq`, `awq`, `compressed-tensors`); `None`: whatever it has.
    pub quantization: Option<String>,
    /// Served context length (`--max-model-len`); `None`: the model's.
    pub max_model_len: Option<usize>,
    /// Tokens per KV block (`--block-size`, default 16).
    pub block_size: usize,
    /// Explicit KV-cache budget in bytes (`--kv-cache-memory-bytes`); overrides utilization.
    pub kv_cache_memory_bytes: Option<u64>,
    /// Fraction of device memory to use on GPUs (`--gpu-memory-utilization`, default 0.9).
    pub gpu_memory_utilization: f32,
    /// Most sequences per step (`--max-num-seqs`); `None`: the device's [`crate::defaults::DeviceDefaults`].
    pub max_num_seqs: Option<usize>,
    /// Token budget per step (`--max-num-batched-tokens`); `None`: the device's [`crate::defaults::DeviceDefaults`].
    pub max_num_batched_tokens: Option<usize>,
    /// Automatic prefix caching (`--enable-prefix-caching`, default on).
    pub enable_prefix_caching: bool,
    /// Requests allowed to wait before new ones get 429 (`--max-waiting-requests`).
    pub max_waiting_requests: usize,
    /// Chat template override: a file path or an inline template (`--chat-template`).
    pub chat_template: Option<String>,
    /// Base seed for requests without one (`--seed`); `None`: random.
    pub seed: Option<u64>,
    /// Disable graph capture (`--enforce-eager`).
    pub enforce_eager: bool,
    /// Backends linked into the binary, by name, used when no library of
    /// that name is found (a single-binary build still runs on the CPU).
    pub builtin_backends: Vec<(String, kiln_plugin_host::StaticInit)>,
    /// Draw tokens on the device when the backend can (only token ids and
    /// requested log-probabilities cross to the host); `false` copies every
    /// row's logits to the host sampler.
    pub device_sampling: bool,
    /// Tensor parallelism (`--tensor-parallel-size`); only 1 is supported.
    pub tensor_parallel_size: usize,
    /// Where the model came from, for `/info` (hub id or alias); `None`: the path.
    pub model_origin: Option<String>,
    /// How embeddings pool hidden states (`--pooling`); `None`: the model's
    /// sentence-transformers pooling, else mean for encoders and the last
    /// token for decoders.
    pub pooling: Option<kiln_protocol::Pooling>,
}

impl EngineConfig {
    /// Defaults for a local model path.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        EngineConfig {
            model: model.into(),
            served_model_names: Vec::new(),
            backend: BackendChoice::Auto,
            backend_search_paths: Vec::new(),
            device_index: 0,
            threads: None,
            dtype: DTypeChoice::Auto,
            quantization: None,
            max_model_len: None,
            block_size: 16,
            kv_cache_memory_bytes: None,
            gpu_memory_utilization: 0.9,
            max_num_seqs: None,
            max_num_batched_tokens: None,
            enable_prefix_caching: true,
            max_waiting_requests: 1024,
            chat_template: None,
            seed: None,
            enforce_eager: false,
            device_sampling: true,
            builtin_backends: Vec::new(),
            tensor_parallel_size: 1,
            model_origin: None,
            pooling: None,
        }
    }
}
