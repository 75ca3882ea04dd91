//! KV-cache sizing: from a memory budget to a number of blocks, and the
//! explanation users get when a model does not fit.
//!
//! How many blocks one sequence holds at most is
//! [`blocks_per_sequence`]: its whole length, or for a model whose every
//! layer slides, its window plus a prefill chunk and a block (the
//! scheduler admits requests and the block manager frees blocks by the same
//! rule, `kiln_scheduler::window`). `kiln plan` uses these functions too.

use kiln_models::config::WindowLayout;

/// Default KV budget on CPU when `--kv-cache-memory-bytes` is not given.
pub const CPU_DEFAULT_KV_BYTES: u64 = 4 << 30;
/// At most this fraction of free host memory goes to the KV cache by default on CPU.
pub const CPU_MAX_FREE_FRACTION: f64 = 0.5;

/// The outcome of sizing the KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvPlan {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Bytes per block across all layers (K and V).
    pub bytes_per_block: u64,
    /// The served context length.
    pub max_model_len: usize,
    /// The most blocks one sequence holds at once ([`blocks_per_sequence`]).
    pub blocks_per_sequence: usize,
    /// How the model's layers slide.
    pub window: WindowLayout,
}

/// The most KV blocks one sequence of `max_model_len` tokens holds at once
/// when steps compute at most `max_num_batched_tokens` tokens.
pub fn blocks_per_sequence(
    max_model_len: usize,
    block_size: usize,
    window: WindowLayout,
    max_num_batched_tokens: usize,
) -> usize {
    kiln_scheduler::window::max_blocks_per_sequence(
        max_model_len,
        block_size,
        window.freeing_window(),
        max_num_batched_tokens,
    )
}

/// What a sliding window does to the KV of one sequence, in words (`None`
/// for a model without one).
pub fn window_note(
    window: WindowLayout,
    block_size: usize,
    blocks_per_sequence: usize,
    max_model_len: usize,
) -> Option<String> {
    let whole = max_model_len.div_ceil(block_size.max(1));
    match window {
        WindowLayout::None => None,
        WindowLayout::All { window, layers } if blocks_per_sequence < whole => Some(format!(
            "sliding window {window} on all {layers} layers: a sequence holds at most {blocks_per_sequence} KV blocks ({} tokens) of the {whole} its {max_model_len} tokens fill",
            blocks_per_sequence * block_size
        )),
        WindowLayout::All { window, layers } => Some(format!(
            "sliding window {window} on all {layers} layers: blocks behind it are freed, but a window and a prefill chunk span all {whole} KV blocks of a {max_model_len}-token sequence"
        )),
        WindowLayout::Some {
            window,
            sliding,
            layers,
        } => Some(format!(
            "sliding window {window} on {sliding} of {layers} layers: the KV behind the window is not freed yet (the other layers see the whole context), so a sequence holds up to {whole} KV blocks"
        )),
    }
}

impl KvPlan {
    /// Tokens the pool holds.
    pub fn total_tokens(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes the pool takes.
    pub fn total_bytes(&self) -> u64 {
        self.num_blocks as u64 * self.bytes_per_block
    }

    /// How many sequences of `max_model_len` tokens fit at once.
    pub fn max_concurrency(&self) -> f64 {
        match self.window.freeing_window() {
            Some(_) => self.num_blocks as f64 / self.blocks_per_sequence.max(1) as f64,
            None => self.total_tokens() as f64 / self.max_model_len.max(1) as f64,
        }
    }

    /// What the model's sliding window does to each sequence's KV.
    pub fn window_line(&self) -> Option<String> {
        window_note(
            self.window,
            self.block_size,
            self.blocks_per_sequence,
            self.max_model_len,
        )
    }

    /// The start-up log line.
    pub fn log_line(&self) -> String {
        format!(
            "KV cache: {} blocks × {} tokens = {} tokens ({}); max concurrency at max_model_len {} = {:.2}",
            self.num_blocks,
            self.block_size,
            self.total_tokens(),
            human_bytes(self.total_bytes()),
            self.max_model_len,
            self.max_concurrency()
        )
    }
}

/// Why the KV cache cannot be sized, with the numbers and what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct KvPlanError(pub String);

/// Inputs of [`plan_kv_cache`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvBudget {
    /// Bytes available for the KV cache.
    pub budget_bytes: u64,
    /// Bytes per block across all layers.
    pub bytes_per_block: u64,
    /// Tokens per block.
    pub block_size: usize,
    /// The served context length.
    pub max_model_len: usize,
    /// Most tokens one step computes (a prefill chunk's most).
    pub max_num_batched_tokens: usize,
    /// How the model's layers slide.
    pub window: WindowLayout,
    /// Where the budget came from, for the error message (e.g. `--kv-cache-memory-bytes 64MiB`).
    pub budget_source: &'static str,
    /// Device memory still free for it, when known (an explicit budget above
    /// this cannot be allocated).
    pub free_bytes: Option<u64>,
}

