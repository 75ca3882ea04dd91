"""The official `ollama` client against Kiln's Ollama routes."""

import ollama
import pytest

from conftest import CAPITAL, SERVED_NAME

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(base_url):
    return ollama.Client(host=base_url, timeout=60)


def test_list_and_show(client):
    names = [m.model for m in client.list().models]
    assert any(n.split(":")[0] == SERVED_NAME for n in names), names
    info = client.show(SERVED_NAME)
    assert info.modelinfo is not None
    assert info.details.family


def test_ps(client):
    assert client.ps().models is not None


def test_chat(client):
    r = client.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY)
    assert "Paris" in r.message.content
    assert r.message.role == "assistant"
    assert r.done and r.done_reason == "stop"
    assert r.eval_count > 0 and r.prompt_eval_count > 0


def test_chat_stream(client):
    parts = list(client.chat(model=SERVED_NAME, messages=CAPITAL, options=GREEDY, stream=True))
    assert "Paris" in "".join(p.message.content for p in parts)
    assert parts[-1].done and not any(p.done for p in parts[:-1])


def test_generate_and_stream(client):
    r = client.generate(model=SERVED_NAME, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 4})
    assert "Paris" in r.response
    assert r.done_reason == "length" and r.eval_count == 4
    text = "".join(p.response for p in client.generate(model=SERVED_NAME, prompt="What is the capital of France?", options=GREEDY, stream=True))
    assert "Paris" in text


def test_options_seed_and_stop(client):
    kw = dict(model=SERVED_NAME, prompt="Once upon a time", raw=True, options={"temperature": 0.8, "seed": 9, "num_predict": 12})
    assert client.generate(**kw).response == client.generate(**kw).response
    r = client.chat(model=SERVED_NAME, messages=CAPITAL, options={"temperature": 0, "stop": ["Paris"]})
    assert "Paris" not in r.message.content


def test_unknown_model_is_a_404(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=CAPITAL)
    assert e.value.status_code == 404
