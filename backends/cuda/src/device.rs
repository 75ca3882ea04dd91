//! One CUDA device: raw allocations, prepared weights, op dispatch, cuBLAS,
//! and graph capture on a single stream.

use std::sync::Arc;

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    CudaContext, CudaGraph, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg, result,
};
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{DevicePlugin, HostLogger, PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

use crate::kernels::Kernels;

/// Most decode rows served by the GEMV kernels (beyond it: cuBLAS).
pub const GEMV_MAX_TOKENS: u64 = 64;
/// Rows of every cuBLAS call (fixed, for batch invariance).
pub const GEMM_CHUNK: u64 = 256;
/// Keys per decode partition (must match `ATT_PART` in attention.cu).
pub const ATT_PART: u64 = 256;
/// cuBLAS workspace (set explicitly so that graph capture never allocates).
pub const BLAS_WORKSPACE: u64 = 32 << 20;

fn cuda_err(what: &str) -> impl FnOnce(result::DriverError) -> PluginError + '_ {
    move |e| {
        let text = format!("{what}: {e:?}");
        if text.contains("OUT_OF_MEMORY") {
            PluginError::out_of_memory(text)
        } else {
            PluginError::internal(text)
        }
    }
}

/// A raw device allocation.
pub struct DevBuf {
    ptr: CUdeviceptr,
    bytes: u64,
}

impl DevBuf {
    fn alloc(bytes: u64, stream: &CudaStream) -> PluginResult<DevBuf> {
        let size = bytes.max(1) as usize;
        // SAFETY: the context is bound to this thread by the caller.
        let ptr = unsafe { result::malloc_sync(size) }.map_err(cuda_err(&format!(
            "cannot allocate {} MiB on the GPU",
            bytes >> 20
        )))?;
        // SAFETY: `ptr` has `size` bytes.
        unsafe { result::memset_d8_async(ptr, 0, size, stream.cu_stream()) }
            .map_err(cuda_err("memset"))?;
        Ok(DevBuf { ptr, bytes })
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `malloc_sync` and freed once.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

/// A prepared weight: raw checkpoint bytes on the device, or f32 for vectors.
pub struct DevWeight {
    format: KilnWeightFormat,
    rows: u64,
    cols: u64,
    data: DevBuf,
}

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

/// The open device.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    blas: blas_sys::cublasHandle_t,
    _blas_workspace: DevBuf,
    scratch: Option<DevBuf>,
    chunk_x: Option<DevBuf>,
    chunk_out: Option<DevBuf>,
    attn_ws: Option<DevBuf>,
    moe_ws: Option<DevBuf>,
    capturing: bool,
    log: HostLogger,
}

// SAFETY: the host uses a device from one thread at a time; the context is
// bound to the calling thread on every entry.
unsafe impl Send for CudaDevice {}

fn suffix(dtype: KilnDType) -> PluginResult<&'static str> {
    match dtype {
        KILN_F32 => Ok("f32"),
        KILN_F16 => Ok("f16"),
        KILN_BF16 => Ok("bf16"),
        other => Err(PluginError::unsupported(format!(
            "activation dtype {other} is not supported"
        ))),
    }
}

fn blas_type(dtype: KilnDType) -> blas_sys::cudaDataType {
    match dtype {
        KILN_F16 => blas_sys::cudaDataType::CUDA_R_16F,
        KILN_BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
        _ => blas_sys::cudaDataType::CUDA_R_32F,
    }
}

fn weight_dtype(format: KilnWeightFormat) -> Option<KilnDType> {
    match format {
        KILN_WEIGHT_F32 => Some(KILN_F32),
        KILN_WEIGHT_F16 => Some(KILN_F16),
        KILN_WEIGHT_BF16 => Some(KILN_BF16),
        _ => None,
    }
}

