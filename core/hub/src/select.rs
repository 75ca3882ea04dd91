//! Which files of a hub repository Kiln downloads (pure logic).
//!
//! - A chosen GGUF file (`org/name:FILE.gguf` or `org/name:TAG`): that file only
//!   (a GGUF file carries its config, tokenizer and chat template).
//! - Otherwise, when the repository has `*.safetensors` at its root: the
//!   metadata files ([`METADATA_FILES`] that exist) plus the weight files:
//!   the shards named by `model.safetensors.index.json`, else
//!   `model.safetensors`, else every root-level `*.safetensors`.
//! - Otherwise the repository's only GGUF file; several are an error that
//!   lists them.
//!
//! Sub-directories (`original/`, `onnx/`), PyTorch `.bin` files and other
//! formats are never downloaded.

use crate::error::HubError;
use crate::hf::RepoFile;
use crate::spec::FileChoice;

/// Config, tokenizer and template files fetched with safetensors weights.
pub const METADATA_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// The safetensors shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// What a fetch loads in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The revision directory (Hugging Face layout).
    Directory,
    /// One GGUF file (path inside the repository).
    Gguf(String),
}

fn is_root(path: &str) -> bool {
    !path.contains('/')
}

fn is_gguf(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".gguf")
}

fn is_safetensors(path: &str) -> bool {
    path.ends_with(".safetensors")
}

/// GGUF files of the repository (projector files of vision models excluded).
pub fn gguf_files(files: &[RepoFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.path.clone())
        .filter(|p| is_gguf(p) && !p.to_ascii_lowercase().contains("mmproj"))
        .collect()
}

/// Whether the repository has safetensors weights at its root.
pub fn has_safetensors(files: &[RepoFile]) -> bool {
    files
        .iter()
        .any(|f| is_root(&f.path) && is_safetensors(&f.path))
}

/// Pick the GGUF file a [`FileChoice`] names.
pub fn choose_gguf(
    repo: &str,
    revision: &str,
    files: &[RepoFile],
    choice: &FileChoice,
) -> Result<String, HubError> {
    let ggufs = gguf_files(files);
    let not_found = |file: String| HubError::FileNotInRepo {
        repo: repo.to_string(),
        revision: revision.to_string(),
        file,
        candidates: ggufs.clone(),
    };
    match choice {
        FileChoice::Exact(name) => files
            .iter()
            .find(|f| &f.path == name)
            .map(|f| f.path.clone())
            .ok_or_else(|| not_found(name.clone())),
        FileChoice::QuantTag(tag) => {
            let tag = tag.to_ascii_lowercase();
            let matching: Vec<String> = ggufs
                .iter()
                .filter(|p| {
                    p.rsplit('/')
                        .next()
                        .unwrap_or(p)
                        .to_ascii_lowercase()
                        .contains(&tag)
                })
                .cloned()
                .collect();
            match matching.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(not_found(format!("*{tag}*.gguf"))),
                _ => Err(HubError::AmbiguousGguf {
                    repo: repo.to_string(),
                    ggufs: matching,
                }),
            }
        }
    }
}

/// The first phase of a full download: metadata files (and the shard index),
/// and what the fetch will load.
pub fn plan_metadata(repo: &str, files: &[RepoFile]) -> Result<(Vec<String>, Entry), HubError> {
    if has_safetensors(files) {
        let mut wanted: Vec<String> = METADATA_FILES
            .iter()
            .chain(std::iter::once(&INDEX_FILE))
            .filter(|m| files.iter().any(|f| f.path == **m))
            .map(|m| m.to_string())
            .collect();
        if !wanted.iter().any(|w| w == "config.json") {
            return Err(HubError::NoConfig {
                repo: repo.to_string(),
            });
        }
        wanted.dedup();
        return Ok((wanted, Entry::Directory));
    }
    let ggufs = gguf_files(files);
    match ggufs.as_slice() {
        [one] => Ok((Vec::new(), Entry::Gguf(one.clone()))),
        [] => Err(HubError::NoWeights {
            repo: repo.to_string(),
            files: files.iter().map(|f| f.path.clone()).collect(),
        }),
        _ => Err(HubError::AmbiguousGguf {
            repo: repo.to_string(),
            ggufs,
        }),
    }
}

