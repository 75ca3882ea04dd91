"""`huggingface_hub.InferenceClient` (2.4.0) pointed at Kiln's URL.

`text_generation` posts to the URL as given (`POST /`) with only the
parameters that were set; `chat_completion` posts to `/v1/chat/completions`
with model "dummy".
"""

import pytest
from huggingface_hub import InferenceClient

from support import CAPITAL, CAPITAL_PROMPT, MAX_MODEL_LEN, STORY


@pytest.fixture(scope="module")
def client(base_url):
    return InferenceClient(model=base_url, timeout=60)


def test_text_generation_returns_full_text_by_default(client):
    # POST / fills return_full_text=true for a text-generation model, like TGI.
    r = client.text_generation(CAPITAL_PROMPT, max_new_tokens=4)
    assert r.startswith(CAPITAL_PROMPT + " Paris")
    r = client.text_generation(CAPITAL_PROMPT, max_new_tokens=4, return_full_text=False)
    assert r.startswith(" Paris")


def test_text_generation_details(client):
    r = client.text_generation(CAPITAL_PROMPT, max_new_tokens=4, details=True, return_full_text=False)
    assert r.generated_text.startswith(" Paris")
    assert r.details.finish_reason == "length"
    assert r.details.generated_tokens == len(r.details.tokens) == 4
    assert "".join(t.text for t in r.details.tokens) == r.generated_text


def test_text_generation_stop(client):
    r = client.text_generation(CAPITAL_PROMPT, max_new_tokens=10, stop=["."], details=True, return_full_text=False)
    assert r.details.finish_reason == "stop_sequence"
    assert r.generated_text == " Paris."


def test_text_generation_stream(client):
    text = "".join(client.text_generation(CAPITAL_PROMPT, max_new_tokens=4, stream=True))
    assert text.startswith(" Paris")
    events = list(client.text_generation(CAPITAL_PROMPT, max_new_tokens=4, stream=True, details=True))
    assert len(events) == 4
    assert "".join(e.token.text for e in events) == text
    assert all(e.details is None for e in events[:-1])
    last = events[-1]
    assert last.details.finish_reason == "length" and last.details.generated_tokens == 4
    assert last.generated_text.endswith(text)


def test_text_generation_seeded_sampling(client):
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.8, seed=11, return_full_text=False)
    assert client.text_generation("Once upon a time", **kw) == client.text_generation("Once upon a time", **kw)


def test_chat_completion(client):
    r = client.chat_completion(CAPITAL, max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0


def test_chat_completion_stream(client):
    chunks = list(client.chat_completion(CAPITAL, max_tokens=20, temperature=0, stream=True))
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert "Paris" in text
    assert text == client.chat_completion(CAPITAL, max_tokens=20, temperature=0).choices[0].message.content


def test_chat_completion_stream_length(client):
    chunks = [c for c in client.chat_completion(STORY, max_tokens=4, temperature=0, stream=True) if c.choices]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_completions_create(client):
    r = client.chat.completions.create(messages=CAPITAL, max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(messages=CAPITAL, max_tokens=20, temperature=0, stream=True)
        if c.choices
    )
    assert text == r.choices[0].message.content


def test_endpoint_info_and_health(base_url):
    # In huggingface_hub 2.x these two need the provider named explicitly for a URL.
    client = InferenceClient(model=base_url, provider="hf-inference", timeout=60)
    info = client.get_endpoint_info()
    assert info["max_total_tokens"] == MAX_MODEL_LEN and info["max_input_tokens"] < MAX_MODEL_LEN
    assert client.health_check() is True
