//! KV blocks behind a sliding window go back to the pool, end to end on the
//! tiny Mistral and Starcoder2 fixtures (every layer slides over 8 tokens;
//! `tests/fixtures/families/`):
//! - with a pool smaller than one whole sequence (which could not serve
//!   them without freeing), every prompt still gives transformers' 32 greedy
//!   tokens, its last prompt running past several windows;
//! - 12 concurrent requests, in that tiny pool and in a bigger one where
//!   freed blocks are taken by other sequences while they run (and prefix
//!   cache hits begin with holes), each get the tokens they get alone;
//! - a model where only some layers slide (the Qwen2 fixture) frees
//!   nothing, and says so.
//!
//! Blocks of 4 tokens and steps of at most 16 tokens: a sequence holds at
//! most ceil((8 + 16 − 1) / 4) + 1 = 7 blocks, where its 74 tokens fill 19.

use std::path::{Path, PathBuf};

use kiln_engine::{Engine, EngineConfig, LLM};
use kiln_models::config::ModelConfig;
use kiln_models::decoder::{ActDType, KvCache};
use kiln_protocol::{GenerateRequest, SamplingParams};
use kiln_tests::{ReferencePrompt, cpu_config, fixture_jsons, fixtures, greedy, reference_prompts};

const BLOCK_SIZE: usize = 4;
const CHUNK: usize = 16;
const BLOCKS_PER_SEQUENCE: usize = 7;

struct Fixture {
    model: PathBuf,
    prompts: Vec<ReferencePrompt>,
}

fn fixture(family: &str) -> Fixture {
    let (_, v) = fixture_jsons("families")
        .into_iter()
        .find(|(_, v)| v["family"] == family)
        .unwrap_or_else(|| panic!("tests/fixtures/families/{family}.json is missing"));
    Fixture {
        model: fixtures().join("families").join(family),
        prompts: reference_prompts(&v["prompts"]),
    }
}

/// An engine config with a pool of `blocks` KV blocks of 4 tokens.
fn config(model: &Path, blocks: u64) -> EngineConfig {
    let text = std::fs::read_to_string(model.join("config.json")).unwrap();
    let model_config = ModelConfig::from_hf_json(&text).unwrap();
    let mut c = cpu_config(model);
    c.max_model_len = Some(256);
    c.block_size = BLOCK_SIZE;
    c.max_num_batched_tokens = Some(CHUNK);
    c.max_num_seqs = Some(16);
    c.kv_cache_memory_bytes =
        Some(blocks * KvCache::bytes_per_block(&model_config, BLOCK_SIZE, ActDType::F32));
    c
}

fn start(config: EngineConfig) -> LLM {
    let engine = Engine::start(config).unwrap_or_else(|e| panic!("engine failed to start: {e}"));
    LLM::from_engine(engine)
}

fn tokens(llm: &LLM, requests: Vec<GenerateRequest>) -> Vec<Vec<u32>> {
    llm.generate(requests)
        .into_iter()
        .map(|r| r.expect("generation").outputs[0].token_ids.clone())
        .collect()
}

