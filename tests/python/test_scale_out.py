"""Scale-out as a black box with real processes: one redis-server, two scheduler replicas of one
group (lease TTL 1 s), each in front of its own llm-sim, and two or three gateways whose
SCHEDULER_URL lists both replicas. Exactly one replica leads (gRPC health, grpcurl against the
standby); the leader killed with SIGKILL under steady load (failover time, every request's
outcome, slots never exceeded); the leader paused with SIGSTOP past its TTL and resumed (it
starts nothing more: its own llm-sim sees no new request); a gateway killed (clients move to
another). Run with `pytest -s` for the table of measured numbers."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from conftest import BIN_DIR, RedisServer, free_port, wait_for, wait_until

TOKEN = "scale-out-test-token"
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
MODEL = "llama3.2"
TTL_MS = 1000
SLOTS = 4  # SIM_SLOTS == SCHEDULER_MAX_CONCURRENCY
MAX_TOKENS = 8
SIM_TTFT_MS, SIM_TPOT_MS = 20, 10  # a generation takes ~90 ms
CLIENT_TIMEOUT_S = 15.0  # above GATEWAY_FAILOVER_WAIT_MS (6 s default) plus a generation
DOCUMENTED_FAILURES = {502, 503, 504}
HEALTH = {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}
# gRPC's default reconnect backoff (1 s, growing 1.6x) would leave a channel whose first
# attempt came before a slow-starting replica listened failing fast for the next 15 s.
QUICK_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500)]

# Measured numbers, printed as one table at the end of the module (pytest -s shows it).
RESULTS: dict[str, str] = {}


# ---------------------------------------------------------------------------------- topology


@dataclass
class Replica:
    """One scheduler replica and the llm-sim only it calls."""

    name: str
    port: int
    sim_port: int
    process: subprocess.Popen
    sim: subprocess.Popen
    log: Path
    channel: grpc.Channel

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def advertise(self) -> str:
        return f"scheduler-{self.name}.llmgw.test:{self.port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def backend(self) -> str:
        """What `x-llmgw-backend` says for a generation this replica ran: the protocol and a
        hash of the endpoint URL keyed with the deployment's scheduler token (the same on every
        gateway), never the address."""
        key = hashlib.sha256(b"llmgw backend label\0" + TOKEN.encode()).digest()
        return "ollama-" + hashlib.sha256(key + self.sim_url.encode()).hexdigest()[:8]

    def health(self, timeout_s: float = 1.0) -> str:
        """grpc.health.v1.Health/Check with the empty service: SERVING, NOT_SERVING, or the
        gRPC code name when the call itself fails."""
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = check(b"", timeout=timeout_s)  # HealthCheckRequest{service: ""} is empty
        except grpc.RpcError as error:
            return error.code().name
        return HEALTH.get(reply, f"status bytes {reply.hex()}")

    def sim_stats(self) -> dict:
        return httpx.get(f"{self.sim_url}/sim/stats", timeout=5).json()


class Cluster:
    """redis-server, two scheduler replicas of one group each with its own llm-sim, and gateways
    listing both replicas. Logs go to `tmp`."""

    def __init__(self, tmp: Path, gateways: int):
        self.tmp, self.processes, self.replicas, self.gateways = tmp, [], [], []
        self.gateway_processes: dict[str, subprocess.Popen] = {}
        self.redis = RedisServer(tmp)
        # A real deployment's shape: the scheduler hop carries a token (it also keys the
        # backend labels, so every gateway shows the same label for an endpoint).
        self.env = {**os.environ, "RUST_LOG": "info", "LOG_FORMAT": "text",
                    "SCHEDULER_AUTH_TOKEN": TOKEN}
        try:
            for name in "ab":
                sim_port, port = free_port(), free_port()
                sim = self.spawn("llm-sim", f"sim-{name}", {
                    "SIM_LISTEN": f"127.0.0.1:{sim_port}", "SIM_SLOTS": str(SLOTS),
                    "SIM_TTFT_MS": str(SIM_TTFT_MS), "SIM_TPOT_MS": str(SIM_TPOT_MS)})
                replica = Replica(name, port, sim_port, None, sim, tmp / f"scheduler-{name}.log",
                                  grpc.insecure_channel(f"127.0.0.1:{port}",
                                                        options=QUICK_RECONNECT))
                replica.process = self.spawn("scheduler", f"scheduler-{name}", {
                    "SCHEDULER_LISTEN": replica.addr,
                    "SCHEDULER_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
                    "OLLAMA_BASE": replica.sim_url, "SCHEDULER_MAX_CONCURRENCY": str(SLOTS),
                    "SCHEDULER_PROBE_INTERVAL_MS": "200", "SCHEDULER_SHUTDOWN_GRACE_MS": "2000",
                    "SCHEDULER_REDIS_URL": self.redis.url, "SCHEDULER_GROUP": "scale-out",
                    "SCHEDULER_LEASE_TTL_MS": str(TTL_MS), "SCHEDULER_ADVERTISE": replica.advertise})
                self.replicas.append(replica)
            for replica in self.replicas:
                wait_for(f"{replica.sim_url}/sim/stats")
            self.leader()  # one replica leads and the other answers health, standing by
            for _ in range(gateways):
                self.add_gateway()
        except BaseException:
            self.stop()
            raise

    def spawn(self, binary: str, log_name: str, env: dict) -> subprocess.Popen:
        log = open(self.tmp / f"{log_name}.log", "wb")
        process = subprocess.Popen([str(BIN_DIR / binary)], env={**self.env, **env}, stdout=log,
                                   stderr=log)
        self.processes.append(process)
        return process

    def add_gateway(self) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.gateway_processes[url] = self.spawn("gateway", f"gateway-{port}", {
            "GATEWAY_LISTEN": f"127.0.0.1:{port}", "GATEWAY_SHUTDOWN_GRACE_MS": "2000",
            "SCHEDULER_URL": ",".join(f"http://{r.addr}" for r in self.replicas)})
        wait_for(f"{url}/readyz")
        self.gateways.append(url)
        return url

    def healths(self) -> list[str]:
        return [replica.health() for replica in self.replicas]

    def leader(self, deadline_s: float = 15.0) -> tuple[Replica, Replica]:
        """(leader, standby) once exactly one replica is SERVING and the other NOT_SERVING."""
        def settled():
            states = self.healths()
            return states if sorted(states) == ["NOT_SERVING", "SERVING"] else None
        states = wait_until(settled, deadline_s)
        assert states, f"no single leader after {deadline_s}s: {self.healths()}\n" + "\n".join(
            f"scheduler-{r.name} (exit {r.process.poll()}): {tail(r.log)}" for r in self.replicas)
        index = states.index("SERVING")
        return self.replicas[index], self.replicas[1 - index]

    def lease(self) -> str:
        return self.redis.cli("GET", "llmgw:lease:{scale-out}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a SIGSTOPped replica must see SIGTERM
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for replica in self.replicas:
            replica.channel.close()
        self.redis.kill()


def tail(log: Path, lines: int = 8) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"no log ({error})"


@pytest.fixture
def cluster_of(tmp_path):
    """cluster_of(gateways) starts a cluster; every one started is stopped after the test."""
    started = []

    def start(gateways: int) -> Cluster:
        started.append(Cluster(tmp_path, gateways))
        return started[-1]

    yield start
    for cluster in started:
        cluster.stop()


# ------------------------------------------------------------------------------------ load


@dataclass
class Outcome:
    gateway: str
    stream: bool
    sent: float
    head: float | None  # when the status line arrived
    ended: float
    kind: str  # "200", "<status> <code>", "sse error <code>", or what went wrong
    backend: str | None = None


def chat_body(stream: bool, tag: str) -> dict:
    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": stream,
            "messages": [{"role": "user", "content": f"scale out {tag}"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def error_kind(response: httpx.Response) -> str:
    """A refusal must be a documented status with OpenAI's error envelope."""
    try:
        error = response.json()["error"]
        code = error["code"]
        assert isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"{response.status_code} without an OpenAI error body: {response.text[:200]!r}"
    return f"{response.status_code} {code}"


