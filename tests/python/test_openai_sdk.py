"""The official OpenAI Python SDK against the gateway. The reference answer is the same SDK
asking llm-sim directly: the simulator is deterministic, so the gateway must return exactly
what the upstream produced, token for token, with the same usage."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pydantic
import pytest

from conftest import SIM_OUTPUT_TOKENS, Stack, wait_until

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three colours."},
]


@pytest.fixture(scope="module")
def gateway(stack):
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(stack):
    direct = openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)
    return direct.chat.completions.create(model="llama3.2", messages=MESSAGES, seed=11)


def test_non_stream_matches_the_upstream_answer(gateway, reference):
    completion = gateway.chat.completions.create(model="llama3.2", messages=MESSAGES, seed=11)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "llama3.2"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == reference.choices[0].message.content
    assert len(choice.message.content.split()) == SIM_OUTPUT_TOKENS
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == reference.usage.prompt_tokens == 6
    assert completion.usage.completion_tokens == SIM_OUTPUT_TOKENS
    assert completion.usage.total_tokens == 6 + SIM_OUTPUT_TOKENS


def test_stream_delivers_every_token_in_order(gateway, reference):
    stream = gateway.chat.completions.create(model="llama3.2", messages=MESSAGES, seed=11, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == reference.choices[0].message.content
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(token_chunks) == SIM_OUTPUT_TOKENS, "one chunk per token, no coalescing"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_stream_with_include_usage_reports_usage_last(gateway):
    stream = gateway.chat.completions.create(
        model="llama3.2", messages=MESSAGES, stream=True, max_tokens=3,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (6, 3, 9)
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "length"


def test_errors_surface_as_sdk_exceptions_with_status_and_param(gateway):
    with pytest.raises(openai.NotFoundError) as not_found:
        gateway.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert not_found.value.status_code == 404
    assert not_found.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        gateway.chat.completions.create(model="llama3.2", messages=MESSAGES, temperature=3.5)
    assert bad.value.body["param"] == "temperature"
    assert "between 0 and 2" in bad.value.body["message"]


# A 1x1 PNG.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_an_image_part_reaches_the_engine_and_a_remote_url_is_refused(gateway, stack):
    """The SDK's `image_url` part with a data URL: llm-sim (Ollama's API here) sees the same
    bytes as Ollama `images`; an https URL is a BadRequestError naming the field."""
    import base64
    png = base64.b64decode(PNG_BASE64)
    content = [{"type": "text", "text": "What is in this image?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}"}}]
    completion = gateway.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": content}], max_tokens=4)
    assert completion.choices[0].message.content
    seen = httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["last_images"]
    assert seen == [f"base64:{len(png)}:{sum(png) % 2**32}"]
    remote = [content[0], {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": remote}])
    assert refused.value.body["param"] == "messages[0].content[1].image_url.url"
    assert "not fetched" in refused.value.body["message"]


def test_models_lists_the_backend_models(gateway):
    ids = [model.id for model in gateway.models.list()]
    assert ids == ["llama3.2:latest", "smollm2:135m"]


class Person(pydantic.BaseModel):
    name: str
    age: int
    hobbies: list[str]


def test_structured_output_parses_into_the_pydantic_model(gateway, stack):
    """`client.chat.completions.parse(response_format=Model)`: the SDK sends a strict
    `json_schema`; the gateway passes it on (Ollama `format`) and the answer parses into the
    model, equal to what the engine gives the same call directly."""
    direct = openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)
    expected = direct.chat.completions.parse(model="llama3.2", messages=MESSAGES, response_format=Person)
    completion = gateway.chat.completions.parse(model="llama3.2", messages=MESSAGES, response_format=Person)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person == expected.choices[0].message.parsed
    assert person.name and person.hobbies
    with gateway.chat.completions.stream(model="llama3.2", messages=MESSAGES, response_format=Person) as stream:
        streamed = stream.get_final_completion().choices[0].message.parsed
    assert streamed == person


def test_text_completions_match_the_upstream_answer(gateway, stack):
    direct = openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)
    expected = direct.completions.create(model="llama3.2", prompt="Once upon a time", seed=3)
    completion = gateway.completions.create(model="llama3.2", prompt="Once upon a time", seed=3)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == expected.choices[0].text
    assert completion.usage.completion_tokens == SIM_OUTPUT_TOKENS
    chunks = list(gateway.completions.create(model="llama3.2", prompt="Once upon a time", seed=3,
                                             stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_embeddings_match_the_upstream_vectors(gateway, stack):
    """The SDK asks for base64 by default and decodes it; the vectors equal the engine's own."""
    direct = openai.OpenAI(base_url=f"{stack.sim_url}/v1", api_key="unused", max_retries=0)
    inputs = ["the cat", "a dog barks"]
    expected = direct.embeddings.create(model="llama3.2", input=inputs, encoding_format="float")
    got = gateway.embeddings.create(model="llama3.2", input=inputs)
    assert len(got.data) == 2
    for mine, theirs in zip(got.data, expected.data):
        assert mine.embedding == pytest.approx(theirs.embedding, rel=1e-6)
    assert got.usage.prompt_tokens == expected.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.embeddings.create(model="llama3.2", input=[""])
    assert refused.value.body["param"] == "input[0]"


