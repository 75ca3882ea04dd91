//! The hub client against a local HTTP server that imitates the Hugging Face
//! hub's URL layout: file listing, `resolve` downloads with redirects and
//! `Range`, gated repositories, missing repositories and broken transfers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_hub::cache::COMPLETE_MARKER;
use kiln_hub::hf::RetryPolicy;
use kiln_hub::pip::PythonSearch;
use kiln_hub::{
    Cache, FetchOptions, FetchPolicy, Hub, HubConfig, HubError, ModelFormat, ModelSpec, Need,
    ProgressMode,
};
use sha2::Digest;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    /// repo → (file → bytes).
    repos: HashMap<String, Vec<(String, Vec<u8>)>>,
    /// Files whose digest the listing misstates.
    wrong_digest: Vec<String>,
    /// Required Bearer token per repo.
    tokens: HashMap<String, String>,
    /// Files whose next N transfers break half-way.
    interrupt: HashMap<String, u32>,
    seen: Vec<Seen>,
}

struct FakeHub {
    url: String,
    state: Arc<Mutex<State>>,
}

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeHub {
    fn start(state: State) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = shared.clone();
                std::thread::spawn(move || handle(stream, &s));
            }
        });
        FakeHub { url, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    let mut st = state.lock().unwrap();
    st.seen.push(seen.clone());
    let (route, repo, rest) = match route(&path) {
        Some(r) => r,
        None => return respond(&mut stream, "404 Not Found", &[], b"no route"),
    };
    let Some(files) = st.repos.get(&repo).cloned() else {
        return respond(
            &mut stream,
            "401 Unauthorized",
            &[("X-Error-Code", "RepoNotFound".into())],
            b"Repository not found",
        );
    };
    if let Some(token) = st.tokens.get(&repo)
        && seen.auth.as_deref() != Some(&format!("Bearer {token}"))
    {
        return respond(
            &mut stream,
            "401 Unauthorized",
            &[("X-Error-Code", "GatedRepo".into())],
            b"gated",
        );
    }
    match route {
        "api" => {
            if rest != "main" && rest != "v1" {
                return respond(
                    &mut stream,
                    "404 Not Found",
                    &[("X-Error-Code", "RevisionNotFound".into())],
                    b"no rev",
                );
            }
            let siblings: Vec<serde_json::Value> = files
                .iter()
                .map(|(name, bytes)| {
                    let digest = if st.wrong_digest.contains(name) { sha(b"other") } else { sha(bytes) };
                    if name.ends_with(".json") {
                        serde_json::json!({"rfilename": name, "size": bytes.len()})
                    } else {
                        serde_json::json!({"rfilename": name, "size": 134, "lfs": {"sha256": digest, "size": bytes.len(), "pointerSize": 134}})
                    }
                })
                .collect();
            let body = serde_json::json!({"id": repo, "sha": "0123abcd", "siblings": siblings})
                .to_string();
            respond(
                &mut stream,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            )
        }
        "resolve" => {
            // Weights redirect to a "CDN" path, as the real hub does for LFS files.
            let file = rest.split_once('/').map(|(_, f)| f).unwrap_or("");
            if !file.ends_with(".json") {
                let loc = format!("/cdn/{repo}/{file}");
                return respond(&mut stream, "302 Found", &[("Location", loc)], b"");
            }
            serve_file(&mut stream, &mut st, &files, file, seen.range.as_deref())
        }
        _ => serve_file(&mut stream, &mut st, &files, &rest, seen.range.as_deref()),
    }
}

/// `(kind, repo, rest)`: kind `api` (rest = revision), `resolve` (rest = `rev/file`) or `cdn` (rest = file).
fn route(path: &str) -> Option<(&'static str, String, String)> {
    let path = path.split('?').next()?;
    if let Some(p) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = p.splitn(4, '/').collect();
        return Some((
            "api",
            format!("{}/{}", parts[0], parts[1]),
            parts.get(3)?.to_string(),
        ));
    }
    if let Some(p) = path.strip_prefix("/cdn/") {
        let parts: Vec<&str> = p.splitn(3, '/').collect();
        return Some((
            "cdn",
            format!("{}/{}", parts[0], parts[1]),
            parts.get(2)?.to_string(),
        ));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    (parts.get(2) == Some(&"resolve")).then(|| {
        (
            "resolve",
            format!("{}/{}", parts[0], parts[1]),
            parts.get(3).unwrap_or(&"").to_string(),
        )
    })
}

