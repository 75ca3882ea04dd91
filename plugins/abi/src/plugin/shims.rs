//! The C side of the plugin SDK: the `extern "C"` shims behind
//! [`DEVICE_VTABLE`], the per-plugin [`PluginSlot`] behind the symbols that
//! [`export_backend!`](crate::export_backend) exports, and the thread-local
//! `last_error`. Every entry point here catches panics; errors become a
//! `KILN_*` status plus a message. The public items are re-exported from
//! [`crate::plugin`], which is the path the macro and plugin authors use.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use super::{BackendPlugin, DevicePlugin, HostLogger, PluginError, PluginResult, WeightDescRef};
use crate::safe::{empty_device_info, write_fixed_str};
use crate::types::*;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `message` as this thread's `last_error` (used by the export macro).
#[doc(hidden)]
pub fn sdk_set_last_error(message: &str) {
    set_last_error(message);
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run `f` with panics caught and errors turned into a status + `last_error`.
pub fn guard(f: impl FnOnce() -> PluginResult<()>) -> KilnStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => KILN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "plugin panicked: {}",
                panic_message(payload.as_ref())
            ));
            KILN_INTERNAL
        }
    }
}

/// `last_error` implementation shared by every plugin built with this SDK.
///
/// # Safety
/// Always safe to call; `unsafe extern` only because it is an ABI entry point.
pub unsafe extern "C" fn sdk_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

type DeviceBox = Box<dyn DevicePlugin>;

/// # Safety
/// `dev` must be a handle produced by [`open_device_shim`].
unsafe fn device<'a>(dev: *mut c_void) -> &'a mut DeviceBox {
    // SAFETY: guaranteed by the caller; handles are `Box<DeviceBox>` raw pointers.
    unsafe { &mut *(dev as *mut DeviceBox) }
}

unsafe extern "C" fn close_shim(dev: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the handle was created by `open_device_shim` and is closed once.
        drop(unsafe { Box::from_raw(dev as *mut DeviceBox) });
    }));
}

unsafe extern "C" fn memory_info_shim(
    dev: *mut c_void,
    free: *mut u64,
    total: *mut u64,
) -> KilnStatus {
    guard(|| {
        // SAFETY: valid handle and out-pointers per the ABI.
        let (f, t) = unsafe { device(dev) }.memory_info()?;
        unsafe {
            *free = f;
            *total = t;
        }
        Ok(())
    })
}

unsafe extern "C" fn alloc_buffer_shim(
    dev: *mut c_void,
    bytes: u64,
    out: *mut KilnBuffer,
) -> KilnStatus {
    guard(|| {
        // SAFETY: valid handle and out-pointer per the ABI.
        let b = unsafe { device(dev) }.alloc_buffer(bytes)?;
        unsafe { *out = b };
        Ok(())
    })
}

unsafe extern "C" fn free_buffer_shim(dev: *mut c_void, buf: KilnBuffer) {
    let _ = guard(|| {
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.free_buffer(buf);
        Ok(())
    });
}

unsafe extern "C" fn write_buffer_shim(
    dev: *mut c_void,
    buf: KilnBuffer,
    offset: u64,
    src: *const u8,
    len: u64,
) -> KilnStatus {
    guard(|| {
        let data = if len == 0 {
            &[][..]
        } else {
            // SAFETY: the host guarantees `src` is valid for `len` bytes.
            unsafe { std::slice::from_raw_parts(src, len as usize) }
        };
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.write_buffer(buf, offset, data)
    })
}

unsafe extern "C" fn read_buffer_shim(
    dev: *mut c_void,
    buf: KilnBuffer,
    offset: u64,
    dst: *mut u8,
    len: u64,
) -> KilnStatus {
    guard(|| {
        let out = if len == 0 {
            &mut [][..]
        } else {
            // SAFETY: the host guarantees `dst` is valid for writes of `len` bytes.
            unsafe { std::slice::from_raw_parts_mut(dst, len as usize) }
        };
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.read_buffer(buf, offset, out)
    })
}

unsafe extern "C" fn copy_buffer_shim(dev: *mut c_void, copy: *const KilnBufferCopy) -> KilnStatus {
    guard(|| {
        // SAFETY: valid handle and descriptor per the ABI.
        let copy =
            unsafe { copy.as_ref() }.ok_or_else(|| PluginError::invalid("null copy descriptor"))?;
        unsafe { device(dev) }.copy_buffer(copy)
    })
}

