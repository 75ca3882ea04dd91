//! The paged KV cache: per layer, keys and values `[blocks, block_size, kv_heads, head_dim]`.

use kiln_plugin_abi::KilnDType;
use kiln_plugin_abi::KilnTensor;
use kiln_plugin_abi::safe::{Buffer, Device};

use super::DecoderError;
use super::dtype::ActDType;
use crate::config::ModelConfig;

pub struct KvCache {
    layers: Vec<(Buffer, Buffer)>,
    /// Blocks per layer.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: KilnDType,
}

impl KvCache {
    /// Bytes one block takes across all layers (keys and values).
    pub fn bytes_per_block(config: &ModelConfig, block_size: usize, dtype: ActDType) -> u64 {
        2 * config.num_hidden_layers as u64
            * block_size as u64
            * config.num_key_value_heads as u64
            * config.head_dim as u64
            * dtype.size()
    }

    /// Allocate `num_blocks` blocks per layer.
    pub fn allocate(
        device: &Device,
        config: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: ActDType,
    ) -> Result<KvCache, DecoderError> {
        let per_layer = num_blocks as u64
            * block_size as u64
            * (config.num_key_value_heads * config.head_dim) as u64
            * dtype.size();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push((device.alloc(per_layer)?, device.alloc(per_layer)?));
        }
        Ok(KvCache {
            layers,
            num_blocks,
            block_size,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            dtype: dtype.abi(),
        })
    }

    /// The key and value views of layer `i`.
    pub fn layer_views(&self, i: usize) -> (KilnTensor, KilnTensor) {
        let dims = [
            self.num_blocks as u64,
            self.block_size as u64,
            self.kv_heads as u64,
            self.head_dim as u64,
        ];
        let (k, v) = &self.layers[i];
        (k.view(0, self.dtype, &dims), v.view(0, self.dtype, &dims))
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
