//! Safe host-side wrappers over a backend's tables.
//!
//! [`Backend`] wraps a registration (from a loaded library or a statically
//! linked plugin); [`Device`], [`Buffer`], [`Weight`] and [`Graph`] own their
//! handles and release them on drop. Every call into a device takes the
//! device's lock, so the "one thread at a time" rule of the ABI holds even
//! when buffers are dropped on another thread.

use std::ffi::{CStr, CString, c_char};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::types::*;

/// A failed ABI call: the status and the plugin's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{backend} backend: {message} (status {status})")]
pub struct AbiError {
    /// The backend's name.
    pub backend: String,
    /// `KILN_*` status code.
    pub status: KilnStatus,
    /// The plugin's `last_error` text, or a description of the status.
    pub message: String,
}

impl AbiError {
    /// True for [`KILN_OUT_OF_MEMORY`].
    pub fn is_out_of_memory(&self) -> bool {
        self.status == KILN_OUT_OF_MEMORY
    }
    /// True for [`KILN_UNSUPPORTED`].
    pub fn is_unsupported(&self) -> bool {
        self.status == KILN_UNSUPPORTED
    }
}

/// Result of a call through the ABI.
pub type AbiResult<T> = Result<T, AbiError>;

/// Facts about one device, decoded from [`KilnDeviceInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Index within its backend.
    pub index: u32,
    /// Short name (`cpu0`, `cuda0`).
    pub name: String,
    /// Description (CPU model and ISA, GPU name).
    pub description: String,
    /// `KILN_DEVICE_*`.
    pub kind: KilnDeviceKind,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Free memory in bytes at query time.
    pub memory_free: u64,
    /// `KILN_CAP_*` bits.
    pub capabilities: u64,
    /// `major * 10 + minor` for GPUs.
    pub compute_capability: u32,
    /// Threads or multiprocessors.
    pub parallelism: u32,
}

impl DeviceInfo {
    /// True when the capability bit is set.
    pub fn has(&self, capability: u64) -> bool {
        self.capabilities & capability != 0
    }
}

fn fixed_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Copy `s` into a fixed, NUL-terminated field (truncating).
pub fn write_fixed_str(field: &mut [u8], s: &str) {
    field.fill(0);
    let n = s.len().min(field.len().saturating_sub(1));
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// An empty [`KilnDeviceInfo`] with `struct_size` set.
pub fn empty_device_info() -> KilnDeviceInfo {
    KilnDeviceInfo {
        struct_size: std::mem::size_of::<KilnDeviceInfo>() as u32,
        kind: KILN_DEVICE_CPU,
        memory_total: 0,
        memory_free: 0,
        capabilities: 0,
        compute_capability: 0,
        parallelism: 0,
        name: [0; 64],
        description: [0; 256],
    }
}

/// A backend: a registration that lives for the whole process.
#[derive(Clone, Copy)]
pub struct Backend {
    reg: &'static KilnBackendRegistration,
}

// SAFETY: the registration is immutable static data plus functions the ABI
// requires to be callable from any thread.
unsafe impl Send for Backend {}
unsafe impl Sync for Backend {}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name())
            .finish()
    }
}

impl Backend {
    /// Wrap a registration.
    ///
    /// # Safety
    /// `reg` must point to a registration that stays valid and unchanged for
    /// the rest of the process (its library is never unloaded).
    pub unsafe fn from_registration(reg: *const KilnBackendRegistration) -> Option<Backend> {
        // SAFETY: guaranteed by the caller.
        let reg = unsafe { reg.as_ref() }?;
        (reg.struct_size as usize >= crate::tables::REGISTRATION_REQUIRED_SIZE)
            .then_some(Backend { reg })
    }

