"""The one way a test waits for a condition nothing signals: polled, bounded, and loud when time runs out.

Where an event exists (a record's outcome, a task's end, a log line) tests await the event instead;
this is for state that can only be looked at (a counter, a health answer, a scrape).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(predicate: Callable[[], T | Awaitable[T]], *, within: float, what: str, every: float = 0.01) -> T:
    """The first truthy value of `predicate()` (sync or async), looked at every `every` seconds.

    AssertionError naming `what` (and the last value seen) when `within` seconds pass first.
    """
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last seen: {value!r})")
        await asyncio.sleep(every)


def wait_for_sync(predicate: Callable[[], T], *, within: float, what: str, every: float = 0.01) -> T:
    """`wait_for` for code outside the event loop (sync fixtures): blocks the thread between looks."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last seen: {value!r})")
        time.sleep(every)
