//! # kiln-example-backend
//!
//! A complete Kiln backend plugin in plain, safe Rust, written against the
//! SDK crate `kiln-plugin-abi` alone. It runs every operation the Llama
//! decoder queues, except device-side sampling, with scalar loops over host
//! memory: f32 activations, f32/f16/bf16 weights, one thread. It is slow on
//! purpose and meant to be read; copy it to start a backend for new hardware.
//! It must never depend on another Kiln crate: third parties build against
//! `kiln-plugin-abi` only (Kiln crates appear here as dev-dependencies, for
//! tests).
//!
//! ## Writing a backend plugin, step by step
//!
//! 1. **Make a `cdylib` crate** that depends on `kiln-plugin-abi`. Add
//!    `rlib` to its crate types so tests can link it statically, and name the
//!    library `kiln_backend_<name>`: `kiln serve --backend <name>` looks for
//!    `libkiln_backend_<name>.so` next to the `kiln` binary and in
//!    `KILN_BACKEND_PATH`, and `--backend path/to/the.so` loads a file.
//! 2. **Describe the backend** by implementing [`BackendPlugin`]:
//!    [`score`](BackendPlugin::score) says whether it can run on this machine
//!    (0: no; the highest score wins among libraries of the same backend),
//!    `init` runs once with a [`HostLogger`], and `device_count`,
//!    `device_info` and `open_device` list and open devices. Device info
//!    carries the kind, the memory and the `KILN_CAP_*` bits (16-bit
//!    activations, graphs, device sampling) the engine reads to choose its
//!    settings; this device claims only [`KILN_CAP_HOST_MEMORY`].
//! 3. **Own the memory.** [`DevicePlugin`] allocates zero-filled buffers and
//!    copies bytes in, out and between them. Handles are opaque to the host:
//!    a device pointer, an index, anything but null. Here they are keys into
//!    maps, so no `unsafe` code is needed anywhere in the plugin.
//! 4. **Prepare weights.** `prepare_weight` receives a format, `[rows, cols]`
//!    and host-memory parts, which are released after the call: convert them
//!    to the layout your kernels want (here: f32 rows). A format you cannot
//!    run is a [`PluginError::unsupported`]; the engine reports it as
//!    "tensor `…` is stored as Q8_0, which the example backend cannot run".
//! 5. **Answer `supports` honestly.** The engine and the conformance suite
//!    ask it before using an opcode with a weight format and an activation
//!    dtype; say no to what `execute` would refuse.
//! 6. **Execute operations.** `execute` receives a list of
//!    [`KilnOp`](kiln_plugin_abi::KilnOp)s: an opcode and fixed slots
//!    (`tensors`, `weights`, `fparams`, `iparams`). Never index the slots:
//!    [`Op::decode`](kiln_plugin_abi::ops::Op::decode) turns each operation
//!    into a typed view with named operands (and refuses missing operands
//!    and out-of-range parameters). Check the shapes, compute, write the
//!    outputs. Outputs may alias
//!    inputs (`silu_mul` writes over its gate, `add_rms_norm` updates the
//!    residual in place), so this device reads every input into an owned
//!    vector first. Compute each row the same way whatever the batch, so
//!    that a request's output does not depend on what runs beside it. Work
//!    may run asynchronously as long as `read_buffer` and `synchronize` wait
//!    for it; graph capture is optional.
//! 7. **Fail with errors, not panics.** Return a [`PluginError`] whose
//!    message tells the user what is wrong; the SDK turns it into a status
//!    code plus `last_error`, and catches panics so none crosses the C ABI.
//! 8. **Export it**: `kiln_plugin_abi::export_backend!(ExampleBackend,
//!    c"example");` exports the C symbols the host looks for, plus
//!    `kiln_static_registration` for static linking.
//! 9. **Test it**: `kiln backend check path/to/the.so` (or
//!    `kiln_backend_conformance::check_device` from a test) compares every
//!    operation it declares with the CPU backend, and a tiny model run end
//!    to end must give the CPU backend's tokens (see this crate's `tests/`). Load the
//!    plugin from its library there: one binary can link only one plugin
//!    built with `export_backend!`, as each defines the same C symbols.
//! 10. **Build and run**: `cargo build --release -p kiln-example-backend`,
//!     then `kiln serve MODEL_DIR --backend
//!     target/release/libkiln_backend_example.so` for an f32, f16 or bf16
//!     safetensors model.
//!
//! ## Example
//!
//! The plugin linked statically and driven through the host's safe wrappers:
//!
//! ```
//! use kiln_plugin_abi::safe::{Backend, Buffer};
//! use kiln_plugin_abi::{KILN_ABI_VERSION, KILN_F32, KILN_WEIGHT_GGUF_Q4_0, KilnHostApi, ops};
//!
//! static HOST: KilnHostApi = KilnHostApi {
//!     struct_size: size_of::<KilnHostApi>() as u32,
//!     abi_version: KILN_ABI_VERSION,
//!     log: None,
//! };
//! // SAFETY: a statically linked plugin's registration lives for the whole process.
//! let registration = kiln_backend_example::kiln_static_registration(&HOST);
//! let backend = unsafe { Backend::from_registration(registration) }.unwrap();
//! assert_eq!(backend.name(), "example");
//! let device = backend.open(0, "{}").unwrap();
//!
//! let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
//! let (a, b) = (device.alloc(8).unwrap(), device.alloc(8).unwrap());
//! device.write(&a, 0, &bytes(&[1.0, 2.0])).unwrap();
//! device.write(&b, 0, &bytes(&[3.0, 4.0])).unwrap();
//! let row = |buf: &Buffer| buf.view(0, KILN_F32, &[1, 2]);
//! device.execute(&[ops::add(row(&a), row(&b), row(&a))]).unwrap();
//! let mut out = [0u8; 8];
//! device.read(&a, 0, &mut out).unwrap();
//! assert_eq!(out[..], bytes(&[4.0, 6.0]));
//!
//! assert!(device.supports(ops::OP_ATTENTION, None, KILN_F32));
//! assert!(!device.supports(ops::OP_LINEAR, Some(KILN_WEIGHT_GGUF_Q4_0), KILN_F32));
//! ```