fn serve_file(
    stream: &mut TcpStream,
    st: &mut State,
    files: &[(String, Vec<u8>)],
    file: &str,
    range: Option<&str>,
) {
    let Some((_, bytes)) = files.iter().find(|(n, _)| n == file) else {
        return respond(
            stream,
            "404 Not Found",
            &[("X-Error-Code", "EntryNotFound".into())],
            b"no file",
        );
    };
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let (status, body, mut headers) = match start {
        Some(s) if s >= bytes.len() => {
            return respond(stream, "416 Range Not Satisfiable", &[], b"");
        }
        Some(s) => (
            "206 Partial Content",
            &bytes[s..],
            vec![(
                "Content-Range",
                format!("bytes {s}-{}/{}", bytes.len() - 1, bytes.len()),
            )],
        ),
        None => ("200 OK", &bytes[..], vec![]),
    };
    headers.push(("Accept-Ranges", "bytes".into()));
    let remaining = st.interrupt.get_mut(file).filter(|n| **n > 0);
    if let Some(n) = remaining {
        *n -= 1;
        // Promise the whole body, send half of it, hang up.
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body[..body.len() / 2]);
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    respond(stream, status, &headers, body)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn safetensors_repo() -> Vec<(String, Vec<u8>)> {
    let index = r#"{"metadata":{"total_size":300000},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    vec![
        (
            "config.json".into(),
            br#"{"architectures":["LlamaForCausalLM"]}"#.to_vec(),
        ),
        ("tokenizer.json".into(), b"{}".to_vec()),
        ("README.md".into(), b"# readme".to_vec()),
        (
            "model.safetensors.index.json".into(),
            index.as_bytes().to_vec(),
        ),
        ("model-00001-of-00002.safetensors".into(), bytes(200_000, 1)),
        ("model-00002-of-00002.safetensors".into(), bytes(100_000, 2)),
        ("original/consolidated.00.pth".into(), bytes(10, 3)),
    ]
}

fn gguf_repo() -> Vec<(String, Vec<u8>)> {
    vec![
        ("README.md".into(), b"# readme".to_vec()),
        ("m.Q4_0.gguf".into(), bytes(50_000, 4)),
        ("m.Q8_0.gguf".into(), bytes(90_000, 5)),
    ]
}

fn hub_for(server: &FakeHub, cache: &Path, token: Option<&str>) -> Hub {
    Hub::new(HubConfig {
        cache: Cache::new(cache),
        endpoint: server.url.clone(),
        token: token.map(str::to_string),
        python: PythonSearch::default(),
        progress: ProgressMode::Hidden,
        retry: RetryPolicy {
            attempts: 3,
            backoff: Duration::ZERO,
        },
    })
}

fn spec(s: &str) -> ModelSpec {
    ModelSpec::parse(s).unwrap()
}

fn weights() -> FetchOptions {
    FetchOptions::default()
}

#[test]
fn safetensors_repo_downloads_what_is_needed_then_works_offline() {
    let mut state = State::default();
    state.repos.insert("org/llama".into(), safetensors_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_for(&server, cache.path(), None);
    let m = hub.resolve(&spec("org/llama"), &weights()).unwrap();
    assert_eq!(m.format, ModelFormat::Directory);
    assert_eq!(m.origin.as_deref(), Some("org/llama"));
    assert_eq!(m.path, cache.path().join("hub/org/llama/main"));
    let mut got: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            COMPLETE_MARKER,
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        std::fs::read(m.path.join("model-00002-of-00002.safetensors")).unwrap(),
        bytes(100_000, 2)
    );
    assert!(m.downloaded_bytes >= 300_000);
    // Weights came through the redirect; no request carried a Range header.
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|s| s.path.starts_with("/cdn/org/llama/model-00001"))
    );
    assert!(seen.iter().all(|s| s.range.is_none() && s.auth.is_none()));

    server.clear_seen();
    let again = hub.resolve(&spec("org/llama"), &weights()).unwrap();
    assert_eq!(again.path, m.path);
    assert!(
        server.seen().is_empty(),
        "a complete cached copy needs no network"
    );

    let refreshed = hub
        .resolve(
            &spec("org/llama"),
            &FetchOptions {
                policy: FetchPolicy::Refresh,
                ..weights()
            },
        )
        .unwrap();
    assert_eq!(
        refreshed.downloaded_bytes, 0,
        "unchanged files are not fetched again"
    );
    assert_eq!(
        server.seen().len(),
        1,
        "only the listing: {:?}",
        server.seen()
    );

    let listed = hub.cache().list_cached().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "org/llama");
    assert!(listed[0].complete);
    assert!(listed[0].bytes > 300_000);
}

