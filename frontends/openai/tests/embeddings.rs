//! `POST /v1/embeddings` over the scripted engine: input shapes, base64,
//! `dimensions`, usage, and errors in OpenAI's shape.

use kiln_frontend_openai::OpenAiFrontend;
use kiln_http::testing::app::{TestApp, embedding_app, encoder_spec, l2_norm};
use kiln_http::testing::scripted_embedding;
use kiln_protocol::EmbeddingSpec;

const FRONTEND: OpenAiFrontend = OpenAiFrontend;

fn app_with(embedding: Option<EmbeddingSpec>) -> TestApp {
    embedding_app(embedding, Box::new(FRONTEND))
}

#[tokio::test]
async fn every_input_shape_gets_one_normalized_vector() {
    let app = app_with(Some(encoder_spec(vec![])));
    for (input, count) in [
        (r#""hello""#, 1),
        (r#"["hello","world"]"#, 2),
        ("[5,6,7]", 1),
        ("[[5,6],[7]]", 2),
    ] {
        let r = app
            .post_json(
                "/v1/embeddings",
                &format!(r#"{{"model":"m","input":{input}}}"#),
            )
            .await;
        assert_eq!(r.status, 200, "{input}: {}", r.text());
        let body = r.json();
        assert_eq!(body["object"], "list");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), count, "{input}");
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
            assert_eq!(d["embedding"].as_array().unwrap().len(), 8);
            assert!((l2_norm(&d["embedding"]) - 1.0).abs() < 1e-6);
        }
        assert_eq!(
            body["usage"]["prompt_tokens"],
            body["usage"]["total_tokens"]
        );
    }
    let r = app
        .post_json("/v1/embeddings", r#"{"input":[[5,6],[7]]}"#)
        .await;
    assert_eq!(r.json()["usage"]["prompt_tokens"], 3);
}

#[tokio::test]
async fn base64_carries_little_endian_f32() {
    let app = app_with(Some(encoder_spec(vec![])));
    let r = app
        .post_json(
            "/v1/embeddings",
            r#"{"input":[5,6],"encoding_format":"base64"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let raw = scripted_embedding(&[5, 6], 8);
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = raw.iter().map(|x| x * (1.0 / norm)).collect();
    assert_eq!(
        r.json()["data"][0]["embedding"],
        kiln_http::embed::f32_base64(&unit)
    );
}

#[tokio::test]
async fn dimensions_shorten_only_matryoshka_models() {
    let r = app_with(Some(encoder_spec(vec![4, 8])))
        .post_json("/v1/embeddings", r#"{"input":"hello","dimensions":4}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = &r.json()["data"][0]["embedding"];
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert!((l2_norm(v) - 1.0).abs() < 1e-6);
    let r = app_with(Some(encoder_spec(vec![])))
        .post_json("/v1/embeddings", r#"{"input":"hello","dimensions":4}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "dimensions");
}

#[tokio::test]
async fn bad_inputs_are_openai_errors() {
    let app = app_with(Some(encoder_spec(vec![])));
    for (body, param) in [
        (r#"{"input":[]}"#, "input"),
        (r#"{"input":""}"#, "input"),
        (r#"{}"#, "input"),
        (r#"{"input":[{"a":1}]}"#, "input"),
        (
            r#"{"input":"x","encoding_format":"int8"}"#,
            "encoding_format",
        ),
        (
            r#"{"input":"x","truncate_prompt_tokens":5}"#,
            "truncate_prompt_tokens",
        ),
    ] {
        let r = app.post_json("/v1/embeddings", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}");
    }
    let long = format!(r#"{{"input":[{}]}}"#, vec!["5"; 200].join(","));
    let r = app.post_json("/v1/embeddings", &long).await;
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("truncate_prompt_tokens"), "{message}");
    let r = app_with(None)
        .post_json("/v1/embeddings", r#"{"input":"x"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("does not compute embeddings"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn an_encoder_refuses_completions() {
    let r = app_with(Some(encoder_spec(vec![])))
        .post_json("/v1/completions", r#"{"prompt":"hello","max_tokens":2}"#)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("embedding model"), "{}", r.text());
}
