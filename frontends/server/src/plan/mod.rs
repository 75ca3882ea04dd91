//! `kiln plan`: how a model fits on a device, from its own config and
//! weights. [`build_plan`] is pure; [`facts`] reads models; [`render`]
//! prints. The JSON form is documented in `PLAN_SCHEMA.md`.

pub mod facts;
pub mod math;
pub mod render;

use serde::Serialize;

use facts::{ModelFacts, WeightOrigin};
use kiln_models::config::WindowLayout;
use kiln_protocol::FormatBytes;
use math::{
    CPU_DEFAULTS, Device, GPU_DEFAULTS, ModelShape, PlanSettings, TP_SIZES, TpOption, WeightSplit,
};

/// Version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Settings that cannot be planned.
    #[error("{0}")]
    Settings(String),
    /// The model could not be read.
    #[error(transparent)]
    Facts(#[from] facts::FactsError),
}

/// The activation/KV dtype asked for (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeRequest {
    /// float32 on CPU, bfloat16 on GPU (what the engine picks on GPUs that have it).
    Auto,
    /// 4 bytes per element.
    Float32,
    /// 2 bytes per element (IEEE half precision).
    Float16,
    /// 2 bytes per element (float32's exponent range).
    BFloat16,
}

/// What the user asked to plan for: the `kiln plan` flags of the same names.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// How the model was named (for the recommended command).
    pub model_name: String,
    /// `--device`, with `--gpu-memory` or the detected memory.
    pub device: Device,
    pub dtype: DtypeRequest,
    /// `--max-model-len`; `None`: the model's.
    pub max_model_len: Option<usize>,
    /// GPUs the model is split over.
    pub tensor_parallel_size: usize,
    /// Fraction of each GPU's memory to use, in (0, 1].
    pub gpu_memory_utilization: f64,
    /// KV-cache bytes per device; `None`: what is left after weights and buffers.
    pub kv_cache_memory_bytes: Option<u64>,
    /// Tokens per KV block.
    pub block_size: usize,
    /// `--max-num-seqs`; `None`: the device default.
    pub max_num_seqs: Option<usize>,
    /// `--max-num-batched-tokens`; `None`: the device default.
    pub max_num_batched_tokens: Option<usize>,
}

/// Model facts as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    /// The model as named.
    pub name: String,
    /// `architectures[0]`.
    pub architecture: String,
    /// Dimensions.
    #[serde(flatten)]
    pub shape: ModelShape,
    /// Parameter count (embeddings counted once when tied).
    pub parameters: u64,
    /// Parameters one token computes with (fewer than `parameters` for a
    /// mixture of experts).
    pub active_parameters: u64,
    /// The layers' sliding window, when any layer has one.
    pub sliding_window: Option<WindowReport>,
    /// `GGUF Q4_1`, `safetensors BF16`, `bfloat16 (estimated)`…
    pub weight_format: String,
    /// Stored bytes per tensor format, most first (empty when estimated).
    pub bytes_by_format: Vec<FormatBytes>,
    /// Total weight bytes.
    pub weight_bytes: u64,
    /// Split by tensor parallelism.
    pub weight_split: WeightSplit,
    /// How the weight bytes were obtained.
    pub weight_bytes_origin: WeightOrigin,
}

/// Which layers slide, and whether the KV behind the window is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowReport {
    /// Tokens a row of a sliding layer sees, its own included.
    pub window: usize,
    /// Layers that slide.
    pub sliding_layers: usize,
    /// Attention layers.
    pub layers: usize,
    /// Whether blocks behind the window return to the pool (only when every
    /// layer slides).
    pub freed: bool,
}

impl WindowReport {
    fn of(layout: WindowLayout) -> Option<WindowReport> {
        match layout {
            WindowLayout::None => None,
            WindowLayout::All { window, layers } => Some(WindowReport {
                window,
                sliding_layers: layers,
                layers,
                freed: true,
            }),
            WindowLayout::Some {
                window,
                sliding,
                layers,
            } => Some(WindowReport {
                window,
                sliding_layers: sliding,
                layers,
                freed: false,
            }),
        }
    }
}

