//! The plugin-side SDK: implement [`BackendPlugin`] and [`DevicePlugin`] in
//! safe Rust, then call [`export_backend!`](crate::export_backend) once. The
//! macro exports the three symbols the host looks for and builds the tables;
//! every entry point catches panics and turns errors into a status plus a
//! `last_error` message.
//!
//! This file holds what a plugin author implements and handles (the traits,
//! [`PluginError`], [`PluginDeviceInfo`], [`HostLogger`], [`WeightDescRef`]).
//! The `extern "C"` side that adapts them to the tables (the device vtable,
//! [`PluginSlot`], [`guard`], `last_error` and the macro itself) lives in
//! `plugin/shims.rs` and is re-exported here, so every path stays
//! `kiln_plugin_abi::plugin::…`.

use std::ffi::{CStr, CString, c_char, c_void};

use crate::types::*;

mod shims;

#[doc(hidden)]
pub use shims::sdk_set_last_error;
pub use shims::{DEVICE_VTABLE, PluginSlot, guard, sdk_last_error};

/// An error a plugin reports: a status and a message for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The `KILN_*` status the failing entry point returns to the host
    /// (never [`KILN_OK`]).
    pub status: KilnStatus,
    /// What went wrong, for the user.
    pub message: String,
}

impl PluginError {
    /// [`KILN_UNSUPPORTED`] with a message.
    pub fn unsupported(message: impl Into<String>) -> Self {
        PluginError {
            status: KILN_UNSUPPORTED,
            message: message.into(),
        }
    }
    /// [`KILN_INVALID_ARGUMENT`] with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        PluginError {
            status: KILN_INVALID_ARGUMENT,
            message: message.into(),
        }
    }
    /// [`KILN_OUT_OF_MEMORY`] with a message.
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        PluginError {
            status: KILN_OUT_OF_MEMORY,
            message: message.into(),
        }
    }
    /// [`KILN_INTERNAL`] with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        PluginError {
            status: KILN_INTERNAL,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<crate::ops::OpDecodeError> for PluginError {
    fn from(e: crate::ops::OpDecodeError) -> Self {
        match e {
            crate::ops::OpDecodeError::UnknownOpcode(_) => PluginError::unsupported(e.to_string()),
            _ => PluginError::invalid(e.to_string()),
        }
    }
}

/// What every fallible [`BackendPlugin`] and [`DevicePlugin`] method
/// returns; an `Err` becomes the entry point's status and `last_error`.
pub type PluginResult<T> = Result<T, PluginError>;

/// Device facts a plugin reports (encoded into [`KilnDeviceInfo`] by the SDK).
#[derive(Debug, Clone, Default)]
pub struct PluginDeviceInfo {
    /// Short name (`cpu0`); truncated to 63 bytes in [`KilnDeviceInfo::name`].
    pub name: String,
    /// One line the host shows at startup and in logs (CPU model and ISA,
    /// GPU name); truncated to 255 bytes in [`KilnDeviceInfo::description`].
    pub description: String,
    /// `KILN_DEVICE_*`.
    pub kind: KilnDeviceKind,
    /// Device memory in bytes (for a CPU, the host's RAM).
    pub memory_total: u64,
    /// Bytes free when [`BackendPlugin::device_info`] was called.
    pub memory_free: u64,
    /// `KILN_CAP_*` bits.
    pub capabilities: u64,
    /// Compute capability as `major * 10 + minor` for GPUs, else 0.
    pub compute_capability: u32,
    /// Worker threads (CPU) or streaming multiprocessors (GPU).
    pub parallelism: u32,
}

/// Logging back into the host, handed to [`BackendPlugin::init`]; silent
/// when the host table has no `log` entry.
#[derive(Clone, Copy)]
pub struct HostLogger {
    log: Option<unsafe extern "C" fn(i32, *const c_char, *const c_char)>,
}

impl HostLogger {
    /// A logger that drops everything.
    pub const SILENT: HostLogger = HostLogger { log: None };

    /// Log at `level` (1 error … 5 trace).
    pub fn log(&self, level: i32, target: &str, msg: &str) {
        if let Some(f) = self.log {
            let target = CString::new(target.replace('\0', "")).unwrap_or_default();
            let msg = CString::new(msg.replace('\0', "")).unwrap_or_default();
            // SAFETY: both strings are NUL-terminated and outlive the call.
            unsafe { f(level, target.as_ptr(), msg.as_ptr()) };
        }
    }
    /// Log at info level.
    pub fn info(&self, target: &str, msg: &str) {
        self.log(3, target, msg);
    }
    /// Log at warn level.
    pub fn warn(&self, target: &str, msg: &str) {
        self.log(2, target, msg);
    }
}

