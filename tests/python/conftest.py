"""Starts llm-sim, scheduler and gateway as real processes on free loopback ports.

The binaries come from LLMGW_BIN_DIR (default: target/debug), built by scripts/test.sh.
"""

import os
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("LLMGW_BIN_DIR", ROOT / "target" / "debug"))
SIM_OUTPUT_TOKENS = 8
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _ports_below_the_ephemeral_range() -> range:
    """Ports the kernel never hands out on its own. A port taken with bind(0) and closed again
    sits in the ephemeral range, where any process's next outgoing connection may take it as
    its source port before the server we start binds it; the server then exits with
    EADDRINUSE (CI saw a scheduler replica stay UNAVAILABLE that way). Ports just below the
    range are only ever taken by an explicit bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


SERVER_PORTS = _ports_below_the_ephemeral_range()
_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, outside the kernel's ephemeral range, and never the
    same one twice in a test run (so two servers started together cannot be given one port)."""
    for _ in range(1000):
        port = random.choice(SERVER_PORTS)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {SERVER_PORTS}")


def wait_for(url: str, deadline_s: float = 20.0) -> None:
    """Polls url until it answers 200, failing after deadline_s."""
    start = time.monotonic()
    last_error = None
    while time.monotonic() - start < deadline_s:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            last_error = error
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {deadline_s}s: {last_error}")


def wait_until(condition, deadline_s: float, interval_s: float = 0.05):
    """Polls `condition` until it returns something truthy; returns it, or None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return None


class RedisServer:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self, tmp: Path):
        self.tmp, self.port, self.process = tmp, free_port(), None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.tmp / "redis-server.log", "ab")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)], stdout=log, stderr=log)
        assert wait_until(lambda: self.cli("PING") == "PONG", 10), "redis-server did not answer PING"

    def cli(self, *args: str) -> str:
        result = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *args],
                                capture_output=True, text=True, timeout=5)
        return result.stdout.strip()

    def keys(self, pattern: str) -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k]

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Stack:
    """llm-sim + scheduler + gateway as processes. `scheduler_config`, if given, builds the
    SCHEDULER_CONFIG file's text from the sim's base URL."""

    def __init__(self, tmp: Path, extra_env: dict | None = None, scheduler_config=None,
                 gateway_env: dict | None = None, sim_env: dict | None = None):
        self.sim_port, self.scheduler_port, self.gateway_port = free_port(), free_port(), free_port()
        self.metrics_port = free_port()
        self.processes = []
        self.tmp = tmp
        # LLMGW_TEST_RUST_LOG (e.g. "info,hyper=debug") raises the stack's log level to debug a test.
        env = {**os.environ, "RUST_LOG": os.environ.get("LLMGW_TEST_RUST_LOG", "info"), "LOG_FORMAT": "text",
               **(extra_env or {})}
        self.env = env
        self.spawn("llm-sim", [], {**env,
            "SIM_LISTEN": f"127.0.0.1:{self.sim_port}", "SIM_TTFT_MS": "5", "SIM_TPOT_MS": "2",
            "SIM_OUTPUT_TOKENS": str(SIM_OUTPUT_TOKENS), **(sim_env or {})})
        scheduler_env = {**env,
            "SCHEDULER_LISTEN": f"127.0.0.1:{self.scheduler_port}", "OLLAMA_BASE": self.sim_url,
            "SCHEDULER_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "SCHEDULER_PROBE_INTERVAL_MS": "200"}
        self.config_path = None
        if scheduler_config is not None:
            self.config_path = tmp / "scheduler.toml"
            self.config_path.write_text(scheduler_config(self.sim_url))
            scheduler_env["SCHEDULER_CONFIG"] = str(self.config_path)
        self.scheduler_env = scheduler_env
        self.spawn("scheduler", [], scheduler_env)
        self.spawn("gateway", [], {**env,
            "GATEWAY_LISTEN": f"127.0.0.1:{self.gateway_port}",
            "SCHEDULER_URL": f"http://127.0.0.1:{self.scheduler_port}", **(gateway_env or {})})
        wait_for(f"{self.gateway_url}/readyz")

    def spawn(self, name: str, args: list, env: dict, log_name: str | None = None) -> None:
        log = open(self.tmp / f"{log_name or name}.log", "wb")
        self.processes.append(subprocess.Popen([str(BIN_DIR / name), *args], env=env, stdout=log, stderr=log))

    def add_gateway(self, gateway_env: dict | None = None) -> str:
        """Starts one more gateway against this stack's scheduler (its log: gateway-<port>.log)
        and returns its base URL once it is ready."""
        port = free_port()
        self.spawn("gateway", [], {**self.env,
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "SCHEDULER_URL": f"http://127.0.0.1:{self.scheduler_port}", **(gateway_env or {})},
            log_name=f"gateway-{port}")
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/readyz")
        return url

    @property
    def scheduler_process(self):
        return self.processes[1]

    @property
    def sim_process(self):
        return self.processes[0]

    @property
    def gateway_process(self):
        return self.processes[2]

    def restart_scheduler(self) -> None:
        """Starts a new scheduler with the same environment (same port) in place of the old
        one, which must have exited; its log is appended to scheduler.log."""
        assert self.scheduler_process.poll() is not None, "the old scheduler still runs"
        log = open(self.tmp / "scheduler.log", "ab")
        self.processes[1] = subprocess.Popen([str(BIN_DIR / "scheduler")], env=self.scheduler_env,
                                             stdout=log, stderr=log)

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def scheduler_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def scheduler_addr(self) -> str:
        return f"127.0.0.1:{self.scheduler_port}"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()
