//! `POST /api/embed` and `/api/embeddings` over the scripted engine.

use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::testing::app::{TestApp, embedding_app, encoder_spec, l2_norm};
use kiln_protocol::EmbeddingSpec;

const FRONTEND: OllamaFrontend = OllamaFrontend;

fn app_with(embedding: Option<EmbeddingSpec>) -> TestApp {
    embedding_app(embedding, Box::new(FRONTEND))
}

#[tokio::test]
async fn embed_answers_normalized_vectors_with_counts() {
    let app = app_with(Some(encoder_spec(vec![])));
    let r = app
        .post_json(
            "/api/embed",
            r#"{"model":"scripted-model","input":["hello","world"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["model"], "scripted-model");
    let vectors = body["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert!(vectors.iter().all(|v| (l2_norm(v) - 1.0).abs() < 1e-6));
    assert!(body["prompt_eval_count"].as_u64().unwrap() >= 2);
    assert!(body["total_duration"].is_u64() && body["load_duration"].is_u64());
}

#[tokio::test]
async fn legacy_embeddings_are_not_normalized() {
    let app = app_with(Some(encoder_spec(vec![])));
    let r = app
        .post_json(
            "/api/embeddings",
            r#"{"model":"scripted-model","prompt":"hello"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &r.json()["embedding"];
    assert_eq!(got.as_array().unwrap().len(), 8);
    // The scripted vector's values are 1..=7, as pooled.
    assert!(l2_norm(got) > 2.0, "{got}");
    let all_whole = got
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.as_f64().unwrap().fract() == 0.0);
    assert!(all_whole, "{got}");
}

#[tokio::test]
async fn errors_are_ollama_shaped() {
    let app = app_with(Some(encoder_spec(vec![])));
    for body in [
        r#"{"model":"scripted-model","input":[]}"#,
        r#"{"model":"scripted-model","input":""}"#,
        r#"{"model":"scripted-model","input":"x","dimensions":4}"#,
    ] {
        let r = app.post_json("/api/embed", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{body}");
    }
    let long = format!(
        r#"{{"model":"scripted-model","input":"{}","truncate":false}}"#,
        "word ".repeat(200)
    );
    let r = app.post_json("/api/embed", &long).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("truncate"), "{}", r.text());
    let cut = long.replace(r#""truncate":false"#, r#""truncate":true"#);
    assert_eq!(app.post_json("/api/embed", &cut).await.status, 200);
    let r = app
        .post_json("/api/embed", r#"{"model":"nope","input":"x"}"#)
        .await;
    assert_eq!(r.status, 404);
}