unsafe extern "C" fn synchronize_shim(dev: *mut c_void) -> KilnStatus {
    // SAFETY: valid handle per the ABI.
    guard(|| unsafe { device(dev) }.synchronize())
}

unsafe extern "C" fn prepare_weight_shim(
    dev: *mut c_void,
    desc: *const KilnWeightDesc,
    out: *mut KilnWeight,
) -> KilnStatus {
    guard(|| {
        // SAFETY: the host passes a valid descriptor with `n_parts` parts.
        let desc = unsafe { desc.as_ref() }
            .ok_or_else(|| PluginError::invalid("null weight descriptor"))?;
        let parts = if desc.n_parts == 0 || desc.parts.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(desc.parts, desc.n_parts as usize) }
        };
        let w = unsafe { device(dev) }.prepare_weight(WeightDescRef { desc, parts })?;
        unsafe { *out = w };
        Ok(())
    })
}

unsafe extern "C" fn release_weight_shim(dev: *mut c_void, weight: KilnWeight) {
    let _ = guard(|| {
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.release_weight(weight);
        Ok(())
    });
}

unsafe extern "C" fn supports_shim(dev: *mut c_void, query: *const KilnSupportQuery) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: valid handle and query per the ABI.
        match unsafe { query.as_ref() } {
            Some(q) => i32::from(unsafe { device(dev) }.supports(q)),
            None => 0,
        }
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn execute_shim(dev: *mut c_void, ops: *const KilnOp, n: u64) -> KilnStatus {
    guard(|| {
        let ops = if n == 0 || ops.is_null() {
            &[][..]
        } else {
            // SAFETY: the host passes `n` valid ops.
            unsafe { std::slice::from_raw_parts(ops, n as usize) }
        };
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.execute(ops)
    })
}

unsafe extern "C" fn graph_begin_shim(dev: *mut c_void) -> KilnStatus {
    // SAFETY: valid handle per the ABI.
    guard(|| unsafe { device(dev) }.graph_begin())
}

unsafe extern "C" fn graph_end_shim(dev: *mut c_void, out: *mut KilnGraph) -> KilnStatus {
    guard(|| {
        // SAFETY: valid handle and out-pointer per the ABI.
        let g = unsafe { device(dev) }.graph_end()?;
        unsafe { *out = g };
        Ok(())
    })
}

unsafe extern "C" fn graph_launch_shim(dev: *mut c_void, graph: KilnGraph) -> KilnStatus {
    // SAFETY: valid handle per the ABI.
    guard(|| unsafe { device(dev) }.graph_launch(graph))
}

unsafe extern "C" fn graph_destroy_shim(dev: *mut c_void, graph: KilnGraph) {
    let _ = guard(|| {
        // SAFETY: valid handle per the ABI.
        unsafe { device(dev) }.graph_destroy(graph);
        Ok(())
    });
}

/// The device table every SDK-built plugin uses.
pub static DEVICE_VTABLE: KilnDeviceVtable = KilnDeviceVtable {
    struct_size: std::mem::size_of::<KilnDeviceVtable>() as u32,
    close: close_shim,
    memory_info: memory_info_shim,
    alloc_buffer: alloc_buffer_shim,
    free_buffer: free_buffer_shim,
    write_buffer: write_buffer_shim,
    read_buffer: read_buffer_shim,
    copy_buffer: copy_buffer_shim,
    synchronize: synchronize_shim,
    prepare_weight: prepare_weight_shim,
    release_weight: release_weight_shim,
    supports: supports_shim,
    execute: execute_shim,
    graph_begin: Some(graph_begin_shim),
    graph_end: Some(graph_end_shim),
    graph_launch: Some(graph_launch_shim),
    graph_destroy: Some(graph_destroy_shim),
};

/// Per-plugin state behind the exported symbols (one static per plugin,
/// created by [`export_backend!`](crate::export_backend)).
pub struct PluginSlot<T: BackendPlugin> {
    instance: OnceLock<Result<T, PluginError>>,
    name: &'static CStr,
}

impl<T: BackendPlugin> PluginSlot<T> {
    /// An empty slot for a backend called `name`.
    pub const fn new(name: &'static CStr) -> Self {
        PluginSlot {
            instance: OnceLock::new(),
            name,
        }
    }

