//! The Hugging Face hub's HTTP interface, as far as Kiln uses it:
//!
//! - file list: `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`
//!   (`siblings[].rfilename`, `.size`, `.lfs.sha256`; `sha` is the commit);
//! - file: `GET {endpoint}/{repo}/resolve/{revision}/{file}`, following
//!   redirects, with `Range: bytes=N-` to resume into `<file>.part`.
//!
//! `endpoint` is `$HF_ENDPOINT` or `https://huggingface.co`; `$HF_TOKEN` is
//! sent as a Bearer token (to the endpoint's host only).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::digest::sha256_file;
use crate::error::HubError;
use crate::observe::FetchObserver;
use crate::pip::part_path;
use crate::progress::ProgressMode;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes, when the hub said.
    pub size: Option<u64>,
    /// SHA-256 (lower-case hex) of LFS files.
    pub sha256: Option<String>,
}

/// A repository at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    /// The commit the revision resolved to.
    pub commit: Option<String>,
    /// Every file at that revision.
    pub files: Vec<RepoFile>,
}

#[derive(Deserialize)]
struct ApiModel {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: Option<String>,
    size: Option<u64>,
}

/// Parse the `api/models/.../revision/...` answer.
pub fn parse_repo_info(json: &str) -> Result<RepoInfo, String> {
    let api: ApiModel = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let files = api
        .siblings
        .into_iter()
        .map(|s| {
            let (lfs_sha, lfs_size) = s.lfs.map(|l| (l.sha256, l.size)).unwrap_or((None, None));
            RepoFile {
                path: s.rfilename,
                size: lfs_size.or(s.size),
                sha256: lfs_sha.map(|h| h.to_ascii_lowercase()),
            }
        })
        .collect();
    Ok(RepoInfo {
        commit: api.sha,
        files,
    })
}

/// How often and how patiently to retry a broken download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per file (the first included).
    pub attempts: u32,
    /// Pause before the n-th retry: `n × backoff`.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// What to download and where.
#[derive(Debug, Clone, Copy)]
pub struct DownloadTarget<'a> {
    /// `org/name`.
    pub repo: &'a str,
    /// Branch, tag or commit.
    pub revision: &'a str,
    /// The file (its size and digest are checked when known).
    pub file: &'a RepoFile,
    /// Final path; `<dest>.part` while downloading.
    pub dest: &'a Path,
}

/// What a failed request asked for, to word its error.
#[derive(Debug, Clone, Copy)]
struct Asked<'a> {
    url: &'a str,
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
}

/// A blocking client for one hub endpoint.
#[derive(Debug, Clone)]
pub struct HfClient {
    endpoint: String,
    token: Option<String>,
    retry: RetryPolicy,
    agent: ureq::Agent,
    observer: Option<Arc<dyn FetchObserver>>,
}

/// Percent-encode for a URL path; `/` is kept when `keep_slash`.
fn encode(s: &str, slash: Slash) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && slash == Slash::Keep);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slash {
    Keep,
    Encode,
}

/// The outcome of one HTTP attempt.
enum Attempt {
    Done,
    Retry(String),
}

