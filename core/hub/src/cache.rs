//! The model cache.
//!
//! Root: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
//!
//! ```text
//! <root>/models/<alias>/<file>                   catalog models (e.g. models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf)
//! <root>/hub/<org>/<name>/<revision>/<files>     Hugging Face downloads, one directory per revision
//! <root>/hub/<org>/<name>/<revision>/.kiln-complete.json   written once every file of a directory fetch is in place
//! <root>/hub/<org>/<name>/<revision>/.kiln-complete.<file>.json   the same for one GGUF file (`/` in its path as `--`)
//! <root>/tmp/                                    pip downloads being unpacked (removed afterwards)
//! ```
//!
//! A file being downloaded is `<file>.part` next to its final place; it is
//! renamed only once complete and verified, so a path without `.part` is
//! always whole. A revision containing `/` (`refs/pr/1`) is stored with
//! `--` in place of each `/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::error::HubError;

/// Name of the marker written into a hub revision directory once complete.
pub const COMPLETE_MARKER: &str = ".kiln-complete.json";
/// Suffix of files being downloaded.
pub const PART_SUFFIX: &str = ".part";

/// The cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// What the marker of a complete hub fetch records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteMarker {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for (`main`, a tag, a commit).
    pub revision: String,
    /// The commit the revision pointed to, when the hub said.
    pub commit: Option<String>,
    /// Files fetched, relative to the directory.
    pub files: Vec<String>,
    /// The model to load, relative to the directory: `.` for a Hugging Face
    /// directory, else the GGUF file.
    pub entry: String,
}

/// One cached model, for `kiln list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedModel {
    /// How to name it again: the alias, or `org/name` (with `@revision` when not `main`).
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// Bytes of complete files.
    pub bytes: u64,
    /// Bytes of unfinished `.part` downloads.
    pub partial_bytes: u64,
    /// Complete files.
    pub files: usize,
    /// Whether everything needed is present.
    pub complete: bool,
}

impl Cache {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache named by the process environment.
    pub fn from_env() -> Result<Cache, HubError> {
        Cache::from_vars(|k| std::env::var(k).ok())
    }

