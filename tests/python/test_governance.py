"""Governance (GATEWAY_CONFIG) as a black box with real peers: the OpenAI SDK against API keys,
model/priority/option permissions and rate limits (including the SDK's own retry honouring
`Retry-After`); three gateways sharing one real redis-server under concurrent streams, with
the token budget held exactly; Redis killed and restarted under `on_error` deny and allow; the
scheduler's bearer token seen through grpcurl; a key revoked by editing the file; and, last,
no plaintext key in any log these stacks wrote."""

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from conftest import BIN_DIR, RedisServer, Stack, free_port

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")

# Our own crates at debug: a key leaking into a debug line counts too.
LOG_LEVEL = "info,gateway=debug,scheduler=debug,llm_sim=debug,llmgw_telemetry=debug,llmgw_proto=debug"

# Every stack's log directory and every secret used, for the final log scan.
WRITTEN_LOGS: list[Path] = []
SECRETS_USED: set[str] = set()
LABELS_USED: set[str] = set()
ANSI = re.compile(r"\x1b\[[0-9;]*m")

RATE_HEADERS = [
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "ratelimit-policy", "ratelimit",
]
OPENAI_DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+s)$")

# One pooled client for the many-request paths (a fresh httpx client costs ~60 ms). Used only
# where every answer reads the body first (200, or a 429 from the handler), never for 401/403
# refusals: see test_early_refusal_leaves_the_connection_usable.
POOLED = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))


# ---------------------------------------------------------------------------------- helpers


def new_key(label: str) -> str:
    key = f"sk-{label}-{secrets.token_hex(16)}"
    SECRETS_USED.add(key)
    return key


def hash_key(key: str) -> str:
    """The hash the real binary prints (`gateway hash-key`, key on stdin: not in argv)."""
    result = subprocess.run([str(BIN_DIR / "gateway"), "hash-key"], input=key + "\n",
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed == hashlib.sha256(key.encode()).hexdigest()
    return printed


def write_atomically(path: Path, text: str) -> None:
    """Replaces the file in one step, so the watcher never reads half a file."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def wait_until(condition, deadline_s: float, interval_s: float = 0.05):
    """Polls `condition` until it returns something truthy; returns it, or None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return None


def start_stack(tmp: Path, config_text: str | None = None, extra_env: dict | None = None) -> Stack:
    env = {"RUST_LOG": LOG_LEVEL, **(extra_env or {})}
    gateway_env = {}
    if config_text is not None:
        config = tmp / "gateway.toml"
        config.write_text(config_text)
        gateway_env["GATEWAY_CONFIG"] = str(config)
    WRITTEN_LOGS.append(tmp)
    return Stack(tmp, extra_env=env, gateway_env=gateway_env)


def auth(key: str | None) -> dict:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def chat(base: str, key: str | None, model: str = "llama3.2", timeout: float = 30, client=httpx,
         **extra) -> httpx.Response:
    body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], **extra}
    return client.post(f"{base}/v1/chat/completions", json=body, headers=auth(key), timeout=timeout)


