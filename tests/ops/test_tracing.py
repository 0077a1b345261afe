"""OpenTelemetry tracing against a real OTLP/gRPC receiver: the spans, their parents, the traceparent sent upstream.

The receiver is opentelemetry-proto's TraceService on a grpcio server of its own (127.0.0.1, port 0, its own
threads), keeping every export request as it arrived. The gateway's exporter sends from the SDK's thread;
`GatewayServer.stop` flushes it, so a test reads what was exported once the gateway has stopped, no sleeping.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import build_settings
from launch_gateway.testing.local_launch import EndpointSpec, Faults, RequestRecord
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory, upstream_calls
from tests.e2e.test_async import submit, wait_request
from tests.packaging.test_console_script import cli

SERVICE = "launch_gateway.v1.EndpointService"
SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
UNSET, ERROR = trace_pb2.Status.STATUS_CODE_UNSET, trace_pb2.Status.STATUS_CODE_ERROR
ARGS = pb.EndpointRequest(args=struct_pb2.Struct())


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps each export request, answers success."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def exported(self) -> bytes:
        """Everything received, as bytes on the wire: to look for what must not be there."""
        with self._lock:
            return b"".join(r.SerializeToString() for r in self.requests)

    def spans(self) -> list[trace_pb2.Span]:
        with self._lock:
            return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            return [attributes(rs.resource.attributes) for r in self.requests for rs in r.resource_spans]


@dataclass
class Collector:
    endpoint: str  # http://127.0.0.1:PORT, as tracing.otlp_endpoint takes it
    receiver: Receiver = field(repr=False)


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Collector(f"http://127.0.0.1:{port}", receiver)
    finally:
        server.stop(0).wait(5)


def attributes(values: Any) -> dict[str, Any]:
    """OTLP KeyValues as a dict of plain values."""
    out: dict[str, Any] = {}
    for kv in values:
        value: common_pb2.AnyValue = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def traced(collector: Collector, **tracing: Any) -> dict[str, Any]:
    return {"tracing": {"otlp_endpoint": collector.endpoint, **tracing}}


def caller_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's (trace id, span id, traceparent), hex."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def one(spans: list[trace_pb2.Span], name: str) -> trace_pb2.Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans called {name!r} in {[s.name for s in spans]}"
    return found[0]


def sent_traceparent(record: RequestRecord) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = record.headers["traceparent"].split("-")
    return version, trace_id, span_id, flags


def check_client_span(span: trace_pb2.Span, stack: Stack, method: str, template: str, status: int) -> None:
    assert span.kind == CLIENT
    assert span.name == f"{method} {template}"
    attrs = attributes(span.attributes)
    host, port = stack.launch.url.removeprefix("http://").rsplit(":", 1)
    assert attrs == {
        "http.request.method": method,
        "url.template": template,
        "server.address": host,
        "server.port": int(port),
        "http.response.status_code": status,
    }
    assert span.status.code == UNSET


async def test_predict_spans_join_the_callers_trace_and_the_upstream_gets_the_client_span(
    make_stack: StackFactory, collector: Collector
) -> None:
    stack = await make_stack(
        api_keys=["sk-launch-4b1d"], upstream_key="sk-launch-4b1d", settings=traced(collector, service_name="gw-test")
    )
    trace_id, caller_span, traceparent = caller_traceparent()
    request = pb.PredictRequest(endpoint_name="echo")
    request.request.args.update({"secret_payload": "payload-7e57"})
    metadata = (("traceparent", traceparent), ("tracestate", "vendor=opaque"))
    await stack.stub.Predict(request, metadata=metadata, timeout=10)
    await stack.gateway.stop(0)

    spans = collector.receiver.spans()
    server = one(spans, f"{SERVICE}/Predict")
    assert server.kind == SERVER
    assert (server.trace_id.hex(), server.parent_span_id.hex()) == (trace_id, caller_span)
    assert server.trace_state == "vendor=opaque"
    assert attributes(server.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
    }
    assert server.status.code == UNSET
    lookup, predict = one(spans, "GET /v1/model-endpoints"), one(spans, "POST /v1/sync-tasks")
    for span in (lookup, predict):
        assert span.trace_id.hex() == trace_id
        assert span.parent_span_id == server.span_id
        assert server.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.end_time_unix_nano <= server.end_time_unix_nano
    check_client_span(lookup, stack, "GET", "/v1/model-endpoints", 200)
    check_client_span(predict, stack, "POST", "/v1/sync-tasks", 200)
    assert {r["service.name"] for r in collector.receiver.resources()} == {"gw-test"}

    # Launch got the client span's context (the caller's trace, the caller's tracestate), not the caller's span.
    by_path = {r.path: r for r in upstream_calls(stack.launch)}
    for path, span in (("/v1/model-endpoints", lookup), ("/v1/sync-tasks", predict)):
        assert sent_traceparent(by_path[path]) == ("00", trace_id, span.span_id.hex(), "01")
        assert by_path[path].headers["tracestate"] == "vendor=opaque"
    endpoint_id = by_path["/v1/sync-tasks"].query["model_endpoint_id"]
    exported = collector.receiver.exported
    for secret in ("sk-launch-4b1d", "payload-7e57", "secret_payload", endpoint_id, "model_endpoint_id"):
        assert secret.encode() not in exported, f"{secret!r} was exported"


async def test_wait_async_task_polls_are_client_spans_of_its_server_span_without_the_task_id(
    make_stack: StackFactory, collector: Collector
) -> None:
    stack = await make_stack(settings=traced(collector))
    task_id = await submit(stack, delay=0.3)
    trace_id, caller_span, traceparent = caller_traceparent()
    reply = await stack.stub.WaitAsyncTask(
        wait_request(task_id, 10), metadata=(("traceparent", traceparent),), timeout=15
    )
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    await stack.gateway.stop(0)

    spans = collector.receiver.spans()
    submitted = one(spans, f"{SERVICE}/SubmitAsync")
    assert not submitted.parent_span_id  # no traceparent: a trace of its own
    assert one(spans, "POST /v1/async-tasks").parent_span_id == submitted.span_id
    server = one(spans, f"{SERVICE}/WaitAsyncTask")
    assert (server.trace_id.hex(), server.parent_span_id.hex()) == (trace_id, caller_span)
    assert attributes(server.attributes)["rpc.method"] == "WaitAsyncTask"
    polls = [s for s in spans if s.name == "GET /v1/async-tasks/{task_id}"]
    assert len(polls) >= 2  # pending at first, then the result
    for poll in polls:
        assert (poll.trace_id.hex(), poll.parent_span_id) == (trace_id, server.span_id)
        check_client_span(poll, stack, "GET", "/v1/async-tasks/{task_id}", 200)
    sent = {sent_traceparent(r)[2] for r in upstream_calls(stack.launch) if r.path.startswith("/v1/async-tasks/")}
    assert sent == {poll.span_id.hex() for poll in polls}
    assert task_id.encode() not in collector.receiver.exported


async def test_stream_predict_server_span_lasts_until_the_stream_ends(
    make_stack: StackFactory, collector: Collector
) -> None:
    release, last_event_at = asyncio.Event(), []

    async def slow_end(**kwargs: Any) -> Any:
        yield {"i": 0}
        await release.wait()  # the last event waits until the caller has read the first
        last_event_at.append(time.time_ns())  # the clock OpenTelemetry stamps spans with
        yield {"i": 1}

    stack = await make_stack([EndpointSpec("slow-end", "streaming", slow_end)], settings=traced(collector))
    trace_id, caller_span, traceparent = caller_traceparent()
    request = pb.StreamPredictRequest(endpoint_name="slow-end", request=ARGS)
    call = stack.stub.StreamPredict(request, metadata=(("traceparent", traceparent),), timeout=10)
    first = await call.read()
    release.set()
    last = await call.read()
    assert (first.response.status, last.response.status) == (pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_SUCCESS)
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    await stack.gateway.stop(0)

    spans = collector.receiver.spans()
    server = one(spans, f"{SERVICE}/StreamPredict")
    assert (server.trace_id.hex(), server.parent_span_id.hex()) == (trace_id, caller_span)
    assert attributes(server.attributes)["rpc.grpc.status_code"] == 0
    opened = one(spans, "POST /v1/streaming-tasks")
    assert opened.parent_span_id == server.span_id
    check_client_span(opened, stack, "POST", "/v1/streaming-tasks", 200)
    (produced,) = last_event_at
    assert server.end_time_unix_nano > produced  # the events, not just the opening
    assert opened.end_time_unix_nano < server.end_time_unix_nano
    (record,) = [r for r in upstream_calls(stack.launch) if r.path == "/v1/streaming-tasks"]
    assert sent_traceparent(record)[1:3] == (trace_id, opened.span_id.hex())


async def test_each_retry_is_a_client_span_and_a_server_failure_is_an_error(
    make_stack: StackFactory, collector: Collector
) -> None:
    stack = await make_stack(settings={**traced(collector), "upstream": {"retry_attempts": 3}})
    task_id = await submit(stack)
    stack.launch.faults = Faults(error_rates={503: 1.0})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="missing", request=ARGS), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    await stack.gateway.stop(0)

    spans = collector.receiver.spans()
    server = one(spans, f"{SERVICE}/GetAsyncTask")
    assert server.status.code == ERROR
    assert attributes(server.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert attributes(server.attributes)["error.type"] == "UNAVAILABLE"
    attempts = sorted(
        (s for s in spans if s.name == "GET /v1/async-tasks/{task_id}"), key=lambda s: s.start_time_unix_nano
    )
    assert [attributes(a.attributes).get("http.request.resend_count") for a in attempts] == [None, 1, 2]
    for attempt in attempts:
        assert attempt.parent_span_id == server.span_id
        assert attempt.status.code == ERROR
        assert attributes(attempt.attributes)["error.type"] == "503"
        assert attributes(attempt.attributes)["http.response.status_code"] == 503
    caller_mistake = one(spans, f"{SERVICE}/Predict")
    assert caller_mistake.status.code == UNSET  # not the server's failure
    assert attributes(caller_mistake.attributes)["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


async def test_a_caller_that_does_not_sample_gets_no_spans_but_its_trace_goes_on_upstream(
    make_stack: StackFactory, collector: Collector
) -> None:
    stack = await make_stack(settings=traced(collector))
    trace_id, caller_span, traceparent = caller_traceparent(sampled=False)
    request = pb.PredictRequest(endpoint_name="echo", request=ARGS)
    await stack.stub.Predict(request, metadata=(("traceparent", traceparent),), timeout=10)
    await stack.gateway.stop(0)
    assert collector.receiver.spans() == []
    (record,) = [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]
    version, sent_trace, sent_span, flags = sent_traceparent(record)
    assert (version, sent_trace, flags) == ("00", trace_id, "00")
    assert sent_span != caller_span  # the gateway's own (unrecorded) span


async def test_sample_ratio_zero_records_no_trace_that_starts_at_the_gateway(
    make_stack: StackFactory, collector: Collector
) -> None:
    stack = await make_stack(settings=traced(collector, sample_ratio=0.0))
    request = pb.PredictRequest(endpoint_name="echo", request=ARGS)
    await stack.stub.Predict(request, timeout=10)
    _, _, traceparent = caller_traceparent()
    await stack.stub.Predict(request, metadata=(("traceparent", traceparent),), timeout=10)
    await stack.gateway.stop(0)
    # The sampled caller's call only (its endpoint lookup was a cache hit: the first call made it).
    assert sorted(s.name for s in collector.receiver.spans()) == ["POST /v1/sync-tasks", f"{SERVICE}/Predict"]
    assert {s.trace_id.hex() for s in collector.receiver.spans()} == {traceparent.split("-")[1]}


async def test_tracing_off_passes_the_callers_traceparent_through_and_makes_no_spans(stack: Stack) -> None:
    assert stack.gateway.tracing is None
    assert stack.gateway.telemetry.tracing is None
    _, _, traceparent = caller_traceparent()
    request = pb.PredictRequest(endpoint_name="echo", request=ARGS)
    await stack.stub.Predict(request, metadata=(("traceparent", traceparent), ("tracestate", "a=b")), timeout=10)
    (record,) = [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]
    assert (record.headers["traceparent"], record.headers["tracestate"]) == (traceparent, "a=b")


async def test_tracing_off_loads_neither_the_tracing_module_nor_the_sdks_tracer(tmp_path: Path) -> None:
    # (redis-py imports OpenTelemetry's metrics API by itself where it is installed: not ours to judge.)
    code = (
        "import sys; from launch_gateway.server.app import GatewayServer; "
        "from launch_gateway.server.settings import build_settings; "
        "GatewayServer(build_settings({'metrics': {'enabled': False}})); "
        "print(sorted(m for m in sys.modules if m == 'launch_gateway.server.observability.tracing' "
        "or m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, out.decode().strip()) == (0, "[]")


async def test_serve_with_tracing_on_but_no_tracing_extra_says_so_in_one_line(tmp_path: Path) -> None:
    args = ("serve", "--port", "0", "--metrics.enabled", "false", "--tracing.otlp_endpoint", "http://127.0.0.1:4317")
    code, out, err = await cli(*args, absent=("opentelemetry",), cwd=tmp_path)
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1, err
    assert "tracing.otlp_endpoint is set" in err
    assert "pip install 'launch-gateway[server,tracing]'" in err


@pytest.mark.parametrize(
    ("tracing", "problem"),
    [
        ({"sample_ratio": 1.5}, "tracing.sample_ratio: must be within 0..1, not 1.5"),
        ({"sample_ratio": -0.1}, "tracing.sample_ratio: must be within 0..1, not -0.1"),
        ({"otlp_endpoint": "collector:4317"}, "tracing.otlp_endpoint: must start with http:// or https://"),
    ],
    ids=["ratio-above-1", "negative-ratio", "endpoint-without-scheme"],
)
def test_tracing_settings_are_checked(tracing: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"tracing": tracing})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
