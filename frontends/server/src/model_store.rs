//! The model cache for the HTTP frontends: [`kiln_http::ModelStore`] over
//! `kiln-hub`, with the same name resolution as `kiln pull` and `kiln list`.
//! Fetches report their stages and bytes (at most one report per percent of
//! a file) instead of drawing terminal bars.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use kiln_http::{ModelStore, PullEvent, PullReporter, StoreError, StoredModel};
use kiln_hub::{
    Cache, CachedModel, FetchObserver, FetchOptions, FetchPolicy, Hub, HubConfig, HubError,
    ModelSpec, Names, Need, ProgressMode, catalog,
};

/// Bytes between two reports of a file whose size is unknown.
const UNKNOWN_SIZE_REPORT_STEP: u64 = 1 << 20;

/// The cache of a [`HubConfig`].
#[derive(Debug, Clone)]
pub struct HubStore {
    config: HubConfig,
}

impl HubStore {
    /// A store over `config`'s cache; fetches never draw terminal bars.
    pub fn new(mut config: HubConfig) -> HubStore {
        config.progress = ProgressMode::Hidden;
        HubStore { config }
    }

    /// The store of the process environment (`KILN_CACHE`, `HF_ENDPOINT`, ...).
    pub fn from_env() -> Result<HubStore, HubError> {
        Ok(HubStore::new(HubConfig::from_env(ProgressMode::Hidden)?))
    }

    fn cache(&self) -> &Cache {
        &self.config.cache
    }

    fn cached(&self) -> Result<Vec<CachedModel>, StoreError> {
        let models = self.cache().list_cached().map_err(store_error)?;
        Ok(models.into_iter().filter(|m| m.complete).collect())
    }

    fn names(&self) -> Result<Names, StoreError> {
        Names::load(self.cache()).map_err(store_error)
    }
}

/// The file or directory the engine loads for a cached model: a catalog
/// model's GGUF file inside its alias directory, else the listed path.
fn loadable_path(model: &CachedModel) -> PathBuf {
    match catalog::lookup(&model.name) {
        Some(entry) if !entry.is_directory() => model.path.join(entry.file_name),
        _ => model.path.clone(),
    }
}

