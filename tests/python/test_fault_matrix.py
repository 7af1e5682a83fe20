"""A fault matrix over real processes: each scenario starts llm-sim + scheduler + gateway on free
loopback ports, injects one fault (backend down, slow, garbage, cut, stalled, overloaded; the
scheduler killed and restarted; mass client disconnects; overload; a gateway drain; a reload
storm; Redis down under `on_error = "deny"`), sends a bounded number of requests (streamed and
not, httpx with client timeouts) and records each request's single outcome:

  "200"               a complete answer (a stream with its finish, usage and [DONE])
  "<status> <code>"   an HTTP error with OpenAI's error envelope
  "sse <code>"        a stream that ended with one SSE error event (and no [DONE])
  "LOST: …"           a client timeout, a broken connection, a stream that ended without an
                      outcome, a malformed body: the request got no honest outcome

At the end of every scenario: nothing lost; every status/code is one the README documents (its
"Errors" table; for SSE error events also the codes the README names as "error event `…`"); no
permit leaked (the scheduler's `llmgw_in_flight`, `llmgw_endpoint_in_flight`, `llmgw_queue_depth`
and llm-sim's `active`/`queued` all back to 0 within a deadline); gateway and scheduler RSS
before/after. `pytest -s` prints one table at the end of the module."""

import asyncio
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, RedisServer, Stack, wait_until

MODEL = "llama3.2"
CLIENT_TIMEOUT_S = 10.0  # every request's own budget; any scenario's honest outcome comes sooner
LEAK_DEADLINE_S = 5.0


# ------------------------------------------------------------------- what the README documents