def sse_kind(response: httpx.Response, give_up_at: float) -> str:
    """Reads an SSE body to its end: "200" for a complete stream, "sse error <code>" for an
    error event, anything else is a defect."""
    done, finish, usage, error = False, None, None, None
    for line in response.iter_lines():
        if time.monotonic() > give_up_at:
            return "client timeout (whole request)"
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            error = chunk["error"]
            continue
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            finish = choice.get("finish_reason") or finish
    if error is not None:
        return f"sse error {error.get('code')}" + (" after [DONE]" if done else "")
    if done and finish and usage and usage["completion_tokens"] == MAX_TOKENS:
        return "200"
    return f"stream ended incomplete (done={done}, finish={finish}, usage={usage})"


def one_request(client: httpx.Client, gateway: str, stream: bool, tag: str) -> Outcome:
    sent = time.monotonic()
    give_up_at = sent + CLIENT_TIMEOUT_S
    head, backend = None, None
    try:
        with client.stream("POST", f"{gateway}/v1/chat/completions", json=chat_body(stream, tag),
                           timeout=CLIENT_TIMEOUT_S) as response:
            head = time.monotonic()
            backend = response.headers.get("x-llmgw-backend")
            if response.status_code != 200:
                response.read()
                kind = error_kind(response)
            elif stream:
                kind = sse_kind(response, give_up_at)
            else:
                response.read()
                body = response.json()
                complete = body["choices"][0]["message"]["content"] and \
                    body["usage"]["completion_tokens"] == MAX_TOKENS
                kind = "200" if complete else f"malformed completion {body}"
    except httpx.TimeoutException:
        kind = "client timeout"
    except httpx.HTTPError as error:
        kind = f"transport {type(error).__name__}"
    return Outcome(gateway, stream, sent, head, time.monotonic(), kind, backend)


