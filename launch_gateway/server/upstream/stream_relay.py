"""Relaying a stream: read the upstream a few events ahead of the gRPC writes.

Writing a gRPC message waits for the transport, and reading the next SSE event waits for the socket;
done one after the other, a stream spends most of its time waiting. Here a reader task converts
events into a small bounded queue while the handler writes: the two waits overlap, and the queue's
bound keeps backpressure (a paused caller stops the reader, which stops reading the upstream).
Errors keep their place: events converted before a failure are delivered, then the failure raises.

The relay owns the upstream stream from the moment it is made: its reader task is the only one that
reads it or closes it, since an async generator cannot be closed from one task while another is
inside it. `Relay.aclose` stops the reader, which closes the stream on its way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

READ_AHEAD = 4  # reads (each some events, at most ~64 KiB) held per stream at most, between the upstream and the caller


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Relay(Generic[T]):
    """`convert(data)` for each event of `events` (lists of events, as the upstream's reads give them),
    read up to `depth` reads ahead of the consumer, which gets a list of converted events at a time.

    Iterate it, and `aclose()` it however the iteration ends: that closes `events`.
    """

    def __init__(
        self, events: AsyncGenerator[list[bytes], None], convert: Callable[[bytes], T], depth: int = READ_AHEAD
    ) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(depth)
        self._ended = False
        self._reader = asyncio.create_task(self._read(events, convert))

    async def _read(self, events: AsyncGenerator[list[bytes], None], convert: Callable[[bytes], T]) -> None:
        try:
            async for batch in events:
                converted: list[T] = []
                try:
                    for data in batch:
                        converted.append(convert(data))
                finally:
                    if converted:  # the events before one that fails are still delivered, first
                        await self._queue.put(converted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # delivered in order, after the events read before it
            await self._queue.put(_Failure(exc))
        else:
            await self._queue.put(_END)
        finally:
            await events.aclose()  # closes the upstream response if the reader stopped between two events

    def __aiter__(self) -> Relay[T]:
        return self

    async def __anext__(self) -> list[T]:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._ended = True
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            self._ended = True
            raise item.error
        return cast(list[T], item)

    async def aclose(self) -> None:
        """Stop reading, and return once the reader has closed the upstream stream (at once if it has)."""
        self._ended = True
        reader = self._reader
        reader.cancel()
        await asyncio.wait((reader,))
        if not reader.cancelled() and (error := reader.exception()) is not None:
            raise error  # closing the upstream stream failed: a bug, for the boundary to report
