//! What a fetch reports to a caller that shows progress itself (a server
//! streaming it to a client) rather than through terminal bars.

/// Receives a fetch's stages and byte counts, from the fetching thread.
pub trait FetchObserver: Send + Sync + std::fmt::Debug {
    /// A stage without byte counts: `pulling manifest`, `verifying sha256 digest`.
    fn stage(&self, stage: &str);

    /// `completed` of `total` bytes (`None`: unknown size) of `file` are in
    /// place; `sha256` is the file's digest when the source states it.
    /// Called when a file starts, as bytes arrive, and when it is complete.
    fn bytes(&self, file: &str, sha256: Option<&str>, total: Option<u64>, completed: u64);
}
