//! `OP_MOE` on the GPU: one routing kernel, then per-(row, rank) GEMV-style
//! kernels for each slot's gate/up and down projections over the stacked
//! weights, then a per-row combination in rank order (`kernels/cuda/moe.cu`).
//! Every slot depends only on its row, so the decode-row hint is not needed
//! for batch invariance and is ignored.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use kiln_plugin_abi::ops::{Accumulate, MOE_ROUTING_SOFTMAX_TOPK_RENORM, Moe};
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err, format_supported, ptr, rows_cfg, suffix, weight};

/// Warps (one output value each) per block of the projection kernels.
const WARPS: u64 = 8;

/// Whether the MoE kernels read weights in `format` (through `weight_at`).
pub(super) fn moe_format_supported(format: KilnWeightFormat) -> bool {
    format_supported(format)
}

/// Byte offsets of the workspace parts for `slots` (row, rank) pairs.
struct Workspace {
    choice: u64,
    weight: u64,
    hidden: u64,
    y: u64,
    bytes: u64,
}

impl Workspace {
    fn new(slots: u64, hidden: u64, intermediate: u64) -> Workspace {
        let align = |b: u64| b.next_multiple_of(256);
        let choice = 0;
        let weight = align(choice + slots * 4);
        let hidden_at = align(weight + slots * 4);
        let y = align(hidden_at + slots * intermediate * 4);
        let bytes = align(y + slots * hidden * 4);
        Workspace {
            choice,
            weight,
            hidden: hidden_at,
            y,
            bytes,
        }
    }
}

impl CudaDevice {
    pub(super) fn moe(&mut self, m: &Moe) -> PluginResult<()> {
        // SAFETY: handles come from the host per the ABI.
        let (gate_up, down) = unsafe { (weight(m.gate_up)?, weight(m.down)?) };
        let dims = m
            .expert_dims((gate_up.rows, gate_up.cols), (down.rows, down.cols))
            .map_err(|e| PluginError::invalid(e.to_string()))?;
        for w in [gate_up, down] {
            if !moe_format_supported(w.format) {
                return Err(PluginError::unsupported(format!(
                    "moe: expert weights in format {}",
                    w.format
                )));
            }
        }
        let s = suffix(m.x.dtype)?;
        let (n, k) = (m.rows(), m.top_k as u64);
        if n == 0 {
            return Ok(());
        }
        let (h, inter) = (dims.hidden, dims.intermediate);
        let slots = n * k;
        let ws = Workspace::new(slots, h, inter);
        let base = Self::ensure(
            &mut self.moe_ws,
            ws.bytes,
            self.capturing,
            &self.stream,
            "mixture-of-experts workspace",
        )?;
        let (choice, weights, hidden, y) = (
            base + ws.choice,
            base + ws.weight,
            base + ws.hidden,
            base + ws.y,
        );
        // SAFETY: handles come from the host per the ABI.
        let (xp, lp, op_) = unsafe { (ptr(&m.x), ptr(&m.router_logits), ptr(&m.out)) };
        let shared: CUdeviceptr = if m.shared_out.is_none() {
            0
        } else {
            // SAFETY: as above.
            unsafe { ptr(&m.shared_out) }
        };
        let shared_gate: CUdeviceptr = if m.shared_gate.is_none() {
            0
        } else {
            // SAFETY: as above.
            unsafe { ptr(&m.shared_gate) }
        };
        let (ni, ei, ki) = (n as i32, m.num_experts as i32, k as i32);
        let renorm = i32::from(m.routing == MOE_ROUTING_SOFTMAX_TOPK_RENORM);
        let route_cfg = LaunchConfig {
            grid_dim: (n.div_ceil(128) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            format!("moe_route_{s}"),
            route_cfg,
            [lp, ni, ei, ki, renorm, choice, weights]
        )?;
        let projection = |outputs: u64| LaunchConfig {
            grid_dim: (slots as u32, outputs.div_ceil(WARPS) as u32, 1),
            block_dim: ((32 * WARPS) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (hi, ii, kind) = (h as i32, inter as i32, m.activation as i32);
        let (gu_ptr, gu_fmt) = (gate_up.data.ptr, gate_up.format as i32);
        launch!(
            self,
            format!("moe_gate_up_{s}"),
            projection(inter),
            [xp, gu_ptr, gu_fmt, choice, ki, hi, ii, kind, hidden]
        )?;
        let (down_ptr, down_fmt) = (down.data.ptr, down.format as i32);
        launch!(
            self,
            format!("moe_down_{s}"),
            projection(h),
            [hidden, down_ptr, down_fmt, choice, hi, ii, y]
        )?;
        let acc = i32::from(m.accumulate == Accumulate::Add);
        launch!(
            self,
            format!("moe_combine_{s}"),
            rows_cfg(n, 256),
            [y, weights, shared, shared_gate, op_, ki, hi, acc]
        )
    }
}
