//! `OP_LINEAR`: decode rows through the GEMV kernels, the rest through cuBLAS
//! in fixed-size chunks so that results are batch-invariant.

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{LaunchConfig, PushKernelArg, result};
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{PluginError, PluginResult};
use kiln_plugin_abi::*;

use super::memory::{DevWeight, weight_dtype};
use super::{CudaDevice, cuda_err, grid_1d, ptr, suffix, weight};

/// Most decode rows served by the GEMV kernels (beyond it: cuBLAS).
pub const GEMV_MAX_TOKENS: u64 = 64;
/// Rows of every cuBLAS call (fixed, for batch invariance).
pub const GEMM_CHUNK: u64 = 256;

fn blas_type(dtype: KilnDType) -> blas_sys::cudaDataType {
    match dtype {
        KILN_F16 => blas_sys::cudaDataType::CUDA_R_16F,
        KILN_BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
        _ => blas_sys::cudaDataType::CUDA_R_32F,
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

impl CudaDevice {
    pub(super) fn linear(&mut self, l: &Linear) -> PluginResult<()> {
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
}