class Load:
    """`threads` clients, thread i on gateway i mod n, each alternating non-streamed and streamed
    requests back to back until stopped (or `max_s`, whichever comes first). Every request ends
    in exactly one recorded Outcome."""

    def __init__(self, gateways: list[str], threads: int, max_s: float = 20.0):
        self.gateways, self.outcomes, self.lock = gateways, [], threading.Lock()
        self.stopping = threading.Event()
        self.hard_stop = time.monotonic() + max_s
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                        for i in range(threads)]
        for thread in self.threads:
            thread.start()

    def client(self, index: int) -> None:
        gateway = self.gateways[index % len(self.gateways)]
        with httpx.Client(limits=httpx.Limits(max_connections=2)) as client:
            sequence = index  # half the clients start with a stream: a mix is in flight at any time
            while not self.stopping.is_set() and time.monotonic() < self.hard_stop:
                outcome = one_request(client, gateway, stream=sequence % 2 == 1,
                                      tag=f"{index}-{sequence}")
                with self.lock:
                    self.outcomes.append(outcome)
                sequence += 1

    def count(self, predicate) -> int:
        with self.lock:
            return sum(1 for outcome in self.outcomes if predicate(outcome))

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
            assert not thread.is_alive(), "a client thread hung past its own timeout"
        return self.outcomes


class Burst:
    """`count` requests sent at once (non-streamed), spread over the gateways, one thread each;
    `wait` collects their outcomes."""

    def __init__(self, gateways: list[str], count: int, tag: str):
        self.outcomes: list[Outcome] = []
        self.threads = [threading.Thread(target=self.send, args=(gateways[i % len(gateways)],
                                                                  f"{tag}-{i}"), daemon=True)
                        for i in range(count)]
        for thread in self.threads:
            thread.start()

    def send(self, gateway: str, tag: str) -> None:
        with httpx.Client() as client:
            self.outcomes.append(one_request(client, gateway, stream=False, tag=tag))

    def wait(self) -> list[Outcome]:
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
            assert not thread.is_alive(), "a burst request hung past its own timeout"
        return self.outcomes


class SimWatch:
    """Polls every replica's llm-sim (`GET /sim/stats`) until stopped, recording the largest
    number of active generations per sim and summed over both (a shared engine's view)."""

    def __init__(self, replicas: list[Replica], max_s: float = 30.0):
        self.replicas, self.stopping = replicas, threading.Event()
        self.max_active = {replica.name: 0 for replica in replicas}
        self.max_sum, self.polls = 0, 0
        self.hard_stop = time.monotonic() + max_s
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stopping.is_set() and time.monotonic() < self.hard_stop:
                active = {r.name: client.get(f"{r.sim_url}/sim/stats").json()["active"]
                          for r in self.replicas}
                for name, count in active.items():
                    self.max_active[name] = max(self.max_active[name], count)
                self.max_sum = max(self.max_sum, sum(active.values()))
                self.polls += 1
                time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def kinds(outcomes: list[Outcome]) -> Counter:
    return Counter(("stream " if o.stream else "non-stream ") + o.kind for o in outcomes)


