"""Clients that go away mid-stream: their requests are aborted and every KV
block comes back, while the streams read to the end are unaffected.

`vllm:kv_cache_usage_perc` counts blocks in use by requests; freed blocks
kept for the prefix cache do not count, so an idle engine reads 0.
"""

import json
import threading
import time

import httpx

from support import CAPITAL, Metrics, wait_idle

MAX_TOKENS = 200


def _run_stream(url: str, i: int, drop: bool, results: dict) -> None:
    if i % 2:
        path = "/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": f"Tell story number {i} about a lighthouse."}]}
    else:
        path = "/v1/completions"
        body = {"prompt": f"Story number {i}: once upon a time, in a lighthouse,"}
    body.update({
        "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True, "temperature": 0.7, "seed": i,
        "stream_options": {"include_usage": True},
    })
    events = []
    try:
        with httpx.stream("POST", url + path, json=body, timeout=180) as r:
            if r.status_code != 200:
                results[i] = {"error": f"HTTP {r.status_code}: {r.read()!r}"}
                return
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[len("data: "):])
                if drop and len(events) >= 3:
                    break  # leaving the block closes the connection
        results[i] = {"drop": drop, "events": events}
    except Exception as e:  # reported by the test
        results[i] = {"error": repr(e)}


def test_dropped_streams_free_everything(base_url):
    before = wait_idle(base_url, timeout=60)
    results: dict = {}
    peak = {"running": 0.0, "usage": 0.0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            m = Metrics(base_url)
            peak["running"] = max(peak["running"], m.value("vllm:num_requests_running"))
            peak["usage"] = max(peak["usage"], m.value("vllm:kv_cache_usage_perc"))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # Half of the 32 streams (both dialects) are dropped after 3 events.
    threads = [threading.Thread(target=_run_stream, args=(base_url, i, i % 4 < 2, results)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    done.set()
    watcher.join()

    assert sorted(results) == list(range(32))
    errors = {i: r["error"] for i, r in results.items() if "error" in r}
    assert not errors, errors
    for i, r in results.items():
        if r["drop"]:
            continue
        events = r["events"]
        assert events[-1] == "[DONE]", (i, events[-3:])
        chunks = [json.loads(e) for e in events[:-1]]
        usage = chunks[-1]["usage"]
        assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == MAX_TOKENS, (i, usage)
        assert chunks[-2]["choices"][0]["finish_reason"] == "length", (i, chunks[-2])
    assert peak["running"] > 0, "vllm:num_requests_running never rose above 0 during the run"
    assert peak["usage"] > 0, "vllm:kv_cache_usage_perc never rose above 0 during the run"

    after = wait_idle(base_url, timeout=60)  # nothing running or waiting, no block in use

    def delta(reason):
        return after.value("vllm:request_success_total", finished_reason=reason) - before.value(
            "vllm:request_success_total", finished_reason=reason
        )

    assert delta("abort") == 16
    assert delta("length") == 16
    assert delta("stop") == 0

    # And the engine still answers correctly.
    r = httpx.post(base_url + "/v1/chat/completions", json={"messages": CAPITAL, "temperature": 0, "max_tokens": 20}, timeout=60)
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


def test_dropped_tgi_and_ollama_streams_free_everything(base_url):
    before = wait_idle(base_url, timeout=60)

    def drop(path, body):
        with httpx.stream("POST", base_url + path, json=body, timeout=120) as r:
            assert r.status_code == 200
            lines = 0
            for line in r.iter_lines():
                lines += bool(line)
                if lines >= 3:
                    break

    threads = []
    for i in range(8):
        if i % 2:
            args = ("/generate_stream", {"inputs": f"Tale {i}:", "parameters": {"max_new_tokens": MAX_TOKENS, "seed": i, "do_sample": True}})
        else:
            args = ("/api/generate", {"model": "smollm2-135m-instruct", "prompt": f"Tale {i}:", "raw": True,
                                      "options": {"num_predict": MAX_TOKENS, "seed": i}})
        threads.append(threading.Thread(target=drop, args=args))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    after = wait_idle(base_url, timeout=60)

    def delta(reason):
        return after.value("vllm:request_success_total", finished_reason=reason) - before.value(
            "vllm:request_success_total", finished_reason=reason
        )

    # Counters are folded from the engine's event stream, which can trail the
    # gauges by a moment after the engine goes idle: give them 10 s to settle.
    deadline = time.monotonic() + 10
    while delta("abort") + delta("stop") + delta("length") < 8 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = Metrics(base_url)
    # Sampling is seeded, so this is deterministic; a stream that met EOS
    # before its client left would end as "stop" rather than "abort".
    assert delta("abort") + delta("stop") + delta("length") == 8
    assert delta("abort") >= 6, delta("abort")
