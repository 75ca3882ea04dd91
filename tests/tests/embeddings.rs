//! Embeddings through the whole engine against transformers (fixtures and
//! the script that made them in `tests/fixtures/embeddings/`): a tiny
//! random-weight BERT and the families' tiny Llama (mean and last-token
//! pooling) on token ids, the real all-MiniLM-L6-v2 on text, and a tiny
//! BERT GGUF from llama.cpp's converter on text. Every
//! vector's cosine similarity with the reference is at least 0.9999, and
//! inputs batched together give what they give alone.

use std::path::Path;

use kiln_engine::EngineConfig;
use kiln_protocol::{EmbedRequest, Pooling, PromptInput, finish_embedding};
use kiln_tests::{catalog_model, cosine, cpu_config, embed_all, fixtures, json_ids, start};

const MIN_COSINE: f64 = 0.9999;

fn fixture(name: &str) -> serde_json::Value {
    let path = fixtures().join("embeddings").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn config(model: &Path, pooling: Option<Pooling>) -> EngineConfig {
    let mut c = cpu_config(model);
    c.max_model_len = None;
    c.pooling = pooling;
    c
}

/// Embeds every prompt of `fixture` batched, and checks `key` (the
/// reference vector) per prompt; returns the worst cosine.
fn check_prompts(model: &Path, pooling: Option<Pooling>, fixture_name: &str, key: &str) -> f64 {
    let f = fixture(fixture_name);
    let prompts = f["prompts"].as_array().unwrap();
    let llm = start(config(model, pooling));
    let inputs: Vec<PromptInput> = prompts
        .iter()
        .map(|p| PromptInput::TokenIds(json_ids(&p["ids"])))
        .collect();
    let batched = embed_all(&llm, inputs.clone());
    let mut worst = 1f64;
    for (i, (p, got)) in prompts.iter().zip(&batched).enumerate() {
        let want = floats(&p[key]);
        assert_eq!(got.vector.len(), want.len(), "prompt {i}: dimensions");
        assert_eq!(got.prompt_tokens as usize, json_ids(&p["ids"]).len());
        let c = cosine(&got.vector, &want);
        worst = worst.min(c);
        assert!(
            c >= MIN_COSINE,
            "{fixture_name} {key} prompt {i}: cosine {c}"
        );
        let alone = embed_all(&llm, vec![inputs[i].clone()]);
        assert_eq!(
            alone[0].vector, got.vector,
            "prompt {i}: batched differs from alone"
        );
    }
    eprintln!(
        "{fixture_name} ({key}): worst cosine {worst:.10} (1 - cos = {:.1e})",
        1.0 - worst
    );
    worst
}

#[test]
fn tiny_bert_matches_transformers_mean_pooling() {
    check_prompts(
        &fixtures().join("embeddings/bert"),
        None,
        "bert.json",
        "mean",
    );
}

#[test]
fn tiny_llama_embeds_with_last_token_and_mean_pooling() {
    let model = fixtures().join("families/llama");
    check_prompts(&model, None, "llama.json", "last");
    check_prompts(&model, Some(Pooling::Mean), "llama.json", "mean");
}

#[test]
fn encoders_refuse_generation_and_report_their_spec() {
    let llm = start(config(&fixtures().join("embeddings/bert"), None));
    let handle = llm.handle();
    let spec = handle.info().embedding.clone().expect("an embedding model");
    assert!(!spec.generates);
    assert_eq!((spec.dimensions, spec.pooling), (32, Pooling::Mean));
    let e = handle
        .submit(kiln_tests::greedy(vec![5, 6], 4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("embedding model"), "{e}");
    let too_long = PromptInput::TokenIds(vec![5; 65]);
    let e = handle
        .embed(EmbedRequest {
            input: too_long.clone(),
            truncate: false,
            tag: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 64") && e.contains("truncation"), "{e}");
    let cut = futures::executor::block_on(
        handle
            .embed(EmbedRequest {
                input: too_long,
                truncate: true,
                tag: None,
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cut.prompt_tokens, 64);
    let e = handle
        .embed(EmbedRequest {
            input: PromptInput::TokenIds(vec![]),
            truncate: false,
            tag: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    let Some(file) = catalog_model("all-minilm-l6-v2", "model.safetensors") else {
        return;
    };
    let dir = file.parent().unwrap();
    let f = fixture("minilm.json");
    let sentences = f["sentences"].as_array().unwrap();
    let llm = start(config(dir, None));
    let spec = llm.handle().info().embedding.clone().unwrap();
    assert_eq!(
        (spec.dimensions, spec.pooling, spec.normalize),
        (384, Pooling::Mean, true)
    );
    for s in sentences {
        let ids = llm
            .handle()
            .tokenize(s["text"].as_str().unwrap(), true)
            .unwrap();
        assert_eq!(ids, json_ids(&s["ids"]), "{}: tokenization", s["text"]);
    }
    let inputs = sentences
        .iter()
        .map(|s| PromptInput::Text(s["text"].as_str().unwrap().to_string()))
        .collect();
    let mut worst = 1f64;
    for (s, got) in sentences.iter().zip(embed_all(&llm, inputs)) {
        let v = finish_embedding(got.vector, None, true);
        let c = cosine(&v, &floats(&s["embedding"]));
        worst = worst.min(c);
        assert!(c >= MIN_COSINE, "{}: cosine {c}", s["text"]);
    }
    eprintln!(
        "all-MiniLM-L6-v2: worst cosine {worst:.10} (1 - cos = {:.1e})",
        1.0 - worst
    );
}

/// Generation and embeddings of a decoder run in the same steps without
/// changing either's result.
#[test]
fn embeddings_share_steps_with_generation() {
    let f = fixture("llama.json");
    let prompts: Vec<Vec<u32>> = f["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json_ids(&p["ids"]))
        .collect();
    let llm = start(config(&fixtures().join("families/llama"), None));
    let handle = llm.handle();
    let generated_alone = llm.generate(vec![kiln_tests::greedy(prompts[1].clone(), 24)]);
    let embedded_alone = embed_all(&llm, vec![PromptInput::TokenIds(prompts[3].clone())]);
    let stream = handle
        .submit(kiln_tests::greedy(prompts[1].clone(), 24))
        .unwrap();
    let embedding = handle
        .embed(EmbedRequest {
            input: PromptInput::TokenIds(prompts[3].clone()),
            truncate: false,
            tag: None,
        })
        .unwrap();
    let (generated, embedded) = futures::executor::block_on(futures::future::join(
        kiln_engine::llm::collect(stream),
        embedding,
    ));
    let token_ids = |o: &kiln_engine::RequestOutput| o.outputs[0].token_ids.clone();
    assert_eq!(
        token_ids(&generated.unwrap()),
        token_ids(generated_alone[0].as_ref().unwrap())
    );
    assert_eq!(embedded.unwrap().vector, embedded_alone[0].vector);
}

/// A BERT GGUF from llama.cpp's converter (WordPiece vocabulary in its `▁`
/// spelling, F16 weights): Kiln's tokenizer gives transformers' ids for
/// each sentence and the mean-pooled vectors match.
#[test]
fn a_bert_gguf_embeds_text_like_transformers() {
    let f = fixture("bert-wordpiece.json");
    let model = fixtures().join("embeddings/bert-wordpiece.gguf");
    let llm = start(config(&model, Some(Pooling::Mean)));
    let handle = llm.handle();
    let sentences = f["sentences"].as_array().unwrap();
    let inputs: Vec<PromptInput> = sentences
        .iter()
        .map(|s| PromptInput::Text(s["text"].as_str().unwrap().to_string()))
        .collect();
    let got = embed_all(&llm, inputs);
    let mut worst = 1f64;
    for (s, e) in sentences.iter().zip(&got) {
        let text = s["text"].as_str().unwrap();
        let ids = handle.tokenize(text, true).unwrap();
        assert_eq!(ids, json_ids(&s["ids"]), "{text}: token ids");
        let c = cosine(&e.vector, &floats(&s["mean"]));
        worst = worst.min(c);
        assert!(c >= MIN_COSINE, "{text}: cosine {c}");
    }
    eprintln!("BERT GGUF: worst cosine {worst:.10}");
}
