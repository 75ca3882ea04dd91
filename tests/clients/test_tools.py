"""Tool calling through the official clients: OpenAI `tools` with
`tool_choice` required, named and auto, whole and streamed (every call's
arguments must validate with `jsonschema` against the tool's parameters),
and Ollama `chat(tools=[python_function])` returning `message.tool_calls`."""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest
from openai import OpenAI

from support import SERVED_NAME

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone.",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300)


def assert_valid_calls(calls, names=SCHEMAS) -> None:
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_choice_returns_valid_calls(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
        temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None
    assert_valid_calls(choice.message.tool_calls)


def test_named_choice_calls_that_function(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0.8, seed=3, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    assert_valid_calls(choice.message.tool_calls)


def test_single_call_when_parallel_calls_are_off(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, temperature=0.9, seed=11, max_tokens=200)
    assert len(r.choices[0].message.tool_calls) == 1
    assert_valid_calls(r.choices[0].message.tool_calls)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_calls_assemble_like_openai(client, tool_choice):
    stream = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS, tool_choice=tool_choice,
        temperature=0, max_tokens=200, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
            if piece.id:
                assert call["id"] is None, "the id comes once, in the first chunk of a call"
                call["id"] = piece.id
                call["name"] = piece.function.name
                assert piece.type == "function"
            call["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls
    for call in calls.values():
        assert call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_auto_choice_answers_or_calls(client):
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS, tool_choice="auto",
        temperature=0, max_tokens=40)
    choice = r.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        assert_valid_calls(choice.message.tool_calls)
    else:
        assert choice.finish_reason in {"stop", "length"}
        assert choice.message.content


def test_tool_results_in_the_history_are_accepted(client):
    first = client.chat.completions.create(
        model=SERVED_NAME, messages=ASK, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=200)
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    r = client.chat.completions.create(
        model=SERVED_NAME, messages=messages, tools=TOOLS, tool_choice="none",
        temperature=0, max_tokens=30)
    assert r.choices[0].message.content
    assert not r.choices[0].message.tool_calls


def test_bad_tool_requests_are_400(client):
    import openai
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=SERVED_NAME, messages=ASK, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "no_such_tool"}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SERVED_NAME, messages=ASK, tool_choice="required")


def add_two_numbers(a: int, b: int) -> int:
    """Add two numbers.

    Args:
      a: The first number
      b: The second number

    Returns:
      The sum of the two numbers
    """
    return a + b


def ollama_conversation() -> list[dict]:
    """Worked examples in the history, so that even a small model writes
    the call in the `<tool_call>` format the server parses."""
    messages = [{"role": "system", "content": "You only answer with a <tool_call> calling add_two_numbers."}]
    for a, b in [(1, 2), (5, 9), (7, 3)]:
        messages += [
            {"role": "user", "content": f"Use the tool: add {a} and {b}."},
            {"role": "assistant",
             "content": f'<tool_call>\n{{"name": "add_two_numbers", "arguments": {{"a": {a}, "b": {b}}}}}\n</tool_call>'},
        ]
    return messages + [{"role": "user", "content": "Use the tool: add 3 and 4."}]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_chat_with_a_python_function_returns_tool_calls(base_url, stream):
    client = ollama.Client(host=base_url)
    if stream:
        calls = []
        for part in client.chat(model=SERVED_NAME, messages=ollama_conversation(),
                                tools=[add_two_numbers], stream=True,
                                options={"temperature": 0, "num_predict": 60}):
            calls += part.message.tool_calls or []
    else:
        r = client.chat(model=SERVED_NAME, messages=ollama_conversation(), tools=[add_two_numbers],
                        options={"temperature": 0, "num_predict": 60})
        calls = r.message.tool_calls or []
        assert r.done
    assert calls, "no tool calls"
    assert calls[0].function.name == "add_two_numbers"
    arguments = dict(calls[0].function.arguments)
    assert arguments == {"a": 3, "b": 4}
    assert add_two_numbers(**arguments) == 7
