"""The official OpenAI Python SDK's Responses API (`client.responses`) against the gateway,
served by llm-sim. The reference text is the same SDK's chat API asking llm-sim directly with
the equivalent conversation: the simulator is deterministic."""

import httpx
import openai
import pydantic
import pytest

from conftest import SIM_OUTPUT_TOKENS

INSTRUCTIONS = "You are terse."
QUESTION = "Name three colours."


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def direct(stack):
    return openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)


def said(direct, messages) -> str:
    return direct.chat.completions.create(model="llama3.2", messages=messages).choices[0].message.content


def test_create_answers_with_the_engines_text_and_usage(client, direct):
    response = client.responses.create(model="llama3.2", instructions=INSTRUCTIONS, input=QUESTION)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.output_text == said(direct, [{"role": "system", "content": INSTRUCTIONS},
                                                 {"role": "user", "content": QUESTION}])
    assert response.usage.output_tokens == SIM_OUTPUT_TOKENS
    assert response.usage.total_tokens == response.usage.input_tokens + SIM_OUTPUT_TOKENS
    capped = client.responses.create(model="llama3.2", input=QUESTION, max_output_tokens=3)
    assert capped.status == "incomplete" and capped.incomplete_details.reason == "max_output_tokens"


def test_stream_sends_the_typed_event_sequence(client, direct):
    with client.responses.stream(model="llama3.2", instructions=INSTRUCTIONS, input=QUESTION) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds.count("response.output_text.delta") >= 1
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert final.output_text == said(direct, [{"role": "system", "content": INSTRUCTIONS},
                                              {"role": "user", "content": QUESTION}])
    assert final.usage.output_tokens == SIM_OUTPUT_TOKENS


def test_previous_response_id_continues_the_conversation_with_tool_calls(client, direct):
    first = client.responses.create(model="llama3.2", input=QUESTION)
    # The model's turn, then (as an agent would) a function call and its output, continued
    # from the stored response.
    second = client.responses.create(model="llama3.2", previous_response_id=first.id, input=[
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"colours\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "red green blue"},
        {"role": "user", "content": [{"type": "input_text", "text": "Which is warmest?"}]},
    ], tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object"}}])
    assert second.previous_response_id == first.id
    expected = said(direct, [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first.output_text},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"colours\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "red green blue"},
        {"role": "user", "content": "Which is warmest?"},
    ])
    assert second.output_text == expected
    third = client.responses.create(model="llama3.2", previous_response_id=second.id, input="Thanks.")
    assert third.status == "completed" and third.output_text


class Colour(pydantic.BaseModel):
    name: str
    hex: str


def test_text_format_parses_into_the_pydantic_model(client):
    parsed = client.responses.parse(model="llama3.2", input="A colour and its hex code.", text_format=Colour)
    assert isinstance(parsed.output_parsed, Colour)


def test_stored_responses_are_the_tenants_own_and_store_false_keeps_nothing(client, stack):
    base = f"{stack.gateway_url}/v1/responses"
    created = httpx.post(base, json={"model": "llama3.2", "input": "hi"}, headers={"x-tenant-id": "team-a"},
                         timeout=30).json()
    mine = httpx.get(f"{base}/{created['id']}", headers={"x-tenant-id": "team-a"}, timeout=10)
    assert mine.status_code == 200 and mine.json()["output"] == created["output"]
    assert httpx.get(f"{base}/{created['id']}", headers={"x-tenant-id": "team-b"}, timeout=10).status_code == 404
    assert httpx.delete(f"{base}/{created['id']}", headers={"x-tenant-id": "team-b"}, timeout=10).status_code == 404
    continued = httpx.post(base, json={"model": "llama3.2", "input": "more", "previous_response_id": created["id"]},
                           headers={"x-tenant-id": "team-b"}, timeout=30)
    assert continued.status_code == 400 and continued.json()["error"]["param"] == "previous_response_id"
    deleted = httpx.delete(f"{base}/{created['id']}", headers={"x-tenant-id": "team-a"}, timeout=10)
    assert deleted.json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    assert httpx.get(f"{base}/{created['id']}", headers={"x-tenant-id": "team-a"}, timeout=10).status_code == 404
    unstored = client.responses.create(model="llama3.2", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="llama3.2", input="x", text={"format": {"type": "json_schema"}})
    assert refused.value.body["param"] == "text.format.schema"
