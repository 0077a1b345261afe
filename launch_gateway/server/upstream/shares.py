"""Shares of the upstream connection pool, so that one kind of request cannot starve the others.

Open streams hold their connection for as long as they last, unary calls for a moment, endpoint
lookups and the readiness probe for less. Each kind gets a `ConnectionShare` of its own
(`upstream.max_stream_connections`, `upstream.max_connections`, `upstream.max_lookup_connections`, one
for the probe), and the aiohttp connector is sized to their sum, so it never queues: a request waits
for a slot of its own share only, at most `within` seconds, and then fails with `PoolFull`. That is
the gateway's own limit, not an upstream failure, so the circuit breaker does not count it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from launch_gateway.server.errors import PoolFull


class ConnectionShare:
    """At most `size` requests of one kind hold an upstream connection at once."""

    def __init__(self, setting: str, size: int, users: str) -> None:
        self.setting = setting  # the setting that sizes it, named when it is full
        self.size = size
        self._users = users  # who holds its connections, for the message
        self._slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def slot(self, within: float, where: str) -> AsyncIterator[None]:
        """Hold one slot for the block; `PoolFull` when none frees up within `within` seconds."""
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot is taken at once: no timer to arm and cancel
        else:
            try:
                async with asyncio.timeout(max(within, 0.0)):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolFull(
                    f"{where}: all {self.setting} ({self.size}) are in use by {self._users}; "
                    "retry shortly, or on another replica"
                ) from None
        try:
            yield
        finally:
            self._slots.release()
