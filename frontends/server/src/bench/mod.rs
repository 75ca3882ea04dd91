//! `kiln bench serve`: a serving benchmark client for any OpenAI-compatible
//! server. Streams `/v1/completions` with `max_tokens` and `ignore_eos`,
//! measures time to first token (TTFT), inter-token latency per streamed
//! chunk (ITL), time per output token after the first (TPOT) and end-to-end
//! latency, and request and token throughput; one run per concurrency level
//! or request rate.

pub mod client;
pub mod prompts;
pub mod report;
pub mod stats;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use client::{BenchRequest, Client, ClientError, RequestRecord};
use prompts::{Counting, Rng, SyntheticSpec};

use crate::cli::BenchServeArgs;
use crate::commands::CliError;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The server could not be used.
    #[error("cannot use the server: {0}")]
    Server(#[from] ClientError),
    /// The dataset is unreadable.
    #[error("dataset: {0}")]
    Dataset(String),
    /// Invalid settings.
    #[error("{0}")]
    Settings(String),
    /// Some run completed no request.
    #[error("run {0} completed no request; first error: {1}")]
    NothingCompleted(String, String),
    /// Writing the JSON report failed.
    #[error("{path}: {reason}")]
    Output {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// How requests are sent in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadMode {
    /// This many clients, each sending its next request when the last ends.
    Concurrency(usize),
    /// Poisson arrivals at this many requests per second (`inf`: all at once).
    RequestRate(f64),
}

impl LoadMode {
    /// `concurrency=8`, `rate=2.5`, `rate=inf`.
    pub fn label(&self) -> String {
        match self {
            LoadMode::Concurrency(n) => format!("concurrency={n}"),
            LoadMode::RequestRate(r) if r.is_infinite() => "rate=inf".into(),
            LoadMode::RequestRate(r) => format!("rate={r}"),
        }
    }
}

/// The records of one run, in request order, and its wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The load.
    pub mode: LoadMode,
    /// One record per request.
    pub records: Vec<RequestRecord>,
    /// Seconds from the first send to the last completion.
    pub duration: f64,
}

/// The server under test and the model name to send it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub client: &'a Client,
    pub model: &'a str,
}

/// Send `requests` with `mode` (arrival times seeded by `seed`), measuring each.
pub fn run_load(
    target: Target<'_>,
    requests: &[BenchRequest],
    mode: LoadMode,
    seed: u64,
) -> RunOutcome {
    let Target { client, model } = target;
    let results: Mutex<Vec<Option<RequestRecord>>> = Mutex::new(vec![None; requests.len()]);
    let store = |i: usize, r: RequestRecord| {
        if let Ok(mut v) = results.lock() {
            v[i] = Some(r);
        }
    };
    let start = Instant::now();
    match mode {
        LoadMode::Concurrency(n) => {
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..n.clamp(1, requests.len().max(1)) {
                    s.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(req) = requests.get(i) else { break };
                            store(i, client.completion(model, req));
                        }
                    });
                }
            });
        }
        LoadMode::RequestRate(rate) => {
            let mut rng = Rng::new(seed ^ 0xA11CE);
            let mut at = 0.0;
            std::thread::scope(|s| {
                for (i, req) in requests.iter().enumerate() {
                    if rate.is_finite() && i > 0 {
                        at += rng.exponential(rate);
                    }
                    let due = start + Duration::from_secs_f64(at);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let store = &store;
                    s.spawn(move || store(i, client.completion(model, req)));
                }
            });
        }
    }
    let duration = start.elapsed().as_secs_f64();
    let records = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| RequestRecord {
                error: Some("not sent".into()),
                ..RequestRecord::default()
            })
        })
        .collect();
    RunOutcome {
        mode,
        records,
        duration,
    }
}

/// The runs asked for: concurrency levels, else request rates, else concurrency 1.
pub fn load_modes(args: &BenchServeArgs) -> Result<Vec<LoadMode>, BenchError> {
    if args.concurrency.contains(&0) {
        return Err(BenchError::Settings(
            "--concurrency values must be at least 1".into(),
        ));
    }
    if args.request_rate.iter().any(|r| r.is_nan() || *r <= 0.0) {
        return Err(BenchError::Settings(
            "--request-rate values must be positive (or inf)".into(),
        ));
    }
    Ok(if !args.concurrency.is_empty() {
        args.concurrency
            .iter()
            .map(|&n| LoadMode::Concurrency(n))
            .collect()
    } else if !args.request_rate.is_empty() {
        args.request_rate
            .iter()
            .map(|&r| LoadMode::RequestRate(r))
            .collect()
    } else {
        vec![LoadMode::Concurrency(1)]
    })
}

fn validate(args: &BenchServeArgs) -> Result<Vec<LoadMode>, BenchError> {
    if args.num_prompts == 0 || args.output_len == 0 || args.input_len == 0 {
        return Err(BenchError::Settings(
            "--num-prompts, --input-len and --output-len must be at least 1".into(),
        ));
    }
    load_modes(args)
}

