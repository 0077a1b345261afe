"""Caller input and odd upstream answers end with the status they deserve, never INTERNAL or UNKNOWN.

A Retry-After too large for a Duration is told as the longest delay the gateway gives (an hour), and the
code callers get is the code that is counted. A WaitAsyncTask timeout outside google.protobuf.Duration's
range, `args_json` nested past the depth limit and tracing headers that are not W3C Trace Context are
INVALID_ARGUMENT naming the field, with no traceback in the logs (any caller could flood them).
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.server.errors import MAX_RETRY_DELAY
from launch_gateway.server.upstream.translate import MAX_JSON_DEPTH
from launch_gateway.testing.local_launch import Faults
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, upstream_calls
from tests.e2e.test_tools import run
from tests.ops.conftest import http_get, samples

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> object:
    """Each test here ends with no ERROR logged: caller input is never the gateway's bug."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("launch_gateway")]
    assert not errors, [r.getMessage() for r in errors]


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)
    info = error_details_pb2.RetryInfo()
    for detail in status.details if status is not None else ():
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def trailer(error: grpc.aio.AioRpcError, key: str) -> str | None:
    return next((v for k, v in error.trailing_metadata() or () if k == key), None)


# --- Retry-After -------------------------------------------------------------------------------


async def test_an_enormous_retry_after_is_an_hour_and_counted_as_what_the_caller_got(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.launch.faults = Faults(throttle_rate=1.0, retry_after=1e30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert retry_delay(caught.value) == MAX_RETRY_DELAY
    assert trailer(caught.value, "retry-after") == str(int(MAX_RETRY_DELAY))
    _, scrape = await http_get(stack, "/metrics")
    handled = samples(scrape, "grpc_server_handled_total")
    predicts = {series: n for series, n in handled.items() if 'grpc_method="Predict"' in series and n}
    assert predicts == {next(s for s in predicts if 'grpc_code="ResourceExhausted"' in s): 1.0}, predicts


@pytest.mark.parametrize("value", ["inf", "-5", "nan", "1e400"])
async def test_a_retry_after_that_is_no_delay_is_ignored(
    raw_upstream: RawUpstream, make_stack: StackFactory, value: str
) -> None:
    from aiohttp import web

    async def throttle(request: web.Request) -> web.Response:
        if request.query.get("name") and request.path.endswith("/model-endpoints"):
            return web.json_response({"model_endpoints": [{"id": "e1", "name": "echo", "endpoint_type": "sync"}]})
        return web.json_response({"detail": "slow down"}, status=429, headers={"Retry-After": value})

    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(throttle)}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert retry_delay(caught.value) is None
    assert trailer(caught.value, "retry-after") is None


# --- WaitAsyncTask.timeout ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration",
    [
        duration_pb2.Duration(seconds=315_576_000_001),
        duration_pb2.Duration(seconds=-315_576_000_001),
        duration_pb2.Duration(seconds=10**15),  # beyond what ToTimedelta can hold: it was INTERNAL
        duration_pb2.Duration(seconds=2**63 - 1),
        duration_pb2.Duration(seconds=1, nanos=1_000_000_000),
        duration_pb2.Duration(nanos=-1_000_000_000),
    ],
    ids=["seconds+", "seconds-", "1e15", "int64-max", "nanos+", "nanos-"],
)
async def test_a_wait_timeout_outside_durations_range_is_invalid_argument(
    stack: Stack, duration: duration_pb2.Duration
) -> None:
    submitted = await stack.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}")), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=submitted.task_id, timeout=duration), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith("timeout: ")


# --- args_json depth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args_json",
    [
        '{"a":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"a":' + "[" * 100_000,  # never closed
        '{"a":' + '{"b":' * (MAX_JSON_DEPTH) + "1" + "}" * (MAX_JSON_DEPTH) + "}",
    ],
    ids=["100000-deep", "100000-open", "limit+1"],
)
@pytest.mark.parametrize("rpc", ["Predict", "SubmitAsync"])
async def test_args_json_nested_too_deep_is_invalid_argument(stack: Stack, rpc: str, args_json: str) -> None:
    request = pb.EndpointRequest(args_json=args_json)
    name, message = ("echo", pb.PredictRequest) if rpc == "Predict" else ("echo-async", pb.SubmitAsyncRequest)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stack.stub, rpc)(message(endpoint_name=name, request=request), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details() == f"request.args_json: nested deeper than {MAX_JSON_DEPTH} levels"
    assert not [r for r in upstream_calls(stack.launch) if r.path != "/v1/model-endpoints"]


async def test_args_json_at_the_depth_limit_goes_through(stack: Stack) -> None:
    args_json = '{"a":' + "[" * (MAX_JSON_DEPTH - 1) + '"]{["' + "]" * (MAX_JSON_DEPTH - 1) + "}"
    reply = await stack.stub.Predict(
        pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json=args_json)), timeout=10
    )
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


# --- traceparent and tracestate ----------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


