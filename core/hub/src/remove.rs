//! Removing a cached model: a catalog model's directory, or the files of
//! one complete hub fetch (those no other fetch of the same revision
//! lists) with its marker; directories left empty go too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cache::{Cache, marker_name};
use crate::error::HubError;

impl Cache {
    /// Removes the cached model `kiln list` calls `name`; returns where it
    /// was, or `None` when nothing is cached under that name.
    pub fn remove_cached(&self, name: &str) -> Result<Option<PathBuf>, HubError> {
        let Some(model) = self.list_cached()?.into_iter().find(|m| m.name == name) else {
            return Ok(None);
        };
        let hub_root = self.root().join("hub");
        match model.path.strip_prefix(&hub_root) {
            Ok(relative) => self.remove_hub_entry(&hub_root, relative)?,
            Err(_) => remove_dir_all(&model.path)?,
        }
        Ok(Some(model.path))
    }

    /// `relative`: `org/name/revision[/entry]` under `hub_root`.
    fn remove_hub_entry(&self, hub_root: &Path, relative: &Path) -> Result<(), HubError> {
        let parts: Vec<_> = relative.components().collect();
        if parts.len() < 3 {
            return Ok(());
        }
        let revision_dir: PathBuf = hub_root.join(parts[..3].iter().collect::<PathBuf>());
        let entry = match parts.len() {
            3 => ".".to_string(),
            _ => parts[3..]
                .iter()
                .collect::<PathBuf>()
                .to_string_lossy()
                .into_owned(),
        };
        let markers = self.read_markers(&revision_dir);
        let Some(marker) = markers.iter().find(|m| m.entry == entry) else {
            // An incomplete fetch: nothing in the directory is whole.
            remove_dir_all(&revision_dir)?;
            return prune_empty(&revision_dir, hub_root);
        };
        let kept: BTreeSet<&String> = markers
            .iter()
            .filter(|m| m.entry != entry)
            .flat_map(|m| &m.files)
            .collect();
        for file in marker.files.iter().filter(|f| !kept.contains(f)) {
            remove_file(&revision_dir.join(file))?;
        }
        remove_file(&revision_dir.join(marker_name(&entry)))?;
        if markers.len() == 1 {
            remove_dir_all(&revision_dir)?;
        }
        prune_empty(&revision_dir, hub_root)
    }
}

fn remove_file(path: &Path) -> Result<(), HubError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HubError::io(path, e)),
        _ => Ok(()),
    }
}

fn remove_dir_all(path: &Path) -> Result<(), HubError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HubError::io(path, e)),
        _ => Ok(()),
    }
}

/// Removes `dir` and its parents while they are empty, stopping at `stop`.
fn prune_empty(dir: &Path, stop: &Path) -> Result<(), HubError> {
    let mut current = Some(dir);
    while let Some(d) = current.filter(|d| d.starts_with(stop) && *d != stop) {
        if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_none()) {
            std::fs::remove_dir(d).map_err(|e| HubError::io(d, e))?;
        }
        current = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CompleteMarker;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn removes_an_alias_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        write(&cache.alias_dir("some-alias").join("m.gguf"), b"GGUF");
        assert_eq!(
            cache.remove_cached("some-alias").unwrap(),
            Some(cache.alias_dir("some-alias"))
        );
        assert!(!cache.alias_dir("some-alias").exists());
        assert_eq!(cache.remove_cached("some-alias").unwrap(), None);
    }

    #[test]
    fn removes_one_gguf_fetch_and_keeps_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let rev = cache.repo_dir("org/repo", "main");
        for file in ["a.gguf", "b.gguf"] {
            write(&rev.join(file), b"GGUF");
            let marker = CompleteMarker {
                repo: "org/repo".into(),
                revision: "main".into(),
                commit: None,
                files: vec![file.into()],
                entry: file.into(),
            };
            cache.write_marker(&rev, &marker).unwrap();
        }
        cache.remove_cached("org/repo:a.gguf").unwrap().unwrap();
        assert!(!rev.join("a.gguf").exists());
        assert!(rev.join("b.gguf").exists());
        cache.remove_cached("org/repo:b.gguf").unwrap().unwrap();
        assert!(!dir.path().join("hub").join("org").exists());
    }
}
