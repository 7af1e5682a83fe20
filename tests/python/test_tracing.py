"""One trace per request, across processes, seen by a real OTLP/gRPC receiver: gateway server
span → gRPC client span → scheduler server span → admission.wait and the backend client span
(GenAI attributes), parented on the caller's traceparent, continued into the backend's
traceparent; and export to an unreachable collector costs the client nothing."""

import statistics
import threading
import time
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import Stack, free_port

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((service, span))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_hex):
        with self.lock:
            return [(service, span) for service, span in self.spans if span.trace_id.hex() == trace_hex]


def attributes(span):
    def value(v):
        kind = v.WhichOneof("value")
        return getattr(v, kind) if kind else None
    return {a.key: value(a.value) for a in span.attributes}


@pytest.fixture(scope="module")
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    sink = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield sink, port
    server.stop(0)


@pytest.fixture(scope="module")
def traced_stack(receiver, tmp_path_factory):
    _, port = receiver
    stack = Stack(tmp_path_factory.mktemp("traced"), {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
    })
    yield stack
    stack.stop()


def test_one_request_is_one_trace_across_both_services_and_the_backend(receiver, traced_stack):
    sink, _ = receiver
    response = httpx.post(f"{traced_stack.gateway_url}/v1/chat/completions", timeout=30,
                          headers={"traceparent": TRACEPARENT},
                          json={"model": "llama3.2", "max_tokens": 5, "temperature": 0.5,
                                "messages": [{"role": "user", "content": "trace me"}]})
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == CALLER_TRACE
    usage = response.json()["usage"]

    deadline = time.monotonic() + 20
    names = set()
    while time.monotonic() < deadline:
        spans = sink.of_trace(CALLER_TRACE)
        names = {span.name for _, span in spans}
        if {"POST /v1/chat/completions", "llmgw.scheduler.v1.Scheduler/Chat", "admission.wait",
            "chat llama3.2"} <= names and len(spans) >= 5:
            break
        time.sleep(0.1)
    spans = sink.of_trace(CALLER_TRACE)
    by_name = {}
    for service, span in spans:
        by_name.setdefault(span.name, []).append((service, span))
    assert {service for service, _ in spans} == {"gateway", "scheduler"}, names

    (_, server), = by_name["POST /v1/chat/completions"]
    assert server.parent_span_id.hex() == CALLER_SPAN, "the caller's traceparent is the parent"
    assert server.kind == server.SPAN_KIND_SERVER
    assert attributes(server)["http.response.status_code"] == 200

    grpc_spans = dict((service, span) for service, span in by_name["llmgw.scheduler.v1.Scheduler/Chat"])
    client, scheduler = grpc_spans["gateway"], grpc_spans["scheduler"]
    assert client.kind == client.SPAN_KIND_CLIENT and scheduler.kind == scheduler.SPAN_KIND_SERVER
    assert client.parent_span_id == server.span_id
    assert scheduler.parent_span_id == client.span_id, "context crossed the gRPC hop"
    assert attributes(scheduler)["rpc.system"] == "grpc"

    (_, wait), = by_name["admission.wait"]
    assert wait.parent_span_id == scheduler.span_id
    assert attributes(wait)["llmgw.admission.outcome"] == "admitted"
    assert any(e.name == "admission decision" for e in wait.events)
    assert any(e.name == "routing decision" for e in scheduler.events)

    (_, backend), = by_name["chat llama3.2"]
    assert backend.parent_span_id == scheduler.span_id
    assert backend.kind == backend.SPAN_KIND_CLIENT
    genai = attributes(backend)
    assert genai["gen_ai.operation.name"] == "chat"
    assert genai["gen_ai.provider.name"] == "ollama"
    assert genai["gen_ai.request.model"] == "llama3.2"
    assert genai["gen_ai.response.model"] == "llama3.2"
    assert genai["gen_ai.request.max_tokens"] == 5
    assert genai["gen_ai.request.temperature"] == pytest.approx(0.5)
    assert genai["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert genai["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert "length" in genai["gen_ai.response.finish_reasons"]
    assert any(e.name == "first token" for e in backend.events)
    for span in (server, client, scheduler, wait, backend):
        text = " ".join(str(v) for v in attributes(span).values())
        assert "trace me" not in text, "no prompt text in spans"

    stats = httpx.get(f"{traced_stack.sim_url}/sim/stats").json()
    _, trace_id, parent_id, _ = stats["last_traceparent"].split("-")
    assert trace_id == CALLER_TRACE, "the backend received the same trace"
    assert parent_id == backend.span_id.hex(), "…as a child of the backend client span"


@pytest.mark.parametrize("path, body, method, operation, trace", [
    ("/v1/completions", {"model": "llama3.2", "prompt": "complete me", "max_tokens": 3},
     "Complete", "text_completion", "5bf92f3577b34da6a3ce929d0e0e4736"),
    ("/v1/embeddings", {"model": "llama3.2", "input": ["embed me", "and me"]},
     "Embed", "embeddings", "6bf92f3577b34da6a3ce929d0e0e4736"),
])
def test_completions_and_embeddings_are_one_trace_too(receiver, traced_stack, path, body, method, operation,
                                                      trace):
    """The other two RPCs follow the same span tree: gateway server → gRPC client → scheduler
    server → admission.wait and a GenAI backend span named after the operation."""
    sink, _ = receiver
    response = httpx.post(f"{traced_stack.gateway_url}{path}", timeout=30, json=body,
                          headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"})
    assert response.status_code == 200, response.text
    assert response.headers["x-trace-id"] == trace
    usage = response.json()["usage"]
    rpc = f"llmgw.scheduler.v1.Scheduler/{method}"
    backend_name = f"{operation} llama3.2"
    wanted = {f"POST {path}", rpc, "admission.wait", backend_name}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = sink.of_trace(trace)
        if wanted <= {span.name for _, span in spans} and len(spans) >= 5:
            break
        time.sleep(0.1)
    by_name = {}
    for service, span in sink.of_trace(trace):
        by_name.setdefault(span.name, []).append((service, span))
    assert wanted <= set(by_name), sorted(by_name)
    (_, server), = by_name[f"POST {path}"]
    assert server.parent_span_id.hex() == CALLER_SPAN
    grpc_spans = dict(by_name[rpc])
    assert grpc_spans["gateway"].parent_span_id == server.span_id
    assert grpc_spans["scheduler"].parent_span_id == grpc_spans["gateway"].span_id
    (_, wait), = by_name["admission.wait"]
    assert wait.parent_span_id == grpc_spans["scheduler"].span_id
    (_, backend), = by_name[backend_name]
    assert backend.parent_span_id == grpc_spans["scheduler"].span_id
    genai = attributes(backend)
    assert genai["gen_ai.operation.name"] == operation
    assert genai["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    text = " ".join(str(v) for _, span in sink.of_trace(trace) for v in attributes(span).values())
    assert "complete me" not in text and "embed me" not in text, "no prompt text in spans"


def test_json_logs_carry_the_trace_id(receiver, traced_stack):
    response = httpx.post(f"{traced_stack.gateway_url}/v1/chat/completions", timeout=30,
                          json={"model": "llama3.2", "max_tokens": 2,
                                "messages": [{"role": "user", "content": "log me"}]})
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = (traced_stack.tmp / "gateway.log").read_text()
        if trace_id in log:
            break
        time.sleep(0.05)
    line = next(l for l in log.splitlines() if trace_id in l)
    assert '"trace_id":"' + trace_id in line
    assert "log me" not in log, "no prompt text in logs at info"


def test_an_unreachable_collector_costs_clients_nothing(tmp_path_factory):
    def latencies(stack, n=20):
        samples = []
        with httpx.Client(timeout=30) as http:
            for _ in range(n):
                started = time.monotonic()
                response = http.post(f"{stack.gateway_url}/v1/chat/completions",
                                     json={"model": "llama3.2", "max_tokens": 2,
                                           "messages": [{"role": "user", "content": "hi"}]})
                assert response.status_code == 200
                samples.append(time.monotonic() - started)
        return samples

    baseline = Stack(tmp_path_factory.mktemp("no-export"))
    try:
        base = statistics.median(latencies(baseline))
    finally:
        baseline.stop()
    dead = Stack(tmp_path_factory.mktemp("dead-collector"), {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        exporting = statistics.median(latencies(dead))
    finally:
        dead.stop()
    assert exporting <= 2 * base + 0.05, f"median {exporting * 1000:.1f} ms vs {base * 1000:.1f} ms without export"