def limits(base: str, key: str) -> dict:
    response = httpx.get(f"{base}/v1/limits", headers=auth(key), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Streamed:
    status: int
    headers: httpx.Headers
    error: dict | None = None
    usage: dict | None = None
    content: str = ""
    done: bool = False
    finish_reasons: list = field(default_factory=list)


def stream_chat(base: str, key: str, content: str, model: str = "llama3.2") -> Streamed:
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": content}]}
    with POOLED.stream("POST", f"{base}/v1/chat/completions", json=body, headers=auth(key)) as response:
        if response.status_code != 200:
            response.read()
            return Streamed(response.status_code, response.headers, error=response.json()["error"])
        outcome = Streamed(200, response.headers)
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                outcome.done = True
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                outcome.error = chunk["error"]
                continue
            if chunk.get("usage"):
                outcome.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                outcome.content += choice["delta"].get("content") or ""
                if choice.get("finish_reason"):
                    outcome.finish_reasons.append(choice["finish_reason"])
        return outcome


def tenant_toml(name: str, **fields) -> str:
    lines = ["[[tenant]]", f'name = "{name}"']
    for key, value in fields.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def key_toml(tenant: str, key: str, label: str) -> str:
    LABELS_USED.add(label)
    return f'[[key]]\ntenant = "{tenant}"\nname = "{label}"\nsha256 = "{hash_key(key)}"\n'


def store_toml(redis_url: str, on_error: str) -> str:
    return f'[store]\nredis_url = "{redis_url}"\non_error = "{on_error}"\ntimeout_ms = 250\n'


# ------------------------------------------------------------- 1. the OpenAI SDK, one gateway


@pytest.fixture(scope="module")
def governed(tmp_path_factory):
    keys = {"a": new_key("team-a"), "fast": new_key("team-fast")}
    config = 'auth = "api_key"\n' + tenant_toml(
        "team-a", priority="interactive", max_priority="interactive", models=["llama*"],
        rpm=3, tpm=100000, max_concurrent=8, max_tokens=5, tokens_per_day=2000000,
        tokens_per_month=40000000, allowed_options=["top_k"],
    ) + tenant_toml("team-fast", rpm=60, max_tokens=1) + key_toml("team-a", keys["a"], "team-a-sdk") \
        + key_toml("team-fast", keys["fast"], "team-fast-sdk")
    stack = start_stack(tmp_path_factory.mktemp("governed"), config)
    yield stack, keys
    stack.stop()


def sdk(stack, key, max_retries=0, **kwargs):
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=max_retries, **kwargs)


MESSAGES = [{"role": "user", "content": "Name three colours."}]


def test_missing_or_wrong_key_is_an_authentication_error(governed):
    stack, keys = governed
    wrong = new_key("wrong")
    # No key: the SDK insists on one, so the request drops its Authorization header.
    for key, headers in [(keys["a"], {"Authorization": openai.omit}), (wrong, None)]:
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk(stack, key).chat.completions.create(model="llama3.2", messages=MESSAGES, extra_headers=headers)
        assert refused.value.status_code == 401
        assert refused.value.body["code"] == "invalid_api_key"
        assert refused.value.response.headers["x-llmgw-reason"] == "invalid_api_key"
        assert wrong not in refused.value.response.text, "the refusal never echoes the key"
    # No header at all, raw: the OpenAI error envelope.
    response = chat(stack.gateway_url, None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"]
    assert httpx.get(f"{stack.gateway_url}/v1/limits", timeout=10).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, wrong).models.list()


def test_model_priority_and_option_refusals_are_permission_errors(governed):
    stack, keys = governed
    # A fresh client per call: see test_early_refusal_leaves_the_connection_usable.
    with pytest.raises(openai.PermissionDeniedError) as model:
        sdk(stack, keys["a"]).chat.completions.create(model="smollm2:135m", messages=MESSAGES)
    assert model.value.status_code == 403
    assert (model.value.body["code"], model.value.body["param"]) == ("model_not_allowed", "model")
    with pytest.raises(openai.PermissionDeniedError) as priority:
        sdk(stack, keys["a"]).chat.completions.create(model="llama3.2", messages=MESSAGES,
                                                      extra_headers={"x-priority": "critical"})
    assert (priority.value.body["code"], priority.value.body["param"]) == ("priority_not_allowed", "x-priority")
    with pytest.raises(openai.PermissionDeniedError) as option:
        sdk(stack, keys["a"]).chat.completions.create(model="llama3.2", messages=MESSAGES,
                                                      extra_body={"min_p": 0.1})
    assert (option.value.body["code"], option.value.body["param"]) == ("option_not_allowed", "min_p")


def test_early_refusal_leaves_the_connection_usable(governed):
    """A refusal decided from the headers (401 key, 403 priority) is sent after the gateway has
    read the body the client is still sending, so the keep-alive connection stays usable: a
    pooled client's next request on it must not fail with "Server disconnected"."""
    stack, keys = governed
    body = json.dumps({"model": "llama3.2", "messages": MESSAGES}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer {new_key('early')}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=5) as sock:
        sock.sendall(head)
        time.sleep(0.05)  # not a wait: the body's second segment, as a split writer sends it
        sock.sendall(body)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 401"), first
        assert b"\r\nconnection: close\r\n" not in first.lower()
        sock.sendall(head + body)
        again = sock.recv(65536)
        assert again.startswith(b"HTTP/1.1 401"), again