/// The safetensors weight files, given the index's text when there is one.
pub fn weight_files(files: &[RepoFile], index_json: Option<&str>) -> Result<Vec<String>, String> {
    if let Some(text) = index_json {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("{INDEX_FILE} is not valid JSON: {e}"))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| format!("{INDEX_FILE} has no weight_map"))?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        if let Some(missing) = shards.iter().find(|s| !files.iter().any(|f| &f.path == *s)) {
            return Err(format!(
                "{INDEX_FILE} names {missing}, which the repository does not have"
            ));
        }
        return Ok(shards);
    }
    if files.iter().any(|f| f.path == "model.safetensors") {
        return Ok(vec!["model.safetensors".to_string()]);
    }
    Ok(files
        .iter()
        .filter(|f| is_root(&f.path) && is_safetensors(&f.path))
        .map(|f| f.path.clone())
        .collect())
}

/// Total size of the named files (`None` when a size is unknown).
pub fn total_size(files: &[RepoFile], names: &[String]) -> Option<u64> {
    names
        .iter()
        .map(|n| files.iter().find(|f| &f.path == n).and_then(|f| f.size))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<RepoFile> {
        names
            .iter()
            .map(|n| RepoFile {
                path: n.to_string(),
                size: Some(n.len() as u64),
                sha256: None,
            })
            .collect()
    }

    #[test]
    fn safetensors_repo_takes_metadata_then_indexed_shards() {
        let f = files(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "consolidated.safetensors",
            "original/consolidated.00.pth",
            "pytorch_model.bin",
        ]);
        let (meta, entry) = plan_metadata("o/m", &f).unwrap();
        assert_eq!(entry, Entry::Directory);
        assert_eq!(
            meta,
            [
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                INDEX_FILE
            ]
        );
        let index = r#"{"metadata":{"total_size":9},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
        let w = weight_files(&f, Some(index)).unwrap();
        assert_eq!(
            w,
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert_eq!(total_size(&f, &w), Some(64));
        assert!(weight_files(&f, Some(r#"{"weight_map":{"a":"gone.safetensors"}}"#)).is_err());
    }

    #[test]
    fn single_file_and_unindexed_weights() {
        let f = files(&["config.json", "model.safetensors", "other.safetensors"]);
        assert_eq!(weight_files(&f, None).unwrap(), ["model.safetensors"]);
        let f = files(&["config.json", "a.safetensors", "sub/b.safetensors"]);
        assert_eq!(weight_files(&f, None).unwrap(), ["a.safetensors"]);
    }

    #[test]
    fn gguf_repos() {
        let one = files(&["README.md", "m.Q4_0.gguf", "mmproj-f16.gguf"]);
        assert_eq!(
            plan_metadata("o/m", &one).unwrap(),
            (vec![], Entry::Gguf("m.Q4_0.gguf".into()))
        );
        let many = files(&["m.Q4_0.gguf", "m.Q4_K_M.gguf", "m.Q8_0.gguf"]);
        let e = plan_metadata("o/m", &many).unwrap_err();
        assert!(
            e.to_string().contains("o/m:FILE.gguf") && e.to_string().contains("m.Q8_0.gguf"),
            "{e}"
        );
        let tag = |t: &str| choose_gguf("o/m", "main", &many, &FileChoice::QuantTag(t.into()));
        assert_eq!(tag("q4_k_m").unwrap(), "m.Q4_K_M.gguf");
        assert!(matches!(tag("Q4"), Err(HubError::AmbiguousGguf { .. })));
        assert!(matches!(tag("Q2_K"), Err(HubError::FileNotInRepo { .. })));
        let exact = choose_gguf(
            "o/m",
            "main",
            &many,
            &FileChoice::Exact("m.Q8_0.gguf".into()),
        )
        .unwrap();
        assert_eq!(exact, "m.Q8_0.gguf");
        let e = choose_gguf("o/m", "main", &many, &FileChoice::Exact("x.gguf".into())).unwrap_err();
        assert!(e.to_string().contains("m.Q4_0.gguf"), "{e}");
    }

    #[test]
    fn nothing_loadable() {
        let e = plan_metadata("o/m", &files(&["README.md", "pytorch_model.bin"])).unwrap_err();
        assert!(matches!(e, HubError::NoWeights { .. }), "{e}");
        let e = plan_metadata("o/m", &files(&["model.safetensors"])).unwrap_err();
        assert!(matches!(e, HubError::NoConfig { .. }), "{e}");
    }
}