def assert_every_outcome_is_honest(outcomes: list[Outcome]) -> None:
    """Each request ended exactly once: a complete 200, a documented error status with an
    OpenAI error body, or an SSE error event; never a timeout, a broken connection or garbage."""
    for outcome in outcomes:
        status = outcome.kind.split(" ")[0]
        honest = outcome.kind == "200" \
            or (status.isdigit() and int(status) in DOCUMENTED_FAILURES
                and "without" not in outcome.kind) \
            or (outcome.kind.startswith("sse error ") and "after" not in outcome.kind)
        assert honest, f"dishonest outcome: {outcome}"
        assert outcome.ended - outcome.sent < CLIENT_TIMEOUT_S, f"took too long: {outcome}"


def when(condition, deadline_s: float) -> float | None:
    """The monotonic time `condition` was first seen to hold (polled every 10 ms), or None."""
    return wait_until(lambda: condition() and time.monotonic(), deadline_s, interval_s=0.01)


def grpcurl(addr: str, method: str, data: dict, verbose: bool = False):
    command = [GRPCURL, "-plaintext", "-max-time", "10", *(["-v"] if verbose else []),
               "-H", f"authorization: Bearer {TOKEN}", "-d", json.dumps(data), addr, method]
    return subprocess.run(command, capture_output=True, text=True, timeout=20)


def log_refusals(replica: Replica) -> int:
    return sum(1 for line in replica.log.read_text(errors="replace").splitlines()
               if "chat refused" in line and "not_leader" in line)


# ----------------------------------------------------------------------------------- tests


def test_exactly_one_replica_serves_and_the_standby_names_the_leader(cluster_of):
    cluster = cluster_of(gateways=3)
    leader, standby = cluster.leader()
    epoch, holder = cluster.lease().split("|", 1)
    assert int(epoch) >= 1
    assert holder.rsplit("#", 1)[0] == leader.advertise, cluster.lease()

    # grpcurl agrees with the health the gateways watch.
    for replica, status in [(leader, "SERVING"), (standby, "NOT_SERVING")]:
        checked = grpcurl(replica.addr, "grpc.health.v1.Health/Check", {"service": ""})
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"status": status}

    # Chat straight to the standby: refused, naming the leader, with the reason in trailers.
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
               "sampling": {"max_tokens": 2}}
    refused = grpcurl(standby.addr, "llmgw.scheduler.v1.Scheduler/Chat", request, verbose=True)
    assert refused.returncode != 0
    assert "Code: Unavailable" in refused.stderr, refused.stderr
    assert f"this scheduler replica stands by; the leader is {leader.advertise}" in refused.stderr
    trailers = refused.stdout.split("Response trailers received:", 1)[1]
    assert "x-llmgw-reason: not_leader" in trailers, refused.stdout
    assert f"x-llmgw-leader: {leader.advertise}" in trailers, refused.stdout
    served = grpcurl(leader.addr, "llmgw.scheduler.v1.Scheduler/Chat", request)
    assert served.returncode == 0, served.stderr

    # Every gateway serves, streamed and not, and only the leader's engine generates.
    with httpx.Client() as client:
        for gateway in cluster.gateways:
            assert client.get(f"{gateway}/readyz", timeout=5).status_code == 200
            for stream in (False, True):
                outcome = one_request(client, gateway, stream, tag="every-gateway")
                assert outcome.kind == "200", outcome
                assert outcome.backend == leader.backend, outcome
    assert standby.sim_stats()["requests"] == 0
    assert leader.sim_stats()["completed"] == 1 + 2 * len(cluster.gateways)
    assert cluster.healths() == [("SERVING" if r is leader else "NOT_SERVING")
                                 for r in cluster.replicas], "leadership stayed put"