impl HfClient {
    /// A client for `endpoint` (no trailing `/` needed) with an optional token.
    pub fn new(endpoint: impl Into<String>, token: Option<String>, retry: RetryPolicy) -> HfClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HfClient {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            retry,
            agent,
            observer: None,
        }
    }

    /// The same client, also reporting every download's bytes to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn FetchObserver>) -> HfClient {
        self.observer = Some(observer);
        self
    }

    fn report(&self, file: &RepoFile, completed: u64) {
        if let Some(o) = &self.observer {
            o.bytes(&file.path, file.sha256.as_deref(), file.size, completed);
        }
    }

    /// Base URL requests go to, as given to [`HfClient::new`].
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// URL of the file list.
    pub fn info_url(&self, repo: &str, revision: &str) -> String {
        format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            encode(repo, Slash::Keep),
            encode(revision, Slash::Encode)
        )
    }

    /// URL of one file.
    pub fn file_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            encode(repo, Slash::Keep),
            encode(revision, Slash::Encode),
            encode(file, Slash::Keep)
        )
    }

    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = self.agent.get(url);
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn status_error(
        &self,
        asked: &Asked<'_>,
        resp: &mut ureq::http::Response<ureq::Body>,
    ) -> HubError {
        let Asked {
            url,
            repo,
            revision,
            file,
        } = *asked;
        let status = resp.status().as_u16();
        match status {
            401 | 403 => HubError::Unauthorized {
                repo: repo.to_string(),
                status,
                token_set: self.token.is_some(),
            },
            404 => {
                let code = resp
                    .headers()
                    .get("x-error-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let file = match code {
                    "RepoNotFound" | "RevisionNotFound" => None,
                    _ => file.map(str::to_string),
                };
                HubError::NotFound {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    file,
                }
            }
            _ => {
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                HubError::HttpStatus {
                    url: url.to_string(),
                    status,
                    body: body.chars().take(300).collect(),
                }
            }
        }
    }

    /// The files of `repo` at `revision`.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        let url = self.info_url(repo, revision);
        let mut resp = self.get(&url).call().map_err(|e| network(&url, e))?;
        if !resp.status().is_success() {
            let asked = Asked {
                url: &url,
                repo,
                revision,
                file: None,
            };
            return Err(self.status_error(&asked, &mut resp));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| network(&url, e))?;
        parse_repo_info(&text).map_err(|reason| HubError::Protocol { url, reason })
    }

    /// Fetch a small file completely into memory (a config, an index).
    pub fn fetch_text(&self, repo: &str, revision: &str, file: &str) -> Result<String, HubError> {
        let url = self.file_url(repo, revision, file);
        let mut resp = self.get(&url).call().map_err(|e| network(&url, e))?;
        if !resp.status().is_success() {
            let asked = Asked {
                url: &url,
                repo,
                revision,
                file: Some(file),
            };
            return Err(self.status_error(&asked, &mut resp));
        }
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| network(&url, e))
    }

    /// Download one file, resuming a `.part` left by an earlier attempt and
    /// retrying broken transfers; verifies size and digest, then renames.
    /// Returns the bytes transferred by this call.
    pub fn download(
        &self,
        target: &DownloadTarget<'_>,
        progress: ProgressMode,
    ) -> Result<u64, HubError> {
        if let Some(parent) = target.dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let part = part_path(target.dest);
        let bar = progress.bytes_bar(&target.file.path, target.file.size);
        tracing::info!(
            file = %target.file.path,
            size = target.file.size.map(crate::cache::human_bytes).unwrap_or_else(|| "unknown size".into()),
            "downloading from {}",
            target.repo
        );
        let mut transferred = 0u64;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.attempt(target, &part, &bar, &mut transferred)? {
                Attempt::Done => break,
                Attempt::Retry(reason) if attempt < self.retry.attempts => {
                    tracing::warn!(file = %target.file.path, attempt, "download interrupted ({reason}); resuming");
                    std::thread::sleep(self.retry.backoff * attempt);
                }
                Attempt::Retry(reason) => {
                    bar.abandon();
                    return Err(HubError::Network {
                        url: self.file_url(target.repo, target.revision, &target.file.path),
                        reason: format!("{reason} (gave up after {attempt} attempts)"),
                    });
                }
            }
        }
        bar.finish_and_clear();
        if let Some(o) = &self.observer {
            o.stage("verifying sha256 digest");
        }
        verify_download(&part, target.file)?;
        std::fs::rename(&part, target.dest).map_err(|e| HubError::io(target.dest, e))?;
        Ok(transferred)
    }

    fn attempt(
        &self,
        target: &DownloadTarget<'_>,
        part: &Path,
        bar: &indicatif::ProgressBar,
        transferred: &mut u64,
    ) -> Result<Attempt, HubError> {
        let url = self.file_url(target.repo, target.revision, &target.file.path);
        let mut offset = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = target.file.size {
            if offset == size {
                return Ok(Attempt::Done);
            }
            if offset > size {
                remove(part)?;
                offset = 0;
            }
        }
        let mut req = self.get(&url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(e.to_string())),
        };
        let status = resp.status().as_u16();
        let append = match status {
            206 => true,
            200 => false,
            416 => {
                remove(part)?;
                return Ok(Attempt::Retry(
                    "the server rejected the resume offset; starting over".into(),
                ));
            }
            500..=599 => return Ok(Attempt::Retry(format!("HTTP {status}"))),
            _ => {
                let asked = Asked {
                    url: &url,
                    repo: target.repo,
                    revision: target.revision,
                    file: Some(&target.file.path),
                };
                return Err(self.status_error(&asked, &mut resp));
            }
        };
        if append && content_range_start(&resp) != Some(offset) {
            remove(part)?;
            return Ok(Attempt::Retry(
                "the server resumed at the wrong offset; starting over".into(),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .map_err(|e| HubError::io(part, e))?;
        bar.set_position(if append { offset } else { 0 });
        let mut position = if append { offset } else { 0 };
        self.report(target.file, position);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    out.flush().map_err(|e| HubError::io(part, e))?;
                    return Ok(Attempt::Retry(e.to_string()));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| HubError::io(part, e))?;
            *transferred += n as u64;
            bar.inc(n as u64);
            position += n as u64;
            self.report(target.file, position);
        }
        out.flush().map_err(|e| HubError::io(part, e))?;
        let have = std::fs::metadata(part)
            .map_err(|e| HubError::io(part, e))?
            .len();
        match target.file.size {
            Some(size) if have < size => Ok(Attempt::Retry(format!(
                "the connection closed after {have} of {size} bytes"
            ))),
            _ => Ok(Attempt::Done),
        }
    }
}

