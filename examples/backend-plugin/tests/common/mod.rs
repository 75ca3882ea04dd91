//! What the integration tests share: the example backend as the plugin host
//! loads it, from the shared library cargo builds.
//!
//! The tests load the library instead of linking the crate: two plugins
//! exported with `export_backend!` cannot be linked into one binary (each
//! defines the same C symbols), and these tests also link the CPU backend.

use std::path::PathBuf;

use kiln_plugin_abi::safe::Device;
use kiln_plugin_host::BackendRegistry;

/// `libkiln_backend_example.so` (or the platform's equivalent) as cargo
/// built it: beside this test binary in `target/<profile>/deps`, or in
/// `target/<profile>`. Cargo builds it with these tests; a missing library
/// fails the test.
pub fn library() -> Option<PathBuf> {
    let name = format!(
        "{}kiln_backend_example{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().expect("the test binary's path");
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .find(|p| p.exists());
    assert!(
        found.is_some(),
        "{name} is not built (run `cargo build --release -p kiln-example-backend`)"
    );
    found
}

/// Device 0 of the example backend, loaded through the real plugin host.
pub fn example_device() -> Option<Device> {
    let lib = library()?;
    let loaded = BackendRegistry::new()
        .load(&lib)
        .unwrap_or_else(|e| panic!("the example backend does not load: {e}"));
    assert_eq!(loaded.backend.name(), "example");
    Some(loaded.backend.open(0, "{}").expect("device 0 opens"))
}
