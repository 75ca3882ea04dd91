//! Paged attention (prefill, partitioned decode, reduction) and the KV-cache
//! ops: slot writes and block copies.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg, result};
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err, ptr, rows_cfg, suffix};

/// Keys per decode partition (must match `ATT_PART` in attention.cu).
pub const ATT_PART: u64 = 256;

/// Kernel launch parameters of attention (must match `AttnParams` in attention.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttnParams {
    q_stride: i64,
    heads: i32,
    kv_heads: i32,
    hd: i32,
    bs: i32,
    window: i32,
    max_blocks: i32,
    num_seqs: i32,
    max_parts: i32,
    scale: f32,
    softcap: f32,
}
// SAFETY: plain repr(C) data with the layout the kernel expects.
unsafe impl DeviceRepr for AttnParams {}

impl CudaDevice {
    pub(super) fn kv_write(&mut self, w: &KvWrite) -> PluginResult<()> {
        let (k, v, kc, vc, slots) = (w.k, w.v, w.k_cache, w.v_cache, w.slot_mapping);
        let s = suffix(k.dtype)?;
        let (n, kv_dim) = (k.dims[0], k.dims[1] as i64);
        // SAFETY: handles come from the host per the ABI.
        let (kp, vp, kcp, vcp, sp) = unsafe { (ptr(&k), ptr(&v), ptr(&kc), ptr(&vc), ptr(&slots)) };
        launch!(
            self,
            format!("kv_write_{s}"),
            rows_cfg(n, 256),
            [kp, vp, kcp, vcp, sp, kv_dim]
        )
    }

    pub(super) fn copy_blocks(&mut self, c: &CopyBlocks) -> PluginResult<()> {
        let (kc, vc, pairs) = (c.k_cache, c.v_cache, c.pairs);
        let count = pairs.dims[0] as usize;
        let mut host = vec![0u8; count * 8];
        // SAFETY: the pairs buffer holds `count` (src, dst) i32 pairs.
        unsafe {
            result::memcpy_dtoh_async(&mut host, ptr(&pairs), self.stream.cu_stream())
                .map_err(cuda_err("read pairs"))?;
        }
        self.stream.synchronize().map_err(cuda_err("synchronize"))?;
        let block_bytes = kc.dims[1] * kc.dims[2] * kc.dims[3] * dtype_size(kc.dtype);
        for pair in host.chunks_exact(8) {
            let src = i32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as u64;
            let dst = i32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]) as u64;
            for cache in [&kc, &vc] {
                // SAFETY: block indices are within the cache per the ABI.
                unsafe {
                    let base = ptr(cache);
                    result::memcpy_dtod_async(
                        base + dst * block_bytes,
                        base + src * block_bytes,
                        block_bytes as usize,
                        self.stream.cu_stream(),
                    )
                    .map_err(cuda_err("copy block"))?;
                }
            }
        }
        Ok(())
    }

    /// With a sliding window, the table entries before a sequence's window
    /// are placeholders for freed blocks: the kernels start each row at the
    /// first key of its window and never load them (see attention.cu).
    pub(super) fn attention(&mut self, a: &Attention) -> PluginResult<()> {
        let (q, kc, vc, tables, seq_lens, qsl, out) = (
            a.q,
            a.k_cache,
            a.v_cache,
            a.block_tables,
            a.seq_lens,
            a.query_start_loc,
            a.out,
        );
        let s = suffix(q.dtype)?;
        let num_seqs = seq_lens.dims[0];
        let n = q.dims[0];
        let (heads, kv_heads, hd, bs) = (a.num_heads, a.num_kv_heads, a.head_dim, a.block_size);
        if hd > 256 {
            return Err(PluginError::unsupported(format!(
                "attention with head_dim {hd}"
            )));
        }
        let max_seq_len = a.max_seq_len.max(1) as u64;
        let max_parts = max_seq_len.div_ceil(ATT_PART);
        let params = AttnParams {
            q_stride: heads * hd,
            heads: heads as i32,
            kv_heads: kv_heads as i32,
            hd: hd as i32,
            bs: bs as i32,
            window: a.sliding_window as i32,
            max_blocks: tables.dims[1] as i32,
            num_seqs: num_seqs as i32,
            max_parts: max_parts as i32,
            scale: a.scale,
            softcap: a.softcap,
        };
        // SAFETY: handles come from the host per the ABI.
        let (qp, kp, vp, tp, sp, lp, op_) = unsafe {
            (
                ptr(&q),
                ptr(&kc),
                ptr(&vc),
                ptr(&tables),
                ptr(&seq_lens),
                ptr(&qsl),
                ptr(&out),
            )
        };
        if a.max_query_len > 1 {
            let cfg = LaunchConfig {
                grid_dim: (n as u32, heads as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                self,
                format!("attention_prefill_{s}"),
                cfg,
                [qp, kp, vp, tp, sp, lp, op_, params]
            )?;
        }
        let ws_bytes = num_seqs * heads as u64 * max_parts * (hd as u64 + 2) * 4;
        let ws = Self::ensure(
            &mut self.attn_ws,
            ws_bytes,
            self.capturing,
            &self.stream,
            "attention workspace",
        )?;
        let cfg = LaunchConfig {
            grid_dim: (num_seqs as u32, heads as u32, max_parts as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            format!("attention_decode_{s}"),
            cfg,
            [qp, kp, vp, tp, sp, lp, ws, params]
        )?;
        let cfg = LaunchConfig {
            grid_dim: (num_seqs as u32, heads as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            format!("attention_reduce_{s}"),
            cfg,
            [sp, lp, ws, op_, params]
        )
    }
}
