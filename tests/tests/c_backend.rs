//! The C backend of `examples/c-backend`, compiled here with the system C
//! compiler: it passes the conformance suite for what it declares, runs a
//! tiny Llama through the engine with the CPU backend's tokens, and a
//! family needing an operation it lacks is refused naming the operation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln_backend_conformance::check_library;
use kiln_engine::{BackendChoice, DTypeChoice, Engine, EngineConfig};
use kiln_models::weights::WeightDType;
use kiln_tests::tiny::{TinySpec, write_safetensors};
use kiln_tests::{greedy, start};

/// The C backend library, compiled once per test process: the tests run on
/// parallel threads, and one compiling over the file another has just
/// opened makes that `dlopen` fail.
fn build_c_backend() -> PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(compile_c_backend).clone()
}

/// Compile `examples/c-backend/kiln_c_backend.c` into this test's target
/// directory; panics with the compiler's output when it cannot.
fn compile_c_backend() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("examples/c-backend/kiln_c_backend.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-backend");
    std::fs::create_dir_all(&dir).expect("create the C backend's build directory");
    let library = dir.join(format!(
        "{}kiln_backend_c{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
        .args(["-shared", "-fPIC", "-I"])
        .arg(root.join("plugins/abi/include"))
        .arg("-o")
        .arg(&library)
        .arg(&source)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| panic!("this test needs a C compiler ({cc}: {e}); set CC"));
    assert!(
        output.status.success(),
        "{cc} failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

#[test]
fn the_c_backend_passes_the_conformance_suite_for_what_it_declares() {
    let check = check_library(&build_c_backend(), "{}").expect("the C backend loads");
    assert_eq!(check.backend, "c");
    assert_eq!(check.reports.len(), 1, "it declares f32 activations only");
    let report = &check.reports[0];
    eprintln!("{}", report.table());
    assert!(check.is_success(), "{}", report.table());
    assert!(report.passed().count() >= 25, "{}", report.table());
    let skipped: Vec<&str> = report.skipped().collect();
    for declined in [
        "sample",
        "linear q4_0",
        "linear f16",
        "layer_norm",
        "softcap",
    ] {
        assert!(
            skipped.contains(&declined),
            "{declined} not declined: {skipped:?}"
        );
    }
}

fn config(model: &Path, library: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(model);
    c.backend = BackendChoice::Path(library.to_path_buf());
    c.dtype = DTypeChoice::Float32;
    c.kv_cache_memory_bytes = Some(16 << 20);
    c.max_model_len = Some(256);
    c
}

#[test]
fn a_tiny_llama_generates_the_cpu_backends_tokens_on_the_c_backend() {
    let library = build_c_backend();
    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(
        &dir.path().join("tiny"),
        &TinySpec::default(),
        WeightDType::F32,
    );
    let requests = || {
        vec![
            greedy(vec![72, 105, 33], 10),
            greedy((0..40).map(|i| 32 + (i * 7) % 90).collect(), 10),
        ]
    };
    let c_engine = start(config(&model, &library));
    assert_eq!(c_engine.engine().summary().info.backend, "c");
    let got = c_engine.generate(requests());
    drop(c_engine);
    let mut cpu = kiln_tests::cpu_config(&model);
    cpu.max_model_len = Some(256);
    cpu.kv_cache_memory_bytes = Some(16 << 20);
    let want = start(cpu).generate(requests());
    for (g, w) in got.iter().zip(&want) {
        let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
        assert_eq!(g.outputs[0].token_ids.len(), 10);
        assert_eq!(g.outputs[0].token_ids, w.outputs[0].token_ids);
    }
}

#[test]
fn a_family_needing_an_operation_it_lacks_is_refused_naming_the_operation() {
    let library = build_c_backend();
    let gpt2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families/gpt2");
    let error = match Engine::start(config(&gpt2, &library)) {
        Ok(_) => panic!("the engine started GPT-2 on a backend without layer norms"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("the c backend cannot run")
            && error.contains("lacks the `layer_norm` operation"),
        "{error}"
    );
}
