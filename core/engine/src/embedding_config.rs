//! What a served model does with embedding requests: its pooling, whether
//! its vectors are normalized and which shortened lengths it was trained
//! for, from `--pooling`, the sentence-transformers files next to the
//! weights (`modules.json`, `1_Pooling/config.json`) and `config.json`.

use std::path::Path;

use kiln_protocol::{EmbeddingSpec, Pooling};

/// The sentence-transformers facts of a model directory (all absent for a
/// plain checkpoint or a GGUF file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentenceTransformers {
    /// The pooling module's mode.
    pub pooling: Option<Pooling>,
    /// The module list has a `Normalize` step; `None` without `modules.json`.
    pub normalize: Option<bool>,
    /// `sentence_bert_config.json`'s `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// `config.json`'s `matryoshka_dimensions` (or all lengths when it says
    /// `is_matryoshka`), as vLLM reads them.
    pub matryoshka_dimensions: Vec<u32>,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

impl SentenceTransformers {
    /// Read what `dir` holds; a file that is absent or unreadable adds nothing.
    pub fn read(dir: &Path, hidden_size: usize) -> SentenceTransformers {
        let mut st = SentenceTransformers::default();
        if !dir.is_dir() {
            return st;
        }
        let modules = read_json(&dir.join("modules.json"));
        if let Some(list) = modules.as_ref().and_then(|m| m.as_array()) {
            let kind = |m: &serde_json::Value| m["type"].as_str().unwrap_or("").to_string();
            st.normalize = Some(list.iter().any(|m| kind(m).ends_with("Normalize")));
            let pooling_dir = list
                .iter()
                .find(|m| kind(m).ends_with("Pooling"))
                .and_then(|m| m["path"].as_str())
                .unwrap_or("1_Pooling");
            st.pooling = read_json(&dir.join(pooling_dir).join("config.json"))
                .and_then(|c| pooling_mode(&c));
        }
        st.max_seq_length = read_json(&dir.join("sentence_bert_config.json"))
            .and_then(|c| c["max_seq_length"].as_u64())
            .map(|n| n as usize);
        if let Some(config) = read_json(&dir.join("config.json")) {
            if let Some(dims) = config["matryoshka_dimensions"].as_array() {
                st.matryoshka_dimensions = dims
                    .iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as u32)
                    .collect();
            } else if config["is_matryoshka"].as_bool() == Some(true) {
                st.matryoshka_dimensions = vec![hidden_size as u32];
            }
        }
        st
    }
}

fn pooling_mode(c: &serde_json::Value) -> Option<Pooling> {
    let on = |key: &str| c[key].as_bool() == Some(true);
    if on("pooling_mode_mean_tokens") {
        Some(Pooling::Mean)
    } else if on("pooling_mode_cls_token") {
        Some(Pooling::Cls)
    } else if on("pooling_mode_lasttoken") {
        Some(Pooling::Last)
    } else {
        c["pooling_mode"].as_str().and_then(Pooling::parse)
    }
}

/// The embedding behaviour of a model: `--pooling` wins, then the
/// sentence-transformers module, then the family's usual choice (mean for
/// encoders, the last token for decoders). Vectors are normalized when the
/// model's modules say so, and by default when there are none.
pub fn embedding_spec(
    st: &SentenceTransformers,
    pooling_flag: Option<Pooling>,
    hidden_size: usize,
    generates: bool,
) -> EmbeddingSpec {
    let family_default = if generates {
        Pooling::Last
    } else {
        Pooling::Mean
    };
    EmbeddingSpec {
        dimensions: hidden_size as u32,
        pooling: pooling_flag.or(st.pooling).unwrap_or(family_default),
        normalize: st.normalize.unwrap_or(true),
        matryoshka_dimensions: st.matryoshka_dimensions.clone(),
        generates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_transformers_files_decide_pooling_and_normalization() {
        let dir = std::env::temp_dir().join(format!("kiln-st-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"idx":0,"path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length":256}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"matryoshka_dimensions":[8,16]}"#,
        )
        .unwrap();
        let st = SentenceTransformers::read(&dir, 16);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(st.pooling, Some(Pooling::Cls));
        assert_eq!(st.normalize, Some(true));
        assert_eq!(st.max_seq_length, Some(256));
        assert_eq!(st.matryoshka_dimensions, vec![8, 16]);
        let spec = embedding_spec(&st, None, 16, false);
        assert_eq!((spec.pooling, spec.normalize), (Pooling::Cls, true));
        assert_eq!(
            embedding_spec(&st, Some(Pooling::Mean), 16, false).pooling,
            Pooling::Mean
        );
    }

    #[test]
    fn plain_checkpoints_get_the_family_default() {
        let st = SentenceTransformers::default();
        let decoder = embedding_spec(&st, None, 64, true);
        assert_eq!((decoder.pooling, decoder.normalize), (Pooling::Last, true));
        assert_eq!(embedding_spec(&st, None, 64, false).pooling, Pooling::Mean);
    }
}
