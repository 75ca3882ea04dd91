//! TEI's `POST /embed` over the scripted engine.

use kiln_frontend_tgi::TgiFrontend;
use kiln_http::testing::app::{TestApp, embedding_app, encoder_spec, l2_norm};
use kiln_protocol::EmbeddingSpec;

const FRONTEND: TgiFrontend = TgiFrontend;

fn app_with(embedding: Option<EmbeddingSpec>) -> TestApp {
    embedding_app(embedding, Box::new(FRONTEND))
}

#[tokio::test]
async fn embed_answers_a_list_of_vectors() {
    let app = app_with(Some(encoder_spec(vec![])));
    let r = app.post_json("/embed", r#"{"inputs":["a","b","c"]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let vectors = r.json();
    assert_eq!(vectors.as_array().unwrap().len(), 3);
    assert!((l2_norm(&vectors[0]) - 1.0).abs() < 1e-6);
    let raw = app
        .post_json("/embed", r#"{"inputs":"a","normalize":false}"#)
        .await
        .json();
    assert!(l2_norm(&raw[0]) > 1.5);
}

#[tokio::test]
async fn errors_are_tgi_validation_errors() {
    let app = app_with(Some(encoder_spec(vec![])));
    for body in [
        r#"{"inputs":[]}"#,
        r#"{"inputs":""}"#,
        r#"{"inputs":"a","dimensions":2}"#,
    ] {
        let r = app.post_json("/embed", body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_eq!(r.json()["error_type"], "validation", "{body}");
    }
    let long = format!(r#"{{"inputs":"{}"}}"#, "word ".repeat(200));
    let r = app.post_json("/embed", &long).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains(r#"\"truncate\": true"#), "{}", r.text());
    let cut = format!(r#"{{"inputs":"{}","truncate":true}}"#, "word ".repeat(200));
    assert_eq!(app.post_json("/embed", &cut).await.status, 200);
}
