"""The test harness: a throwaway aiohttp server on a free port, and a task-route shortcut."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from gateway.local_launch import LocalLaunchServer


@contextlib.asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 with a free port; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def call(
    client: aiohttp.ClientSession,
    server: LocalLaunchServer,
    route: str,
    endpoint: str | None,
    body: Any = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """POST a task route for the endpoint named `endpoint`; return (status, parsed JSON body)."""
    params = {} if endpoint is None else {"model_endpoint_id": server.endpoint_id(endpoint)}
    async with client.post(f"{server.url}{route}", params=params, json=body, **kwargs) as response:
        return response.status, await response.json()
