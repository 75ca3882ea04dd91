//! A test-only backend: the CPU backend behind the SDK's tables, with a
//! fault injected into one later `execute` call (an error status, a panic
//! inside the plugin, or a stall), so tests can watch the engine recover.

use std::ffi::{c_char, c_void};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kiln_backend_cpu::CpuBackend;
use kiln_plugin_abi::plugin::{
    BackendPlugin, DevicePlugin, HostLogger, PluginDeviceInfo, PluginError, PluginResult,
    PluginSlot, WeightDescRef, sdk_last_error,
};
use kiln_plugin_abi::*;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// `execute` returns `KILN_INTERNAL` with a message.
    Error,
    /// The plugin panics inside `execute` (the SDK must catch it).
    Panic,
    /// `execute` sleeps this long, then runs normally.
    Stall(Duration),
}

/// The armed fault and how many `execute` calls pass before it fires.
static ARMED: Mutex<Option<(Fault, u32)>> = Mutex::new(None);

/// Fire `fault` once, on the `execute` call after `skip` more calls.
pub fn arm(fault: Fault, skip: u32) {
    *ARMED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fault, skip));
}

/// True while an armed fault has not fired yet.
pub fn armed() -> bool {
    ARMED.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

fn take_due_fault() -> Option<Fault> {
    let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
    match armed.as_mut() {
        Some((_, skip)) if *skip > 0 => {
            *skip -= 1;
            None
        }
        Some((fault, _)) => {
            let fault = *fault;
            *armed = None;
            Some(fault)
        }
        None => None,
    }
}

/// The CPU backend, renamed `faulty`.
pub struct FaultyBackend(CpuBackend);

impl BackendPlugin for FaultyBackend {
    fn score() -> i32 {
        1
    }

    fn init(host: HostLogger) -> PluginResult<Self> {
        Ok(FaultyBackend(CpuBackend::init(host)?))
    }

    fn device_count(&self) -> u32 {
        1
    }

    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo> {
        let mut info = self.0.device_info(index)?;
        info.name = "faulty0".into();
        Ok(info)
    }

    fn open_device(&self, index: u32, params_json: &str) -> PluginResult<Box<dyn DevicePlugin>> {
        Ok(Box::new(FaultyDevice(
            self.0.open_device(index, params_json)?,
        )))
    }
}

struct FaultyDevice(Box<dyn DevicePlugin>);

impl DevicePlugin for FaultyDevice {
    fn memory_info(&self) -> PluginResult<(u64, u64)> {
        self.0.memory_info()
    }
    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        self.0.alloc_buffer(bytes)
    }
    fn free_buffer(&mut self, buf: KilnBuffer) {
        self.0.free_buffer(buf)
    }
    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        self.0.write_buffer(buf, offset, data)
    }
    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        self.0.read_buffer(buf, offset, out)
    }
    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        self.0.copy_buffer(copy)
    }
    fn synchronize(&mut self) -> PluginResult<()> {
        self.0.synchronize()
    }
    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        self.0.prepare_weight(desc)
    }
    fn release_weight(&mut self, weight: KilnWeight) {
        self.0.release_weight(weight)
    }
    fn supports(&self, query: &KilnSupportQuery) -> bool {
        self.0.supports(query)
    }
    fn execute(&mut self, ops: &[KilnOp]) -> PluginResult<()> {
        match take_due_fault() {
            Some(Fault::Error) => {
                return Err(PluginError::internal("injected fault: the device failed"));
            }
            Some(Fault::Panic) => panic!("injected fault: a kernel panicked"),
            Some(Fault::Stall(d)) => std::thread::sleep(d),
            None => {}
        }
        self.0.execute(ops)
    }
    fn graph_begin(&mut self) -> PluginResult<()> {
        self.0.graph_begin()
    }
    fn graph_end(&mut self) -> PluginResult<KilnGraph> {
        self.0.graph_end()
    }
    fn graph_launch(&mut self, graph: KilnGraph) -> PluginResult<()> {
        self.0.graph_launch(graph)
    }
    fn graph_destroy(&mut self, graph: KilnGraph) {
        self.0.graph_destroy(graph)
    }
}

static SLOT: PluginSlot<FaultyBackend> = PluginSlot::new(c"faulty");

unsafe extern "C" fn device_count() -> u32 {
    SLOT.device_count()
}

unsafe extern "C" fn device_info(index: u32, out: *mut KilnDeviceInfo) -> KilnStatus {
    // SAFETY: the host passes a writable KilnDeviceInfo.
    unsafe { SLOT.device_info(index, out) }
}

unsafe extern "C" fn open_device(
    index: u32,
    params: *const c_char,
    out: *mut KilnDevice,
) -> KilnStatus {
    // SAFETY: the host passes a NUL-terminated string and a writable KilnDevice.
    unsafe { SLOT.open_device(index, params, out) }
}

unsafe extern "C" fn proc_address(name: *const c_char) -> *const c_void {
    // SAFETY: the host passes a NUL-terminated name.
    unsafe { SLOT.proc_address(name) }
}

struct Registration(KilnBackendRegistration);
// SAFETY: immutable after construction; pointers to static data and functions.
unsafe impl Sync for Registration {}
unsafe impl Send for Registration {}

/// The registration, for `BackendChoice::Static { init: faulty::registration, .. }`
/// (built by hand rather than with `export_backend!`, whose C symbols would
/// clash with the linked-in CPU backend's).
pub fn registration(host: &'static KilnHostApi) -> *const KilnBackendRegistration {
    static REGISTRATION: OnceLock<Registration> = OnceLock::new();
    // SAFETY: `host` is a valid table for the life of the process.
    if !unsafe { SLOT.init(host) } {
        return std::ptr::null();
    }
    &REGISTRATION
        .get_or_init(|| {
            Registration(KilnBackendRegistration {
                struct_size: std::mem::size_of::<KilnBackendRegistration>() as u32,
                abi_version: KILN_ABI_VERSION,
                name: SLOT.name(),
                device_count,
                device_info,
                open_device,
                last_error: sdk_last_error,
                get_proc_address: Some(proc_address),
            })
        })
        .0
}

/// An engine on `model` (a tiny checkpoint) with this backend, small enough
/// for fault tests: 2 threads, 256 tokens of context, 16 MiB of KV cache.
pub fn engine_config(model: &std::path::Path) -> kiln_engine::EngineConfig {
    let mut c = kiln_engine::EngineConfig::new(model);
    c.backend = kiln_engine::BackendChoice::Static {
        name: "faulty".into(),
        init: registration,
    };
    c.threads = Some(2);
    c.max_model_len = Some(256);
    c.kv_cache_memory_bytes = Some(16 << 20);
    c
}