/// Weights and bytes per block of a GGUF format the kernels decode
/// (`weight_at` in common.cuh); `None` for other formats.
fn gguf_block(format: KilnWeightFormat) -> Option<(u64, u64)> {
    Some(match format {
        KILN_WEIGHT_GGUF_Q4_0 | KILN_WEIGHT_GGUF_IQ4_NL => (32, 18),
        KILN_WEIGHT_GGUF_Q4_1 => (32, 20),
        KILN_WEIGHT_GGUF_Q5_0 => (32, 22),
        KILN_WEIGHT_GGUF_Q5_1 => (32, 24),
        KILN_WEIGHT_GGUF_Q8_0 => (32, 34),
        KILN_WEIGHT_GGUF_Q2_K => (256, 84),
        KILN_WEIGHT_GGUF_Q3_K => (256, 110),
        KILN_WEIGHT_GGUF_Q4_K => (256, 144),
        KILN_WEIGHT_GGUF_Q5_K => (256, 176),
        KILN_WEIGHT_GGUF_Q6_K => (256, 210),
        KILN_WEIGHT_GGUF_IQ4_XS => (256, 136),
        _ => return None,
    })
}

/// True for the weight formats this backend holds.
fn format_supported(format: KilnWeightFormat) -> bool {
    matches!(format, KILN_WEIGHT_F32 | KILN_WEIGHT_F16 | KILN_WEIGHT_BF16)
        || gguf_block(format).is_some()
}

/// Bytes of a `[rows, cols]` weight in `format`, or None when unsupported
/// (or when `cols` is not a whole number of the format's blocks).
pub fn weight_bytes(format: KilnWeightFormat, rows: u64, cols: u64) -> Option<u64> {
    match format {
        KILN_WEIGHT_F32 => Some(rows * cols * 4),
        KILN_WEIGHT_F16 | KILN_WEIGHT_BF16 => Some(rows * cols * 2),
        _ => {
            let (per, bytes) = gguf_block(format)?;
            cols.is_multiple_of(per)
                .then(|| rows * (cols / per) * bytes)
        }
    }
}

/// Convert a vector weight (norm scale, bias) to f32 on the host.
fn vector_to_f32(format: KilnWeightFormat, bytes: &[u8]) -> PluginResult<Vec<f32>> {
    Ok(match format {
        KILN_WEIGHT_F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        KILN_WEIGHT_F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        KILN_WEIGHT_BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(PluginError::unsupported(format!(
                "vector weights in format {other}"
            )));
        }
    })
}

/// # Safety
/// `t.buffer` must be a live buffer handle of this plugin.
unsafe fn ptr(t: &KilnTensor) -> CUdeviceptr {
    // SAFETY: guaranteed by the caller.
    unsafe { (*(t.buffer.0 as *const DevBuf)).ptr + t.offset }
}

/// # Safety
/// `w` must be a live weight handle of this plugin.
unsafe fn weight<'a>(w: KilnWeight) -> PluginResult<&'a DevWeight> {
    if w.is_null() {
        return Err(PluginError::invalid("missing weight operand"));
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &*(w.0 as *const DevWeight) })
}

/// Launch a kernel by name with local variables as arguments (by reference).
macro_rules! launch {
    ($self:ident, $name:expr, $cfg:expr, [$($arg:expr),* $(,)?]) => {{
        let name: String = $name;
        let f = $self.kernels.get(&name)?.clone();
        let mut b = $self.stream.launch_builder(&f);
        $( b.arg(&$arg); )*
        // SAFETY: argument lists match the kernel signatures in kernels/cuda.
        unsafe { b.launch($cfg) }.map_err(cuda_err(&name))?;
        Ok::<(), PluginError>(())
    }};
}

mod moe;

