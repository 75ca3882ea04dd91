//! `kiln bench serve` against a tiny in-test OpenAI-style server that streams
//! completions as server-sent events, counts tokens on `/tokenize` and can
//! fail some requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::bench::client::{Client, TokenizeRoute};
use kiln::bench::prompts::{Counting, SyntheticSpec, synthetic};
use kiln::bench::{LoadMode, Target, report, run_load};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    /// Prompt token counts of completion requests, by the server's tokenizer.
    prompt_tokens: Vec<usize>,
    bodies: Vec<Value>,
    in_flight_max: usize,
}

struct Options {
    tokenize: bool,
    fail_every: usize,
    first_token_delay: Duration,
    token_delay: Duration,
}

struct FakeServer {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

/// One token per word, two for words longer than five letters, plus a BOS.
fn count_tokens(text: &str) -> usize {
    1 + text
        .split_whitespace()
        .map(|w| if w.len() > 5 { 2 } else { 1 })
        .sum::<usize>()
}

fn start(options: Options) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let options = Arc::new(options);
    let counter = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let shared = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (seen, options, counter, in_flight) = (
                shared.clone(),
                options.clone(),
                counter.clone(),
                in_flight.clone(),
            );
            std::thread::spawn(move || handle(stream, &seen, &options, &counter, &in_flight));
        }
    });
    FakeServer { url, seen }
}

fn respond(stream: &mut TcpStream, status: &str, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn chunk(stream: &mut TcpStream, data: &str) {
    let event = format!("data: {data}\n\n");
    let _ = write!(stream, "{:x}\r\n{event}\r\n", event.len());
    let _ = stream.flush();
}

fn handle(
    mut stream: TcpStream,
    seen: &Mutex<Seen>,
    options: &Options,
    counter: &AtomicUsize,
    in_flight: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/models") => respond(
            &mut stream,
            "200 OK",
            &json!({"object": "list", "data": [{"id": "fake-model"}]}),
        ),
        ("POST", "/tokenize") if options.tokenize => {
            let text = body["prompt"].as_str().unwrap_or("");
            respond(
                &mut stream,
                "200 OK",
                &json!({"count": count_tokens(text), "max_model_len": 4096}),
            )
        }
        ("POST", "/v1/completions") => {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let prompt_tokens = count_tokens(body["prompt"].as_str().unwrap_or(""));
            {
                let mut s = seen.lock().unwrap();
                s.prompt_tokens.push(prompt_tokens);
                s.bodies.push(body.clone());
            }
            if options.fail_every > 0 && n.is_multiple_of(options.fail_every) {
                return respond(
                    &mut stream,
                    "500 Internal Server Error",
                    &json!({"error": {"message": "boom"}}),
                );
            }
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            {
                let mut s = seen.lock().unwrap();
                s.in_flight_max = s.in_flight_max.max(now);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            let max_tokens = body["max_tokens"].as_u64().unwrap_or(1) as usize;
            std::thread::sleep(options.first_token_delay);
            for i in 0..max_tokens {
                if i > 0 {
                    std::thread::sleep(options.token_delay);
                }
                chunk(&mut stream, &json!({"object": "text_completion", "choices": [{"index": 0, "text": format!(" t{i}"), "finish_reason": null}]}).to_string());
            }
            chunk(
                &mut stream,
                &json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}}).to_string(),
            );
            // Out of flight before the client can see the end: it may send
            // its next request the moment it does.
            in_flight.fetch_sub(1, Ordering::SeqCst);
            chunk(&mut stream, "[DONE]");
            let _ = write!(stream, "0\r\n\r\n");
        }
        _ => respond(&mut stream, "404 Not Found", &json!({"error": "no route"})),
    }
}

fn fast() -> Options {
    Options {
        tokenize: true,
        fail_every: 0,
        first_token_delay: Duration::from_millis(20),
        token_delay: Duration::from_millis(2),
    }
}

#[test]
fn exact_prompt_lengths_and_latency_measurements() {
    let server = start(fast());
    let client = Client::new(&server.url, None, Duration::from_secs(30));
    assert_eq!(client.first_model().unwrap(), "fake-model");
    assert_eq!(
        client.probe_tokenizer("fake-model"),
        Some(TokenizeRoute::Tokenize)
    );
    let spec = SyntheticSpec {
        num_prompts: 12,
        input_len: 40,
        output_len: 6,
        seed: 3,
    };
    let requests = synthetic(
        &client,
        "fake-model",
        Counting::Server(TokenizeRoute::Tokenize),
        &spec,
    )
    .unwrap();
    assert_eq!(requests.len(), 12);
    for r in &requests {
        assert!(
            r.input_tokens == 40 || r.input_tokens == 39,
            "{}",
            r.input_tokens
        );
        assert_eq!(r.input_tokens, count_tokens(&r.prompt));
    }
    assert!(
        requests.iter().filter(|r| r.input_tokens == 40).count() >= 6,
        "most prompts hit the length exactly"
    );
    assert_ne!(requests[0].prompt, requests[1].prompt);
    let again = synthetic(
        &client,
        "fake-model",
        Counting::Server(TokenizeRoute::Tokenize),
        &spec,
    )
    .unwrap();
    assert_eq!(again, requests, "prompts are a function of the seed");

    let target = Target {
        client: &client,
        model: "fake-model",
    };
    let outcome = run_load(target, &requests, LoadMode::Concurrency(4), 0);
    let s = report::summarize(&outcome);
    assert_eq!((s.completed, s.failed), (12, 0));
    assert_eq!(s.output_tokens, 72);
    assert_eq!(
        s.input_tokens,
        requests.iter().map(|r| r.input_tokens).sum::<usize>()
    );
    let ttft = s.ttft_ms.unwrap();
    assert!(ttft.p50 >= 20.0 && ttft.p99 < 2000.0, "{ttft:?}");
    let itl = s.itl_ms.unwrap();
    assert_eq!(itl.count, 12 * 5);
    assert!(itl.p50 >= 1.5, "{itl:?}");
    assert!(s.e2e_ms.unwrap().p50 >= 30.0);
    assert!(s.tpot_ms.unwrap().mean >= 1.5);
    assert!(s.duration_s > 0.0 && s.request_throughput > 0.0);
    let seen = server.seen.lock().unwrap();
    assert!(
        seen.in_flight_max <= 4,
        "concurrency 4 never exceeded: {}",
        seen.in_flight_max
    );
    let b = &seen.bodies[0];
    assert_eq!(
        (
            b["stream"].as_bool(),
            b["ignore_eos"].as_bool(),
            b["max_tokens"].as_u64()
        ),
        (Some(true), Some(true), Some(6))
    );
    assert_eq!(b["model"], "fake-model");
}

