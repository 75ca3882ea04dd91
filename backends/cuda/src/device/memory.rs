//! Device memory: raw buffers, prepared weights and the weight formats this
//! backend holds, with the buffer and weight entry points of the plugin table.

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaStream, result};
use kiln_plugin_abi::plugin::{PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

use super::{CudaDevice, cuda_err};

/// A raw device allocation.
pub struct DevBuf {
    pub(super) ptr: CUdeviceptr,
    pub(super) bytes: u64,
}

impl DevBuf {
    pub(super) fn alloc(bytes: u64, stream: &CudaStream) -> PluginResult<DevBuf> {
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
    pub(super) format: KilnWeightFormat,
    pub(super) rows: u64,
    pub(super) cols: u64,
    pub(super) data: DevBuf,
}

pub(super) fn weight_dtype(format: KilnWeightFormat) -> Option<KilnDType> {
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
pub(super) fn format_supported(format: KilnWeightFormat) -> bool {
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

impl CudaDevice {
    pub(super) fn buffer_alloc(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        self.bind()?;
        let buf = DevBuf::alloc(bytes, &self.stream)?;
        Ok(KilnBuffer(Box::into_raw(Box::new(buf)) as *mut _))
    }

    pub(super) fn buffer_free(&mut self, buf: KilnBuffer) {
        if buf.0.is_null() || self.bind().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        // SAFETY: the handle came from `alloc_buffer` and is freed once.
        drop(unsafe { Box::from_raw(buf.0 as *mut DevBuf) });
    }

    pub(super) fn buffer_write(
        &mut self,
        buf: KilnBuffer,
        offset: u64,
        data: &[u8],
    ) -> PluginResult<()> {
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

    pub(super) fn buffer_read(
        &mut self,
        buf: KilnBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> PluginResult<()> {
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

    pub(super) fn buffer_copy(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
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

    pub(super) fn weight_upload(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
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

    pub(super) fn weight_free(&mut self, weight: KilnWeight) {
        if weight.is_null() || self.bind().is_err() {
            return;
        }
        let _ = self.stream.synchronize();
        // SAFETY: the handle came from `prepare_weight` and is released once.
        drop(unsafe { Box::from_raw(weight.0 as *mut DevWeight) });
    }
}
