//! The suite on the CPU backend against itself (a check of the suite), and
//! on the CUDA backend against the CPU reference when a GPU is present.

use kiln_backend_conformance::{Report, check_device, reference_device};
use kiln_plugin_abi::safe::{Backend, Device};
use kiln_plugin_abi::{KILN_BF16, KILN_CAP_BF16, KILN_F32, KilnDType};
use kiln_plugin_host::{BackendRegistry, HOST_API};

fn cpu(threads: usize) -> Device {
    // SAFETY: the statically linked plugin's registration is static.
    let backend = unsafe {
        Backend::from_registration(kiln_backend_cpu::kiln_static_registration(&HOST_API))
    }
    .unwrap();
    backend
        .open(0, &format!("{{\"threads\": {threads}}}"))
        .unwrap()
}

fn assert_report(name: &str, r: &Report) {
    eprintln!("{name}:\n{}", r.table());
    let failed: Vec<_> = r.failed().map(|c| &c.name).collect();
    assert!(failed.is_empty(), "{name}: failed {failed:?}");
    let ran = r.passed().count();
    assert!(ran >= 30, "{name}: only {ran} cases ran");
}

#[test]
fn the_suite_passes_on_the_cpu_reference_itself() {
    let r = check_device(&cpu(2), &cpu(1), KILN_F32);
    assert_report("cpu", &r);
    assert_eq!(
        r.skipped().count(),
        0,
        "{:?}",
        r.skipped().collect::<Vec<_>>()
    );
    // FP8 weights run through both the linear and the mixture-of-experts cases.
    for case in ["linear fp8_e4m3 rows independent", "moe fp8_e4m3"] {
        assert!(
            r.passed().any(|c| c.name.starts_with(case)),
            "no passed case named {case}…"
        );
    }
}

/// The CUDA backend library, when built and runnable here.
fn cuda_device() -> Option<Device> {
    let exe = std::env::current_exe().ok()?;
    let mut dirs: Vec<std::path::PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|p| p.to_path_buf())
        .collect();
    if let Some(extra) = std::env::var_os("KILN_BACKEND_PATH") {
        dirs.extend(std::env::split_paths(&extra));
    }
    match BackendRegistry::new().load_best("cuda", &dirs) {
        Ok(loaded) => match loaded.backend.open(0, "{}") {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("skipping CUDA: {e}");
                None
            }
        },
        Err(e) => {
            eprintln!("skipping CUDA: {e}");
            None
        }
    }
}

#[test]
fn cuda_matches_the_cpu_reference() {
    let Some(gpu) = cuda_device() else { return };
    let acts: Vec<KilnDType> = if gpu.info().has(KILN_CAP_BF16) {
        vec![KILN_F32, KILN_BF16]
    } else {
        vec![KILN_F32]
    };
    let reference = reference_device().unwrap();
    for act in acts {
        let r = check_device(&gpu, &reference, act);
        assert_report(
            if act == KILN_F32 {
                "cuda f32"
            } else {
                "cuda bf16"
            },
            &r,
        );
    }
}
