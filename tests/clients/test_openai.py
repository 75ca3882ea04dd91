"""The official `openai` client against Kiln's OpenAI routes."""

import httpx
import openai
import pytest
from openai import OpenAI

from conftest import CAPITAL, SERVED_NAME


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def test_models_list_reports_the_served_name(client):
    ids = [m.id for m in client.models.list().data]
    assert SERVED_NAME in ids


def test_greedy_chat_answers_paris(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_any_model_name_is_accepted(client):
    r = client.chat.completions.create(model="dummy", messages=CAPITAL, temperature=0, max_tokens=12)
    assert "Paris" in r.choices[0].message.content


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20,
        stream=True, stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "Paris" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_chat_stream_helper(client):
    with client.chat.completions.stream(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20) as s:
        final = s.get_final_completion()
    assert "Paris" in final.choices[0].message.content


def test_completion_string_list_and_token_ids(client, base_url):
    r = client.completions.create(model=SERVED_NAME, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert "Paris" in r.choices[0].text
    r = client.completions.create(model=SERVED_NAME, prompt=["One, two,", "Monday, Tuesday,"], max_tokens=3, temperature=0)
    assert len(r.choices) == 2 and {c.index for c in r.choices} == {0, 1}
    tok = httpx.post(base_url + "/tokenize", json={"prompt": "The capital of France is"}).json()
    ids = tok["tokens"]
    assert tok["count"] == len(ids) > 0
    r = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens == len(ids)
    assert "Paris" in r.choices[0].text


def test_completion_echo_and_stream(client):
    r = client.completions.create(model=SERVED_NAME, prompt="Hello there", max_tokens=3, echo=True, temperature=0)
    assert r.choices[0].text.startswith("Hello there")
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(model=SERVED_NAME, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True)
        if c.choices
    )
    assert "Paris" in text


def test_n2_gives_two_choices(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, n=2, temperature=0.8, seed=5, max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1]


def test_logprobs_chat_and_completion(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for tok in content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert tok.logprob >= max(t.logprob for t in tok.top_logprobs) - 1e-4
    r = client.completions.create(model=SERVED_NAME, prompt="The capital of France is", max_tokens=3, logprobs=2, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and all(len(t) >= 1 for t in lp.top_logprobs)


def test_stop_string_is_honoured_and_not_emitted(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].message.content.startswith("The capital of France is")
    assert r.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(client):
    kw = dict(model=SERVED_NAME, messages=[{"role": "user", "content": "Tell me a story."}], temperature=0.8, seed=123, max_tokens=24)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_vllm_extras_via_extra_body(client):
    r = client.completions.create(
        model=SERVED_NAME, prompt="Hi", max_tokens=6, temperature=0.7, seed=1,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True, "min_tokens": 6},
    )
    assert r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"


def test_errors_map_to_client_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=-1)
    assert e.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=SERVED_NAME, prompt="x " * 3000, max_tokens=4)
    assert "2048" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, response_format={"type": "json_object"})
