//! The numeric reference: the CPU backend, linked in.

use kiln_plugin_abi::safe::{AbiResult, Backend, Device};
use kiln_plugin_host::HOST_API;

/// Device 0 of the statically linked CPU backend, with two threads.
pub fn reference_device() -> AbiResult<Device> {
    // SAFETY: a statically linked plugin's registration lives for the whole process.
    let backend = unsafe {
        Backend::from_registration(kiln_backend_cpu::kiln_static_registration(&HOST_API))
    }
    .expect("the linked CPU backend registers");
    backend.open(0, r#"{"threads": 2}"#)
}