    /// The `name` given to [`new`](Self::new), as the NUL-terminated pointer
    /// the registration's `name` field holds (static, never freed).
    pub fn name(&self) -> *const c_char {
        self.name.as_ptr()
    }

    /// Initialise once; later calls return the first outcome.
    ///
    /// # Safety
    /// Pointer arguments must be null or valid as the ABI describes.
    pub unsafe fn init(&self, host: *const KilnHostApi) -> bool {
        let result = self.instance.get_or_init(|| {
            // SAFETY: the host passes null or a valid table.
            let logger = match unsafe { host.as_ref() } {
                Some(h) => HostLogger {
                    log: crate::tables::host_log(h),
                },
                None => HostLogger::SILENT,
            };
            match catch_unwind(AssertUnwindSafe(|| T::init(logger))) {
                Ok(r) => r,
                Err(p) => Err(PluginError::internal(format!(
                    "plugin panicked during init: {}",
                    panic_message(p.as_ref())
                ))),
            }
        });
        match result {
            Ok(_) => true,
            Err(e) => {
                set_last_error(&e.message);
                false
            }
        }
    }

    fn get(&self) -> PluginResult<&T> {
        match self.instance.get() {
            Some(Ok(t)) => Ok(t),
            Some(Err(e)) => Err(e.clone()),
            None => Err(PluginError::internal(
                "plugin used before kiln_backend_init",
            )),
        }
    }

    /// `device_count` entry: 0 before a successful `init` or if the plugin
    /// panics.
    pub fn device_count(&self) -> u32 {
        catch_unwind(AssertUnwindSafe(|| {
            self.get().map(|t| t.device_count()).unwrap_or(0)
        }))
        .unwrap_or(0)
    }

    /// `device_info` entry.
    ///
    /// # Safety
    /// Pointer arguments must be null or valid as the ABI describes.
    pub unsafe fn device_info(&self, index: u32, out: *mut KilnDeviceInfo) -> KilnStatus {
        guard(|| {
            let info = self.get()?.device_info(index)?;
            let mut raw = empty_device_info();
            raw.kind = info.kind;
            raw.memory_total = info.memory_total;
            raw.memory_free = info.memory_free;
            raw.capabilities = info.capabilities;
            raw.compute_capability = info.compute_capability;
            raw.parallelism = info.parallelism;
            write_fixed_str(&mut raw.name, &info.name);
            write_fixed_str(&mut raw.description, &info.description);
            // SAFETY: the host passes a writable KilnDeviceInfo.
            let out =
                unsafe { out.as_mut() }.ok_or_else(|| PluginError::invalid("null device info"))?;
            *out = raw;
            Ok(())
        })
    }

    /// `open_device` entry.
    ///
    /// # Safety
    /// Pointer arguments must be null or valid as the ABI describes.
    pub unsafe fn open_device(
        &self,
        index: u32,
        params: *const c_char,
        out: *mut KilnDevice,
    ) -> KilnStatus {
        guard(|| {
            let params = if params.is_null() {
                "{}".to_string()
            } else {
                // SAFETY: the host passes a NUL-terminated string.
                unsafe { CStr::from_ptr(params) }
                    .to_string_lossy()
                    .into_owned()
            };
            let dev = self.get()?.open_device(index, &params)?;
            let handle = Box::into_raw(Box::new(dev)) as *mut c_void;
            // SAFETY: the host passes a writable KilnDevice.
            let out = unsafe { out.as_mut() }
                .ok_or_else(|| PluginError::invalid("null device out-pointer"))?;
            *out = KilnDevice {
                handle,
                vtable: &DEVICE_VTABLE,
            };
            Ok(())
        })
    }

    /// `get_proc_address` entry.
    ///
    /// # Safety
    /// Pointer arguments must be null or valid as the ABI describes.
    pub unsafe fn proc_address(&self, name: *const c_char) -> *const c_void {
        catch_unwind(AssertUnwindSafe(|| {
            if name.is_null() {
                return std::ptr::null();
            }
            // SAFETY: NUL-terminated per the ABI.
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            self.get()
                .ok()
                .and_then(|t| t.proc_address(&name))
                .unwrap_or(std::ptr::null())
        }))
        .unwrap_or(std::ptr::null())
    }
}

