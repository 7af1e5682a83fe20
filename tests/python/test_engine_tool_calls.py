"""Tool calls *produced by the engine* reach each official SDK as that SDK's own tool-call
shape, streamed and not, through an Ollama-kind and an OpenAI-kind engine: llm-sim calls a
tool when offered tools and asked by name (its arguments are an instance of the tool's
schema), as a tool-using model does. Then the call's result goes back and the engine answers
in text — the agent loop, across turns."""

import json

import anthropic
import openai
import pytest

from conftest import Stack

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ASK = "Use get_weather for Paris"

OPENAI_KIND = """
[[pool]]
name = "sim"
[[pool.endpoint]]
url = "{sim}/v1"
kind = "openai"
slots = 4
[[model]]
name = "llama3.2"
[[model.version]]
name = "v1"
pool = "sim"
upstream = "llama3.2"
"""


@pytest.fixture(scope="module", params=["ollama", "openai"])
def engine(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"tool-calls-{request.param}")
    config = None if request.param == "ollama" else (lambda sim: OPENAI_KIND.format(sim=sim))
    stack = Stack(tmp, scheduler_config=config)
    yield stack
    stack.stop()


def chat_tools():
    return [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                               "parameters": WEATHER}}]


def test_chat_completions_get_the_engines_call_and_continue_after_its_result(engine):
    client = openai.OpenAI(base_url=f"{engine.gateway_url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": ASK}]
    whole = client.chat.completions.create(model="llama3.2", messages=messages, tools=chat_tools())
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and arguments["city"]

    pieces = {}
    finish = None
    for chunk in client.chat.completions.create(model="llama3.2", messages=messages, tools=chat_tools(),
                                                stream=True):
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = pieces.setdefault(delta_call.index, {"name": "", "arguments": ""})
            entry["name"] += delta_call.function.name or ""
            entry["arguments"] += delta_call.function.arguments or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls"
    assert pieces == {0: {"name": "get_weather", "arguments": call.function.arguments}}, "streamed alike"

    answered = client.chat.completions.create(model="llama3.2", tools=chat_tools(), messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ])
    assert answered.choices[0].finish_reason == "stop"
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls


def test_the_responses_api_gets_a_function_call_and_continues_from_it(engine):
    client = openai.OpenAI(base_url=f"{engine.gateway_url}/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    first = client.responses.create(model="llama3.2", input=ASK, tools=tools)
    [item] = first.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert isinstance(json.loads(item.arguments)["city"], str)
    with client.responses.stream(model="llama3.2", input=ASK, tools=tools) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    assert streamed.output[0].type == "function_call" and streamed.output[0].arguments == item.arguments
    second = client.responses.create(model="llama3.2", previous_response_id=first.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny, 21 C"}])
    assert second.status == "completed" and second.output_text
    assert all(output.type == "message" for output in second.output)


def test_the_messages_api_gets_a_tool_use_block_and_continues_from_its_result(engine):
    claude = anthropic.Anthropic(base_url=engine.gateway_url, api_key="unused", max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER}]
    asked = [{"role": "user", "content": ASK}]
    message = claude.messages.create(model="llama3.2", max_tokens=64, tools=tools, messages=asked)
    assert message.stop_reason == "tool_use", message
    [block] = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and isinstance(block.input["city"], str) and block.id
    with claude.messages.stream(model="llama3.2", max_tokens=64, tools=tools, messages=asked) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.input for b in final.content if b.type == "tool_use"] == [block.input]
    answered = claude.messages.create(model="llama3.2", max_tokens=64, tools=tools, messages=[
        *asked,
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ])
    assert answered.stop_reason == "end_turn" and answered.content[0].type == "text"
