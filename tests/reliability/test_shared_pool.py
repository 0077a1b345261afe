"""One caller cannot take a replica down through the upstream connection pool.

Open streams hold their upstream connections for as long as they last, so they get a share of their own
(`upstream.max_stream_connections`); unary calls have `upstream.max_connections`; endpoint lookups and the
readiness probe have a reserved share that neither can take. A full share is the gateway's own limit, not
an upstream failure: the call is UNAVAILABLE at once-ish, and the circuit breaker does not count it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launch_gateway.server.access.tenants import DEFAULT_MAX_STREAMS
from launch_gateway.server.upstream.breaker import State
from launch_gateway.testing.local_launch import EndpointSpec
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, LAUNCH_KEY_A, bearer, tenants
from tests.ops.conftest import http_get
from tests.waiting import wait_for

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
SLOW_STREAM = pb.StreamPredictRequest(
    endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 100000, "interval": 0.2}')
)


async def open_streams(stub: pb_grpc.EndpointServiceStub, count: int) -> list[Any]:
    """`count` streams, each with its first event read, so each holds its upstream connection; never read again."""
    calls = [stub.StreamPredict(SLOW_STREAM, timeout=60) for _ in range(count)]
    await asyncio.gather(*(call.read() for call in calls))
    return calls


async def assert_replica_serves_everyone(stack: Stack) -> None:
    """Another caller's unary call works, the probe passes (/readyz, health) and the circuit is closed."""
    async with grpc.aio.insecure_channel(stack.gateway.address) as other:
        reply = await pb_grpc.EndpointServiceStub(other).Predict(ECHO, timeout=10)
        assert reply.response.status == pb.TASK_STATUS_SUCCESS
        await stack.gateway.readiness.refresh()  # a probe now, rather than waiting for the next interval
        assert await http_get(stack, "/readyz") == (200, "ready\n")
        health = await health_pb2_grpc.HealthStub(other).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert stack.gateway.api.breaker.state is State.CLOSED


async def test_more_open_streams_than_max_connections_starve_nobody(make_stack: StackFactory) -> None:
    # The case: more never-read streams from one caller than upstream.max_connections.
    stack = await make_stack(settings={"upstream": {"max_connections": 4, "connect_timeout": 0.5}})
    streams = await open_streams(stack.stub, 8)
    await assert_replica_serves_everyone(stack)
    for call in streams:
        call.cancel()


async def test_a_full_stream_share_refuses_the_next_stream_and_the_breaker_does_not_count_it(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(
        settings={"upstream": {"max_stream_connections": 2, "connect_timeout": 0.3, "breaker_failures": 1}}
    )
    streams = await open_streams(stack.stub, 2)
    for _ in range(3):  # one counted failure would open this breaker
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.StreamPredict(SLOW_STREAM, timeout=10).read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "upstream.max_stream_connections" in (caught.value.details() or "")
    await assert_replica_serves_everyone(stack)
    for call in streams:
        call.cancel()


async def test_busy_unary_calls_leave_lookups_and_the_probe_their_share(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"max_connections": 2, "connect_timeout": 0.3}})
    sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 3}'))
    await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="sleep"), timeout=10)  # cached from here
    busy = [asyncio.ensure_future(stack.stub.Predict(sleeper, timeout=10)) for _ in range(2)]
    await wait_for(
        lambda: sum(r.path == "/v1/sync-tasks" and r.outcome == "open" for r in stack.launch.records) == 2,
        within=10,
        what="both slow Predicts to hold their upstream connections",
    )
    # Both unary connections are taken: a lookup of another name and the probe still get theirs.
    found = await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert found.endpoint.name == "echo"
    await stack.gateway.readiness.refresh()
    assert stack.gateway.readiness.ready, stack.gateway.readiness.reasons()
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a third unary call finds its share full
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream.max_connections" in (caught.value.details() or "")
    assert stack.gateway.api.breaker.state is State.CLOSED
    for call in busy:
        assert (await call).response.status == pb.TASK_STATUS_SUCCESS


async def test_a_tenant_without_max_streams_has_a_default_cap(make_stack: StackFactory) -> None:
    gate = asyncio.Event()

    async def held() -> AsyncIterator[dict[str, int]]:
        yield {"i": 0}
        await gate.wait()

    team_a = tenants(**{"team-a": {"endpoints": ["held"]}})
    assert "max_streams" not in team_a["team-a"]
    stack = await make_stack(
        [EndpointSpec("held", "streaming", held)],
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": team_a},
        gateway_env=ENV,
    )
    request = pb.StreamPredictRequest(endpoint_name="held", request=pb.EndpointRequest(args_json="{}"))
    calls = [stack.stub.StreamPredict(request, timeout=30, metadata=bearer(KEY_A)) for _ in range(DEFAULT_MAX_STREAMS)]
    await asyncio.gather(*(call.read() for call in calls))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.StreamPredict(request, timeout=10, metadata=bearer(KEY_A)).read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"cap of {DEFAULT_MAX_STREAMS} open streams" in (caught.value.details() or "")
    for call in calls:
        call.cancel()
    gate.set()