    /// The raw registration.
    pub fn registration(&self) -> &'static KilnBackendRegistration {
        self.reg
    }

    /// The backend's name.
    pub fn name(&self) -> String {
        if self.reg.name.is_null() {
            return "unnamed".into();
        }
        // SAFETY: the registration's name is a static NUL-terminated string.
        unsafe { CStr::from_ptr(self.reg.name) }
            .to_string_lossy()
            .into_owned()
    }

    fn error(&self, status: KilnStatus) -> AbiError {
        // SAFETY: last_error is part of every registration; it returns null or
        // a NUL-terminated string valid until the next call on this thread.
        let ptr = unsafe { (self.reg.last_error)() };
        let message = if ptr.is_null() {
            status_text(status).to_string()
        } else {
            // SAFETY: see above.
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        };
        AbiError {
            backend: self.name(),
            status,
            message,
        }
    }

    fn check(&self, status: KilnStatus) -> AbiResult<()> {
        if status == KILN_OK {
            Ok(())
        } else {
            Err(self.error(status))
        }
    }

    /// Devices this backend can open.
    pub fn devices(&self) -> AbiResult<Vec<DeviceInfo>> {
        // SAFETY: plain call into the registration.
        let count = unsafe { (self.reg.device_count)() };
        (0..count).map(|i| self.device_info(i)).collect()
    }

    /// Facts about device `index`.
    pub fn device_info(&self, index: u32) -> AbiResult<DeviceInfo> {
        let mut raw = empty_device_info();
        // SAFETY: `raw` is a valid, writable KilnDeviceInfo.
        self.check(unsafe { (self.reg.device_info)(index, &mut raw) })?;
        // A 1.0 plugin reads 32-byte sampling rows; the host writes 1.1's 48.
        if self.reg.abi_version & 0xffff == 0 {
            raw.capabilities &= !(KILN_CAP_DEVICE_SAMPLING | KILN_CAP_SAMPLE_MASK);
        }
        Ok(DeviceInfo {
            index,
            name: fixed_str(&raw.name),
            description: fixed_str(&raw.description),
            kind: raw.kind,
            memory_total: raw.memory_total,
            memory_free: raw.memory_free,
            capabilities: raw.capabilities,
            compute_capability: raw.compute_capability,
            parallelism: raw.parallelism,
        })
    }

    /// Open device `index` with JSON parameters (`"{}"` for defaults).
    pub fn open(&self, index: u32, params_json: &str) -> AbiResult<Device> {
        let info = self.device_info(index)?;
        let params = CString::new(params_json).map_err(|_| AbiError {
            backend: self.name(),
            status: KILN_INVALID_ARGUMENT,
            message: "device parameters contain a NUL byte".into(),
        })?;
        let mut raw = KilnDevice {
            handle: std::ptr::null_mut(),
            vtable: std::ptr::null(),
        };
        // SAFETY: `params` is NUL-terminated and `raw` writable.
        self.check(unsafe { (self.reg.open_device)(index, params.as_ptr(), &mut raw) })?;
        if raw.vtable.is_null() {
            return Err(AbiError {
                backend: self.name(),
                status: KILN_INTERNAL,
                message: "open_device returned no function table".into(),
            });
        }
        // SAFETY: a non-null table from open_device is valid for its struct_size.
        let vtable =
            unsafe { crate::tables::read_device_table(raw.vtable) }.map_err(|message| {
                AbiError {
                    backend: self.name(),
                    status: KILN_INTERNAL,
                    message,
                }
            })?;
        Ok(Device {
            inner: Arc::new(DeviceInner {
                backend: *self,
                raw,
                vtable,
                lock: Mutex::new(()),
            }),
            info,
        })
    }

    /// Look up an extension function.
    pub fn proc_address(&self, name: &str) -> Option<*const std::ffi::c_void> {
        let f = crate::tables::registration_proc_address(self.reg)?;
        let name = CString::new(name).ok()?;
        // SAFETY: NUL-terminated name.
        let ptr = unsafe { f(name.as_ptr()) };
        (!ptr.is_null()).then_some(ptr)
    }
}

/// Text for a status code.
pub fn status_text(status: KilnStatus) -> &'static str {
    match status {
        KILN_OK => "ok",
        KILN_UNSUPPORTED => "unsupported",
        KILN_OUT_OF_MEMORY => "out of memory",
        KILN_INVALID_ARGUMENT => "invalid argument",
        _ => "internal error",
    }
}

struct DeviceInner {
    backend: Backend,
    raw: KilnDevice,
    /// The plugin's table as far as its `struct_size` goes; later entries are `None`.
    vtable: KilnDeviceVtable,
    lock: Mutex<()>,
}

// SAFETY: every use of `raw` happens under `lock`, which serializes calls as
// the ABI requires.
unsafe impl Send for DeviceInner {}
unsafe impl Sync for DeviceInner {}

