"""A caller's cancellation reaches the upstream for every RPC kind: the upstream sees the disconnect.

(How fast it gets there is measured by `make bench`, not asserted here.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import duration_pb2

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, StackFactory

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