#[test]
fn failures_are_counted_and_rates_are_paced() {
    let server = start(Options {
        fail_every: 3,
        ..fast()
    });
    let client = Client::new(&server.url, None, Duration::from_secs(30));
    let spec = SyntheticSpec {
        num_prompts: 9,
        input_len: 10,
        output_len: 2,
        seed: 1,
    };
    let requests = synthetic(&client, "fake-model", Counting::Approximate, &spec).unwrap();
    assert!(requests.iter().all(|r| r.prompt.split(' ').count() == 10));
    let target = Target {
        client: &client,
        model: "fake-model",
    };
    let outcome = run_load(target, &requests, LoadMode::RequestRate(50.0), 7);
    let s = report::summarize(&outcome);
    assert_eq!((s.completed, s.failed), (6, 3));
    assert!(
        s.errors[0].contains("HTTP 500") && s.errors[0].contains("boom"),
        "{:?}",
        s.errors
    );
    assert_eq!(
        s.input_tokens,
        server
            .seen
            .lock()
            .unwrap()
            .prompt_tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + 1) % 3 != 0)
            .map(|(_, t)| t)
            .sum::<usize>(),
        "server-reported prompt tokens are used"
    );
    let table = report::to_table(&report::BenchReport {
        schema_version: 1,
        url: server.url.clone(),
        model: "fake-model".into(),
        endpoint: "/v1/completions".into(),
        num_prompts: 9,
        input_len: Some(10),
        output_len: 2,
        dataset: None,
        seed: 1,
        token_counting: Counting::Approximate.describe(),
        json_schema: None,
        runs: vec![s],
    });
    assert!(
        table.contains("rate=50") && table.contains("6/3") && table.contains("error: HTTP 500"),
        "{table}"
    );
}

#[test]
fn the_binary_runs_several_levels_and_writes_json() {
    let server = start(fast());
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "bench",
            "serve",
            "--url",
            &server.url,
            "--concurrency",
            "1,3",
            "--num-prompts",
            "6",
        ])
        .args([
            "--input-len",
            "16",
            "--output-len",
            "4",
            "--warmup",
            "1",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("concurrency=1") && stdout.contains("concurrency=3"),
        "{stdout}"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["model"], "fake-model");
    assert_eq!(v["token_counting"], "server /tokenize");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, level) in runs.iter().zip([1, 3]) {
        assert_eq!(run["mode"], "concurrency");
        assert_eq!(run["value"], level);
        assert_eq!(run["completed"], 6);
        assert_eq!(run["output_tokens"], 24);
        assert!(run["ttft_ms"]["p50"].as_f64().unwrap() >= 20.0);
    }
    // 1 tokenizer calibration + prompt fitting, then 2 × (1 warm-up + 6) completions.
    assert_eq!(server.seen.lock().unwrap().bodies.len(), 14);
}

#[test]
fn a_dead_server_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "bench",
            "serve",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--num-prompts",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot use the server") && stderr.contains("/v1/models"),
        "{stderr}"
    );
}

#[test]
fn a_json_schema_constrains_every_completion() {
    let server = start(fast());
    let dir = tempfile::tempdir().unwrap();
    let schema_path = dir.path().join("schema.json");
    let schema = json!({"type": "array", "minItems": 100, "items": {"type": "string"}});
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let json_path = dir.path().join("out.json");
    let run = |schema_file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["bench", "serve", "--url", &server.url, "--num-prompts", "3"])
            .args(["--input-len", "8", "--output-len", "2", "--json-schema"])
            .arg(schema_file)
            .arg("--json")
            .arg(&json_path)
            .output()
            .unwrap()
    };
    let out = run(&schema_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("constrained to the JSON Schema"),
        "{stdout}"
    );
    let completions: Vec<Value> = server
        .seen
        .lock()
        .unwrap()
        .bodies
        .iter()
        .filter(|b| b.get("max_tokens").is_some())
        .cloned()
        .collect();
    assert_eq!(completions.len(), 4, "1 warm-up + 3");
    for body in &completions {
        assert_eq!(body["structured_outputs"]["json"], schema);
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["json_schema"], schema_path.display().to_string());

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let out = run(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--json-schema") && stderr.contains("not JSON"),
        "{stderr}"
    );
}