fn remove(p: &Path) -> Result<(), HubError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(HubError::io(p, e)),
    }
}

/// The first byte of a `Content-Range: bytes a-b/c` header.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

fn verify_download(part: &Path, file: &RepoFile) -> Result<(), HubError> {
    let size = std::fs::metadata(part)
        .map_err(|e| HubError::io(part, e))?
        .len();
    if let Some(expected) = file.size.filter(|&e| e != size) {
        remove(part)?;
        return Err(HubError::Integrity {
            path: part.to_path_buf(),
            what: "size",
            expected: expected.to_string(),
            actual: size.to_string(),
        });
    }
    if let Some(expected) = &file.sha256 {
        let actual = sha256_file(part)?;
        if &actual != expected {
            remove(part)?;
            return Err(HubError::Integrity {
                path: part.to_path_buf(),
                what: "sha256",
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(())
}

fn network(url: &str, e: ureq::Error) -> HubError {
    HubError::Network {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded() {
        let c = HfClient::new("http://h:1/", None, RetryPolicy::default());
        assert_eq!(
            c.info_url("org/m", "refs/pr/1"),
            "http://h:1/api/models/org/m/revision/refs%2Fpr%2F1?blobs=true"
        );
        assert_eq!(
            c.file_url("org/m", "main", "sub dir/a+b.gguf"),
            "http://h:1/org/m/resolve/main/sub%20dir/a%2Bb.gguf"
        );
    }

    #[test]
    fn repo_info_prefers_lfs_sizes_and_digests() {
        let json = r#"{"id":"org/m","sha":"abc","siblings":[
            {"rfilename":"config.json","size":10},
            {"rfilename":"model.safetensors","size":135,"lfs":{"sha256":"AB12","size":1000,"pointerSize":135}}]}"#;
        let info = parse_repo_info(json).unwrap();
        assert_eq!(info.commit.as_deref(), Some("abc"));
        assert_eq!(
            info.files[0],
            RepoFile {
                path: "config.json".into(),
                size: Some(10),
                sha256: None
            }
        );
        assert_eq!(info.files[1].size, Some(1000));
        assert_eq!(info.files[1].sha256.as_deref(), Some("ab12"));
        assert!(parse_repo_info("[").is_err());
    }
}
