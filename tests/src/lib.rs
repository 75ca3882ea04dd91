//! Shared helpers of Kiln's end-to-end tests: where the default model is,
//! engines on the statically linked CPU backend, and tiny random-weight
//! Llama models written to disk in safetensors or GGUF form.

use std::path::{Path, PathBuf};

use kiln_engine::{BackendChoice, Engine, EngineConfig, LLM};
use kiln_protocol::{GenerateRequest, PromptInput, SamplingParams, StoppingCriteria};

pub mod faulty;
pub mod llamacpp;
pub mod schema;
pub mod tiny;

/// A small deterministic generator of test values (LCG), uniform in [-1, 1).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values scaled by `scale`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// Token ids from a JSON array.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// The parity fixture's cases (`tests/fixtures/parity_smollm2.json`).
pub fn parity_cases() -> Vec<serde_json::Value> {
    let path = fixtures().join("parity_smollm2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["cases"].as_array().cloned().unwrap_or_default()
}

/// The prompt token ids of the parity fixture's cases.
pub fn parity_prompts() -> Vec<Vec<u32>> {
    parity_cases()
        .iter()
        .map(|c| json_ids(&c["prompt_ids"]))
        .collect()
}

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
        // CI provides the model (scripts/test.sh pulls it); there a missing
        // model is a failure, never a silent pass.
        assert!(
            std::env::var_os("CI").is_none(),
            "the default model is not available in CI (scripts/test.sh runs `kiln pull` and sets KILN_TEST_GGUF)"
        );
        eprintln!(
            "skipping: the default model is not available (run `kiln pull` or set KILN_TEST_GGUF)"
        );
    }
    found
}

/// A catalog model (`kiln pull ALIAS`) stored as `FILE` in the Kiln cache:
/// `KILN_CACHE`, else `~/.cache/kiln`. In CI a missing model fails the
/// test (scripts/test.sh pulls every model the tests use); elsewhere the
/// caller skips with a message.
pub fn catalog_model(alias: &str, file: &str) -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Some(c) = std::env::var_os("KILN_CACHE") {
        roots.push(PathBuf::from(c));
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".cache/kiln"));
    }
    let found = roots
        .into_iter()
        .map(|r| r.join("models").join(alias).join(file))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{alias} is not in the Kiln cache in CI (scripts/test.sh runs `kiln pull {alias}`)"
        );
        eprintln!("skipping: {alias} is not available (run `kiln pull {alias}`)");
    }
    found
}

/// One prompt of a transformers reference fixture (the JSON files in
/// `tests/fixtures/{kquant,quantized,families}`).
pub struct ReferencePrompt {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// The reference's 32 greedy tokens.
    pub greedy: Vec<u32>,
    /// Top-1 minus top-2 logit at each greedy step (empty when not recorded).
    pub margins: Vec<f64>,
    /// Full last-position logits of the prompt.
    pub logits: Vec<f32>,
}

/// The prompts of a fixture's `key` array (`prompts`, or a variant).
pub fn reference_prompts(prompts: &serde_json::Value) -> Vec<ReferencePrompt> {
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect())
            .unwrap_or_default()
    };
    prompts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ReferencePrompt {
            ids: json_ids(&p["ids"]),
            greedy: json_ids(&p["greedy"]),
            margins: floats(&p["margins"]),
            logits: floats(&p["logits"]).into_iter().map(|x| x as f32).collect(),
        })
        .collect()
}

/// The largest `|a[i] − b[i]|` (logit comparisons).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Every `*.json` file of `tests/fixtures/<subdir>`, sorted by name, parsed.
pub fn fixture_jsons(subdir: &str) -> Vec<(PathBuf, serde_json::Value)> {
    let dir = fixtures().join(subdir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Last-position logits of `prompt` run as one fresh sequence `seq` (the
/// previous sequence, `seq − 1`, is dropped first).
pub fn last_logits(
    runner: &mut kiln_engine::runner::ModelRunner,
    prompt: &[u32],
    seq: u64,
) -> Vec<f32> {
    use kiln_protocol::step::{ScheduledSeq, StepPlan};
    let blocks = prompt.len().div_ceil(16) as u32;
    let plan = StepPlan {
        step_id: seq,
        dropped: if seq > 1 { vec![seq - 1] } else { vec![] },
        block_copies: vec![],
        seqs: vec![ScheduledSeq {
            seq_id: seq,
            token_ids: prompt.to_vec(),
            num_computed_tokens: 0,
            table_keep: 0,
            new_blocks: (0..blocks).collect(),
            num_samples: 1,
            ..ScheduledSeq::default()
        }],
    };
    runner.execute(&plan, &[]).expect("forward").logits
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

/// The pooled, unnormalized vectors of `inputs`, all queued before any is
/// awaited so that the scheduler batches them.
pub fn embed_all(llm: &LLM, inputs: Vec<PromptInput>) -> Vec<kiln_protocol::Embedding> {
    let handle = llm.handle();
    let pending: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            handle
                .embed(kiln_protocol::EmbedRequest {
                    input,
                    truncate: false,
                    tag: None,
                })
                .unwrap_or_else(|e| panic!("embedding refused: {e}"))
        })
        .collect();
    pending
        .into_iter()
        .map(|f| futures::executor::block_on(f).unwrap_or_else(|e| panic!("embedding failed: {e}")))
        .collect()
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let n = norm(a) * norm(b);
    if n == 0.0 { 0.0 } else { dot / n }
}
