//! A backend plugin built against `kiln-plugin-abi` alone, outside the Kiln
//! workspace. It runs three element-wise operations on the host and says
//! so through `supports()`; `kiln backend check` lists everything else as
//! declined. Start a real backend by renaming it (package, `[lib] name`,
//! the name passed to `export_backend!`) and growing `execute`.

mod device;

use kiln_plugin_abi::plugin::{
    BackendPlugin, DevicePlugin, HostLogger, PluginDeviceInfo, PluginError, PluginResult,
};
use kiln_plugin_abi::{KILN_CAP_HOST_MEMORY, KILN_DEVICE_CPU};

pub struct TemplateBackend;

impl BackendPlugin for TemplateBackend {
    fn score() -> i32 {
        // Lower than the CPU backend's, so `--backend auto` never prefers it.
        1
    }

    fn init(host: HostLogger) -> PluginResult<Self> {
        host.info("template", "template backend loaded");
        Ok(TemplateBackend)
    }

    fn device_count(&self) -> u32 {
        1
    }

    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo> {
        if index != 0 {
            return Err(PluginError::invalid(format!("no device {index}")));
        }
        Ok(PluginDeviceInfo {
            name: "template0".into(),
            description: "element-wise f32 operations on the host".into(),
            kind: KILN_DEVICE_CPU,
            memory_total: 1 << 30,
            memory_free: 1 << 30,
            capabilities: KILN_CAP_HOST_MEMORY,
            compute_capability: 0,
            parallelism: 1,
        })
    }

    fn open_device(&self, index: u32, _params_json: &str) -> PluginResult<Box<dyn DevicePlugin>> {
        self.device_info(index)?;
        Ok(Box::new(device::TemplateDevice))
    }
}

kiln_plugin_abi::export_backend!(TemplateBackend, c"template");
