"""`POST /v1/streaming-tasks`: SSE framing, per-event delivery, pings, failures and disconnects."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp

from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer

STREAM = "/v1/streaming-tasks"
EVENT_END = b"\r\n\r\n"
PING = re.compile(rb": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?")


def success(chunk: Any) -> bytes:
    body = {"status": "SUCCESS", "result": {"result": chunk}, "traceback": None, "status_code": 200}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode()


async def open_stream(
    client: aiohttp.ClientSession, server: LocalLaunchServer, endpoint: str, args: dict[str, Any]
) -> aiohttp.ClientResponse:
    return await client.post(
        f"{server.url}{STREAM}",
        params={"model_endpoint_id": server.endpoint_id(endpoint)},
        json={"args": args},
    )


async def next_frame(response: aiohttp.ClientResponse) -> bytes:
    """One SSE block (event or comment) without its blank line; b"" at the end of the body."""
    async with asyncio.timeout(5):
        data = await response.content.readuntil(EVENT_END)
    return data.removesuffix(EVENT_END)


async def test_events_are_framed_like_launch_and_end_without_a_marker(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    async with await open_stream(client, server, "count", {"n": 3, "interval": 0}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Connection"] == "keep-alive"
        assert response.headers["X-Accel-Buffering"] == "no"
        body = await response.read()
    assert body == EVENT_END.join(success({"i": i}) for i in range(3)) + EVENT_END


async def test_a_plain_generator_streams_too(client: aiohttp.ClientSession) -> None:
    def letters(word: str) -> Iterator[str]:
        yield from word

    async with (
        LocalLaunchServer([EndpointSpec("letters", "streaming", letters)]) as server,
        await open_stream(client, server, "letters", {"word": "abc"}) as response,
    ):
        body = await response.read()
    assert body == EVENT_END.join(success(letter) for letter in "abc") + EVENT_END


async def test_each_event_is_sent_when_yielded(client: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def gated() -> AsyncIterator[dict[str, int]]:
        yield {"i": 0}
        await release.wait()
        yield {"i": 1}

    async with (
        LocalLaunchServer([EndpointSpec("gated", "streaming", gated)]) as server,
        await open_stream(client, server, "gated", {}) as response,
    ):
        # The generator cannot yield its last event until the client has read the first.
        assert await next_frame(response) == success({"i": 0})
        release.set()
        assert await next_frame(response) == success({"i": 1})
        assert await response.content.read() == b""


async def test_pings_are_sent_while_the_stream_is_idle(client: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def quiet() -> AsyncIterator[str]:
        await release.wait()
        yield "done"

    async with (
        LocalLaunchServer([EndpointSpec("quiet", "streaming", quiet)], ping_interval=0.02) as server,
        await open_stream(client, server, "quiet", {}) as response,
    ):
        for _ in range(2):
            assert PING.fullmatch(await next_frame(response))
        release.set()
        frames = [await next_frame(response)]
        while frames[-1] != success("done"):
            frames.append(await next_frame(response))
        assert all(PING.fullmatch(frame) for frame in frames[:-1])


async def test_a_generator_that_raises_ends_with_a_failure_event(client: aiohttp.ClientSession) -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("stream broke")

    async with (
        LocalLaunchServer([EndpointSpec("broken", "streaming", broken)]) as server,
        await open_stream(client, server, "broken", {}) as response,
    ):
        assert response.status == 200
        assert await next_frame(response) == success(1)
        last = await next_frame(response)
        assert await response.content.read() == b""
    failure = json.loads(last.removeprefix(b"data: "))
    assert failure["status"] == "FAILURE"
    assert failure["result"] is None
    assert failure["status_code"] == 500
    assert failure["traceback"].rstrip().endswith("RuntimeError: stream broke")


async def test_client_disconnect_closes_the_async_generator(client: aiohttp.ClientSession) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            yield 0
            await asyncio.Event().wait()
            yield 1
        finally:
            closed.set()

    async with LocalLaunchServer([EndpointSpec("endless", "streaming", endless)]) as server:
        response = await open_stream(client, server, "endless", {})
        assert await next_frame(response) == success(0)
        response.close()
        async with asyncio.timeout(5):
            await closed.wait()
        record = await server.wait_for_record(lambda r: r.path == STREAM)
        assert record.status == 200
        assert await record.wait_done() == "disconnected"


async def test_client_disconnect_closes_a_plain_generator_after_its_step(
    client: aiohttp.ClientSession,
) -> None:
    gate = threading.Event()
    closed = threading.Event()
    stepped_after_close = threading.Event()

    def blocking() -> Iterator[int]:
        try:
            yield 0
            gate.wait(timeout=10)  # a step in flight when the client leaves
            yield 1
            stepped_after_close.set()
            yield 2
        finally:
            closed.set()

    async with LocalLaunchServer([EndpointSpec("blocking", "streaming", blocking)]) as server:
        response = await open_stream(client, server, "blocking", {})
        assert await next_frame(response) == success(0)
        response.close()
        record = await server.wait_for_record(lambda r: r.path == STREAM)
        assert await record.wait_done() == "disconnected"
        gate.set()
        assert await asyncio.to_thread(closed.wait, 5)
        assert not stepped_after_close.is_set()


async def test_stop_ends_open_streams(client: aiohttp.ClientSession) -> None:
    async def endless() -> AsyncIterator[int]:
        yield 0
        await asyncio.Event().wait()
        yield 1

    server = LocalLaunchServer([EndpointSpec("endless", "streaming", endless)])
    await server.start()
    try:
        response = await open_stream(client, server, "endless", {})
        assert await next_frame(response) == success(0)
    finally:
        async with asyncio.timeout(1):  # well under the graceful shutdown timeout
            await server.stop()
    response.close()
    assert await server.records[-1].wait_done() == "disconnected"
