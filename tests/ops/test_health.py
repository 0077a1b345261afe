"""Health and readiness: /healthz, /readyz and the gRPC health service follow the upstream, in the background."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Stack, StackFactory
from tests.ops.conftest import http_get

SERVICE = "launch_gateway.v1.EndpointService"


async def grpc_health(stack: Stack, service: str = "") -> str:
    reply = await health_pb2_grpc.HealthStub(stack.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def test_ready_gateway_is_serving_everywhere(stack: Stack) -> None:
    assert await http_get(stack, "/healthz") == (200, "ok\n")
    assert await http_get(stack, "/readyz") == (200, "ready\n")
    assert await grpc_health(stack) == "SERVING"
    assert await grpc_health(stack, SERVICE) == "SERVING"


async def test_unreachable_upstream_is_not_ready(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"url": "http://127.0.0.1:9"}})
    assert (await http_get(stack, "/healthz"))[0] == 200  # alive all the same
    status, text = await http_get(stack, "/readyz")
    assert status == 503
    assert "upstream: not reachable" in text
    assert await grpc_health(stack, SERVICE) == "NOT_SERVING"


async def test_readiness_follows_the_upstream_in_the_background(stack: Stack) -> None:
    await stack.launch.stop()
    await stack.gateway.readiness.refresh()  # what the background loop does every readiness_interval
    assert (await http_get(stack, "/readyz"))[0] == 503
    assert await grpc_health(stack) == "NOT_SERVING"


async def test_draining_gateway_is_not_serving(stack: Stack) -> None:
    await stack.gateway.readiness.drain()
    assert (await http_get(stack, "/readyz"))[1].startswith("not ready\n- draining")
    try:
        status = await grpc_health(stack)
    except grpc.aio.AioRpcError:
        status = "refused"
    assert status == "NOT_SERVING"
