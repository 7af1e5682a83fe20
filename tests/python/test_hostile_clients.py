"""Hostile clients against the real binaries: floods of large bodies stay within the gateway's
memory bounds, a scheduler without a token does not listen beyond loopback, and a SIGTERM'd
gateway turns unready before it stops accepting (a rolling update loses nothing)."""

import asyncio
import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import BIN_DIR, Stack, free_port, wait_until

KEY = "sk-hostile-test-0123456789"
MiB = 1 << 20


def governed_config(tmp: Path) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(
        '[[tenant]]\nname = "team"\n'
        f'[[key]]\ntenant = "team"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n')
    return path


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def post_large(port: int, size: int, key: str | None, hold_last_byte: float) -> str:
    """POSTs a `size`-byte chat body (all but its last byte at once, the last after
    `hold_last_byte` seconds) and returns the status line's code, or `reset` when the server
    cut the connection first (an answer and close while the client still sends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {size}\r\n\r\n")
    prefix = b'{"model":"llama3.2","messages":[{"role":"user","content":"'
    suffix = b'"}]}'
    body = prefix + b"a" * (size - len(prefix) - len(suffix)) + suffix

    async def send() -> None:
        writer.write(head.encode())
        for offset in range(0, size - 1, 256 << 10):
            writer.write(body[offset:min(offset + (256 << 10), size - 1)])
            await writer.drain()
        await asyncio.sleep(hold_last_byte)
        writer.write(body[-1:])
        await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        status = await asyncio.wait_for(reader.readline(), 60)
        return status.split()[1].decode() if status.startswith(b"HTTP/1.1") else "reset"
    except (ConnectionError, asyncio.IncompleteReadError):
        return "reset"
    except asyncio.TimeoutError:
        return "no answer within 60 s"
    finally:
        sender.cancel()
        writer.close()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass


def flood(port: int, clients: int, size: int, key: str | None, hold: float) -> list[str]:
    async def run():
        return await asyncio.gather(*(post_large(port, size, key, hold) for _ in range(clients)))
    return asyncio.run(run())


def healthy(stack: Stack) -> bool:
    with urllib.request.urlopen(f"{stack.gateway_url}/healthz", timeout=5) as answer:
        return answer.status == 200


def test_a_keyless_flood_of_large_bodies_keeps_the_gateway_memory_flat(tmp_path):
    # Before: every refused body was read whole into memory (100 such clients: +546 MiB).
    stack = Stack(tmp_path, gateway_env={"GATEWAY_CONFIG": str(governed_config(tmp_path))})
    try:
        pid = stack.gateway_process.pid
        idle = memory_kib(pid, "VmRSS")
        outcomes = flood(stack.gateway_port, 1000, 4 * MiB, key=None, hold=2.0)
        peak = memory_kib(pid, "VmHWM")
        # Every client got its 401, or its connection was cut while it still sent: none hung,
        # none was served. (How many read their 401 before the cut depends on how fast this
        # one Python process gets around to reading 1,000 sockets while it writes 4 GB.)
        assert len(outcomes) == 1000
        assert set(outcomes) <= {"401", "reset"}, sorted(set(outcomes))
        grown = (peak - idle) / 1024
        print(f"keyless flood: idle {idle // 1024} MiB, peak {peak // 1024} MiB (+{grown:.1f} MiB); "
              f"{outcomes.count('401')} answered 401, {outcomes.count('reset')} cut")
        assert grown < 64, f"gateway grew {grown:.0f} MiB under the keyless flood"
        assert healthy(stack)
    finally:
        stack.stop()


def test_a_keyed_flood_stays_within_the_body_budget(tmp_path):
    budget = 64 * MiB  # memory: each body byte counts 8 times, so two 4 MiB bodies at once
    stack = Stack(tmp_path, gateway_env={
        "GATEWAY_CONFIG": str(governed_config(tmp_path)),
        "GATEWAY_MAX_BODY_BUFFER_BYTES": str(budget)})
    try:
        pid = stack.gateway_process.pid
        idle = memory_kib(pid, "VmRSS")
        outcomes = flood(stack.gateway_port, 100, 4 * MiB, key=KEY, hold=2.0)
        peak = memory_kib(pid, "VmHWM")
        grown = (peak - idle) / 1024
        print(f"keyed flood: +{grown:.1f} MiB for a {budget // MiB} MiB budget; outcomes "
              f"{ {o: outcomes.count(o) for o in set(outcomes)} }")
        # At most the budget's worth of bodies is taken in (two of 4 MiB) and passed on (the
        # debug-built simulator may time out on 4 MiB prompts: 504 is the engine's answer);
        # the rest are refused at once with 503 gateway_overloaded, or cut while still sending.
        taken = [o for o in outcomes if o not in ("503", "reset")]
        assert set(taken) <= {"200", "504"}, sorted(set(outcomes))
        # (Two fit at once; a slow client may be taken later, once earlier bodies are done.)
        assert len(taken) >= 1, outcomes
        assert outcomes.count("503") >= 50, outcomes
        # The bodies taken in, with their parsed copies, within the budget; the refused ones and
        # their connections cost a few MiB on top.
        assert grown < budget / MiB + 16, f"gateway grew {grown:.0f} MiB for a {budget // MiB} MiB budget"
        assert healthy(stack)
    finally:
        stack.stop()


def listening(port: int) -> set[str]:
    """The local addresses listening on `port` (IPv4 dotted, IPv6 as `::` / `::1`), from
    /proc: no traffic needed to see where a server listens."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":
                continue
            if width == 8:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
            else:
                found.add({"0" * 32: "::", "0" * 24 + "01000000": "::1"}.get(address, address))
    return found


