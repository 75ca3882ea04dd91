"""The official `text-generation` client (0.7.0) against Kiln's TGI routes.

`Client.generate` and `generate_stream` post to `POST /` (not `/generate`),
always with `details: true`, and parse the answer strictly with pydantic.
Without sampling parameters it asks for greedy decoding (`do_sample: false`).
"""

import asyncio

import httpx
import pytest
from text_generation import AsyncClient, Client
from text_generation.errors import ValidationError
from text_generation.types import FinishReason

from support import CAPITAL, CAPITAL_PROMPT, MAX_MODEL_LEN, tokenize


@pytest.fixture(scope="module")
def client(base_url):
    return Client(base_url, timeout=60)


def test_generate_greedy_with_details(client, base_url):
    r = client.generate(CAPITAL_PROMPT, max_new_tokens=4)
    assert r.generated_text.startswith(" Paris")  # return_full_text is false: no prompt
    d = r.details
    assert d.finish_reason == FinishReason.Length
    assert d.generated_tokens == len(d.tokens) == 4
    assert d.seed is None  # greedy
    assert d.prefill == []  # decoder_input_details not asked for
    assert "".join(t.text for t in d.tokens) == r.generated_text
    assert d.tokens[0].text == " Paris" and d.tokens[0].special is False
    assert all(t.logprob is not None and t.logprob <= 0 for t in d.tokens)


def test_generate_decoder_input_details_and_top_tokens(client, base_url):
    r = client.generate(CAPITAL_PROMPT, max_new_tokens=3, decoder_input_details=True, top_n_tokens=2)
    ids = tokenize(base_url, CAPITAL_PROMPT)
    assert [t.id for t in r.details.prefill] == ids
    assert "".join(t.text for t in r.details.prefill) == CAPITAL_PROMPT
    # Each prompt token's log-probability given the ones before it; the
    # first has none, as in TGI.
    assert r.details.prefill[0].logprob is None
    assert all(t.logprob is not None and t.logprob <= 0 for t in r.details.prefill[1:])
    assert len(r.details.top_tokens) == 3
    for chosen, top in zip(r.details.tokens, r.details.top_tokens):
        assert len(top) == 2 and top[0].id == chosen.id  # greedy: the best one was taken


def test_best_of_returns_the_other_sequence_too(client):
    r = client.generate(CAPITAL_PROMPT, max_new_tokens=4, best_of=2, do_sample=True)
    [other] = r.details.best_of_sequences
    assert other.generated_tokens == len(other.tokens) == 4
    assert sum(t.logprob for t in r.details.tokens) >= sum(t.logprob for t in other.tokens)


def test_generate_stop_sequence(client):
    # TGI keeps the stop sequence in the text and reports `stop_sequence`.
    r = client.generate(CAPITAL_PROMPT, max_new_tokens=10, stop_sequences=["Paris"])
    assert r.details.finish_reason == FinishReason.StopSequence
    assert r.generated_text == " Paris"


def test_generate_stream_tokens_then_final_text(client):
    events = list(client.generate_stream(CAPITAL_PROMPT, max_new_tokens=4))
    assert len(events) == 4
    text = "".join(e.token.text for e in events)
    assert text.startswith(" Paris")
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == text
    assert last.details.finish_reason == FinishReason.Length
    assert last.details.generated_tokens == 4
    # Same tokens as the non-streaming call.
    assert [e.token.id for e in events] == [t.id for t in client.generate(CAPITAL_PROMPT, max_new_tokens=4).details.tokens]


def test_generate_stream_stop_sequence(client):
    events = list(client.generate_stream(CAPITAL_PROMPT, max_new_tokens=10, stop_sequences=["."]))
    last = events[-1]
    assert last.details.finish_reason == FinishReason.StopSequence
    assert last.details.generated_tokens == len(events)
    assert last.generated_text == " Paris."


def test_seeded_sampling_repeats(client):
    kw = dict(max_new_tokens=12, do_sample=True, temperature=0.8, seed=42)
    a = client.generate("Once upon a time", **kw)
    b = client.generate("Once upon a time", **kw)
    assert a.generated_text == b.generated_text
    assert a.details.seed == 42


def test_async_client(base_url):
    async def run():
        c = AsyncClient(base_url, timeout=60)
        r = await c.generate(CAPITAL_PROMPT, max_new_tokens=3)
        events = [e async for e in c.generate_stream(CAPITAL_PROMPT, max_new_tokens=3)]
        sampled = await c.generate("Once upon a time", max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, seed=5)
        return r, events, sampled

    r, events, sampled = asyncio.run(run())
    assert r.generated_text.startswith(" Paris")
    assert r.details.generated_tokens == 3 and r.details.finish_reason == FinishReason.Length
    assert "".join(e.token.text for e in events) == r.generated_text == events[-1].generated_text
    assert events[-1].details.generated_tokens == 3
    assert sampled.details.generated_tokens <= 8 and sampled.details.seed == 5


def test_validation_errors_raise_typed_exceptions(client, base_url):
    with pytest.raises(ValidationError):
        client.generate("Hello", max_new_tokens=4, temperature=-1.0, do_sample=True)
    long_prompt = "Hello " * 3000
    n = len(tokenize(base_url, long_prompt))
    with pytest.raises(ValidationError) as e:
        client.generate(long_prompt, max_new_tokens=4)
    assert str(MAX_MODEL_LEN) in str(e.value) and str(n) in str(e.value)


def test_chat_non_streaming(client):
    # Client.chat posts to /v1/chat/completions with model "tgi" and every field set (nulls included).
    r = client.chat(CAPITAL, max_tokens=20, temperature=0.01, seed=1)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.system_fingerprint and r.usage["completion_tokens"] > 0


def test_native_routes_raw(base_url):
    # The client only uses POST /; curl users and TGI's own tooling use these.
    body = {"inputs": CAPITAL_PROMPT, "parameters": {"max_new_tokens": 3, "details": True}}
    r = httpx.post(base_url + "/generate", json=body, timeout=60)
    assert r.status_code == 200
    out = r.json()
    assert isinstance(out, dict) and out["generated_text"].startswith(" Paris")
    assert out["details"]["generated_tokens"] == 3
    assert int(r.headers["x-generated-tokens"]) == 3
    assert int(r.headers["x-prompt-tokens"]) == len(tokenize(base_url, CAPITAL_PROMPT))
    # POST / answers with an array and, for a text-generation model, the full text by default.
    r = httpx.post(base_url + "/", json=body, timeout=60)
    assert isinstance(r.json(), list) and r.json()[0]["generated_text"] == CAPITAL_PROMPT + out["generated_text"]
    with httpx.stream("POST", base_url + "/generate_stream", json=body, timeout=60) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in s.iter_lines() if line]
    assert len(lines) == 3 and all(line.startswith("data:") for line in lines)
    assert all("[DONE]" not in line for line in lines)  # TGI streams end without [DONE]
    info = httpx.get(base_url + "/info", timeout=10).json()
    assert info["max_total_tokens"] == MAX_MODEL_LEN and info["model_id"]
