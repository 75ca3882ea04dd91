//! What a user may name as a model, and how the name is read.
//!
//! In order of precedence:
//! 1. an existing path: a directory holding `config.json` (Hugging Face
//!    layout), a `.gguf` file (any file starting with the GGUF magic), or a
//!    `config.json`-like `*.json` file (only `kiln plan` accepts that);
//! 2. something that is clearly a path (starts with `/`, `./`, `../`, `~` or
//!    ends in `.gguf`/`.json` without a `:`) but does not exist: an error;
//! 3. a catalog alias (case-insensitive), see [`crate::catalog`];
//! 4. a hub id `org/name`, optionally followed by `:FILE.gguf` (one GGUF
//!    file of the repository, a path inside it) or `:TAG` (the one GGUF file
//!    whose name contains `TAG`, case-insensitive, such as `Q4_K_M`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::catalog::{self, CatalogEntry};
use crate::error::HubError;

/// Which GGUF file of a hub repository to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChoice {
    /// A file by its path in the repository (`sub/dir/model.Q4_0.gguf`).
    Exact(String),
    /// The GGUF file whose name contains this tag (`Q4_K_M`).
    QuantTag(String),
}

/// A Hugging Face hub reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `org/name`.
    pub repo: String,
    /// The GGUF file to use; `None`: the safetensors weights, or the only GGUF file.
    pub file: Option<FileChoice>,
}

/// A parsed model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A local Hugging Face model directory (it holds `config.json`).
    Directory(PathBuf),
    /// A local GGUF file.
    GgufFile(PathBuf),
    /// A local `config.json` (enough for `kiln plan`).
    ConfigFile(PathBuf),
    /// A catalog alias.
    Alias(&'static CatalogEntry),
    /// A repository on the Hugging Face hub.
    Hub(HubRef),
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Directory(p) | ModelSpec::GgufFile(p) | ModelSpec::ConfigFile(p) => {
                write!(f, "{}", p.display())
            }
            ModelSpec::Alias(e) => f.write_str(e.alias),
            ModelSpec::Hub(HubRef { repo, file: None }) => f.write_str(repo),
            ModelSpec::Hub(HubRef {
                repo,
                file: Some(FileChoice::Exact(s) | FileChoice::QuantTag(s)),
            }) => write!(f, "{repo}:{s}"),
        }
    }
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

impl ModelSpec {
    /// Parse a model name, expanding `~` with `$HOME`.
    pub fn parse(spec: &str) -> Result<ModelSpec, HubError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ModelSpec::parse_with_home(spec, home.as_deref())
    }

    /// Parse a model name, expanding `~` with `home`.
    pub fn parse_with_home(spec: &str, home: Option<&Path>) -> Result<ModelSpec, HubError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(unknown(spec));
        }
        let path = expand_home(spec, home);
        if path.exists() {
            return classify_existing(path);
        }
        if looks_like_path(spec) {
            return Err(HubError::MissingPath { path });
        }
        if let Some(entry) = catalog::lookup(spec) {
            return Ok(ModelSpec::Alias(entry));
        }
        if spec.contains('/') {
            return parse_hub_ref(spec).map(ModelSpec::Hub);
        }
        Err(unknown(spec))
    }

    /// The local path, for specs that are local.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            ModelSpec::Directory(p) | ModelSpec::GgufFile(p) | ModelSpec::ConfigFile(p) => Some(p),
            ModelSpec::Alias(_) | ModelSpec::Hub(_) => None,
        }
    }
}

fn unknown(spec: &str) -> HubError {
    HubError::UnknownModel {
        spec: spec.to_string(),
        known: catalog::aliases(),
    }
}

fn expand_home(spec: &str, home: Option<&Path>) -> PathBuf {
    match (spec.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if spec == "~" => home
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(spec)),
        _ => PathBuf::from(spec),
    }
}

fn looks_like_path(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    spec.starts_with('/')
        || spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with('~')
        || spec == "."
        || spec == ".."
        || (!spec.contains(':') && (lower.ends_with(".gguf") || lower.ends_with(".json")))
}

fn classify_existing(path: PathBuf) -> Result<ModelSpec, HubError> {
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelSpec::Directory(path));
        }
        return Err(HubError::NotAModelDirectory { path });
    }
    if has_gguf_magic(&path)? {
        return Ok(ModelSpec::GgufFile(path));
    }
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        return Ok(ModelSpec::ConfigFile(path));
    }
    Err(HubError::NotAModelFile { path })
}

fn has_gguf_magic(path: &Path) -> Result<bool, HubError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| HubError::io(path, e))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == GGUF_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(HubError::io(path, e)),
    }
}

