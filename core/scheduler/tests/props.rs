//! Property tests of the scheduler and block manager driven together by the
//! simulator, which checks the per-step invariants itself (block accounting,
//! budgets, progress, KV content of every sequence); these tests add the
//! end-to-end properties: everything drains, outputs do not depend on
//! scheduling, FCFS, prefix caching.
//!
//! `PROPTEST_CASES` raises the number of cases (default 256 per property).

use std::collections::HashMap;

use kiln_protocol::{SeqId, TokenId};
use kiln_scheduler::sim::{Sim, SimConfig};
use kiln_scheduler::window::max_blocks_per_sequence;
use proptest::prelude::*;

/// A deterministic "model": the next token depends only on the history and
/// the sequence (so that the forks of one request diverge).
fn next_token(seq: SeqId, history: &[TokenId], eos_every: u32) -> (TokenId, bool) {
    let h = history
        .iter()
        .fold(17u32, |a, &t| a.wrapping_mul(31).wrapping_add(t));
    let tok = h.wrapping_add(seq as u32 % 1000 * 7) % 997 + 3;
    (tok, eos_every > 0 && tok % eos_every == 0)
}

const MAX_MODEL_LEN: usize = 64;

#[derive(Debug, Clone)]
struct Req {
    prefix: usize,
    extra: Vec<TokenId>,
    max_tokens: usize,
    n: usize,
    abort_at: Option<u64>,
    /// Abort while the step's allocation is in flight.
    abort_in_flight: bool,
    /// An embedding request (`max_tokens` and `n` unused).
    embed: bool,
    /// Asks for the prompt's log-probabilities.
    prompt_logprobs: bool,
}

fn prefixes() -> Vec<Vec<TokenId>> {
    vec![(100..137).collect(), (200..209).collect(), vec![7], vec![]]
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..4usize,
        prop::collection::vec(1u32..50, 0..24),
        1..16usize,
        prop::sample::select(vec![1usize, 1, 1, 2, 3]),
        prop::option::weighted(0.2, 0..40u64),
        prop::bool::ANY,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(prefix, extra, max_tokens, n, abort_at, abort_in_flight, embed, prompt_logprobs)| {
                Req {
                    prefix,
                    extra,
                    max_tokens,
                    n,
                    abort_at,
                    abort_in_flight,
                    embed,
                    prompt_logprobs,
                }
            },
        )
}

fn config() -> impl Strategy<Value = SimConfig> {
    (
        0..3usize,
        0..4usize,
        1..48usize,
        1..10usize,
        prop::bool::ANY,
    )
        .prop_map(|(pool, bs_pow, budget, seqs, cache)| {
            let block_size = 1 << bs_pow;
            // Enough blocks for the longest single sequence, sometimes barely.
            let min_blocks = MAX_MODEL_LEN.div_ceil(block_size);
            SimConfig {
                num_blocks: [min_blocks, min_blocks + 2, min_blocks * 6][pool],
                block_size,
                max_num_batched_tokens: budget,
                max_num_seqs: seqs,
                max_model_len: MAX_MODEL_LEN,
                enable_prefix_caching: cache,
                sliding_window: None,
            }
        })
}

/// A model whose every layer slides over 1 to 24 tokens, with a pool that
/// holds what one sequence keeps at most (sometimes barely), which is often
/// less than a whole `MAX_MODEL_LEN` sequence.
fn windowed_config() -> impl Strategy<Value = SimConfig> {
    (config(), 1..24usize, 0..3usize).prop_map(|(cfg, window, pool)| {
        let most = max_blocks_per_sequence(
            MAX_MODEL_LEN,
            cfg.block_size,
            Some(window),
            cfg.max_num_batched_tokens,
        );
        SimConfig {
            num_blocks: [most, most + 2, most * 6][pool],
            sliding_window: Some(window),
            ..cfg
        }
    })
}

fn prompt(r: &Req) -> Vec<TokenId> {
    let mut p = prefixes()[r.prefix].clone();
    p.extend(&r.extra);
    p.truncate(MAX_MODEL_LEN - r.max_tokens);
    if p.is_empty() {
        p.push(1);
    }
    p
}