#[test]
fn gguf_repo_by_quant_tag_and_ambiguity() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_for(&server, cache.path(), None);
    let e = hub.resolve(&spec("org/g"), &weights()).unwrap_err();
    assert!(matches!(e, HubError::AmbiguousGguf { .. }), "{e}");
    let m = hub.resolve(&spec("org/g:q8_0"), &weights()).unwrap();
    assert_eq!(m.format, ModelFormat::Gguf);
    assert_eq!(m.path, cache.path().join("hub/org/g/main/m.Q8_0.gguf"));
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes(90_000, 5));
    assert!(!cache.path().join("hub/org/g/main/m.Q4_0.gguf").exists());
    let listed = hub.cache().list_cached().unwrap();
    assert_eq!(listed[0].name, "org/g:m.Q8_0.gguf");
    // A second file of the same revision is a second cached model.
    let q4 = hub.resolve(&spec("org/g:m.Q4_0.gguf"), &weights()).unwrap();
    assert_eq!(std::fs::read(&q4.path).unwrap(), bytes(50_000, 4));
    server.clear_seen();
    assert_eq!(
        hub.resolve(&spec("org/g:Q8_0"), &weights()).unwrap().path,
        m.path
    );
    assert_eq!(
        hub.resolve(&spec("org/g:q4_0"), &weights()).unwrap().path,
        q4.path
    );
    assert!(server.seen().is_empty(), "both come from the cache");
    let names: Vec<String> = hub
        .cache()
        .list_cached()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["org/g:m.Q4_0.gguf", "org/g:m.Q8_0.gguf"]);
    let e = hub
        .resolve(&spec("org/g:nope.gguf"), &weights())
        .unwrap_err();
    assert!(e.to_string().contains("m.Q4_0.gguf"), "{e}");
}

#[test]
fn gated_repo_needs_a_token() {
    let mut state = State::default();
    state.repos.insert("meta/gated".into(), gguf_repo());
    state.tokens.insert("meta/gated".into(), "hf_secret".into());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let e = hub_for(&server, cache.path(), None)
        .resolve(&spec("meta/gated:Q4_0"), &weights())
        .unwrap_err();
    assert!(
        matches!(
            e,
            HubError::Unauthorized {
                status: 401,
                token_set: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    let e = hub_for(&server, cache.path(), Some("wrong"))
        .resolve(&spec("meta/gated:Q4_0"), &weights())
        .unwrap_err();
    assert!(e.to_string().contains("although HF_TOKEN is set"), "{e}");
    let m = hub_for(&server, cache.path(), Some("hf_secret"))
        .resolve(&spec("meta/gated:Q4_0"), &weights())
        .unwrap();
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes(50_000, 4));
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.auth.as_deref() == Some("Bearer hf_secret"))
    );
}

#[test]
fn missing_repo_revision_and_file() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_for(&server, cache.path(), None);
    let e = hub
        .resolve(
            &spec("org/g:Q4_0"),
            &FetchOptions {
                revision: "v9".into(),
                ..weights()
            },
        )
        .unwrap_err();
    assert!(matches!(e, HubError::NotFound { file: None, .. }), "{e}");
    assert!(
        e.to_string().contains("`v9`") && e.to_string().contains("404"),
        "{e}"
    );
    // The real hub answers 401 for repositories that do not exist.
    let e = hub.resolve(&spec("org/absent"), &weights()).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not exist, or it is private or gated"),
        "{e}"
    );
}

#[test]
fn interrupted_download_resumes_with_range() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    state.interrupt.insert("m.Q4_0.gguf".into(), 2);
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_for(&server, cache.path(), None);
    let m = hub.resolve(&spec("org/g:Q4_0"), &weights()).unwrap();
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes(50_000, 4));
    let ranges: Vec<Option<String>> = server
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/cdn/"))
        .map(|s| s.range)
        .collect();
    // 0 → 25000 bytes, then 25000.. → half of the rest, then the remainder.
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=25000-".into()),
            Some("bytes=37500-".into())
        ]
    );
    assert!(
        !cache
            .path()
            .join("hub/org/g/main/m.Q4_0.gguf.part")
            .exists()
    );
}

#[test]
fn a_part_file_from_an_earlier_run_is_resumed() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("hub/org/g/main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.Q8_0.gguf.part"), &bytes(90_000, 5)[..60_000]).unwrap();
    let m = hub_for(&server, cache.path(), None)
        .resolve(&spec("org/g:Q8_0"), &weights())
        .unwrap();
    assert_eq!(m.downloaded_bytes, 30_000);
    assert_eq!(std::fs::read(&m.path).unwrap(), bytes(90_000, 5));
    assert!(
        server
            .seen()
            .iter()
            .any(|s| s.range.as_deref() == Some("bytes=60000-"))
    );
}

