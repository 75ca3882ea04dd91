//! Every model family through the whole engine, against transformers: tiny
//! random-weight checkpoints of each family (fixtures and the script that
//! made them in `tests/fixtures/families/`), loaded from the Hugging Face
//! directory and from the GGUF llama.cpp's converter made of it. For each
//! form and prompt (the last one longer than any sliding window):
//! - the last-position logits are within 1e-3 of transformers' f32 logits;
//! - the 32-token greedy continuation equals transformers'.
//!
//! The mixtures of experts (Mixtral, Qwen2-MoE with its shared expert,
//! Qwen3-MoE, and Qwen3-MoE with a dense layer) must be among them, and one
//! of them must give each of 32 concurrent requests the tokens it gets alone.

use std::path::{Path, PathBuf};

use kiln_engine::load_model;
use kiln_protocol::SamplingParams;
use kiln_tests::{
    ReferencePrompt, cpu_config, fixture_jsons, fixtures, greedy, last_logits, max_abs_diff,
    reference_prompts, start,
};

struct Fixture {
    family: String,
    forms: Vec<PathBuf>,
    prompts: Vec<ReferencePrompt>,
    /// The context to serve it with, when it is not 256 (LongRoPE picks
    /// its factors from it).
    max_model_len: Option<usize>,
}

fn fixture_files() -> Vec<Fixture> {
    let dir = fixtures().join("families");
    fixture_jsons("families")
        .into_iter()
        .map(|(_, v)| {
            let family = v["family"].as_str().unwrap().to_string();
            let mut forms = vec![dir.join(&family)];
            if let Some(g) = v["gguf"].as_str() {
                forms.push(dir.join(g));
            }
            Fixture {
                family,
                forms,
                prompts: reference_prompts(&v["prompts"]),
                max_model_len: v["max_model_len"].as_u64().map(|n| n as usize),
            }
        })
        .collect()
}

fn config(f: &Fixture, model: &Path) -> kiln_engine::EngineConfig {
    let mut c = cpu_config(model);
    c.max_model_len = Some(f.max_model_len.unwrap_or(256));
    c
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Families named in `KILN_FAMILIES` (comma-separated), else all.
fn selected(f: &Fixture) -> bool {
    std::env::var("KILN_FAMILIES")
        .map(|v| v.split(',').any(|x| x == f.family))
        .unwrap_or(true)
}

#[test]
fn last_position_logits_match_transformers() {
    let mut failures = Vec::new();
    for f in fixture_files().into_iter().filter(selected) {
        for form in &f.forms {
            let mut loaded = match load_model(&config(&f, form)) {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{}: load: {e}", name(form)));
                    continue;
                }
            };
            let mut worst = 0f32;
            for (i, p) in f.prompts.iter().enumerate() {
                let ours = last_logits(&mut loaded.runner, &p.ids, i as u64 + 1);
                assert_eq!(ours.len(), p.logits.len(), "{}: vocabulary", name(form));
                let max = max_abs_diff(&ours, &p.logits);
                worst = worst.max(max);
            }
            eprintln!("{:>16}: max |Δlogit| = {worst:.2e}", name(form));
            if worst > 1e-3 {
                failures.push(format!("{}: max |Δlogit| {worst} > 1e-3", name(form)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greedy_continuations_match_transformers_for_32_tokens() {
    let mut failures = Vec::new();
    for f in fixture_files().into_iter().filter(selected) {
        for form in &f.forms {
            let llm = start(config(&f, form));
            let outs = llm.generate(
                f.prompts
                    .iter()
                    .map(|p| greedy(p.ids.clone(), 32))
                    .collect(),
            );
            let mut matched = 0;
            for (i, (p, out)) in f.prompts.iter().zip(outs).enumerate() {
                let got = out.expect("generation").outputs[0].token_ids.clone();
                if got == p.greedy {
                    matched += 1;
                } else {
                    let same = got
                        .iter()
                        .zip(&p.greedy)
                        .take_while(|(a, b)| a == b)
                        .count();
                    failures.push(format!(
                        "{} prompt {i}: first {same} of 32 tokens match",
                        name(form)
                    ));
                }
            }
            eprintln!(
                "{:>16}: {matched} of {} prompts match transformers for 32 tokens",
                name(form),
                f.prompts.len()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The mixture-of-experts fixtures and whether each has a GGUF form
/// (llama.cpp's Qwen3-MoE cannot hold a dense layer).
const MOE_FIXTURES: [(&str, bool); 4] = [
    ("mixtral", true),
    ("qwen2_moe", true),
    ("qwen3_moe", true),
    ("qwen3_moe_mlp_only", false),
];

#[test]
fn mixture_of_experts_fixtures_are_present_in_both_forms() {
    let all = fixture_files();
    for (family, has_gguf) in MOE_FIXTURES {
        let f = all
            .iter()
            .find(|f| f.family == family)
            .unwrap_or_else(|| panic!("tests/fixtures/families/{family}.json is missing"));
        assert_eq!(f.forms.len(), 1 + usize::from(has_gguf), "{family}");
        for form in &f.forms {
            assert!(form.exists(), "{} is missing", form.display());
        }
    }
}

/// 32 prompts of mixed lengths made from a fixture's prompts: cut, with a
/// few distinct tokens appended.
fn varied_prompts(bases: &[ReferencePrompt], count: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|i| {
            let base = &bases[i % bases.len()].ids;
            let cut = (base.len() * (3 + i % 5) / 8).max(1);
            let mut p = base[..cut].to_vec();
            p.extend((0..(i % 7) as u32).map(|k| 3 + (17 * k + 5 * i as u32) % 500));
            p
        })
        .collect()
}

#[test]
fn a_mixture_of_experts_gives_32_concurrent_requests_the_tokens_each_gets_alone() {
    let f = fixture_files()
        .into_iter()
        .find(|f| f.family == "qwen2_moe")
        .expect("tests/fixtures/families/qwen2_moe.json is missing");
    let llm = start(config(&f, &f.forms[0]));
    let prompts = varied_prompts(&f.prompts, 32);
    let seeded = |ids: Vec<u32>, seed: u64| {
        let mut r = greedy(ids, 16);
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..Default::default()
        };
        r
    };
    let tokens = |reqs| -> Vec<Vec<u32>> {
        llm.generate(reqs)
            .into_iter()
            .map(|r| r.expect("generation").outputs[0].token_ids.clone())
            .collect()
    };
    let batch_greedy = tokens(prompts.iter().map(|p| greedy(p.clone(), 16)).collect());
    let batch_seeded = tokens(
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| seeded(p.clone(), 1000 + i as u64))
            .collect(),
    );
    for (i, p) in prompts.iter().enumerate() {
        let alone = tokens(vec![greedy(p.clone(), 16)]);
        assert_eq!(
            alone[0], batch_greedy[i],
            "greedy request {i} differs alone and in the batch"
        );
        let alone = tokens(vec![seeded(p.clone(), 1000 + i as u64)]);
        assert_eq!(
            alone[0], batch_seeded[i],
            "seeded request {i} differs alone and in the batch"
        );
    }
}
