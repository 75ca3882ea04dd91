"""`GET /metrics`: Prometheus text format 0.0.4 with vLLM's metric names,
parsed by prometheus_client, and counters that move by exactly what a
request did.

prometheus_client's parser names a counter family without its `_total`
suffix (`vllm:prompt_tokens`) while the samples keep it
(`vllm:prompt_tokens_total`).
"""

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support import CAPITAL, EMBEDDING_NAME, SERVED_NAME, Metrics, tokenize, wait_idle

GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]
COUNTERS = [  # family names as the parser reports them
    "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success", "vllm:num_preemptions",
    "vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
]
HISTOGRAMS = [
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
    "vllm:request_prompt_tokens", "vllm:request_generation_tokens",
]


def complete(base_url, **body):
    r = httpx.post(base_url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_content_type_and_families(base_url):
    complete(base_url, prompt="Hi", max_tokens=2)
    m = Metrics(base_url)
    assert m.response.headers["content-type"].startswith("text/plain; version=0.0.4")
    for name, kind in [(n, "gauge") for n in GAUGES] + [(n, "counter") for n in COUNTERS] + [(n, "histogram") for n in HISTOGRAMS]:
        assert name in m.families, f"{name} missing from /metrics"
        family = m.families[name]
        assert family.type == kind, (name, family.type)
        assert family.samples, f"{name} has no samples"
        for s in family.samples:
            assert s.labels.get("model_name") == SERVED_NAME, (s.name, s.labels)
    for name in COUNTERS:
        assert all(s.name == name + "_total" for s in m.families[name].samples), name
    reasons = {s.labels.get("finished_reason") for s in m.families["vllm:request_success"].samples}
    assert {"stop", "length", "abort"} <= reasons, reasons


def test_text_is_well_formed(base_url):
    text = httpx.get(base_url + "/metrics", timeout=10).text
    assert text.endswith("\n") and "\r" not in text
    helps, types, series, families_done, current = set(), set(), set(), set(), None
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name = line.split()[1:3]
            seen = helps if kind == "HELP" else types
            assert name not in seen, f"{kind} {name} twice"
            seen.add(name)
            if name != current:
                assert name not in families_done, f"family {name} is not one contiguous group"
                if current:
                    families_done.add(current)
                current = name
        elif line and not line.startswith("#"):
            key = line.rsplit(" ", 1)[0]
            assert key not in series, f"series {key} twice"
            series.add(key)
            float(line.rsplit(" ", 1)[1])  # a number (NaN and +Inf parse too)


def test_histograms_are_cumulative_and_inf_equals_count(base_url):
    complete(base_url, prompt="Hi", max_tokens=3)
    text = httpx.get(base_url + "/metrics", timeout=10).text
    checked = 0
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        checked += 1
        buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
        assert buckets and buckets[-1][0] == float("inf"), family.name
        assert [b[0] for b in buckets] == sorted(b[0] for b in buckets), family.name
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), family.name
        counts = [s.value for s in family.samples if s.name == family.name + "_count"]
        sums = [s.value for s in family.samples if s.name == family.name + "_sum"]
        assert counts == [buckets[-1][1]], family.name
        assert len(sums) == 1 and sums[0] >= 0, family.name
    assert checked >= len(HISTOGRAMS)


def test_idle_gauges(base_url):
    m = wait_idle(base_url, timeout=30)
    assert m.value("vllm:num_requests_running") == 0
    assert m.value("vllm:num_requests_waiting") == 0
    assert m.value("vllm:kv_cache_usage_perc") == 0


