//! `/v1/models`, `/version`, `/v1/server_info`: pure builders over `EngineInfo`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_engine_api::EngineInfo;
use kiln_http::HttpConfig;
use serde_json::{Value, json};

use crate::routes::AppState;

/// `GET /v1/models` body: one card per served name.
pub fn models_list(info: &EngineInfo) -> Value {
    let data: Vec<Value> = info
        .served_model_names
        .iter()
        .map(|name| {
            json!({
                "id": name,
                "object": "model",
                "created": info.created,
                "owned_by": "kiln",
                "root": info.model_path,
                "parent": null,
                "max_model_len": info.max_model_len,
                "permission": [{
                    "id": format!("modelperm-{name}"),
                    "object": "model_permission",
                    "created": info.created,
                    "allow_create_engine": false,
                    "allow_sampling": true,
                    "allow_logprobs": true,
                    "allow_search_indices": false,
                    "allow_view": true,
                    "allow_fine_tuning": false,
                    "organization": "*",
                    "group": null,
                    "is_blocking": false,
                }],
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}

/// `GET /v1/server_info` body: the engine's effective settings and the HTTP layer's.
pub fn server_info(info: &EngineInfo, config: &HttpConfig, waiting_limit: Option<u32>) -> Value {
    json!({
        "engine": info,
        "http": {
            "api_key_required": config.api_key.as_deref().is_some_and(|k| !k.is_empty()),
            "body_limit_bytes": config.body_limit_bytes,
            "max_waiting_requests": waiting_limit,
            "retry_after_seconds": config.retry_after_seconds,
            "frontends": config.enabled_frontends,
        },
    })
}

/// `GET /v1/models`.
pub async fn list(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(models_list(st.handle.info()))
}

/// `GET /version`.
pub async fn version(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"version": st.handle.info().version}))
}

/// `GET /v1/server_info`.
pub async fn info(State(st): State<Arc<AppState>>) -> Json<Value> {
    let limit = kiln_http::admission::waiting_limit(&st.handle, &st.config);
    Json(server_info(st.handle.info(), &st.config, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_card_per_served_name() {
        let info = EngineInfo {
            model_id: "a".into(),
            served_model_names: vec!["a".into(), "b".into()],
            max_model_len: 64,
            ..Default::default()
        };
        let v = models_list(&info);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["id"], "b");
        assert_eq!(v["data"][0]["max_model_len"], 64);
    }

    #[test]
    fn server_info_never_shows_the_key() {
        let config = HttpConfig {
            api_key: Some("secret".into()),
            ..Default::default()
        };
        let v = server_info(&EngineInfo::default(), &config, Some(3));
        assert!(!v.to_string().contains("secret"));
        assert_eq!(v["http"]["api_key_required"], true);
        assert_eq!(v["http"]["max_waiting_requests"], 3);
    }
}
