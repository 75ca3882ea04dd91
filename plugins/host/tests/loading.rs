//! Loading real shared libraries written in C against `include/kiln_backend.h`:
//! a good plugin, and one for every way loading can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_plugin_host::{BackendRegistry, LoadError};

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../abi/include");

/// Compile `source` into a shared library in `dir` (a C compiler is required).
fn build_c_plugin(dir: &Path, file_name: &str, source: &str) -> Option<PathBuf> {
    let src = dir.join(format!("{file_name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(libloading_name(file_name));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-I", HEADER_DIR, "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("these tests need a C compiler ({cc}: {e}); set CC"));
    assert!(status.success(), "{cc} failed ({status}) on {file_name}.c");
    Some(out)
}

fn libloading_name(stem: &str) -> String {
    if cfg!(target_os = "windows") {
        format!("{stem}.dll")
    } else if cfg!(target_os = "macos") {
        format!("lib{stem}.dylib")
    } else {
        format!("lib{stem}.so")
    }
}

const GOOD: &str = r#"
#include "kiln_backend.h"
#include <string.h>
static uint32_t dev_count(void) { return 1; }
static KilnStatus dev_info(uint32_t i, KilnDeviceInfo *out) {
    if (i != 0) return 3;
    out->kind = KILN_DEVICE_CPU; out->memory_total = 1024; out->memory_free = 512; out->parallelism = 1;
    strcpy((char*)out->name, "toy0"); strcpy((char*)out->description, "a C test device");
    return 0;
}
static KilnStatus open_dev(uint32_t i, const char *p, KilnDevice *out) { (void)i; (void)p; (void)out; return 1; }
static const char *last_err(void) { return "toy devices cannot be opened"; }
static KilnBackendRegistration REG = { sizeof(KilnBackendRegistration), KILN_ABI_VERSION, "toy",
    dev_count, dev_info, open_dev, last_err, 0 };
uint32_t kiln_plugin_abi_version(void) { return KILN_ABI_VERSION; }
int32_t kiln_backend_score(void) { return 7; }
const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *h) { (void)h; return &REG; }
"#;

fn with_body(version: &str, score: &str, init: &str) -> String {
    format!(
        "#include \"kiln_backend.h\"\n#include <stddef.h>\n\
         uint32_t kiln_plugin_abi_version(void) {{ return {version}; }}\n\
         int32_t kiln_backend_score(void) {{ return {score}; }}\n\
         const char *kiln_backend_last_error(void) {{ return \"no widgets attached\"; }}\n\
         const KilnBackendRegistration *kiln_backend_init(const KilnHostApi *h) {{ (void)h; return {init}; }}\n"
    )
}

#[test]
fn a_c_plugin_loads_and_reports_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let Some(path) = build_c_plugin(dir.path(), "kiln_backend_toy", GOOD) else {
        return;
    };
    let mut registry = BackendRegistry::new();
    let loaded = registry
        .load_best("toy", &[dir.path().to_path_buf()])
        .expect("loads");
    assert_eq!(loaded.backend.name(), "toy");
    assert_eq!(loaded.score, 7);
    let devices = loaded.backend.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name, "toy0");
    assert_eq!(devices[0].description, "a C test device");
    let err = loaded.backend.open(0, "{}").unwrap_err();
    assert!(err.is_unsupported());
    assert_eq!(err.message, "toy devices cannot be opened");
    assert!(path.exists());
}

#[test]
fn a_major_version_mismatch_is_rejected_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let src = with_body("(2u << 16) | 0u", "5", "NULL");
    let Some(path) = build_c_plugin(dir.path(), "kiln_backend_future", &src) else {
        return;
    };
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::AbiMismatch { .. }), "{err}");
    let msg = err.to_string();
    let host = kiln_plugin_abi::version_string(kiln_plugin_abi::KILN_ABI_VERSION);
    assert!(
        msg.contains("2.0") && msg.contains(&host) && msg.contains("kiln_backend_future"),
        "{msg}"
    );
}

#[test]
fn an_older_minor_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // A plugin claiming 0.9 predates ABI 1.
    let src = with_body("(0u << 16) | 9u", "5", "NULL");
    let Some(path) = build_c_plugin(dir.path(), "kiln_backend_old", &src) else {
        return;
    };
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::AbiMismatch { .. }), "{err}");
}

#[test]
fn score_zero_means_cannot_run_here() {
    let dir = tempfile::tempdir().unwrap();
    let src = with_body("KILN_ABI_VERSION", "0", "NULL");
    let Some(path) = build_c_plugin(dir.path(), "kiln_backend_nohw", &src) else {
        return;
    };
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::CannotRunHere { .. }), "{err}");
    assert!(err.to_string().contains("score 0"));
}

#[test]
fn init_failure_carries_the_plugin_message() {
    let dir = tempfile::tempdir().unwrap();
    let src = with_body("KILN_ABI_VERSION", "3", "NULL");
    let Some(path) = build_c_plugin(dir.path(), "kiln_backend_broken", &src) else {
        return;
    };
    let err = BackendRegistry::new().load(&path).unwrap_err();
    assert!(matches!(err, LoadError::InitFailed { .. }), "{err}");
    assert!(err.to_string().contains("no widgets attached"), "{err}");
}

#[test]
fn a_library_without_the_entry_points_is_not_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let Some(path) = build_c_plugin(
        dir.path(),
        "kiln_backend_stranger",
        "int unrelated(void) { return 1; }\n",
    ) else {
        return;
    };
    let err = BackendRegistry::new().load(&path).unwrap_err();
    match &err {
        LoadError::MissingSymbol { symbol, .. } => assert_eq!(*symbol, "kiln_plugin_abi_version"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn missing_and_non_library_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libkiln_backend_nothing.so");
    let err = BackendRegistry::new().load(&missing).unwrap_err();
    assert!(matches!(err, LoadError::MissingFile { .. }));
    assert!(err.to_string().contains("libkiln_backend_nothing.so"));

    let text = dir.path().join(libloading_name("kiln_backend_text"));
    std::fs::write(&text, "this is not a shared library").unwrap();
    let err = BackendRegistry::new().load(&text).unwrap_err();
    assert!(matches!(err, LoadError::NotALibrary { .. }), "{err}");
    assert!(err.to_string().contains("kiln_backend_text"));
}

#[test]
fn load_best_reports_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let err = BackendRegistry::new()
        .load_best("absent", &[dir.path().to_path_buf()])
        .unwrap_err();
    assert!(matches!(err, LoadError::NotFound { .. }));
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn load_best_prefers_the_highest_score_and_skips_broken_variants() {
    let dir = tempfile::tempdir().unwrap();
    let good = GOOD.replace("return 7;", "return 4;");
    let Some(_) = build_c_plugin(dir.path(), "kiln_backend_multi-basic", &good) else {
        return;
    };
    let better = GOOD
        .replace("return 7;", "return 9;")
        .replace("\"toy\"", "\"toy-fast\"");
    build_c_plugin(dir.path(), "kiln_backend_multi-fast", &better);
    let broken = with_body("(9u << 16)", "100", "NULL");
    build_c_plugin(dir.path(), "kiln_backend_multi-broken", &broken);
    let loaded = BackendRegistry::new()
        .load_best("multi", &[dir.path().to_path_buf()])
        .unwrap();
    assert_eq!(loaded.score, 9);
    assert_eq!(loaded.backend.name(), "toy-fast");
}
