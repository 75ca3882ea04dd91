"""`huggingface_hub.InferenceClient` pointed at Kiln's URL."""

import pytest
from huggingface_hub import InferenceClient

from conftest import CAPITAL


@pytest.fixture(scope="module")
def client(base_url):
    return InferenceClient(model=base_url, timeout=60)


def test_text_generation(client):
    assert "Paris" in client.text_generation("The capital of France is", max_new_tokens=4)


def test_text_generation_details(client):
    r = client.text_generation("The capital of France is", max_new_tokens=4, details=True)
    assert "Paris" in r.generated_text
    assert r.details.generated_tokens == len(r.details.tokens)
    assert r.details.finish_reason in ("length", "eos_token", "stop_sequence")


def test_text_generation_stream(client):
    text = "".join(client.text_generation("The capital of France is", max_new_tokens=4, stream=True))
    assert "Paris" in text
    events = list(client.text_generation("The capital of France is", max_new_tokens=4, stream=True, details=True))
    assert events[-1].details is not None
    assert "Paris" in "".join(e.token.text for e in events)


def test_chat_completion(client):
    r = client.chat_completion(CAPITAL, max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content


def test_chat_completion_stream(client):
    text = "".join(c.choices[0].delta.content or "" for c in client.chat_completion(CAPITAL, max_tokens=20, temperature=0, stream=True) if c.choices)
    assert "Paris" in text


def test_chat_completions_create_alias(client):
    r = client.chat.completions.create(messages=CAPITAL, max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content


def test_endpoint_info_and_health(client, base_url):
    import httpx

    info = httpx.get(base_url + "/info").json()
    assert info["max_total_tokens"] == 2048
    assert httpx.get(base_url + "/health").status_code == 200
