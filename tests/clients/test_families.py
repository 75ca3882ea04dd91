"""Model families beyond Llama, served and queried through the official
clients of all three dialects: the real Qwen2.5-Coder 0.5B Instruct Q4_K_M
(qwen2, chat template from its GGUF) and Gemma 3 270M Q4_K_M (gemma3; a base
model, whose GGUF carries no chat template, so it is prompted directly and
chat is refused with a clear error)."""

import httpx
import ollama
import pytest
from huggingface_hub import InferenceClient
from openai import BadRequestError, OpenAI
from text_generation import Client as TgiClient

from conftest import KilnServer

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def qwen():
    s = KilnServer("kiln-serve-qwen2", model_env="KILN_TEST_QWEN_GGUF", served_name="qwen", max_model_len=1024)
    yield s
    s.stop_and_check()


@pytest.fixture(scope="module")
def gemma():
    s = KilnServer("kiln-serve-gemma3", model_env="KILN_TEST_GEMMA_GGUF", served_name="gemma", max_model_len=1024)
    yield s
    s.stop_and_check()


def show(server, name):
    r = httpx.post(server.url + "/api/show", json={"model": name}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_qwen_answers_through_every_dialect(qwen):
    openai = OpenAI(base_url=qwen.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    r = openai.chat.completions.create(model="qwen", messages=QUESTION, temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content

    tgi = TgiClient(qwen.url, timeout=120)
    r = tgi.chat(messages=QUESTION, temperature=0.01, max_tokens=16)
    assert "Paris" in r.choices[0].message.content

    hf = InferenceClient(qwen.url)
    r = hf.chat_completion(messages=QUESTION, temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content

    r = ollama.Client(host=qwen.url, timeout=120).chat(
        model="qwen", messages=[{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
        options={"temperature": 0})
    assert r.message.content.strip().startswith("5")


def test_qwen_is_shown_as_its_family(qwen):
    d = show(qwen, "qwen")
    assert d["details"]["family"] == "qwen2"
    assert d["details"]["quantization_level"] == "Q4_K_M"
    info = d["model_info"]
    assert info["general.architecture"] == "qwen2"
    assert info["qwen2.attention.head_count"] == 14 and info["qwen2.attention.head_count_kv"] == 2
    assert info["qwen2.block_count"] == 24
    assert "<|im_start|>" in d["template"]
    tgi_info = httpx.get(qwen.url + "/info", timeout=30).json()
    assert tgi_info["max_input_tokens"] < tgi_info["max_total_tokens"] == 1024


# A base model continues a pattern: " Paris. The capital of Germany is Berlin".
PATTERN = "The capital of Italy is Rome. The capital of France is"


def test_gemma_completes_prompts_and_refuses_chat_without_a_template(gemma):
    openai = OpenAI(base_url=gemma.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    r = openai.completions.create(model="gemma", prompt=PATTERN, temperature=0, max_tokens=8)
    assert r.choices[0].text.startswith(" Paris")
    r = TgiClient(gemma.url, timeout=120).generate(PATTERN, max_new_tokens=8)
    assert r.generated_text.startswith(" Paris")
    r = ollama.Client(host=gemma.url, timeout=120).generate(
        model="gemma", prompt=PATTERN, raw=True, options={"temperature": 0, "num_predict": 8})
    assert r.response.startswith(" Paris")
    with pytest.raises(BadRequestError) as e:
        openai.chat.completions.create(model="gemma", messages=QUESTION, max_tokens=4)
    assert "chat template" in str(e.value) and "--chat-template" in str(e.value)
    d = show(gemma, "gemma")
    assert (d["details"]["family"], d["details"]["quantization_level"]) == ("gemma3", "Q4_K_M")
    assert d["model_info"]["gemma3.block_count"] == 18
