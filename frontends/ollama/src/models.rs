//! `/api/tags`, `/api/show`, `/api/ps`, `/api/version`: pure builders over `EngineInfo`.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use kiln_engine_api::EngineInfo;
use kiln_http::StoredModel;
use kiln_http::time::rfc3339_seconds;
use serde_json::{Value, json};

use crate::convert::tagged;
use crate::manage::CachedEntry;

/// `8.0B`, `135M`, `900K`: Ollama's parameter-size label.
pub fn parameter_size(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{}K", n / 1_000),
        1_000_000..1_000_000_000 => format!("{}M", n / 1_000_000),
        _ => format!("{:.1}B", n as f64 / 1e9),
    }
}

/// A stable 64-hex-digit identifier of the served model (from its path; not a
/// file checksum: hashing multi-gigabyte weights at start-up is not worth it).
pub fn model_digest(info: &EngineInfo) -> String {
    (0u8..4)
        .map(|salt| {
            let mut h = std::hash::DefaultHasher::new();
            (salt, &info.model_path, &info.model_id).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The `details` object.
pub fn details(info: &EngineInfo) -> Value {
    json!({
        "parent_model": "",
        "format": info.format,
        "family": info.family,
        "families": [info.family],
        "parameter_size": parameter_size(info.num_parameters),
        "quantization_level": info.quantization.clone().unwrap_or_else(|| info.dtype.to_uppercase()),
    })
}

/// `GET /api/tags`: one entry per served name.
pub fn tags(info: &EngineInfo) -> Value {
    tags_with_cache(info, &[], &[])
}

/// A stable 64-hex-digit identifier of a cached model, from its path.
pub fn path_digest(path: &Path) -> String {
    (0u8..4)
        .map(|salt| {
            let mut h = std::hash::DefaultHasher::new();
            (salt, path).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The `details` of a cached model that is not loaded: only what its files
/// say without reading them (the format); `parent_model` is what a copy names.
pub fn cached_details(model: &StoredModel) -> Value {
    let format = if model.path.extension().is_some_and(|e| e == "gguf") {
        "gguf"
    } else {
        "safetensors"
    };
    json!({
        "parent_model": model.copy_of.clone().unwrap_or_default(),
        "format": format,
        "family": "",
        "families": null,
        "parameter_size": "",
        "quantization_level": "",
    })
}

/// `GET /api/tags` with the cache: the served model under each served name
/// and each of `copies`, then every cached model and copy not already
/// listed (those naming the served model's files described as served).
/// Which one is loaded is `/api/ps`'s answer, as in Ollama.
pub fn tags_with_cache(info: &EngineInfo, copies: &[String], cached: &[CachedEntry]) -> Value {
    let modified_at = rfc3339_seconds(Duration::from_secs(info.created));
    let served_entry = |name: &str| {
        let name = tagged(name);
        json!({
            "name": name,
            "model": name,
            "modified_at": modified_at,
            "size": info.weights_bytes,
            "digest": model_digest(info),
            "details": details(info),
        })
    };
    let mut models: Vec<Value> = info
        .served_model_names
        .iter()
        .chain(copies)
        .map(|n| served_entry(n))
        .collect();
    let listed = |models: &[Value], name: &str| models.iter().any(|m| m["name"] == tagged(name));
    for CachedEntry { model: m, served } in cached {
        if listed(&models, &m.name) {
            continue;
        }
        let entry = if *served {
            served_entry(&m.name)
        } else {
            let name = tagged(&m.name);
            json!({
                "name": name,
                "model": name,
                "modified_at": rfc3339_seconds(Duration::from_secs(m.modified.as_secs())),
                "size": m.bytes,
                "digest": path_digest(&m.path),
                "details": cached_details(m),
            })
        };
        models.push(entry);
    }
    json!({"models": models})
}

/// Width Ollama pads parameter names to in `/api/show`'s `parameters`.
const PARAMETER_NAME_WIDTH: usize = 30;

/// The model's parameters as `(name, value)`, values written as in a
/// Modelfile (strings quoted): the context length and one `stop` per
/// end-of-sequence token text.
fn parameter_pairs(info: &EngineInfo, stops: &[String]) -> Vec<(&'static str, String)> {
    let mut pairs = vec![("num_ctx", info.max_model_len.to_string())];
    for stop in stops {
        pairs.push(("stop", Value::from(stop.as_str()).to_string()));
    }
    pairs
}

/// `POST /api/show`; `model_info` is always present, and beside the GGUF-style
/// keys it holds `kiln.weight_bytes_by_format` (stored bytes per tensor
/// format, e.g. `{"Q4_K": …, "Q6_K": …, "F32": …}`). `stops` are the texts
/// of the end-of-sequence tokens. `parameters` is laid out as Ollama does
/// (names padded to 30 columns); `modelfile` holds `FROM`, `TEMPLATE` (a
/// Jinja chat template) and `PARAMETER` lines.
pub fn show(info: &EngineInfo, stops: &[String]) -> Value {
    let pairs = parameter_pairs(info, stops);
    let parameters: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k:<PARAMETER_NAME_WIDTH$} {v}"))
        .collect();
    let mut modelfile = format!(
        "# Modelfile of the model Kiln serves\n\nFROM {}\n",
        info.model_path
    );
    if let Some(template) = &info.chat_template {
        modelfile.push_str(&format!(
            "# a Jinja chat template\nTEMPLATE \"\"\"{template}\"\"\"\n"
        ));
    }
    for (k, v) in &pairs {
        modelfile.push_str(&format!("PARAMETER {k} {v}\n"));
    }
    let mut model_info = info.model_info.clone();
    let by_format: serde_json::Map<String, Value> = info
        .weights_by_format
        .iter()
        .map(|f| (f.format.clone(), f.bytes.into()))
        .collect();
    model_info.insert("kiln.weight_bytes_by_format".into(), by_format.into());
    json!({
        "license": "",
        "modelfile": modelfile,
        "parameters": parameters.join("\n"),
        "template": info.chat_template.clone().unwrap_or_default(),
        "details": details(info),
        "model_info": model_info,
        "capabilities": capabilities(info),
        "modified_at": rfc3339_seconds(Duration::from_secs(info.created)),
    })
}

/// What the model can do, in Ollama's words.
fn capabilities(info: &EngineInfo) -> Vec<&'static str> {
    match &info.embedding {
        Some(spec) if !spec.generates => vec!["embedding"],
        Some(_) => vec!["completion", "embedding"],
        None => vec!["completion"],
    }
}

/// `GET /api/ps`: the model stays loaded while the server runs.
pub fn ps(info: &EngineInfo, now: Duration) -> Value {
    let on_device = info.backend != "cpu" && info.backend != "scripted";
    let size = info.weights_bytes + info.kv_cache_bytes;
    let expires = now + Duration::from_secs(100 * 365 * 24 * 3600);
    let models: Vec<Value> = info
        .served_model_names
        .iter()
        .map(|name| {
            let name = tagged(name);
            json!({
                "name": name,
                "model": name,
                "size": size,
                "digest": model_digest(info),
                "details": details(info),
                "expires_at": rfc3339_seconds(expires),
                "size_vram": if on_device { size } else { 0 },
                "context_length": info.max_model_len,
            })
        })
        .collect();
    json!({"models": models})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sizes() {
        assert_eq!(parameter_size(134_515_008), "134M");
        assert_eq!(parameter_size(8_030_261_248), "8.0B");
        assert_eq!(parameter_size(999), "999");
    }

    #[test]
    fn digest_is_stable_hex() {
        let info = EngineInfo {
            model_path: "/m.gguf".into(),
            ..Default::default()
        };
        let d = model_digest(&info);
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(d, model_digest(&info));
    }

    #[test]
    fn show_reports_weight_bytes_per_format() {
        let info = EngineInfo {
            weights_by_format: vec![kiln_protocol::FormatBytes {
                format: "Q4_K".into(),
                tensors: 169,
                bytes: 900,
            }],
            ..Default::default()
        };
        let v = show(&info, &[]);
        assert_eq!(
            v["model_info"]["kiln.weight_bytes_by_format"],
            json!({"Q4_K": 900})
        );
    }

    #[test]
    fn show_always_has_model_info() {
        let v = show(&EngineInfo::default(), &[]);
        assert!(v.get("model_info").is_some());
        assert_eq!(v["capabilities"], json!(["completion"]));
    }

    #[test]
    fn show_parameters_are_laid_out_as_ollama() {
        let info = EngineInfo {
            max_model_len: 4096,
            model_path: "/m.gguf".into(),
            ..Default::default()
        };
        let v = show(&info, &["<|im_end|>".to_string()]);
        assert_eq!(
            v["parameters"],
            format!(
                "num_ctx{} 4096\nstop{} \"<|im_end|>\"",
                " ".repeat(23),
                " ".repeat(26)
            )
        );
        let modelfile = v["modelfile"].as_str().unwrap();
        assert!(modelfile.contains("\nFROM /m.gguf\n"), "{modelfile}");
        assert!(modelfile.ends_with("PARAMETER num_ctx 4096\nPARAMETER stop \"<|im_end|>\"\n"));
        assert!(
            !modelfile.contains("TEMPLATE"),
            "no template, no TEMPLATE line"
        );
        assert!(modelfile.starts_with("# Modelfile of the model Kiln serves\n\nFROM /m.gguf\n"));
    }
}
