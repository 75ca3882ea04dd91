//! Shared helpers of Kiln's end-to-end tests: where the default model is,
//! engines on the statically linked CPU backend, and tiny random-weight
//! Llama models written to disk in safetensors or GGUF form.

use std::path::{Path, PathBuf};

use kiln_engine::{BackendChoice, Engine, EngineConfig, LLM};
use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};

pub mod conformance;
pub mod tiny;

/// The default model (SmolLM2-135M-Instruct Q4_1): `KILN_TEST_GGUF`, else the
/// Kiln cache, else a developer's copy. `None` (with a message) when absent.
pub fn default_model() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("KILN_TEST_GGUF") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(c) = std::env::var_os("KILN_CACHE") {
        candidates.push(
            PathBuf::from(c).join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
        );
    }
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(
            PathBuf::from(h)
                .join(".cache/kiln/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
        );
    }
    candidates.push(PathBuf::from(
        "/work/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ));
    let found = candidates.into_iter().find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "skipping: the default model is not available (run `kiln pull` or set KILN_TEST_GGUF)"
        );
    }
    found
}

/// The repository's `tests/fixtures` directory (`KILN_TEST_FIXTURES` overrides
/// it, for test binaries run away from the source tree).
pub fn fixtures() -> PathBuf {
    std::env::var_os("KILN_TEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
}

/// An engine config on the linked-in CPU backend with a modest KV budget.
pub fn cpu_config(model: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(model);
    c.backend = BackendChoice::Static {
        name: "cpu".into(),
        init: kiln_backend_cpu::kiln_static_registration,
    };
    c.threads = Some(2);
    c.max_model_len = Some(1024);
    c.kv_cache_memory_bytes = Some(256 << 20);
    c
}

/// Start an engine for tests.
pub fn start(config: EngineConfig) -> LLM {
    LLM::from_engine(
        Engine::start(config).unwrap_or_else(|e| panic!("engine failed to start: {e}")),
    )
}

/// A greedy request for token ids.
pub fn greedy(ids: Vec<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: PromptInput::TokenIds(ids),
        sampling: SamplingParams::greedy(),
        stopping: StoppingCriteria {
            max_tokens: Some(max_tokens),
            ignore_eos: true,
            ..Default::default()
        },
        add_special_tokens: false,
        tag: None,
    }
}
