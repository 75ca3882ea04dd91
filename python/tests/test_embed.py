"""`LLM.embed` on the real all-MiniLM-L6-v2 (a BERT encoder), against the
sentence-transformers vectors committed in tests/fixtures/embeddings."""

import json
import math
from pathlib import Path

import pytest

import kiln
from kiln import LLM, PoolingParams, SamplingParams

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "embeddings" / "minilm.json"


@pytest.fixture(scope="module")
def encoder():
    return LLM("all-minilm-l6-v2", max_model_len=256, kv_cache_memory_bytes=32 << 20)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_match_sentence_transformers(encoder):
    reference = json.loads(FIXTURE.read_text())["sentences"]
    outs = encoder.embed([s["text"] for s in reference], use_tqdm=False)
    assert len(outs) == len(reference) >= 3
    for out, ref in zip(outs, reference):
        assert out.prompt_token_ids == ref["ids"]
        assert len(out.outputs.embedding) == 384
        assert cosine(out.outputs.embedding, ref["embedding"]) >= 0.9999
        assert math.isclose(sum(x * x for x in out.outputs.embedding), 1.0, rel_tol=1e-4)


def test_token_id_inputs_and_normalize_off(encoder):
    reference = json.loads(FIXTURE.read_text())["sentences"][0]
    [by_ids] = encoder.embed([reference["ids"]], PoolingParams(normalize=False), use_tqdm=False)
    norm = math.sqrt(sum(x * x for x in by_ids.outputs.embedding))
    assert norm > 1.01  # mean-pooled, not normalized
    assert cosine(by_ids.outputs.embedding, reference["embedding"]) >= 0.9999


def test_embedding_errors(encoder):
    with pytest.raises(ValueError, match="cannot generate"):
        encoder.generate("Hello", SamplingParams(max_tokens=2), use_tqdm=False)
    with pytest.raises(ValueError, match="matryoshka"):
        encoder.embed("Hello", PoolingParams(dimensions=64), use_tqdm=False)
    with pytest.raises(ValueError, match="empty"):
        encoder.embed("", use_tqdm=False)
    with pytest.raises(ValueError, match="truncat"):
        encoder.embed("word " * 600, use_tqdm=False)
    [cut] = encoder.embed("word " * 600, truncate=True, use_tqdm=False)
    assert len(cut.prompt_token_ids) == 256


def test_a_decoder_embeds_with_its_pooling(llm):
    # Decoder models embed too (vLLM's pooling runner): one hidden-size vector.
    [out] = llm.embed("Hello", use_tqdm=False)
    assert len(out.outputs.embedding) == llm.model_info()["embedding"]["dimensions"] == 576
    assert all(math.isfinite(x) for x in out.outputs.embedding)
    assert isinstance(kiln.EngineError("x"), RuntimeError)
