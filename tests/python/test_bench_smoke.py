"""The overhead benchmark script runs end to end (SMOKE=1: tiny sizes, debug binaries).

This checks the script, the measurement tool and the report, not the numbers: every row of the
overhead table is produced from real processes, with its target and a verdict, and the plot is
written. Timing targets live in the benchmark itself, never in a test."""

import json
import os
import random
import socket
import subprocess
from pathlib import Path

from conftest import BIN_DIR, ROOT, SERVER_PORTS

ROWS = [
    "added latency, 1 client, non-stream, `info`",
    "same at `warn`",
    "same, one worker thread each (`*_WORKER_THREADS=1`)",
    "the skeleton (zero-logic two hops)",
    "the pair ÷ its skeleton, p50",
    "CPU per request, gateway + scheduler, 1 client",
    "`info` over `warn`, CPU per request",
    "CPU per request under load",
    "streamed: added time to first token",
    "streamed: chunk gaps",
    "memory per held stream",
    "high-water mark per stream",
    "concurrent streams, completed",
]


def free_port_block(size: int) -> int:
    """A base port with `size` free ports after it (checked, not reserved)."""
    for _ in range(50):
        base = random.randrange(SERVER_PORTS.start, SERVER_PORTS.stop - size - 1)
        try:
            for port in range(base + 1, base + size + 1):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports")


def test_overhead_script_produces_every_row(tmp_path: Path):
    env = dict(os.environ, SMOKE="1", LLMGW_BIN_DIR=str(BIN_DIR), OUT=str(tmp_path),
               PORT_BASE=str(free_port_block(10)))
    done = subprocess.run(["bash", "scripts/bench/overhead.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "overhead.md").read_text()
    for row in ROWS:
        assert row in table, f"missing row {row!r} in:\n{table}"
    body = [line for line in table.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert all(line.rstrip().endswith(("| met |", "| NOT met |", "| n/a |")) for line in body
               if line.count("|") == 5), table
    results = [json.loads(line) for line in (tmp_path / "overhead.jsonl").read_text().splitlines()]
    assert all(r.get("errors", 0) == 0 and r.get("streams_failed", 0) == 0 for r in results), results
    by_target = {r["target"] for r in results if r["experiment"] == "interleaved"}
    assert by_target == {"direct", "skeleton", "pair", "pair_warn", "pair_1t"}
    cpu = [r["cpu_us_per_request"] for r in results if r["experiment"] == "interleaved" and r["target"] != "direct"]
    assert all(c and c > 0 for c in cpu), "CPU of the measured processes was read"
    assert (tmp_path / "overhead.png").stat().st_size > 10_000


def test_the_log_cost_script_counts_instructions_at_both_levels(tmp_path):
    """scripts/bench/log_cost.sh end to end at tiny N on the debug binaries: both services run
    under callgrind at `info` and at `warn`, and the table holds a count and a ratio for each.
    The numbers themselves are the benchmark's business."""
    env = {**os.environ, "N": "3", "WARMUP": "1", "LLMGW_BIN_DIR": str(BIN_DIR), "OUT": str(tmp_path)}
    result = subprocess.run(["bash", "scripts/bench/log_cost.sh"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = (tmp_path / "log_cost.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == {"gateway", "scheduler", "both"}, lines
    for service, (info, warn, ratio) in rows.items():
        assert int(info) > 0 and int(warn) > 0, (service, info, warn)
        assert abs(float(ratio) - int(info) / int(warn)) < 0.001, (service, ratio)