/// Size the pool: as many whole blocks as the budget holds; at least one
/// full-length sequence must fit (for a model whose every layer slides, what
/// such a sequence holds at once).
pub fn plan_kv_cache(b: KvBudget) -> Result<KvPlan, KvPlanError> {
    if b.block_size == 0 || b.bytes_per_block == 0 {
        return Err(KvPlanError(
            "block size and bytes per block must be positive".into(),
        ));
    }
    if let Some(free) = b.free_bytes.filter(|&f| b.budget_bytes > f) {
        let fits = free / b.bytes_per_block * b.block_size as u64;
        return Err(KvPlanError(format!(
            "the KV cache budget {} ({}) is more than the {} of device memory still free after the weights; \
             lower --kv-cache-memory-bytes to {} or less ({} tokens at {} per block of {} tokens)",
            human_bytes(b.budget_bytes),
            b.budget_source,
            human_bytes(free),
            human_bytes(free / b.bytes_per_block * b.bytes_per_block),
            fits,
            human_bytes(b.bytes_per_block),
            b.block_size,
        )));
    }
    let num_blocks = (b.budget_bytes / b.bytes_per_block) as usize;
    let needed_blocks = blocks_per_sequence(
        b.max_model_len,
        b.block_size,
        b.window,
        b.max_num_batched_tokens,
    );
    if num_blocks < needed_blocks {
        let needed = needed_blocks as u64 * b.bytes_per_block;
        let tokens_that_fit = num_blocks * b.block_size;
        let windowed = match b.window.freeing_window() {
            Some(w) => format!(
                " (its sliding window of {w} tokens plus a prefill chunk of up to {}: lowering --max-num-batched-tokens helps too)",
                b.max_num_batched_tokens
            ),
            None => String::new(),
        };
        return Err(KvPlanError(format!(
            "the KV cache does not fit one full-length sequence: max_model_len {} needs {} blocks × {} = {}{windowed}, but {} gives {} for KV ({} blocks = {} tokens). \
             Raise --kv-cache-memory-bytes to at least {} (or --gpu-memory-utilization on GPUs), or lower --max-model-len to {} or less.",
            b.max_model_len,
            needed_blocks,
            human_bytes(b.bytes_per_block),
            human_bytes(needed),
            b.budget_source,
            human_bytes(b.budget_bytes),
            num_blocks,
            tokens_that_fit,
            human_bytes(needed),
            tokens_that_fit
        )));
    }
    Ok(KvPlan {
        num_blocks,
        block_size: b.block_size,
        bytes_per_block: b.bytes_per_block,
        max_model_len: b.max_model_len,
        blocks_per_sequence: needed_blocks,
        window: b.window,
    })
}

/// Default CPU budget: the explicit value, else 4 GiB capped at half the free memory.
pub fn cpu_kv_budget(explicit: Option<u64>, free_bytes: u64) -> u64 {
    explicit.unwrap_or_else(|| {
        CPU_DEFAULT_KV_BYTES.min((free_bytes as f64 * CPU_MAX_FREE_FRACTION) as u64)
    })
}

/// GPU budget: `utilization × total` minus what is already in use (weights,
/// activations, workspaces) after profiling.
pub fn gpu_kv_budget(
    explicit: Option<u64>,
    utilization: f32,
    total_bytes: u64,
    used_bytes: u64,
) -> u64 {
    explicit.unwrap_or_else(|| {
        ((total_bytes as f64 * f64::from(utilization)) as u64).saturating_sub(used_bytes)
    })
}

