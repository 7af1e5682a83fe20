"""scripts/test/smoke.sh, the script users run against their own deployment, passes against
the local stack and fails against a dead one."""

import os
import subprocess

from conftest import ROOT, free_port


def run_smoke(base_url):
    env = {**os.environ, "BASE_URL": base_url, "MODEL": "llama3.2"}
    return subprocess.run(["bash", str(ROOT / "scripts/test/smoke.sh")], env=env, capture_output=True, text=True, timeout=60)


def test_smoke_passes_against_the_stack(stack):
    result = run_smoke(stack.gateway_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: all checks passed" in result.stdout


def test_smoke_fails_against_nothing():
    result = run_smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "FAIL" in result.stderr
