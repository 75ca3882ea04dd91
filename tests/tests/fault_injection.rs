//! Faults injected into a backend (`kiln_tests::faulty`: the CPU backend
//! with one `execute` call failing, panicking or stalling): the request in
//! flight ends with an error naming the fault, its KV blocks return to the
//! pool, and the next request runs as if nothing happened.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_engine::LLM;
use kiln_engine_api::EngineHandle;
use kiln_models::weights::WeightDType;
use kiln_tests::faulty::{self, Fault};
use kiln_tests::tiny::{TinySpec, write_safetensors};
use kiln_tests::{greedy, start};

/// The armed fault is process-wide: one scenario at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn engine(model: &Path) -> LLM {
    start(faulty::engine_config(model))
}

fn tokens(llm: &LLM, prompt: &[u32]) -> Result<Vec<u32>, String> {
    llm.generate(vec![greedy(prompt.to_vec(), 8)])
        .remove(0)
        .map(|r| r.outputs[0].token_ids.clone())
        .map_err(|e| e.to_string())
}

fn wait_until_idle(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let load = handle.load();
        if load.running == 0 && load.waiting == 0 && load.kv_usage == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "engine not idle: {load:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run a request alone, then again with `fault` armed for its third step,
/// then another request after it. Returns the faulted run's outcome and the
/// tokens of the clean run.
fn run_with(fault: Fault) -> (Result<Vec<u32>, String>, Vec<u32>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let model = write_safetensors(
        &dir.path().join("tiny"),
        &TinySpec::default(),
        WeightDType::F32,
    );
    let llm = engine(&model);
    let (first, second) = (vec![72, 105, 33], vec![40, 41, 42, 43, 44, 45]);
    let before = tokens(&llm, &first).expect("a request before the fault");
    let clean = tokens(&llm, &second).expect("the request without the fault");
    faulty::arm(fault, 2);
    let outcome = tokens(&llm, &second);
    assert!(!faulty::armed(), "the fault never fired");
    wait_until_idle(&llm.handle());
    let after = tokens(&llm, &first).expect("a request after the fault");
    assert_eq!(after, before, "the engine recovered with other results");
    wait_until_idle(&llm.handle());
    (outcome, clean)
}

#[test]
fn a_failing_operation_fails_its_request_and_the_engine_goes_on() {
    let error = run_with(Fault::Error)
        .0
        .expect_err("the faulted request fails");
    assert!(
        error.contains("injected fault: the device failed"),
        "{error}"
    );
}

#[test]
fn a_panic_inside_the_plugin_is_caught_at_the_boundary() {
    let error = run_with(Fault::Panic)
        .0
        .expect_err("the faulted request fails");
    assert!(
        error.contains("plugin panicked: injected fault: a kernel panicked"),
        "{error}"
    );
}

#[test]
fn a_stalled_operation_delays_its_request_without_changing_it() {
    let started = Instant::now();
    let (stalled, clean) = run_with(Fault::Stall(Duration::from_millis(300)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(stalled.expect("it completes"), clean);
}
