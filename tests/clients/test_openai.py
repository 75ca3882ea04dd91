"""The official `openai` client (3.54.0) against Kiln's OpenAI/vLLM routes."""

import uuid

import httpx
import openai
import pytest
from openai import OpenAI

from support import CAPITAL, CAPITAL_PROMPT, MAX_MODEL_LEN, SERVED_NAME, STORY, sse_events, tokenize


@pytest.fixture(scope="module")
def client(base_url):
    # max_retries=0: a 5xx must fail the test, not be retried into a pass.
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


# ---- models ---------------------------------------------------------------


def test_models_list(client):
    models = client.models.list().data
    assert [m.id for m in models] == [SERVED_NAME]
    assert models[0].object == "model"
    assert models[0].max_model_len == MAX_MODEL_LEN  # vLLM's extra field


def test_unknown_model_card_is_not_found(client):
    # vLLM has no GET /v1/models/{id} at all; either way an unknown id is a 404.
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.status_code == 404
    assert e.value.body["code"] == 404


# ---- chat -----------------------------------------------------------------


def test_chat_greedy_answers_paris(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == SERVED_NAME
    [choice] = r.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_accepts_any_model_name_and_max_completion_tokens(client):
    r = client.chat.completions.create(model="dummy", messages=CAPITAL, temperature=0, max_completion_tokens=20)
    assert "Paris" in r.choices[0].message.content


def test_chat_content_parts_and_multi_turn(client):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you?"},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ]
    r = client.chat.completions.create(model=SERVED_NAME, messages=messages, temperature=0, max_tokens=20)
    assert "Paris" in r.choices[0].message.content


def test_chat_length_limit(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=STORY, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_chat_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20,
            stream=True, stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    # First chunk announces the role; the usage chunk comes last with no choices.
    assert chunks[0].choices[0].delta.role == "assistant"
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert all(c.usage is None for c in content_chunks)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    finishes = [c.choices[0].finish_reason for c in content_chunks]
    assert "Paris" in text
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    u = usage_chunk.usage
    assert u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    # Same text as the non-streaming answer.
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20)
    assert r.choices[0].message.content == text
    assert r.usage.completion_tokens == u.completion_tokens


def test_chat_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_chat_stream_helper_final_completion(client):
    with client.chat.completions.stream(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20) as s:
        final = s.get_final_completion()
    assert "Paris" in final.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


def test_chat_sse_framing(base_url):
    body = {"model": SERVED_NAME, "messages": CAPITAL, "temperature": 0, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    events = sse_events(lines)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert "data: [DONE]" in lines  # exactly this spelling: huggingface_hub needs the space


# ---- completions ------------------------------------------------------------


def test_completion_string_prompt(client):
    r = client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, max_tokens=4, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text.startswith(" Paris")
    assert r.usage.completion_tokens <= 4


def test_completion_list_of_strings(client):
    prompts = [CAPITAL_PROMPT, "One, two, three,"]
    r = client.completions.create(model=SERVED_NAME, prompt=prompts, max_tokens=3, temperature=0)
    assert sorted(c.index for c in r.choices) == [0, 1]
    by_index = {c.index: c.text for c in r.choices}
    assert "Paris" in by_index[0]
    # Each prompt answers as it does alone.
    alone = client.completions.create(model=SERVED_NAME, prompt=prompts[1], max_tokens=3, temperature=0)
    assert by_index[1] == alone.choices[0].text


def test_completion_token_ids(client, base_url):
    ids = tokenize(base_url, CAPITAL_PROMPT)
    r = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens == len(ids)
    assert r.choices[0].text.startswith(" Paris")
    # A list of token-id lists is a batch.
    other = tokenize(base_url, "One, two, three,")
    r = client.completions.create(model=SERVED_NAME, prompt=[ids, other], max_tokens=3, temperature=0)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert "Paris" in {c.index: c.text for c in r.choices}[0]


def test_completion_echo(client, base_url):
    r = client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, max_tokens=3, echo=True, temperature=0)
    text = r.choices[0].text
    assert text.startswith(CAPITAL_PROMPT + " Paris"), text
    ids = tokenize(base_url, CAPITAL_PROMPT)
    r = client.completions.create(model=SERVED_NAME, prompt=ids, max_tokens=3, echo=True, temperature=0)
    assert r.choices[0].text == text


def test_completion_stream_with_usage(client):
    chunks = list(
        client.completions.create(
            model=SERVED_NAME, prompt=CAPITAL_PROMPT, max_tokens=5, temperature=0,
            stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
    )
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 5
    text = "".join(c.choices[0].text for c in content_chunks)
    assert text.startswith(" Paris")
    assert content_chunks[-1].choices[0].finish_reason == "length"
    r = client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    assert r.choices[0].text == text


def test_stream_options_without_stream_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=2, stream_options={"include_usage": True})
    assert "stream" in e.value.message


# ---- n, logprobs, stop, seeds, vLLM extras ------------------------------------


def test_n2_greedy_choices_are_identical(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, n=2, temperature=0, max_tokens=20)
    assert sorted(c.index for c in r.choices) == [0, 1]
    texts = [c.message.content for c in r.choices]
    assert texts[0] == texts[1] and "Paris" in texts[0]


def test_n2_seeded_stream_matches_non_stream(client):
    kw = dict(model=SERVED_NAME, messages=STORY, n=2, temperature=0.8, seed=7, max_tokens=12)
    r = client.chat.completions.create(**kw)
    whole = {c.index: c.message.content for c in r.choices}
    assert set(whole) == {0, 1} and all(whole.values())
    streamed = {0: "", 1: ""}
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == whole
    assert r.usage.completion_tokens == 24


def test_n2_completions(client):
    r = client.completions.create(
        model=SERVED_NAME, prompt="Once upon a time", n=2, max_tokens=6, temperature=0.9, seed=3,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.text and c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 12


def test_chat_logprobs(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, logprobs=True, top_logprobs=3,
    )
    choice = r.choices[0]
    content = choice.logprobs.content
    assert len(content) == r.usage.completion_tokens
    # The tokens spell out the answer (the end-of-turn token, if counted, comes last).
    assert "".join(t.token for t in content).startswith(choice.message.content)
    for tok in content:
        assert tok.logprob <= 0
        assert len(tok.top_logprobs) == 3
        assert tok.bytes == list(tok.token.encode())
        tops = [t.logprob for t in tok.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert tok.token == tok.top_logprobs[0].token
        assert tok.logprob == pytest.approx(tops[0], abs=1e-4)


def test_completion_logprobs(client):
    r = client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, max_tokens=3, logprobs=2, temperature=0)
    choice = r.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3
    assert "".join(lp.tokens) == choice.text
    assert lp.tokens[0] == " Paris"
    assert lp.text_offset == sorted(lp.text_offset)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2
        assert max(top, key=top.get) == token
        assert top[token] == pytest.approx(logprob, abs=1e-4)


def test_stop_string_chat(client):
    r = client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, stop=["Paris"])
    choice = r.choices[0]
    assert "Paris" not in choice.message.content
    assert choice.message.content.startswith("The capital of France is")
    assert choice.finish_reason == "stop"
    assert choice.stop_reason == "Paris"  # vLLM's extra field


def test_stop_string_inside_a_token(client):
    # " Paris" is one token; the stop string ends inside it, so the text is cut mid-token.
    r = client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, temperature=0, max_tokens=8, stop=["aris", "never"])
    assert r.choices[0].text == " P"
    assert r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=SERVED_NAME, prompt=CAPITAL_PROMPT, temperature=0, max_tokens=8, stop=["aris"], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == " P"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_string_streaming_chat(client):
    text, finish = "", None
    for chunk in client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, stop=[" Paris"], stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "The capital of France is"
    assert finish == "stop"


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model=SERVED_NAME, messages=STORY, temperature=0.8, max_tokens=24)
    a = client.chat.completions.create(seed=123, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=123, **kw).choices[0].message.content
    assert a == b
    others = {client.chat.completions.create(seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "four different seeds all gave the same 24 sampled tokens"
    kw = dict(model=SERVED_NAME, prompt="Once upon a time", temperature=0.8, max_tokens=16, seed=123)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_vllm_extra_sampling_params(client):
    r = client.completions.create(
        model=SERVED_NAME, prompt="Hi", max_tokens=6, temperature=0.7, seed=1,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True, "min_tokens": 6},
    )
    assert r.usage.completion_tokens == 6
    assert r.choices[0].finish_reason == "length"


def test_unknown_fields_are_ignored(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=CAPITAL, temperature=0, max_tokens=20, user="someone",
        extra_body={"some_future_field": {"x": 1}},
    )
    assert "Paris" in r.choices[0].message.content


def test_multibyte_text_streams_intact(client):
    kw = dict(model=SERVED_NAME, prompt="Emoji party: 🎉🎉", max_tokens=9, temperature=0)  # 3 tokens per emoji
    whole = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert "🎉" in whole and "\ufffd" not in whole
    assert streamed == whole


def test_tokenize_detokenize_round_trip(base_url):
    text = "Café 🍕 naïve — 東京"
    r = httpx.post(base_url + "/tokenize", json={"prompt": text}, timeout=10).json()
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == MAX_MODEL_LEN
    back = httpx.post(base_url + "/detokenize", json={"tokens": r["tokens"]}, timeout=10).json()
    assert back["prompt"] == text
    chat = httpx.post(base_url + "/tokenize", json={"messages": CAPITAL}, timeout=10).json()
    answer = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0).chat.completions.create(
        model=SERVED_NAME, messages=CAPITAL, max_tokens=1
    )
    assert chat["count"] == answer.usage.prompt_tokens