impl DeviceInner {
    fn vt(&self) -> &KilnDeviceVtable {
        &self.vtable
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check(&self, status: KilnStatus) -> AbiResult<()> {
        self.backend.check(status)
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        let _g = self.guard();
        // SAFETY: last user of the handle; all buffers/weights hold an Arc to us.
        unsafe { (self.vt().close)(self.raw.handle) };
    }
}

/// An open device. Cloning shares it.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceInner>,
    info: DeviceInfo,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("info", &self.info).finish()
    }
}

/// A weight to upload: a format, a shape and host-memory parts.
#[derive(Debug, Clone)]
pub struct WeightSpec<'a> {
    /// Tensor name for error messages.
    pub name: &'a str,
    /// `KILN_WEIGHT_*`.
    pub format: KilnWeightFormat,
    /// Output features (1 for vectors).
    pub rows: u64,
    /// Input features (length for vectors).
    pub cols: u64,
    /// Bits per value for GPTQ/AWQ.
    pub bits: u32,
    /// Group size for GPTQ/AWQ.
    pub group_size: u32,
    /// `KILN_WEIGHT_FLAG_*`.
    pub flags: u32,
    /// Data, scales, zero points and so on, as the format requires
    /// (`KILN_WEIGHT_*` lists them); borrowed only for the upload.
    pub parts: Vec<WeightPartSpec<'a>>,
}

/// One part of a [`WeightSpec`].
#[derive(Debug, Clone)]
pub struct WeightPartSpec<'a> {
    /// `KILN_PART_*`.
    pub role: KilnPartRole,
    /// Element type of the bytes.
    pub dtype: KilnDType,
    /// Shape, outermost first (up to 4 dims).
    pub dims: Vec<u64>,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> WeightSpec<'a> {
    /// A weight with a single data part.
    pub fn single(
        name: &'a str,
        format: KilnWeightFormat,
        rows: u64,
        cols: u64,
        data: &'a [u8],
    ) -> Self {
        WeightSpec {
            name,
            format,
            rows,
            cols,
            bits: 0,
            group_size: 0,
            flags: 0,
            parts: vec![WeightPartSpec {
                role: KILN_PART_DATA,
                dtype: KILN_U8,
                dims: vec![data.len() as u64],
                data,
            }],
        }
    }
}

fn dims4(dims: &[u64]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (o, d) in out.iter_mut().zip(dims) {
        *o = *d;
    }
    out
}

impl Device {
    /// Facts about this device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The backend that opened it.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Free and total memory in bytes.
    pub fn memory_info(&self) -> AbiResult<(u64, u64)> {
        let (mut free, mut total) = (0u64, 0u64);
        let _g = self.inner.guard();
        // SAFETY: valid handle and out-pointers.
        self.inner.check(unsafe {
            (self.inner.vt().memory_info)(self.inner.raw.handle, &mut free, &mut total)
        })?;
        Ok((free, total))
    }

    /// Allocate a zero-filled buffer.
    pub fn alloc(&self, bytes: u64) -> AbiResult<Buffer> {
        let mut raw = KilnBuffer::NULL;
        let _g = self.inner.guard();
        // SAFETY: valid handle and out-pointer.
        self.inner.check(unsafe {
            (self.inner.vt().alloc_buffer)(self.inner.raw.handle, bytes, &mut raw)
        })?;
        Ok(Buffer {
            raw,
            bytes,
            device: self.inner.clone(),
        })
    }

    /// Copy host bytes into a buffer.
    pub fn write(&self, buf: &Buffer, offset: u64, data: &[u8]) -> AbiResult<()> {
        self.check_range(buf, offset, data.len() as u64)?;
        let _g = self.inner.guard();
        // SAFETY: range checked; `data` is valid for reads of its length.
        self.inner.check(unsafe {
            (self.inner.vt().write_buffer)(
                self.inner.raw.handle,
                buf.raw,
                offset,
                data.as_ptr(),
                data.len() as u64,
            )
        })
    }

    /// Copy a buffer's bytes into host memory (waits for queued work).
    pub fn read(&self, buf: &Buffer, offset: u64, out: &mut [u8]) -> AbiResult<()> {
        self.check_range(buf, offset, out.len() as u64)?;
        let _g = self.inner.guard();
        // SAFETY: range checked; `out` is valid for writes of its length.
        self.inner.check(unsafe {
            (self.inner.vt().read_buffer)(
                self.inner.raw.handle,
                buf.raw,
                offset,
                out.as_mut_ptr(),
                out.len() as u64,
            )
        })
    }

