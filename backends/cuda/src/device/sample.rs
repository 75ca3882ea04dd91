//! `OP_SAMPLE`: one block per row draws the next token on the device.

use cudarc::driver::PushKernelArg;
use cudarc::driver::sys::CUdeviceptr;
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err, ptr, rows_cfg};

impl CudaDevice {
    pub(super) fn sample(&mut self, m: &Sample) -> PluginResult<()> {
        let (logits, params, ids, lps) = (m.logits, m.params, m.out_ids, m.out_logprobs);
        let (top_ids, top_lps, adjust) = (m.out_top_ids, m.out_top_logprobs, m.adjustments);
        if logits.dtype != KILN_F32 {
            return Err(PluginError::unsupported("sampling needs f32 logits"));
        }
        let (rows, vocab) = (logits.dims[0], logits.dims[1] as i32);
        let num_top = m.num_top as i32;
        // SAFETY: handles come from the host per the ABI.
        let (xp, pp, ip) = unsafe { (ptr(&logits), ptr(&params), ptr(&ids)) };
        let lp = if lps.is_none() {
            0
        } else {
            unsafe { ptr(&lps) }
        };
        let (tip, tlp) = if top_ids.is_none() || num_top == 0 {
            (0, 0)
        } else {
            unsafe { (ptr(&top_ids), ptr(&top_lps)) }
        };
        let num_top = if tip == 0 { 0 } else { num_top };
        let ap: CUdeviceptr = if adjust.is_none() {
            0
        } else {
            unsafe { ptr(&adjust) }
        };
        launch!(
            self,
            "sample_rows".to_string(),
            rows_cfg(rows, 1024),
            [xp, pp, vocab, ip, lp, tip, tlp, num_top, ap]
        )
    }
}