/// `1.50 GiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64, len: usize) -> KvBudget {
        KvBudget {
            free_bytes: None,
            budget_bytes: bytes,
            bytes_per_block: 1000,
            block_size: 16,
            max_model_len: len,
            max_num_batched_tokens: 64,
            window: WindowLayout::None,
            budget_source: "--kv-cache-memory-bytes",
        }
    }

    #[test]
    fn a_window_on_every_layer_caps_what_a_sequence_holds() {
        let mut b = budget(20_000, 4096);
        // 256 blocks for 4096 tokens: 20 do not hold one sequence.
        assert!(plan_kv_cache(b).is_err());
        b.window = WindowLayout::All {
            window: 128,
            layers: 32,
        };
        // ceil((128 + 64 - 1) / 16) + 1 = 13 blocks per sequence.
        let plan = plan_kv_cache(b).unwrap();
        assert_eq!((plan.num_blocks, plan.blocks_per_sequence), (20, 13));
        assert_eq!(plan.max_concurrency(), 20.0 / 13.0);
        assert_eq!(
            plan.window_line().unwrap(),
            "sliding window 128 on all 32 layers: a sequence holds at most 13 KV blocks (208 tokens) of the 256 its 4096 tokens fill"
        );
        b.budget_bytes = 12_999;
        let err = plan_kv_cache(b).unwrap_err().0;
        assert!(err.contains("needs 13 blocks"), "{err}");
        // A context the window and a chunk already span gains nothing.
        b.max_model_len = 160;
        let plan = plan_kv_cache(b).unwrap();
        assert_eq!(plan.blocks_per_sequence, 10);
        let line = plan.window_line().unwrap();
        assert!(
            line.ends_with("span all 10 KV blocks of a 160-token sequence"),
            "{line}"
        );
    }

    #[test]
    fn a_window_on_some_layers_frees_nothing() {
        let mut b = budget(300_000, 4096);
        b.window = WindowLayout::Some {
            window: 128,
            sliding: 16,
            layers: 32,
        };
        let plan = plan_kv_cache(b).unwrap();
        assert_eq!(plan.blocks_per_sequence, 256);
        assert_eq!(plan.max_concurrency(), 300.0 * 16.0 / 4096.0);
        let line = plan.window_line().unwrap();
        assert!(
            line.starts_with("sliding window 128 on 16 of 32 layers"),
            "{line}"
        );
        assert!(line.contains("not freed"), "{line}");
        assert!(
            plan_kv_cache(budget(300_000, 4096))
                .unwrap()
                .window_line()
                .is_none()
        );
    }

    #[test]
    fn a_budget_above_free_memory_is_refused_with_what_fits() {
        let mut b = budget(1_000_000, 16);
        b.free_bytes = Some(64_500);
        let e = plan_kv_cache(b).unwrap_err().0;
        assert!(e.contains("lower --kv-cache-memory-bytes"), "{e}");
        assert!(e.contains("1024 tokens"), "{e}");
        b.free_bytes = Some(2_000_000);
        assert_eq!(plan_kv_cache(b).unwrap().num_blocks, 1000);
    }

    #[test]
    fn whole_blocks_within_the_budget() {
        let plan = plan_kv_cache(budget(10_999, 32)).unwrap();
        assert_eq!(plan.num_blocks, 10);
        assert_eq!(plan.total_tokens(), 160);
        assert_eq!(plan.max_concurrency(), 5.0);
        assert!(
            plan.log_line()
                .starts_with("KV cache: 10 blocks × 16 tokens = 160 tokens")
        );
    }

    #[test]
    fn too_small_explains_the_math_and_the_flags() {
        let err = plan_kv_cache(budget(3_000, 100)).unwrap_err().0;
        assert!(err.contains("max_model_len 100 needs 7 blocks"), "{err}");
        assert!(err.contains("--kv-cache-memory-bytes"), "{err}");
        assert!(err.contains("--max-model-len to 48"), "{err}");
    }

    #[test]
    fn budgets() {
        assert_eq!(cpu_kv_budget(Some(5), 100), 5);
        assert_eq!(cpu_kv_budget(None, 2 << 30), 1 << 30);
        assert_eq!(cpu_kv_budget(None, 64 << 30), 4 << 30);
        assert_eq!(gpu_kv_budget(None, 0.5, 100, 20), 30);
        assert_eq!(gpu_kv_budget(None, 0.1, 100, 20), 0);
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
