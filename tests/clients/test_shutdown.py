"""SIGTERM with a stream in flight: no new work is admitted, the running
stream is drained to its end, and the process exits 0."""

import json
import threading

import httpx

from support import SHUTDOWN_TIMEOUT_S


def test_sigterm_drains_a_running_stream(kiln_factory):
    s = kiln_factory("kiln-serve-shutdown")
    first_event, result = threading.Event(), {}

    def stream():
        body = {"prompt": "Once upon a time", "max_tokens": 100, "ignore_eos": True, "stream": True}
        lines = []
        try:
            with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                        first_event.set()
        except Exception as e:  # reported by the test
            result["error"] = repr(e)
        first_event.set()
        result["lines"] = lines

    t = threading.Thread(target=stream)
    t.start()
    assert first_event.wait(60), "no first event within 60 s"
    code = s.terminate()
    t.join(60)
    assert code == 0, f"exit code {code} after SIGTERM (None: still running after {SHUTDOWN_TIMEOUT_S} s + grace):\n{s.tail()}"
    assert "error" not in result, result["error"]
    lines = result["lines"]
    assert lines[-1] == "data: [DONE]", lines[-3:]
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["text"]) >= 90