def documented_errors() -> tuple[set[tuple[int, str]], set[str]]:
    """(status, code) pairs of the README's "Errors" table, and the codes an SSE error event may
    carry: any code of the table, plus those the README names as "error event `…`"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Errors", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            # The code column; "(message names the field: `temperature` …)" is prose, not a code.
            for code in re.findall(r"`([a-z_]+)`", cells[2].split(" (", 1)[0]):
                pairs.add((int(cells[0]), code))
    events = set(re.findall(r"error event \(?`([a-z_]+)`", text))
    return pairs, {code for _, code in pairs} | events


DOCUMENTED, SSE_DOCUMENTED = documented_errors()


# ------------------------------------------------------------------------ one request, one outcome


@dataclass
class Outcome:
    stream: bool
    sent: float
    ended: float
    kind: str
    status: int | None = None
    code: str | None = None
    retry_after: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.sent

    @property
    def lost(self) -> bool:
        return self.kind.startswith("LOST")

    @property
    def documented(self) -> bool:
        if self.kind == "200" or self.lost or self.status is None:
            return True  # judged elsewhere (lost), or not an error outcome
        if self.kind.startswith("sse "):
            return self.code in SSE_DOCUMENTED
        return (self.status, self.code) in DOCUMENTED


def chat_body(stream: bool, tag: str, max_tokens: int | None = None) -> dict:
    body = {"model": MODEL, "stream": stream,
            "messages": [{"role": "user", "content": f"fault matrix {tag}"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def error_outcome(response: httpx.Response, stream: bool, sent: float) -> Outcome:
    retry_after = response.headers.get("retry-after")
    try:
        error = response.json()["error"]
        code = error["code"]
        assert isinstance(code, str) and isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return Outcome(stream, sent, time.monotonic(),
                       f"{response.status_code} without an OpenAI error body "
                       f"{response.text[:80]!r}", response.status_code, None, retry_after)
    return Outcome(stream, sent, time.monotonic(), f"{response.status_code} {code}",
                   response.status_code, code, retry_after)


def read_sse(response: httpx.Response, sent: float, give_up_at: float) -> Outcome:
    """A 200 stream to its end: complete, or exactly one error event then the end."""
    done = finish = usage = error = None
    after_end = 0  # data after [DONE] or after an error event
    for line in response.iter_lines():
        if time.monotonic() > give_up_at:
            return Outcome(True, sent, time.monotonic(), "LOST: client timeout (whole stream)")
        if not line.startswith("data: "):
            continue  # blank separators and SSE comments (": keep-alive")
        data = line[len("data: "):]
        if done or error is not None:
            after_end += 1
        if data == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            return Outcome(True, sent, time.monotonic(), f"LOST: non-JSON SSE data {data[:60]!r}")
        if "error" in chunk:
            error = chunk["error"] or {}
            continue
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            finish = choice.get("finish_reason") or finish
    ended = time.monotonic()
    if after_end:
        return Outcome(True, sent, ended, f"LOST: {after_end} SSE event(s) after the stream's end "
                                          f"(error={error}, done={done})")
    if error is not None:
        return Outcome(True, sent, ended, f"sse {error.get('code')}", 200, error.get("code"))
    if done and finish and usage:
        return Outcome(True, sent, ended, "200", 200)
    return Outcome(True, sent, ended,
                   f"LOST: stream ended without an outcome (done={done}, finish={finish})")


def one_request(client: httpx.Client, base: str, stream: bool, tag: str,
                timeout_s: float = CLIENT_TIMEOUT_S, max_tokens: int | None = None,
                headers: dict | None = None) -> Outcome:
    sent = time.monotonic()
    try:
        with client.stream("POST", f"{base}/v1/chat/completions",
                           json=chat_body(stream, tag, max_tokens), headers=headers,
                           timeout=httpx.Timeout(timeout_s, connect=3.0)) as response:
            if response.status_code != 200:
                response.read()
                return error_outcome(response, stream, sent)
            if stream:
                return read_sse(response, sent, sent + timeout_s)
            response.read()
            try:
                body = response.json()
                complete = body["choices"][0]["finish_reason"] and \
                    body["usage"]["completion_tokens"] >= 1
            except (ValueError, KeyError, IndexError, TypeError):
                complete = False
            kind = "200" if complete else f"LOST: malformed completion {response.text[:80]!r}"
            return Outcome(False, sent, time.monotonic(), kind, 200)
    except httpx.TimeoutException:
        return Outcome(stream, sent, time.monotonic(), "LOST: client timeout")
    except httpx.ConnectError:
        return Outcome(stream, sent, time.monotonic(), "LOST: connection refused")
    except httpx.HTTPError as error:
        return Outcome(stream, sent, time.monotonic(), f"LOST: transport {type(error).__name__}")


def send_batch(base: str, count: int, concurrency: int, tag: str, **kwargs) -> list[Outcome]:
    """`count` requests, alternating streamed (even) and not (odd), `concurrency` at a time."""
    outcomes: list[Outcome] = []
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency)) as client:
        pool = ThreadPoolExecutor(concurrency)
        futures = [pool.submit(one_request, client, base, i % 2 == 0, f"{tag}-{i}", **kwargs)
                   for i in range(count)]
        for i, future in enumerate(futures):
            try:
                outcomes.append(future.result(timeout=CLIENT_TIMEOUT_S + 5))
            except TimeoutError:
                outcomes.append(Outcome(i % 2 == 0, 0, 0, "LOST: hung past its own timeout"))
        pool.shutdown(wait=False, cancel_futures=True)
    return outcomes


class Load:
    """`threads` closed-loop clients alternating streamed and non-streamed requests back to back
    until stopped, for at most `max_s` and `cap` requests each: bounded by construction. With
    `honour_retry_after`, a refused client waits its `Retry-After` (as the OpenAI SDKs do), or
    until the load stops, before its next request."""

    def __init__(self, base: str, threads: int, max_s: float = 20.0, cap: int = 400,
                 honour_retry_after: bool = False, **kwargs):
        self.base, self.kwargs, self.cap = base, kwargs, cap
        self.honour_retry_after = honour_retry_after
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        # Clients are made up front: forty threads building httpx clients at once would hold
        # the GIL for hundreds of milliseconds and show up as latency of the first requests.
        self.clients = [httpx.Client() for _ in range(threads)]
        self.hard_stop = time.monotonic() + max_s
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def client(self, index: int) -> None:
        with self.clients[index] as client:
            for sequence in range(self.cap):
                if self.stopping.is_set() or time.monotonic() > self.hard_stop:
                    return
                outcome = one_request(client, self.base, (index + sequence) % 2 == 1,
                                      f"load-{index}-{sequence}", **self.kwargs)
                with self.lock:
                    self.outcomes.append(outcome)
                if self.honour_retry_after and outcome.retry_after:
                    pause = min(float(outcome.retry_after), self.hard_stop - time.monotonic())
                    self.stopping.wait(max(pause, 0))

    def count(self, predicate=lambda o: True) -> int:
        with self.lock:
            return sum(1 for outcome in self.outcomes if predicate(outcome))

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
        hung = sum(1 for thread in self.threads if thread.is_alive())
        with self.lock:
            return self.outcomes + [Outcome(False, 0, 0, "LOST: client thread hung")] * hung


# ------------------------------------------------------------------ permits, RSS, the table


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def held(stack: Stack, sim: bool = True) -> dict:
    """What is still held: the scheduler's slots, endpoint marks and waiters, the sim's active and
    queued generations. A process that does not answer shows as -1."""
    held_now = {}
    try:
        text = httpx.get(stack.scheduler_metrics_url, timeout=2).text
        for name in ("llmgw_in_flight", "llmgw_endpoint_in_flight", "llmgw_queue_depth"):
            held_now[name.removeprefix("llmgw_")] = metric_sum(text, name)
    except httpx.HTTPError:
        held_now["scheduler"] = -1
    if sim:
        try:
            stats = httpx.get(f"{stack.sim_url}/sim/stats", timeout=2).json()
            held_now["sim_active"], held_now["sim_queued"] = stats["active"], stats["queued"]
        except httpx.HTTPError:
            held_now["sim"] = -1
    return held_now


def wait_released(stack: Stack, sim: bool = True, deadline_s: float = LEAK_DEADLINE_S,
                  since: float | None = None) -> tuple[int, str, float]:
    """Polls until nothing is held; (leaked count, detail, seconds since `since` or the call)."""
    start = since if since is not None else time.monotonic()
    last: dict = {}

    def free():
        nonlocal last
        last = held(stack, sim)
        return all(value == 0 for value in last.values())

    if wait_until(free, deadline_s, interval_s=0.01):
        return 0, "", time.monotonic() - start
    leaked = int(sum(abs(value) for value in last.values()))
    return leaked, ", ".join(f"{k}={v:g}" for k, v in last.items() if v), time.monotonic() - start


def rss_mib(process) -> float | None:
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_pair(stack: Stack) -> tuple[float | None, float | None]:
    return rss_mib(stack.gateway_process), rss_mib(stack.scheduler_process)


@dataclass
class Row:
    scenario: str
    outcomes: list[Outcome] = field(default_factory=list)
    leaked: int = 0
    leak_detail: str = ""
    rss_before: tuple = (None, None)
    rss_after: tuple = (None, None)
    notes: list[str] = field(default_factory=list)
    verdict: str = "FAIL: did not finish"  # until `check` has run

    def __post_init__(self):
        ROWS.append(self)  # in the table even if the scenario fails half-way

    @property
    def lost(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.lost]

    @property
    def undocumented(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.documented]

    def kinds(self) -> Counter:
        return Counter(o.kind for o in self.outcomes)


ROWS: list[Row] = []


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table() -> None:
    header = ["scenario", "requests", "outcomes by kind", "lost", "leaked",
              "RSS gw MiB", "RSS sched MiB", "verdict", "notes"]
    lines = []
    for row in ROWS:
        kinds = ", ".join(f"{count}× {kind}" for kind, count in
                          sorted(row.kinds().items(), key=lambda item: (-item[1], item[0])))
        leaked = str(row.leaked) + (f" ({row.leak_detail})" if row.leak_detail else "")
        lines.append([row.scenario, str(len(row.outcomes)), kinds, str(len(row.lost)), leaked,
                      f"{mib(row.rss_before[0])}→{mib(row.rss_after[0])}",
                      f"{mib(row.rss_before[1])}→{mib(row.rss_after[1])}", row.verdict,
                      "; ".join(row.notes)])
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i])
              for i in range(len(header))]
    widths[-1] = len(header[-1])  # notes run free

    def fmt(cells):
        return "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)) + " |"
    print("\n\nfault matrix (debug build; one row per scenario)")
    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(fmt(line))


@pytest.fixture(scope="module", autouse=True)
def matrix_table():
    started = time.monotonic()
    yield
    if ROWS:
        print_table()
        print(f"fault matrix: {len(ROWS)} rows in {time.monotonic() - started:.1f} s")


def check(row: Row, expected: set[str] | None = None, must_see: set[str] = frozenset(),
          known: dict[str, str] | None = None, also=()) -> None:
    """The checks every scenario shares: nothing lost, only documented statuses/codes, no leaked
    permit; then the scenario's own: outcome kinds within `expected`, each of `must_see` seen,
    and every `(condition, message)` of `also`. All are evaluated, the row's verdict says which
    failed, and the test fails on any.

    `known` maps an outcome kind that is a known product defect (a lost request, or a status the
    README does not document) to its explanation: every other check still applies, and then the
    test is marked xfail with that explanation (call `check` last). When the defect does not
    show (or is fixed) the test simply passes."""
    known = known or {}
    gaps = Counter(o.kind for o in row.outcomes if o.kind in known)
    for kind, count in gaps.items():
        row.notes.append(f"KNOWN DEFECT {count}× {kind}")
    kinds = set(row.kinds()) - set(known)
    problems = []
    lost = Counter(o.kind for o in row.lost if o.kind not in known)
    if lost:
        problems.append(f"lost {dict(lost)}")
    undocumented = Counter(o.kind for o in row.undocumented if o.kind not in known)
    if undocumented:
        problems.append(f"undocumented {dict(undocumented)}")
    if row.leaked:
        problems.append(f"leaked ({row.leak_detail})")
    if expected is not None and kinds - expected:
        problems.append(f"unexpected {sorted(kinds - expected)}")
    if must_see - kinds:
        problems.append(f"never saw {sorted(must_see - kinds)}")
    problems += [message for condition, message in also if not condition]
    row.verdict = ("FAIL: " + "; ".join(problems)) if problems else "xfail" if gaps else "ok"
    assert not problems, f"{row.scenario}: {row.verdict} — outcomes {dict(row.kinds())}"
    if gaps:
        pytest.xfail("; ".join(f"{count}× {kind}: {known[kind]}" for kind, count in gaps.items()))


@pytest.fixture
def start_stack(tmp_path):
    """start_stack(**Stack kwargs) → a running Stack; every one started is stopped afterwards."""
    started: list[Stack] = []

    def start(name: str, **kwargs) -> Stack:
        directory = tmp_path / name
        directory.mkdir()
        stack = Stack.__new__(Stack)
        started.append(stack)
        stack.__init__(directory, **kwargs)  # a failed start still leaves `processes` to stop
        return stack

    yield start
    for stack in started:
        if getattr(stack, "processes", None):
            stack.stop()


def fault_scenario(start_stack, name: str, sim_env: dict, extra_env: dict | None = None,
                   requests: int = 8, concurrency: int = 2) -> tuple[Row, Stack]:
    stack = start_stack(name.split()[0], sim_env=sim_env, extra_env=extra_env)
    row = Row(name, rss_before=rss_pair(stack))
    row.outcomes = send_batch(stack.gateway_url, requests, concurrency, name.split()[0])
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    row.notes.append(f"permits free after {freed * 1000:.0f} ms")
    return row, stack


def retry_after_note(row: Row) -> str:
    seen = Counter(f"{o.kind}: {o.retry_after or 'none'}" for o in row.outcomes if o.kind != "200")
    return "Retry-After " + ", ".join(f"{k} ×{v}" for k, v in sorted(seen.items()))


# ------------------------------------------------------------------------------- scenarios


def test_01_backend_down(start_stack):
    stack = start_stack("down")
    row = Row("1 backend down (sim SIGKILL)", rss_before=rss_pair(stack))
    stack.sim_process.kill()
    stack.sim_process.wait(timeout=5)
    row.outcomes = send_batch(stack.gateway_url, 8, 2, "down")
    row.leaked, row.leak_detail, freed = wait_released(stack, sim=False)
    row.rss_after = rss_pair(stack)
    not_ready = wait_until(lambda: httpx.get(f"{stack.gateway_url}/readyz", timeout=2).status_code
                           == 503, 5)
    row.notes += [f"permits free after {freed * 1000:.0f} ms", retry_after_note(row),
                  f"/readyz 503: {bool(not_ready)}"]
    check(row, expected={"503 backend_unavailable", "503 no_healthy_backend"},
          also=[(not_ready, "/readyz still 200 with the only backend dead")])


def test_02_backend_slow_ttft_timeout(start_stack):
    row, _ = fault_scenario(start_stack, "2 backend slow (TTFT 5 s > ttft timeout 300 ms)",
                            {"SIM_TTFT_MS": "5000"}, {"SCHEDULER_TTFT_TIMEOUT_MS": "300"},
                            requests=6, concurrency=6)
    slowest = max(o.latency for o in row.outcomes)
    row.notes.append(f"slowest answer {slowest * 1000:.0f} ms")
    check(row, expected={"504 ttft_timeout", "503 no_healthy_backend"},
          must_see={"504 ttft_timeout"})


def test_03a_backend_garbage(start_stack):
    row, _ = fault_scenario(start_stack, "3a backend garbage", {"SIM_FAULT": "garbage"})
    check(row, expected={"502 backend_bad_response", "503 no_healthy_backend"},
          must_see={"502 backend_bad_response"})


def test_03b_backend_drops_mid_stream(start_stack):
    row, _ = fault_scenario(start_stack, "3b backend drop:3 mid-stream", {"SIM_FAULT": "drop:3"})
    check(row, expected={"sse backend_interrupted", "502 backend_interrupted",
                         "503 no_healthy_backend"},
          must_see={"sse backend_interrupted", "502 backend_interrupted"})


def test_03c_backend_stalls_mid_stream(start_stack):
    row, _ = fault_scenario(start_stack, "3c backend stall:3 (idle timeout 300 ms)",
                            {"SIM_FAULT": "stall:3"}, {"SCHEDULER_IDLE_TIMEOUT_MS": "300"})
    # A streamed request gets an SSE error event; a non-streamed one, whose status is not sent
    # yet, a 504 idle_timeout (both in the README's Errors table).
    check(row, expected={"sse idle_timeout", "504 idle_timeout"}, must_see={"sse idle_timeout"})


@pytest.mark.parametrize("code", [429, 503])
def test_04_backend_answers_overloaded(start_stack, code):
    name = f"4{'a' if code == 429 else 'b'} backend answers {code}"
    row, _ = fault_scenario(start_stack, name, {"SIM_FAULT": f"status:{code}"})
    row.notes.append(retry_after_note(row))
    check(row, expected={"503 backend_overloaded", "503 no_healthy_backend"},
          must_see={"503 backend_overloaded"})


class RefusingOllama(BaseHTTPRequestHandler):
    """An Ollama that answers its probes and refuses every chat with 429 and `Retry-After: 7`:
    a stand-in written independently of llm-sim, so the hint is seen to travel from any engine."""

    def do_GET(self):
        if self.path in ("/api/tags", "/api/ps"):
            self.reply(200, {"models": [{"name": "llama3.2:latest"}]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.reply(429, {"error": "too many requests"}, {"Retry-After": "7"})

    def reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_04c_backend_429_with_retry_after(start_stack):
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stack = start_stack("retryafter", scheduler_config=lambda _sim: RELOAD_CONFIG.format(
            sim_url=url, kind="ollama", slots=4, aliases=""))
        row = Row("4c backend 429 + Retry-After: 7 (stub)", rss_before=rss_pair(stack))
        row.outcomes = send_batch(stack.gateway_url, 8, 2, "retryafter")
        row.leaked, row.leak_detail, freed = wait_released(stack)
        row.rss_after = rss_pair(stack)
    finally:
        server.shutdown()
        server.server_close()
    passed = sorted({o.retry_after for o in row.outcomes if o.kind == "503 backend_overloaded"},
                    key=str)
    row.notes += [retry_after_note(row),
                  f"backend's Retry-After: 7 passed on: {'yes' if '7' in passed else 'no'}"]
    check(row, expected={"503 backend_overloaded", "503 no_healthy_backend"},
          must_see={"503 backend_overloaded"})
    assert passed == ["7"], f"every backend_overloaded refusal carries the engine's Retry-After: {passed}"


def test_05_scheduler_sigkill_and_restart_under_load(start_stack):
    stack = start_stack("schedkill", sim_env={"SIM_TTFT_MS": "20", "SIM_TPOT_MS": "10"})
    row = Row("5 scheduler SIGKILL + restart under load", rss_before=rss_pair(stack))
    readyz = f"{stack.gateway_url}/readyz"

    def ready() -> bool:
        try:
            return httpx.get(readyz, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    load = Load(stack.gateway_url, threads=4, max_s=25)
    try:
        assert wait_until(lambda: load.count(lambda o: o.kind == "200") >= 8, 10), load.outcomes
        killed_at = time.monotonic()
        stack.scheduler_process.kill()
        stack.scheduler_process.wait(timeout=5)
        noticed = wait_until(lambda: not ready() and time.monotonic(), 5)
        # Some requests meet the dead scheduler before it comes back.
        wait_until(lambda: load.count(lambda o: o.sent > killed_at and o.ended > 0) >= 4, 3)
        stack.restart_scheduler()
        restarted_at = time.monotonic()
        back = wait_until(lambda: ready() and time.monotonic(), 15)
        assert back, "the gateway never became ready again after the scheduler restart"
        assert wait_until(lambda: load.count(lambda o: o.sent > back) >= 20, 10), \
            "too few requests after the restart"
    finally:
        outcomes = load.stop()
    row.outcomes = outcomes
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    after = [o for o in outcomes if o.sent > back]
    down = [o for o in outcomes if killed_at <= o.sent < restarted_at]
    in_flight_at_kill = [o for o in outcomes if o.sent < killed_at < o.ended]
    row.notes += [
        f"/readyz 503 {((noticed or killed_at) - killed_at) * 1000:.0f} ms after the kill",
        f"ready {(back - restarted_at) * 1000:.0f} ms after the restart",
        f"in flight at the kill {dict(Counter(o.kind for o in in_flight_at_kill))}",
        f"sent while down {dict(Counter(o.kind for o in down))}",
        f"after ready {len(after)} sent, {sum(o.kind == '200' for o in after)} × 200",
        "RSS after = the new scheduler"]
    check(row, expected={"200", "503 scheduler_unavailable", "sse scheduler_unavailable",
                         "503 no_healthy_backend"},
          also=[(noticed, "/readyz never reported the dead scheduler"),
                (all(o.kind == "200" for o in after),
                 f"after the restart: {dict(Counter(o.kind for o in after))}")])


async def hold_streams_then_drop(base: str, count: int, reached, release) -> list[Outcome]:
    """`count` streams; each reads until its first token, counts itself in `reached[0]`, and
    disconnects (closes its connection with the body unread) when `release` is set; one that
    ends any other way counts in `reached[1]`."""
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(CLIENT_TIMEOUT_S * 2,
                                                                      connect=5)) as client:
        async def one(index: int) -> Outcome:
            sent = time.monotonic()
            try:
                async with client.stream("POST", f"{base}/v1/chat/completions",
                                         json=chat_body(True, f"drop-{index}")) as response:
                    if response.status_code != 200:
                        await response.aread()
                        return error_outcome(response, True, sent)
                    # The iterator stays referenced until the disconnect: an abandoned async
                    # generator is finalised (and the response closed) whenever the GC likes.
                    lines = response.aiter_lines()
                    data_lines = 0
                    while data_lines < 2:  # the role chunk, then a first token
                        try:
                            line = await lines.__anext__()
                        except StopAsyncIteration:
                            return Outcome(True, sent, time.monotonic(), "LOST: stream ended early")
                        if line.startswith("data: "):
                            if '"error"' in line or line == "data: [DONE]":
                                return Outcome(True, sent, time.monotonic(), "LOST: stream ended "
                                               f"before the disconnect: {line[:80]}")
                            data_lines += 1
                    reached[0] += 1
                    await asyncio.wait_for(release.wait(), CLIENT_TIMEOUT_S * 2)
                # Leaving the block closes the connection with the body unread.
                del lines
                return Outcome(True, sent, time.monotonic(), "client disconnect mid-stream")
            except (httpx.TimeoutException, TimeoutError):
                return Outcome(True, sent, time.monotonic(), "LOST: client timeout")
            except httpx.HTTPError as error:
                return Outcome(True, sent, time.monotonic(),
                               f"LOST: transport {type(error).__name__}")

        async def counted(index: int) -> Outcome:
            outcome = await one(index)
            if outcome.kind != "client disconnect mid-stream":
                reached[1] += 1
            return outcome

        return await asyncio.gather(*(counted(i) for i in range(count)))


def test_06_mass_disconnect_mid_stream(start_stack):
    count = 200
    stack = start_stack("disconnect", sim_env={
        "SIM_SLOTS": str(count), "SIM_TTFT_MS": "5", "SIM_TPOT_MS": "200",
        "SIM_OUTPUT_TOKENS": "150"}, extra_env={"SCHEDULER_MAX_CONCURRENCY": str(count)})
    row = Row(f"6 {count} streams disconnect at once", rss_before=rss_pair(stack))
    cancelled_before = httpx.get(f"{stack.sim_url}/sim/stats", timeout=2).json()["cancelled"]
    measured = {}

    async def scenario():
        reached, release = [0, 0], asyncio.Event()  # mid-stream, ended otherwise
        task = asyncio.ensure_future(hold_streams_then_drop(stack.gateway_url, count, reached,
                                                            release))
        # Every stream either reaches its first token or ends otherwise; poll until all have.
        deadline = time.monotonic() + 20
        while reached[0] + reached[1] < count and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        measured["mid_stream"] = reached[0]
        measured["in_flight_before"] = held(stack)
        measured["released_at"] = time.monotonic()
        release.set()
        return await task

    row.outcomes = asyncio.run(scenario())
    row.leaked, row.leak_detail, freed = wait_released(stack, since=measured["released_at"])
    row.rss_after = rss_pair(stack)
    cancelled = httpx.get(f"{stack.sim_url}/sim/stats", timeout=2).json()["cancelled"] \
        - cancelled_before
    before, mid_stream = measured["in_flight_before"], measured["mid_stream"]
    row.notes += [f"{mid_stream} mid-stream at the disconnect (scheduler in_flight "
                  f"{before.get('in_flight')}, sim active {before.get('sim_active')})",
                  f"every permit free {freed * 1000:.0f} ms after the disconnect",
                  f"sim cancelled +{cancelled}"]
    if row.kinds()["503 no_healthy_backend"]:
        row.notes.append("no_healthy_backend: the sim's probe (timeout = the 200 ms probe "
                         "interval) timed out under the burst")
    # A burst this size can make the endpoint's probe time out, briefly ejecting it: those few
    # requests are refused honestly (documented) and are not part of the disconnect.
    check(row, expected={"client disconnect mid-stream", "503 no_healthy_backend"},
          must_see={"client disconnect mid-stream"},
          also=[(mid_stream >= count * 0.75, f"only {mid_stream} of {count} streams got going"),
                (before.get("in_flight") == before.get("sim_active") == mid_stream,
                 f"held at the disconnect {before}"),
                (freed <= 1.0, f"permits took {freed:.2f} s to come free"),
                (cancelled == mid_stream,
                 f"the sim saw {cancelled} of {mid_stream} generations cancelled")])


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (seconds) in milliseconds."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def test_07_overload(start_stack):
    slots, clients, window_s = 4, 40, 5.0
    # A generation takes ~100 + 7 × 30 = 310 ms: a refusal that waited for a slot would show.
    stack = start_stack("overload", sim_env={"SIM_SLOTS": str(slots), "SIM_TTFT_MS": "100",
                                             "SIM_TPOT_MS": "30"},
                        extra_env={"SCHEDULER_MAX_CONCURRENCY": str(slots),
                                   "SCHEDULER_MAX_QUEUE": "4"})
    row = Row(f"7 overload {clients} clients on {slots} slots, queue 4, {window_s:.0f} s",
              rss_before=rss_pair(stack))
    # Refused clients honour Retry-After, as the SDKs do: the measured refusal latency is the
    # product's, not that of 40 Python threads spinning on one GIL.
    load = Load(stack.gateway_url, threads=clients, max_s=window_s, cap=200,
                honour_retry_after=True)
    try:
        wait_until(lambda: not any(t.is_alive() for t in load.threads),
                   window_s + CLIENT_TIMEOUT_S)
    finally:
        row.outcomes = load.stop()
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    refused = [o.latency for o in row.outcomes if o.kind != "200" and not o.lost]
    served = [o.latency for o in row.outcomes if o.kind == "200"]
    row.notes += [f"refused p50/p95/p99/max {pct(refused, .5):.1f}/{pct(refused, .95):.1f}/"
                  f"{pct(refused, .99):.1f}/{pct(refused, 1):.1f} ms", f"served p50 {pct(served, .5):.0f} ms",
                  f"served {len(served) / window_s:.1f}/s", retry_after_note(row)]
    # A refusal is decided without waiting for a slot: well below one generation (~310 ms). What
    # is measured here is a burst of ~30 refusals at once (every refused client retries after
    # the same 1 s) through debug builds and Python clients, not the release build's 1 ms.
    check(row, expected={"200", "429 queue_full", "429 displaced", "503 queue_timeout"},
          must_see={"200", "429 queue_full"},
          # Fast relative to service in the same run (a fixed number of ms would measure the
          # machine's load, not the gateway): a refusal costs a small part of a generation. The
          # p95 carries that claim (a refusal that waited for a slot puts every refusal above
          # a third of the served p50); the p99 of ~150 refusals is their one or two slowest,
          # which one scheduling hiccup of the shared CI machine decides (232 ms once, against
          # 17-40 ms in reruns), so it is only held below the served p50 itself.
          also=[(pct(refused, .95) < pct(served, .5) / 3,
                 f"refusals slow: p95 {pct(refused, .95):.1f} ms vs served p50 {pct(served, .5):.0f} ms"),
                (pct(refused, .99) < pct(served, .5),
                 f"refusals slow: p99 {pct(refused, .99):.1f} ms vs served p50 {pct(served, .5):.0f} ms")] + [
              (after - before < 64, f"{who} RSS grew {before:.0f} → {after:.0f} MiB")
              for before, after, who in zip(row.rss_before, row.rss_after,
                                            ("gateway", "scheduler"))])


def test_08_gateway_sigterm_drain(start_stack):
    stack = start_stack("drain", sim_env={"SIM_TTFT_MS": "20", "SIM_TPOT_MS": "75",
                                          "SIM_OUTPUT_TOKENS": "20"})  # ~1.5 s a generation
    row = Row("8 gateway SIGTERM drain under load", rss_before=rss_pair(stack))
    in_flight = 4
    term_sent = threading.Event()

    def client(index: int) -> tuple[Outcome, Outcome | None]:
        """One request in flight at the SIGTERM, then a next one on the same keep-alive client,
        written as the first one ends: it must be answered (with `Connection: close`), never
        lost on a connection the gateway closes under it."""
        with httpx.Client() as keep_alive:
            first = one_request(keep_alive, stack.gateway_url, index % 2 == 0, f"drain-{index}")
            if not term_sent.wait(CLIENT_TIMEOUT_S):
                return first, None
            return first, one_request(keep_alive, stack.gateway_url, index % 2 == 0,
                                      f"drain-next-{index}", timeout_s=3, max_tokens=2)

    pool = ThreadPoolExecutor(in_flight)
    futures = [pool.submit(client, i) for i in range(in_flight)]
    probes: list[Outcome] = []
    try:
        assert wait_until(lambda: held(stack)["sim_active"] == in_flight, 5), held(stack)
        term_at = time.monotonic()
        stack.gateway_process.send_signal(signal.SIGTERM)
        term_sent.set()

        def refused() -> bool:
            with httpx.Client() as fresh:
                probes.append(one_request(fresh, stack.gateway_url, False, "drain-probe",
                                          timeout_s=3, max_tokens=2))
            return probes[-1].kind == "LOST: connection refused"

        refused_seen = wait_until(refused, 2)
        refused_at = time.monotonic()
        running_at_refusal = sum(not f.done() for f in futures)
        pairs = [f.result(timeout=2 * CLIENT_TIMEOUT_S + 5) for f in futures]
        exit_code = stack.gateway_process.wait(timeout=15)
        exited_at = time.monotonic()
    finally:
        term_sent.set()
        pool.shutdown(wait=False, cancel_futures=True)
    drained = [first for first, _ in pairs]
    following = [then for _, then in pairs if then is not None]
    for outcome in probes + following:
        if outcome.kind == "LOST: connection refused":
            outcome.kind = "new connection refused (draining)"
    row.outcomes = drained + following + probes
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = (None, rss_mib(stack.scheduler_process))
    row.notes += [f"new connections refused {(refused_at - term_at) * 1000:.0f} ms after SIGTERM "
                  f"with {running_at_refusal} of {in_flight} still running",
                  f"next request on each drained keep-alive client: "
                  f"{dict(Counter(o.kind for o in following))}",
                  f"gateway exited {exit_code} after {(exited_at - term_at) * 1000:.0f} ms",
                  "RSS after: gateway exited"]
    check(row, expected={"200", "new connection refused (draining)", "503 shutting_down"},
          must_see={"new connection refused (draining)"},
          also=[(refused_seen and running_at_refusal > 0,
                 "new connections not refused while requests were still draining"),
                (all(o.kind == "200" for o in drained),
                 f"in flight at SIGTERM: {[o.kind for o in drained]}"),
                (len(following) == in_flight, "a drained client never sent its next request"),
                (exit_code == 0, f"gateway exit code {exit_code}")])


RELOAD_CONFIG = """
[[pool]]
name = "sim"
max_queue = 64
[[pool.endpoint]]
url = "{sim_url}"
kind = "{kind}"
slots = {slots}