/// The model to name (asked of the server when not given) and how tokens are counted.
fn discover(args: &BenchServeArgs, client: &Client) -> Result<(String, Counting), BenchError> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => client.first_model()?,
    };
    let counting = match client.probe_tokenizer(&model) {
        Some(route) => Counting::Server(route),
        None => {
            tracing::warn!("the server has no tokenize route; prompt lengths are approximate");
            Counting::Approximate
        }
    };
    Ok((model, counting))
}

/// `count` prompts: synthetic ones drawn from the seed, or the dataset's
/// (cycled when it holds fewer).
fn prepare_requests(
    args: &BenchServeArgs,
    target: Target<'_>,
    counting: Counting,
    count: usize,
) -> Result<Vec<BenchRequest>, BenchError> {
    let Target { client, model } = target;
    match &args.dataset {
        Some(path) => prompts::dataset(path, count, args.output_len, |t| match counting {
            Counting::Server(route) => client.count_tokens(route, model, t).unwrap_or(0),
            Counting::Approximate => t.split_whitespace().count(),
        }),
        None => {
            let spec = SyntheticSpec {
                num_prompts: count,
                input_len: args.input_len,
                output_len: args.output_len,
                seed: args.seed,
            };
            prompts::synthetic(client, model, counting, &spec)
        }
    }
}

/// One run per mode, each after `warmup` untimed requests. Every run and
/// every warm-up request gets prompts of its own (`requests` holds
/// `num_prompts` per mode, then the warm-ups), so no server answers a
/// timed request from a prompt cache that an earlier run filled.
fn run_all(
    args: &BenchServeArgs,
    target: Target<'_>,
    requests: &[BenchRequest],
    modes: &[LoadMode],
) -> Vec<report::RunSummary> {
    let per_run = args.num_prompts;
    let warmups = &requests[(per_run * modes.len()).min(requests.len())..];
    let mut runs = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        for w in 0..args.warmup {
            let r = target.client.completion(
                target.model,
                &warmups[(i * args.warmup + w) % warmups.len().max(1)],
            );
            if let Some(e) = r.error {
                tracing::warn!("warm-up request failed: {e}");
            }
        }
        let requests = &requests[i * per_run..(i + 1) * per_run];
        eprintln!("running {} ({} requests)...", mode.label(), requests.len());
        let summary = report::summarize(&run_load(target, requests, mode, args.seed));
        eprintln!("{}", report::run_line(&summary));
        runs.push(summary);
    }
    runs
}

/// The `--json-schema` file as JSON.
fn read_schema(path: &std::path::Path) -> Result<serde_json::Value, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Settings(format!("--json-schema {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        BenchError::Settings(format!(
            "--json-schema {}: not JSON ({e}); pass a JSON Schema document",
            path.display()
        ))
    })
}

fn write_json(path: &std::path::Path, bench: &report::BenchReport) -> Result<(), BenchError> {
    let failed = |e: String| BenchError::Output {
        path: path.display().to_string(),
        reason: e,
    };
    let text = serde_json::to_string_pretty(bench).map_err(|e| failed(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| failed(e.to_string()))
}

/// `kiln bench serve`.
pub fn execute(args: &BenchServeArgs) -> Result<(), CliError> {
    let modes = validate(args)?;
    let schema = args.json_schema.as_deref().map(read_schema).transpose()?;
    let mut client = Client::new(&args.url, args.api_key.clone(), args.timeout);
    if let Some(schema) = &schema {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "structured_outputs".into(),
            serde_json::json!({ "json": schema }),
        );
        client = client.with_extra_body(fields);
    }
    let (model, counting) = discover(args, &client)?;
    let target = Target {
        client: &client,
        model: &model,
    };
    let count = args.num_prompts * modes.len() + args.warmup * modes.len();
    let requests = prepare_requests(args, target, counting, count)?;
    let runs = run_all(args, target, &requests, &modes);
    let bench = report::BenchReport {
        schema_version: report::SCHEMA_VERSION,
        url: args.url.clone(),
        model: model.clone(),
        endpoint: "/v1/completions".into(),
        num_prompts: args.num_prompts,
        input_len: args.dataset.is_none().then_some(args.input_len),
        output_len: args.output_len,
        dataset: args.dataset.as_ref().map(|p| p.display().to_string()),
        seed: args.seed,
        token_counting: counting.describe(),
        json_schema: args.json_schema.as_ref().map(|p| p.display().to_string()),
        runs,
    };
    print!("{}", report::to_table(&bench));
    if let Some(path) = &args.json {
        write_json(path, &bench)?;
    }
    if let Some(run) = bench.runs.iter().find(|r| r.completed == 0) {
        let first = run.errors.first().cloned().unwrap_or_default();
        return Err(BenchError::NothingCompleted(run.label.clone(), first).into());
    }
    Ok(())
}
