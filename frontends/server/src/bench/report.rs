//! Benchmark summaries: a table for people, JSON for scripts.
//!
//! JSON (`--json FILE`), schema version 1:
//!
//! ```text
//! { "schema_version": 1, "url", "model", "endpoint", "num_prompts", "input_len" (null with a dataset),
//!   "output_len", "dataset", "seed", "token_counting",
//!   "runs": [ { "label": "concurrency=8", "mode": "concurrency" | "request_rate",
//!               "value": 8 | 2.5 | "inf", "completed", "failed", "duration_s",
//!               "request_throughput" (req/s), "output_throughput" (tok/s), "total_token_throughput" (tok/s),
//!               "input_tokens", "output_tokens",
//!               "ttft_ms" | "itl_ms" | "tpot_ms" | "e2e_ms": {"count","mean","p50","p90","p99","max"} or null,
//!               "short_outputs": completed requests with fewer tokens than asked,
//!               "errors": [up to 5 distinct messages] } ] }
//! ```

use serde::Serialize;
use serde_json::{Value, json};

use super::stats::{Summary, summarize_ms};
use super::{LoadMode, RunOutcome};

/// Version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The summary of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// `concurrency=8`.
    pub label: String,
    /// `concurrency` or `request_rate`.
    pub mode: &'static str,
    /// The level or rate (`"inf"` for an unbounded rate).
    pub value: Value,
    /// Requests that completed.
    pub completed: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Wall time in seconds.
    pub duration_s: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Generated tokens per second.
    pub output_throughput: f64,
    /// Prompt plus generated tokens per second.
    pub total_token_throughput: f64,
    /// Prompt tokens of completed requests.
    pub input_tokens: usize,
    /// Generated tokens of completed requests.
    pub output_tokens: usize,
    /// Time to first token.
    pub ttft_ms: Option<Summary>,
    /// Gap between streamed chunks.
    pub itl_ms: Option<Summary>,
    /// Per request: (end-to-end − TTFT) / (output tokens − 1).
    pub tpot_ms: Option<Summary>,
    /// End-to-end latency.
    pub e2e_ms: Option<Summary>,
    /// Completed requests that returned fewer tokens than asked (the server
    /// ignored `ignore_eos`/`min_tokens` or cut the stream short).
    pub short_outputs: usize,
    /// Up to 5 distinct error messages.
    pub errors: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Server URL.
    pub url: String,
    /// Model name sent.
    pub model: String,
    /// Route used.
    pub endpoint: String,
    /// Requests per run.
    pub num_prompts: usize,
    /// Prompt tokens of synthetic prompts.
    pub input_len: Option<usize>,
    /// `max_tokens`.
    pub output_len: usize,
    /// Dataset path, when one was used.
    pub dataset: Option<String>,
    /// `--seed`, of the synthetic prompts and the arrival times.
    pub seed: u64,
    /// How prompt tokens were counted.
    pub token_counting: String,
    /// The JSON Schema file every request was constrained to, if any.
    pub json_schema: Option<String>,
    /// One entry per run.
    pub runs: Vec<RunSummary>,
}

/// Summarize a run.
pub fn summarize(outcome: &RunOutcome) -> RunSummary {
    let ok: Vec<_> = outcome.records.iter().filter(|r| r.ok).collect();
    let ttft: Vec<f64> = ok.iter().filter_map(|r| r.ttft).collect();
    let itl: Vec<f64> = ok.iter().flat_map(|r| r.itl.iter().copied()).collect();
    let tpot: Vec<f64> = ok
        .iter()
        .filter(|r| r.output_tokens > 1)
        .filter_map(|r| r.ttft.map(|t| (r.e2e - t) / (r.output_tokens - 1) as f64))
        .collect();
    let e2e: Vec<f64> = ok.iter().map(|r| r.e2e).collect();
    let input_tokens: usize = ok.iter().map(|r| r.input_tokens).sum();
    let output_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let d = outcome.duration.max(1e-9);
    let mut errors: Vec<String> = Vec::new();
    for e in outcome.records.iter().filter_map(|r| r.error.as_ref()) {
        if errors.len() < 5 && !errors.contains(e) {
            errors.push(e.clone());
        }
    }
    let (mode, value) = match outcome.mode {
        LoadMode::Concurrency(n) => ("concurrency", json!(n)),
        LoadMode::RequestRate(r) if r.is_infinite() => ("request_rate", json!("inf")),
        LoadMode::RequestRate(r) => ("request_rate", json!(r)),
    };
    RunSummary {
        label: outcome.mode.label(),
        mode,
        value,
        completed: ok.len(),
        failed: outcome.records.len() - ok.len(),
        duration_s: outcome.duration,
        request_throughput: ok.len() as f64 / d,
        output_throughput: output_tokens as f64 / d,
        total_token_throughput: (input_tokens + output_tokens) as f64 / d,
        input_tokens,
        output_tokens,
        ttft_ms: summarize_ms(&ttft),
        itl_ms: summarize_ms(&itl),
        tpot_ms: summarize_ms(&tpot),
        e2e_ms: summarize_ms(&e2e),
        short_outputs: ok
            .iter()
            .filter(|r| r.output_tokens < r.requested_tokens)
            .count(),
        errors,
    }
}