def test_sigkill_of_the_leader_under_load_fails_over_within_the_ttl(cluster_of):
    cluster = cluster_of(gateways=2)
    old, new = cluster.leader()
    old_epoch = int(cluster.lease().split("|", 1)[0])
    watch = SimWatch(cluster.replicas)
    load = Load(cluster.gateways, threads=6)
    try:
        # Steady state first: the old leader serving through both gateways.
        assert wait_until(lambda: load.count(lambda o: o.kind == "200") >= 12, 10), \
            f"no steady load before the kill: {kinds(load.outcomes)}"
        killed_at = time.monotonic()
        old.process.send_signal(signal.SIGKILL)
        old.process.wait(timeout=5)
        serving_at = when(lambda: new.health(timeout_s=0.5) == "SERVING", TTL_MS / 1000 + 3)
        assert serving_at, f"the standby never took over: {new.health()}"
        # Load keeps running ~4 s after the kill, then every client finishes its last request.
        stop_at = killed_at + 4.0
        while time.monotonic() < stop_at:
            time.sleep(0.05)
    finally:
        outcomes = load.stop()
        watch.stop()

    assert_every_outcome_is_honest(outcomes)
    by_new = [o for o in outcomes if o.kind == "200" and o.backend == new.backend]
    assert by_new, kinds(outcomes)
    failover_ms = (min(o.head for o in by_new) - killed_at) * 1000
    takeover_ms = (serving_at - killed_at) * 1000
    after = [o for o in outcomes if o.sent > killed_at]
    in_flight = [o for o in outcomes if o.sent <= killed_at < o.ended]
    failed = [o for o in outcomes if o.kind != "200"]
    counted = kinds(outcomes)
    served_by = Counter("old" if o.backend == old.backend else "new" for o in outcomes
                        if o.kind == "200")
    print(f"\nSIGKILL failover: standby SERVING after {takeover_ms:.0f} ms, first 200 via the new "
          f"leader after {failover_ms:.0f} ms; {len(outcomes)} requests ({len(in_flight)} in "
          f"flight at the kill, {len(after)} sent after it); 200s served by {dict(served_by)}; "
          f"max active generations per sim {watch.max_active}, summed {watch.max_sum} "
          f"({watch.polls} polls)")
    for kind, count in sorted(counted.items()):
        print(f"  {count:4d}  {kind}")
    RESULTS["SIGKILL: standby SERVING after (ms)"] = f"{takeover_ms:.0f}"
    RESULTS["SIGKILL: first 200 via new leader after (ms)"] = f"{failover_ms:.0f}"
    RESULTS["SIGKILL: requests (in flight at kill / sent after)"] = \
        f"{len(outcomes)} ({len(in_flight)} / {len(after)})"
    for kind, count in sorted(counted.items()):
        RESULTS[f"SIGKILL: outcome {kind}"] = str(count)
    RESULTS["SIGKILL: max active per sim / summed (slots)"] = \
        f"{max(watch.max_active.values())} / {watch.max_sum} ({SLOTS})"

    assert failover_ms <= TTL_MS + 1000, f"failover took {failover_ms:.0f} ms"
    # Only requests already generating on the killed leader may fail; the rest waited out the
    # failover and were served by the new leader.
    assert all(o.kind == "200" for o in after), [o for o in after if o.kind != "200"]
    assert all(o.sent <= killed_at for o in failed), failed
    assert len(failed) <= SLOTS, failed
    assert all(o.backend == new.backend for o in after)
    assert served_by["new"] >= 10 and served_by["old"] >= 12, served_by
    # The engine never ran more than its slots, and the two replicas never generated at once.
    assert max(watch.max_active.values()) <= SLOTS, watch.max_active
    assert watch.max_sum <= SLOTS, watch.max_sum
    assert watch.polls >= 50
    # The new lease is a new epoch held by the survivor.
    epoch, holder = cluster.lease().split("|", 1)
    assert int(epoch) == old_epoch + 1 and holder.rsplit("#", 1)[0] == new.advertise, cluster.lease()
    with httpx.Client() as client:
        for gateway in cluster.gateways:
            assert client.get(f"{gateway}/readyz", timeout=5).status_code == 200