[[model]]
name = "llama3.2"
aliases = [{aliases}]
[[model.version]]
name = "v"
pool = "sim"
upstream = "llama3.2"
"""


def reload_config(sim_url: str, step: int) -> str:
    """Step 0 is the start-up file. Odd steps are invalid (an unknown endpoint kind, or not TOML
    at all); even steps are valid and alternate, in pairs, a slot change (the pool is replaced)
    and an alias change only (the pool, its queue and in-flight counts, are carried over)."""
    if step % 4 == 1:
        return RELOAD_CONFIG.format(sim_url=sim_url, kind="ollamx", slots=4, aliases="")
    if step % 4 == 3:
        return "[[pool]\nname = \n"
    slots = 4 if step == 0 or (step // 2 - 1) // 2 % 2 == 1 else 3
    return RELOAD_CONFIG.format(sim_url=sim_url, kind="ollama", slots=slots,
                                aliases=f'"alias-{step}"')


def test_09_config_reload_storm(start_stack):
    stack = start_stack("reload", scheduler_config=lambda url: reload_config(url, 0),
                        sim_env={"SIM_TTFT_MS": "10", "SIM_TPOT_MS": "10"})
    log = stack.tmp / "scheduler.log"
    row = Row("9 config reload storm (SIGHUP, valid/invalid)", rss_before=rss_pair(stack))

    def reloads() -> tuple[int, int]:
        text = log.read_text(errors="replace")
        return text.count("configuration reloaded"), text.count("configuration reload refused")

    rewrites, unacknowledged = 24, 0
    load = Load(stack.gateway_url, threads=4, max_s=25)
    try:
        assert wait_until(lambda: load.count(lambda o: o.kind == "200") >= 4, 10), load.outcomes
        for step in range(1, rewrites + 1):
            before = sum(reloads())
            scratch = stack.config_path.with_suffix(".tmp")
            scratch.write_text(reload_config(stack.sim_url, step))
            os.replace(scratch, stack.config_path)
            stack.scheduler_process.send_signal(signal.SIGHUP)
            if not wait_until(lambda: sum(reloads()) > before, 3):
                unacknowledged += 1
        # Back to the first file, then some traffic on it.
        scratch.write_text(reload_config(stack.sim_url, 0))
        os.replace(scratch, stack.config_path)
        stack.scheduler_process.send_signal(signal.SIGHUP)
        done_at = time.monotonic()
        assert wait_until(lambda: load.count(lambda o: o.sent > done_at) >= 8, 10)
    finally:
        row.outcomes = load.stop()
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    applied, refused = reloads()
    row.notes += [f"{rewrites} rewrites: {applied} reloads applied, {refused} refused, "
                  f"{unacknowledged} unacknowledged"]
    check(row, expected={"200"},
          also=[(unacknowledged == 0, f"{unacknowledged} rewrites never reloaded or refused"),
                (refused >= rewrites // 2 and applied >= rewrites // 2,
                 f"{applied} applied / {refused} refused of {rewrites}")])


def test_10_redis_down_on_error_deny(start_stack, tmp_path):
    redis = RedisServer(tmp_path)
    try:
        key = f"sk-fault-matrix-{secrets.token_hex(16)}"
        config = tmp_path / "gateway.toml"
        config.write_text(
            'auth = "api_key"\n'
            f'[store]\nredis_url = "{redis.url}"\non_error = "deny"\ntimeout_ms = 250\n'
            '[[tenant]]\nname = "fault-matrix"\nrpm = 100000\nmax_concurrent = 100\n'
            f'[[key]]\ntenant = "fault-matrix"\nname = "fault-matrix-key"\n'
            f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
        stack = start_stack("redis", gateway_env={"GATEWAY_CONFIG": str(config)})
        row = Row('10 Redis down, on_error = "deny"', rss_before=rss_pair(stack))
        headers = {"Authorization": f"Bearer {key}"}
        up = send_batch(stack.gateway_url, 4, 2, "redis-up", headers=headers)
        assert [o.kind for o in up] == ["200"] * 4, up
        redis.kill()
        down = send_batch(stack.gateway_url, 10, 2, "redis-down", headers=headers)
    finally:
        redis.kill()
    row.outcomes = up + down
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    slowest = max(o.latency for o in down)
    row.notes += [f"refusals: slowest {slowest * 1000:.0f} ms", retry_after_note(row)]
    check(row, expected={"200", "503 limits_unavailable"}, must_see={"503 limits_unavailable"},
          also=[(all(o.kind == "503 limits_unavailable" for o in down),
                 f"with Redis down: {dict(Counter(o.kind for o in down))}"),
                (all(o.retry_after == "1" for o in down), "a refusal without Retry-After: 1"),
                (slowest < 1.0, f"a refusal took {slowest:.2f} s")])


# ---------------------------------------------------------------------- hostile clients (#18)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def keyed_config(tmp_path: Path, store: str = "", tenant: str = "") -> tuple[Path, dict]:
    key = f"sk-fault-matrix-{secrets.token_hex(16)}"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'auth = "api_key"\n{store}'
        f'[[tenant]]\nname = "fault-matrix"\n{tenant}'
        f'[[key]]\ntenant = "fault-matrix"\nname = "fault-matrix-key"\n'
        f'sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
    return config, {"Authorization": f"Bearer {key}"}


def test_11_quiet_sockets_fill_the_connection_limit(start_stack):
    # Before: sockets that send nothing (or only the HTTP/2 preface) were never closed, and
    # once they filled GATEWAY_MAX_CONNECTIONS no client was served again.
    stack = start_stack("quiet", gateway_env={"GATEWAY_MAX_CONNECTIONS": "32",
                                              "GATEWAY_HEADER_READ_TIMEOUT_MS": "1000"})
    row = Row("11 32 quiet sockets fill GATEWAY_MAX_CONNECTIONS=32", rss_before=rss_pair(stack))
    quiet = []
    for n in range(32):
        sock = socket.create_connection(("127.0.0.1", stack.gateway_port))
        if n % 2:
            sock.sendall(H2_PREFACE)
        quiet.append(sock)
    opened = time.monotonic()
    row.outcomes = send_batch(stack.gateway_url, 8, 2, "quiet")
    closed = 0
    for sock in quiet:
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
            closed += 1
        except (TimeoutError, OSError):
            pass
        sock.close()
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    first = min(o.ended for o in row.outcomes) - opened
    row.notes += [f"{closed}/32 quiet sockets closed by the gateway; first answer after "
                  f"{first * 1000:.0f} ms (head timeout 1000 ms)"]
    check(row, expected={"200"}, also=[(closed == 32, f"only {closed}/32 quiet sockets closed")])


def test_12_keyless_flood_of_large_bodies(start_stack, tmp_path):
    # Before: every refused body was read into memory whole; 100 keyless 4 MiB POSTs grew the
    # gateway by 546 MiB.
    from test_hostile_clients import flood
    config, headers = keyed_config(tmp_path)
    stack = start_stack("keyless", gateway_env={"GATEWAY_CONFIG": str(config)})
    row = Row("12 300 keyless 4 MiB POSTs while keyed clients work", rss_before=rss_pair(stack))
    peak_before = memory_hwm_mib(stack.gateway_process)
    pool = ThreadPoolExecutor(1)
    attack = pool.submit(flood, stack.gateway_port, 300, 4 << 20, None, 1.0)
    row.outcomes = send_batch(stack.gateway_url, 8, 2, "keyless", headers=headers)
    attacked = attack.result(timeout=120)
    pool.shutdown()
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    grown = memory_hwm_mib(stack.gateway_process) - (row.rss_before[0] or 0)
    row.notes += [f"attackers: {attacked.count('401')}× 401, {attacked.count('reset')}× cut; "
                  f"gateway peak +{grown:.0f} MiB over idle (VmHWM {peak_before:.0f} MiB before)"]
    check(row, expected={"200"},
          also=[(set(attacked) <= {"401", "reset"}, f"attackers got {sorted(set(attacked))}"),
                (grown < 64, f"the gateway grew {grown:.0f} MiB")])


def memory_hwm_mib(process) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_13_redis_stalls_mid_traffic(start_stack, tmp_path):
    # Before: reservations whose script ran after the gateway gave up held their
    # max_concurrent place and tokens for the reservation's TTL (15 min).
    redis = RedisServer(tmp_path)
    try:
        config, headers = keyed_config(
            tmp_path, store=f'[store]\nredis_url = "{redis.url}"\ntimeout_ms = 250\n',
            tenant="max_concurrent = 2\ntokens_per_day = 1000000\n")
        stack = start_stack("stall", gateway_env={"GATEWAY_CONFIG": str(config)})
        row = Row("13 Redis frozen (SIGSTOP) mid-traffic, max_concurrent = 2",
                  rss_before=rss_pair(stack))

        def remaining() -> dict:
            answer = httpx.get(f"{stack.gateway_url}/v1/limits", headers=headers, timeout=5)
            return answer.json()["limits"]["remaining"] if answer.status_code == 200 else {}

        up = send_batch(stack.gateway_url, 4, 2, "stall-up", headers=headers)
        before = remaining()
        redis.process.send_signal(signal.SIGSTOP)
        stalled = send_batch(stack.gateway_url, 6, 2, "stall-down", headers=headers)
        redis.process.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        settled = wait_until(lambda: remaining().get("concurrent") == 2, 20)
        cleared = time.monotonic() - woke
        after = remaining()
        again = send_batch(stack.gateway_url, 4, 2, "stall-again", headers=headers)
    finally:
        redis.kill()
    row.outcomes = up + stalled + again
    row.leaked, row.leak_detail, freed = wait_released(stack)
    if not settled:
        row.leaked += 2 - int(after.get("concurrent", 0))
        row.leak_detail += f" reservations still held: {after}"
    row.rss_after = rss_pair(stack)
    row.notes += [f"late reservations cancelled {cleared * 1000:.0f} ms after Redis woke; "
                  f"tokens today {before.get('tokens_today')} → {after.get('tokens_today')}"]
    check(row, expected={"200", "503 limits_unavailable"}, must_see={"503 limits_unavailable"},
          also=[(after.get("tokens_today") == before.get("tokens_today"),
                 f"refused work was charged: {before} → {after}"),
                (all(o.kind == "200" for o in again), "served work after the stall was refused")])


# -------------------------------------------------------------------- work, not requests (#19)


def document(base: str, index: int) -> Outcome:
    """One 2,000-word prompt (a long document) from tenant `documents`, not streamed."""
    sent = time.monotonic()
    body = {"model": MODEL, "max_tokens": 4,
            "messages": [{"role": "user", "content": " ".join(["lorem"] * 2000)}]}
    try:
        response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=CLIENT_TIMEOUT_S,
                              headers={"x-tenant-id": "documents", "x-request-id": f"doc-{index}"})
    except httpx.HTTPError as error:
        return Outcome(False, sent, time.monotonic(), f"LOST: transport {type(error).__name__}")
    if response.status_code != 200:
        return error_outcome(response, False, sent)
    return Outcome(False, sent, time.monotonic(), "200", 200)


def test_14_one_tenants_long_prompts(start_stack):
    # Before: each 2,000-word prompt timed out on the engine (504 ttft_timeout), three of them
    # opened its breaker, and for `open_ms` every tenant got 503 no_healthy_backend although
    # the engine was healthy the whole time.
    stack = start_stack("longprompts",
                        sim_env={"SIM_PREFILL_US_PER_TOKEN": "1000", "SIM_TTFT_MS": "5",
                                 "SIM_TPOT_MS": "5"},
                        extra_env={"SCHEDULER_TTFT_TIMEOUT_MS": "1000"})
    row = Row("14 4 × 2,000-word prompts from one tenant (1 ms/word prefill, 1 s first-token "
              "budget) beside a chatting one", rss_before=rss_pair(stack))
    pool = ThreadPoolExecutor(4)
    documents = [pool.submit(document, stack.gateway_url, i) for i in range(4)]
    chat = send_batch(stack.gateway_url, 16, 2, "chat", headers={"x-tenant-id": "chat"})
    long = [future.result(timeout=CLIENT_TIMEOUT_S + 5) for future in documents]
    pool.shutdown()
    after = send_batch(stack.gateway_url, 4, 2, "after", headers={"x-tenant-id": "chat"})
    row.outcomes = chat + long + after
    row.leaked, row.leak_detail, freed = wait_released(stack)
    row.rss_after = rss_pair(stack)
    metrics = httpx.get(stack.scheduler_metrics_url, timeout=2).text
    open_breakers = metric_sum(metrics, "llmgw_breaker_state")
    row.notes += [f"documents: {dict(Counter(o.kind for o in long))}; breaker state sum "
                  f"{open_breakers:g}; permits free after {freed * 1000:.0f} ms"]
    chatted = chat + after
    check(row, expected={"200", "504 prompt_too_heavy"},
          also=[(all(o.kind == "200" for o in chatted),
                 f"the chatting tenant got {dict(Counter(o.kind for o in chatted))}"),
                (open_breakers == 0, "a breaker opened over one tenant's prompt sizes")])
