//! Every model family through the whole engine, against transformers: tiny
//! random-weight checkpoints of each family (fixtures and the script that
//! made them in `tests/fixtures/families/`), loaded from the Hugging Face
//! directory and from the GGUF llama.cpp's converter made of it. For each
//! form and prompt (the last one longer than any sliding window):
//! - the last-position logits are within 1e-3 of transformers' f32 logits;
//! - the 32-token greedy continuation equals transformers'.

use std::path::{Path, PathBuf};

use kiln_engine::load_model;
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
