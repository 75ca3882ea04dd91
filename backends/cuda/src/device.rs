//! One CUDA device: raw allocations, prepared weights, op dispatch, cuBLAS,
//! and graph capture on a single stream.

use std::sync::Arc;

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaStream, LaunchConfig, result};
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{DevicePlugin, HostLogger, PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

use crate::kernels::Kernels;

pub use attention::ATT_PART;
pub use linear::{GEMM_CHUNK, GEMV_MAX_TOKENS};
use memory::format_supported;
pub use memory::{DevBuf, DevWeight, weight_bytes};

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

// Declared after `launch!`, which they use.
mod attention;
mod elementwise;
mod graphs;
mod linear;
mod memory;
mod moe;
mod sample;

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
        self.buffer_alloc(bytes)
    }

    fn free_buffer(&mut self, buf: KilnBuffer) {
        self.buffer_free(buf)
    }

    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        self.buffer_write(buf, offset, data)
    }

    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        self.buffer_read(buf, offset, out)
    }

    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        self.buffer_copy(copy)
    }

    fn synchronize(&mut self) -> PluginResult<()> {
        self.bind()?;
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        self.weight_upload(desc)
    }

    fn release_weight(&mut self, weight: KilnWeight) {
        self.weight_free(weight)
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
        self.capture_begin()
    }

    fn graph_end(&mut self) -> PluginResult<KilnGraph> {
        self.capture_end()
    }

    fn graph_launch(&mut self, graph: KilnGraph) -> PluginResult<()> {
        self.graph_run(graph)
    }

    fn graph_destroy(&mut self, graph: KilnGraph) {
        self.graph_free(graph)
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
