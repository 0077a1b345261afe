"""Shared fixtures: a real local Launch server and a real gateway on ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.server.app import GatewayServer
from launch_gateway.server.clock import Clock
from launch_gateway.server.settings import build_settings
from launch_gateway.server.upstream.launch_api import PROBE_NAME
from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer, RequestRecord, builtin_endpoints
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.redis_server import redis_server as redis_server  # a fixture for every test
from tests.serving import LAUNCH_GATEWAY as LAUNCH_GATEWAY
from tests.serving import serve_process as serve_process  # a fixture for every test


@dataclass
class Stack:
    """A local Launch server, a gateway in front of it, and a channel to the gateway."""

    launch: LocalLaunchServer
    gateway: GatewayServer
    channel: grpc.aio.Channel
    stub: pb_grpc.EndpointServiceStub


StackFactory = Callable[..., Awaitable[Stack]]


class Endless:
    """A streaming model that yields `{"i": i}` every `interval` seconds until its caller leaves.

    `produced` counts what it yielded; `stopped` is set when it stops (a cancelled caller stops it).
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.produced = 0
        self.stopped = asyncio.Event()

    async def stream(self) -> AsyncIterator[dict[str, int]]:
        try:
            for i in range(1_000_000):
                self.produced += 1
                yield {"i": i}
                await asyncio.sleep(self.interval)
        finally:
            self.stopped.set()

    def spec(self, name: str = "endless") -> EndpointSpec:
        return EndpointSpec(name, "streaming", self.stream)


def upstream_calls(launch: LocalLaunchServer) -> list[RequestRecord]:
    """What callers caused upstream: every request but the gateway's readiness probes."""
    return [r for r in launch.records if r.query.get("name") != PROBE_NAME]


@pytest.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """Build stacks with chosen endpoints and settings; everything is torn down after the test."""
    cleanup = contextlib.AsyncExitStack()

    async def make(
        extra_endpoints: Sequence[EndpointSpec] = (),
        *,
        api_keys: Sequence[str] = (),
        upstream_key: str | None = None,
        ping_interval: float = 15.0,
        workers: int = 4,
        settings: dict[str, Any] | None = None,
        gateway_env: dict[str, str] | None = None,
        config_path: str | None = None,
        clock: Clock | None = None,
    ) -> Stack:
        launch = LocalLaunchServer(
            [*builtin_endpoints(), *extra_endpoints],
            api_keys=api_keys,
            ping_interval=ping_interval,
            workers=workers,
        )
        await launch.start()
        cleanup.push_async_callback(launch.stop)
        values: dict[str, Any] = {"server": {"port": 0}, "metrics": {"port": 0}, "upstream": {"url": launch.url}}
        for section, table in (settings or {}).items():
            values[section] = {**values.get(section, {}), **table}
        env = {"LAUNCH_API_KEY": upstream_key} if upstream_key else {}
        gateway = GatewayServer(
            build_settings(values), env={**env, **(gateway_env or {})}, config_path=config_path, clock=clock
        )
        cleanup.push_async_callback(gateway.limiter.close)
        await gateway.start()
        cleanup.push_async_callback(gateway.stop, 0)
        channel = grpc.aio.insecure_channel(gateway.address)
        cleanup.push_async_callback(channel.close)
        return Stack(launch, gateway, channel, pb_grpc.EndpointServiceStub(channel))

    async with cleanup:
        yield make


RawUpstream = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    """Serve one aiohttp handler on every path (a misbehaving upstream); returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)  # leaving cancels a handler
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


def answer_lookup(request: web.Request, *records: dict[str, Any]) -> web.Response | None:
    """A raw upstream's answer to the gateway's endpoint lookup (by name, or none for all), as a Launch
    that has `records` gives it; None when `request` is not a lookup, for the handler to answer."""
    if request.path != "/v1/model-endpoints":
        return None
    name = request.query.get("name")
    return web.json_response({"model_endpoints": [r for r in records if name in (None, r["name"])]})


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo detail of a failed call, or None."""
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    if status is not None and any(detail.Unpack(info) for detail in status.details):
        return info
    return None


async def collect(call: AsyncIterator[Any], into: list[Any]) -> None:
    """Read a server stream into `into`; a failure still leaves the messages that came before it."""
    async for message in call:
        into.append(message)


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()