fn trio(s: &Option<Summary>, scale: f64) -> String {
    match s {
        Some(s) => format!(
            "{:.1}/{:.1}/{:.1}",
            s.p50 * scale,
            s.p90 * scale,
            s.p99 * scale
        ),
        None => "-".into(),
    }
}

/// One progress line per finished run.
pub fn run_line(r: &RunSummary) -> String {
    format!(
        "{}: {} ok, {} failed in {:.2} s; {:.2} req/s, {:.1} output tok/s; TTFT p50 {} ms",
        r.label,
        r.completed,
        r.failed,
        r.duration_s,
        r.request_throughput,
        r.output_throughput,
        r.ttft_ms
            .map(|s| format!("{:.1}", s.p50))
            .unwrap_or_else(|| "-".into())
    )
}

/// The results table.
pub fn to_table(report: &BenchReport) -> String {
    let mut out = format!(
        "{} at {} — {} requests/run, input {} tokens ({}), output {} tokens\n",
        report.model,
        report.url,
        report.num_prompts,
        report
            .input_len
            .map(|n| n.to_string())
            .unwrap_or_else(|| "from dataset".into()),
        report.token_counting,
        report.output_len
    );
    if let Some(schema) = &report.json_schema {
        out.push_str(&format!(
            "every request constrained to the JSON Schema {schema}\n"
        ));
    }
    out.push_str(&format!(
        "{:<18} {:>9} {:>8} {:>8} {:>10} {:>10}  {:>20} {:>17} {:>17} {:>20}\n",
        "run",
        "ok/fail",
        "time s",
        "req/s",
        "out tok/s",
        "all tok/s",
        "TTFT p50/90/99 ms",
        "ITL p50/90/99 ms",
        "TPOT p50/90/99 ms",
        "E2E p50/90/99 s"
    ));
    for r in &report.runs {
        out.push_str(&format!(
            "{:<18} {:>9} {:>8.2} {:>8.2} {:>10.1} {:>10.1}  {:>20} {:>17} {:>17} {:>20}\n",
            r.label,
            format!("{}/{}", r.completed, r.failed),
            r.duration_s,
            r.request_throughput,
            r.output_throughput,
            r.total_token_throughput,
            trio(&r.ttft_ms, 1.0),
            trio(&r.itl_ms, 1.0),
            trio(&r.tpot_ms, 1.0),
            trio(&r.e2e_ms, 1e-3),
        ));
        for e in &r.errors {
            out.push_str(&format!("    error: {e}\n"));
        }
        if r.short_outputs > 0 {
            out.push_str(&format!(
                "    warning: {} responses were shorter than --output-len; throughput is not comparable\n",
                r.short_outputs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::client::RequestRecord;

    #[test]
    fn summary_of_a_run() {
        let rec = |ttft: f64, e2e: f64, out: usize| RequestRecord {
            ok: true,
            error: None,
            input_tokens: 10,
            output_tokens: out,
            requested_tokens: 11,
            ttft: Some(ttft),
            itl: vec![(e2e - ttft) / (out - 1) as f64; out - 1],
            e2e,
        };
        let outcome = RunOutcome {
            mode: LoadMode::Concurrency(2),
            records: vec![
                rec(0.1, 1.1, 11),
                rec(0.3, 2.3, 11),
                RequestRecord {
                    error: Some("HTTP 500: boom".into()),
                    ..RequestRecord::default()
                },
            ],
            duration: 2.0,
        };
        let s = summarize(&outcome);
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!((s.input_tokens, s.output_tokens), (20, 22));
        assert!((s.request_throughput - 1.0).abs() < 1e-12);
        assert!((s.output_throughput - 11.0).abs() < 1e-12);
        assert!((s.total_token_throughput - 21.0).abs() < 1e-12);
        assert!((s.ttft_ms.unwrap().p50 - 200.0).abs() < 1e-9);
        assert!((s.tpot_ms.unwrap().mean - 150.0).abs() < 1e-9);
        assert_eq!(s.itl_ms.unwrap().count, 20);
        assert_eq!(s.errors, ["HTTP 500: boom"]);
        assert_eq!(s.short_outputs, 0);
        assert_eq!(s.value, json!(2));
        let inf = summarize(&RunOutcome {
            mode: LoadMode::RequestRate(f64::INFINITY),
            records: vec![],
            duration: 0.0,
        });
        assert_eq!(inf.value, json!("inf"));
        assert!(inf.ttft_ms.is_none());
    }
}
