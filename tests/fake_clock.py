"""The clocks tests inject: `FakeClock` for unit tests (time moves only when the test or a sleep moves it),
`OffsetClock` for running servers (time that moves only when the test pushes it; real sleeps)."""

from __future__ import annotations

import asyncio
import time

EPOCH = 1_700_000_000.0  # wall time at t = 0


class FakeClock:
    """Virtual time: `advance` moves it; `sleep` returns at once, advancing it, and records each delay."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.delays: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return EPOCH + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class OffsetClock:
    """For running servers: time stands still unless the test pushes `offset`; sleeps are real.

    So rate limits, caches and the breaker see exactly the time the test gives them (no timed
    assertions), while the servers' background loops still pause between their rounds.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self._start, self._wall = time.monotonic(), time.time()

    def now(self) -> float:
        return self._start + self.offset

    def wall(self) -> float:
        return self._wall + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
