"""Launch's streaming responses: SSE framing, keep-alive pings, and an end without a marker.

Each chunk a model yields goes out at once as `data: {"status":"SUCCESS","result":{"result":
<chunk>},...}\\r\\n\\r\\n`; a model that raises ends the stream with one FAILURE event; the body then
just ends (launch-http-api.md §3). A `ContainerError` (the container refused, e.g. 400, or the
endpoint is throttled) ends it at once without an event: Launch has sent its 200 before it learns
the container's status, and its event generator stops on the error (ME `api/tasks_v1.py`).
Pings are sse-starlette 1.6.1's `: ping - <utc>` comments.
The envelope around a chunk is constant, so each event costs one JSON encode of the chunk and one
write, which keeps an async generator well above 50,000 events/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from aiohttp import web

from launch_gateway.testing.local_launch.container import ContainerError
from launch_gateway.testing.local_launch.results import format_failure

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}

_encode = json.JSONEncoder(separators=(",", ":")).encode
_SUCCESS_HEAD = b'data: {"status":"SUCCESS","result":{"result":'
_SUCCESS_TAIL = b'},"traceback":null,"status_code":200}\r\n\r\n'


def success_frame(chunk: Any) -> bytes:
    """The SSE event for one yielded chunk (the chunk as a JSON value, not a JSON string)."""
    return _SUCCESS_HEAD + _encode(chunk).encode() + _SUCCESS_TAIL


def failure_frame(traceback_text: str) -> bytes:
    """The last event of a stream whose model raised."""
    body = {"status": "FAILURE", "result": None, "traceback": traceback_text, "status_code": 500}
    return b"data: " + _encode(body).encode() + b"\r\n\r\n"


def ping_frame(now: datetime) -> bytes:
    """sse-starlette's keep-alive comment; `now` is naive UTC, printed as str(datetime) does."""
    return f": ping - {now}\r\n\r\n".encode()


async def write_events(
    response: web.StreamResponse,
    open_events: Callable[[], Awaitable[AsyncGenerator[Any, None]]],
    *,
    ping_interval: float,
    utcnow: Callable[[], datetime],
    send: Callable[[bytes], Awaitable[bool]] | None = None,
) -> None:
    """Write the events of a prepared response until the model ends, raises, or the client leaves.

    `send`, if given, sends each event frame instead of `response.write` and may end the stream
    early by returning False (fault injection does). The generator is always closed on the way
    out. A failed write (the client went away) propagates as ConnectionResetError; so does
    cancellation of the handler.
    """
    if send is None:
        send = partial(_write_on, response.write)
    pinger = asyncio.create_task(_ping(response, ping_interval, utcnow))
    try:
        try:
            events = await open_events()
        except ContainerError:
            return
        except Exception as exc:
            await send(failure_frame(format_failure(exc)))
            return
        async with contextlib.aclosing(events):
            next_event = events.__anext__
            while True:
                try:
                    chunk = await next_event()
                except (StopAsyncIteration, ContainerError):
                    return
                except Exception as exc:
                    await send(failure_frame(format_failure(exc)))
                    return
                try:
                    frame = success_frame(chunk)
                except (TypeError, ValueError) as exc:
                    await send(failure_frame(format_failure(exc)))
                    return
                if not await send(frame):
                    return
    finally:
        pinger.cancel()
        await asyncio.wait([pinger])


async def _write_on(write: Callable[[bytes], Awaitable[None]], frame: bytes) -> bool:
    await write(frame)
    return True


async def _ping(response: web.StreamResponse, interval: float, utcnow: Callable[[], datetime]) -> None:
    # A failed ping means the client left; the handler finds out on its own (write or cancel).
    with contextlib.suppress(ConnectionError):
        while True:
            await asyncio.sleep(interval)
            await response.write(ping_frame(utcnow()))
