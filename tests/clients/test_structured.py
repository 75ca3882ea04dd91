"""Structured outputs through the official clients: OpenAI `parse` with a
pydantic model and `json_schema` on 50 generated schemas (every output must
validate with `jsonschema`), Ollama `format`, TGI `grammar` through
`huggingface_hub` and `text-generation`."""

from __future__ import annotations

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import ollama
import pytest
from huggingface_hub import InferenceClient
from openai import OpenAI
from pydantic import BaseModel
from text_generation import Client as TgiClient
from text_generation.types import Grammar, GrammarType

from support import SERVED_NAME

NAMES = ["name", "city", "age", "color", "tags", "score", "active", "owner", "size", "title",
         "count", "items", "level", "email", "price", "kind"]


def _value(rng: random.Random, depth: int) -> dict:
    kind = rng.randrange(6 if depth < 2 else 5)
    if kind == 0:
        return {"type": "string", "maxLength": 24}
    if kind == 1:
        return {"type": "integer", "minimum": 0, "maximum": 1000}
    if kind == 2:
        return {"type": "boolean"}
    if kind == 3:
        return {"enum": ["red", "green", "blue", "small", "large"][: 2 + rng.randrange(3)]}
    if kind == 4:
        leaf = rng.choice([
            {"type": "string", "maxLength": 12},
            {"type": "integer", "minimum": -5, "maximum": 50},
            {"enum": ["a", "b", "c"]},
        ])
        return {"type": "array", "items": leaf, "maxItems": 3}
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int = 0) -> dict:
    names = rng.sample(NAMES, 2 + rng.randrange(4))
    props = {n: _value(rng, depth) for n in names}
    required = [n for n in names if rng.randrange(4)]
    return {"type": "object", "properties": props, "required": required}


def generated_schemas(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [_object(rng) for _ in range(count)]


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


class City(BaseModel):
    name: str
    country: str
    population: int


def test_openai_parse_returns_a_pydantic_object(client):
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    r = parse(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Describe Paris as JSON with name, country and population."}],
        response_format=City,
        temperature=0,
        max_tokens=200,
    )
    city = r.choices[0].message.parsed
    assert isinstance(city, City), r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_json_schema_is_honoured_on_fifty_generated_schemas(client):
    schemas = generated_schemas(50, 2024)

    def one(i_schema):
        i, schema = i_schema
        r = client.chat.completions.create(
            model=SERVED_NAME,
            messages=[{"role": "user", "content": "Describe something you like as a JSON object."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}},
            temperature=0.7,
            seed=i,
            max_tokens=400,
        )
        return schema, r.choices[0]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, enumerate(schemas)))
    for schema, choice in results:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_and_vllm_extras(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    r = client.completions.create(
        model=SERVED_NAME, prompt="The best color is", max_tokens=10,
        extra_body={"guided_choice": ["red", "green", "blue"]})
    assert r.choices[0].text in {"red", "green", "blue"}
    r = client.completions.create(
        model=SERVED_NAME, prompt="A US phone number:", max_tokens=20,
        extra_body={"structured_outputs": {"regex": r"\(\d{3}\) \d{3}-\d{4}"}})
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", r.choices[0].text), r.choices[0].text


def test_constrained_streaming_with_n_and_length(client):
    stream = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Describe a dog as JSON."}],
        response_format={"type": "json_object"}, n=2, temperature=0.8, seed=3, max_tokens=5, stream=True)
    text = {0: "", 1: ""}
    reasons = {}
    for chunk in stream:
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    assert set(reasons) == {0, 1}
    for i, reason in reasons.items():
        assert text[i].startswith("{"), text
        if reason == "stop":
            assert isinstance(json.loads(text[i]), dict), text[i]
        else:
            assert reason == "length"


def test_bad_schema_is_a_400_naming_it(client):
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}})
    assert "json_schema" in str(e.value)


class Pet(BaseModel):
    name: str
    species: str
    age: int


def test_ollama_format_schema_validates(base_url):
    r = ollama.Client(host=base_url).chat(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Describe a pet as JSON."}],
        format=Pet.model_json_schema(), options={"temperature": 0, "num_predict": 200})
    Pet.model_validate_json(r.message.content)
    r = ollama.Client(host=base_url).generate(
        model=SERVED_NAME, prompt="A JSON object about the sea:", format="json",
        options={"temperature": 0, "num_predict": 200})
    assert r.response.startswith("{"), r.response
    if r.done_reason == "stop":
        assert isinstance(json.loads(r.response), dict), r.response


def test_hf_hub_text_generation_grammar(base_url):
    client = InferenceClient(model=base_url, timeout=120)
    prompt = "The year the Eiffel Tower was built:"
    out = client.text_generation(prompt, max_new_tokens=8, return_full_text=False,
                                 grammar={"type": "regex", "value": "[0-9]{4}"})
    assert re.fullmatch(r"[0-9]{4}", out), out
    out = client.text_generation("A pet as JSON:", max_new_tokens=200, return_full_text=False,
                                 grammar={"type": "json", "value": Pet.model_json_schema()})
    Pet.model_validate_json(out)


def test_text_generation_client_grammar(base_url):
    r = TgiClient(base_url, timeout=120).generate(
        "A pet as JSON:", max_new_tokens=200,
        grammar=Grammar(type=GrammarType.Json, value=Pet.model_json_schema()))
    Pet.model_validate_json(r.generated_text)
