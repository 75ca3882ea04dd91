//! The deployment memory arithmetic of `kiln plan` (pure).
//!
//! Per device, for tensor parallelism `n` (formulas in `PLAN_SCHEMA.md`):
//!
//! ```text
//! weights(n)      = ceil(sharded / n) + replicated          sharded: every ≥2-D tensor; replicated: norms
//! kv_heads(n)     = kv_heads / n, or 1 when n > kv_heads     (KV heads are replicated past that point)
//! kv_per_token(n) = 2 × layers × kv_heads(n) × head_dim × kv_dtype_bytes
//! activations(n)  = the engine's per-step buffers at max_num_batched_tokens / max_num_seqs
//! overhead        = 1 GiB per GPU (CUDA context, cuBLAS workspaces, kernels, graph pools); 0 on CPU
//! kv_budget(n)    = --kv-cache-memory-bytes, else memory × utilization − weights(n) − activations(n) − overhead
//! blocks          = floor(kv_budget / (kv_per_token(n) × block_size));  kv_tokens = blocks × block_size
//! per_sequence    = ceil(max_model_len / block_size), or when every layer slides over w tokens
//!                   min(that, ceil((w + max_num_batched_tokens − 1) / block_size) + 1)
//! concurrency     = kv_tokens / max_model_len (every layer sliding: blocks / per_sequence)
//! full-length sequences = floor(blocks / per_sequence)
//! ```
//!
//! `per_sequence` and the concurrency are the engine's own functions
//! (`kiln_engine::memory`), so the plan shows what the engine allocates.

use kiln_engine::memory::KvPlan;
use kiln_models::config::WindowLayout;
use serde::Serialize;

/// Bytes of the fixed per-GPU runtime overhead (an estimate).
pub const GPU_RUNTIME_OVERHEAD_BYTES: u64 = 1 << 30;
pub use kiln_engine::defaults::{CPU_DEFAULTS, DeviceDefaults, GPU_DEFAULTS};
pub use kiln_engine::memory::CPU_DEFAULT_KV_BYTES;
/// Tensor-parallel sizes evaluated on GPUs.
pub const TP_SIZES: [usize; 4] = [1, 2, 4, 8];

/// The decoder dimensions the arithmetic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelShape {
    /// Decoder layers.
    pub layers: usize,
    pub hidden_size: usize,
    /// Query heads.
    pub attention_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Dimension per head.
    pub head_dim: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    pub vocab_size: usize,
    /// Native context length.
    pub max_position_embeddings: usize,
}

/// Weight bytes split by how tensor parallelism treats them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightSplit {
    /// Bytes of tensors split across GPUs (matrices, embeddings).
    pub sharded: u64,
    /// Bytes of tensors every GPU holds whole (norm vectors).
    pub replicated: u64,
}

impl WeightSplit {
    /// All weight bytes.
    pub fn total(&self) -> u64 {
        self.sharded + self.replicated
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// NVIDIA GPUs with this much memory each.
    Cuda {
        /// Bytes per GPU.
        memory_bytes: u64,
    },
    /// The CPU; host memory when known.
    Cpu {
        /// Bytes of RAM, when known.
        memory_bytes: Option<u64>,
    },
}

/// Settings the plan is made for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSettings {
    pub device: Device,
    /// Bytes per activation and KV element (4 for float32, 2 for 16-bit).
    pub dtype_bytes: u64,
    /// Served context length.
    pub max_model_len: usize,
    /// Fraction of GPU memory to use.
    pub gpu_memory_utilization: f64,
    /// Explicit KV budget per device.
    pub kv_cache_memory_bytes: Option<u64>,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Sequences per step.
    pub max_num_seqs: usize,
    /// Tokens per step (before the engine's `max(…, min(seqs, len))` rule).
    pub max_num_batched_tokens: usize,
    /// How the model's layers slide.
    pub window: WindowLayout,
}

impl PlanSettings {
    /// Tokens per step as the engine sizes its buffers.
    pub fn effective_batched_tokens(&self) -> usize {
        self.max_num_batched_tokens
            .max(self.max_num_seqs.min(self.max_model_len))
    }

    /// Columns of the engine's block tables: a full-length sequence's blocks.
    pub fn blocks_per_sequence(&self) -> usize {
        self.max_model_len.div_ceil(self.block_size.max(1))
    }

    /// KV blocks one full-length sequence holds at once (fewer than
    /// [`blocks_per_sequence`](Self::blocks_per_sequence) when every layer slides).
    pub fn kv_blocks_per_sequence(&self) -> usize {
        kiln_engine::memory::blocks_per_sequence(
            self.max_model_len,
            self.block_size,
            self.window,
            self.effective_batched_tokens(),
        )
    }
}