#[test]
fn giving_up_after_repeated_breaks_keeps_the_part_file() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    state.interrupt.insert("m.Q4_0.gguf".into(), 10);
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let e = hub_for(&server, cache.path(), None)
        .resolve(&spec("org/g:Q4_0"), &weights())
        .unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
    assert!(e.to_string().contains("resume"), "{e}");
    assert!(
        cache
            .path()
            .join("hub/org/g/main/m.Q4_0.gguf.part")
            .exists()
    );
}

#[test]
fn digest_mismatch_is_caught_and_the_file_removed() {
    let mut state = State::default();
    state.repos.insert("org/g".into(), gguf_repo());
    state.wrong_digest.push("m.Q4_0.gguf".into());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let e = hub_for(&server, cache.path(), None)
        .resolve(&spec("org/g:Q4_0"), &weights())
        .unwrap_err();
    assert!(
        matches!(e, HubError::Integrity { what: "sha256", .. }),
        "{e}"
    );
    let dir = cache.path().join("hub/org/g/main");
    assert!(!dir.join("m.Q4_0.gguf").exists() && !dir.join("m.Q4_0.gguf.part").exists());
}

#[test]
fn config_only_fetch_for_planning() {
    let mut state = State::default();
    state.repos.insert("org/llama".into(), safetensors_repo());
    state.repos.insert("org/g".into(), gguf_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_for(&server, cache.path(), None);
    let plan = FetchOptions {
        need: Need::ConfigOnly,
        ..weights()
    };
    let m = hub.resolve(&spec("org/llama"), &plan).unwrap();
    assert_eq!(m.format, ModelFormat::ConfigFile);
    assert_eq!(m.path, cache.path().join("hub/org/llama/main/config.json"));
    assert_eq!(m.weight_bytes, Some(300_000));
    assert!(
        !cache
            .path()
            .join("hub/org/llama/main/model-00001-of-00002.safetensors")
            .exists()
    );
    let e = hub.resolve(&spec("org/g:Q4_0"), &plan).unwrap_err();
    assert!(
        matches!(e, HubError::NotCached { .. }) && e.to_string().contains("kiln pull org/g:Q4_0"),
        "{e}"
    );
    let e = hub.resolve(&spec("org/g"), &plan).unwrap_err();
    assert!(matches!(e, HubError::NotCached { .. }), "{e}");
}

#[test]
fn unreachable_endpoint_is_a_network_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        cache: Cache::new(cache.path()),
        endpoint: format!("http://127.0.0.1:{port}"),
        token: None,
        python: PythonSearch::default(),
        progress: ProgressMode::Hidden,
        retry: RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        },
    });
    let e = hub.resolve(&spec("org/x"), &weights()).unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
    assert!(e.to_string().contains("HF_ENDPOINT"), "{e}");
}

/// Records what a fetch reports.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

impl kiln_hub::FetchObserver for Recorder {
    fn stage(&self, stage: &str) {
        self.seen.lock().unwrap().push(stage.to_string());
    }

    fn bytes(&self, file: &str, sha256: Option<&str>, total: Option<u64>, completed: u64) {
        let sha = sha256.map_or(0, str::len);
        self.seen.lock().unwrap().push(format!(
            "{file} {completed}/{} sha{sha}",
            total.unwrap_or(0)
        ));
    }
}

#[test]
fn an_observer_sees_the_stages_and_every_file_reach_its_size() {
    let mut state = State::default();
    state.repos.insert("org/quant".into(), gguf_repo());
    let server = FakeHub::start(state);
    let cache = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let hub = hub_for(&server, cache.path(), None).with_observer(recorder.clone());
    let refresh = FetchOptions {
        policy: FetchPolicy::Refresh,
        ..weights()
    };
    hub.resolve(&spec("org/quant:Q8_0"), &refresh).unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("pulling manifest"));
    assert_eq!(seen[1], "m.Q8_0.gguf 0/90000 sha64");
    assert!(
        seen.contains(&"m.Q8_0.gguf 90000/90000 sha64".to_string()),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("verifying sha256 digest")
    );

    // Fetched again: the file is there already and reported complete.
    recorder.seen.lock().unwrap().clear();
    hub.resolve(&spec("org/quant:Q8_0"), &refresh).unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen, ["pulling manifest", "m.Q8_0.gguf 90000/90000 sha64"]);
}