def test_limits_endpoint_describes_the_keys_tenant(governed):
    stack, keys = governed
    # `x-api-key` works as well as the bearer header; the key decides the tenant, so
    # `x-tenant-id` is ignored.
    response = httpx.get(f"{stack.gateway_url}/v1/limits", timeout=10,
                         headers={"x-api-key": keys["a"], "x-tenant-id": "team-fast"})
    assert response.status_code == 200
    view = response.json()
    assert view["object"] == "limits"
    assert (view["tenant"], view["priority"], view["max_priority"], view["max_tokens"]) == \
        ("team-a", "interactive", "interactive", 5)
    limits_ = view["limits"]
    assert (limits_["rpm"], limits_["tpm"], limits_["max_concurrent"]) == (3, 100000, 8)
    assert (limits_["tokens_per_day"], limits_["tokens_per_month"]) == (2000000, 40000000)
    assert limits_["remaining"]["concurrent"] == 8
    assert 0 <= limits_["remaining"]["requests"] <= 3
    assert limits_["remaining"]["tokens_today"] <= 2000000
    assert set(limits_["reset"]) >= {"requests", "tokens", "day", "month"}


def test_rate_limit_error_carries_retry_after_and_ratelimit_headers(governed):
    stack, keys = governed
    client = sdk(stack, keys["a"])
    # rpm = 3: three pass at once; the completion is capped at the tenant's max_tokens (5).
    asked = [{}, {"max_tokens": 50}, {"max_tokens": 2, "extra_body": {"top_k": 3}}]
    for left, extra in zip([2, 1, 0], asked):
        raw = client.chat.completions.with_raw_response.create(model="llama3.2", messages=MESSAGES, **extra)
        completion = raw.parse()
        assert completion.usage.completion_tokens == min(5, extra.get("max_tokens", 5))
        for name in RATE_HEADERS:
            assert name in raw.headers, f"success lacks {name}"
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    error = limited.value
    assert error.status_code == 429
    assert error.body["code"] == "rate_limited"
    headers = error.response.headers
    for name in RATE_HEADERS + ["retry-after"]:
        assert name in headers, f"429 lacks {name}"
    retry_after = int(headers["retry-after"])
    assert 1 <= retry_after <= 20, "one request refills every 20 s"
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert 0 <= int(headers["x-ratelimit-remaining-tokens"]) <= 100000
    assert OPENAI_DURATION.match(headers["x-ratelimit-reset-requests"]), headers["x-ratelimit-reset-requests"]
    assert OPENAI_DURATION.match(headers["x-ratelimit-reset-tokens"]), headers["x-ratelimit-reset-tokens"]
    assert '"rpm";q=3;w=60' in headers["ratelimit-policy"]
    assert '"tpm";q=100000;w=60' in headers["ratelimit-policy"]
    assert '"rpm";r=0;t=' in headers["ratelimit"]
    assert headers["x-llmgw-reason"] == "rate_limited"