def test_a_scheduler_without_a_token_listens_on_loopback_only(tmp_path):
    cases = [
        ({}, {"127.0.0.1"}, "listening on loopback only"),
        ({"SCHEDULER_ALLOW_UNAUTHENTICATED": "true"}, {"0.0.0.0"}, "serving without a token"),
        ({"SCHEDULER_AUTH_TOKEN": "a-secret-token"}, {"0.0.0.0"}, None),
    ]
    for extra, expected, warning in cases:
        port = free_port()
        log_path = tmp_path / f"scheduler-{port}.log"
        env = {**os.environ, "RUST_LOG": "info", "SCHEDULER_LISTEN": f"0.0.0.0:{port}",
               "SCHEDULER_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
               "OLLAMA_BASE": "http://127.0.0.1:9", **extra}
        with open(log_path, "wb") as log:
            process = subprocess.Popen([str(BIN_DIR / "scheduler")], env=env, stdout=log, stderr=log)
        try:
            addresses = wait_until(lambda: listening(port), 20)
            assert addresses == expected, (extra, addresses)
            text = log_path.read_text()
            if warning:
                assert warning in text, text
            else:
                assert "WARN" not in text or "without a token" not in text
        finally:
            process.terminate()
            process.wait(timeout=10)


def status_of(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_sigterm_fails_readiness_first_then_stops_accepting(tmp_path):
    # Before: SIGTERM stopped accepting at once, so a load balancer still sending new
    # connections had them refused.
    stack = Stack(tmp_path, gateway_env={"GATEWAY_SHUTDOWN_DELAY_MS": "3000"})
    try:
        assert status_of(f"{stack.gateway_url}/readyz") == 200
        stack.gateway_process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert wait_until(lambda: status_of(f"{stack.gateway_url}/readyz") == 503, 5), \
            "readiness did not fail after SIGTERM"
        # Still accepting new connections and serving them during the delay.
        assert status_of(f"{stack.gateway_url}/healthz") == 200
        assert time.monotonic() - signalled < 3.0, "the check ran too late to mean anything"
        # Then it stops accepting and exits cleanly.
        assert stack.gateway_process.wait(timeout=20) == 0
        assert time.monotonic() - signalled >= 3.0
        assert status_of(f"{stack.gateway_url}/healthz") is None
    finally:
        stack.stop()
