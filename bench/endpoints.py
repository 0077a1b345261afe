"""Model functions the benchmark serves from the local Launch server (`--endpoint NAME=KIND:bench.endpoints:fn`).

They stamp times with `time.monotonic()`, which on Linux is one clock for every process on the
machine, so the driver can subtract a stamp taken inside the local Launch server from its own.
`hold` and `hold_stream` report when they start and when the server cancels them (the caller went
away) as UDP datagrams `"<event> <token> <monotonic>"` to 127.0.0.1:`port`, so the driver learns
the moment the local Launch server saw a disconnect without polling.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any


def _signal(port: int, event: str, token: str) -> None:
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"{event} {token} {time.monotonic()!r}".encode(), ("127.0.0.1", port))


async def paced(n: int = 100, interval: float = 0.005, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
    """Stream `n` events `interval` seconds apart, each stamped with the moment it was yielded."""
    for i in range(n):
        if i:
            await asyncio.sleep(interval)
        yield {"i": i, "t": time.monotonic()}


async def hold(token: str = "", port: int = 0, seconds: float = 30.0, **kwargs: Any) -> dict[str, Any]:
    """A sync endpoint that answers after `seconds`, reporting its start and its cancellation."""
    _signal(port, "start", token)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _signal(port, "cancel", token)
        raise
    return {"token": token}


async def hold_stream(
    token: str = "", port: int = 0, seconds: float = 60.0, **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """One event at once, then an open stream for `seconds`; reports its start and its cancellation."""
    _signal(port, "start", token)
    yield {"i": 0, "t": time.monotonic()}
    try:
        await asyncio.sleep(seconds)
    except (asyncio.CancelledError, GeneratorExit):
        _signal(port, "cancel", token)
        raise


async def gated(gate: str = "", **kwargs: Any) -> dict[str, Any]:
    """An async task that finishes once the file `gate` exists; returns the moment it finished.

    The local Launch server runs async tasks on a few workers, so only they wait here; the tasks
    queued behind them finish right after the gate opens, each with its own stamp.
    """
    # The gate is a file the benchmark creates from another process, so there is no event to await;
    # a stat per millisecond on a few workers costs nothing measurable.
    while not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.001)
    return {"finished": time.monotonic()}