type Outputs = HashMap<u64, Vec<Vec<TokenId>>>;

struct RunResult {
    outputs: Outputs,
    first_scheduled: HashMap<u64, u64>,
    preemptions: u64,
}

/// Run a workload to the end (the simulator checks every step).
fn run(cfg: SimConfig, reqs: &[Req], eos_every: u32) -> RunResult {
    let mut sim = Sim::new(cfg);
    for (i, r) in reqs.iter().enumerate() {
        if r.embed {
            // An embedding runs whole in one step: it fits the budget.
            let mut p = prompt(r);
            p.truncate(cfg.max_num_batched_tokens);
            sim.add_embedding(i as u64 + 1, p);
        } else if r.prompt_logprobs {
            sim.add_with_prompt_logprobs(i as u64 + 1, prompt(r), r.max_tokens, r.n);
        } else {
            sim.add(i as u64 + 1, prompt(r), r.max_tokens, r.n);
        }
    }
    assert!(
        sim.failed().is_empty(),
        "valid requests rejected: {:?}",
        sim.failed()
    );
    let mut sample = |seq: SeqId, h: &[TokenId]| next_token(seq, h, eos_every);
    let mut step = 0u64;
    let mut aborted = Vec::new();
    loop {
        for (i, r) in reqs.iter().enumerate() {
            if r.abort_at == Some(step) {
                if r.abort_in_flight {
                    sim.abort_in_flight(i as u64 + 1);
                } else {
                    sim.abort(i as u64 + 1);
                }
                aborted.push(i as u64 + 1);
            }
        }
        if sim.step(&mut sample).is_none() {
            break;
        }
        step += 1;
        assert!(step < 20_000, "livelock");
    }
    sim.check_idle();
    assert!(
        sim.failed().is_empty(),
        "requests failed: {:?}",
        sim.failed()
    );
    let outputs = sim.run_to_completion(&mut sample);
    // Every request that was not aborted finished, with n outputs each
    // ending at max_tokens or at a stop token.
    for (i, r) in reqs.iter().enumerate() {
        let id = i as u64 + 1;
        match outputs.get(&id) {
            Some(outs) if r.embed => assert!(outs.is_empty()),
            Some(outs) => {
                assert_eq!(outs.len(), r.n);
                for o in outs {
                    assert!(!o.is_empty() && o.len() <= r.max_tokens);
                    let last_stops = eos_every > 0 && o[o.len() - 1] % eos_every == 0;
                    assert!(o.len() == r.max_tokens || last_stops);
                }
            }
            None => assert!(aborted.contains(&id), "request {id} never finished"),
        }
    }
    RunResult {
        outputs,
        first_scheduled: sim.first_scheduled.clone(),
        preemptions: sim.scheduler.total_preemptions(),
    }
}