/// Effective settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsReport {
    /// `cuda` or `cpu`.
    pub device: &'static str,
    /// Memory per device (`null` for CPU when unknown).
    pub device_memory_bytes: Option<u64>,
    /// Fraction of GPU memory used, in (0, 1]; ignored on CPU.
    pub gpu_memory_utilization: f64,
    /// Activation and KV dtype.
    pub dtype: &'static str,
    /// Its bytes per element.
    pub dtype_bytes: u64,
    /// Served context length.
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Sequences per step.
    pub max_num_seqs: usize,
    /// Tokens per step, as the engine sizes buffers.
    pub max_num_batched_tokens: usize,
    /// Explicit KV budget.
    pub kv_cache_memory_bytes: Option<u64>,
    /// Requested tensor parallelism.
    pub tensor_parallel_size: usize,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Whether the model fits as asked.
    pub fits_as_requested: bool,
    /// Suggested GPUs (`null` when nothing fits).
    pub tensor_parallel_size: Option<usize>,
    /// Suggested context length.
    pub max_model_len: Option<usize>,
    /// `kiln serve` flags.
    pub flags: Vec<String>,
    /// The command line.
    pub command: String,
    /// Explanations.
    pub notes: Vec<String>,
}

/// The whole plan (`kiln plan --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// [`SCHEMA_VERSION`] of the writer (see `PLAN_SCHEMA.md`).
    pub schema_version: u32,
    /// The model's shape, parameter counts and weight bytes.
    pub model: ModelReport,
    /// The settings after device defaults and the model's context length fill in
    /// what the flags left out.
    pub settings: SettingsReport,
    /// KV bytes per token on one device holding every KV head.
    pub kv_bytes_per_token: u64,
    /// KV blocks one sequence of `max_model_len` tokens holds at once (its
    /// whole length, or its sliding window's worth).
    pub kv_blocks_per_sequence: usize,
    /// What the sliding window does to each sequence's KV, in words.
    pub window_note: Option<String>,
    /// One entry per tensor-parallel size (1, 2, 4, 8 on GPU; 1 on CPU).
    pub options: Vec<TpOption>,
    /// The suggestion.
    pub recommendation: Recommendation,
}

fn dtype_for(request: DtypeRequest, device: &Device) -> (&'static str, u64) {
    match (request, device) {
        (DtypeRequest::Float32, _) | (DtypeRequest::Auto, Device::Cpu { .. }) => ("float32", 4),
        (DtypeRequest::Float16, _) => ("float16", 2),
        (DtypeRequest::BFloat16, _) | (DtypeRequest::Auto, Device::Cuda { .. }) => ("bfloat16", 2),
    }
}

fn settings_for(
    request: &PlanRequest,
    shape: &ModelShape,
    window: WindowLayout,
) -> Result<(PlanSettings, &'static str), PlanError> {
    let bad = |m: String| Err(PlanError::Settings(m));
    let native = shape.max_position_embeddings;
    let max_model_len = request.max_model_len.unwrap_or(native);
    if max_model_len == 0 || max_model_len > native {
        return bad(format!(
            "--max-model-len must be between 1 and the model's context length {native}"
        ));
    }
    if !(request.gpu_memory_utilization > 0.0 && request.gpu_memory_utilization <= 1.0) {
        return bad(format!(
            "--gpu-memory-utilization must be in (0, 1], got {}",
            request.gpu_memory_utilization
        ));
    }
    if !(1..=256).contains(&request.block_size) || !request.block_size.is_power_of_two() {
        return bad(format!(
            "--block-size must be a power of two between 1 and 256, got {}",
            request.block_size
        ));
    }
    if request.tensor_parallel_size == 0 {
        return bad("--tensor-parallel-size must be at least 1".into());
    }
    if matches!(request.device, Device::Cpu { .. }) && request.tensor_parallel_size != 1 {
        return bad(
            "tensor parallelism applies to GPUs; use --tensor-parallel-size 1 with --device cpu"
                .into(),
        );
    }
    let defaults = match request.device {
        Device::Cuda { .. } => GPU_DEFAULTS,
        Device::Cpu { .. } => CPU_DEFAULTS,
    };
    let (dtype_name, dtype_bytes) = dtype_for(request.dtype, &request.device);
    let settings = PlanSettings {
        device: request.device,
        dtype_bytes,
        max_model_len,
        gpu_memory_utilization: request.gpu_memory_utilization,
        kv_cache_memory_bytes: request.kv_cache_memory_bytes,
        block_size: request.block_size,
        max_num_seqs: request.max_num_seqs.unwrap_or(defaults.max_num_seqs).max(1),
        max_num_batched_tokens: request
            .max_num_batched_tokens
            .unwrap_or(defaults.max_num_batched_tokens)
            .max(1),
        window,
    };
    Ok((settings, dtype_name))
}