/// The outcome for one tensor-parallel size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TpOption {
    /// GPUs.
    pub tensor_parallel_size: usize,
    /// Whether the heads split evenly over the GPUs.
    pub valid: bool,
    /// Whether at least one full-length sequence fits.
    pub fits: bool,
    /// Why it does not fit or is invalid.
    pub reason: Option<String>,
    /// `ceil(sharded / n) + replicated`.
    pub weight_bytes_per_gpu: u64,
    /// Per-step buffer bytes per GPU.
    pub activation_bytes_per_gpu: u64,
    /// Runtime overhead bytes per GPU.
    pub overhead_bytes_per_gpu: u64,
    /// `memory × utilization` per GPU (or the whole budget on CPU).
    pub usable_bytes_per_gpu: u64,
    /// Bytes left for the KV cache per GPU (0 when negative).
    pub kv_budget_bytes_per_gpu: u64,
    /// KV heads each GPU holds.
    pub kv_heads_per_gpu: usize,
    /// `2 × layers × kv_heads_per_gpu × head_dim × dtype_bytes`.
    pub kv_bytes_per_token_per_gpu: u64,
    /// KV blocks in the pool.
    pub kv_blocks: u64,
    /// Tokens the pool holds.
    pub kv_tokens: u64,
    /// `kv_tokens / max_model_len`, or with a window on every layer
    /// `kv_blocks / kv_blocks_per_sequence`.
    pub max_concurrency: f64,
    /// Sequences of `max_model_len` tokens that fit at once.
    pub full_length_sequences: u64,
}

/// KV heads per GPU, or why the heads do not split over `n` GPUs.
pub fn kv_heads_per_gpu(shape: &ModelShape, n: usize) -> Result<usize, String> {
    if n == 0 {
        return Err("the tensor-parallel size must be at least 1".into());
    }
    if !shape.attention_heads.is_multiple_of(n) {
        return Err(format!(
            "{} attention heads do not split over {n} GPUs",
            shape.attention_heads
        ));
    }
    if n <= shape.kv_heads {
        if !shape.kv_heads.is_multiple_of(n) {
            return Err(format!(
                "{} KV heads do not split over {n} GPUs",
                shape.kv_heads
            ));
        }
        Ok(shape.kv_heads / n)
    } else if n.is_multiple_of(shape.kv_heads) {
        Ok(1)
    } else {
        Err(format!(
            "{n} GPUs is not a multiple of the {} KV heads",
            shape.kv_heads
        ))
    }
}

/// KV bytes per token: 2 × layers × kv_heads × head_dim × dtype bytes.
pub fn kv_bytes_per_token(shape: &ModelShape, kv_heads: usize, dtype_bytes: u64) -> u64 {
    2 * shape.layers as u64 * kv_heads as u64 * shape.head_dim as u64 * dtype_bytes
}

/// The engine's per-step buffers on one GPU: inputs (i32) and activations.
pub fn activation_bytes(
    shape: &ModelShape,
    settings: &PlanSettings,
    n: usize,
    kv_heads: usize,
) -> u64 {
    let t = settings.effective_batched_tokens() as u64;
    let s = settings.max_num_seqs as u64;
    let a = settings.dtype_bytes;
    let n = n as u64;
    let h = shape.hidden_size as u64;
    let q = (shape.attention_heads * shape.head_dim) as u64 / n;
    let kv = (kv_heads * shape.head_dim) as u64;
    let inter = (shape.intermediate_size as u64).div_ceil(n);
    let vocab = shape.vocab_size as u64;
    let inputs = 4 * (3 * t + s + (s + 1) + s * settings.blocks_per_sequence() as u64 + s);
    let per_token = 2 * h + 2 * q + 2 * kv + 2 * inter;
    let per_seq = 2 * h + vocab;
    let logits_f32 = if a == 4 { 0 } else { s * vocab * 4 };
    inputs + a * (t * per_token + s * per_seq) + logits_f32
}

