//! # kiln-plugin-abi
//!
//! The SDK a backend plugin is written against, and the only crate in Kiln
//! that defines `extern "C"` types. A backend is a `cdylib` exporting three
//! symbols (`kiln_plugin_abi_version`, `kiln_backend_score`,
//! `kiln_backend_init`); the host checks the version before calling anything
//! else, skips plugins that score 0, and talks to devices through the
//! `#[repr(C)]` tables in [`types`]. The operations a device executes are
//! in [`ops`], one typed view per operation (`ops::Op::decode` on the
//! plugin side, `encode` or the builder functions on the host side), so the
//! meaning of each operand slot is written down once. `README.md` is the
//! guide for plugin authors and the versioning policy.
//!
//! - Plugin authors implement [`plugin::BackendPlugin`] and
//!   [`plugin::DevicePlugin`] and call [`export_backend!`]; a C author can
//!   implement the same tables from `include/kiln_backend.h`.
//! - The host (and model code) uses the safe wrappers in [`safe`]: owned
//!   buffers, weights and graphs that release themselves on drop.
//!
//! This crate depends on nothing else in Kiln and never will: third parties
//! build against it alone.
//!
//! ```
//! use kiln_plugin_abi::{KILN_ABI_VERSION, KILN_ABI_MAJOR, ops};
//! assert_eq!(KILN_ABI_VERSION >> 16, KILN_ABI_MAJOR);
//! assert_eq!(ops::opcode_name(ops::OP_LINEAR), "linear");
//! ```
#![deny(missing_docs)]

pub mod e4m3;
pub mod ops;
pub mod plugin;
pub mod safe;
pub mod tables;
pub mod types;

pub use types::*;

/// Whether a plugin reporting `plugin_version` can be used by a host whose
/// oldest supported version is `oldest` (same major, minor at least
/// `oldest`'s; newer minors are fine, the host reads what it knows).
pub fn abi_compatible(plugin_version: u32, oldest: u32) -> bool {
    plugin_version >> 16 == oldest >> 16 && (plugin_version & 0xffff) >= (oldest & 0xffff)
}

/// Render a packed version as `major.minor`.
pub fn version_string(version: u32) -> String {
    format!("{}.{}", version >> 16, version & 0xffff)
}
