//! # kiln-backend-cuda
//!
//! Kiln's CUDA backend plugin. It loads the CUDA driver, NVRTC and cuBLAS at
//! run time (cudarc with dynamic loading), so it builds on machines without a
//! GPU or CUDA toolkit; there it scores 0 and the host skips it. Kernels live
//! as `.cu` sources in `kernels/cuda`, embedded here and compiled by NVRTC for
//! the device's architecture on first use, then cached on disk.
//!
//! Depends on `kiln-plugin-abi` only.
//!
//! ```no_run
//! // The host loads `libkiln_backend_cuda.so`; in-process use looks like this:
//! let reg = kiln_backend_cuda::kiln_static_registration(&kiln_plugin_host_stub::HOST);
//! # mod kiln_plugin_host_stub { pub static HOST: kiln_plugin_abi::KilnHostApi = kiln_plugin_abi::KilnHostApi {
//! #   struct_size: 0, abi_version: kiln_plugin_abi::KILN_ABI_VERSION, log: None }; }
//! ```

pub mod device;
pub mod kernels;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaContext;
use kiln_plugin_abi::plugin::{
    BackendPlugin, DevicePlugin, HostLogger, PluginDeviceInfo, PluginError, PluginResult,
};
use kiln_plugin_abi::{
    KILN_CAP_BF16, KILN_CAP_DEVICE_SAMPLING, KILN_CAP_F16, KILN_CAP_GRAPHS, KILN_DEVICE_GPU,
};

use crate::device::CudaDevice;

/// Registered as `cuda`; keeps one CUDA context per device index, shared
/// by every device opened on it.
pub struct CudaBackend {
    log: HostLogger,
    contexts: Mutex<HashMap<u32, Arc<CudaContext>>>,
}

fn driver_available() -> bool {
    driver_check().is_ok()
}

/// Whether the driver loads, initialises and sees a GPU; else why not.
fn driver_check() -> Result<(), String> {
    use cudarc::driver::sys::cudaError_enum as E;
    // Loading a missing library makes cudarc panic: keep that quiet and report it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        cudarc::driver::result::init().map_err(|e| e.0)?;
        CudaContext::device_count().map_err(|e| e.0).map(|n| n > 0)
    });
    std::panic::set_hook(previous);
    match outcome {
        Err(_) => Err("the NVIDIA driver library (libcuda.so.1) cannot be loaded: is the NVIDIA driver installed?".into()),
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) | Ok(Err(E::CUDA_ERROR_NO_DEVICE)) => {
            Err("no NVIDIA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)".into())
        }
        Ok(Err(E::CUDA_ERROR_STUB_LIBRARY)) => Err(
            "the libcuda.so found is the CUDA toolkit's stub library: remove the toolkit's `stubs` directory from LD_LIBRARY_PATH so the driver's libcuda.so.1 is used".into(),
        ),
        Ok(Err(e)) => Err(format!("the CUDA driver failed to initialise: {e:?}")),
    }
}

impl CudaBackend {
    fn context(&self, index: u32) -> PluginResult<Arc<CudaContext>> {
        let mut map = self
            .contexts
            .lock()
            .map_err(|_| PluginError::internal("context table poisoned"))?;
        if let Some(c) = map.get(&index) {
            return Ok(c.clone());
        }
        let ctx = CudaContext::new(index as usize)
            .map_err(|e| PluginError::invalid(format!("cannot open CUDA device {index}: {e:?}")))?;
        map.insert(index, ctx.clone());
        Ok(ctx)
    }
}

impl BackendPlugin for CudaBackend {
    fn score() -> i32 {
        if driver_available() { 100 } else { 0 }
    }

    fn unavailable_reason() -> Option<String> {
        driver_check().err()
    }

    fn init(host: HostLogger) -> PluginResult<Self> {
        if let Err(reason) = driver_check() {
            return Err(PluginError::unsupported(reason));
        }
        Ok(CudaBackend {
            log: host,
            contexts: Mutex::new(HashMap::new()),
        })
    }

    fn device_count(&self) -> u32 {
        CudaContext::device_count().map_or(0, |n| n.max(0) as u32)
    }

    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo> {
        let ctx = self.context(index)?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| PluginError::internal(format!("{e:?}")))?;
        let (free, total) = ctx
            .mem_get_info()
            .map_err(|e| PluginError::internal(format!("{e:?}")))?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .unwrap_or(0);
        let name = ctx.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let mut caps = KILN_CAP_F16 | KILN_CAP_GRAPHS | KILN_CAP_DEVICE_SAMPLING;
        if major >= 8 {
            caps |= KILN_CAP_BF16;
        }
        Ok(PluginDeviceInfo {
            name: format!("cuda{index}"),
            description: format!("{name}, compute capability {major}.{minor}, {sms} SMs"),
            kind: KILN_DEVICE_GPU,
            memory_total: total as u64,
            memory_free: free as u64,
            capabilities: caps,
            compute_capability: (major * 10 + minor) as u32,
            parallelism: sms.max(0) as u32,
        })
    }

    fn open_device(&self, index: u32, _params_json: &str) -> PluginResult<Box<dyn DevicePlugin>> {
        let ctx = self.context(index)?;
        Ok(Box::new(CudaDevice::open(ctx, self.log)?))
    }
}

kiln_plugin_abi::export_backend!(CudaBackend, c"cuda");
