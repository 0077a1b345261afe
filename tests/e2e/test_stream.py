"""StreamPredict end to end: events relayed one by one as they come, cancellation reaching the model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from launch_gateway.testing.local_launch import EndpointSpec
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Endless, StackFactory


def stream_request(endpoint: str, **args: object) -> pb.StreamPredictRequest:
    request = pb.StreamPredictRequest(endpoint_name=endpoint, request=pb.EndpointRequest())
    request.request.args.SetInParent()  # args={} is still an input
    request.request.args.update(args)
    return request


async def test_events_arrive_one_by_one_before_the_model_yields_the_last(make_stack: StackFactory) -> None:
    first_received = asyncio.Event()
    yielded: list[int] = []

    async def gated() -> AsyncIterator[dict[str, int]]:
        yielded.append(0)
        yield {"i": 0}
        await first_received.wait()  # the last events wait until the caller holds the first
        for i in (1, 2, 3):
            yielded.append(i)
            yield {"i": i}

    stack = await make_stack([EndpointSpec("gated", "streaming", gated)])
    events = []
    async for message in stack.stub.StreamPredict(stream_request("gated"), timeout=10):
        events.append(json.loads(message.response.result))
        if len(events) == 1:
            assert yielded == [0]
            first_received.set()
    assert events == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]


async def test_builtin_count_stream_relays_every_event_with_status(make_stack: StackFactory) -> None:
    stack = await make_stack(ping_interval=0.05)
    messages = [m async for m in stack.stub.StreamPredict(stream_request("count", n=4, interval=0.06), timeout=10)]
    assert [json.loads(m.response.result) for m in messages] == [{"i": i} for i in range(4)]
    assert {m.response.status for m in messages} == {pb.TASK_STATUS_SUCCESS}
    assert {m.response.status_code for m in messages} == {200}


async def test_caller_cancel_mid_stream_stops_the_predict_function(make_stack: StackFactory) -> None:
    endless = Endless()
    stack = await make_stack([endless.spec()])
    call = stack.stub.StreamPredict(stream_request("endless"), timeout=30)
    received = 0
    async for _ in call:
        received += 1
        if received == 3:
            break
    call.cancel()
    await asyncio.wait_for(endless.stopped.wait(), 5)
    assert endless.produced < 1_000_000
    record = await stack.launch.wait_for_record(lambda r: r.path == "/v1/streaming-tasks")
    assert await record.wait_done(5) == "disconnected"


async def test_model_error_mid_stream_arrives_as_a_failure_event(make_stack: StackFactory) -> None:
    async def breaks() -> AsyncIterator[dict[str, int]]:
        yield {"i": 0}
        raise RuntimeError("model broke")

    stack = await make_stack([EndpointSpec("breaks", "streaming", breaks)])
    messages = [m async for m in stack.stub.StreamPredict(stream_request("breaks"), timeout=10)]
    assert [m.response.status for m in messages] == [pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILURE]
    assert "model broke" in messages[1].response.traceback


async def test_stream_on_unknown_endpoint_is_not_found(make_stack: StackFactory) -> None:
    stack = await make_stack()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stack.stub.StreamPredict(stream_request("nope"), timeout=10):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
