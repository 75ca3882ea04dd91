"""Prompt log-probabilities through the official `openai` client: `echo`
with `logprobs` on completions, and vLLM's `prompt_logprobs` extension on
completions and chat. A prompt token's log-probability must be what the
model gives that token when generating from the prompt before it."""

import math

import pytest
from openai import OpenAI

from support import CAPITAL_PROMPT, SERVED_NAME, tokenize


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_echo_with_logprobs_scores_every_prompt_token(client, base_url):
    ids = tokenize(base_url, CAPITAL_PROMPT)
    r = client.completions.create(
        model=SERVED_NAME, prompt=CAPITAL_PROMPT, echo=True, logprobs=2, max_tokens=3, temperature=0
    )
    [choice] = r.choices
    lp = choice.logprobs
    assert choice.text.startswith(CAPITAL_PROMPT)
    assert len(lp.tokens) == len(ids) + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 and math.isfinite(x) for x in lp.token_logprobs[1:])
    assert all(len(alts) >= 2 for alts in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)


def test_a_prompt_tokens_logprob_is_the_models_logprob_for_it_after_its_prefix(client, base_url):
    ids = tokenize(base_url, CAPITAL_PROMPT)
    r = client.completions.create(
        model=SERVED_NAME, prompt=ids, max_tokens=1, temperature=0, extra_body={"prompt_logprobs": 0}
    )
    scored = r.choices[0].model_extra["prompt_logprobs"]
    assert len(scored) == len(ids) and scored[0] is None
    likely = [k for k in range(1, len(ids)) if scored[k][str(ids[k])]["rank"] <= 5]
    assert len(likely) >= 2, scored  # a natural sentence: most tokens are likely ones
    for k in likely[-2:]:
        entry = scored[k][str(ids[k])]
        g = client.completions.create(
            model=SERVED_NAME, prompt=ids[:k], max_tokens=1, temperature=0, logprobs=5
        )
        alternatives = g.choices[0].logprobs.top_logprobs[0]
        token = entry["decoded_token"]
        assert token in alternatives, (k, token, alternatives)
        assert abs(alternatives[token] - entry["logprob"]) < 1e-3, (k, token, alternatives, entry)
        if entry["rank"] == 1:
            assert g.choices[0].logprobs.tokens[0] == token


def test_prompt_logprobs_on_chat_and_bad_values(client):
    r = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=1,
        extra_body={"prompt_logprobs": 1},
    )
    scored = r.model_extra["prompt_logprobs"]
    assert scored[0] is None
    assert all(len(e) in (1, 2) for e in scored[1:])
    ranks = [v["rank"] for e in scored[1:] for v in e.values()]
    assert 1 in ranks and all(r >= 1 for r in ranks)
    with pytest.raises(Exception) as e:
        client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=1,
                                  extra_body={"prompt_logprobs": 99})
    assert "prompt_logprobs" in str(e.value)