async def raw_predict(stack: Stack, tmp_path: Path, headers: dict[str, str]) -> str:
    """Predict over raw HTTP/2 (nghttp) with `headers` as sent, which grpc's own clients would refuse to send."""
    tool = shutil.which("nghttp")
    assert tool, "nghttp comes from the Debian package nghttp2-client (make test installs it)"
    body = tmp_path / "body.bin"
    body.write_bytes(frame(ECHO.SerializeToString()))
    sent = ["-H", ":method: POST", "-H", "content-type: application/grpc", "-H", "te: trailers"]
    for name, value in headers.items():
        sent += ["-H", f"{name}: {value}"]
    url = f"http://{stack.gateway.address}/launch_gateway.v1.EndpointService/Predict"
    _code, out, err = await run(tool, "-v", "-t", "10", *sent, "-d", str(body), url, within=20)
    return out + err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("traceparent", TRACEPARENT[:-1] + "\x01"),
        ("traceparent", TRACEPARENT[:-2] + "\x7f1"),
        ("traceparent", TRACEPARENT[:20] + "é" + TRACEPARENT[21:]),
        ("tracestate", "congo=t61rcWkgMzE\x01"),
        ("tracestate", "congo=caf\xe9"),
        ("tracestate", "rojo=00f067aa0ba902b7\x1b[31m"),
    ],
    ids=[
        "traceparent-control",
        "traceparent-del",
        "traceparent-8bit",
        "tracestate-control",
        "tracestate-8bit",
        "tracestate-escape",
    ],
)
async def test_a_tracing_header_with_control_or_8bit_characters_is_invalid_argument(
    stack: Stack, tmp_path: Path, name: str, value: str
) -> None:
    headers = {"traceparent": TRACEPARENT, name: value}
    out = await raw_predict(stack, tmp_path, headers)
    assert "grpc-status: 3" in out, out[-2000:]
    assert f"grpc-message: {name}" in out, out[-2000:]
    assert not [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("traceparent", TRACEPARENT.upper()),
        ("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"),  # all-zero trace id
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"),  # all-zero parent id
        ("traceparent", "ff" + TRACEPARENT[2:]),  # version ff is forbidden
        ("traceparent", TRACEPARENT + "-extra"),  # version 00 has exactly four fields
        ("traceparent", TRACEPARENT[:-3]),
        ("traceparent", "x" * 4_000),  # long, yet under grpc-core's 8 KiB soft limit on metadata
        ("tracestate", "Congo=t61rcWkgMzE"),  # keys are lower-case
        ("tracestate", "congo=t61=rcWkgMzE"),  # "=" is not allowed in a value
        ("tracestate", "congo"),
        ("tracestate", ",".join(f"k{n}=v" for n in range(33))),  # at most 32 members
        ("tracestate", "k=" + "v" * 600),  # longer than the gateway passes on
    ],
    ids=[
        "upper-case",
        "zero-trace-id",
        "zero-parent-id",
        "version-ff",
        "v00-extra",
        "short",
        "long",
        "upper-key",
        "equals-in-value",
        "no-value",
        "33-members",
        "long-state",
    ],
)
async def test_a_tracing_header_that_is_not_w3c_is_invalid_argument(stack: Stack, name: str, value: str) -> None:
    metadata = (("traceparent", TRACEPARENT), (name, value))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith(f"{name}: ")


@pytest.mark.parametrize(
    "tracestate",
    ["", "congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", "tenant@vendor=v a l,,x=y", "k=" + "v" * 255],
    ids=["empty", "one", "two-with-space", "multi-tenant-key", "longest-value"],
)
async def test_w3c_tracing_headers_pass_through_unchanged(stack: Stack, tracestate: str) -> None:
    metadata = [("traceparent", TRACEPARENT)] + ([("tracestate", tracestate)] if tracestate else [])
    reply = await stack.stub.Predict(ECHO, timeout=10, metadata=metadata)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sent = [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"][-1].headers
    assert sent["traceparent"] == TRACEPARENT
    assert sent.get("tracestate") == (tracestate or None)
    future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-later"  # a later version
    reply = await stack.stub.Predict(ECHO, timeout=10, metadata=[("traceparent", future)])
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


# --- odd values from a model ---------------------------------------------------------------------

# A lone surrogate, as Python's json.dumps writes one (UTF-8 cannot carry it), and a status_code no int32
# holds: both raised while building the response, so every call was INTERNAL with an ERROR traceback.
ODD_TASK = b'"status": "SUCCESS", "result": {"result": %s}, "traceback": "line \\udc80 1", "status_code": 1099511627776'


async def odd_model(request: web.Request) -> web.StreamResponse:
    if request.path.endswith("/model-endpoints"):
        kind = "streaming" if request.query.get("name") == "stream" else "sync"
        return web.json_response(
            {"model_endpoints": [{"id": "e1", "name": request.query["name"], "endpoint_type": kind}]}
        )
    if request.path == "/v1/streaming-tasks":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: {" + ODD_TASK % b'"a\\udc80b"' + b"}\r\n\r\n")  # the event's value itself
        await response.write_eof()
        return response
    task_id = b'"task_id": "t-1", ' if request.method == "GET" else b""
    body = b"{" + task_id + ODD_TASK % b'"\\"a\\udc80b\\""' + b"}"  # JSON text of the value, as bundles send
    return web.Response(body=body, content_type="application/json")


ODD_CALLS: dict[str, Any] = {
    "Predict": lambda stub: stub.Predict(ECHO, timeout=10),
    "GetAsyncTask": lambda stub: stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t-1"), timeout=10),
    "StreamPredict": lambda stub: stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name="stream", request=pb.EndpointRequest(args_json="{}")), timeout=10
    ),
}


@pytest.mark.parametrize("rpc", list(ODD_CALLS))
async def test_a_lone_surrogate_and_an_out_of_range_status_code_still_arrive(
    raw_upstream: RawUpstream, make_stack: StackFactory, rpc: str
) -> None:
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(odd_model)}})
    call = ODD_CALLS[rpc](stack.stub)
    if rpc == "StreamPredict":
        replies = [reply async for reply in call]
        assert len(replies) == 1
        response = replies[0].response
    else:
        response = (await call).response
    assert response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(response.result) == "a\udc80b"  # the model's string, exactly
    assert response.traceback == "line \\udc80 1"
    assert not response.HasField("status_code")