fn modified(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

fn stored(model: &CachedModel) -> StoredModel {
    let path = loadable_path(model);
    StoredModel {
        name: model.name.clone(),
        modified: modified(&path),
        path,
        bytes: model.bytes,
        copy_of: None,
    }
}

/// A copy's entry: what its target names, under the copy's name.
fn resolve_copy(name: &str, target: &str, cached: &[CachedModel]) -> Option<StoredModel> {
    if let Some(model) = cached.iter().find(|m| m.name == target) {
        return Some(StoredModel {
            name: name.to_string(),
            copy_of: Some(target.to_string()),
            ..stored(model)
        });
    }
    let path = Path::new(target);
    let meta = std::fs::metadata(path).ok()?;
    Some(StoredModel {
        name: name.to_string(),
        path: path.to_path_buf(),
        bytes: if meta.is_file() { meta.len() } else { 0 },
        modified: modified(path),
        copy_of: Some(target.to_string()),
    })
}

fn store_error(e: HubError) -> StoreError {
    let message = e.to_string();
    match e {
        HubError::UnknownModel { .. }
        | HubError::NotFound { .. }
        | HubError::FileNotInRepo { .. }
        | HubError::NoWeights { .. }
        | HubError::NoConfig { .. }
        | HubError::MissingPath { .. } => StoreError::NotFound(message),
        HubError::InvalidRepoId { .. }
        | HubError::AmbiguousGguf { .. }
        | HubError::NotAModelDirectory { .. }
        | HubError::NotAModelFile { .. }
        | HubError::ConfigOnly { .. } => StoreError::Invalid(message),
        HubError::Io { .. } | HubError::NoCacheDirectory => StoreError::Internal(message),
        _ => StoreError::Upstream(message),
    }
}

/// Forwards a fetch's stages and bytes to a [`PullReporter`], at most once
/// per percent of each file.
struct Reporter {
    report: PullReporter,
    /// Per file: the last percent (or, size unknown, byte step) reported.
    last: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl FetchObserver for Reporter {
    fn stage(&self, stage: &str) {
        (self.report)(PullEvent::Status(stage.to_string()));
    }

    fn bytes(&self, file: &str, sha256: Option<&str>, total: Option<u64>, completed: u64) {
        let mark = match total {
            Some(t) if t > 0 => completed.saturating_mul(100) / t,
            _ => completed / UNKNOWN_SIZE_REPORT_STEP,
        };
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if completed > 0 && last.get(file) == Some(&mark) {
                return;
            }
            last.insert(file.to_string(), mark);
        }
        (self.report)(PullEvent::Progress {
            file: file.to_string(),
            sha256: sha256.map(str::to_string),
            total: total.unwrap_or(0),
            completed,
        });
    }
}

impl ModelStore for HubStore {
    fn root(&self) -> PathBuf {
        self.cache().root().to_path_buf()
    }

    fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let cached = self.cached()?;
        let names = self.names()?;
        let mut out: Vec<StoredModel> = cached.iter().map(stored).collect();
        out.extend(
            names
                .iter()
                .filter(|(name, _)| !cached.iter().any(|m| m.name == *name))
                .filter_map(|(name, target)| resolve_copy(name, target, &cached)),
        );
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn pull(&self, name: &str, report: PullReporter) -> Result<StoredModel, StoreError> {
        let spec = ModelSpec::parse(name).map_err(store_error)?;
        if spec.local_path().is_some() {
            return Err(StoreError::Invalid(format!(
                "`{name}` is a local path: serve it with `kiln serve {name}`; pull takes a catalog alias or a hub id `org/name[:FILE.gguf|:QUANT]`"
            )));
        }
        let reporter = Arc::new(Reporter {
            report,
            last: Mutex::new(HashMap::new()),
        });
        let hub = Hub::new(self.config.clone()).with_observer(reporter);
        let options = FetchOptions {
            need: Need::Weights,
            policy: FetchPolicy::Refresh,
            ..FetchOptions::default()
        };
        let resolved = hub.resolve(&spec, &options).map_err(store_error)?;
        let cached = self.cached()?;
        let model = cached
            .iter()
            .find(|m| loadable_path(m) == resolved.path || m.path == resolved.path)
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "{} was fetched but is not listed in the cache {}",
                    resolved.path.display(),
                    self.cache().root().display()
                ))
            })?;
        Ok(stored(model))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let mut names = self.names()?;
        if names.remove(name).is_some() {
            return names.save(self.cache()).map_err(store_error);
        }
        if self
            .cache()
            .remove_cached(name)
            .map_err(store_error)?
            .is_none()
        {
            return Err(StoreError::NotFound(format!(
                "model '{name}' not found in the cache {}",
                self.cache().root().display()
            )));
        }
        let copies: Vec<String> = names
            .iter()
            .filter(|(_, target)| *target == name)
            .map(|(copy, _)| copy.to_string())
            .collect();
        if !copies.is_empty() {
            for copy in &copies {
                names.remove(copy);
            }
            names.save(self.cache()).map_err(store_error)?;
        }
        Ok(())
    }

    fn copy(&self, source: &str, destination: &str) -> Result<(), StoreError> {
        kiln_hub::names::check_name(destination).map_err(|reason| {
            StoreError::Invalid(format!("cannot copy to `{destination}`: {reason}"))
        })?;
        let cached = self.cached()?;
        if cached.iter().any(|m| m.name == destination) {
            return Err(StoreError::Invalid(format!(
                "`{destination}` is a cached model's own name: choose another name"
            )));
        }
        let mut names = self.names()?;
        let target = if let Some(target) = names.get(source) {
            target.to_string()
        } else if cached.iter().any(|m| m.name == source) || Path::new(source).is_absolute() {
            source.to_string()
        } else {
            return Err(StoreError::NotFound(format!(
                "model '{source}' not found in the cache {}",
                self.cache().root().display()
            )));
        };
        if Path::new(&target).is_absolute() && !Path::new(&target).exists() {
            return Err(StoreError::NotFound(format!("{target} does not exist")));
        }
        names.insert(destination, &target);
        names.save(self.cache()).map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> HubStore {
        HubStore::new(HubConfig {
            cache: Cache::new(root),
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            python: kiln_hub::pip::PythonSearch::default(),
            progress: ProgressMode::Hidden,
            retry: kiln_hub::RetryPolicy::default(),
        })
    }

    fn seed_hub_gguf(root: &Path, repo: &str, file: &str) -> PathBuf {
        let cache = Cache::new(root);
        let dir = cache.repo_dir(repo, "main");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), b"GGUF0000").unwrap();
        cache
            .write_marker(
                &dir,
                &kiln_hub::cache::CompleteMarker {
                    repo: repo.into(),
                    revision: "main".into(),
                    commit: None,
                    files: vec![file.into()],
                    entry: file.into(),
                },
            )
            .unwrap();
        dir.join(file)
    }

    #[test]
    fn lists_copies_beside_cached_models_and_deletes_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = seed_hub_gguf(dir.path(), "org/tiny", "t.gguf");
        let s = store(dir.path());
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "org/tiny:t.gguf");
        assert_eq!(listed[0].path, path);
        assert_eq!(listed[0].bytes, 8);

        s.copy("org/tiny:t.gguf", "mine:latest").unwrap();
        let copy = s.find("mine:latest").unwrap().unwrap();
        assert_eq!(copy.path, path);
        assert_eq!(copy.copy_of.as_deref(), Some("org/tiny:t.gguf"));
        assert!(matches!(
            s.copy("nothing", "x"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.copy("mine:latest", "org/tiny:t.gguf"),
            Err(StoreError::Invalid(_))
        ));

        s.delete("mine:latest").unwrap();
        assert!(s.find("mine:latest").unwrap().is_none());
        s.copy("org/tiny:t.gguf", "again").unwrap();
        s.delete("org/tiny:t.gguf").unwrap();
        assert!(!path.exists());
        assert!(s.list().unwrap().is_empty(), "the copy goes with its model");
        assert!(matches!(
            s.delete("org/tiny:t.gguf"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn a_path_can_be_copied_and_pull_refuses_local_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let s = store(&dir.path().join("cache"));
        s.copy(file.to_str().unwrap(), "served-copy").unwrap();
        assert_eq!(s.find("served-copy").unwrap().unwrap().path, file);
        let e = s
            .pull(file.to_str().unwrap(), Arc::new(|_| {}))
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Invalid(ref m) if m.contains("kiln serve")),
            "{e}"
        );
    }

    #[test]
    fn reports_once_per_percent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let r = Reporter {
            report: Arc::new(move |e| sink.lock().unwrap().push(e)),
            last: Mutex::new(HashMap::new()),
        };
        for completed in (0..=1000).step_by(5) {
            r.bytes("f", None, Some(1000), completed);
        }
        let n = seen.lock().unwrap().len();
        assert_eq!(n, 101, "0 % through 100 %");
    }
}
