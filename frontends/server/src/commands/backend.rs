//! `kiln backend check PATH`: the conformance suite on any plugin library.

use kiln_backend_conformance::{CheckError, check_library, dtype_name};

use crate::cli::BackendCheckArgs;

/// Why `kiln backend check` exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum BackendCheckError {
    /// The plugin could not be loaded or its device opened.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Cases failed (listed in the tables printed above).
    #[error("{backend}: {failed} conformance cases failed")]
    Failed {
        /// The backend's name.
        backend: String,
        /// How many.
        failed: usize,
    },
}

/// Load the plugin, check it, print one table per activation dtype.
pub fn check(args: &BackendCheckArgs) -> Result<(), super::CliError> {
    let result = check_library(&args.path, &args.device_params).map_err(BackendCheckError::from)?;
    println!(
        "{} backend (ABI {}), device {}, from {}",
        result.backend,
        result.abi_version,
        result.device,
        args.path.display()
    );
    for report in &result.reports {
        let act = report
            .cases
            .first()
            .map_or("f32", |c| dtype_name(c.act_dtype));
        println!(
            "\nactivations {act}: {} passed, {} failed, {} declined",
            report.passed().count(),
            report.failed().count(),
            report.skipped().count()
        );
        print!("{}", report.table());
    }
    let failed: usize = result.reports.iter().map(|r| r.failed().count()).sum();
    if failed > 0 {
        return Err(BackendCheckError::Failed {
            backend: result.backend,
            failed,
        }
        .into());
    }
    println!("\nall checks passed");
    Ok(())
}
