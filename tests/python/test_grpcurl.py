"""The real grpcurl binary (1.8, reflection v1alpha) against the scheduler: list, describe,
a Chat call with JSON input, health, and a refusal."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(stack, *args, data=None):
    command = [GRPCURL, "-plaintext", "-max-time", "20"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [stack.scheduler_addr, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def json_objects(text):
    """grpcurl prints streamed messages as consecutive pretty-printed JSON objects."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        obj, index = decoder.raw_decode(text, index)
        objects.append(obj)
    return objects


def test_list_shows_scheduler_health_and_reflection(stack):
    result = grpcurl(stack, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "llmgw.scheduler.v1.Scheduler" in services
    assert "grpc.health.v1.Health" in services


def test_describe_shows_the_chat_contract(stack):
    result = grpcurl(stack, "describe", "llmgw.scheduler.v1.Scheduler")
    assert result.returncode == 0, result.stderr
    assert "rpc Chat ( .llmgw.scheduler.v1.ChatRequest ) returns ( stream .llmgw.scheduler.v1.ChatEvent )" in result.stdout
    message = grpcurl(stack, "describe", "llmgw.scheduler.v1.ChatRequest")
    for field in ["model", "messages", "tenant", "priority", "deadline_ms"]:
        assert f" {field} = " in message.stdout


@pytest.mark.parametrize("stream", [False, True])
def test_chat_streams_events_in_order(stack, stream):
    request = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
               "sampling": {"max_tokens": 4}}
    result = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Chat", data=request)
    assert result.returncode == 0, result.stderr
    events = json_objects(result.stdout)
    kinds = [next(iter(event)) for event in events]
    # The hand-over to the engine is announced first (a client that leaves now pays its prompt).
    assert kinds[:2] == ["dispatched", "started"]
    assert events[0]["dispatched"]["backend"].startswith("ollama@")
    assert events[0]["dispatched"]["promptTokens"] == 9  # "hi": 1 token + 8 for the message
    assert kinds[-2:] == ["finish", "usage"]
    deltas = [e["delta"]["content"] for e in events if "delta" in e]
    assert len(deltas) == (4 if stream else 1)
    assert len("".join(deltas).split()) == 4
    assert events[-2]["finish"]["reason"] == "length"
    assert events[-1]["usage"] == {"promptTokens": 1, "completionTokens": 4}
    assert events[1]["started"]["pool"] == "default"


def test_invalid_role_is_invalid_argument(stack):
    result = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Chat",
                     data={"model": "llama3.2", "messages": [{"role": "robot", "content": "hi"}]})
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "messages[0].role" in result.stderr


def test_health_is_serving(stack):
    result = grpcurl(stack, "grpc.health.v1.Health/Check", data={"service": "llmgw.scheduler.v1.Scheduler"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_complete_and_embed_are_callable_directly(stack):
    """The Complete and Embed RPCs, as a platform team would call them without the gateway."""
    result = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Complete",
                     data={"model": "llama3.2", "prompt": "Once upon a time", "sampling": {"max_tokens": 3}})
    assert result.returncode == 0, result.stderr
    events = json_objects(result.stdout)
    assert [next(iter(e)) for e in events][-2:] == ["finish", "usage"]
    assert len("".join(e["delta"]["content"] for e in events if "delta" in e).split()) == 3

    result = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Embed",
                     data={"model": "llama3.2", "input": ["the cat", "a dog barks"]})
    assert result.returncode == 0, result.stderr
    events = json_objects(result.stdout)
    assert [next(iter(e)) for e in events] == ["dispatched", "started", "embeddings", "finish", "usage"]
    vectors = events[2]["embeddings"]["vectors"]
    assert [len(v["values"]) for v in vectors] == [16, 16]
    assert events[4]["usage"] == {"promptTokens": 5}

    refused = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Embed", data={"model": "llama3.2"})
    assert refused.returncode != 0 and "InvalidArgument" in refused.stderr
    assert "`input`" in refused.stderr


def test_status_is_a_snapshot_of_the_replica(stack):
    """The Status RPC the gateway's status page reads, called as an operator would."""
    result = grpcurl(stack, "llmgw.scheduler.v1.Scheduler/Status", data={})
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["role"] == "sole" and status["serving"] is True
    [pool] = status["pools"]
    assert int(pool["capacity"]) >= 1
    assert [c["class"] for c in pool["waiting"]] == ["critical", "interactive", "batch"]
    [endpoint] = pool["endpoints"]
    assert endpoint["kind"] == "ollama" and endpoint["up"] is True and endpoint["breaker"] == "closed"
    assert endpoint["slotsSource"] == "configured"
