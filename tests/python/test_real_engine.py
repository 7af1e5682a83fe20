"""A real engine end to end: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving
SmolLM2-135M-Instruct, behind the scheduler (an `openai` endpoint from SCHEDULER_CONFIG) and the
gateway, driven with the official OpenAI SDK. scripts/test.sh prepares the engine
(scripts/test/real_engine_setup.sh) and sets LLMGW_LLAMA_PYTHON / LLMGW_LLAMA_MODEL."""

import os
import time
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from conftest import BIN_DIR, free_port, wait_for

LLAMA_PYTHON = os.environ.get("LLMGW_LLAMA_PYTHON")
LLAMA_MODEL = os.environ.get("LLMGW_LLAMA_MODEL")

NOT_PREPARED = "real engine not prepared: run scripts/test.sh (or eval $(scripts/test/real_engine_setup.sh))"

# In CI (scripts/test.sh sets LLMGW_REQUIRE_REAL_ENGINE) a missing engine is a failure, never a
# silent skip; a developer's partial run may skip.
if os.environ.get("LLMGW_REQUIRE_REAL_ENGINE") == "1":
    assert LLAMA_PYTHON and LLAMA_MODEL, NOT_PREPARED
pytestmark = pytest.mark.skipif(not (LLAMA_PYTHON and LLAMA_MODEL), reason=NOT_PREPARED)

CONFIG = """
[[pool]]
name = "cpu"
[[pool.endpoint]]
url = "http://127.0.0.1:{engine_port}/v1"
kind = "openai"
slots = 1
schema_format = "json_object_schema"

[[model]]
name = "smollm2"
[model.timeouts]
ttft_ms = 60000
[[model.version]]
name = "q4"
pool = "cpu"
upstream = "smollm2"

# The same weights in llama.cpp's embedding mode (mean-pooled), as a second engine.
[[pool]]
name = "embed"
[[pool.endpoint]]
url = "http://127.0.0.1:{embed_port}/v1"
kind = "openai"
slots = 1

[[model]]
name = "smollm2-embed"
[[model.version]]
name = "q4"
pool = "embed"
upstream = "smollm2"
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    import subprocess

    tmp = tmp_path_factory.mktemp("real")
    engine_port, embed_port, scheduler_port, gateway_port = free_port(), free_port(), free_port(), free_port()
    config = tmp / "scheduler.toml"
    config.write_text(CONFIG.format(engine_port=engine_port, embed_port=embed_port))
    env = {**os.environ, "RUST_LOG": "info"}
    processes = []

    def spawn(name, command, extra):
        log = open(tmp / f"{name}.log", "wb")
        processes.append(subprocess.Popen(command, env={**env, **extra}, stdout=log, stderr=log))

    spawn("llama", [LLAMA_PYTHON, "-m", "llama_cpp.server", "--model", LLAMA_MODEL, "--model_alias", "smollm2",
                    "--host", "127.0.0.1", "--port", str(engine_port), "--n_ctx", "2048",
                    "--interrupt_requests", "False"], {})
    spawn("llama-embed", [LLAMA_PYTHON, str(Path(__file__).parent / "engines" / "llama_embed_server.py"),
                          "--model", LLAMA_MODEL, "--model_alias", "smollm2",
                          "--host", "127.0.0.1", "--port", str(embed_port), "--n_ctx", "512",
                          "--embedding", "True"], {})
    wait_for(f"http://127.0.0.1:{engine_port}/v1/models", deadline_s=120)
    wait_for(f"http://127.0.0.1:{embed_port}/v1/models", deadline_s=120)
    spawn("scheduler", [str(BIN_DIR / "scheduler")], {
        "SCHEDULER_LISTEN": f"127.0.0.1:{scheduler_port}", "SCHEDULER_CONFIG": str(config),
        "SCHEDULER_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "SCHEDULER_PROBE_INTERVAL_MS": "500"})
    spawn("gateway", [str(BIN_DIR / "gateway")], {
        "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}", "SCHEDULER_URL": f"http://127.0.0.1:{scheduler_port}"})
    wait_for(f"http://127.0.0.1:{gateway_port}/readyz", deadline_s=30)
    yield {"gateway": f"http://127.0.0.1:{gateway_port}", "embed": f"http://127.0.0.1:{embed_port}"}
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def client(real):
    return openai.OpenAI(base_url=f"{real['gateway']}/v1", api_key="unused", max_retries=0, timeout=120)


MESSAGES = [{"role": "user", "content": "Name a colour."}]


def test_non_stream_returns_real_text_and_usage(client):
    completion = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=12, temperature=0)
    text = completion.choices[0].message.content
    assert text and text.strip(), "the model said something"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 12


def test_stream_returns_real_text_and_usage(client):
    chunks = list(client.chat.completions.create(
        model="smollm2", messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 12
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason in ("stop", "length")


class Colour(pydantic.BaseModel):
    name: str
    hex: str


def test_structured_output_from_the_real_engine_parses_into_the_model(client):
    """The OpenAI SDK's `parse` sends a strict `json_schema`; this endpoint is configured with
    the spelling llama-cpp-python takes, whose grammar then constrains the model's output."""
    completion = client.chat.completions.parse(
        model="smollm2", messages=[{"role": "user", "content": "Give a colour and its hex code."}],
        response_format=Colour, max_tokens=200, temperature=0)
    colour = completion.choices[0].message.parsed
    assert isinstance(colour, Colour), completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"


