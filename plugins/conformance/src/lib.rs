//! # kiln-backend-conformance
//!
//! Checks a backend plugin against the CPU backend, the numeric reference:
//! every operation the plugin declares through `supports()` runs on the
//! same random inputs on both, in every weight format and activation dtype
//! it declares, and each output must match within a tolerance relative to
//! the reference's RMS (bit for bit where batch invariance is promised).
//! Cases the plugin declines are listed as skipped, never failed.
//!
//! - [`check_device`] compares two open devices;
//! - [`check_library`] loads a plugin file through `kiln-plugin-host`, as
//!   the engine would, and checks its device 0 in f32 and in each 16-bit
//!   activation dtype it declares. `kiln backend check PATH` prints its
//!   [`Report::table`]s.

mod cases;
mod data;
mod reference;
mod report;
mod run;
mod side;

use std::path::Path;

use kiln_plugin_abi::safe::Device;
use kiln_plugin_abi::*;
use kiln_plugin_host::{BackendRegistry, LoadError};

pub use reference::reference_device;
pub use report::{Case, Errors, Outcome, Report, dtype_name, weight_format_name};

use data::Rng;
use run::Run;
use side::Side;

/// Compare `dut` (activations in `act`) with `reference` (a CPU device,
/// f32). Tolerances are relative to each output's RMS: 1e-4 for f32, 3e-2
/// for 16-bit activations (one bf16 rounding is 4e-3).
pub fn check_device(dut: &Device, reference: &Device, act: KilnDType) -> Report {
    let mut run = Run {
        dut: Side { dev: dut, act },
        reference: Side {
            dev: reference,
            act: KILN_F32,
        },
        rng: Rng(7),
        tolerance: if act == KILN_F32 { 1e-4 } else { 3e-2 },
        report: Report::default(),
    };
    cases::linear::cases(&mut run);
    cases::norms::cases(&mut run);
    cases::family::cases(&mut run);
    cases::moe::cases(&mut run);
    cases::rope::cases(&mut run);
    cases::attention::cases(&mut run);
    cases::data_movement::cases(&mut run);
    cases::sample::cases(&mut run);
    run.report
}

/// Why a library could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The plugin host refused the library.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The library loaded but its device 0 (or the reference) did not open.
    #[error("cannot open {what}: {message}")]
    Open {
        /// Which device.
        what: String,
        /// The plugin's message.
        message: String,
    },
}

/// What [`check_library`] found.
#[derive(Debug)]
pub struct LibraryCheck {
    /// The backend's name.
    pub backend: String,
    /// The device checked (device 0), e.g. `cuda0`.
    pub device: String,
    /// The plugin's ABI version, `major.minor`.
    pub abi_version: String,
    /// One report per activation dtype: f32, then the 16-bit ones it declares.
    pub reports: Vec<Report>,
}

impl LibraryCheck {
    /// True when no case failed in any dtype.
    pub fn is_success(&self) -> bool {
        self.reports.iter().all(Report::is_success)
    }
}

/// Load the plugin at `path` (through the plugin host, with every check the
/// engine makes), open its device 0 with `params_json` and check it in f32
/// and in each 16-bit activation dtype its capabilities declare.
pub fn check_library(path: &Path, params_json: &str) -> Result<LibraryCheck, CheckError> {
    let loaded = BackendRegistry::new().load(path)?;
    let device = loaded
        .backend
        .open(0, params_json)
        .map_err(|e| CheckError::Open {
            what: format!("device 0 of {}", path.display()),
            message: e.to_string(),
        })?;
    let reference = reference_device().map_err(|e| CheckError::Open {
        what: "the CPU reference".into(),
        message: e.to_string(),
    })?;
    let mut acts = vec![KILN_F32];
    if device.info().has(KILN_CAP_BF16) {
        acts.push(KILN_BF16);
    }
    if device.info().has(KILN_CAP_F16) {
        acts.push(KILN_F16);
    }
    let reports = acts
        .into_iter()
        .map(|act| check_device(&device, &reference, act))
        .collect();
    Ok(LibraryCheck {
        backend: loaded.backend.name(),
        device: device.info().name.clone(),
        abi_version: version_string(loaded.abi_version),
        reports,
    })
}
