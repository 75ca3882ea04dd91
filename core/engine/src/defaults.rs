//! Engine defaults that depend on the device, defined once: the engine
//! applies them and `kiln plan` computes with them.

/// Defaults of the scheduling flags for one kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDefaults {
    /// `--max-num-seqs`: sequences in one step, decoding or prefilling.
    pub max_num_seqs: usize,
    /// `--max-num-batched-tokens`: tokens per step, prefill chunks plus decodes.
    pub max_num_batched_tokens: usize,
}

/// GPUs: wide batches amortize each weight read over many rows.
pub const GPU_DEFAULTS: DeviceDefaults = DeviceDefaults {
    max_num_seqs: 256,
    max_num_batched_tokens: 8192,
};

/// CPUs: a step of 512 tokens already keeps every core busy, and a smaller
/// step keeps decode latency low while prompts are prefilled.
pub const CPU_DEFAULTS: DeviceDefaults = DeviceDefaults {
    max_num_seqs: 64,
    max_num_batched_tokens: 512,
};

impl DeviceDefaults {
    pub fn for_device(gpu: bool) -> DeviceDefaults {
        if gpu { GPU_DEFAULTS } else { CPU_DEFAULTS }
    }
}
