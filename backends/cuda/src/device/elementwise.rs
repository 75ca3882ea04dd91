//! Per-row and per-element ops: embedding lookup, norms, RoPE, activations,
//! scale, soft-cap, cast, row gathers and the binary element-wise kernels.

use cudarc::driver::PushKernelArg;
use cudarc::driver::sys::CUdeviceptr;
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err, grid_1d, ptr, rows_cfg, suffix, weight};

impl CudaDevice {
    pub(super) fn embedding(&mut self, e: &Embedding) -> PluginResult<()> {
        let (ids, out) = (e.ids, e.out);
        // SAFETY: handles come from the host per the ABI.
        let w = unsafe { weight(e.table) }?;
        let s = suffix(out.dtype)?;
        let (n, fmt, vocab, hidden) = (ids.dims[0], w.format as i32, w.rows as i64, w.cols as i64);
        let (ip, tp, op_) = unsafe { (ptr(&ids), w.data.ptr, ptr(&out)) };
        launch!(
            self,
            format!("embedding_{s}"),
            rows_cfg(n, 256),
            [ip, tp, fmt, vocab, hidden, op_]
        )
    }

    pub(super) fn rms_norm(&mut self, n: &RmsNorm) -> PluginResult<()> {
        let (x, out) = (n.x, n.out);
        // SAFETY: handles come from the host per the ABI.
        let g = unsafe { weight(n.gamma) }?;
        let s = suffix(x.dtype)?;
        let (rows, h, eps) = (x.dims[0], x.dims[1] as i64, n.eps);
        let (xp, gp, op_) = unsafe { (ptr(&x), g.data.ptr, ptr(&out)) };
        launch!(
            self,
            format!("rms_norm_{s}"),
            rows_cfg(rows, 256),
            [xp, gp, op_, h, eps]
        )
    }

    pub(super) fn add_rms_norm(&mut self, n: &AddRmsNorm) -> PluginResult<()> {
        let (x, res, out) = (n.x, n.residual, n.out);
        // SAFETY: handles come from the host per the ABI.
        let g = unsafe { weight(n.gamma) }?;
        let s = suffix(x.dtype)?;
        let (rows, h, eps) = (x.dims[0], x.dims[1] as i64, n.eps);
        let (xp, rp, gp, op_) = unsafe { (ptr(&x), ptr(&res), g.data.ptr, ptr(&out)) };
        launch!(
            self,
            format!("add_rms_norm_{s}"),
            rows_cfg(rows, 256),
            [xp, rp, gp, op_, h, eps]
        )
    }

    pub(super) fn rope(&mut self, r: &Rope) -> PluginResult<()> {
        let (q, k, pos, cos, sin) = (r.q, r.k, r.positions, r.cos, r.sin);
        let s = suffix(q.dtype)?;
        let (hd, rot, style) = (r.head_dim as i32, r.rotary_dim as i32, r.style as i32);
        let n = q.dims[0];
        let qh = (q.dims[1] / hd as u64) as i32;
        let kh = if k.is_none() {
            0
        } else {
            (k.dims[1] / hd as u64) as i32
        };
        // SAFETY: handles come from the host per the ABI.
        let (qp, kp, pp, cp, sp) = unsafe {
            (
                ptr(&q),
                if k.is_none() { 0 } else { ptr(&k) },
                ptr(&pos),
                ptr(&cos),
                ptr(&sin),
            )
        };
        launch!(
            self,
            format!("rope_{s}"),
            rows_cfg(n, 128),
            [qp, kp, pp, cp, sp, qh, kh, hd, rot, style]
        )
    }

    pub(super) fn elementwise3(
        &mut self,
        [a, b_, out]: [KilnTensor; 3],
        name: &str,
    ) -> PluginResult<()> {
        let s = suffix(a.dtype)?;
        let n = a.numel() as i64;
        // SAFETY: handles come from the host per the ABI.
        let (ap, bp, op_) = unsafe { (ptr(&a), ptr(&b_), ptr(&out)) };
        launch!(
            self,
            format!("{name}_{s}"),
            grid_1d(n as u64, 256),
            [ap, bp, op_, n]
        )
    }