def test_sdk_retry_honours_retry_after_and_then_succeeds(governed):
    stack, keys = governed
    key = keys["fast"]
    # rpm = 60: drain the 60-request bucket with parallel clients until one is refused.
    refused = threading.Event()
    granted = []

    def hammer():
        while not refused.is_set():
            status = chat(stack.gateway_url, key, max_tokens=1, client=POOLED).status_code
            assert status in (200, 429), status
            if status == 429:
                refused.set()
            else:
                granted.append(status)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hammer) for _ in range(8)]
        for future in futures:
            future.result(timeout=30)
    assert len(granted) >= 60
    # The next grant leaves the bucket just under one request: the SDK's first try must wait.
    assert wait_until(lambda: chat(stack.gateway_url, key, max_tokens=1, client=POOLED).status_code == 200, 3), \
        "one request per second refills"

    seen = []
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [
        lambda response: seen.append((response.status_code, response.headers.get("retry-after")))]})
    client = sdk(stack, key, max_retries=2, http_client=http_client)
    started = time.monotonic()
    completion = client.chat.completions.create(model="llama3.2", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert completion.usage.completion_tokens == 1
    assert seen == [(429, "1"), (200, None)], seen
    assert 1.0 <= elapsed < 5.0, f"the SDK waited Retry-After (1 s) once: {elapsed:.2f}s"


# ------------------------------------------------- 2. three gateways, one Redis, one budget

PROMPT = "one two three four"
# Reservation per request: the prompt estimate (18 + 4 bytes of content and role, + 8 per
# message + 8) plus the completion cap 8 = 46. The sim counts 4 prompt words + 8 tokens = 12.
RESERVED, CAP = 46, 8
BUDGET = RESERVED + 19 * 12  # at most 20 successes of 12 tokens; about half of 40 in 5 rounds
MAX_CONCURRENT = 6


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.kill()


def test_three_gateways_share_one_budget_exactly(tmp_path, redis_server):
    key = new_key("team-b")
    config = 'auth = "api_key"\n' + store_toml(redis_server.url, "deny") + tenant_toml(
        "team-b", models=["llama*"], tpm=400, max_concurrent=MAX_CONCURRENT, max_tokens=CAP,
        tokens_per_day=BUDGET) + key_toml("team-b", key, "team-b-streams")
    stack = start_stack(tmp_path, config)
    try:
        gateways = [stack.gateway_url,
                    stack.add_gateway({"GATEWAY_CONFIG": str(tmp_path / "gateway.toml")}),
                    stack.add_gateway({"GATEWAY_CONFIG": str(tmp_path / "gateway.toml")})]
        started = time.time()
        outcomes = []
        with ThreadPoolExecutor(8) as pool:
            for round_ in range(5):
                jobs = [pool.submit(stream_chat, gateways[(round_ * 8 + j) % 3], key, PROMPT) for j in range(8)]
                outcomes += [job.result(timeout=60) for job in jobs]
        assert len(outcomes) == 40
        # While requests are in flight their reservations hold the budget: those refusals are
        # `rate_limited`, retry in a second. Sequential requests then spend it for real.
        for attempt in range(30):
            last = stream_chat(gateways[attempt % 3], key, PROMPT)
            outcomes.append(last)
            if last.status != 200:
                break
        assert last.status == 429 and last.error["code"] == "budget_exhausted", (last.status, last.error)

        served = [o for o in outcomes if o.status == 200]
        refused = [o for o in outcomes if o.status != 200]
        assert served and refused, [o.status for o in outcomes]
        for o in served:
            assert o.error is None and o.done, o
            assert o.usage is not None, "include_usage: the last chunk carries usage"
            assert o.usage["completion_tokens"] <= CAP
            assert o.usage["total_tokens"] == o.usage["prompt_tokens"] + o.usage["completion_tokens"]
            assert len(o.finish_reasons) == 1, o.finish_reasons
            assert o.headers["x-ratelimit-limit-tokens"] == "400", "streams carry the rate-limit state too"
            assert '"day";q=%d;w=86400' % BUDGET in o.headers["ratelimit-policy"]
        for o in refused:
            assert o.status == 429, (o.status, o.error)
            assert o.error["code"] in ("rate_limited", "budget_exhausted"), o.error
            assert int(o.headers["retry-after"]) >= 1
            assert o.headers["x-ratelimit-limit-tokens"] == "400"
        for o in refused:
            if o.error["code"] == "rate_limited" and "held by requests in flight" in o.error["message"]:
                assert o.headers["retry-after"] == "1", "a held budget is retried soon, not at midnight"
        budget_refusals = [o for o in refused if o.error["code"] == "budget_exhausted"]
        assert budget_refusals, "the daily budget is what binds"
        to_midnight = 86400 - started % 86400
        for o in budget_refusals:
            assert abs(int(o.headers["retry-after"]) - to_midnight) <= 60, "a day budget renews at 00:00 UTC"

        delivered = sum(o.usage["total_tokens"] for o in served)
        assert delivered <= BUDGET

        # Settlement is asynchronous: every gateway must converge on the exact ledger.
        expected = {"concurrent": MAX_CONCURRENT, "tokens_today": BUDGET - delivered}

        def settled():
            views = [limits(url, key)["limits"]["remaining"] for url in gateways]
            return all({k: v[k] for k in expected} == expected for v in views) and views

        views = wait_until(settled, 5)
        assert views, (expected, [limits(url, key)["limits"]["remaining"] for url in gateways])
        # Redis itself: no reservation left, and the day's counter is what was delivered.
        for held in redis_server.keys("*:held"):
            assert redis_server.cli("ZCARD", held) == "0", held
        for detail in redis_server.keys("*:detail"):
            assert redis_server.cli("HLEN", detail) == "0", detail
        assert redis_server.keys("*{team-b}:state") == ["llmgw:{team-b}:state"]
        assert redis_server.cli("HGET", "llmgw:{team-b}:state", "day_used") == str(delivered)
    finally:
        stack.stop()


# ---------------------------------------------------------------- 3. Redis down and back


def test_redis_down_denies_or_allows_and_recovers_without_restart(tmp_path, redis_server):
    key = new_key("team-c")
    tenant = tenant_toml("team-c", rpm=10000, max_concurrent=50, tokens_per_day=10_000_000)
    keys = key_toml("team-c", key, "team-c-redis")
    (tmp_path / "allow.toml").write_text(store_toml(redis_server.url, "allow") + tenant + keys)
    stack = start_stack(tmp_path, store_toml(redis_server.url, "deny") + tenant + keys)
    try:
        deny = stack.gateway_url
        allow = stack.add_gateway({"GATEWAY_CONFIG": str(tmp_path / "allow.toml")})
        assert chat(deny, key).status_code == 200
        assert chat(allow, key).status_code == 200

        redis_server.kill()
        killed = time.monotonic()
        slowest = [0.0]

        def denied():
            sent = time.monotonic()
            response = chat(deny, key, timeout=5)
            slowest[0] = max(slowest[0], time.monotonic() - sent)
            return response if response.status_code == 503 else None

        response = wait_until(denied, 2.0)
        assert response is not None, "deny: 503 within 2 s of Redis going away"
        assert slowest[0] < 2.0
        assert response.json()["error"]["code"] == "limits_unavailable"
        assert response.headers["x-llmgw-reason"] == "limits_unavailable"
        assert response.headers["retry-after"] == "1"
        assert time.monotonic() - killed < 2.5
        limits_down = httpx.get(f"{deny}/v1/limits", headers=auth(key), timeout=5)
        assert limits_down.status_code == 503
        assert limits_down.json()["error"]["code"] == "limits_unavailable"

        sent = time.monotonic()
        served = chat(allow, key, timeout=5)
        assert served.status_code == 200, served.text
        assert time.monotonic() - sent < 2.0
        assert served.json()["usage"]["completion_tokens"] == 2

        redis_server.start()  # same port, empty
        back = wait_until(lambda: chat(deny, key, timeout=5).status_code == 200, 10)
        assert back, "the deny gateway serves again once Redis is back, without a restart"
        assert chat(allow, key).status_code == 200
        assert limits(deny, key)["limits"]["remaining"]["concurrent"] == 50
    finally:
        stack.stop()


# ------------------------------------------------------- 4. the scheduler's bearer token


def grpcurl(addr, *args, data=None, token=None, reflect_token=None):
    command = [GRPCURL, "-plaintext", "-max-time", "20"]
    if token is not None:
        command += ["-H", f"authorization: Bearer {token}"]
    if reflect_token is not None:  # for the reflection calls only, not the method itself
        command += ["-reflect-header", f"authorization: Bearer {reflect_token}"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run([*command, addr, *args], capture_output=True, text=True, timeout=30)


def test_scheduler_token_guards_grpc_but_not_health(tmp_path):
    token = secrets.token_hex(24)
    SECRETS_USED.add(token)
    stack = start_stack(tmp_path, extra_env={"SCHEDULER_AUTH_TOKEN": token})
    try:
        addr = stack.scheduler_addr
        request = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                   "sampling": {"max_tokens": 2}}
        listed = grpcurl(addr, "list")
        assert listed.returncode != 0 and "Unauthenticated" in listed.stderr, listed
        wrong = grpcurl(addr, "list", token=token[:-1] + ("0" if token[-1] != "0" else "1"))
        assert wrong.returncode != 0 and "Unauthenticated" in wrong.stderr, wrong
        # Reflection taken from a caller with the token; the call itself without it.
        bare = grpcurl(addr, "llmgw.scheduler.v1.Scheduler/Chat", data=request, reflect_token=token)
        assert bare.returncode != 0 and "Unauthenticated" in bare.stderr, bare

        listed = grpcurl(addr, "list", token=token)
        assert listed.returncode == 0, listed.stderr
        assert "llmgw.scheduler.v1.Scheduler" in listed.stdout.split()
        called = grpcurl(addr, "llmgw.scheduler.v1.Scheduler/Chat", data=request, token=token)
        assert called.returncode == 0, called.stderr
        assert '"usage"' in called.stdout and '"completionTokens": 2' in called.stdout

        taken = grpcurl(addr, "llmgw.scheduler.v1.Scheduler/Chat", token=token,
                        data={**request, "extraJson": json.dumps({"model": "x"})})
        assert taken.returncode != 0
        assert "InvalidArgument" in taken.stderr and "`model`" in taken.stderr, taken.stderr

        # Health itself is open (probes send no token); only grpcurl's reflection needs it.
        health = grpcurl(addr, "grpc.health.v1.Health/Check", data={"service": ""}, reflect_token=token)
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout) == {"status": "SERVING"}
        # The gateway, given the same token, still serves.
        assert chat(stack.gateway_url, None).status_code == 200
    finally:
        stack.stop()


