//! The engine end to end on the real default model: batch invariance,
//! preemption, prefix caching, aborts in every state.

use std::time::{Duration, Instant};

use kiln_engine::{EngineConfig, LLM};
use kiln_engine_api::EngineHandle;
use kiln_protocol::{EngineEvent, GenerateRequest, SamplingParams, StepStats, TokenEvent};
use kiln_tests::{cpu_config, default_model, greedy, start};

/// Prompts of mixed lengths made from the parity fixture's token ids.
fn prompts(count: usize) -> Vec<Vec<u32>> {
    let bases = kiln_tests::parity_prompts();
    (0..count)
        .map(|i| {
            let base = &bases[i % bases.len()];
            // Vary the lengths: cut the base prompt and append a few distinct tokens.
            let cut = (base.len() * (3 + i % 5) / 8).max(1);
            let mut p = base[..cut].to_vec();
            p.extend((0..(i % 7) as u32).map(|k| 300 + 17 * k + i as u32));
            p
        })
        .collect()
}

fn tokens(llm: &LLM, reqs: Vec<GenerateRequest>) -> Vec<Vec<u32>> {
    llm.generate(reqs)
        .into_iter()
        .map(|r| r.expect("generation").outputs[0].token_ids.clone())
        .collect()
}

fn seeded(ids: Vec<u32>, seed: u64, max_tokens: u32) -> GenerateRequest {
    let mut r = greedy(ids, max_tokens);
    r.sampling = SamplingParams {
        temperature: 0.8,
        seed: Some(seed),
        ..Default::default()
    };
    r
}

#[test]
fn thirty_two_concurrent_requests_match_each_alone() {
    let Some(model) = default_model() else { return };
    let llm = start(cpu_config(&model));
    let ps = prompts(32);
    let batch_greedy = tokens(&llm, ps.iter().map(|p| greedy(p.clone(), 16)).collect());
    let batch_seeded = tokens(
        &llm,
        ps.iter()
            .enumerate()
            .map(|(i, p)| seeded(p.clone(), 1000 + i as u64, 16))
            .collect(),
    );
    for (i, p) in ps.iter().enumerate() {
        let alone = tokens(&llm, vec![greedy(p.clone(), 16)]);
        assert_eq!(
            alone[0], batch_greedy[i],
            "greedy request {i} differs alone and in the batch"
        );
        let alone = tokens(&llm, vec![seeded(p.clone(), 1000 + i as u64, 16)]);
        assert_eq!(
            alone[0], batch_seeded[i],
            "seeded request {i} differs alone and in the batch"
        );
    }
}

/// Collect step statistics while `f` runs.
fn with_stats<T>(handle: &EngineHandle, f: impl FnOnce() -> T) -> (T, Vec<StepStats>) {
    let mut rx = handle.subscribe();
    let out = f();
    let mut stats = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let EngineEvent::Step(s) = ev {
            stats.push(s);
        }
    }
    (out, stats)
}

#[test]
fn preemption_under_kv_pressure_keeps_outputs() {
    let Some(model) = default_model() else { return };
    let ps = prompts(8);
    let reqs = || ps.iter().map(|p| greedy(p.clone(), 96)).collect::<Vec<_>>();
    let roomy = tokens(&start(cpu_config(&model)), reqs());

    // KV for about two full sequences of 160 tokens.
    let mut tight: EngineConfig = cpu_config(&model);
    tight.max_model_len = Some(160);
    tight.kv_cache_memory_bytes = Some(2 * 160 * 46_080 + 46_080 * 16);
    let llm = start(tight);
    let (constrained, stats) = with_stats(&llm.handle(), || tokens(&llm, reqs()));
    let preemptions: u32 = stats.iter().map(|s| s.num_preemptions).sum();
    assert!(
        preemptions > 0,
        "the KV cache was meant to be too small for all eight"
    );
    assert_eq!(constrained, roomy);
}

#[test]
fn a_shared_prefix_is_served_from_the_cache() {
    let Some(model) = default_model() else { return };
    let prefix: Vec<u32> = prompts(12).concat().into_iter().take(200).collect();
    let mut second = prefix.clone();
    second.extend([28, 905, 17, 504]);
    let llm = start(cpu_config(&model));
    tokens(&llm, vec![greedy(prefix.clone(), 4)]);
    let (out, stats) = with_stats(&llm.handle(), || {
        tokens(&llm, vec![greedy(second.clone(), 12)])
    });
    let hits: u32 = stats.iter().map(|s| s.prefix_cache_hits).sum();
    let computed: u32 = stats.iter().map(|s| s.num_batched_tokens).sum();
    assert_eq!(hits, 192, "12 full blocks of the shared prefix should hit");
    assert!(
        computed <= 12 + 12,
        "only the new blocks are computed: {computed} tokens"
    );

    let mut no_cache = cpu_config(&model);
    no_cache.enable_prefix_caching = false;
    let fresh = tokens(&start(no_cache), vec![greedy(second, 12)]);
    assert_eq!(out, fresh);
}

fn wait_until_idle(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let load = handle.load();
        if load.running == 0 && load.waiting == 0 && load.kv_usage == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "engine not idle: {load:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn aborts_in_every_state_free_every_block() {
    let Some(model) = default_model() else { return };
    let mut config = cpu_config(&model);
    // A small budget keeps requests mid-prefill and waiting for a while.
    config.max_num_batched_tokens = Some(16);
    config.max_num_seqs = Some(4);
    let llm = start(config);
    let handle = llm.handle();
    let ps = prompts(12);
    let mut streams: Vec<_> = ps
        .iter()
        .map(|p| handle.submit(greedy(p.clone(), 64)).unwrap())
        .collect();
    // Let some run, some prefill, some wait.
    futures::executor::block_on(async {
        for s in streams.iter_mut().take(2) {
            s.next_event().await;
        }
    });
    // Drop half (a client disconnecting), abort the other half explicitly.
    let mut aborted = Vec::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(s);
        } else {
            s.abort();
            aborted.push(s);
        }
    }
    wait_until_idle(&handle);
    // n > 1 requests abort too.
    let mut req = greedy(ps[0].clone(), 40);
    req.sampling.n = 3;
    req.sampling.temperature = 1.0;
    let mut s = handle.submit(req).unwrap();
    futures::executor::block_on(async {
        while let Some(ev) = s.next_event().await {
            if matches!(ev, TokenEvent::Token(ref t) if t.index == 2) {
                break;
            }
        }
    });
    drop(s);
    wait_until_idle(&handle);
    drop(aborted);
}
