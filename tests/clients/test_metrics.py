"""`/metrics` parses with prometheus_client and moves by what requests did."""

import time

import httpx

from conftest import SERVED_NAME, metrics, sample

FAMILIES = [
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success",
    "vllm:num_preemptions", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
    "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
    "vllm:request_prompt_tokens", "vllm:request_generation_tokens",
]


def test_exposition_format_and_families(base_url):
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(base_url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in FAMILIES:
        assert name in families, f"{name} missing"
        for s in families[name].samples:
            assert s.labels.get("model_name") == SERVED_NAME
    assert {s.labels["finished_reason"] for s in families["vllm:request_success"].samples} >= {"stop", "length", "abort"}


def test_counters_move_by_the_right_amounts(base_url):
    before = metrics(base_url)
    r = httpx.post(
        base_url + "/v1/completions",
        json={"prompt": "Counting: one, two, three", "max_tokens": 5, "ignore_eos": True, "temperature": 0},
        timeout=60,
    ).json()
    prompt = r["usage"]["prompt_tokens"]
    assert r["usage"]["completion_tokens"] == 5
    key = ("vllm:request_success_total", "length")
    deadline = time.monotonic() + 10
    while True:
        after = metrics(base_url)
        if sample(after, key[0], finished_reason=key[1]) == sample(before, key[0], finished_reason=key[1]) + 1:
            break
        assert time.monotonic() < deadline, "request_success_total did not move"
        time.sleep(0.05)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("vllm:prompt_tokens_total") == prompt
    assert delta("vllm:generation_tokens_total") == 5
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    assert delta("vllm:inter_token_latency_seconds_count") == 4
    assert delta("vllm:request_prompt_tokens_sum") == prompt
    assert delta("vllm:request_generation_tokens_sum") == 5
    assert delta("vllm:request_success_total", finished_reason="stop") == 0


def test_prefix_cache_counters_see_a_repeated_prompt(base_url):
    prompt = "A long shared preamble that fills several KV blocks. " * 12
    before = metrics(base_url)
    for _ in range(2):
        httpx.post(base_url + "/v1/completions", json={"prompt": prompt, "max_tokens": 1}, timeout=60)
    time.sleep(0.3)
    after = metrics(base_url)
    hits = sample(after, "vllm:prefix_cache_hits_total") - sample(before, "vllm:prefix_cache_hits_total")
    queries = sample(after, "vllm:prefix_cache_queries_total") - sample(before, "vllm:prefix_cache_queries_total")
    assert hits >= 16 * 5, (hits, queries)
    assert queries >= hits
