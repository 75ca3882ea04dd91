//! Device-side sampling (the CPU backend implements `OP_SAMPLE`) against the
//! host sampler on the real default model: the same greedy tokens with and
//! without penalties and logit bias, the same raw log-probabilities, and
//! `min_tokens` honoured; seeded draws repeat across runs.

use kiln_engine::LLM;
use kiln_protocol::{GenerateRequest, SamplingParams};
use kiln_tests::{cpu_config, default_model, greedy, start};

fn prompts() -> Vec<Vec<u32>> {
    kiln_tests::parity_prompts().into_iter().take(6).collect()
}

fn engines() -> Option<(LLM, LLM)> {
    let model = default_model()?;
    let device = start(cpu_config(&model));
    let mut host = cpu_config(&model);
    host.device_sampling = false;
    Some((device, start(host)))
}

/// A change applied to every request of a variant.
type Tweak = Box<dyn Fn(&mut GenerateRequest)>;

fn requests(f: impl Fn(&mut GenerateRequest)) -> Vec<GenerateRequest> {
    prompts()
        .into_iter()
        .map(|p| {
            let mut r = greedy(p, 12);
            f(&mut r);
            r
        })
        .collect()
}

#[test]
fn device_and_host_draws_agree_on_greedy_tokens_and_logprobs() {
    let Some((device, host)) = engines() else {
        return;
    };
    let variants: Vec<(&str, Tweak)> = vec![
        ("plain", Box::new(|_| {})),
        (
            "penalties",
            Box::new(|r| {
                r.sampling.repetition_penalty = 1.3;
                r.sampling.frequency_penalty = 0.4;
                r.sampling.presence_penalty = 0.3;
            }),
        ),
        (
            "logit bias",
            Box::new(|r| r.sampling.logit_bias = vec![(28, 3.0), (30, -100.0)]),
        ),
        ("logprobs", Box::new(|r| r.sampling.logprobs = Some(5))),
    ];
    for (name, f) in variants {
        let a = device.generate(requests(&f));
        let b = host.generate(requests(&f));
        for (i, (a, b)) in a.into_iter().zip(b).enumerate() {
            let (a, b) = (&a.unwrap().outputs[0], &b.unwrap().outputs[0]);
            assert_eq!(a.token_ids, b.token_ids, "{name}: prompt {i} differs");
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                match (x, y) {
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() < 1e-3, "{name}: logprob {x} vs {y}")
                    }
                    (None, None) => {}
                    _ => panic!("{name}: logprobs present on one path only"),
                }
            }
            for (x, y) in a.top_logprobs.iter().zip(&b.top_logprobs) {
                let ids =
                    |v: &[kiln_protocol::TopLogprob]| v.iter().map(|t| t.id).collect::<Vec<_>>();
                assert_eq!(ids(x), ids(y), "{name}: top alternatives differ");
            }
        }
    }
}

#[test]
fn min_tokens_keeps_eos_away_on_the_device() {
    let Some(model) = default_model() else { return };
    let llm = start(cpu_config(&model));
    // A chat prompt whose greedy answer ends early with EOS.
    let mut r = greedy(prompts()[0].clone(), 40);
    r.stopping.ignore_eos = false;
    let natural = llm.generate(vec![r.clone()]).remove(0).unwrap().outputs[0]
        .token_ids
        .len();
    assert!(
        natural < 40,
        "the fixture's first prompt should end before 40 tokens"
    );
    r.stopping.min_tokens = natural as u32 + 5;
    let forced = llm.generate(vec![r]).remove(0).unwrap().outputs[0]
        .token_ids
        .len();
    assert!(
        forced >= natural + 5,
        "min_tokens {} but got {forced}",
        natural + 5
    );
}

#[test]
fn seeded_device_draws_repeat_and_differ_by_seed() {
    let Some(model) = default_model() else { return };
    let llm = start(cpu_config(&model));
    let with_seed = |seed| {
        requests(move |r| {
            r.sampling = SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                top_k: 40,
                seed: Some(seed),
                ..Default::default()
            }
        })
    };
    let ids = |llm: &LLM, reqs| -> Vec<Vec<u32>> {
        llm.generate(reqs)
            .into_iter()
            .map(|r| r.unwrap().outputs[0].token_ids.clone())
            .collect()
    };
    let a = ids(&llm, with_seed(7));
    assert_eq!(a, ids(&llm, with_seed(7)));
    assert_ne!(a, ids(&llm, with_seed(8)));
}
