"""The test harness: a throwaway aiohttp server on a free port, task-route shortcuts, raw HTTP reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from launch_gateway.testing.local_launch import LocalLaunchServer


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


async def raw_post(server: LocalLaunchServer, route: str, endpoint: str, body: Any) -> tuple[bytes, bytes]:
    """POST JSON over a bare socket and read to EOF: (the head, the body bytes as sent, framing included).

    For what a client library hides: a Content-Length longer than the body, a chunked body without its end.
    """
    data = json.dumps(body).encode()
    target = f"{route}?model_endpoint_id={server.endpoint_id(endpoint)}"
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = f"POST {target} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        async with asyncio.timeout(5):
            received = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, rest = received.partition(b"\r\n\r\n")
    return head_bytes, rest


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """A chunked body's bytes, and whether it had its terminating zero-size chunk."""
    body = b""
    while True:
        size_line, found, data = data.partition(b"\r\n")
        if not found:
            return body, False
        size = int(size_line, 16)
        if size == 0:
            return body, True
        body += data[:size]
        if len(data) < size + 2:
            return body, False
        data = data[size + 2 :]