mod device;
pub mod kernels;

use kiln_plugin_abi::plugin::{
    BackendPlugin, DevicePlugin, HostLogger, PluginDeviceInfo, PluginError, PluginResult,
};
use kiln_plugin_abi::{KILN_CAP_HOST_MEMORY, KILN_DEVICE_CPU};

pub use device::{ExampleDevice, SUPPORTED_OPS, host_memory};

/// The example backend: one scalar device in host memory.
pub struct ExampleBackend {
    log: HostLogger,
}

impl BackendPlugin for ExampleBackend {
    fn score() -> i32 {
        // Runs anywhere, but is never a better choice than a real backend.
        1
    }

    fn init(host: HostLogger) -> PluginResult<Self> {
        Ok(ExampleBackend { log: host })
    }

    fn device_count(&self) -> u32 {
        1
    }

    fn device_info(&self, index: u32) -> PluginResult<PluginDeviceInfo> {
        if index != 0 {
            return Err(PluginError::invalid(format!(
                "the example backend has one device (0), not {index}"
            )));
        }
        let (free, total) = host_memory();
        Ok(PluginDeviceInfo {
            name: "example0".into(),
            description: "scalar example backend: host memory, f32 activations, 1 thread".into(),
            kind: KILN_DEVICE_CPU,
            memory_total: total,
            memory_free: free,
            capabilities: KILN_CAP_HOST_MEMORY,
            compute_capability: 0,
            parallelism: 1,
        })
    }

    /// Opens the device. It has no settings: parameters such as the
    /// engine's `{"threads": N}` are accepted and ignored.
    fn open_device(&self, index: u32, _params_json: &str) -> PluginResult<Box<dyn DevicePlugin>> {
        self.device_info(index)?;
        self.log
            .info("kiln::example", "example device opened (scalar, f32)");
        Ok(Box::new(ExampleDevice::new()))
    }
}

kiln_plugin_abi::export_backend!(ExampleBackend, c"example");
