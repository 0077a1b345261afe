"""The one fake `Clock` for unit tests: time moves only when the test (or a sleep) moves it."""

from __future__ import annotations

import asyncio

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