# --------------------------------------------------------------- 5. revoking a key live


def test_a_key_removed_from_the_file_is_refused_without_restart(tmp_path):
    doomed, kept = new_key("doomed"), new_key("kept")
    tenant = tenant_toml("team-d", models=["llama*"])
    doomed_entry, kept_entry = key_toml("team-d", doomed, "doomed-key"), key_toml("team-d", kept, "kept-key")
    stack = start_stack(tmp_path, 'auth = "api_key"\n' + tenant + doomed_entry + kept_entry)
    config = tmp_path / "gateway.toml"
    log = tmp_path / "gateway.log"
    try:
        assert chat(stack.gateway_url, doomed).status_code == 200
        assert chat(stack.gateway_url, kept).status_code == 200
        # An invalid file is refused and the running one stays.
        write_atomically(config, 'auth = "api_key"\n' + tenant + "[[key]]\ntenant = \"nobody\"\n")
        assert wait_until(lambda: "GATEWAY_CONFIG reload refused" in log.read_text(), 5)
        assert chat(stack.gateway_url, doomed).status_code == 200

        write_atomically(config, 'auth = "api_key"\n' + tenant + kept_entry)
        revoked = time.monotonic()
        assert wait_until(lambda: chat(stack.gateway_url, doomed).status_code == 401, 3.0), \
            "the removed key is refused within 3 s"
        assert time.monotonic() - revoked < 3.5
        refused = chat(stack.gateway_url, doomed)
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{stack.gateway_url}/v1/limits", headers=auth(doomed), timeout=10).status_code == 401
        assert chat(stack.gateway_url, kept).status_code == 200
    finally:
        stack.stop()