def test_several_choices_need_an_openai_compatible_engine(gateway):
    """This stack's model is served by Ollama, which generates one choice: the SDK gets a 400
    naming the field, before anything is queued."""
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.chat.completions.create(model="llama3.2", messages=MESSAGES, n=2)
    assert refused.value.body["param"] == "n"
    assert "Ollama" in refused.value.body["message"]


def test_log_probabilities_from_ollama_parse_in_the_sdk(gateway):
    """Ollama (0.12.11+) returns log probabilities; the SDK parses them from the gateway's
    OpenAI-shaped answer, streamed and not, one entry per token with its alternatives."""
    completion = gateway.chat.completions.create(model="llama3.2", messages=MESSAGES, max_tokens=6,
                                                 logprobs=True, top_logprobs=2)
    choice = completion.choices[0]
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert [round(e.logprob, 6) for e in entries] == [round(-0.1 * (i + 1), 6) for i in range(len(entries))]
    assert all(len(e.top_logprobs) == 2 for e in entries)
    streamed = [c for c in gateway.chat.completions.create(
        model="llama3.2", messages=MESSAGES, max_tokens=6, logprobs=True, top_logprobs=2, stream=True)
        if c.choices and c.choices[0].logprobs]
    assert [e.token for c in streamed for e in c.choices[0].logprobs.content] == [e.token for e in entries]


def test_a_first_token_objective_that_cannot_be_met_is_a_rate_limit_error(tmp_path):
    # One slot, ~0.8 s per answer: one running and one waiting are ~1.2 s of work ahead.
    busy = Stack(tmp_path, extra_env={"SCHEDULER_MAX_CONCURRENCY": "1"},
                 sim_env={"SIM_TPOT_MS": "100"})
    try:
        client = openai.OpenAI(base_url=f"{busy.gateway_url}/v1", api_key="unused", max_retries=0)
        client.chat.completions.create(model="llama3.2", messages=MESSAGES)  # teaches the pace
        pool = ThreadPoolExecutor(2)
        backlog = [pool.submit(client.chat.completions.create, model="llama3.2",
                               messages=MESSAGES) for _ in range(2)]
        assert wait_until(lambda: queue_depth(busy) == 1, 5.0), "one request never queued"
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="llama3.2", messages=MESSAGES,
                                           extra_headers={"x-slo-ttft-ms": "100"})
        assert refused.value.status_code == 429
        assert refused.value.code == "slo_unattainable"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        raw = client.chat.completions.with_raw_response.create(
            model="llama3.2", messages=MESSAGES, extra_headers={"x-slo-ttft-ms": "60000"})
        assert raw.parse().choices[0].finish_reason == "stop"
        assert 300 <= int(raw.headers["x-llmgw-predicted-ttft-ms"]) < 60000
        assert all(f.result(timeout=10).choices[0].finish_reason == "stop" for f in backlog)
        pool.shutdown()
    finally:
        busy.stop()


def queue_depth(stack) -> float:
    text = httpx.get(stack.scheduler_metrics_url, timeout=2).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmgw_queue_depth{"))
