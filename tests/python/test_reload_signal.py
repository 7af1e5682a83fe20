"""SIGHUP reloads SCHEDULER_CONFIG on its own: the edit keeps the file's size and modification
time, so the file watcher cannot see it and only the signal can apply it. A bad file sent the
same way is refused and the running routes stay."""

import os
import signal
import time

import httpx

from conftest import Stack

CONFIG = """
[[pool]]
name = "sim"
[[pool.endpoint]]
url = "{sim_url}"
kind = "ollama"
slots = 4

[[model]]
name = "chat-a"
[[model.version]]
name = "v"
pool = "sim"
upstream = "llama3.2"
"""


def status_of(stack, model):
    body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=body, timeout=30).status_code


def rewrite_unnoticed(path, text):
    """Replaces the file's content keeping its size and timestamps (invisible to the watcher)."""
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def wait_until(condition, deadline_s=5.0):
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_sighup_applies_a_change_the_watcher_cannot_see(tmp_path):
    stack = Stack(tmp_path, scheduler_config=lambda sim_url: CONFIG.format(sim_url=sim_url))
    try:
        assert status_of(stack, "chat-a") == 200
        assert status_of(stack, "chat-b") == 404
        original = stack.config_path.read_text()
        rewrite_unnoticed(stack.config_path, original.replace('name = "chat-a"', 'name = "chat-b"'))
        time.sleep(1.5)  # two watcher ticks: prove the watcher did not pick it up on its own
        assert status_of(stack, "chat-a") == 200, "no reload without the signal"

        stack.scheduler_process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: status_of(stack, "chat-b") == 200), "SIGHUP applied the new file"
        assert status_of(stack, "chat-a") == 404

        broken = original.replace('kind = "ollama"', 'kind = "ollamx"')
        rewrite_unnoticed(stack.config_path, broken)
        stack.scheduler_process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "configuration reload refused" in (tmp_path / "scheduler.log").read_text())
        assert status_of(stack, "chat-b") == 200, "the running configuration stays"
    finally:
        stack.stop()