    /// Copy `len` bytes between buffers on the device.
    pub fn copy(&self, src: (&Buffer, u64), dst: (&Buffer, u64), len: u64) -> AbiResult<()> {
        self.check_range(src.0, src.1, len)?;
        self.check_range(dst.0, dst.1, len)?;
        let copy = KilnBufferCopy {
            src: src.0.raw,
            src_offset: src.1,
            dst: dst.0.raw,
            dst_offset: dst.1,
            len,
        };
        let _g = self.inner.guard();
        // SAFETY: ranges checked.
        self.inner
            .check(unsafe { (self.inner.vt().copy_buffer)(self.inner.raw.handle, &copy) })
    }

    fn check_range(&self, buf: &Buffer, offset: u64, len: u64) -> AbiResult<()> {
        if offset.checked_add(len).is_none_or(|end| end > buf.bytes) {
            return Err(AbiError {
                backend: self.inner.backend.name(),
                status: KILN_INVALID_ARGUMENT,
                message: format!(
                    "range {offset}+{len} outside a buffer of {} bytes",
                    buf.bytes
                ),
            });
        }
        Ok(())
    }

    /// Wait for queued work.
    pub fn synchronize(&self) -> AbiResult<()> {
        let _g = self.inner.guard();
        // SAFETY: valid handle.
        self.inner
            .check(unsafe { (self.inner.vt().synchronize)(self.inner.raw.handle) })
    }

    /// Upload and prepare a weight.
    pub fn prepare_weight(&self, spec: &WeightSpec<'_>) -> AbiResult<Weight> {
        let parts: Vec<KilnWeightPart> = spec
            .parts
            .iter()
            .map(|p| KilnWeightPart {
                role: p.role,
                dtype: p.dtype,
                rank: p.dims.len().min(4) as u32,
                dims: dims4(&p.dims),
                data: p.data.as_ptr(),
                len: p.data.len() as u64,
            })
            .collect();
        let name = CString::new(spec.name.replace('\0', "")).unwrap_or_default();
        let desc = KilnWeightDesc {
            struct_size: std::mem::size_of::<KilnWeightDesc>() as u32,
            format: spec.format,
            bits: spec.bits,
            group_size: spec.group_size,
            flags: spec.flags,
            rows: spec.rows,
            cols: spec.cols,
            parts: parts.as_ptr(),
            n_parts: parts.len() as u32,
            name: name.as_ptr(),
        };
        let mut raw = KilnWeight::NULL;
        let _g = self.inner.guard();
        // SAFETY: `desc`, `parts` and the part data outlive the call.
        self.inner.check(unsafe {
            (self.inner.vt().prepare_weight)(self.inner.raw.handle, &desc, &mut raw)
        })?;
        Ok(Weight {
            raw,
            rows: spec.rows,
            cols: spec.cols,
            format: spec.format,
            device: self.inner.clone(),
        })
    }

    /// Whether the device can run an opcode with a weight format (or `None`) and activation dtype.
    pub fn supports(
        &self,
        opcode: u32,
        weight_format: Option<KilnWeightFormat>,
        act_dtype: KilnDType,
    ) -> bool {
        let q = KilnSupportQuery {
            opcode,
            weight_format: weight_format.unwrap_or(u32::MAX),
            act_dtype,
        };
        let _g = self.inner.guard();
        // SAFETY: valid handle and query.
        unsafe { (self.inner.vt().supports)(self.inner.raw.handle, &q) != 0 }
    }

    /// Queue operations. The caller keeps every referenced buffer and weight alive
    /// until the work is done (a later `read`, `synchronize` or drop of the device).
    pub fn execute(&self, ops: &[KilnOp]) -> AbiResult<()> {
        let _g = self.inner.guard();
        // SAFETY: `ops` is valid for reads of its length.
        self.inner.check(unsafe {
            (self.inner.vt().execute)(self.inner.raw.handle, ops.as_ptr(), ops.len() as u64)
        })
    }

    /// True when the device can capture graphs.
    pub fn has_graphs(&self) -> bool {
        let vt = self.inner.vt();
        self.info.has(KILN_CAP_GRAPHS)
            && vt.graph_begin.is_some()
            && vt.graph_end.is_some()
            && vt.graph_launch.is_some()
            && vt.graph_destroy.is_some()
    }

