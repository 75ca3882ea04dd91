//! Property tests of the scheduler and block manager driven together.

use std::collections::HashMap;

use kiln_protocol::{SeqId, TokenId};
use kiln_scheduler::sim::{Sim, SimConfig};
use proptest::prelude::*;

/// A deterministic "model": the next token depends only on the history.
fn next_token(history: &[TokenId], eos_every: u32) -> (TokenId, bool) {
    let h = history
        .iter()
        .fold(17u32, |a, &t| a.wrapping_mul(31).wrapping_add(t));
    let tok = h % 997 + 3;
    (tok, eos_every > 0 && tok % eos_every == 0)
}

#[derive(Debug, Clone)]
struct Req {
    prefix: usize,
    extra: Vec<TokenId>,
    max_tokens: usize,
    n: usize,
    abort_at: Option<u64>,
}

fn prefixes() -> Vec<Vec<TokenId>> {
    vec![(100..137).collect(), (200..209).collect(), vec![7]]
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..3usize,
        prop::collection::vec(1u32..50, 0..20),
        1..12usize,
        1..4usize,
        prop::option::weighted(0.2, 0..30u64),
    )
        .prop_map(|(prefix, extra, max_tokens, n, abort_at)| Req {
            prefix,
            extra,
            max_tokens,
            n,
            abort_at,
        })
}

fn config() -> impl Strategy<Value = SimConfig> {
    (
        prop::bool::ANY,
        1..4usize,
        1..48usize,
        1..10usize,
        prop::bool::ANY,
    )
        .prop_map(|(small, bs_pow, budget, seqs, cache)| {
            let block_size = 1 << bs_pow;
            // Enough blocks for the longest single request (64 tokens), sometimes barely.
            let min_blocks = 64usize.div_ceil(block_size);
            SimConfig {
                num_blocks: if small {
                    min_blocks + 1
                } else {
                    min_blocks * 8
                },
                block_size,
                max_num_batched_tokens: budget,
                max_num_seqs: seqs,
                max_model_len: 64,
                enable_prefix_caching: cache,
            }
        })
}

fn prompt(r: &Req) -> Vec<TokenId> {
    let mut p = prefixes()[r.prefix].clone();
    p.extend(&r.extra);
    p.truncate(64 - r.max_tokens);
    p
}

type Outputs = HashMap<u64, Vec<Vec<TokenId>>>;