def test_text_completions_from_the_real_engine(client):
    completion = client.completions.create(model="smollm2", prompt="The capital of France is",
                                           max_tokens=8, temperature=0)
    assert completion.object == "text_completion"
    assert completion.choices[0].text.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8
    streamed = list(client.completions.create(model="smollm2", prompt="The capital of France is",
                                              max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


def test_embeddings_equal_the_engines_own(client, real):
    """llama.cpp in embedding mode behind the gateway: the vectors (SmolLM2's 576 dimensions)
    equal what the engine gives the same SDK call directly (the SDK asks for base64; the
    gateway relays the engine's float32 values exactly)."""
    inputs = ["The cat sat on the mat.", "Quantum chromodynamics"]
    through = client.embeddings.create(model="smollm2-embed", input=inputs)
    direct = openai.OpenAI(base_url=f"{real['embed']}/v1", api_key="unused", max_retries=0) \
        .embeddings.create(model="smollm2", input=inputs, encoding_format="float")
    assert [len(d.embedding) for d in through.data] == [576, 576]
    for got, want in zip(through.data, direct.data):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-5, abs=1e-6)
    assert through.usage.prompt_tokens > 0


def test_models_lists_the_public_names(client):
    assert sorted(m.id for m in client.models.list()) == ["smollm2", "smollm2-embed"]


def test_client_disconnect_stops_the_generation(real):
    real = real["gateway"]
    """With one slot, a second request can only start once the first generation is gone. A
    1,500-token story takes ~20 s here; cancelled after a few tokens, the next short request
    must finish in a few seconds."""
    body = {"model": "smollm2", "stream": True, "max_tokens": 1500,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{real}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    seen += 1
                if seen >= 5:
                    break
        started = time.monotonic()
        short = http.post(f"{real}/v1/chat/completions",
                          json={"model": "smollm2", "max_tokens": 5, "messages": MESSAGES})
        elapsed = time.monotonic() - started
    assert short.status_code == 200, short.text
    assert elapsed < 8, f"the next request waited {elapsed:.1f}s: the first generation kept running"


def test_the_anthropic_sdk_against_the_real_engine(real):
    """Anthropic's Messages API in front of llama.cpp: real text, a stop reason, usage, and the
    same through the SDK's stream."""
    import anthropic
    claude = anthropic.Anthropic(base_url=real["gateway"], api_key="unused", max_retries=0, timeout=120)
    message = claude.messages.create(model="smollm2", max_tokens=12, messages=MESSAGES)
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 12
    with claude.messages.stream(model="smollm2", max_tokens=12, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert 0 < final.usage.output_tokens <= 12


def test_the_responses_api_against_the_real_engine(client):
    """OpenAI's Responses API in front of llama.cpp: real text and usage, streamed and not, and
    a continuation by `previous_response_id`."""
    first = client.responses.create(model="smollm2", input="Name a colour.", max_output_tokens=12)
    assert first.output_text.strip() and 0 < first.usage.output_tokens <= 12
    # A reply cut by max_output_tokens ends with `response.incomplete` (as OpenAI's does), which
    # the SDK's get_final_response does not take: the terminal event carries the response.
    with client.responses.stream(model="smollm2", input="And another?", previous_response_id=first.id,
                                 max_output_tokens=12) as stream:
        events = list(stream)
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    assert text.strip() and final.output_text == text
    assert final.usage.input_tokens > first.usage.input_tokens, "the first turn came along"