def test_a_paused_leader_starts_nothing_after_it_resumes(cluster_of):
    cluster = cluster_of(gateways=2)
    paused, survivor = cluster.leader()
    load = Load(cluster.gateways, threads=4)
    try:
        assert wait_until(lambda: load.count(lambda o: o.backend == paused.backend) >= 8, 10), \
            kinds(load.outcomes)
        paused_at = time.monotonic()
        paused.process.send_signal(signal.SIGSTOP)
        took_over = when(lambda: survivor.health(timeout_s=0.5) == "SERVING", TTL_MS / 1000 + 3)
        assert took_over, "the standby never took over from the paused leader"
        # The load's clients are all held by the paused replica by now; fresh requests show
        # where the gateways send new work while it is paused. Its health watch merely goes
        # quiet, so the gateways still count it as SERVING and round-robin about half of these
        # to it, where they wait for the resume: measured and printed, not asserted.
        burst = Burst(cluster.gateways, 8, "during-pause")
        # Hold the pause for 2.5 TTL in all.
        resume_at = paused_at + 2.5 * TTL_MS / 1000
        while time.monotonic() < resume_at:
            time.sleep(0.02)
        # Stopped, the paused replica can send nothing: this is its engine's final count.
        before = paused.sim_stats()
        assert before["active"] == 0 and before["queued"] == 0, before
        refusals_before = log_refusals(paused)
        resumed_at = time.monotonic()
        paused.process.send_signal(signal.SIGCONT)
        first_health = paused.health(timeout_s=2)
        standing_by = when(lambda: paused.health() == "NOT_SERVING", 2)
        # What the gateways sent it while it was paused (if anything: their health checks stop
        # routing to a silent scheduler within about a second) reaches it now, and is refused.
        wait_until(lambda: log_refusals(paused) > refusals_before, 1)
        gateway_refusals = log_refusals(paused) - refusals_before
        # Asked directly, it refuses and names the new leader.
        refused = grpcurl(paused.addr, "llmgw.scheduler.v1.Scheduler/Chat",
                          {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                          verbose=True)
        # The gateways keep serving, through the new leader, well past the resume.
        assert wait_until(lambda: load.count(lambda o: o.backend == survivor.backend
                                             and o.sent > resumed_at + 1.0) >= 10, 5), \
            kinds(load.outcomes)
    finally:
        outcomes = load.stop()
    fresh = burst.wait()
    after = paused.sim_stats()

    # The load's requests in flight at the SIGSTOP: the paused replica held them until it resumed.
    held = [o for o in outcomes if o.sent < paused_at < o.ended]
    slowest = max(o.ended - o.sent for o in outcomes) * 1000
    RESULTS["SIGSTOP: standby SERVING after (ms)"] = f"{(took_over - paused_at) * 1000:.0f}"
    RESULTS["SIGSTOP: resumed replica NOT_SERVING after (ms)"] = \
        f"{(standing_by - resumed_at) * 1000:.0f} (first health answer: {first_health})" \
        if standing_by else "never"
    RESULTS["SIGSTOP: requests"] = str(len(outcomes))
    for kind, count in sorted(kinds(outcomes).items()):
        RESULTS[f"SIGSTOP: outcome {kind}"] = str(count)
    RESULTS["SIGSTOP: in flight at the pause / answered after resume"] = \
        f"{len(held)} / {sum(1 for o in held if o.ended > resumed_at)}"
    RESULTS["SIGSTOP: slowest request (ms)"] = f"{slowest:.0f}"
    fresh_served = [o for o in fresh if o.kind == "200" and o.ended < resumed_at]
    RESULTS["SIGSTOP: fresh requests after takeover: served during pause / held until resume"] = \
        f"{len(fresh_served)} / {sum(1 for o in fresh if o.ended > resumed_at)} of {len(fresh)}"
    RESULTS["SIGSTOP: paused replica's sim requests/started at resume -> end"] = \
        f"{before['requests']}/{before['started']} -> {after['requests']}/{after['started']}"
    RESULTS["SIGSTOP: gateway calls the resumed replica refused (not_leader)"] = \
        str(gateway_refusals)
    print("\nSIGSTOP: " + "; ".join(f"{k[9:]}: {v}" for k, v in RESULTS.items()
                                     if k.startswith("SIGSTOP")))

    assert standing_by, f"the resumed replica still reports {paused.health()}"
    assert refused.returncode != 0 and "Code: Unavailable" in refused.stderr, refused.stderr
    assert f"the leader is {survivor.advertise}" in refused.stderr, refused.stderr
    assert "x-llmgw-reason: not_leader" in refused.stdout, refused.stdout
    # The resumed replica starts no new work: the calls the gateways sent it while it was paused
    # reach it and are refused (not_leader). What it had already begun before the SIGSTOP may
    # still reach its engine — a process frozen between its last lease check and the write
    # finishes that write when it resumes, and only fencing at the engine could stop that — so
    # the engine sees at most the requests the replica held at the pause, never a new one.
    extra = after["requests"] - before["requests"]
    assert extra <= len(held), (extra, len(held), before, after)
    assert after["started"] - before["started"] <= extra, (before, after)
    assert cluster.healths() == [("SERVING" if r is survivor else "NOT_SERVING")
                                 for r in cluster.replicas]
    # Nobody lost a request: the ones the paused replica held were retried on the new leader.
    assert_every_outcome_is_honest(outcomes + fresh)
    assert all(o.kind == "200" for o in outcomes + fresh), kinds(outcomes + fresh)
    assert all(o.backend == survivor.backend for o in outcomes + fresh if o.sent > took_over)


@dataclass
class Moved:
    """One logical request of a client that moves to its next gateway on a transport failure."""

    outcome: Outcome
    tried: int


def test_clients_move_to_another_gateway_when_one_is_killed(cluster_of):
    cluster = cluster_of(gateways=3)
    leader, _ = cluster.leader()
    doomed, others = cluster.gateways[0], cluster.gateways[1:]
    results: list[Moved] = []
    lock, stopping = threading.Lock(), threading.Event()
    hard_stop = time.monotonic() + 20

    def client(index: int) -> None:
        # Every client starts on the doomed gateway; half fall back to each of the others first.
        order = [doomed, *others[index % 2:], *others[:index % 2]]
        current, sequence = 0, index
        with httpx.Client() as http:
            while not stopping.is_set() and time.monotonic() < hard_stop:
                for tried in range(1, len(order) + 1):
                    outcome = one_request(http, order[current], stream=sequence % 2 == 1,
                                          tag=f"gw-{index}-{sequence}")
                    if not outcome.kind.startswith("transport"):
                        break
                    current = (current + 1) % len(order)
                with lock:
                    results.append(Moved(outcome, tried))
                sequence += 1

    def count(predicate) -> int:
        with lock:
            return sum(1 for moved in results if predicate(moved))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: count(lambda m: m.outcome.gateway == doomed) >= 8, 10), results
        killed_at = time.monotonic()
        cluster.gateway_processes[doomed].send_signal(signal.SIGKILL)
        cluster.gateway_processes[doomed].wait(timeout=5)
        assert wait_until(lambda: count(lambda m: m.outcome.sent > killed_at) >= 20, 10), results
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
            assert not thread.is_alive(), "a client hung past its own timeout"

    moved = [m for m in results if m.tried > 1]
    summary = f"{len(results)} / {len(moved)} / {dict(Counter(m.outcome.kind for m in results))}"
    RESULTS["gateway SIGKILL: requests / moved to another gateway / outcomes"] = summary
    print(f"\ngateway SIGKILL: requests / moved to another gateway / outcomes: {summary}")
    assert all(m.outcome.kind == "200" for m in results), [m for m in results if m.outcome.kind != "200"]
    # Each client moved exactly once, and from then on used only the gateways still running.
    assert len(moved) == len(threads) and all(m.tried == 2 for m in moved), moved
    assert all(m.outcome.gateway in others for m in results if m.outcome.sent > killed_at)
    assert {m.outcome.gateway for m in results if m.outcome.sent > killed_at} == set(others)
    assert leader.sim_stats()["completed"] >= len(results)
    for gateway in others:
        assert httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200


@pytest.fixture(scope="module", autouse=True)
def numbers_table():
    yield
    if RESULTS:
        width = max(len(key) for key in RESULTS)
        print(f"\n\nscale-out numbers (lease TTL {TTL_MS} ms, {SLOTS} slots, debug build)")
        for key, value in RESULTS.items():
            print(f"  {key:<{width}}  {value}")