/// Export a [`BackendPlugin`] from a `cdylib`.
///
/// ```ignore
/// kiln_plugin_abi::export_backend!(MyBackend, c"mybackend");
/// ```
///
/// Exports `kiln_plugin_abi_version`, `kiln_backend_score` and
/// `kiln_backend_init`, plus a Rust function `kiln_static_registration()` so
/// the same plugin can be linked statically (tests, single-binary builds).
#[macro_export]
macro_rules! export_backend {
    ($ty:ty, $name:expr) => {
        static KILN_PLUGIN_SLOT: $crate::plugin::PluginSlot<$ty> =
            $crate::plugin::PluginSlot::new($name);

        unsafe extern "C" fn kiln_shim_device_count() -> u32 {
            KILN_PLUGIN_SLOT.device_count()
        }
        unsafe extern "C" fn kiln_shim_device_info(
            index: u32,
            out: *mut $crate::KilnDeviceInfo,
        ) -> $crate::KilnStatus {
            unsafe { KILN_PLUGIN_SLOT.device_info(index, out) }
        }
        unsafe extern "C" fn kiln_shim_open_device(
            index: u32,
            params: *const ::std::ffi::c_char,
            out: *mut $crate::KilnDevice,
        ) -> $crate::KilnStatus {
            unsafe { KILN_PLUGIN_SLOT.open_device(index, params, out) }
        }
        unsafe extern "C" fn kiln_shim_proc_address(
            name: *const ::std::ffi::c_char,
        ) -> *const ::std::ffi::c_void {
            unsafe { KILN_PLUGIN_SLOT.proc_address(name) }
        }

        struct KilnRegistrationCell($crate::KilnBackendRegistration);
        // SAFETY: the registration is immutable after construction and its
        // pointers are to static data and functions.
        unsafe impl Sync for KilnRegistrationCell {}
        unsafe impl Send for KilnRegistrationCell {}

        static KILN_REGISTRATION: ::std::sync::OnceLock<KilnRegistrationCell> =
            ::std::sync::OnceLock::new();

        /// The ABI version this plugin was built against.
        #[unsafe(no_mangle)]
        pub extern "C" fn kiln_plugin_abi_version() -> u32 {
            $crate::KILN_ABI_VERSION
        }

        /// 0 when this plugin cannot run on this machine (the reason, if any,
        /// in `kiln_backend_last_error`), else a preference.
        #[unsafe(no_mangle)]
        pub extern "C" fn kiln_backend_score() -> i32 {
            let score =
                ::std::panic::catch_unwind(|| <$ty as $crate::plugin::BackendPlugin>::score())
                    .unwrap_or(0);
            if score <= 0 {
                if let Ok(Some(reason)) = ::std::panic::catch_unwind(|| {
                    <$ty as $crate::plugin::BackendPlugin>::unavailable_reason()
                }) {
                    $crate::plugin::sdk_set_last_error(&reason);
                }
            }
            score
        }

        /// Initialise the plugin; null on failure (see `last_error`).
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        ///
        /// # Safety
        /// `host` must be null or point to a valid `KilnHostApi`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn kiln_backend_init(
            host: *const $crate::KilnHostApi,
        ) -> *const $crate::KilnBackendRegistration {
            if !unsafe { KILN_PLUGIN_SLOT.init(host) } {
                return ::std::ptr::null();
            }
            let cell = KILN_REGISTRATION.get_or_init(|| {
                KilnRegistrationCell($crate::KilnBackendRegistration {
                    struct_size: ::std::mem::size_of::<$crate::KilnBackendRegistration>() as u32,
                    abi_version: $crate::KILN_ABI_VERSION,
                    name: KILN_PLUGIN_SLOT.name(),
                    device_count: kiln_shim_device_count,
                    device_info: kiln_shim_device_info,
                    open_device: kiln_shim_open_device,
                    last_error: $crate::plugin::sdk_last_error,
                    get_proc_address: Some(kiln_shim_proc_address),
                })
            });
            &cell.0
        }

        /// The message of the last failure on this thread (also reachable when
        /// `kiln_backend_init` returned null).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn kiln_backend_last_error() -> *const ::std::ffi::c_char {
            // SAFETY: no preconditions.
            unsafe { $crate::plugin::sdk_last_error() }
        }

        /// The registration for static linking (same tables as the exported symbols).
        #[allow(clippy::not_unsafe_ptr_arg_deref)]
        pub fn kiln_static_registration(
            host: &'static $crate::KilnHostApi,
        ) -> *const $crate::KilnBackendRegistration {
            // SAFETY: `host` is a valid table for the life of the process.
            unsafe { kiln_backend_init(host) }
        }
    };
}
