//! `/api/pull`, `/api/copy`, `/api/delete` and `/api/tags` over the
//! scripted engine and an in-memory model cache: progress objects in
//! order, error statuses and shapes, and what a request naming a cached
//! model gets when it is or is not the served one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use kiln_frontend_ollama::OllamaFrontend;
use kiln_http::testing::ScriptedConfig;
use kiln_http::testing::app::{TestApp, TestResponse, golden_config};
use kiln_http::{ModelStore, PullEvent, PullReporter, StoreError, StoredModel};
use serde_json::{Value, json};

/// Path of the scripted engine's model.
const SERVED_PATH: &str = "scripted://story";

/// A cache in memory. Pulling `org/<x>` reports a manifest, one file in
/// three steps and a digest check; `refused/<x>` fails after the manifest,
/// `broken/<x>` once its file has started; anything else is unknown.
#[derive(Default)]
struct MemoryStore {
    models: Mutex<BTreeMap<String, StoredModel>>,
}

fn model(name: &str, path: &str, copy_of: Option<&str>) -> StoredModel {
    StoredModel {
        name: name.into(),
        path: PathBuf::from(path),
        bytes: 100,
        modified: Duration::from_secs(1_700_000_000),
        copy_of: copy_of.map(str::to_string),
    }
}

impl MemoryStore {
    fn with(models: &[StoredModel]) -> Arc<MemoryStore> {
        let store = MemoryStore::default();
        for m in models {
            store.lock().insert(m.name.clone(), m.clone());
        }
        Arc::new(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredModel>> {
        self.models.lock().unwrap()
    }
}

impl ModelStore for MemoryStore {
    fn root(&self) -> PathBuf {
        PathBuf::from("/memory")
    }

    fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        Ok(self.lock().values().cloned().collect())
    }

    fn pull(&self, name: &str, report: PullReporter) -> Result<StoredModel, StoreError> {
        if name.starts_with("refused/") {
            report(PullEvent::Status("pulling manifest".into()));
            return Err(StoreError::Upstream(format!("the hub refused {name}")));
        }
        if name.starts_with("broken/") {
            report(PullEvent::Status("pulling manifest".into()));
            report(PullEvent::Progress {
                file: "model.gguf".into(),
                sha256: None,
                total: 100,
                completed: 0,
            });
            return Err(StoreError::Upstream(format!(
                "GET https://hub/{name} failed: connection refused"
            )));
        }
        if !name.starts_with("org/") {
            return Err(StoreError::NotFound(format!("unknown model `{name}`")));
        }
        report(PullEvent::Status("pulling manifest".into()));
        for completed in [0, 50, 100] {
            report(PullEvent::Progress {
                file: "model.gguf".into(),
                sha256: Some("ab12".into()),
                total: 100,
                completed,
            });
        }
        report(PullEvent::Status("verifying sha256 digest".into()));
        let m = model(name, &format!("/memory/{name}/model.gguf"), None);
        self.lock().insert(name.into(), m.clone());
        Ok(m)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("model '{name}' not found")))
    }

    fn copy(&self, source: &str, destination: &str) -> Result<(), StoreError> {
        let target = self
            .lock()
            .get(source)
            .cloned()
            .map(|m| m.path)
            .or_else(|| {
                source
                    .starts_with("scripted://")
                    .then(|| PathBuf::from(source))
            })
            .ok_or_else(|| StoreError::NotFound(format!("model '{source}' not found")))?;
        let m = model(destination, &target.to_string_lossy(), Some(source));
        self.lock().insert(destination.into(), m);
        Ok(())
    }
}

fn app(store: Arc<MemoryStore>) -> TestApp {
    let mut config = golden_config();
    config.model_store = Some(store);
    TestApp::new(
        ScriptedConfig::default(),
        config,
        &[Box::new(OllamaFrontend)],
    )
}

fn lines(r: &TestResponse) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn tag_names(app: &TestApp) -> Vec<String> {
    let r = app.get("/api/tags").await;
    assert_eq!(r.status, 200);
    r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

async fn delete(app: &TestApp, name: &str) -> TestResponse {
    app.request(
        Method::DELETE,
        "/api/delete",
        &[],
        json!({"model": name}).to_string(),
    )
    .await
}

async fn generate(app: &TestApp, model: &str) -> TestResponse {
    app.post_json(
        "/api/generate",
        &json!({"model": model, "prompt": "Once", "stream": false}).to_string(),
    )
    .await
}

#[tokio::test]
async fn pull_streams_progress_then_success() {
    let store = MemoryStore::with(&[]);
    let app = app(store.clone());
    let r = app
        .post_json("/api/pull", r#"{"model": "hf.co/org/tiny:latest"}"#)
        .await;
    let lines = lines(&r);
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "pulling manifest",
            "downloading model.gguf",
            "downloading model.gguf",
            "downloading model.gguf",
            "verifying sha256 digest",
            "writing manifest",
            "success"
        ]
    );
    assert_eq!(
        lines[2],
        json!({"status": "downloading model.gguf", "digest": "sha256:ab12", "total": 100, "completed": 50})
    );
    assert!(
        store.lock().contains_key("org/tiny"),
        "Ollama's decorations are dropped"
    );
    let tags = app.get("/api/tags").await.json();
    let pulled = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "org/tiny:latest")
        .expect("the pulled model is listed");
    for key in ["model", "modified_at", "size", "digest", "details"] {
        assert!(pulled.get(key).is_some(), "{key} in {pulled}");
    }
    assert_eq!(pulled["details"]["format"], "gguf");
    assert_eq!(pulled["size"], 100);
}

