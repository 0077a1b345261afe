"""Probes mean what they say: live while the process serves, ready only while Launch answers.

A gateway started while nothing listens on its upstream's port is live (the health service's `liveness`
entry, `/healthz`, `launch-gateway health --liveness`) and not ready ("" and EndpointService, `/readyz`,
plain `launch-gateway health`); once a Launch server answers on that port it turns ready by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launch_gateway.client.health import LIVENESS, READINESS
from launch_gateway.server.workers import free_port
from launch_gateway.testing.local_launch import LocalLaunchServer
from tests.conftest import Stack, StackFactory
from tests.ops.conftest import http_get
from tests.serving import LAUNCH_GATEWAY

SERVICE = "launch_gateway.v1.EndpointService"


async def status_of(stack: Stack, entry: str) -> str:
    reply = await health_pb2_grpc.HealthStub(stack.channel).Check(
        health_pb2.HealthCheckRequest(service=entry), timeout=5
    )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def health_command(stack: Stack, *flags: str) -> tuple[int, str]:
    """`launch-gateway health [flags]` against the gateway, as a container's health check runs it."""
    process = await asyncio.create_subprocess_exec(
        LAUNCH_GATEWAY,
        "health",
        "--address",
        stack.gateway.address,
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode().strip()


async def serving_announced(stack: Stack, entry: str) -> None:
    """Return once the health service's Watch stream says `entry` is SERVING (bounded)."""
    call = health_pb2_grpc.HealthStub(stack.channel).Watch(health_pb2.HealthCheckRequest(service=entry), timeout=20)
    async for reply in call:
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            call.cancel()
            return
    pytest.fail(f"the health service's Watch of {entry!r} ended before SERVING")


@pytest.fixture
async def launch_later() -> AsyncIterator[list[LocalLaunchServer]]:
    """Local Launch servers a test starts itself; stopped after it."""
    servers: list[LocalLaunchServer] = []
    yield servers
    for server in servers:
        await server.stop()


async def test_gateway_with_launch_down_is_live_not_ready_then_ready_once_launch_answers(
    make_stack: StackFactory, launch_later: list[LocalLaunchServer]
) -> None:
    port = free_port("127.0.0.1")
    stack = await make_stack(
        settings={"upstream": {"url": f"http://127.0.0.1:{port}"}, "metrics": {"readiness_interval": 0.1}}
    )
    address = stack.gateway.address

    # Live: the process serves, whatever Launch does.
    assert await status_of(stack, LIVENESS) == "SERVING"
    assert await http_get(stack, "/healthz") == (200, "ok\n")
    assert await health_command(stack, "--liveness") == (0, f"{address}: SERVING")
    # Not ready: Launch does not answer.
    assert await status_of(stack, READINESS) == "NOT_SERVING"
    assert await status_of(stack, SERVICE) == "NOT_SERVING"
    status, text = await http_get(stack, "/readyz")
    assert status == 503, text
    assert "upstream: not reachable" in text
    assert await health_command(stack) == (1, f"{address}: NOT_SERVING")

    watching = asyncio.ensure_future(serving_announced(stack, READINESS))
    launch = LocalLaunchServer(port=port)
    await launch.start()
    launch_later.append(launch)
    await asyncio.wait_for(watching, 20)  # the background check found Launch answering

    assert await status_of(stack, SERVICE) == "SERVING"
    assert await http_get(stack, "/readyz") == (200, "ready\n")
    assert await health_command(stack) == (0, f"{address}: SERVING")
    assert await status_of(stack, LIVENESS) == "SERVING"


async def test_liveness_ends_with_the_drain(stack: Stack) -> None:
    assert await status_of(stack, LIVENESS) == "SERVING"
    await stack.gateway.readiness.drain()
    try:
        status = await status_of(stack, LIVENESS)
    except grpc.aio.AioRpcError:
        status = "refused"
    assert status == "NOT_SERVING"