/// Compute the plan.
pub fn build_plan(facts: &ModelFacts, request: &PlanRequest) -> Result<Plan, PlanError> {
    let (settings, dtype_name) = settings_for(request, &facts.shape, facts.window)?;
    let sizes: Vec<usize> = match request.device {
        Device::Cuda { .. } => {
            let mut s = TP_SIZES.to_vec();
            if !s.contains(&request.tensor_parallel_size) {
                s.push(request.tensor_parallel_size);
                s.sort_unstable();
            }
            s
        }
        Device::Cpu { .. } => vec![1],
    };
    let options: Vec<TpOption> = sizes
        .iter()
        .map(|&n| math::evaluate(&facts.shape, &facts.weights, &settings, n))
        .collect();
    let recommendation = recommend(request, &settings, &options);
    let (device, device_memory_bytes) = match request.device {
        Device::Cuda { memory_bytes } => ("cuda", Some(memory_bytes)),
        Device::Cpu { memory_bytes } => ("cpu", memory_bytes),
    };
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        model: ModelReport {
            name: request.model_name.clone(),
            architecture: facts.architecture.clone(),
            shape: facts.shape,
            parameters: facts.parameters,
            active_parameters: facts.active_parameters,
            sliding_window: WindowReport::of(facts.window),
            weight_format: facts.weight_format.clone(),
            bytes_by_format: facts.bytes_by_format.clone(),
            weight_bytes: facts.weights.total(),
            weight_split: facts.weights,
            weight_bytes_origin: facts.weight_origin,
        },
        settings: SettingsReport {
            device,
            device_memory_bytes,
            gpu_memory_utilization: request.gpu_memory_utilization,
            dtype: dtype_name,
            dtype_bytes: settings.dtype_bytes,
            max_model_len: settings.max_model_len,
            block_size: settings.block_size,
            max_num_seqs: settings.max_num_seqs,
            max_num_batched_tokens: settings.effective_batched_tokens(),
            kv_cache_memory_bytes: request.kv_cache_memory_bytes,
            tensor_parallel_size: request.tensor_parallel_size,
        },
        kv_bytes_per_token: math::kv_bytes_per_token(
            &facts.shape,
            facts.shape.kv_heads,
            settings.dtype_bytes,
        ),
        kv_blocks_per_sequence: settings.kv_blocks_per_sequence(),
        window_note: kiln_engine::memory::window_note(
            settings.window,
            settings.block_size,
            settings.kv_blocks_per_sequence(),
            settings.max_model_len,
        ),
        options,
        recommendation,
    })
}

fn recommend(
    request: &PlanRequest,
    settings: &PlanSettings,
    options: &[TpOption],
) -> Recommendation {
    let requested = options
        .iter()
        .find(|o| o.tensor_parallel_size == request.tensor_parallel_size);
    let fits_as_requested = requested.is_some_and(|o| o.fits);
    let mut notes = Vec::new();
    let mut max_model_len = settings.max_model_len;
    let chosen = if fits_as_requested {
        requested
    } else if let Some(o) = options.iter().find(|o| o.fits) {
        notes.push(format!(
            "does not fit on {} device(s) at max_model_len {}: {}; the smallest fitting tensor-parallel size is {}",
            request.tensor_parallel_size,
            settings.max_model_len,
            requested.and_then(|r| r.reason.clone()).unwrap_or_default(),
            o.tensor_parallel_size
        ));
        if let Some(len) = requested
            .filter(|r| r.valid && r.kv_tokens > 0)
            .and_then(|r| math::longest_fitting_len(r.kv_tokens, settings.block_size))
        {
            notes.push(format!(
                "or stay on {} device(s) with --max-model-len {len}",
                request.tensor_parallel_size
            ));
        }
        Some(o)
    } else {
        None
    };
    // When nothing fits at full length, try a shorter context on the requested size.
    let shorter = match (chosen, requested) {
        (None, Some(r)) if r.valid && r.kv_tokens > 0 => {
            math::longest_fitting_len(r.kv_tokens, settings.block_size)
        }
        _ => None,
    };
    let chosen = match (chosen, shorter) {
        (Some(c), _) => Some(c),
        (None, Some(len)) => {
            notes.push(format!(
                "max_model_len {} does not fit; the KV cache holds {} tokens, so serve with --max-model-len {len}",
                settings.max_model_len,
                requested.map(|r| r.kv_tokens).unwrap_or(0)
            ));
            max_model_len = len;
            requested
        }
        (None, None) => {
            notes.push(format!(
                "the model does not fit on up to 8 devices of this size ({}); use devices with more memory, lower --max-num-batched-tokens/--max-num-seqs, or a smaller (quantized) checkpoint",
                requested.and_then(|r| r.reason.clone()).unwrap_or_default()
            ));
            None
        }
    };
    let mut flags = Vec::new();
    if let Some(c) = chosen {
        let choice = Choice {
            option: c,
            max_model_len,
        };
        flags.extend(flags_for(request, settings, choice, &mut notes));
    }
    let command = if chosen.is_some() {
        let mut parts = vec![
            "kiln".to_string(),
            "serve".to_string(),
            shell_word(&request.model_name),
        ];
        parts.extend(flags.iter().cloned());
        parts.join(" ")
    } else {
        String::new()
    };
    Recommendation {
        fits_as_requested,
        tensor_parallel_size: chosen.map(|c| c.tensor_parallel_size),
        max_model_len: chosen.map(|_| max_model_len),
        flags,
        command,
        notes,
    }
}

