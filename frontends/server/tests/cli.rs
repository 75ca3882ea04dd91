//! The command-line surface: every `serve` flag has its `KILN_<FLAG>`
//! variable, help shows every flag with a one-line description, and the
//! variables really reach the flags.

use clap::CommandFactory;
use kiln::cli::Cli;

/// The `serve` subcommand, with the global flags propagated into it.
fn serve() -> clap::Command {
    let mut root = Cli::command();
    root.build();
    root.find_subcommand("serve").unwrap().clone()
}

#[test]
fn every_serve_flag_has_its_environment_variable() {
    let mut checked = 0;
    for arg in serve().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["help", "version"].contains(&long) {
            continue;
        }
        let expected = format!("KILN_{}", long.to_ascii_uppercase().replace('-', "_"));
        assert_eq!(
            arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            Some(expected.clone()),
            "--{long} should be settable as {expected}"
        );
        assert!(
            arg.get_help()
                .is_some_and(|h| !h.to_string().contains('\n')),
            "--{long} needs a one-line help"
        );
        checked += 1;
    }
    assert!(checked >= 27, "{checked} flags");
}

#[test]
fn vllm_flag_names_exist() {
    let names: Vec<String> = serve()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    for flag in [
        "host",
        "port",
        "model",
        "served-model-name",
        "dtype",
        "max-model-len",
        "gpu-memory-utilization",
        "kv-cache-memory-bytes",
        "block-size",
        "max-num-seqs",
        "max-num-batched-tokens",
        "enable-prefix-caching",
        "no-enable-prefix-caching",
        "tensor-parallel-size",
        "enforce-eager",
        "api-key",
        "chat-template",
        "seed",
        "log-level",
        "log-format",
        "max-waiting-requests",
        "shutdown-timeout",
        "revision",
        "backend",
        "backend-path",
        "frontend",
        "threads",
    ] {
        assert!(names.iter().any(|n| n == flag), "missing --{flag}");
    }
}

fn kiln() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env_remove("KILN_MODEL").env(
        "KILN_CACHE",
        std::env::temp_dir().join("kiln-cli-test-cache"),
    );
    c
}

#[test]
fn short_help_lists_flags_with_defaults() {
    let out = kiln().args(["serve", "-h"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "--port <PORT>",
        "[default: 8000]",
        "--gpu-memory-utilization",
        "[default: 0.9]",
        "--kv-cache-memory-bytes <SIZE>",
        "[env: KILN_API_KEY]",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn environment_variables_reach_the_flags() {
    // Rejected before any model is fetched, so this runs offline.
    let out = kiln()
        .args(["serve", "/nonexistent/model.gguf"])
        .env("KILN_TENSOR_PARALLEL_SIZE", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tensor-parallel-size 2 is not supported yet"),
        "{err}"
    );
    let out = kiln()
        .args(["serve", "/nonexistent/model.gguf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no such file or directory: /nonexistent/model.gguf")
    );
    let out = kiln()
        .args(["serve", "-h"])
        .env("KILN_PORT", "9123")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("KILN_PORT=9123"));
    let out = kiln()
        .args(["--log-level", "nonsense=="])
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_models_list_the_catalog() {
    let out = kiln().args(["pull", "llama"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model `llama`") && err.contains("smollm2-135m-instruct"),
        "{err}"
    );
}

#[test]
fn plan_json_for_a_config_file() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/configs/llama-3-8b.json");
    let out = kiln()
        .arg("plan")
        .arg(&config)
        .args(["--gpu-memory", "24GiB", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["options"][0]["kv_tokens"], 38_784);
    assert_eq!(v["settings"]["gpu_memory_utilization"], 0.9);
}

#[test]
fn help_states_the_engines_own_scheduling_defaults() {
    use kiln_engine::defaults::{CPU_DEFAULTS, GPU_DEFAULTS};
    let serve = serve();
    let help = |flag: &str| {
        serve
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
    };
    assert!(
        help("max-num-seqs").contains(&format!(
            "{} on GPU, {} on CPU",
            GPU_DEFAULTS.max_num_seqs, CPU_DEFAULTS.max_num_seqs
        )),
        "{}",
        help("max-num-seqs")
    );
    assert!(
        help("max-num-batched-tokens").contains(&format!(
            "{} on GPU, {} on CPU",
            GPU_DEFAULTS.max_num_batched_tokens, CPU_DEFAULTS.max_num_batched_tokens
        )),
        "{}",
        help("max-num-batched-tokens")
    );
}