#[test]
fn a_pool_smaller_than_one_sequence_still_gives_transformers_tokens() {
    for family in ["mistral", "starcoder2"] {
        let f = fixture(family);
        let longest = f.prompts.iter().map(|p| p.ids.len() + 32).max().unwrap();
        assert!(
            longest > 5 * 8,
            "{family}: the longest sequence must span several windows"
        );
        let pool = 8;
        assert!(
            pool < longest.div_ceil(BLOCK_SIZE),
            "{family}: the pool must be too small"
        );
        let llm = start(config(&f.model, pool as u64));
        let kv = &llm.engine().summary().kv;
        assert_eq!(
            (kv.num_blocks, kv.blocks_per_sequence),
            (pool, BLOCKS_PER_SEQUENCE),
            "{family}"
        );
        let line = kv.window_line().unwrap();
        assert!(
            line.starts_with(
                "sliding window 8 on all 2 layers: a sequence holds at most 7 KV blocks"
            ),
            "{line}"
        );
        // All at once (they share the pool by preemption), then the longest
        // again alone: its prefix may be cached, its holes included.
        let got = tokens(
            &llm,
            f.prompts
                .iter()
                .map(|p| greedy(p.ids.clone(), 32))
                .collect(),
        );
        for (i, (p, got)) in f.prompts.iter().zip(&got).enumerate() {
            assert_eq!(got, &p.greedy, "{family} prompt {i}");
        }
        let last = f.prompts.last().unwrap();
        let again = tokens(&llm, vec![greedy(last.ids.clone(), 32)]);
        assert_eq!(again[0], last.greedy, "{family}: the longest prompt again");
    }
}

/// 12 prompts of 3 to 42 tokens from the fixture's, each a little different.
fn varied_prompts(bases: &[ReferencePrompt]) -> Vec<Vec<u32>> {
    (0..12)
        .map(|i| {
            let base = &bases[i % bases.len()].ids;
            let cut = (base.len() * (4 + i % 5) / 8).max(3);
            let mut p = base[..cut.min(base.len())].to_vec();
            p.extend((0..(i % 4) as u32).map(|k| 3 + (19 * k + 7 * i as u32) % 500));
            p
        })
        .collect()
}

#[test]
fn concurrent_windowed_sequences_get_the_tokens_each_gets_alone() {
    let f = fixture("mistral");
    let prompts = varied_prompts(&f.prompts);
    let seeded = |ids: Vec<u32>, seed: u64| {
        let mut r = greedy(ids, 40);
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..Default::default()
        };
        r
    };
    let requests = || -> Vec<GenerateRequest> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| match i % 2 {
                0 => greedy(p.clone(), 40),
                _ => seeded(p.clone(), 500 + i as u64),
            })
            .collect()
    };
    let roomy = start(config(&f.model, 4096));
    let alone: Vec<Vec<u32>> = requests()
        .into_iter()
        .map(|r| tokens(&roomy, vec![r]).remove(0))
        .collect();
    assert!(alone.iter().all(|t| t.len() == 40));
    assert_eq!(tokens(&roomy, requests()), alone, "roomy pool, all at once");
    drop(roomy);
    // 8 blocks: about one sequence at a time, by preemption. 40 blocks: five
    // or so run together while their freed blocks go to one another.
    for pool in [8, 40] {
        let llm = start(config(&f.model, pool));
        assert_eq!(tokens(&llm, requests()), alone, "pool of {pool} blocks");
        // The same requests again find their prompts in the prefix cache.
        assert_eq!(tokens(&llm, requests()), alone, "pool of {pool}, again");
    }
}

#[test]
fn a_model_where_only_some_layers_slide_keeps_every_block() {
    let f = fixture("qwen2");
    let c = config(&f.model, 64);
    let llm = start(c.clone());
    let kv = &llm.engine().summary().kv;
    // 256 tokens fill 64 blocks, and nothing is freed.
    assert_eq!(kv.blocks_per_sequence, 64);
    let line = kv.window_line().unwrap();
    assert!(
        line.starts_with("sliding window 8 on 1 of 2 layers") && line.contains("not freed"),
        "{line}"
    );
    let got = tokens(
        &llm,
        f.prompts
            .iter()
            .map(|p| greedy(p.ids.clone(), 32))
            .collect(),
    );
    for (i, (p, got)) in f.prompts.iter().zip(&got).enumerate() {
        assert_eq!(got, &p.greedy, "qwen2 prompt {i}");
    }
    drop(llm);
    // A pool that only a freeing model could serve is refused.
    let err = Engine::start(config(&f.model, 8)).err().expect("refused");
    assert!(err.to_string().contains("needs 64 blocks"), "{err}");
}