/// The option recommended and the context length to serve it with.
#[derive(Debug, Clone, Copy)]
struct Choice<'a> {
    option: &'a TpOption,
    max_model_len: usize,
}

fn flags_for(
    request: &PlanRequest,
    settings: &PlanSettings,
    choice: Choice<'_>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let Choice {
        option: chosen,
        max_model_len,
    } = choice;
    let mut flags = vec![format!("--max-model-len {max_model_len}")];
    match request.device {
        Device::Cuda { .. } => {
            flags.push(format!(
                "--gpu-memory-utilization {}",
                request.gpu_memory_utilization
            ));
            if chosen.tensor_parallel_size > 1 {
                flags.push(format!(
                    "--tensor-parallel-size {}",
                    chosen.tensor_parallel_size
                ));
                notes.push("this Kiln build runs a model on one GPU; tensor parallelism is not supported yet".into());
            }
        }
        Device::Cpu { .. } => {
            flags.insert(0, "--backend cpu".into());
            flags.push(format!(
                "--kv-cache-memory-bytes {}",
                size_flag(chosen.kv_budget_bytes_per_gpu)
            ));
        }
    }
    if let Some(kv) = request.kv_cache_memory_bytes
        && matches!(request.device, Device::Cuda { .. })
    {
        flags.push(format!("--kv-cache-memory-bytes {}", size_flag(kv)));
    }
    // With a window on every layer, what a sequence holds depends on the
    // step size: serve with the settings the plan was made for.
    if settings.window.freeing_window().is_some() {
        if request.block_size != 16 {
            flags.push(format!("--block-size {}", request.block_size));
        }
        if let Some(n) = request.max_num_batched_tokens {
            flags.push(format!("--max-num-batched-tokens {n}"));
        }
        if let Some(n) = request
            .max_num_seqs
            .filter(|&n| n <= chosen.kv_blocks as usize)
        {
            flags.push(format!("--max-num-seqs {n}"));
        }
    }
    if (chosen.kv_blocks as usize) < settings.max_num_seqs {
        flags.push(format!("--max-num-seqs {}", chosen.kv_blocks.max(1)));
        notes.push(format!(
            "the KV cache has only {} blocks, fewer than max_num_seqs {}: every running sequence needs at least one",
            chosen.kv_blocks, settings.max_num_seqs
        ));
    }
    if chosen.max_concurrency < 1.0 + f64::EPSILON && chosen.fits {
        notes.push(
            "only one full-length sequence fits at a time; shorter requests share the cache".into(),
        );
    }
    flags
}

/// A byte count as a `--kv-cache-memory-bytes` value: `4GiB`, `640MiB` or bytes.
pub fn size_flag(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes > 0 && bytes.is_multiple_of(GIB) {
        format!("{}GiB", bytes / GIB)
    } else if bytes > 0 && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        bytes.to_string()
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
