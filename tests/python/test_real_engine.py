"""A real engine end to end: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving
SmolLM2-135M-Instruct, behind the scheduler (an `openai` endpoint from SCHEDULER_CONFIG) and the
gateway, driven with the official OpenAI SDK. scripts/test.sh prepares the engine
(scripts/test/real_engine_setup.sh) and sets LLMGW_LLAMA_PYTHON / LLMGW_LLAMA_MODEL."""

import os
import time

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
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    import subprocess

    tmp = tmp_path_factory.mktemp("real")
    engine_port, scheduler_port, gateway_port = free_port(), free_port(), free_port()
    config = tmp / "scheduler.toml"
    config.write_text(CONFIG.format(engine_port=engine_port))
    env = {**os.environ, "RUST_LOG": "info"}
    processes = []

    def spawn(name, command, extra):
        log = open(tmp / f"{name}.log", "wb")
        processes.append(subprocess.Popen(command, env={**env, **extra}, stdout=log, stderr=log))

    spawn("llama", [LLAMA_PYTHON, "-m", "llama_cpp.server", "--model", LLAMA_MODEL, "--model_alias", "smollm2",
                    "--host", "127.0.0.1", "--port", str(engine_port), "--n_ctx", "2048",
                    "--interrupt_requests", "False"], {})
    wait_for(f"http://127.0.0.1:{engine_port}/v1/models", deadline_s=120)
    spawn("scheduler", [str(BIN_DIR / "scheduler")], {
        "SCHEDULER_LISTEN": f"127.0.0.1:{scheduler_port}", "SCHEDULER_CONFIG": str(config),
        "SCHEDULER_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "SCHEDULER_PROBE_INTERVAL_MS": "500"})
    spawn("gateway", [str(BIN_DIR / "gateway")], {
        "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}", "SCHEDULER_URL": f"http://127.0.0.1:{scheduler_port}"})
    wait_for(f"http://127.0.0.1:{gateway_port}/readyz", deadline_s=30)
    yield f"http://127.0.0.1:{gateway_port}"
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def client(real):
    return openai.OpenAI(base_url=f"{real}/v1", api_key="unused", max_retries=0, timeout=120)


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


def test_models_lists_the_public_name(client):
    assert [m.id for m in client.models.list()] == ["smollm2"]


def test_client_disconnect_stops_the_generation(real):
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
