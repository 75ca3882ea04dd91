"""The official `ollama` client (0.6.3) against Kiln's Ollama routes.

The client always sends `"stream"` explicitly (false by default) and parses
streams line by line with json.loads, so a blank line would break it.
"""

import asyncio
import json
from datetime import datetime

import httpx
import ollama
import pytest

from support import CAPITAL, CAPITAL_PROMPT, CAPITAL_QUESTION, MAX_MODEL_LEN, SERVED_NAME

GREEDY = {"temperature": 0}
TAGGED = SERVED_NAME + ":latest"


@pytest.fixture(scope="module")
def client(base_url):
    return ollama.Client(host=base_url, timeout=60)


def test_list(client):
    [m] = client.list().models
    assert m.model == TAGGED
    assert isinstance(m.modified_at, datetime)
    assert m.size > 0 and m.digest
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"


def test_show(client):
    for name in (SERVED_NAME, TAGGED):
        info = client.show(name)
        assert info.modelinfo["general.architecture"] == "llama"
        assert info.details.format == "gguf"
        assert info.template  # the chat template
        assert "completion" in info.capabilities


def test_ps(client):
    [m] = client.ps().models
    assert m.model == TAGGED
    assert m.context_length == MAX_MODEL_LEN


def test_version_and_root(base_url):
    # The Python client has no version(); Ollama's CLI and UIs call the route.
    v = httpx.get(base_url + "/api/version", timeout=10).json()
    assert isinstance(v["version"], str) and v["version"]
    r = httpx.get(base_url + "/", timeout=10)
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert httpx.head(base_url + "/", timeout=10).status_code == 200


def test_chat(client):
    r = client.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY)
    assert r.message.role == "assistant"
    assert "Paris" in r.message.content
    assert r.done and r.done_reason == "stop"
    assert r.eval_count > 0 and r.prompt_eval_count > 0
    assert r.total_duration > 0 and r.eval_duration > 0  # nanoseconds


def test_chat_with_tag_and_system_message(client):
    messages = [{"role": "system", "content": "You are a helpful assistant."}] + CAPITAL
    r = client.chat(model=TAGGED, messages=messages, options=GREEDY)
    assert "Paris" in r.message.content


def test_chat_stream(client):
    parts = list(client.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY, stream=True))
    text = "".join(p.message.content for p in parts)
    assert "Paris" in text
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert not any(p.done for p in parts[:-1])
    assert text == client.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY).message.content


def test_generate(client):
    r = client.generate(model=SERVED_NAME, prompt=CAPITAL_QUESTION, options=GREEDY)  # through the chat template
    assert "Paris" in r.response and r.done and r.prompt_eval_count > 0
    r = client.generate(model=SERVED_NAME, prompt=CAPITAL_PROMPT, raw=True, options={"temperature": 0, "num_predict": 4})
    assert r.response.startswith(" Paris")
    assert r.done_reason == "length" and r.eval_count == 4
    assert r.context and all(isinstance(t, int) for t in r.context)


def test_generate_stream(client):
    parts = list(client.generate(model=SERVED_NAME, prompt=CAPITAL_QUESTION, options=GREEDY, stream=True))
    assert "Paris" in "".join(p.response for p in parts)
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].eval_count > 0


def test_options_seed_and_stop(client):
    kw = dict(model=SERVED_NAME, prompt="Once upon a time", raw=True, options={"temperature": 0.8, "seed": 9, "num_predict": 12})
    assert client.generate(**kw).response == client.generate(**kw).response
    r = client.chat(model=SERVED_NAME, messages=CAPITAL, options={"temperature": 0, "stop": ["Paris"]})
    assert "Paris" not in r.message.content
    assert r.message.content.startswith("The capital of France is")
    assert r.done_reason == "stop"


def test_generate_context_is_prepended(client):
    first = client.generate(model=SERVED_NAME, prompt="My name is Bob.", options={"temperature": 0, "num_predict": 8})
    alone = client.generate(model=SERVED_NAME, prompt="What is my name?", options={"temperature": 0, "num_predict": 4})
    follow = client.generate(model=SERVED_NAME, prompt="What is my name?", context=first.context, options={"temperature": 0, "num_predict": 4})
    assert follow.prompt_eval_count == len(first.context) + alone.prompt_eval_count
    assert follow.context[: len(first.context)] == first.context


def test_ndjson_framing(base_url):
    body = {"model": SERVED_NAME, "prompt": "Hi", "options": {"num_predict": 3}}  # streams by default
    with httpx.stream("POST", base_url + "/api/generate", json=body, timeout=60) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("application/x-ndjson")
        raw = s.read().decode()
    lines = raw.split("\n")
    assert lines[-1] == "" and all(lines[:-1]), repr(raw)  # one object per line, no blank lines
    objs = [json.loads(line) for line in lines[:-1]]
    assert objs[-1]["done"] and objs[-1]["done_reason"] == "length" and objs[-1]["eval_count"] == 3
    assert not any(o["done"] for o in objs[:-1])


def test_async_client(base_url):
    async def run():
        c = ollama.AsyncClient(host=base_url, timeout=60)
        r = await c.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY)
        parts = [p async for p in await c.generate(model=SERVED_NAME, prompt=CAPITAL_QUESTION, options=GREEDY, stream=True)]
        return r, parts

    r, parts = asyncio.run(run())
    assert "Paris" in r.message.content
    assert "Paris" in "".join(p.response for p in parts)


def test_errors(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=CAPITAL)
    assert e.value.status_code == 404 and "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=SERVED_NAME, prompt="Hi", options={"num_predict": "many"})
    assert e.value.status_code == 400 and "num_predict" in e.value.error
