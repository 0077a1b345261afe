"""What the local server saw: one `RequestRecord` per HTTP request, for tests to inspect and await.

Records are appended when a request arrives and updated as it ends, so a test can assert on the
credentials and headers the gateway sent, and wait (on events, never by polling) for a stream to be
abandoned or a request to finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["open", "completed", "disconnected", "error"]


def _ignore() -> None:
    return None


@dataclass(eq=False)
class RequestRecord:
    """One request: what arrived, the status sent (None until known), and how it ended.

    `outcome` is "open" while the handler runs, then "completed", "disconnected" (the client went
    away or the handler was cancelled) or "error" (the handler raised). `faults` lists the faults
    injected into it, in order (see `faults.py`); `fault` is the last, e.g. "throttle".
    """

    method: str
    path: str
    query: dict[str, str]
    api_key: str | None  # Basic user name or Bearer token, whether or not it was accepted
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int | None = None
    outcome: Outcome = "open"
    faults: list[str] = field(default_factory=list)
    _done: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _on_change: Callable[[], None] = field(default=_ignore, init=False, repr=False)

    def set_status(self, status: int) -> None:
        """Note the HTTP status once it is sent (a stream's 200 goes out before it ends)."""
        self.status = status
        self._on_change()

    def add_fault(self, fault: str) -> None:
        """Note a fault injected into this request."""
        self.faults.append(fault)
        self._on_change()

    @property
    def fault(self) -> str | None:
        """The last fault injected (the one that shaped the answer), or None."""
        return self.faults[-1] if self.faults else None

    def finish(self, outcome: Outcome, status: int | None = None) -> None:
        """End the record; the first outcome wins, so a handler's own verdict is kept."""
        if self._done.is_set():
            return
        if status is not None and self.status is None:
            self.status = status
        self.outcome = outcome
        self._done.set()
        self._on_change()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_done(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109 (bounded test wait)
        """The outcome once the request has ended; TimeoutError if it has not within `timeout`."""
        async with asyncio.timeout(timeout):
            await self._done.wait()
        return self.outcome


class RecordLog:
    """The records in arrival order, and waiters woken whenever one is added or changes."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._changed = asyncio.Event()
        self._waiters = 0

    def add(self, record: RequestRecord) -> None:
        record._on_change = self._notify
        self.records.append(record)
        self._notify()

    def _notify(self) -> None:
        if self._waiters:  # no waiter, no work: keeps recording cheap under load
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[RequestRecord], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (bounded test wait)
    ) -> RequestRecord:
        """The first record, existing or future, that matches `predicate` now or after a change."""
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    for record in self.records:
                        if predicate(record):
                            return record
                    await changed.wait()
        finally:
            self._waiters -= 1
