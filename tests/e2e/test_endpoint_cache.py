"""Endpoint names are resolved once per `upstream.endpoint_cache_ttl`; a task route's 404 means the cached
record is stale: the entry is dropped, and the call is tried once more when the endpoint has a new id.

The local Launch server's ids are fixed per name, so re-creating an endpoint is played by an upstream
that answers like Launch does (`raw_upstream`).
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from aiohttp import web

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, collect, upstream_calls
from tests.fake_clock import OffsetClock

REQUEST = pb.EndpointRequest(args_json="{}")
KIND = {"Predict": "sync", "SubmitAsync": "async", "StreamPredict": "streaming"}
ROUTE = {"Predict": "/v1/sync-tasks", "SubmitAsync": "/v1/async-tasks", "StreamPredict": "/v1/streaming-tasks"}


class RecreatableUpstream:
    """One endpoint, `model`, whose id changes when it is re-created; task routes answer 404 for any other id.

    `calls` lists what arrived: ("lookup", name) or (path, model_endpoint_id). `stale` ids answer 404
    even while the lookup still names them (an endpoint that is gone although its record is not).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id: str | None = "end_1"
        self.stale: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/model-endpoints":
            name = request.query.get("name", "")
            if name != "model":
                return web.json_response({"model_endpoints": []})  # the readiness probe's name
            self.calls.append(("lookup", name))
            found = [{"id": self.id, "name": "model", "endpoint_type": self.kind, "status": "READY"}]
            return web.json_response({"model_endpoints": found if self.id else []})
        endpoint_id = request.query.get("model_endpoint_id", "")
        self.calls.append((request.path, endpoint_id))
        if endpoint_id != self.id or endpoint_id in self.stale:
            return web.json_response({"detail": f"Model Endpoint {endpoint_id} was not found."}, status=404)
        if request.path == "/v1/async-tasks":
            return web.json_response({"task_id": f"task-of-{endpoint_id}"})
        success = {"status": "SUCCESS", "result": {"result": {"served_by": endpoint_id}}}
        if request.path == "/v1/streaming-tasks":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(f"data: {json.dumps(success)}\r\n\r\n".encode())
            return response
        return web.json_response(success)


async def call(stack: Stack, rpc: str) -> Any:
    """One call of `rpc` on `model`: what served it (an endpoint id, or the task id)."""
    if rpc == "Predict":
        reply = await stack.stub.Predict(pb.PredictRequest(endpoint_name="model", request=REQUEST), timeout=10)
        return json.loads(reply.response.result)["served_by"]
    if rpc == "SubmitAsync":
        submitted = await stack.stub.SubmitAsync(
            pb.SubmitAsyncRequest(endpoint_name="model", request=REQUEST), timeout=10
        )
        return submitted.task_id.removeprefix("task-of-")
    events: list[pb.StreamPredictResponse] = []
    await collect(stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="model", request=REQUEST)), events)
    return json.loads(events[0].response.result)["served_by"]


@pytest.mark.parametrize("rpc", list(KIND))
async def test_a_recreated_endpoint_is_looked_up_again_and_the_call_repeated(
    make_stack: StackFactory, raw_upstream: RawUpstream, rpc: str
) -> None:
    upstream = RecreatableUpstream(KIND[rpc])
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    assert await call(stack, rpc) == "end_1"
    upstream.id = "end_2"  # deleted and created again: a new id under the same name
    upstream.calls.clear()

    assert await call(stack, rpc) == "end_2"
    route = ROUTE[rpc]
    assert upstream.calls == [(route, "end_1"), ("lookup", "model"), (route, "end_2")]
    upstream.calls.clear()
    assert await call(stack, rpc) == "end_2"
    assert upstream.calls == [(route, "end_2")]  # the fresh record is cached in place of the stale one


async def test_a_deleted_endpoint_is_not_found_after_one_fresh_lookup(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    upstream = RecreatableUpstream("sync")
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    await call(stack, "Predict")
    upstream.id = None
    upstream.calls.clear()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stack, "Predict")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "endpoint 'model' not found" in (caught.value.details() or "")
    assert upstream.calls == [("/v1/sync-tasks", "end_1"), ("lookup", "model")]


async def test_a_404_for_an_unchanged_id_is_not_repeated(make_stack: StackFactory, raw_upstream: RawUpstream) -> None:
    upstream = RecreatableUpstream("sync")
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(upstream.handle)}})
    await call(stack, "Predict")
    upstream.stale.add("end_1")  # the lookup still gives end_1: trying it again would not help
    upstream.calls.clear()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stack, "Predict")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Model Endpoint end_1 was not found" in (caught.value.details() or "")
    assert upstream.calls == [("/v1/sync-tasks", "end_1"), ("lookup", "model")]


async def test_a_name_is_looked_up_again_once_the_cache_ttl_has_passed(make_stack: StackFactory) -> None:
    clock = OffsetClock()
    stack = await make_stack(settings={"upstream": {"endpoint_cache_ttl": 60.0}}, clock=clock)
    echo = pb.PredictRequest(endpoint_name="echo", request=REQUEST)

    def lookups() -> int:
        return sum(r.path == "/v1/model-endpoints" for r in upstream_calls(stack.launch))

    await stack.stub.Predict(echo, timeout=10)
    clock.offset += 59.0  # past the 15 s default, within the configured 60 s
    await stack.stub.Predict(echo, timeout=10)
    assert lookups() == 1
    clock.offset += 2.0
    await stack.stub.Predict(echo, timeout=10)
    assert lookups() == 2
    await stack.stub.Predict(echo, timeout=10)
    assert lookups() == 2  # and the new answer is cached for another TTL