fn without_aborts(reqs: Vec<Req>) -> Vec<Req> {
    reqs.into_iter()
        .map(|r| Req {
            abort_at: None,
            ..r
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// `cfg` with memory and budgets to spare and prefix caching flipped.
fn roomy(cfg: SimConfig) -> SimConfig {
    SimConfig {
        num_blocks: 4096,
        max_num_batched_tokens: 4096,
        max_num_seqs: 64,
        enable_prefix_caching: !cfg.enable_prefix_caching,
        ..cfg
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Invariants hold at every step (checked inside the simulator), every
    /// request ends or is aborted, and at the end every block is free.
    #[test]
    fn every_workload_drains(
        cfg in config(),
        reqs in prop::collection::vec(req(), 1..14),
        eos in prop::sample::select(vec![0u32, 5, 13, 40]),
    ) {
        run(cfg, &reqs, eos);
    }

    /// Outputs do not depend on memory pressure, budgets, batching or
    /// prefix caching: a sequence's tokens are a function of its own history
    /// only, whatever preemption, chunking and cache hits happened.
    #[test]
    fn outputs_do_not_depend_on_scheduling(
        cfg in config(),
        reqs in prop::collection::vec(req(), 1..10),
    ) {
        let reqs = without_aborts(reqs);
        let a = run(cfg, &reqs, 13);
        let b = run(roomy(cfg), &reqs, 13);
        prop_assert_eq!(a.outputs, b.outputs);
    }

    /// With a sliding window on every layer, the simulator also checks at
    /// every step that no sequence holds more than its window's worth of
    /// blocks, that holes are a prefix of each table, that every position a
    /// scheduled row sees is in a resident block holding that sequence's
    /// own KV, and the block manager's hole invariants; everything drains.
    #[test]
    fn windowed_workloads_drain(
        cfg in windowed_config(),
        reqs in prop::collection::vec(req(), 1..14),
        eos in prop::sample::select(vec![0u32, 5, 13, 40]),
    ) {
        run(cfg, &reqs, eos);
    }

    /// Freeing blocks behind the window changes no output: a tight pool
    /// with a window gives the tokens a roomy pool without one gives.
    #[test]
    fn windowed_outputs_do_not_depend_on_scheduling(
        cfg in windowed_config(),
        reqs in prop::collection::vec(req(), 1..10),
    ) {
        let reqs = without_aborts(reqs);
        let a = run(cfg, &reqs, 13);
        let b = run(SimConfig { sliding_window: None, ..roomy(cfg) }, &reqs, 13);
        prop_assert_eq!(a.outputs, b.outputs);
    }

    /// First come first served: a request is never first scheduled before an
    /// earlier one.
    #[test]
    fn fcfs(cfg in config(), reqs in prop::collection::vec(req(), 2..10)) {
        let reqs = without_aborts(reqs);
        let first = run(cfg, &reqs, 0).first_scheduled;
        for i in 1..reqs.len() as u64 {
            prop_assert!(first[&i] <= first[&(i + 1)], "request {} scheduled before {}", i + 1, i);
        }
    }
}

fn tight() -> SimConfig {
    SimConfig {
        num_blocks: 2 * 64 / 4,
        block_size: 4,
        max_num_batched_tokens: 64,
        max_num_seqs: 8,
        max_model_len: 64,
        enable_prefix_caching: false,
        sliding_window: None,
    }
}

fn crowd(n: usize) -> Vec<Req> {
    (0..8)
        .map(|i| Req {
            prefix: i % 2,
            extra: vec![i as u32 + 1; 10],
            max_tokens: 11,
            n,
            abort_at: None,
            abort_in_flight: false,
            embed: false,
            prompt_logprobs: i % 3 == 0,
        })
        .collect()
}

#[test]
fn preemption_keeps_outputs_identical() {
    for (cache, n) in [(false, 1), (true, 1), (true, 3), (false, 2)] {
        let cfg = SimConfig {
            enable_prefix_caching: cache,
            ..tight()
        };
        let reqs = crowd(n);
        let constrained = run(cfg, &reqs, 0);
        assert!(
            constrained.preemptions > 0,
            "the test must actually preempt (cache {cache}, n {n})"
        );
        let roomy = run(
            SimConfig {
                num_blocks: 1024,
                ..cfg
            },
            &reqs,
            0,
        );
        assert_eq!(roomy.preemptions, 0);
        assert_eq!(constrained.outputs, roomy.outputs);
    }
}

#[test]
fn prefix_cache_skips_shared_blocks() {
    let cfg = SimConfig {
        num_blocks: 64,
        block_size: 4,
        max_num_batched_tokens: 128,
        max_num_seqs: 8,
        max_model_len: 128,
        enable_prefix_caching: true,
        sliding_window: None,
    };
    let mut sim = Sim::new(cfg);
    let long: Vec<TokenId> = (1..=42).collect();
    sim.add(1, long.clone(), 1, 1);
    sim.run_to_completion(|s, h| next_token(s, h, 0));
    // 40 tokens = 10 full blocks are shared; the rest is computed.
    let mut second = long[..41].to_vec();
    second.extend([77, 78]);
    sim.add(2, second, 2, 1);
    let report = sim.step(&mut |s, h| next_token(s, h, 0)).unwrap();
    assert_eq!(report.allocation.prefix_cache_queries, 43);
    assert_eq!(report.allocation.prefix_cache_hits, 40);
    assert_eq!(sim.scheduler.last_prefix_cache_stats(), (43, 40));
    assert_eq!(report.plan.seqs[0].num_computed_tokens, 40);
    assert_eq!(report.plan.seqs[0].token_ids, vec![41, 77, 78]);
    sim.run_to_completion(|s, h| next_token(s, h, 0));
}

#[test]
fn prefix_cache_with_chunked_prefill_and_a_tiny_budget() {
    let cfg = SimConfig {
        num_blocks: 40,
        block_size: 4,
        max_num_batched_tokens: 3,
        max_num_seqs: 4,
        max_model_len: 64,
        enable_prefix_caching: true,
        sliding_window: None,
    };
    let mut sim = Sim::new(cfg);
    let p: Vec<TokenId> = (1..=30).collect();
    sim.add(1, p.clone(), 3, 1);
    sim.run_to_completion(|s, h| next_token(s, h, 0));
    sim.add(2, p, 3, 2);
    let report = sim.step(&mut |s, h| next_token(s, h, 0)).unwrap();
    assert_eq!(report.plan.seqs[0].num_computed_tokens, 28);
    assert_eq!(report.plan.seqs[0].token_ids, vec![29, 30]);
    sim.run_to_completion(|s, h| next_token(s, h, 0));
}

#[test]
fn aborts_in_every_state_return_all_blocks() {
    let cfg = SimConfig {
        num_blocks: 24,
        block_size: 4,
        max_num_batched_tokens: 8,
        max_num_seqs: 3,
        max_model_len: 64,
        enable_prefix_caching: true,
        sliding_window: None,
    };
    for abort_step in 0..40 {
        let mut sim = Sim::new(cfg);
        for i in 1..=5u64 {
            sim.add(
                i,
                (0..30).map(|t| t + i as u32 % 2).collect(),
                20,
                (i % 3 + 1) as usize,
            );
        }
        let mut sample = |s: SeqId, h: &[TokenId]| next_token(s, h, 0);
        for _ in 0..abort_step {
            if sim.step(&mut sample).is_none() {
                break;
            }
        }
        // Abort between steps, and some while an allocation is in flight.
        for i in 1..=3 {
            sim.abort(i);
        }
        sim.step(&mut sample);
        for i in 4..=5 {
            sim.abort(i);
        }
        sim.run_to_completion(&mut sample);
    }
}

#[test]
fn abort_with_an_allocation_in_flight_never_poisons_the_cache() {
    let cfg = SimConfig {
        num_blocks: 32,
        block_size: 4,
        max_num_batched_tokens: 64,
        max_num_seqs: 4,
        max_model_len: 64,
        enable_prefix_caching: true,
        sliding_window: None,
    };
    let mut sim = Sim::new(cfg);
    let mut sample = |s: SeqId, h: &[TokenId]| next_token(s, h, 0);
    let p: Vec<TokenId> = (1..=21).collect();
    sim.add(1, p.clone(), 4, 1);
    sim.abort_in_flight(1);
    let report = sim.step(&mut sample).unwrap();
    // The granted prompt is still computed (its blocks are registered), never sampled.
    assert_eq!(report.plan.seqs.len(), 1);
    assert_eq!(report.plan.seqs[0].num_samples, 0);
    assert!(report.output.tokens.is_empty());
    // The same prompt again: the simulator checks the hit blocks hold its KV.
    sim.add(2, p, 4, 1);
    let report = sim.step(&mut sample).unwrap();
    assert_eq!(report.plan.dropped, vec![1000]);
    assert_eq!(report.allocation.prefix_cache_hits, 20);
    let out = sim.run_to_completion(&mut sample);
    assert_eq!(out[&2][0].len(), 4);
}

#[test]
fn n_greater_than_one_forks_after_the_prompt() {
    let mut sim = Sim::new(SimConfig::default());
    sim.add(1, (1..=10).collect(), 5, 3);
    let mut seen_fork = false;
    let mut sample = |seq: SeqId, h: &[TokenId]| next_token(seq, h, 0);
    while let Some(r) = sim.step(&mut sample) {
        if r.plan.seqs.iter().any(|s| s.num_samples == 3) {
            seen_fork = true;
        }
        // The prompt is computed once, not three times.
        let prompt_tokens: usize = r
            .plan
            .seqs
            .iter()
            .filter(|s| s.num_computed_tokens == 0)
            .map(|s| s.token_ids.len())
            .sum();
        assert!(prompt_tokens <= 10);
    }
    assert!(seen_fork);
    let out = sim.run_to_completion(&mut sample);
    assert_eq!(out[&1].len(), 3);
    assert!(out[&1].iter().all(|o| o.len() == 5));
    assert_ne!(out[&1][0], out[&1][1]);
}

#[test]
fn a_request_larger_than_the_pool_fails_instead_of_waiting_forever() {
    let cfg = SimConfig {
        num_blocks: 4,
        block_size: 4,
        max_num_batched_tokens: 8,
        max_num_seqs: 4,
        max_model_len: 64,
        enable_prefix_caching: true,
        sliding_window: None,
    };
    let mut sim = Sim::new(cfg);
    sim.add(1, vec![1; 20], 4, 1);
    sim.add(2, vec![2; 5], 4, 1);
    assert!(sim.failed().contains_key(&1));
    let out = sim.run_to_completion(|s, h| next_token(s, h, 0));
    assert_eq!(out[&2][0].len(), 4);
}

/// Window 8, blocks of 4, chunks of 4: a sequence holds at most
/// ceil(11 / 4) + 1 = 4 blocks.
fn small_window() -> SimConfig {
    SimConfig {
        num_blocks: 4,
        block_size: 4,
        max_num_batched_tokens: 4,
        max_num_seqs: 4,
        max_model_len: 64,
        enable_prefix_caching: true,
        sliding_window: Some(8),
    }
}

#[test]
fn a_window_lets_a_sequence_outgrow_the_pool() {
    let cfg = small_window();
    assert_eq!(max_blocks_per_sequence(64, 4, Some(8), 4), 4);
    let mut sim = Sim::new(cfg);
    // 60 tokens need 15 blocks without the window; the pool has 4.
    sim.add(1, (1..=20).collect(), 40, 1);
    assert!(sim.failed().is_empty(), "{:?}", sim.failed());
    let out = sim.run_to_completion(|s, h| next_token(s, h, 0));
    assert_eq!(out[&1][0].len(), 40);
    // Without it, the same request can never run.
    let mut sim = Sim::new(SimConfig {
        sliding_window: None,
        ..cfg
    });
    sim.add(1, (1..=20).collect(), 40, 1);
    assert!(sim.failed().contains_key(&1));
}

#[test]
fn windowed_sequences_share_a_small_pool_by_preemption() {
    let cfg = SimConfig {
        num_blocks: 8,
        max_num_batched_tokens: 8,
        max_num_seqs: 8,
        ..small_window()
    };
    let reqs = crowd(1);
    let constrained = run(cfg, &reqs, 0);
    assert!(constrained.preemptions > 0, "the test must preempt");
    let roomy = run(
        SimConfig {
            num_blocks: 1024,
            max_num_batched_tokens: 64,
            sliding_window: None,
            ..cfg
        },
        &reqs,
        0,
    );
    assert_eq!(constrained.outputs, roomy.outputs);
}

#[test]
fn windowed_forks_and_prefix_hits() {
    let cfg = SimConfig {
        num_blocks: 24,
        ..small_window()
    };
    let mut sim = Sim::new(cfg);
    let mut sample = |s: SeqId, h: &[TokenId]| next_token(s, h, 0);
    let p: Vec<TokenId> = (1..=30).collect();
    sim.add(1, p.clone(), 12, 3);
    sim.run_to_completion(&mut sample);
    // The whole chain is still cached (nothing evicted it): 28 tokens hit,
    // of which the blocks behind the first row's window are not taken.
    sim.add(2, p, 12, 2);
    let report = sim.step(&mut sample).unwrap();
    assert_eq!(report.allocation.prefix_cache_hits, 28);
    let seq = &report.plan.seqs[0];
    assert_eq!((seq.num_computed_tokens, seq.table_holes), (28, 5));
    let out = sim.run_to_completion(&mut sample);
    assert_eq!(out[&2].len(), 2);
}