/// Parse `org/name`, `org/name:FILE.gguf` or `org/name:TAG`.
pub fn parse_hub_ref(spec: &str) -> Result<HubRef, HubError> {
    let invalid = |reason: String| HubError::InvalidRepoId {
        spec: spec.to_string(),
        reason,
    };
    let (repo, file) = match spec.split_once(':') {
        Some((repo, file)) => (repo, Some(file)),
        None => (spec, None),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 {
        return Err(invalid(
            "expected `org/name` (exactly one `/`), optionally followed by `:FILE.gguf` or `:QUANT`".into(),
        ));
    }
    for part in &parts {
        check_repo_part(part).map_err(&invalid)?;
    }
    let file = match file {
        None => None,
        Some("") => {
            return Err(invalid(
                "nothing after `:`; name a GGUF file or a quantization such as Q4_K_M".into(),
            ));
        }
        Some(f) if f.contains("..") || f.starts_with('/') => {
            return Err(invalid(format!(
                "`{f}` is not a file inside the repository"
            )));
        }
        Some(f) if f.to_ascii_lowercase().ends_with(".gguf") => {
            Some(FileChoice::Exact(f.to_string()))
        }
        Some(f) if f.contains('/') => {
            return Err(invalid(format!(
                "`{f}` is not a .gguf file; only GGUF files can be picked with `:`"
            )));
        }
        Some(tag) => Some(FileChoice::QuantTag(tag.to_string())),
    };
    Ok(HubRef {
        repo: repo.to_string(),
        file,
    })
}

fn check_repo_part(part: &str) -> Result<(), String> {
    if part.is_empty() || part.len() > 96 {
        return Err(format!("`{part}` must have 1 to 96 characters"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{part}` contains `{c}`; allowed are letters, digits, `-`, `_` and `.`"
        ));
    }
    if part.starts_with(['-', '.'])
        || part.ends_with(['-', '.'])
        || part.contains("--")
        || part.contains("..")
    {
        return Err(format!(
            "`{part}` may not start or end with `-`/`.` nor contain `--` or `..`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn local_directory_needs_config_json() {
        let d = tmp();
        let e = ModelSpec::parse(d.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no config.json"), "{e}");
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        assert_eq!(
            ModelSpec::parse(d.path().to_str().unwrap()).unwrap(),
            ModelSpec::Directory(d.path().to_path_buf())
        );
    }

    #[test]
    fn local_files_by_content_and_extension() {
        let d = tmp();
        let g = d.path().join("weights.bin");
        std::fs::write(&g, b"GGUF\x03\0\0\0").unwrap();
        assert_eq!(
            ModelSpec::parse(g.to_str().unwrap()).unwrap(),
            ModelSpec::GgufFile(g)
        );
        let c = d.path().join("config.json");
        std::fs::write(&c, "{}").unwrap();
        assert_eq!(
            ModelSpec::parse(c.to_str().unwrap()).unwrap(),
            ModelSpec::ConfigFile(c)
        );
        let other = d.path().join("notes.txt");
        std::fs::write(&other, "hi").unwrap();
        let e = ModelSpec::parse(other.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, HubError::NotAModelFile { .. }), "{e}");
    }

    #[test]
    fn missing_paths_are_reported_as_missing() {
        for s in ["/nope/model.gguf", "./x", "model.gguf", "~/m.gguf"] {
            let e =
                ModelSpec::parse_with_home(s, Some(Path::new("/nonexistent-home"))).unwrap_err();
            assert!(matches!(e, HubError::MissingPath { .. }), "{s}: {e}");
            assert!(
                e.to_string().starts_with("no such file or directory"),
                "{e}"
            );
        }
    }

    #[test]
    fn tilde_expands_to_home() {
        let d = tmp();
        std::fs::write(d.path().join("m.gguf"), b"GGUF....").unwrap();
        let s = ModelSpec::parse_with_home("~/m.gguf", Some(d.path())).unwrap();
        assert_eq!(s, ModelSpec::GgufFile(d.path().join("m.gguf")));
    }

    #[test]
    fn aliases_and_unknown_names() {
        assert!(matches!(
            ModelSpec::parse("smollm2-135m-instruct").unwrap(),
            ModelSpec::Alias(_)
        ));
        let e = ModelSpec::parse("llama").unwrap_err();
        assert!(e.to_string().contains("smollm2-135m-instruct"), "{e}");
        assert!(e.to_string().contains("org/name"), "{e}");
    }

    #[test]
    fn hub_ids_with_and_without_files() {
        let h = |s: &str| match ModelSpec::parse(s).unwrap() {
            ModelSpec::Hub(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h("HuggingFaceTB/SmolLM2-135M-Instruct").file, None);
        assert_eq!(
            h("TheBloke/Llama-2-7B-GGUF:llama-2-7b.Q4_0.gguf").file,
            Some(FileChoice::Exact("llama-2-7b.Q4_0.gguf".into()))
        );
        assert_eq!(
            h("org/repo:q4_k_m").file,
            Some(FileChoice::QuantTag("q4_k_m".into()))
        );
        assert_eq!(
            h("org/repo:sub/m.GGUF").file,
            Some(FileChoice::Exact("sub/m.GGUF".into()))
        );
        assert_eq!(
            h("org/repo:Q8_0").to_owned(),
            HubRef {
                repo: "org/repo".into(),
                file: Some(FileChoice::QuantTag("Q8_0".into()))
            }
        );
        assert_eq!(
            ModelSpec::parse("org/repo:Q8_0").unwrap().to_string(),
            "org/repo:Q8_0"
        );
    }

    #[test]
    fn bad_hub_ids_say_why() {
        for s in [
            "a/b/c",
            "org/",
            "org/na me",
            "org/-x",
            "org/x:",
            "org/x:../y.gguf",
            "org/x:dir/readme.md",
        ] {
            let e = ModelSpec::parse(s).unwrap_err();
            assert!(matches!(e, HubError::InvalidRepoId { .. }), "{s}: {e}");
        }
    }
}
