"""One engine on Kiln's default model, shared by the tests of a session.

The model is resolved as the `kiln` command resolves it (catalog alias, Kiln
cache at $KILN_CACHE); scripts/test.sh pulls it before the suite runs.
"""

import pytest

import kiln

# Small enough for CI's 2 cores, big enough for 64 concurrent prompts.
ENGINE_ARGS = dict(max_model_len=2048, kv_cache_memory_bytes=256 << 20, seed=0)


@pytest.fixture(scope="session")
def llm():
    return kiln.LLM(**ENGINE_ARGS)