/// Run a workload; returns outputs per request and the first-scheduling step per request.
fn run(cfg: SimConfig, reqs: &[Req], eos_every: u32) -> (Outputs, HashMap<u64, u64>) {
    let mut sim = Sim::new(cfg);
    for (i, r) in reqs.iter().enumerate() {
        sim.add(i as u64 + 1, prompt(r), r.max_tokens, r.n);
    }
    let mut step = 0u64;
    let mut out = HashMap::new();
    let mut empty_streak = 0;
    let mut sample = |_: SeqId, h: &[TokenId]| next_token(h, eos_every);
    loop {
        for (i, r) in reqs.iter().enumerate() {
            if r.abort_at == Some(step) {
                sim.abort(i as u64 + 1);
            }
        }
        let Some(report) = sim.step(&mut sample) else {
            break;
        };
        step += 1;
        if report.plan.seqs.is_empty() && report.plan.dropped.is_empty() {
            empty_streak += 1;
            assert!(empty_streak < 3, "steps without progress");
        } else {
            empty_streak = 0;
        }
        assert!(step < 20_000, "livelock");
    }
    out.extend(sim.run_to_completion(&mut sample));
    assert_eq!(sim.blocks.num_free_blocks(), sim.blocks.num_total_blocks());
    sim.blocks.check_invariants().unwrap();
    (out, sim.first_scheduled.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    /// Invariants hold at every step (checked inside the simulator), every
    /// request ends, and at the end every block is free.
    #[test]
    fn every_workload_drains(cfg in config(), reqs in prop::collection::vec(req(), 1..12), eos in 0..40u32) {
        run(cfg, &reqs, eos);
    }

    /// Outputs do not depend on memory pressure, budgets or batching: a
    /// sequence's tokens are a function of its own history only, whatever
    /// preemption and chunking happened.
    #[test]
    fn outputs_do_not_depend_on_scheduling(cfg in config(), reqs in prop::collection::vec(req(), 1..10)) {
        let reqs: Vec<Req> = reqs.into_iter().map(|r| Req { abort_at: None, ..r }).collect();
        let roomy = SimConfig { num_blocks: 4096, max_num_batched_tokens: 4096, max_num_seqs: 64, ..cfg };
        let (a, _) = run(cfg, &reqs, 0);
        let (b, _) = run(roomy, &reqs, 0);
        prop_assert_eq!(a, b);
    }

    /// First-come first-served: a request is never first scheduled before an earlier one.
    #[test]
    fn fcfs(cfg in config(), reqs in prop::collection::vec(req(), 2..10)) {
        let reqs: Vec<Req> = reqs.into_iter().map(|r| Req { abort_at: None, ..r }).collect();
        let (_, first) = run(cfg, &reqs, 0);
        for i in 1..reqs.len() as u64 {
            prop_assert!(first[&i] <= first[&(i + 1)], "request {} scheduled before {}", i + 1, i);
        }
    }
}

#[test]
fn preemption_keeps_outputs_identical() {
    // Eight requests, KV for about two full sequences.
    let reqs: Vec<Req> = (0..8)
        .map(|i| Req {
            prefix: i % 2,
            extra: vec![i as u32 + 1; 10],
            max_tokens: 11,
            n: 1,
            abort_at: None,
        })
        .collect();
    let tight = SimConfig {
        num_blocks: 2 * 64 / 4,
        block_size: 4,
        max_num_batched_tokens: 64,
        max_num_seqs: 8,
        max_model_len: 64,
        enable_prefix_caching: false,
    };
    let mut sim = Sim::new(tight);
    for (i, r) in reqs.iter().enumerate() {
        sim.add(i as u64 + 1, prompt(r), r.max_tokens, r.n);
    }
    let constrained = sim.run_to_completion(|_, h| next_token(h, 0));
    assert!(
        sim.scheduler.total_preemptions() > 0,
        "the test must actually preempt"
    );
    let (roomy, _) = run(
        SimConfig {
            num_blocks: 1024,
            ..tight
        },
        &reqs,
        0,
    );
    assert_eq!(constrained, roomy);
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
    };
    let mut sim = Sim::new(cfg);
    let long: Vec<TokenId> = (1..=40).collect();
    sim.add(1, long.clone(), 2, 1);
    sim.run_to_completion(|_, h| next_token(h, 0));
    let mut second = long.clone();
    second.extend([77, 78]);
    sim.add(2, second, 2, 1);
    let report = sim.step(&mut |_, h| next_token(h, 0)).unwrap();
    assert_eq!(report.allocation.prefix_cache_hits, 40);
    assert_eq!(report.plan.seqs[0].num_computed_tokens, 40);
    assert_eq!(report.plan.seqs[0].token_ids, vec![77, 78]);
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
    };
    for abort_step in 0..12 {
        let mut sim = Sim::new(cfg);
        for i in 1..=5 {
            sim.add(
                i,
                (0..30).map(|t| t + i as u32).collect(),
                20,
                (i % 3 + 1) as usize,
            );
        }
        let mut sample = |_: SeqId, h: &[TokenId]| next_token(h, 0);
        for step in 0..abort_step {
            if step == abort_step - 1 {
                for i in 1..=5 {
                    sim.abort(i);
                }
            }
            if sim.step(&mut sample).is_none() {
                break;
            }
        }
        for i in 1..=5 {
            sim.abort(i);
        }
        sim.run_to_completion(&mut sample);
        assert_eq!(
            sim.blocks.num_free_blocks(),
            24,
            "abort at step {abort_step}"
        );
    }
}

#[test]
fn n_greater_than_one_forks_after_the_prompt() {
    let mut sim = Sim::new(SimConfig::default());
    sim.add(1, (1..=10).collect(), 5, 3);
    let mut seen_fork = false;
    let mut sample = |seq: SeqId, h: &[TokenId]| (next_token(h, 0).0 + seq as u32 % 1000, false);
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
