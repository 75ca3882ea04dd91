//! The CPU backend loaded from its shared library through the plugin host,
//! running a tiny model end to end.

use std::path::PathBuf;

use kiln_engine::{BackendChoice, EngineConfig};
use kiln_models::weights::WeightDType;
use kiln_plugin_host::BackendRegistry;
use kiln_tests::tiny::{TinySpec, write_safetensors};
use kiln_tests::{greedy, start};

/// `target/<profile>` next to this test binary (where cargo puts the `.so`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf()
}

#[test]
fn the_cpu_backend_loads_from_its_library_and_runs_a_model() {
    let lib = target_dir().join(libloading_name());
    if !lib.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: the test script builds it before the tests",
            lib.display()
        );
        eprintln!(
            "skipping: {} not built (run `cargo build --release -p kiln-backend-cpu` first; the test script does)",
            lib.display()
        );
        return;
    }
    let loaded = BackendRegistry::new()
        .load(&lib)
        .expect("load the CPU backend library");
    assert_eq!(loaded.backend.name(), "cpu");
    assert!(loaded.score > 0);

    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(
        &dir.path().join("tiny"),
        &TinySpec::default(),
        WeightDType::F32,
    );
    let mut config = EngineConfig::new(&model);
    config.backend = BackendChoice::Path(lib.clone());
    config.threads = Some(2);
    config.kv_cache_memory_bytes = Some(16 << 20);
    let from_library = start(config).generate(vec![greedy(vec![72, 105, 33], 12)]);
    let mut config = kiln_tests::cpu_config(&model);
    config.max_model_len = None;
    config.kv_cache_memory_bytes = Some(16 << 20);
    let linked = start(config).generate(vec![greedy(vec![72, 105, 33], 12)]);
    assert_eq!(
        from_library[0].as_ref().unwrap().outputs[0].token_ids,
        linked[0].as_ref().unwrap().outputs[0].token_ids
    );
}

fn libloading_name() -> String {
    if cfg!(target_os = "macos") {
        "libkiln_backend_cpu.dylib".into()
    } else if cfg!(target_os = "windows") {
        "kiln_backend_cpu.dll".into()
    } else {
        "libkiln_backend_cpu.so".into()
    }
}