    /// The cache named by `KILN_CACHE`, `XDG_CACHE_HOME` or `HOME` as `get` returns them.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Cache, HubError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(dir) = non_empty("KILN_CACHE") {
            return Ok(Cache::new(dir));
        }
        if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
            return Ok(Cache::new(Path::new(&xdg).join("kiln")));
        }
        match non_empty("HOME") {
            Some(home) => Ok(Cache::new(Path::new(&home).join(".cache").join("kiln"))),
            None => Err(HubError::NoCacheDirectory),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of a catalog model.
    pub fn alias_dir(&self, alias: &str) -> PathBuf {
        self.root.join("models").join(alias)
    }

    /// Directory of one revision of a hub repository (`org/name`).
    pub fn repo_dir(&self, repo: &str, revision: &str) -> PathBuf {
        let mut p = self.root.join("hub");
        for part in repo.split('/') {
            p.push(part);
        }
        p.join(revision.replace('/', "--"))
    }

    /// Scratch space for pip downloads.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The complete fetches recorded in a hub revision directory (markers
    /// whose files are all present), sorted by entry.
    pub fn read_markers(&self, dir: &Path) -> Vec<CompleteMarker> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<CompleteMarker> = entries
            .filter_map(|e| e.ok())
            .filter(|e| is_marker_name(&e.file_name().to_string_lossy()))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|text| serde_json::from_str::<CompleteMarker>(&text).ok())
            .filter(|m| m.files.iter().all(|f| dir.join(f).is_file()))
            .collect();
        out.sort_by(|a, b| a.entry.cmp(&b.entry));
        out
    }

    /// Record a complete fetch (atomically), one marker per entry.
    pub fn write_marker(&self, dir: &Path, marker: &CompleteMarker) -> Result<(), HubError> {
        let text = serde_json::to_string_pretty(marker)
            .map_err(|e| HubError::io(dir, std::io::Error::other(e)))?;
        let dest = dir.join(marker_name(&marker.entry));
        let tmp = dir.join(format!("{}{PART_SUFFIX}", marker_name(&marker.entry)));
        std::fs::write(&tmp, text).map_err(|e| HubError::io(&tmp, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| HubError::io(&dest, e))
    }

    /// Every cached model, sorted by name. A missing cache is empty.
    pub fn list_cached(&self) -> Result<Vec<CachedModel>, HubError> {
        let mut out = self.list_aliases()?;
        out.extend(self.list_hub()?);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn list_aliases(&self) -> Result<Vec<CachedModel>, HubError> {
        let mut out = Vec::new();
        for dir in subdirs(&self.root.join("models"))? {
            let name = file_name(&dir);
            let usage = dir_usage(&dir)?;
            let complete = match catalog::lookup(&name) {
                Some(e) => std::iter::once((e.file_name, e.source.size))
                    .chain(e.companions.iter().map(|c| (c.path, c.source.size)))
                    .all(|(path, size)| {
                        std::fs::metadata(dir.join(path)).is_ok_and(|m| m.len() == size)
                    }),
                None => usage.files > 0,
            };
            out.push(usage.into_model(name, dir, complete));
        }
        Ok(out)
    }

    fn list_hub(&self) -> Result<Vec<CachedModel>, HubError> {
        let mut out = Vec::new();
        for org in subdirs(&self.root.join("hub"))? {
            for repo in subdirs(&org)? {
                let repo_id = format!("{}/{}", file_name(&org), file_name(&repo));
                for rev in subdirs(&repo)? {
                    out.extend(self.list_revision(&repo_id, &rev)?);
                }
            }
        }
        Ok(out)
    }

    /// One entry per complete fetch in a revision directory, plus one
    /// incomplete entry for files no fetch accounts for (and `.part` files).
    fn list_revision(&self, repo_id: &str, rev: &Path) -> Result<Vec<CachedModel>, HubError> {
        let markers = self.read_markers(rev);
        let revision = markers
            .first()
            .map(|m| m.revision.clone())
            .unwrap_or_else(|| file_name(rev));
        let base = if revision == "main" {
            repo_id.to_string()
        } else {
            format!("{repo_id}@{revision}")
        };
        let mut out = Vec::new();
        let mut covered = std::collections::BTreeSet::new();
        for m in &markers {
            let bytes = m
                .files
                .iter()
                .filter_map(|f| std::fs::metadata(rev.join(f)).ok())
                .map(|md| md.len())
                .sum();
            covered.extend(m.files.iter().cloned());
            out.push(CachedModel {
                name: if m.entry == "." {
                    base.clone()
                } else {
                    format!("{base}:{}", m.entry)
                },
                path: if m.entry == "." {
                    rev.to_path_buf()
                } else {
                    rev.join(&m.entry)
                },
                bytes,
                partial_bytes: 0,
                files: m.files.len(),
                complete: true,
            });
        }
        let usage = dir_usage(rev)?;
        let covered_bytes: u64 = covered
            .iter()
            .filter_map(|f| std::fs::metadata(rev.join(f)).ok())
            .map(|md| md.len())
            .sum();
        let rest = Usage {
            bytes: usage.bytes.saturating_sub(covered_bytes),
            partial_bytes: usage.partial_bytes,
            files: usage.files.saturating_sub(covered.len()),
        };
        if rest.files > 0 || rest.partial_bytes > 0 || out.is_empty() {
            out.push(rest.into_model(base, rev.to_path_buf(), false));
        }
        Ok(out)
    }
}

/// The marker file of a fetch: `.kiln-complete.json` for a directory,
/// `.kiln-complete.<file with / as -->.json` for one GGUF file.
pub fn marker_name(entry: &str) -> String {
    if entry == "." {
        COMPLETE_MARKER.to_string()
    } else {
        format!(".kiln-complete.{}.json", entry.replace('/', "--"))
    }
}

fn is_marker_name(name: &str) -> bool {
    name.starts_with(".kiln-complete") && name.ends_with(".json")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, HubError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HubError::io(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Default)]
struct Usage {
    bytes: u64,
    partial_bytes: u64,
    files: usize,
}

impl Usage {
    fn into_model(self, name: String, path: PathBuf, complete: bool) -> CachedModel {
        CachedModel {
            name,
            path,
            bytes: self.bytes,
            partial_bytes: self.partial_bytes,
            files: self.files,
            complete,
        }
    }
}

fn dir_usage(dir: &Path) -> Result<Usage, HubError> {
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| HubError::io(&d, e))? {
            let entry = entry.map_err(|e| HubError::io(&d, e))?;
            let meta = entry
                .metadata()
                .map_err(|e| HubError::io(entry.path(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if name.ends_with(PART_SUFFIX) {
                usage.partial_bytes += meta.len();
            } else if !is_marker_name(&name) {
                usage.bytes += meta.len();
                usage.files += 1;
            }
        }
    }
    Ok(usage)
}

/// `94.0 MiB`-style sizes (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn root_from_environment_in_order() {
        let all = [
            ("KILN_CACHE", "/k"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            Cache::from_vars(vars(&all)).unwrap().root(),
            Path::new("/k")
        );
        assert_eq!(
            Cache::from_vars(vars(&all[1..])).unwrap().root(),
            Path::new("/x/kiln")
        );
        assert_eq!(
            Cache::from_vars(vars(&all[2..])).unwrap().root(),
            Path::new("/h/.cache/kiln")
        );
        assert_eq!(
            Cache::from_vars(vars(&[("KILN_CACHE", ""), ("HOME", "/h")]))
                .unwrap()
                .root(),
            Path::new("/h/.cache/kiln")
        );
        assert!(matches!(
            Cache::from_vars(vars(&[])),
            Err(HubError::NoCacheDirectory)
        ));
    }

    #[test]
    fn layout() {
        let c = Cache::new("/c");
        assert_eq!(
            c.alias_dir("smollm2-135m-instruct"),
            Path::new("/c/models/smollm2-135m-instruct")
        );
        assert_eq!(
            c.repo_dir("org/name", "main"),
            Path::new("/c/hub/org/name/main")
        );
        assert_eq!(
            c.repo_dir("org/name", "refs/pr/1"),
            Path::new("/c/hub/org/name/refs--pr--1")
        );
    }

    #[test]
    fn listing_counts_complete_and_partial_files() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        assert!(c.list_cached().unwrap().is_empty());
        let rev = c.repo_dir("org/m", "v1");
        std::fs::create_dir_all(&rev).unwrap();
        std::fs::write(rev.join("config.json"), "{}").unwrap();
        std::fs::write(rev.join("model.safetensors.part"), [0u8; 10]).unwrap();
        let list = c.list_cached().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "org/m@v1");
        assert_eq!(
            (
                list[0].bytes,
                list[0].partial_bytes,
                list[0].files,
                list[0].complete
            ),
            (2, 10, 1, false)
        );
        let marker = CompleteMarker {
            repo: "org/m".into(),
            revision: "v1".into(),
            commit: None,
            files: vec!["config.json".into()],
            entry: ".".into(),
        };
        c.write_marker(&rev, &marker).unwrap();
        assert_eq!(c.read_markers(&rev), std::slice::from_ref(&marker));
        let list = c.list_cached().unwrap();
        assert_eq!(
            list.len(),
            2,
            "the complete fetch and the unfinished download: {list:?}"
        );
        assert!(list[0].complete && list[0].bytes == 2 && list[0].files == 1);
        assert!(!list[1].complete && list[1].partial_bytes == 10);
        std::fs::remove_file(rev.join("model.safetensors.part")).unwrap();
        let gguf = CompleteMarker {
            files: vec!["sub/m.gguf".into()],
            entry: "sub/m.gguf".into(),
            ..marker
        };
        std::fs::create_dir_all(rev.join("sub")).unwrap();
        std::fs::write(rev.join("sub/m.gguf"), [1u8; 7]).unwrap();
        c.write_marker(&rev, &gguf).unwrap();
        assert_eq!(marker_name(&gguf.entry), ".kiln-complete.sub--m.gguf.json");
        let list = c.list_cached().unwrap();
        let names: Vec<(&str, u64, bool)> = list
            .iter()
            .map(|m| (m.name.as_str(), m.bytes, m.complete))
            .collect();
        assert_eq!(
            names,
            [("org/m@v1", 2, true), ("org/m@v1:sub/m.gguf", 7, true)]
        );
        let alias = c.alias_dir("smollm2-135m-instruct");
        std::fs::create_dir_all(&alias).unwrap();
        std::fs::write(alias.join("SmolLM2-135M-Instruct.Q4_1.gguf"), b"short").unwrap();
        let list = c.list_cached().unwrap();
        assert_eq!(list[2].name, "smollm2-135m-instruct");
        assert!(
            !list[2].complete,
            "a file of the wrong size is not complete"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_bytes(24 << 30), "24.0 GiB");
    }
}
