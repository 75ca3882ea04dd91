"""Shared constants and helpers of the client suite (importable from tests)."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

SERVED_NAME = "smollm2-135m-instruct"
EMBEDDING_NAME = "all-minilm-l6-v2"
API_KEY = "kiln-test-key"
MAX_MODEL_LEN = 2048  # --max-model-len of the test servers
SHUTDOWN_TIMEOUT_S = 10  # --shutdown-timeout of the test servers

# The model answers this with "The capital of France is Paris." (greedy).
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
CAPITAL_QUESTION = CAPITAL[0]["content"]
CAPITAL_PROMPT = "The capital of France is"  # raw completion: " Paris."
STORY = [{"role": "user", "content": "Tell me a story about a dragon."}]


def tokenize(url: str, text: str) -> list[int]:
    """Token ids of `text` as a completion prompt (vLLM's POST /tokenize)."""
    r = httpx.post(url + "/tokenize", json={"prompt": text}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"])
    return body["tokens"]


def sse_events(lines) -> list[str]:
    """`data:` payloads of an SSE body, in order (comments and blank lines dropped)."""
    out = []
    for line in lines:
        if line.startswith("data:"):
            out.append(line[len("data:"):].strip())
    return out


def sse_json(lines) -> list[dict]:
    return [json.loads(e) for e in sse_events(lines) if e != "[DONE]"]


class Metrics:
    """One scrape of /metrics, parsed by prometheus_client."""

    def __init__(self, url: str):
        r = httpx.get(url + "/metrics", timeout=10)
        assert r.status_code == 200, r.text
        self.response = r
        self.text = r.text
        self.families = {f.name: f for f in text_string_to_metric_families(r.text)}
        self.samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels) -> float:
        """The sample `name` with `labels` (model_name defaults to the served name)."""
        labels.setdefault("model_name", SERVED_NAME)
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            near = sorted({n for n, _ in self.samples if n.startswith(name.split("{")[0][:20])})
            raise AssertionError(f"no sample {name}{labels} in /metrics; similar names: {near}")
        return self.samples[key]


def wait_idle(url: str, timeout: float = 60.0) -> Metrics:
    """Polls /metrics until nothing runs or waits and no KV block is in use."""
    deadline = time.monotonic() + timeout
    while True:
        m = Metrics(url)
        running = m.value("vllm:num_requests_running")
        waiting = m.value("vllm:num_requests_waiting")
        usage = m.value("vllm:kv_cache_usage_perc")
        if running == 0 and waiting == 0 and usage == 0:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"engine not idle after {timeout:.0f} s: running={running} waiting={waiting} kv_cache_usage_perc={usage}"
            )
        time.sleep(0.2)