def test_counters_move_by_exactly_one_request(base_url):
    before = wait_idle(base_url, timeout=30)
    # Temperature 0 and a fresh prompt: 5 tokens, ended by the length limit.
    r = complete(base_url, prompt="Counting sheep: one, two, three, four", max_tokens=5, ignore_eos=True, temperature=0)
    prompt_tokens = r["usage"]["prompt_tokens"]
    assert r["usage"]["completion_tokens"] == 5 and r["choices"][0]["finish_reason"] == "length"

    # The metrics task may see the finish a moment after the HTTP answer.
    deadline = time.monotonic() + 10
    while True:
        after = Metrics(base_url)
        if after.value("vllm:e2e_request_latency_seconds_count") > before.value("vllm:e2e_request_latency_seconds_count"):
            break
        assert time.monotonic() < deadline, "vllm:e2e_request_latency_seconds_count did not move"
        time.sleep(0.05)
    time.sleep(0.2)
    after = Metrics(base_url)

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("vllm:prompt_tokens_total") == prompt_tokens
    assert delta("vllm:generation_tokens_total") == 5
    assert delta("vllm:request_success_total", finished_reason="length") == 1
    assert delta("vllm:request_success_total", finished_reason="stop") == 0
    assert delta("vllm:request_success_total", finished_reason="abort") == 0
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:inter_token_latency_seconds_count") == 4  # between 5 tokens
    for hist in ("request_queue_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds",
                 "request_prompt_tokens", "request_generation_tokens"):
        assert delta(f"vllm:{hist}_count") == 1, hist
    assert delta("vllm:request_prompt_tokens_sum") == prompt_tokens
    assert delta("vllm:request_generation_tokens_sum") == 5
    assert delta("vllm:e2e_request_latency_seconds_sum") > 0
    assert after.value("vllm:num_requests_running") == 0


def test_chat_finished_by_eos_counts_as_stop(base_url):
    before = wait_idle(base_url, timeout=30)
    r = httpx.post(base_url + "/v1/chat/completions", json={"messages": CAPITAL, "temperature": 0, "max_tokens": 30}, timeout=60).json()
    assert r["choices"][0]["finish_reason"] == "stop"
    deadline = time.monotonic() + 10
    while True:
        after = Metrics(base_url)
        d = after.value("vllm:request_success_total", finished_reason="stop") - before.value("vllm:request_success_total", finished_reason="stop")
        if d >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert d == 1
    assert after.value("vllm:generation_tokens_total") - before.value("vllm:generation_tokens_total") == r["usage"]["completion_tokens"]
    assert after.value("vllm:prompt_tokens_total") - before.value("vllm:prompt_tokens_total") == r["usage"]["prompt_tokens"]


def test_prefix_cache_counters_see_a_repeated_prompt(base_url):
    prompt = "A long shared preamble that fills several KV blocks of sixteen tokens. " * 10
    n = len(tokenize(base_url, prompt))
    before = wait_idle(base_url, timeout=30)
    complete(base_url, prompt=prompt, max_tokens=1)
    complete(base_url, prompt=prompt, max_tokens=1)
    time.sleep(0.3)
    after = Metrics(base_url)
    hits = after.value("vllm:prefix_cache_hits_total") - before.value("vllm:prefix_cache_hits_total")
    queries = after.value("vllm:prefix_cache_queries_total") - before.value("vllm:prefix_cache_queries_total")
    # The second request finds at least every full block of the first one's prompt but the last.
    full_blocks = n // 16
    assert hits >= 16 * (full_blocks - 1), (n, hits, queries)
    assert queries >= 2 * n - 16 and queries >= hits, (n, hits, queries)


def test_embedding_requests_count(embedding_server):
    url = embedding_server.url
    before = Metrics(url)
    model = {"model_name": EMBEDDING_NAME}
    r = httpx.post(url + "/v1/embeddings", json={"input": ["Hello world", "A second text"]}, timeout=60)
    assert r.status_code == 200, r.text
    prompt = r.json()["usage"]["prompt_tokens"]
    deadline = time.monotonic() + 30
    while True:
        after = Metrics(url)
        done = after.value("vllm:request_success_total", finished_reason="stop", **model)
        if done == before.value("vllm:request_success_total", finished_reason="stop", **model) + 2:
            break
        assert time.monotonic() < deadline, "the embedding requests never showed in /metrics"
        time.sleep(0.1)

    def delta(name):
        return after.value(name, **model) - before.value(name, **model)

    assert delta("vllm:prompt_tokens_total") == prompt
    assert delta("vllm:e2e_request_latency_seconds_count") == 2
    assert delta("vllm:request_queue_time_seconds_count") == 2
    assert delta("vllm:generation_tokens_total") == 0