    pub(super) fn layer_norm(&mut self, n: &LayerNorm) -> PluginResult<()> {
        let (x, out) = (n.x, n.out);
        // SAFETY: handles come from the host per the ABI.
        let g = unsafe { weight(n.gamma) }?;
        let b: CUdeviceptr = if n.beta.is_null() {
            0
        } else {
            // SAFETY: as above.
            unsafe { weight(n.beta) }?.data.ptr
        };
        let s = suffix(x.dtype)?;
        let (rows, h, eps) = (x.dims[0], x.dims[1] as i64, n.eps);
        let (xp, gp, op_) = unsafe { (ptr(&x), g.data.ptr, ptr(&out)) };
        launch!(
            self,
            format!("layer_norm_{s}"),
            rows_cfg(rows, 256),
            [xp, gp, b, op_, h, eps]
        )
    }

    pub(super) fn activation(&mut self, a: &Activation) -> PluginResult<()> {
        let (x, up, out, kind) = (a.x, a.up, a.out, a.kind);
        let s = suffix(x.dtype)?;
        let n = x.numel() as i64;
        let kind = kind as i32;
        // SAFETY: handles come from the host per the ABI.
        let (xp, up_, op_) =
            unsafe { (ptr(&x), if up.is_none() { 0 } else { ptr(&up) }, ptr(&out)) };
        launch!(
            self,
            format!("activation_{s}"),
            grid_1d(n as u64, 256),
            [xp, up_, op_, kind, n]
        )
    }

    pub(super) fn scale(&mut self, m: &Scale) -> PluginResult<()> {
        let (x, out) = (m.x, m.out);
        let s = suffix(x.dtype)?;
        let acc = i32::from(m.accumulate == Accumulate::Add);
        let (n, f) = (x.numel() as i64, m.factor);
        // SAFETY: handles come from the host per the ABI.
        let (xp, op_) = unsafe { (ptr(&x), ptr(&out)) };
        launch!(
            self,
            format!("scale_{s}"),
            grid_1d(n as u64, 256),
            [xp, op_, f, acc, n]
        )
    }

    pub(super) fn softcap(&mut self, c: &Softcap) -> PluginResult<()> {
        let (x, out) = (c.x, c.out);
        let s = suffix(x.dtype)?;
        let (n, cap) = (x.numel() as i64, c.cap);
        // SAFETY: handles come from the host per the ABI.
        let (xp, op_) = unsafe { (ptr(&x), ptr(&out)) };
        launch!(
            self,
            format!("softcap_{s}"),
            grid_1d(n as u64, 256),
            [xp, op_, cap, n]
        )
    }

    pub(super) fn cast(&mut self, c: &Cast) -> PluginResult<()> {
        let (input, out) = (c.input, c.out);
        if out.dtype != KILN_F32 {
            return Err(PluginError::unsupported(
                "cast supports only conversion to f32",
            ));
        }
        let s = suffix(input.dtype)?;
        let n = input.numel() as i64;
        // SAFETY: handles come from the host per the ABI.
        let (ip, op_) = unsafe { (ptr(&input), ptr(&out)) };
        launch!(
            self,
            format!("cast_to_f32_{s}"),
            grid_1d(n as u64, 256),
            [ip, op_, n]
        )
    }

    pub(super) fn gather_rows(&mut self, g: &GatherRows) -> PluginResult<()> {
        let (x, idx, out) = (g.x, g.indices, g.out);
        let s = suffix(x.dtype)?;
        let (m, cols) = (idx.dims[0], x.dims[1] as i64);
        if m == 0 {
            return Ok(());
        }
        // SAFETY: handles come from the host per the ABI.
        let (xp, ip, op_) = unsafe { (ptr(&x), ptr(&idx), ptr(&out)) };
        launch!(
            self,
            format!("gather_rows_{s}"),
            rows_cfg(m, 256),
            [xp, ip, op_, cols]
        )
    }
}