fn grid_1d(n: u64, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(u64::from(block)).clamp(1, 65535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn rows_cfg(rows: u64, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaDevice {
    /// Open device `ordinal` on a new stream and load the kernels.
    pub fn open(ctx: Arc<CudaContext>, log: HostLogger) -> PluginResult<CudaDevice> {
        ctx.bind_to_thread().map_err(cuda_err("bind context"))?;
        let stream = ctx.new_stream().map_err(cuda_err("create stream"))?;
        let kernels = Kernels::load(&ctx, &log)?;
        let blas = cudarc::cublas::result::create_handle()
            .map_err(|e| PluginError::internal(format!("cuBLAS unavailable: {e:?}")))?;
        let workspace = DevBuf::alloc(BLAS_WORKSPACE, &stream)?;
        // SAFETY: valid handle, stream and workspace.
        unsafe {
            cudarc::cublas::result::set_stream(blas, stream.cu_stream() as _)
                .map_err(|e| PluginError::internal(format!("cublasSetStream: {e:?}")))?;
            blas_sys::cublasSetWorkspace_v2(blas, workspace.ptr as *mut _, BLAS_WORKSPACE as usize)
                .result()
                .map_err(|e| PluginError::internal(format!("cublasSetWorkspace: {e:?}")))?;
        }
        Ok(CudaDevice {
            ctx,
            stream,
            kernels,
            blas,
            _blas_workspace: workspace,
            scratch: None,
            chunk_x: None,
            chunk_out: None,
            attn_ws: None,
            moe_ws: None,
            capturing: false,
            log,
        })
    }

    fn bind(&self) -> PluginResult<()> {
        self.ctx.bind_to_thread().map_err(cuda_err("bind context"))
    }

    /// Ensure a grow-only scratch buffer of at least `bytes`.
    fn ensure(
        slot: &mut Option<DevBuf>,
        bytes: u64,
        capturing: bool,
        stream: &CudaStream,
        what: &str,
    ) -> PluginResult<CUdeviceptr> {
        if slot.as_ref().is_none_or(|b| b.bytes < bytes) {
            if capturing {
                return Err(PluginError::internal(format!(
                    "the {what} needs {bytes} bytes during graph capture; run the same batch eagerly first"
                )));
            }
            *slot = None;
            *slot = Some(DevBuf::alloc(bytes, stream)?);
        }
        Ok(slot.as_ref().map(|b| b.ptr).unwrap_or_default())
    }

    fn op(&mut self, op: &KilnOp) -> PluginResult<()> {
        match Op::decode(op)? {
            Op::Embedding(e) => self.embedding(&e),
            Op::RmsNorm(n) => self.rms_norm(&n),
            Op::AddRmsNorm(n) => self.add_rms_norm(&n),
            Op::Linear(l) => self.linear(&l),
            Op::Rope(r) => self.rope(&r),
            Op::SiluMul(m) => self.elementwise3([m.gate, m.up, m.out], "silu_mul"),
            Op::Add(a) => self.elementwise3([a.a, a.b, a.out], "add"),
            Op::KvWrite(w) => self.kv_write(&w),
            Op::Attention(a) => self.attention(&a),
            Op::GatherRows(g) => self.gather_rows(&g),
            Op::CopyBlocks(c) => self.copy_blocks(&c),
            Op::Sample(m) => self.sample(&m),
            Op::Cast(c) => self.cast(&c),
            Op::LayerNorm(n) => self.layer_norm(&n),
            Op::Activation(a) => self.activation(&a),
            Op::Scale(m) => self.scale(&m),
            Op::Softcap(c) => self.softcap(&c),
            Op::Moe(m) => self.moe(&m),
        }
    }

    fn embedding(&mut self, e: &Embedding) -> PluginResult<()> {
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

    fn rms_norm(&mut self, n: &RmsNorm) -> PluginResult<()> {
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

    fn add_rms_norm(&mut self, n: &AddRmsNorm) -> PluginResult<()> {
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

    fn rope(&mut self, r: &Rope) -> PluginResult<()> {
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

    fn elementwise3(&mut self, [a, b_, out]: [KilnTensor; 3], name: &str) -> PluginResult<()> {
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

    fn layer_norm(&mut self, n: &LayerNorm) -> PluginResult<()> {
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

    fn activation(&mut self, a: &Activation) -> PluginResult<()> {
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

    fn scale(&mut self, m: &Scale) -> PluginResult<()> {
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

    fn softcap(&mut self, c: &Softcap) -> PluginResult<()> {
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

    fn cast(&mut self, c: &Cast) -> PluginResult<()> {
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

    fn gather_rows(&mut self, g: &GatherRows) -> PluginResult<()> {
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

    fn kv_write(&mut self, w: &KvWrite) -> PluginResult<()> {
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

    fn copy_blocks(&mut self, c: &CopyBlocks) -> PluginResult<()> {
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

    fn linear(&mut self, l: &Linear) -> PluginResult<()> {
        let (x, out) = (l.x, l.out);
        // SAFETY: handles come from the host per the ABI.
        let w = unsafe { weight(l.weight) }?;
        let bias = if l.bias.is_null() {
            None
        } else {
            Some(unsafe { weight(l.bias) }?)
        };
        let accumulate = l.accumulate == Accumulate::Add;
        let (n, k, m) = (x.dims[0], x.dims[1], out.dims[1]);
        if w.cols != k || w.rows != m {
            return Err(PluginError::invalid(format!(
                "linear: weight is [{}, {}] but x is [{n}, {k}] and out [.., {m}]",
                w.rows, w.cols
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let (xp, wp, op_) = unsafe { (ptr(&x), w.data.ptr, ptr(&out)) };
        let rows = LinearRows {
            x: xp,
            out: op_,
            dtype: x.dtype,
            bias: bias.map_or(0, |b| b.data.ptr),
            accumulate,
            m,
            k,
        };
        let decode = l.decode_rows.min(n);
        let gemv = gemv_kernel(w.format, k).filter(|_| decode <= GEMV_MAX_TOKENS);
        let gemv_rows = if gemv.is_some() { decode } else { 0 };
        if let Some(g) = gemv
            && gemv_rows > 0
        {
            self.gemv(g, wp, &rows, gemv_rows)?;
        }
        if gemv_rows < n {
            self.gemm_rows(w, &rows, gemv_rows, n - gemv_rows)?;
        }
        Ok(())
    }

    /// Decode rows `[0, count)` through the GEMV kernels.
    fn gemv(&mut self, name: &str, w: CUdeviceptr, r: &LinearRows, count: u64) -> PluginResult<()> {
        let s = suffix(r.dtype)?;
        let (ni, mi, ki, acc) = (
            count as i32,
            r.m as i32,
            r.k as i32,
            i32::from(r.accumulate),
        );
        let cfg = LaunchConfig {
            grid_dim: (count.div_ceil(8) as u32, r.m.div_ceil(8) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (xp, bp, op_) = (r.x, r.bias, r.out);
        launch!(
            self,
            format!("gemv_{name}_{s}"),
            cfg,
            [xp, w, bp, op_, ni, mi, ki, acc]
        )
    }

    /// Rows `[first, first + count)` through cuBLAS in chunks of exactly
    /// [`GEMM_CHUNK`] rows (the last one padded through scratch buffers), so
    /// that cuBLAS always sees the same shape and a row's result does not
    /// depend on how many rows share the step.
    fn gemm_rows(
        &mut self,
        w: &DevWeight,
        r: &LinearRows,
        first: u64,
        count: u64,
    ) -> PluginResult<()> {
        let s = suffix(r.dtype)?;
        let es = dtype_size(r.dtype);
        let (m, k) = (r.m, r.k);
        let a = if weight_dtype(w.format) == Some(r.dtype) {
            w.data.ptr
        } else {
            let scratch = Self::ensure(
                &mut self.scratch,
                m * k * es,
                self.capturing,
                &self.stream,
                "dequantization scratch",
            )?;
            let (fmt, rows, cols) = (w.format as i32, m as i64, k as i64);
            launch!(
                self,
                format!("dequantize_{s}"),
                grid_1d(m * k, 256),
                [w.data.ptr, fmt, rows, cols, scratch]
            )?;
            scratch
        };
        let mut done = 0;
        while done < count {
            let rows = GEMM_CHUNK.min(count - done);
            let row = first + done;
            let (x, out) = (r.x + row * k * es, r.out + row * m * es);
            if rows == GEMM_CHUNK {
                self.gemm(GemmArgs {
                    a,
                    x,
                    out,
                    n: GEMM_CHUNK,
                    m,
                    k,
                    dtype: r.dtype,
                    accumulate: r.accumulate,
                })?;
            } else {
                self.gemm_padded(a, r, x, out, rows)?;
            }
            done += rows;
        }
        if r.bias != 0 {
            let (rows, cols, op_, bp) = (count as i64, m as i64, r.out + first * m * es, r.bias);
            launch!(
                self,
                format!("add_bias_{s}"),
                grid_1d(count * m, 256),
                [op_, bp, rows, cols]
            )?;
        }
        Ok(())
    }

    /// One partial chunk of `rows` rows, computed as a full chunk in scratch.
    fn gemm_padded(
        &mut self,
        a: CUdeviceptr,
        r: &LinearRows,
        x: CUdeviceptr,
        out: CUdeviceptr,
        rows: u64,
    ) -> PluginResult<()> {
        let es = dtype_size(r.dtype);
        let (m, k) = (r.m, r.k);
        let sx = Self::ensure(
            &mut self.chunk_x,
            GEMM_CHUNK * k * es,
            self.capturing,
            &self.stream,
            "GEMM input chunk",
        )?;
        let so = Self::ensure(
            &mut self.chunk_out,
            GEMM_CHUNK * m * es,
            self.capturing,
            &self.stream,
            "GEMM output chunk",
        )?;
        let stream = self.stream.cu_stream();
        // SAFETY: all ranges lie inside their allocations (checked shapes, sized scratch).
        unsafe {
            result::memcpy_dtod_async(sx, x, (rows * k * es) as usize, stream)
                .map_err(cuda_err("copy GEMM input"))?;
            if r.accumulate {
                result::memcpy_dtod_async(so, out, (rows * m * es) as usize, stream)
                    .map_err(cuda_err("copy GEMM output"))?;
            }
        }
        self.gemm(GemmArgs {
            a,
            x: sx,
            out: so,
            n: GEMM_CHUNK,
            m,
            k,
            dtype: r.dtype,
            accumulate: r.accumulate,
        })?;
        // SAFETY: as above.
        unsafe { result::memcpy_dtod_async(out, so, (rows * m * es) as usize, stream) }
            .map_err(cuda_err("copy GEMM result"))
    }

    fn gemm(&mut self, g: GemmArgs) -> PluginResult<()> {
        let alpha = 1.0f32;
        let beta = if g.accumulate { 1.0f32 } else { 0.0f32 };
        let t = blas_type(g.dtype);
        // Row-major out[n, m] = x[n, k] · W[m, k]ᵀ is column-major C[m, n] = Wᵀ[m, k] · X[k, n].
        // SAFETY: pointers and shapes were checked against the tensors.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                self.blas,
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                g.m as i32,
                g.n as i32,
                g.k as i32,
                (&alpha) as *const f32 as *const _,
                g.a as *const _,
                t,
                g.k as i32,
                g.x as *const _,
                t,
                g.k as i32,
                (&beta) as *const f32 as *const _,
                g.out as *mut _,
                t,
                g.m as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| {
            PluginError::internal(format!(
                "cuBLAS GEMM [{}x{}x{}] failed: {e:?}",
                g.n, g.m, g.k
            ))
        })
    }

    fn attention(&mut self, a: &Attention) -> PluginResult<()> {
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

    fn sample(&mut self, m: &Sample) -> PluginResult<()> {
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

/// The activation side of one linear op.
struct LinearRows {
    x: CUdeviceptr,
    out: CUdeviceptr,
    dtype: KilnDType,
    bias: CUdeviceptr,
    accumulate: bool,
    m: u64,
    k: u64,
}

/// The GEMV kernel family for a weight format, if it has one.
fn gemv_kernel(format: KilnWeightFormat, k: u64) -> Option<&'static str> {
    match format {
        KILN_WEIGHT_F32 if k.is_multiple_of(8) => Some("f32w"),
        KILN_WEIGHT_F16 if k.is_multiple_of(8) => Some("f16w"),
        KILN_WEIGHT_BF16 if k.is_multiple_of(8) => Some("bf16w"),
        KILN_WEIGHT_GGUF_Q4_0 => Some("q4_0"),
        KILN_WEIGHT_GGUF_Q4_1 => Some("q4_1"),
        KILN_WEIGHT_GGUF_Q8_0 => Some("q8_0"),
        _ => None,
    }
}

struct GemmArgs {
    a: CUdeviceptr,
    x: CUdeviceptr,
    out: CUdeviceptr,
    n: u64,
    m: u64,
    k: u64,
    dtype: KilnDType,
    accumulate: bool,
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let _ = self.bind();
        let _ = self.stream.synchronize();
        // SAFETY: the handle was created in `open` and is destroyed once.
        let _ = unsafe { cudarc::cublas::result::destroy_handle(self.blas) };
    }
}

impl DevicePlugin for CudaDevice {
    fn memory_info(&self) -> PluginResult<(u64, u64)> {
        self.bind()?;
        let (free, total) = self.ctx.mem_get_info().map_err(cuda_err("memory info"))?;
        Ok((free as u64, total as u64))
    }

    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        self.bind()?;
        let buf = DevBuf::alloc(bytes, &self.stream)?;
        Ok(KilnBuffer(Box::into_raw(Box::new(buf)) as *mut _))
    }

    fn free_buffer(&mut self, buf: KilnBuffer) {
        if buf.0.is_null() || self.bind().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        // SAFETY: the handle came from `alloc_buffer` and is freed once.
        drop(unsafe { Box::from_raw(buf.0 as *mut DevBuf) });
    }

    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        self.bind()?;
        // SAFETY: the host checked the range against the buffer size.
        unsafe {
            let b = &*(buf.0 as *const DevBuf);
            if offset + data.len() as u64 > b.bytes {
                return Err(PluginError::invalid("write outside the buffer"));
            }
            result::memcpy_htod_async(b.ptr + offset, data, self.stream.cu_stream())
                .map_err(cuda_err("host to device copy"))
        }
    }

    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        self.bind()?;
        // SAFETY: the host checked the range against the buffer size.
        unsafe {
            let b = &*(buf.0 as *const DevBuf);
            if offset + out.len() as u64 > b.bytes {
                return Err(PluginError::invalid("read outside the buffer"));
            }
            result::memcpy_dtoh_async(out, b.ptr + offset, self.stream.cu_stream())
                .map_err(cuda_err("device to host copy"))?;
        }
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        self.bind()?;
        // SAFETY: the host checked both ranges.
        unsafe {
            let (s, d) = (
                &*(copy.src.0 as *const DevBuf),
                &*(copy.dst.0 as *const DevBuf),
            );
            result::memcpy_dtod_async(
                d.ptr + copy.dst_offset,
                s.ptr + copy.src_offset,
                copy.len as usize,
                self.stream.cu_stream(),
            )
            .map_err(cuda_err("device copy"))
        }
    }

    fn synchronize(&mut self) -> PluginResult<()> {
        self.bind()?;
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        self.bind()?;
        let d = desc.desc;
        let (_, bytes) = desc
            .part(KILN_PART_DATA)
            .ok_or_else(|| PluginError::invalid(format!("weight {} has no data", desc.name())))?;
        let expected = weight_bytes(d.format, d.rows, d.cols).ok_or_else(|| {
            PluginError::unsupported(format!("weight {} has format {}", desc.name(), d.format))
        })?;
        if bytes.len() as u64 != expected {
            return Err(PluginError::invalid(format!(
                "weight {} has {} bytes, expected {expected} for [{}, {}]",
                desc.name(),
                bytes.len(),
                d.rows,
                d.cols
            )));
        }
        let (format, data) = if d.rows == 1 {
            let v = vector_to_f32(d.format, bytes)?;
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let buf = DevBuf::alloc(raw.len() as u64, &self.stream)?;
            // SAFETY: `buf` holds `raw.len()` bytes.
            unsafe { result::memcpy_htod_async(buf.ptr, &raw, self.stream.cu_stream()) }
                .map_err(cuda_err("upload"))?;
            self.stream.synchronize().map_err(cuda_err("synchronize"))?;
            (KILN_WEIGHT_F32, buf)
        } else {
            let buf = DevBuf::alloc(bytes.len() as u64, &self.stream)?;
            // SAFETY: `buf` holds `bytes.len()` bytes; synchronize before the host memory goes away.
            unsafe { result::memcpy_htod_async(buf.ptr, bytes, self.stream.cu_stream()) }
                .map_err(cuda_err("upload"))?;
            self.stream.synchronize().map_err(cuda_err("synchronize"))?;
            (d.format, buf)
        };
        Ok(KilnWeight(Box::into_raw(Box::new(DevWeight {
            format,
            rows: d.rows,
            cols: d.cols,
            data,
        })) as *mut _))
    }

    fn release_weight(&mut self, weight: KilnWeight) {
        if weight.is_null() || self.bind().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        // SAFETY: the handle came from `prepare_weight` and is released once.
        drop(unsafe { Box::from_raw(weight.0 as *mut DevWeight) });
    }

    fn supports(&self, query: &KilnSupportQuery) -> bool {
        let act_ok = matches!(query.act_dtype, KILN_F32 | KILN_F16 | KILN_BF16);
        if query.opcode == OP_MOE {
            return act_ok
                && (query.weight_format == KILN_WEIGHT_NONE
                    || moe::moe_format_supported(query.weight_format));
        }
        let weight_ok =
            query.weight_format == KILN_WEIGHT_NONE || format_supported(query.weight_format);
        act_ok
            && weight_ok
            && matches!(
                query.opcode,
                OP_EMBEDDING
                    | OP_RMS_NORM
                    | OP_ADD_RMS_NORM
                    | OP_LINEAR
                    | OP_ROPE
                    | OP_SILU_MUL
                    | OP_ADD
                    | OP_KV_WRITE
                    | OP_ATTENTION
                    | OP_GATHER_ROWS
                    | OP_COPY_BLOCKS
                    | OP_SAMPLE
                    | OP_CAST
                    | OP_LAYER_NORM
                    | OP_ACTIVATION
                    | OP_SCALE
                    | OP_SOFTCAP
            )
    }

    fn execute(&mut self, ops: &[KilnOp]) -> PluginResult<()> {
        self.bind()?;
        for op in ops {
            self.op(op)?;
        }
        Ok(())
    }

    fn graph_begin(&mut self) -> PluginResult<()> {
        self.bind()?;
        self.stream
            .begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(cuda_err("begin graph capture"))?;
        self.capturing = true;
        Ok(())
    }

    fn graph_end(&mut self) -> PluginResult<KilnGraph> {
        self.bind()?;
        self.capturing = false;
        let graph = self
            .stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(cuda_err("end graph capture"))?
            .ok_or_else(|| PluginError::internal("graph capture recorded nothing"))?;
        Ok(KilnGraph(Box::into_raw(Box::new(graph)) as *mut _))
    }

    fn graph_launch(&mut self, graph: KilnGraph) -> PluginResult<()> {
        self.bind()?;
        // SAFETY: the handle came from `graph_end`.
        let g = unsafe { &*(graph.0 as *const CudaGraph) };
        g.launch().map_err(cuda_err("graph launch"))
    }

    fn graph_destroy(&mut self, graph: KilnGraph) {
        if graph.0.is_null() || self.bind().is_err() {
            return;
        }
        // SAFETY: the handle came from `graph_end` and is destroyed once.
        drop(unsafe { Box::from_raw(graph.0 as *mut CudaGraph) });
    }
}

impl CudaDevice {
    /// The host logger.
    pub fn logger(&self) -> &HostLogger {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FP8 weights have no CUDA kernels yet: `supports()` says no, so the
    /// engine refuses such a model at load, naming the format.
    #[test]
    fn fp8_weights_are_declined() {
        assert!(!format_supported(KILN_WEIGHT_FP8_E4M3));
        assert!(!moe::moe_format_supported(KILN_WEIGHT_FP8_E4M3));
        assert_eq!(weight_bytes(KILN_WEIGHT_FP8_E4M3, 16, 32), None);
    }
}
