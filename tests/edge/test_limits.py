"""Rate and concurrency limits at the gateway: RESOURCE_EXHAUSTED with RetryInfo, headers, recovery."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.testing.local_launch import EndpointSpec
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.fake_clock import OffsetClock
from tests.waiting import wait_for

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))


async def limited_stack(make_stack: StackFactory, clock: OffsetClock | None = None, **team_a: object) -> Stack:
    return await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B],
        settings={"tenants": tenants(**{"team-a": team_a})},
        gateway_env=ENV,
        clock=clock,
    )


async def test_a_burst_over_the_limit_is_refused_with_retry_info_and_recovers(make_stack: StackFactory) -> None:
    clock = OffsetClock()
    stack = await limited_stack(make_stack, clock, rate={"per_second": 0.5, "burst": 3})
    remaining = []
    for _ in range(3):
        call = stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
        await call
        headers = dict(await call.trailing_metadata() or ())
        assert headers["ratelimit-limit"] == "3"
        remaining.append(headers["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit exceeded for tenant 'team-a'" in (caught.value.details() or "")
    status = rpc_status.from_call(caught.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert 1.9 <= retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 <= 2.0
    assert dict(caught.value.trailing_metadata() or ())["retry-after"] == "2"
    # Other tenants have their own buckets.
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_B))
    clock.offset += 2.0  # the bucket refills: one more call fits
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_per_endpoint_limits_apply_to_that_endpoint_only(make_stack: StackFactory) -> None:
    stack = await limited_stack(make_stack, endpoint_rates={"echo": {"per_second": 0.01, "burst": 1}})
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "on endpoint 'echo'" in (caught.value.details() or "")
    describe = pb.PredictRequest(endpoint_name="describe", request=pb.EndpointRequest(args_json="{}"))
    await stack.stub.Predict(describe, timeout=10, metadata=bearer(KEY_A))


async def test_open_streams_are_capped_at_once_not_queued(make_stack: StackFactory) -> None:
    gate = asyncio.Event()

    async def held() -> AsyncIterator[dict[str, int]]:
        yield {"i": 0}
        await gate.wait()

    stack = await make_stack(
        [EndpointSpec("held", "streaming", held)],
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": tenants(**{"team-a": {"max_streams": 1, "endpoints": ["held"]}})},
        gateway_env=ENV,
    )
    request = pb.StreamPredictRequest(endpoint_name="held", request=pb.EndpointRequest(args_json="{}"))
    first = stack.stub.StreamPredict(request, timeout=10, metadata=bearer(KEY_A))
    await first.read()  # the first stream is open and holding its slot
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stack.stub.StreamPredict(request, timeout=10, metadata=bearer(KEY_A)):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "cap of 1 open streams" in (caught.value.details() or "")
    first.cancel()
    await wait_for(  # the cancelled stream gives its slot back when its handler unwinds
        lambda: stack.gateway.concurrency.in_flight("team-a", "stream") == 0,
        within=5,
        what="the cancelled stream to give its slot back",
    )
    again = stack.stub.StreamPredict(request, timeout=10, metadata=bearer(KEY_A))
    await again.read()
    assert stack.gateway.concurrency.in_flight("team-a", "stream") == 1
    again.cancel()
    gate.set()


async def test_unary_calls_are_capped(make_stack: StackFactory) -> None:
    stack = await limited_stack(make_stack, max_unary=2)
    sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 5}'))
    slow = [stack.stub.Predict(sleeper, timeout=10, metadata=bearer(KEY_A)) for _ in range(2)]
    await wait_for(
        lambda: stack.gateway.concurrency.in_flight("team-a", "unary") == 2,
        within=5,
        what="both slow calls to be admitted",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "cap of 2 unary calls" in (caught.value.details() or "")
    for call in slow:
        call.cancel()


async def test_message_size_limit_is_resource_exhausted(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"max_receive_message_bytes": 1024}})
    big = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"x": "%s"}' % ("y" * 4096)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(big, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def waiting(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    timeout = duration_pb2.Duration()
    timeout.FromTimedelta(datetime.timedelta(seconds=seconds))
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout)


async def test_waiting_calls_are_capped_apart_from_unary_calls(make_stack: StackFactory) -> None:
    stack = await limited_stack(make_stack, max_waits=1, max_unary=1)
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 30}'))
    task_id = (await stack.stub.SubmitAsync(submit, timeout=10, metadata=bearer(KEY_A))).task_id
    first = stack.stub.WaitAsyncTask(waiting(task_id, 30), timeout=30, metadata=bearer(KEY_A))
    await wait_for(
        lambda: stack.gateway.concurrency.in_flight("team-a", "wait") == 1, within=5, what="the first wait to start"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.WaitAsyncTask(waiting(task_id, 30), timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # at once, not queued behind the first
    assert "cap of 1 waiting WaitAsyncTask calls" in (caught.value.details() or "")
    look = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10, metadata=bearer(KEY_A))
    assert look.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}  # a unary call has its own cap
    first.cancel()
    await wait_for(
        lambda: stack.gateway.concurrency.in_flight("team-a", "wait") == 0,
        within=5,
        what="the cancelled wait to give its slot back",
    )
    again = await stack.stub.WaitAsyncTask(waiting(task_id, 0.1), timeout=5, metadata=bearer(KEY_A))
    assert again.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}


async def test_every_rpc_spends_a_token_task_polls_included(make_stack: StackFactory) -> None:
    stack = await limited_stack(make_stack, rate={"per_second": 0.001, "burst": 4})
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 0}'))
    task_id = (await stack.stub.SubmitAsync(submit, timeout=10, metadata=bearer(KEY_A))).task_id
    spent = [
        stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10, metadata=bearer(KEY_A)),
        stack.stub.WaitAsyncTask(waiting(task_id, 10), timeout=10, metadata=bearer(KEY_A)),
        stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10, metadata=bearer(KEY_A)),
    ]
    remaining = []
    for call in spent:
        await call
        remaining.append(dict(await call.trailing_metadata() or ())["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10, metadata=bearer(KEY_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_response_past_max_send_message_bytes_is_resource_exhausted(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"max_send_message_bytes": 4096}})
    small = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"x": "%s"}' % ("y" * 1024)))
    assert (await stack.stub.Predict(small, timeout=10)).response.status == pb.TASK_STATUS_SUCCESS
    big = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"x": "%s"}' % ("y" * 8192)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the request fits; echo's answer does not
        await stack.stub.Predict(big, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    sync = [r for r in stack.launch.records if r.path == "/v1/sync-tasks"]
    assert [r.status for r in sync] == [200, 200]  # Launch answered both; the gateway could not send the second


async def test_the_rate_headers_and_request_id_reach_the_caller_on_every_kind_of_call(make_stack: StackFactory) -> None:
    stack = await limited_stack(make_stack, OffsetClock(), rate={"per_second": 0.5, "burst": 5})
    # A stream has them in its initial metadata, before its first event.
    request = pb.StreamPredictRequest(endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 2}'))
    stream = stack.stub.StreamPredict(request, timeout=10, metadata=(*bearer(KEY_A), ("x-request-id", "s-1")))
    initial = dict(await stream.initial_metadata() or ())
    assert (initial["x-request-id"], initial["ratelimit-remaining"]) == ("s-1", "4")
    assert len([message async for message in stream]) == 2
    # A unary answer has them in its trailers (sent with the answer, not in a frame of their own).
    call = stack.stub.Predict(ECHO, timeout=10, metadata=(*bearer(KEY_A), ("x-request-id", "u-1")))
    await call
    trailers = dict(await call.trailing_metadata() or ())
    assert (trailers["x-request-id"], trailers["ratelimit-remaining"]) == ("u-1", "3")
    assert "ratelimit-remaining" not in dict(await call.initial_metadata() or ())
    # So does an error after the call was admitted.
    wrong_kind = pb.PredictRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(wrong_kind, timeout=10, metadata=(*bearer(KEY_A), ("x-request-id", "e-1")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trailers = dict(caught.value.trailing_metadata() or ())
    assert (trailers["x-request-id"], trailers["ratelimit-remaining"]) == ("e-1", "2")
