//! Dropping an engine returns its memory before the drop returns: the
//! model runner lives on a thread of its own, and a model loaded right
//! after (a server reloading, a Python session trying another model) must
//! find the weights of the previous one freed. One test in its own
//! process, so that nothing else moves the backend's count of held bytes.

use kiln_models::weights::WeightDType;
use kiln_tests::tiny::{TinySpec, write_safetensors};
use kiln_tests::{cpu_config, start};

#[test]
fn dropping_an_engine_frees_its_weights_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(dir.path(), &TinySpec::default(), WeightDType::F32);
    let mut config = cpu_config(&model);
    config.max_model_len = Some(256);
    let before = kiln_backend_cpu::held_weight_bytes();
    for round in 0..3 {
        let llm = start(config.clone());
        let held = kiln_backend_cpu::held_weight_bytes() - before;
        assert!(held > 0, "round {round}: no weights held while running");
        drop(llm);
        assert_eq!(
            kiln_backend_cpu::held_weight_bytes(),
            before,
            "round {round}: weights still held after the engine was dropped"
        );
    }
}