/// Evaluate one tensor-parallel size.
pub fn evaluate(
    shape: &ModelShape,
    weights: &WeightSplit,
    settings: &PlanSettings,
    n: usize,
) -> TpOption {
    let mut option = TpOption {
        tensor_parallel_size: n,
        valid: true,
        fits: false,
        reason: None,
        weight_bytes_per_gpu: weights.sharded.div_ceil(n.max(1) as u64) + weights.replicated,
        activation_bytes_per_gpu: 0,
        overhead_bytes_per_gpu: 0,
        usable_bytes_per_gpu: 0,
        kv_budget_bytes_per_gpu: 0,
        kv_heads_per_gpu: 0,
        kv_bytes_per_token_per_gpu: 0,
        kv_blocks: 0,
        kv_tokens: 0,
        max_concurrency: 0.0,
        full_length_sequences: 0,
    };
    let kv_heads = match kv_heads_per_gpu(shape, n) {
        Ok(k) => k,
        Err(reason) => {
            option.valid = false;
            option.reason = Some(reason);
            return option;
        }
    };
    option.kv_heads_per_gpu = kv_heads;
    option.kv_bytes_per_token_per_gpu = kv_bytes_per_token(shape, kv_heads, settings.dtype_bytes);
    option.activation_bytes_per_gpu = activation_bytes(shape, settings, n, kv_heads);
    let fixed = option.weight_bytes_per_gpu + option.activation_bytes_per_gpu;
    let (usable, overhead) = match settings.device {
        Device::Cuda { memory_bytes } => (
            (memory_bytes as f64 * settings.gpu_memory_utilization).floor() as u64,
            GPU_RUNTIME_OVERHEAD_BYTES,
        ),
        Device::Cpu { memory_bytes } => (memory_bytes.unwrap_or(u64::MAX), 0),
    };
    option.usable_bytes_per_gpu = if usable == u64::MAX { 0 } else { usable };
    option.overhead_bytes_per_gpu = overhead;
    let kv_budget = match (settings.kv_cache_memory_bytes, settings.device) {
        (Some(explicit), _) => explicit,
        (None, Device::Cuda { .. }) => usable.saturating_sub(fixed + overhead),
        (None, Device::Cpu { .. }) => CPU_DEFAULT_KV_BYTES,
    };
    option.kv_budget_bytes_per_gpu = kv_budget;
    let block_bytes = option.kv_bytes_per_token_per_gpu * settings.block_size as u64;
    option.kv_blocks = kv_budget.checked_div(block_bytes).unwrap_or(0);
    option.kv_tokens = option.kv_blocks * settings.block_size as u64;
    let kv = KvPlan {
        num_blocks: option.kv_blocks as usize,
        block_size: settings.block_size,
        bytes_per_block: block_bytes,
        max_model_len: settings.max_model_len,
        blocks_per_sequence: settings.kv_blocks_per_sequence(),
        window: settings.window,
    };
    option.max_concurrency = kv.max_concurrency();
    option.full_length_sequences = option.kv_blocks / kv.blocks_per_sequence.max(1) as u64;
    let needed = fixed + overhead + kv_budget;
    option.reason = if fixed + overhead > usable {
        Some(format!(
            "weights, buffers and overhead need {} per device but only {} is usable",
            kiln_hub::human_bytes(fixed + overhead),
            kiln_hub::human_bytes(usable)
        ))
    } else if settings.kv_cache_memory_bytes.is_some() && needed > usable {
        Some(format!(
            "with --kv-cache-memory-bytes the device needs {} but only {} is usable",
            kiln_hub::human_bytes(needed),
            kiln_hub::human_bytes(usable)
        ))
    } else if option.full_length_sequences == 0 && settings.window.freeing_window().is_some() {
        Some(format!(
            "the KV cache holds {} blocks, fewer than the {} one sequence of max_model_len {} holds at once",
            option.kv_blocks, kv.blocks_per_sequence, settings.max_model_len
        ))
    } else if option.full_length_sequences == 0 {
        Some(format!(
            "the KV cache holds {} tokens, less than one sequence of max_model_len {}",
            option.kv_tokens, settings.max_model_len
        ))
    } else {
        None
    };
    option.fits = option.reason.is_none();
    option
}

/// The longest `max_model_len` (a multiple of 256, or of the block size
/// below 256 tokens) for which one sequence fits in `kv_tokens`.
pub fn longest_fitting_len(kv_tokens: u64, block_size: usize) -> Option<usize> {
    let step = if kv_tokens >= 256 {
        256
    } else {
        block_size.max(1) as u64
    };
    let len = kv_tokens / step * step;
    (len > 0).then_some(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kv_heads: usize) -> ModelShape {
        ModelShape {
            layers: 2,
            hidden_size: 64,
            attention_heads: 8,
            kv_heads,
            head_dim: 8,
            intermediate_size: 128,
            vocab_size: 100,
            max_position_embeddings: 1024,
        }
    }

    #[test]
    fn kv_heads_split_or_replicate() {
        let s = shape(2);
        assert_eq!(kv_heads_per_gpu(&s, 1), Ok(2));
        assert_eq!(kv_heads_per_gpu(&s, 2), Ok(1));
        assert_eq!(kv_heads_per_gpu(&s, 4), Ok(1));
        assert_eq!(kv_heads_per_gpu(&s, 8), Ok(1));
        assert!(kv_heads_per_gpu(&shape(3), 2).is_err());
        let mut odd = shape(8);
        odd.attention_heads = 12;
        assert!(
            kv_heads_per_gpu(&odd, 8)
                .unwrap_err()
                .contains("12 attention heads")
        );
    }

    #[test]
    fn more_memory_never_means_fewer_tokens() {
        let s = shape(2);
        let w = WeightSplit {
            sharded: 1 << 20,
            replicated: 256,
        };
        let mut prev = 0;
        for gib in 1..6u64 {
            let settings = PlanSettings {
                device: Device::Cuda {
                    memory_bytes: gib << 30,
                },
                dtype_bytes: 2,
                max_model_len: 1024,
                gpu_memory_utilization: 0.9,
                kv_cache_memory_bytes: None,
                block_size: 16,
                max_num_seqs: 8,
                max_num_batched_tokens: 64,
                window: WindowLayout::None,
            };
            let o = evaluate(&s, &w, &settings, 1);
            assert!(o.kv_tokens >= prev);
            assert_eq!(o.kv_tokens % 16, 0);
            prev = o.kv_tokens;
        }
    }

    #[test]
    fn longest_len_rounds_down() {
        assert_eq!(longest_fitting_len(5000, 16), Some(4864));
        assert_eq!(longest_fitting_len(200, 16), Some(192));
        assert_eq!(longest_fitting_len(0, 16), None);
    }
}
