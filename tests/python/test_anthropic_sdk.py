"""The official Anthropic Python SDK against the gateway's Messages API (`/v1/messages`),
served by llm-sim through the scheduler. The reference text is the OpenAI SDK asking llm-sim
directly with the same conversation: the simulator is deterministic."""

import base64

import anthropic
import httpx
import openai
import pytest

from conftest import SIM_OUTPUT_TOKENS

SYSTEM = "You are terse."
QUESTION = "Name three colours."
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def claude(stack):
    return anthropic.Anthropic(base_url=stack.gateway_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(stack):
    direct = openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)
    answer = direct.chat.completions.create(
        model="llama3.2", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}])
    return answer.choices[0].message.content


def test_create_returns_the_engines_text_usage_and_stop_reason(claude, reference):
    message = claude.messages.create(model="llama3.2", max_tokens=64, system=SYSTEM,
                                     messages=[{"role": "user", "content": QUESTION}])
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == reference
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == SIM_OUTPUT_TOKENS
    capped = claude.messages.create(model="llama3.2", max_tokens=3, system=SYSTEM,
                                    messages=[{"role": "user", "content": QUESTION}])
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 3


def test_stream_delivers_the_same_text_in_anthropics_event_sequence(claude, reference):
    with claude.messages.stream(model="llama3.2", max_tokens=64, system=SYSTEM,
                                messages=[{"role": "user", "content": QUESTION}]) as stream:
        kinds = []
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds[-2] == "message_delta"
    assert final.content[0].text == reference
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == SIM_OUTPUT_TOKENS


def test_a_tool_conversation_and_an_image_reach_the_engine(claude, stack):
    """A tool definition, the assistant's earlier tool_use and the user's tool_result travel
    as the scheduler's tool messages; an image block arrives at the engine byte for byte."""
    tools = [{"name": "weather", "description": "Current weather",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    message = claude.messages.create(
        model="llama3.2", max_tokens=16, tools=tools, tool_choice={"type": "auto"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21 C"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
                {"type": "text", "text": "And what is this?"}]},
        ])
    assert message.content[0].type == "text" and message.content[0].text
    png = base64.b64decode(PNG_BASE64)
    seen = httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["last_images"]
    assert seen == [f"base64:{len(png)}:{sum(png) % 2**32}"]


def test_errors_are_anthropic_errors_naming_the_problem(claude):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["type"] == "error"
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="llama3.2", max_tokens=8, extra_body={"temperature": 1.5},
                               messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as remote:
        claude.messages.create(model="llama3.2", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}])
    assert "not fetched" in remote.value.body["error"]["message"]


def test_count_tokens_estimates_the_prompt(claude):
    short = claude.messages.count_tokens(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    long = claude.messages.count_tokens(model="llama3.2", system=SYSTEM,
                                        messages=[{"role": "user", "content": "hi " * 400}])
    assert 0 < short.input_tokens < long.input_tokens