#[tokio::test]
async fn pull_without_streaming_answers_once() {
    let app = app(MemoryStore::with(&[]));
    let r = app
        .post_json("/api/pull", r#"{"name": "org/tiny", "stream": false}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"status": "success"}));
    let r = app
        .post_json("/api/pull", r#"{"model": "nowhere", "stream": false}"#)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn pull_errors_have_statuses_before_the_stream_and_error_lines_after() {
    let app = app(MemoryStore::with(&[]));
    let r = app.post_json("/api/pull", r#"{"model": "nowhere"}"#).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "unknown model `nowhere`"}));

    let r = app
        .post_json("/api/pull", r#"{"model": "refused/x"}"#)
        .await;
    assert_eq!(r.status, 502, "no bytes yet: an error status");
    assert_eq!(r.json(), json!({"error": "the hub refused refused/x"}));

    let r = app.post_json("/api/pull", r#"{"model": "broken/x"}"#).await;
    let lines = lines(&r);
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    assert_eq!(lines[1]["completed"], 0);
    let last = lines.last().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{last}"
    );

    let r = app.post_json("/api/pull", r#"{"stream": true}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "model is required"}));
}

#[tokio::test]
async fn a_cached_model_that_is_not_loaded_says_how_to_serve_it() {
    let store = MemoryStore::with(&[model("org/other", "/memory/other.gguf", None)]);
    let app = app(store);
    let r = generate(&app, "org/other:latest").await;
    assert_eq!(r.status, 400);
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains("not loaded"), "{message}");
    assert!(message.contains("kiln serve org/other"), "{message}");
    let r = app
        .post_json("/api/show", r#"{"model": "org/other"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(generate(&app, "never-heard-of").await.status, 404);
}

#[tokio::test]
async fn a_copy_of_the_served_model_is_served_listed_and_deletable() {
    let store = MemoryStore::with(&[]);
    let app = app(store.clone());
    let r = app
        .post_json(
            "/api/copy",
            r#"{"source": "scripted-model", "destination": "mine"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(generate(&app, "mine").await.status, 200);
    let tags = tag_names(&app).await;
    assert_eq!(
        tags.iter().filter(|n| *n == "mine:latest").count(),
        1,
        "{tags:?}"
    );
    assert_eq!(
        store.lock()["mine:latest"].path,
        PathBuf::from(SERVED_PATH),
        "the name is recorded in the cache"
    );

    assert_eq!(delete(&app, "mine").await.status, 200);
    assert_eq!(generate(&app, "mine").await.status, 404);
    assert!(!tag_names(&app).await.contains(&"mine:latest".to_string()));
}

#[tokio::test]
async fn a_recorded_name_of_the_served_model_is_served_after_a_restart() {
    let store = MemoryStore::with(&[model("kept:latest", SERVED_PATH, Some(SERVED_PATH))]);
    let app = app(store);
    assert_eq!(generate(&app, "kept").await.status, 200);
}

#[tokio::test]
async fn copy_and_delete_of_cached_models() {
    let store = MemoryStore::with(&[model("org/other", "/memory/other.gguf", None)]);
    let app = app(store.clone());
    let r = app
        .post_json(
            "/api/copy",
            r#"{"source": "org/other", "destination": "alias"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tags = tag_names(&app).await;
    assert!(tags.contains(&"alias:latest".to_string()), "{tags:?}");
    let r = generate(&app, "alias").await;
    assert_eq!(r.status, 400, "a copy of a model not loaded is not served");
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains("`kiln serve org/other`"), "{message}");

    assert_eq!(delete(&app, "org/other").await.status, 200);
    assert!(!store.lock().contains_key("org/other"));
    let r = delete(&app, "org/other").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "model 'org/other' not found"}));
}

#[tokio::test]
async fn the_served_model_cannot_be_deleted() {
    let store = MemoryStore::with(&[model("served-file", SERVED_PATH, None)]);
    let app = app(store);
    for name in ["scripted-model", "kiln-test:latest", "served-file"] {
        let r = delete(&app, name).await;
        assert_eq!(r.status, 409, "{name}");
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            message.contains("restart Kiln with another model"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn copy_needs_both_names_and_an_existing_source() {
    let app = app(MemoryStore::with(&[]));
    let r = app
        .post_json("/api/copy", r#"{"source": "scripted-model"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "destination is required"}));
    let r = app
        .post_json("/api/copy", r#"{"source": "ghost", "destination": "x"}"#)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "model 'ghost' not found"}));
    let r = app
        .post_json(
            "/api/copy",
            r#"{"source": "scripted-model", "destination": "a b"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
}