# ---- errors through the client --------------------------------------------------


def test_errors_map_to_client_exceptions(client, base_url):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SERVED_NAME, messages=CAPITAL, temperature=-1)
    assert e.value.status_code == 400 and e.value.body["code"] == 400 and e.value.type
    long_prompt = "hello " * 3000
    n = len(tokenize(base_url, long_prompt))
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=SERVED_NAME, prompt=long_prompt, max_tokens=4)
    assert str(MAX_MODEL_LEN) in e.value.message and str(n) in e.value.message


# ---- batching ---------------------------------------------------------------------


def test_concurrent_requests_match_serial(client):
    """A request's tokens do not depend on what else is in the batch."""
    from concurrent.futures import ThreadPoolExecutor

    def run(i):
        if i % 2:
            r = client.chat.completions.create(model=SERVED_NAME, messages=STORY, temperature=0.8, seed=100 + i, max_tokens=16)
            return r.choices[0].message.content
        r = client.completions.create(model=SERVED_NAME, prompt=f"Item {i}: the weather today is", temperature=0, max_tokens=16)
        return r.choices[0].text

    serial = [run(i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(run, range(8)))
    assert concurrent == serial


def test_prefix_cache_hits_are_reported_as_cached_tokens(client):
    # A fresh 100-token-plus prompt: nothing of it is cached the first time;
    # the second time every full 16-token block before the last token is.
    text = "Prefix caching check, run " + str(uuid.uuid4()) + ". " + " ".join(f"item{i}" for i in range(60))
    first = client.completions.create(model=SERVED_NAME, prompt=text, max_tokens=1, temperature=0)
    second = client.completions.create(model=SERVED_NAME, prompt=text, max_tokens=1, temperature=0)
    prompt_tokens = second.usage.prompt_tokens
    assert prompt_tokens > 64
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == (prompt_tokens - 1) // 16 * 16, (cached, prompt_tokens)


def test_completion_best_of_returns_the_n_most_likely(client):
    r = client.completions.create(
        model=SERVED_NAME, prompt="Once upon a time", n=2, best_of=4, max_tokens=6, temperature=1.0, seed=5
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.logprobs is None for c in r.choices)  # used for ranking, not asked for
    ranked = client.completions.create(
        model=SERVED_NAME, prompt="Once upon a time", n=4, max_tokens=6, temperature=1.0, seed=5, logprobs=0
    )
    by_likelihood = sorted(ranked.choices, key=lambda c: -sum(c.logprobs.token_logprobs))
    assert [c.text for c in r.choices] == [c.text for c in by_likelihood[:2]]
