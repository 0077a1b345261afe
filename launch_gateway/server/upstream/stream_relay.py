"""Relaying a stream: read the upstream a few events ahead of the gRPC writes.

Writing a gRPC message waits for the transport, and reading the next SSE event waits for the socket;
done one after the other, a stream spends most of its time waiting. Here a reader task converts
events into a small bounded queue while the handler writes: the two waits overlap, and the queue's
bound keeps backpressure (a paused caller stops the reader, which stops reading the upstream).
Errors keep their place: events converted before a failure are delivered, then the failure raises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar, cast

T = TypeVar("T")

READ_AHEAD = 16  # events held per stream at most, between the upstream and the caller


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


async def relay(
    events: AsyncGenerator[bytes, None], convert: Callable[[bytes], T], depth: int = READ_AHEAD
) -> AsyncIterator[T]:
    """`convert(data)` for each event, read up to `depth` events ahead of the consumer."""
    queue: asyncio.Queue[object] = asyncio.Queue(depth)

    async def read() -> None:
        try:
            async for data in events:
                await queue.put(convert(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # delivered in order, after the events read before it
            await queue.put(_Failure(exc))
        else:
            await queue.put(_END)

    reader = asyncio.create_task(read())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield cast(T, item)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await events.aclose()  # closes the upstream response if the reader stopped between two events
