//! # kiln-backend-cpu
//!
//! Kiln's CPU backend plugin: device buffers are host memory, weights stay in
//! their checkpoint format (GGUF blocks stay quantized), and every operation
//! of the ABI runs on `kiln-kernels-cpu` with a persistent thread pool and the
//! best instruction set of the machine (AVX-512 VNNI, AVX2 or scalar).
//!
//! Built as a `cdylib` (`libkiln_backend_cpu.so`, loaded by the host) and as
//! an `rlib` (linked statically in tests via [`kiln_static_registration`]).
//! Depends on `kiln-plugin-abi` and `kiln-kernels-cpu` only.
//!
//! ```
//! use kiln_plugin_abi::safe::Backend;
//! static HOST: kiln_plugin_abi::KilnHostApi = kiln_plugin_abi::KilnHostApi {
//!     struct_size: std::mem::size_of::<kiln_plugin_abi::KilnHostApi>() as u32,
//!     abi_version: kiln_plugin_abi::KILN_ABI_VERSION,
//!     log: None,
//! };
//! let backend = unsafe { Backend::from_registration(kiln_backend_cpu::kiln_static_registration(&HOST)) }.unwrap();
//! assert_eq!(backend.name(), "cpu");
//! let device = backend.open(0, r#"{"threads": 1}"#).unwrap();
//! assert!(device.info().description.contains("threads"));
//! ```

mod device;
mod sample;

use kiln_kernels_cpu::isa;
use kiln_plugin_abi::plugin::{
    BackendPlugin, DevicePlugin, HostLogger, PluginDeviceInfo, PluginError, PluginResult,
};
use kiln_plugin_abi::{
    KILN_CAP_DEVICE_SAMPLING, KILN_CAP_HOST_MEMORY, KILN_CAP_SAMPLE_MASK, KILN_DEVICE_CPU,
};

pub use device::{CpuDevice, held_weight_bytes};

/// Registered as `cpu`; each opened device is a [`CpuDevice`] with its own
/// pool of `threads` (a device parameter; default: every available core).
pub struct CpuBackend {
    log: HostLogger,
}

/// Threads to use by default: the available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemAvailable:"), field("MemTotal:"))
}

/// `(free, total)` host memory in bytes.
pub fn memory() -> (u64, u64) {
    let (free, total) = meminfo();
    if total == 0 {
        (8 << 30, 16 << 30)
    } else {
        (free, total)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Parse `{"threads": N}` (null or absent: the default).
pub fn threads_from_params(params_json: &str) -> PluginResult<usize> {
    let v: serde_json::Value = serde_json::from_str(params_json)
        .map_err(|e| PluginError::invalid(format!("device parameters are not JSON: {e}")))?;
    match v.get("threads") {
        None | Some(serde_json::Value::Null) => Ok(default_threads()),
        Some(t) => match t.as_u64() {
            Some(n) if (1..=1024).contains(&n) => Ok(n as usize),
            _ => Err(PluginError::invalid(format!(
                "threads must be an integer from 1 to 1024, got {t}"
            ))),
        },
    }
}

impl BackendPlugin for CpuBackend {
    fn score() -> i32 {
        match isa::detect() {
            isa::Isa::Avx512Vnni => 30,
            isa::Isa::Avx2 => 20,
            isa::Isa::Scalar => 10,
        }
    }

    fn init(host: HostLogger) -> PluginResult<Self> {
        Ok(CpuBackend { log: host })
    }

    fn device_count(&self) -> u32 {
        1
    }

    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo> {
        if index != 0 {
            return Err(PluginError::invalid(format!(
                "the CPU backend has one device, not {index}"
            )));
        }
        let (free, total) = memory();
        let threads = default_threads();
        Ok(PluginDeviceInfo {
            name: "cpu0".into(),
            description: format!("{}, {}, {threads} threads", cpu_model(), isa::describe()),
            kind: KILN_DEVICE_CPU,
            memory_total: total,
            memory_free: free,
            capabilities: KILN_CAP_HOST_MEMORY | KILN_CAP_DEVICE_SAMPLING | KILN_CAP_SAMPLE_MASK,
            compute_capability: 0,
            parallelism: threads as u32,
        })
    }

    fn open_device(&self, index: u32, params_json: &str) -> PluginResult<Box<dyn DevicePlugin>> {
        self.device_info(index)?;
        let threads = threads_from_params(params_json)?;
        self.log.info(
            "kiln::cpu",
            &format!(
                "CPU device: {} threads, kernels {}",
                threads,
                isa::describe()
            ),
        );
        Ok(Box::new(CpuDevice::new(threads)))
    }
}

kiln_plugin_abi::export_backend!(CpuBackend, c"cpu");
