"""The official `text-generation` client against Kiln's TGI routes (it posts to `POST /`)."""

import asyncio

import pytest
from text_generation import AsyncClient, Client
from text_generation.errors import ValidationError


@pytest.fixture(scope="module")
def client(base_url):
    return Client(base_url, timeout=60)


def test_generate_greedy_with_details(client):
    r = client.generate("The capital of France is", max_new_tokens=4)
    assert "Paris" in r.generated_text
    d = r.details
    assert d.generated_tokens == len(d.tokens) <= 4
    assert d.finish_reason.value in ("length", "eos_token", "stop_sequence")
    assert all(isinstance(t.special, bool) for t in d.tokens)


def test_generate_stop_sequence(client):
    r = client.generate("The capital of France is", max_new_tokens=10, stop_sequences=["Paris"])
    assert r.details.finish_reason.value == "stop_sequence"


def test_generate_stream_tokens_then_final_text(client):
    events = list(client.generate_stream("The capital of France is", max_new_tokens=4))
    text = "".join(e.token.text for e in events)
    assert "Paris" in text
    assert events[-1].generated_text == text
    assert events[-1].details.generated_tokens == len(events)
    assert all(e.generated_text is None for e in events[:-1])


def test_seeded_sampling_repeats(client):
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.8, seed=42)
    assert client.generate("Once upon a time", **kw).generated_text == client.generate("Once upon a time", **kw).generated_text


def test_async_client(base_url):
    async def run():
        c = AsyncClient(base_url, timeout=60)
        r = await c.generate("The capital of France is", max_new_tokens=4)
        text = ""
        async for e in c.generate_stream("The capital of France is", max_new_tokens=4):
            text += e.token.text
        return r.generated_text, text

    full, streamed = asyncio.run(run())
    assert "Paris" in full and "Paris" in streamed


def test_validation_errors_raise_typed_exceptions(client):
    with pytest.raises(ValidationError):
        client.generate("Hello", max_new_tokens=4, temperature=-1.0, do_sample=True)
    with pytest.raises(ValidationError) as e:
        client.generate("Hello " * 3000, max_new_tokens=4)
    assert "2048" in str(e.value)


def test_chat_non_streaming(client):
    # text-generation's chat posts to /v1/chat/completions with model "tgi" and every field set.
    r = client.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=20, temperature=0.01, seed=1)
    assert "Paris" in r.choices[0].message.content
    assert r.system_fingerprint and r.usage["completion_tokens"] > 0
