//! `prompt_logprobs` through the engine on a tiny random Llama: each prompt
//! token's log-probability, rank and top alternatives equal those of the
//! last-position logits of the prefix before it; a prompt longer than one
//! row-head pass, split into chunks and partly in the prefix cache gives
//! the same values bit for bit; and asking for them changes no token.

use std::path::Path;

use kiln_engine::RequestOutput;
use kiln_engine::engine::load_model;
use kiln_models::weights::WeightDType;
use kiln_protocol::{GenerateRequest, PromptToken};
use kiln_tests::tiny::{TinySpec, write_safetensors};
use kiln_tests::{cpu_config, greedy, last_logits, start};

/// Longer than `RowHead::ROWS` (32), so its rows take several passes.
const PROMPT_LEN: usize = 75;
const TOP: u32 = 3;

fn prompt() -> Vec<u32> {
    (0..PROMPT_LEN as u32).map(|i| 3 + (i * 37) % 250).collect()
}

fn asking(ids: Vec<u32>) -> GenerateRequest {
    let mut r = greedy(ids, 6);
    r.sampling.prompt_logprobs = Some(TOP);
    r
}

fn config(model: &Path) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(model);
    c.max_model_len = Some(256);
    c
}

fn run(model: &Path, budget: Option<usize>, requests: Vec<GenerateRequest>) -> Vec<RequestOutput> {
    let mut config = config(model);
    config.max_num_batched_tokens = budget;
    start(config)
        .generate(requests)
        .into_iter()
        .map(|r| r.expect("request succeeds"))
        .collect()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&x| x as f64 - z).collect()
}

fn tiny_model(dir: &Path) -> std::path::PathBuf {
    write_safetensors(&dir.join("tiny"), &TinySpec::default(), WeightDType::F32)
}

#[test]
fn each_prompt_token_is_scored_by_the_prefix_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let ids = prompt();
    let out = run(&model, None, vec![asking(ids.clone())]);
    let scored: &[PromptToken] = out[0].prompt_logprobs.as_deref().expect("prompt logprobs");
    assert_eq!(scored.len(), PROMPT_LEN);
    assert_eq!((scored[0].id, scored[0].logprob), (ids[0], None));

    let mut runner = load_model(&config(&model)).expect("load").runner;
    let mut worst = 0f64;
    for k in 1..PROMPT_LEN {
        let reference = log_softmax(&last_logits(&mut runner, &ids[..k], k as u64));
        let got = &scored[k];
        assert_eq!(got.id, ids[k]);
        let want = reference[ids[k] as usize];
        worst = worst.max((f64::from(got.logprob.unwrap()) - want).abs());
        let rank = 1 + reference.iter().filter(|&&x| x > want).count() as u32;
        assert_eq!(got.rank, rank, "rank of position {k}");
        let mut order: Vec<usize> = (0..reference.len()).collect();
        order.sort_by(|&a, &b| reference[b].total_cmp(&reference[a]).then(a.cmp(&b)));
        let top: Vec<u32> = got.top_logprobs.iter().map(|t| t.id).collect();
        let want_top: Vec<u32> = order[..TOP as usize].iter().map(|&i| i as u32).collect();
        assert_eq!(top, want_top, "top alternatives of position {k}");
    }
    assert!(worst < 1e-4, "largest log-probability difference {worst}");
}

#[test]
fn chunked_and_cached_prompts_give_the_same_values_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let ids = prompt();
    let whole = run(&model, None, vec![asking(ids.clone())]);
    // Chunks of 16 tokens, after a plain request has put the prompt's blocks
    // in the prefix cache (which a prompt_logprobs request must not skip).
    let chunked = run(
        &model,
        Some(16),
        vec![greedy(ids.clone(), 6), asking(ids.clone())],
    );
    assert_eq!(whole[0].prompt_logprobs, chunked[1].prompt_logprobs);
    assert_eq!(chunked[0].prompt_logprobs, None, "only when asked");
    assert_eq!(
        whole[0].outputs[0].token_ids, chunked[0].outputs[0].token_ids,
        "asking for prompt log-probabilities changes no token"
    );
    assert_eq!(
        whole[0].outputs[0].token_ids,
        chunked[1].outputs[0].token_ids
    );
}