# ---------------------------------------------------------------- 6. no key in any log


def test_no_plaintext_key_appears_in_any_log():
    if not WRITTEN_LOGS or not SECRETS_USED:
        pytest.skip("run with the tests above: they write the logs")
    logs = [path for directory in WRITTEN_LOGS for path in directory.glob("*.log")]
    assert any(path.name == "gateway.log" for path in logs)
    assert sum(path.stat().st_size for path in logs) > 0
    texts = {path: ANSI.sub("", path.read_text(errors="replace")) for path in logs}
    # The scan looks where keys would show: the lines of keyed requests name the key's label.
    if LABELS_USED:
        assert any(f'key="{label}"' in text for text in texts.values() for label in LABELS_USED)
    for path, text in texts.items():
        for secret in SECRETS_USED:
            assert secret not in text, f"{path} contains a plaintext key"
            # Nor half of one (a truncated or split print).
            assert secret[: len(secret) // 2 + 4] not in text, f"{path} contains part of a key"


def test_the_anthropic_sdk_is_governed_by_its_x_api_key(governed):
    """The Anthropic SDK sends its key in `x-api-key`: the key decides the tenant (team-fast's
    cap of 1 output token applies), and a wrong key is Anthropic's authentication error."""
    import anthropic
    stack, keys = governed
    claude = anthropic.Anthropic(base_url=stack.gateway_url, api_key=keys["fast"], max_retries=0)
    message = claude.messages.create(model="llama3.2", max_tokens=50, messages=MESSAGES)
    assert message.usage.output_tokens == 1 and message.stop_reason == "max_tokens"
    wrong = new_key("wrong")
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=stack.gateway_url, api_key=wrong, max_retries=0).messages.create(
            model="llama3.2", max_tokens=8, messages=MESSAGES)
    assert refused.value.body["error"]["type"] == "authentication_error"
    assert refused.value.response.headers["x-llmgw-reason"] == "invalid_api_key"
    assert wrong not in refused.value.response.text


