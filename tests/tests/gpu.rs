//! GPU end to end (CUDA backend): parity with transformers in bf16 on the
//! same GPU, and batch invariance of greedy decoding. Skipped with a message
//! where the CUDA backend library or a GPU is missing. The reference comes
//! from `tests/gpu/reference.py`, run on the GPU machine first
//! (`KILN_GPU_REFERENCE=/path/reference.json`).

use std::path::{Path, PathBuf};

use kiln_engine::{BackendChoice, EngineConfig, load_model};
use kiln_protocol::step::{ScheduledSeq, StepPlan};
use kiln_tests::{default_model, greedy, start};

fn cuda_config(model: &Path) -> Option<EngineConfig> {
    let exe = std::env::current_exe().ok()?;
    let dirs: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(Path::to_path_buf)
        .collect();
    let mut registry = kiln_plugin_host::BackendRegistry::new();
    if let Err(e) = registry.load_best("cuda", &dirs) {
        eprintln!("skipping: {e}");
        return None;
    }
    let mut c = EngineConfig::new(model);
    c.backend = BackendChoice::Named("cuda".into());
    c.backend_search_paths = dirs;
    c.max_model_len = Some(1024);
    c.gpu_memory_utilization = 0.5;
    Some(c)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

use kiln_tests::json_ids as ids;

#[test]
fn gpu_bf16_matches_transformers_on_the_same_gpu() {
    let Some(reference) = std::env::var_os("KILN_GPU_REFERENCE") else {
        eprintln!(
            "skipping: KILN_GPU_REFERENCE is not set (run tests/gpu/reference.py on the GPU machine)"
        );
        return;
    };
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    for form in ["gguf", "f32_dir"] {
        let model = PathBuf::from(r[form]["path"].as_str().unwrap());
        let Some(config) = cuda_config(&model) else {
            return;
        };
        let cases = r[form]["cases"].as_array().unwrap();
        // Logits of the last prompt position.
        let mut loaded = load_model(&config).expect("load on the GPU");
        let mut cosines = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let prompt = ids(&c["prompt_ids"]);
            let plan = StepPlan {
                step_id: i as u64,
                dropped: if i > 0 { vec![i as u64] } else { vec![] },
                block_copies: vec![],
                seqs: vec![ScheduledSeq {
                    seq_id: i as u64 + 1,
                    token_ids: prompt.clone(),
                    num_computed_tokens: 0,
                    table_keep: 0,
                    new_blocks: (0..prompt.len().div_ceil(16) as u32).collect(),
                    num_samples: 1,
                    ..ScheduledSeq::default()
                }],
            };
            let ours = loaded.runner.execute(&plan, &[]).expect("forward").logits;
            let want: Vec<f32> = c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            cosines.push(cosine(&ours, &want));
        }
        drop(loaded);
        // Greedy tokens through the full engine.
        let llm = start(config);
        let outs = llm.generate(
            cases
                .iter()
                .map(|c| greedy(ids(&c["prompt_ids"]), 16))
                .collect(),
        );
        let mut matches = 0;
        for ((c, o), cos) in cases.iter().zip(&outs).zip(&cosines) {
            let got = &o.as_ref().unwrap().outputs[0].token_ids;
            let want = ids(&c["greedy16"]);
            let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            eprintln!(
                "{form} {:>12}: {same:2}/16 greedy tokens match, logits cosine {cos:.6}",
                c["name"].as_str().unwrap()
            );
            matches += usize::from(same == 16);
        }
        eprintln!(
            "{form}: {matches}/{} prompts match for 16 tokens",
            cases.len()
        );
        assert!(
            matches >= 8,
            "{form}: only {matches} of {} prompts match for 16 tokens",
            cases.len()
        );
        for cos in &cosines {
            assert!(*cos >= 0.999, "{form}: logits cosine {cos} < 0.999");
        }
    }
}

#[test]
fn gpu_greedy_is_the_same_alone_and_in_a_batch_of_32() {
    let Some(model) = default_model() else { return };
    let Some(config) = cuda_config(&model) else {
        return;
    };
    let llm = start(config);
    let bases = kiln_tests::parity_prompts();
    let prompts: Vec<Vec<u32>> = (0..32)
        .map(|i| {
            let b = &bases[i % bases.len()];
            let mut p = b[..(b.len() * (4 + i % 4) / 7).max(1)].to_vec();
            p.push(300 + i as u32);
            p
        })
        .collect();
    let batch: Vec<Vec<u32>> = llm
        .generate(prompts.iter().map(|p| greedy(p.clone(), 24)).collect())
        .into_iter()
        .map(|o| o.unwrap().outputs[0].token_ids.clone())
        .collect();
    let mut same = 0;
    for (i, p) in prompts.iter().enumerate() {
        let alone = llm
            .generate(vec![greedy(p.clone(), 24)])
            .remove(0)
            .unwrap()
            .outputs[0]
            .token_ids
            .clone();
        if alone == batch[i] {
            same += 1;
        } else {
            eprintln!("request {i}: alone {alone:?} vs batch {:?}", batch[i]);
        }
    }
    eprintln!("{same}/32 requests identical alone and in the batch");
    assert_eq!(same, 32);
}
