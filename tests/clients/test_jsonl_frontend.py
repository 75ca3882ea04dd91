"""The example frontend crate (examples/jsonl-frontend) mounted with
`--frontend`: one registration makes a new dialect servable, beside others
or alone."""

from __future__ import annotations

import json

import httpx

from support import CAPITAL_PROMPT


def test_jsonl_dialect_answers_alone_and_other_routes_are_absent(kiln_factory):
    s = kiln_factory("kiln-serve-jsonl", "--frontend", "jsonl,metrics")
    body = "\n".join([
        json.dumps({"id": "capital", "prompt": CAPITAL_PROMPT, "max_tokens": 4}),
        json.dumps({"prompt": "Once upon a time", "max_tokens": 3}),
    ])
    r = httpx.post(s.url + "/jsonl", content=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["id"] for line in lines] == ["capital", 1]
    assert "Paris" in lines[0]["text"]
    assert len(lines[1]["token_ids"]) == 3
    bad = httpx.post(s.url + "/jsonl", content='{"prompt": 5}', timeout=10)
    assert bad.status_code == 400 and "line 1" in bad.json()["error"]
    # Only the named families are mounted.
    assert httpx.post(s.url + "/v1/completions", json={"prompt": "x"}, timeout=10).status_code == 404
    assert httpx.get(s.url + "/metrics", timeout=10).status_code == 200