/// A backend plugin: one per library.
pub trait BackendPlugin: Send + Sync + Sized + 'static {
    /// Score on this machine: 0 when it cannot run here, higher is preferred.
    fn score() -> i32;
    /// Why [`score`](Self::score) is 0 here, in one line the host shows the
    /// user (e.g. "no NVIDIA GPU is visible"); `None` for no detail.
    fn unavailable_reason() -> Option<String> {
        None
    }
    /// Initialise (called once, after the host checked the ABI version).
    fn init(host: HostLogger) -> PluginResult<Self>;
    /// How many devices this backend can open; device indices run from 0
    /// to this count minus one.
    fn device_count(&self) -> u32;
    /// Facts about device `index` (below [`device_count`](Self::device_count)),
    /// encoded into a [`KilnDeviceInfo`] by the SDK.
    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo>;
    /// Open a device with JSON parameters.
    fn open_device(&self, index: u32, params_json: &str) -> PluginResult<Box<dyn DevicePlugin>>;
    /// A backend-specific extension function by name, or `None` (the
    /// default) when the backend has none by that name.
    fn proc_address(&self, _name: &str) -> Option<*const c_void> {
        None
    }
}

/// A borrowed view of a [`KilnWeightDesc`] and its parts.
#[derive(Debug, Clone, Copy)]
pub struct WeightDescRef<'a> {
    /// The host's descriptor: format, shape, `bits`, `group_size`, flags.
    pub desc: &'a KilnWeightDesc,
    /// `desc.parts` as a slice of `desc.n_parts` entries (empty when null);
    /// host memory, valid only for the [`DevicePlugin::prepare_weight`] call.
    pub parts: &'a [KilnWeightPart],
}

impl<'a> WeightDescRef<'a> {
    /// Tensor name (for errors).
    pub fn name(&self) -> String {
        if self.desc.name.is_null() {
            return "<unnamed>".into();
        }
        // SAFETY: the host passes a NUL-terminated name or null.
        unsafe { CStr::from_ptr(self.desc.name) }
            .to_string_lossy()
            .into_owned()
    }

    /// The first part with `role`, as bytes.
    pub fn part(&self, role: KilnPartRole) -> Option<(&'a KilnWeightPart, &'a [u8])> {
        self.parts.iter().find(|p| p.role == role).map(|p| {
            let bytes = if p.data.is_null() || p.len == 0 {
                &[][..]
            } else {
                // SAFETY: the host guarantees `data` is valid for `len` bytes during the call.
                unsafe { std::slice::from_raw_parts(p.data, p.len as usize) }
            };
            (p, bytes)
        })
    }

    /// [`part`](Self::part), or an error naming the weight and the missing
    /// part (`what`: "scale").
    pub fn required_part(
        &self,
        role: KilnPartRole,
        what: &str,
    ) -> PluginResult<(&'a KilnWeightPart, &'a [u8])> {
        self.part(role).ok_or_else(|| {
            PluginError::invalid(format!("weight {} has no {what} part", self.name()))
        })
    }
}

/// An open device, boxed by the SDK behind [`DEVICE_VTABLE`] and dropped
/// when the host closes it. The host calls it from one thread at a time.
pub trait DevicePlugin: Send {
    /// Free and total memory in bytes.
    fn memory_info(&self) -> PluginResult<(u64, u64)>;
    /// Allocate a zero-filled buffer.
    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer>;
    /// Give back a buffer from [`alloc_buffer`](Self::alloc_buffer); the host
    /// frees each once and never uses the handle again. Cannot fail.
    fn free_buffer(&mut self, buf: KilnBuffer);
    /// Copy `data` into `buf` at byte `offset` (host → device).
    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()>;
    /// Fill `out` from `buf` at byte `offset` (device → host), after the
    /// work queued so far has finished.
    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()>;
    /// Copy between buffers on the device (offsets and length in bytes).
    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()>;
    /// Wait for queued work.
    fn synchronize(&mut self) -> PluginResult<()>;
    /// Upload a weight into the device's preferred layout (repacking or
    /// dequantizing as it likes). `desc` borrows host memory for this call
    /// only, so anything kept must be copied.
    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight>;
    /// Free a weight from [`prepare_weight`](Self::prepare_weight); the host
    /// releases each once. Cannot fail.
    fn release_weight(&mut self, weight: KilnWeight);
    /// Whether this device can run `query`'s opcode with its weight format
    /// and activation dtype; the host asks before it relies on the combination.
    fn supports(&self, query: &KilnSupportQuery) -> bool;
    /// Queue `ops` in order (read each with [`crate::ops::Op::decode`]);
    /// the work may finish later, `read_buffer` and `synchronize` wait for it.
    fn execute(&mut self, ops: &[KilnOp]) -> PluginResult<()>;
    /// Start graph capture (default: unsupported).
    fn graph_begin(&mut self) -> PluginResult<()> {
        Err(PluginError::unsupported(
            "graphs are not supported by this device",
        ))
    }
    /// End graph capture (default: unsupported).
    fn graph_end(&mut self) -> PluginResult<KilnGraph> {
        Err(PluginError::unsupported(
            "graphs are not supported by this device",
        ))
    }
    /// Replay a graph (default: unsupported).
    fn graph_launch(&mut self, _graph: KilnGraph) -> PluginResult<()> {
        Err(PluginError::unsupported(
            "graphs are not supported by this device",
        ))
    }
    /// Destroy a graph (default: nothing).
    fn graph_destroy(&mut self, _graph: KilnGraph) {}
}
