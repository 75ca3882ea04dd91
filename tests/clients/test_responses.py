"""The official `openai` client (3.54.0) against Kiln's `POST /v1/responses`:
`responses.create` (JSON and `stream=True`), `responses.stream`, structured
text formats, function tools, and the refusal of stored state."""

import json

import openai
import pytest
from openai import OpenAI

from support import CAPITAL_QUESTION, SERVED_NAME

GREEDY = {"temperature": 0}

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_create_answers_with_an_output_text_message(client):
    r = client.responses.create(model=SERVED_NAME, input=CAPITAL_QUESTION, **GREEDY)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == SERVED_NAME
    [message] = r.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert "Paris" in r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_message_items_instructions_and_max_output_tokens(client):
    r = client.responses.create(
        model=SERVED_NAME,
        instructions="You are a helpful assistant.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": CAPITAL_QUESTION}]}],
        max_output_tokens=3,
        metadata={"suite": "clients"},
        store=True,
        **GREEDY,
    )
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3
    assert r.instructions == "You are a helpful assistant."
    assert r.metadata == {"suite": "clients"}


def test_create_stream_sends_ordered_events(client):
    events = list(client.responses.create(model=SERVED_NAME, input=CAPITAL_QUESTION, stream=True, **GREEDY))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Paris" in text
    final = events[-1].response
    assert final.output_text == text
    assert final.id == events[0].response.id
    plain = client.responses.create(model=SERVED_NAME, input=CAPITAL_QUESTION, **GREEDY)
    assert plain.output_text == text


def test_stream_helper_gives_the_final_response(client):
    with client.responses.stream(model=SERVED_NAME, input=CAPITAL_QUESTION, **GREEDY) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    assert "Paris" in final.output_text


def test_json_schema_text_format(client):
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 20}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model=SERVED_NAME,
        input=CAPITAL_QUESTION,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        **GREEDY,
    )
    value = json.loads(r.output_text)
    assert isinstance(value["capital"], str)


def test_required_tool_choice_returns_a_function_call(client):
    r = client.responses.create(
        model=SERVED_NAME,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        **GREEDY,
    )
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls, r.output
    assert calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert calls[0].call_id.startswith("call_")
    # The call and its result go back as input items.
    follow_up = client.responses.create(
        model=SERVED_NAME,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
             "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],
        max_output_tokens=30,
        **GREEDY,
    )
    assert follow_up.status in ("completed", "incomplete")


def test_stored_state_is_refused_with_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=SERVED_NAME, input="Hi", previous_response_id="resp_123")
    assert e.value.status_code == 400
    assert "not stored" in e.value.body["message"]
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(
            model=SERVED_NAME, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        )
    assert "input_text" in e.value.body["message"]
