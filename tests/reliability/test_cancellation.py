"""A caller's cancellation reaches the upstream for every RPC kind: the upstream sees the disconnect.

(How fast it gets there is measured by `make bench`, not asserted here.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import RawUpstream, Stack, StackFactory, answer_lookup
from tests.ops.conftest import http_get, samples
from tests.waiting import wait_for

RECORDS = {
    "sync": {"id": "end_s", "name": "sync", "endpoint_type": "sync", "status": "READY"},
    "async": {"id": "end_a", "name": "async", "endpoint_type": "async", "status": "READY"},
    "stream": {"id": "end_t", "name": "stream", "endpoint_type": "streaming", "status": "READY"},
}


class HangingUpstream:
    """Answers endpoint lookups at once (unless told to hang); every other request hangs until the
    client goes away, which it records."""

    def __init__(self, hang_lookups: bool = False) -> None:
        self.hang_lookups = hang_lookups
        self.arrived = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("name", "")
        if request.path == "/v1/model-endpoints" and (name not in RECORDS or not self.hang_lookups):
            return web.json_response({"model_endpoints": [RECORDS[name]] if name in RECORDS else []})
        self.arrived.set()
        try:
            if request.path == "/v1/streaming-tasks":
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                await response.write(b'data: {"status": "SUCCESS", "result": {"result": 1}}\r\n\r\n')
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
        return web.json_response({})


def waiting(task_id: str) -> pb.WaitAsyncTaskRequest:
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=duration_pb2.Duration(seconds=30))


CALLS: dict[str, Any] = {
    "Predict": lambda stub: stub.Predict(pb.PredictRequest(endpoint_name="sync", request=REQ), timeout=30),
    "SubmitAsync": lambda stub: stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="async", request=REQ), timeout=30),
    "GetAsyncTask": lambda stub: stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t-1"), timeout=30),
    "WaitAsyncTask": lambda stub: stub.WaitAsyncTask(waiting("t-1"), timeout=30),
    "StreamPredict": lambda stub: stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name="stream", request=REQ), timeout=30
    ),
    "GetEndpoint": lambda stub: stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="sync"), timeout=30),
}  # fmt: skip
REQ = pb.EndpointRequest(args_json="{}")


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_caller_cancel_disconnects_the_upstream_request(
    make_stack: StackFactory, raw_upstream: RawUpstream, rpc: str
) -> None:
    upstream = HangingUpstream(hang_lookups=rpc == "GetEndpoint")
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    call = CALLS[rpc](stack.stub)
    await asyncio.wait_for(upstream.arrived.wait(), 10)
    call.cancel()
    await asyncio.wait_for(upstream.disconnected.wait(), 5)
    assert stack.gateway.waits.active_loops == 0


# --- streams a caller leaves: one owner closes the upstream, and the call is recorded Canceled -------------

STREAM_SERIES = '{grpc_code="%s",grpc_method="StreamPredict",grpc_service="launch_gateway.v1.EndpointService",grpc_type="server_stream"}'  # noqa: E501


async def handled_streams(stack: Stack, code: str | None = None) -> float:
    """grpc_server_handled_total of StreamPredict with this code (any code: None)."""
    _, text = await http_get(stack, "/metrics")
    handled = samples(text, "grpc_server_handled_total")
    if code is not None:
        return handled.get(STREAM_SERIES % code, 0.0)
    return sum(n for series, n in handled.items() if 'grpc_method="StreamPredict"' in series)


def access_codes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The grpc_code of every StreamPredict access line logged so far."""
    lines = [r for r in caplog.records if r.name == "launch_gateway.access" and r.getMessage() == "rpc"]
    return [r.fields["grpc_code"] for r in lines if r.fields["method"] == "StreamPredict"]  # type: ignore[attr-defined]


class OneThenLarge:
    """Answers endpoint lookups at once; a stream sends a small event, then one of 300 KB, then holds until the
    gateway goes away. A caller that reads the first and cancels finds the gateway writing the large one (past
    the caller's HTTP/2 window, it waits for a read that never comes) while its relay waits on the upstream."""

    FIRST = b'data: {"status": "SUCCESS", "result": {"result": 0}}\r\n\r\n'
    LARGE = b'data: {"status": "SUCCESS", "result": {"result": "' + b"x" * 300_000 + b'"}}\r\n\r\n'

    def __init__(self) -> None:
        self.sent = asyncio.Event()  # set when the large event is written
        self.closed = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, *RECORDS.values())) is not None:
            return lookup
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(self.FIRST)
            await response.write(self.LARGE)
            self.sent.set()
            await asyncio.sleep(60)
        except (asyncio.CancelledError, ConnectionError):
            self.closed += 1
            raise
        return response


STREAM = pb.StreamPredictRequest(endpoint_name="stream", request=REQ)


async def leave_after_the_first_event(stack: Stack, upstream: OneThenLarge, tries: int) -> None:
    """`tries` streams, each cancelled by its caller right after the first message, one after the other."""
    # Without BDP probing the caller's stream window stays at 64 KB, so the large message cannot all be sent.
    async with grpc.aio.insecure_channel(stack.gateway.address, options=[("grpc.http2.bdp_probe", 0)]) as channel:
        stub = pb_grpc.EndpointServiceStub(channel)
        for _ in range(tries):
            upstream.sent.clear()
            call = stub.StreamPredict(STREAM, timeout=30)
            await call.read()
            await asyncio.wait_for(upstream.sent.wait(), 10)
            call.cancel()


async def test_streams_left_after_the_first_event_are_always_recorded_canceled(
    make_stack: StackFactory, raw_upstream: RawUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Wherever the caller's cancel finds the gateway, writing a message or waiting on the upstream, the
    stream is Canceled in the metrics and the access log (during a write it was counted OK, and only once
    the garbage collector closed the abandoned generator)."""
    caplog.set_level(logging.INFO, logger="launch_gateway.access")
    upstream = OneThenLarge()
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    tries = 30
    await leave_after_the_first_event(stack, upstream, tries)
    await wait_for(lambda: len(access_codes(caplog)) == tries, within=10, what="an access line per stream")
    assert access_codes(caplog) == ["Canceled"] * tries
    assert await handled_streams(stack, "Canceled") == tries
    assert await handled_streams(stack) == tries
    await wait_for(lambda: upstream.closed == tries, within=10, what="every upstream stream closed")


async def test_streams_left_mid_read_tear_down_without_a_stray_task_error(
    make_stack: StackFactory, raw_upstream: RawUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Callers that leave while the relay waits on the upstream: the upstream stream has one owner, so no
    teardown closes it from a second task (`aclose(): asynchronous generator is already running`, reported
    as "Task exception was never retrieved" when that task is collected) and nothing is logged as an error."""
    upstream = OneThenLarge()
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    tries = 30
    try:
        await leave_after_the_first_event(stack, upstream, tries)

        async def all_ended() -> bool:
            gc.collect()  # a task nobody awaited reports its exception when it is collected
            return upstream.closed == tries and await handled_streams(stack) == tries

        await wait_for(all_ended, within=20, what="every stream ended, upstream and downstream")
        gc.collect()
        await asyncio.sleep(0)  # the exception handler is called soon after collection
    finally:
        loop.set_exception_handler(None)
    assert [f"{c.get('message')}: {c.get('exception')!r}" for c in unhandled] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
