"""32 streaming requests, half dropped mid-stream: the engine ends with nothing
running and no KV blocks in use."""

import threading
import time

import httpx

from conftest import metrics, sample


def stream(url: str, i: int, drop: bool, seen: list, errors: list) -> None:
    if i % 2:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": f"Story {i}"}]}
    else:
        path, body = "/v1/completions", {"prompt": f"Once upon a time, number {i},"}
    body.update({"max_tokens": 200, "ignore_eos": True, "stream": True, "temperature": 0.7, "seed": i})
    chunks = 0
    try:
        with httpx.stream("POST", url + path, json=body, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks += 1
                if drop and chunks >= 3:
                    break
        seen.append((i, drop, chunks))
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append((i, repr(e)))


def test_dropped_streams_free_everything(base_url):
    seen, errors, running_peak = [], [], [0.0]
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            running_peak[0] = max(running_peak[0], sample(metrics(base_url), "vllm:num_requests_running"))
            time.sleep(0.1)

    watcher = threading.Thread(target=sampler)
    watcher.start()
    threads = [threading.Thread(target=stream, args=(base_url, i, i % 4 < 2, seen, errors)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    assert len(seen) == 32
    assert all(chunks >= 150 for _, drop, chunks in seen if not drop), sorted(seen)
    assert running_peak[0] > 0

    deadline = time.monotonic() + 60
    while True:
        m = metrics(base_url)
        running = sample(m, "vllm:num_requests_running")
        usage = sample(m, "vllm:kv_cache_usage_perc")
        if running == 0 and usage == 0:
            break
        assert time.monotonic() < deadline, f"running={running} kv_usage={usage}"
        time.sleep(0.2)
    assert sample(m, "vllm:request_success_total", finished_reason="abort") >= 16
