"""A gateway and a local Launch server on their own event loop in a thread, for synchronous clients
(hypothesis runs many examples against one stack) and raw protocol tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from launch_gateway.server.app import GatewayServer
from launch_gateway.server.settings import build_settings
from launch_gateway.testing.local_launch import LocalLaunchServer
from tests.edge.conftest import ENV, LAUNCH_KEY_A, tenants


class ThreadedStack:
    """Servers running on a private loop in a daemon thread, until `close()`."""

    def __init__(self, settings: dict[str, Any], env: dict[str, str], api_keys: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(settings, env, api_keys), self.loop)
        self.launch, self.gateway = future.result(30)

    async def _start(
        self, settings: dict[str, Any], env: dict[str, str], api_keys: list[str]
    ) -> tuple[LocalLaunchServer, GatewayServer]:
        launch = LocalLaunchServer(api_keys=api_keys)
        await launch.start()
        values = {"server": {"port": 0}, "metrics": {"port": 0}, "upstream": {"url": launch.url}, **settings}
        gateway = GatewayServer(build_settings(values), env=env)
        await gateway.start()
        return launch, gateway

    async def _stop(self) -> None:
        await self.gateway.stop(grace=0)
        await self.launch.stop()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def threaded_stack() -> Iterator[ThreadedStack]:
    """One gateway with tenants (team-a may call echo, echo-async, count, describe, sleep)."""
    stack = ThreadedStack({"tenants": tenants()}, ENV, [LAUNCH_KEY_A])
    yield stack
    stack.close()