    fn unsupported(&self, what: &str) -> AbiError {
        AbiError {
            backend: self.inner.backend.name(),
            status: KILN_UNSUPPORTED,
            message: format!("{what} is not supported by this device"),
        }
    }

    /// Start capturing the operations queued next.
    pub fn graph_begin(&self) -> AbiResult<()> {
        let f = self
            .inner
            .vt()
            .graph_begin
            .ok_or_else(|| self.unsupported("graph capture"))?;
        let _g = self.inner.guard();
        // SAFETY: valid handle.
        self.inner.check(unsafe { f(self.inner.raw.handle) })
    }

    /// Stop capturing and return the graph.
    pub fn graph_end(&self) -> AbiResult<Graph> {
        let f = self
            .inner
            .vt()
            .graph_end
            .ok_or_else(|| self.unsupported("graph capture"))?;
        let mut raw = KilnGraph(std::ptr::null_mut());
        let _g = self.inner.guard();
        // SAFETY: valid handle and out-pointer.
        self.inner
            .check(unsafe { f(self.inner.raw.handle, &mut raw) })?;
        Ok(Graph {
            raw,
            device: self.inner.clone(),
        })
    }

    /// Replay a captured graph.
    pub fn graph_launch(&self, graph: &Graph) -> AbiResult<()> {
        let f = self
            .inner
            .vt()
            .graph_launch
            .ok_or_else(|| self.unsupported("graph replay"))?;
        let _g = self.inner.guard();
        // SAFETY: valid handle and graph from this device.
        self.inner
            .check(unsafe { f(self.inner.raw.handle, graph.raw) })
    }
}

/// A device buffer, freed on drop.
pub struct Buffer {
    raw: KilnBuffer,
    bytes: u64,
    device: Arc<DeviceInner>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Buffer {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// True for a zero-byte buffer.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The raw handle.
    pub fn raw(&self) -> KilnBuffer {
        self.raw
    }

    /// A contiguous view at `offset` bytes with `dtype` and `dims`.
    ///
    /// # Panics
    /// When the view does not fit in the buffer or has more than 4 dims —
    /// both are programming errors in the caller.
    pub fn view(&self, offset: u64, dtype: KilnDType, dims: &[u64]) -> KilnTensor {
        assert!(dims.len() <= 4, "at most 4 dimensions");
        let t = KilnTensor {
            buffer: self.raw,
            offset,
            dtype,
            rank: dims.len() as u32,
            dims: dims4(dims),
        };
        assert!(
            offset + t.byte_len() <= self.bytes,
            "view of {} bytes at {offset} exceeds a buffer of {} bytes",
            t.byte_len(),
            self.bytes
        );
        t
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _g = self.device.guard();
        // SAFETY: the handle came from this device and is freed once.
        unsafe { (self.device.vt().free_buffer)(self.device.raw.handle, self.raw) };
    }
}

/// A prepared weight, released on drop.
pub struct Weight {
    raw: KilnWeight,
    rows: u64,
    cols: u64,
    format: KilnWeightFormat,
    device: Arc<DeviceInner>,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weight")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("format", &self.format)
            .finish()
    }
}

impl Weight {
    /// The raw handle.
    pub fn raw(&self) -> KilnWeight {
        self.raw
    }
    /// Output features.
    pub fn rows(&self) -> u64 {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> u64 {
        self.cols
    }
    /// `KILN_WEIGHT_*`.
    pub fn format(&self) -> KilnWeightFormat {
        self.format
    }
}

impl Drop for Weight {
    fn drop(&mut self) {
        let _g = self.device.guard();
        // SAFETY: the handle came from this device and is released once.
        unsafe { (self.device.vt().release_weight)(self.device.raw.handle, self.raw) };
    }
}

/// A captured graph, destroyed on drop.
pub struct Graph {
    raw: KilnGraph,
    device: Arc<DeviceInner>,
}

impl Drop for Graph {
    fn drop(&mut self) {
        if let Some(f) = self.device.vt().graph_destroy {
            let _g = self.device.guard();
            // SAFETY: the graph came from this device and is destroyed once.
            unsafe { f(self.device.raw.handle, self.raw) };
        }
    }
}

/// Convert a possibly-null C string from a plugin into a Rust string.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string.
pub unsafe fn c_str_lossy(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}