# ------------------------------------------------------- every route governed alike (a table)

ROUTES = {
    "/v1/chat/completions": lambda model: {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": lambda model: {"model": model, "prompt": "hi"},
    "/v1/embeddings": lambda model: {"model": model, "input": "hi"},
    "/v1/responses": lambda model: {"model": model, "input": "hi"},
    "/v1/messages": lambda model: {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    "/api/chat": lambda model: {"model": model, "stream": False, "messages": [{"role": "user", "content": "hi"}]},
    "/api/generate": lambda model: {"model": model, "stream": False, "prompt": "hi"},
    "/api/embed": lambda model: {"model": model, "input": "hi"},
}


def reason_and_message(path: str, response: httpx.Response) -> tuple[str, str]:
    """The refusal's reason (always in `x-llmgw-reason`) and its message, read from the
    route's own error envelope: OpenAI's, Ollama's or Anthropic's."""
    body = response.json()
    if path.startswith("/api/"):
        message = body["error"]
    elif path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"].endswith("_error"), body
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == response.headers["x-llmgw-reason"], body
        message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return response.headers["x-llmgw-reason"], message


@pytest.fixture(scope="module")
def every_route(tmp_path_factory):
    keys = {"ok": new_key("route-ok"), "slow": new_key("route-slow")}
    config = 'auth = "api_key"\n' \
        + tenant_toml("routes", max_priority="interactive", models=["llama*"], rpm=1000) \
        + tenant_toml("one-a-minute", rpm=1) \
        + key_toml("routes", keys["ok"], "routes-key") + key_toml("one-a-minute", keys["slow"], "slow-key")
    stack = start_stack(tmp_path_factory.mktemp("every-route"), config)
    yield stack, keys
    stack.stop()


def test_every_route_refuses_alike(every_route):
    """One refusal of each kind over every generation and embeddings route — the gateway's own
    (key, model, priority, limit, body) and the scheduler's (an unknown model) — the same status
    and reason whatever the wire format, in that format's envelope, and none reaches the engine."""
    stack, keys = every_route
    # The slow tenant's one request a minute, spent here so each route below is over it.
    assert httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=ROUTES["/v1/chat/completions"]("llama3.2"),
                      headers=auth(keys["slow"]), timeout=30).status_code == 200
    engine_requests = httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["requests"]
    cases = [
        # (what, key, model, extra headers, raw body or None, status, reason)
        ("no key", None, "llama3.2", {}, None, 401, "invalid_api_key"),
        ("model outside the tenant's globs", keys["ok"], "qwen2", {}, None, 403, "model_not_allowed"),
        ("priority above the tenant's", keys["ok"], "llama3.2", {"x-priority": "critical"}, None, 403,
         "priority_not_allowed"),
        ("rate limit", keys["slow"], "llama3.2", {}, None, 429, "rate_limited"),
        ("malformed body", keys["ok"], "llama3.2", {}, b"{not json", 400, "invalid_request"),
        ("malformed first-token objective", keys["ok"], "llama3.2", {"x-slo-ttft-ms": "soon"}, None, 400,
         "invalid_request"),
        ("malformed per-token objective", keys["ok"], "llama3.2", {"x-slo-tpot-ms": "0"}, None, 400,
         "invalid_request"),
    ]
    # Allowed by the tenant's globs, unknown to the engine: its 404 through the scheduler's
    # one gRPC-status table (this one reaches the engine, so it is counted apart).
    unknown = ("model no engine serves", keys["ok"], "llama-nope", {}, None, 404, "model_not_found")

    def refuse(path, body_of, what, key, model, headers, raw, status, reason):
        request_headers = {**auth(key), **headers, "content-type": "application/json"}
        if raw is None:
            response = httpx.post(f"{stack.gateway_url}{path}", json=body_of(model),
                                  headers=request_headers, timeout=30)
        else:
            response = httpx.post(f"{stack.gateway_url}{path}", content=raw, headers=request_headers,
                                  timeout=30)
        assert response.status_code == status, f"{path} {what}: {response.status_code} {response.text}"
        assert reason_and_message(path, response)[0] == reason, f"{path} {what}"
        assert response.headers["x-request-id"].startswith("req_"), f"{path} {what}"
        if status == 429:
            assert int(response.headers["retry-after"]) >= 1, f"{path} {what}"

    for path, body_of in ROUTES.items():
        for case in cases:
            refuse(path, body_of, *case)
    assert httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["requests"] == engine_requests
    for path, body_of in ROUTES.items():
        refuse(path, body_of, *unknown)
    # And each route serves the tenant's allowed model.
    for path, body_of in ROUTES.items():
        response = httpx.post(f"{stack.gateway_url}{path}", json=body_of("llama3.2"), headers=auth(keys["ok"]),
                              timeout=30)
        assert response.status_code == 200, f"{path}: {response.text}"
        assert response.headers["x-llmgw-tenant"] == "routes"


def test_every_route_refuses_an_unattainable_first_token_objective_alike(tmp_path):
    """The scheduler's objective refusal on every route: with one slot busy and one request
    waiting, `x-slo-ttft-ms: 100` cannot be met — 429 `slo_unattainable` with `Retry-After`,
    in the route's own envelope, before any engine work; a relaxed objective is served."""
    stack = Stack(tmp_path, extra_env={"SCHEDULER_MAX_CONCURRENCY": "1", "RUST_LOG": LOG_LEVEL},
                  sim_env={"SIM_TPOT_MS": "100"})
    pool = ThreadPoolExecutor(2)
    try:
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        taught = httpx.post(f"{stack.gateway_url}/v1/chat/completions", json=body, timeout=30)
        assert taught.status_code == 200  # teaches the scheduler the pace
        backlog = [pool.submit(httpx.post, f"{stack.gateway_url}/v1/chat/completions",
                               json={**body, "max_tokens": 40}, timeout=60) for _ in range(2)]

        def waiting() -> float:
            text = httpx.get(stack.scheduler_metrics_url, timeout=2).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("llmgw_queue_depth{"))

        assert wait_until(lambda: waiting() == 1, 10), "one request never queued"
        engine_requests = httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["requests"]
        for path, body_of in ROUTES.items():
            response = httpx.post(f"{stack.gateway_url}{path}", json=body_of("llama3.2"),
                                  headers={"x-slo-ttft-ms": "100"}, timeout=30)
            assert response.status_code == 429, f"{path}: {response.status_code} {response.text}"
            assert reason_and_message(path, response)[0] == "slo_unattainable", path
            assert int(response.headers["retry-after"]) >= 1, path
        assert httpx.get(f"{stack.sim_url}/sim/stats", timeout=5).json()["requests"] == engine_requests
        assert all(f.result(timeout=60).status_code == 200 for f in backlog)
        relaxed = httpx.post(f"{stack.gateway_url}/v1/messages", headers={"x-slo-ttft-ms": "60000"},
                             json=ROUTES["/v1/messages"]("llama3.2"), timeout=30)
        assert relaxed.status_code == 200, relaxed.text
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        stack.stop()
