"""Time as a seam: everything that measures, waits or stamps takes the one `Clock`, injected.

`GatewayServer` makes one `SystemClock` (or takes the caller's) and hands it to every part, so a
test drives all of the gateway's time through one object and never sleeps to see a limit recover.

The Clock is the time of record: what is measured, stamped, compared with a deadline or slept
between polls and retries. A bound on waiting for an *event* (a wait's result in `waits.TaskWaits`,
a free pool slot in `upstream.shares`, a callback host lookup in `access.lookups`, calls going idle
in `statuses.Drain`) is deliberately asyncio's own timeout on the loop clock: it only caps how long a
coroutine blocks, an event normally ends it first, and a fake clock need not drive the loop's timers.
A test of such a bound uses a short real bound, not a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds for durations and deadlines, wall seconds for what hosts share, and waiting."""

    def now(self) -> float:
        """Monotonic seconds: only differences mean anything."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch: for state shared between hosts (the Redis buckets)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
