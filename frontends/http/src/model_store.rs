//! The model cache as frontends see it: listing, fetching, removing and
//! naming the models kept on disk beside the one being served.
//!
//! Frontends never depend on `kiln-hub`; the `kiln` binary implements
//! [`ModelStore`] over it and hands it to them in
//! [`HttpConfig::model_store`](crate::HttpConfig::model_store). Every method
//! blocks (disk and network I/O): call them from `spawn_blocking`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// One model in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    /// How to name it: a catalog alias, `org/name[:file]`, or a name given by
    /// [`ModelStore::copy`].
    pub name: String,
    /// The directory or file a server would load.
    pub path: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
    /// Last modification, since the Unix epoch.
    pub modified: Duration,
    /// For a name made by [`ModelStore::copy`]: what it names (a cached
    /// model's name or a path).
    pub copy_of: Option<String>,
}

/// What a fetch reports while it runs, in order: stages and per-file byte
/// counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// A stage without byte counts (`pulling manifest`, `verifying sha256 digest`).
    Status(String),
    /// Bytes of one file: `completed` of `total` (0 when unknown) so far.
    Progress {
        /// The file's name in its source.
        file: String,
        /// Its SHA-256 when the source states it (lower-case hex).
        sha256: Option<String>,
        /// Bytes in the file.
        total: u64,
        /// Bytes present so far.
        completed: u64,
    },
}

/// Where [`ModelStore::pull`] sends its [`PullEvent`]s.
pub type PullReporter = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// Why a store operation failed; each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No such model in the cache or at the source.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (bad name, name taken).
    #[error("{0}")]
    Invalid(String),
    /// The source refused or could not be reached.
    #[error("{0}")]
    Upstream(String),
    /// Local failure (disk, permissions).
    #[error("{0}")]
    Internal(String),
}

/// The model cache.
pub trait ModelStore: Send + Sync + 'static {
    /// Where the cache lives (for messages).
    fn root(&self) -> PathBuf;

    /// Every complete cached model and every name made by `copy`.
    fn list(&self) -> Result<Vec<StoredModel>, StoreError>;

    /// The cached model (or copy) called `name`, if any.
    fn find(&self, name: &str) -> Result<Option<StoredModel>, StoreError> {
        Ok(self.list()?.into_iter().find(|m| m.name == name))
    }

    /// Fetches `name` (an alias or a hub id) into the cache, reporting
    /// progress through `report` (from the calling thread); a model already
    /// cached is checked against its source.
    fn pull(&self, name: &str, report: PullReporter) -> Result<StoredModel, StoreError>;

    /// Removes `name` from the cache (a copy: only the name).
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Records `destination` as another name of `source` (a cached model's
    /// name, or a path such as the served model's).
    fn copy(&self, source: &str, destination: &str) -> Result<(), StoreError>;
}
