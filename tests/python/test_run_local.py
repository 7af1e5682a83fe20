"""`scripts/run-local.sh` with `ENGINE=smollm2`: a newcomer's first request gets a real answer
from SmolLM2-135M on llama.cpp (no GPU, no Ollama), through the scheduler and the gateway the
script starts. The script is run as a user runs it and stopped with SIGTERM (Ctrl-C's path)."""

import os
import signal
import subprocess

import openai
import pytest

from conftest import ROOT, free_port, wait_for

ENGINE_READY = bool(os.environ.get("LLMGW_LLAMA_PYTHON") and os.environ.get("LLMGW_LLAMA_MODEL"))
if os.environ.get("LLMGW_REQUIRE_REAL_ENGINE") == "1":
    assert ENGINE_READY, "real engine not prepared: scripts/test/real_engine_setup.sh"


@pytest.mark.skipif(not ENGINE_READY, reason="real engine not prepared: run scripts/test.sh")
def test_run_local_serves_a_real_model(tmp_path):
    gateway, scheduler, llama = free_port(), free_port(), free_port()
    env = dict(os.environ, ENGINE="smollm2", PROFILE="debug",
               GATEWAY_LISTEN=f"127.0.0.1:{gateway}", SCHEDULER_LISTEN=f"127.0.0.1:{scheduler}",
               LLAMA_LISTEN=f"127.0.0.1:{llama}", SCHEDULER_METRICS_LISTEN=f"127.0.0.1:{free_port()}")
    log = open(tmp_path / "run-local.log", "wb")
    script = subprocess.Popen(["bash", "scripts/run-local.sh"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{gateway}/readyz", deadline_s=180)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway}/v1", api_key="unused",
                               max_retries=0, timeout=120)
        completion = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8, temperature=0)
        assert completion.choices[0].message.content.strip(), "the model said something"
        assert completion.usage.completion_tokens > 0
    finally:
        script.send_signal(signal.SIGTERM)
        try:
            script.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            raise
    printed = (tmp_path / "run-local.log").read_text(errors="replace")
    assert "ENGINE=smollm2" in printed and '"model":"smollm2"' in printed, printed[-2000:]
