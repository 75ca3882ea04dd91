"""Embeddings through the official clients against a server of the real
all-MiniLM-L6-v2: `openai` (`client.embeddings.create`, float and base64)
and `ollama` (`embed`, `embeddings`), plus TEI's `/embed` and the error
shapes. Reference vectors are sentence-transformers' (the fixture
tests/fixtures/embeddings/minilm.json, also checked by the Rust tests)."""

import base64
import json
import math
import struct
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from support import EMBEDDING_NAME

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures/embeddings/minilm.json").read_text())
SENTENCES = [s["text"] for s in FIXTURE["sentences"]]
REFERENCE = [s["embedding"] for s in FIXTURE["sentences"]]
DIMENSIONS = 384


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def norm(v):
    return math.sqrt(sum(x * x for x in v))


@pytest.fixture(scope="module")
def url(embedding_server):
    return embedding_server.url


def test_openai_float_matches_sentence_transformers(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    r = client.embeddings.create(model=EMBEDDING_NAME, input=SENTENCES, encoding_format="float")
    assert r.model == EMBEDDING_NAME
    assert [d.index for d in r.data] == list(range(len(SENTENCES)))
    for d, want in zip(r.data, REFERENCE):
        assert len(d.embedding) == DIMENSIONS
        assert abs(norm(d.embedding) - 1) < 1e-5
        assert cosine(d.embedding, want) >= 0.9999
    tokens = sum(len(s["ids"]) for s in FIXTURE["sentences"])
    assert r.usage.prompt_tokens == tokens and r.usage.total_tokens == tokens


def test_openai_base64_is_little_endian_f32(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    floats = client.embeddings.create(model=EMBEDDING_NAME, input=SENTENCES[0])
    # The client asks for base64 by default and decodes it; ask explicitly and decode by hand too.
    raw = httpx.post(url + "/v1/embeddings", json={"input": SENTENCES[0], "encoding_format": "base64"}, timeout=60)
    assert raw.status_code == 200, raw.text
    data = base64.b64decode(raw.json()["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(data) // 4}f", data))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=0)
    # Asked for explicitly, base64 comes back as sent.
    r = client.embeddings.create(model=EMBEDDING_NAME, input=SENTENCES[0], encoding_format="base64")
    assert base64.b64decode(r.data[0].embedding) == data


def test_openai_token_ids_and_errors(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    ids = FIXTURE["sentences"][0]["ids"]
    r = client.embeddings.create(model=EMBEDDING_NAME, input=[ids, ids])
    assert cosine(r.data[1].embedding, REFERENCE[0]) >= 0.9999
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_NAME, input=[])
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_NAME, input="hi", dimensions=64)
    assert "matryoshka" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBEDDING_NAME, input="word " * 400)
    assert "truncate_prompt_tokens" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=EMBEDDING_NAME, prompt="hi")
    assert "embedding model" in e.value.body["message"]


def test_ollama_embed(url):
    client = ollama.Client(host=url, timeout=60)
    r = client.embed(model=EMBEDDING_NAME, input=SENTENCES)
    assert r.model == EMBEDDING_NAME
    assert len(r.embeddings) == len(SENTENCES)
    for got, want in zip(r.embeddings, REFERENCE):
        assert cosine(got, want) >= 0.9999
    assert r.prompt_eval_count == sum(len(s["ids"]) for s in FIXTURE["sentences"])
    assert r.total_duration > 0 and r.load_duration is not None
    long = client.embed(model=EMBEDDING_NAME, input="word " * 400)
    assert long.prompt_eval_count == 256
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model=EMBEDDING_NAME, input="word " * 400, truncate=False)
    assert e.value.status_code == 400 and "truncate" in e.value.error
    legacy = client.embeddings(model=EMBEDDING_NAME, prompt=SENTENCES[0])
    assert cosine(legacy.embedding, REFERENCE[0]) >= 0.9999
    assert "embedding" in client.show(EMBEDDING_NAME).capabilities
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model=EMBEDDING_NAME, prompt="hi")
    assert e.value.status_code == 400


def test_tei_embed(url):
    r = httpx.post(url + "/embed", json={"inputs": SENTENCES}, timeout=60)
    assert r.status_code == 200, r.text
    vectors = r.json()
    assert len(vectors) == len(SENTENCES)
    for got, want in zip(vectors, REFERENCE):
        assert cosine(got, want) >= 0.9999
    raw = httpx.post(url + "/embed", json={"inputs": SENTENCES[0], "normalize": False}, timeout=60).json()[0]
    assert norm(raw) > 1.5
    r = httpx.post(url + "/embed", json={"inputs": []}, timeout=60)
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
