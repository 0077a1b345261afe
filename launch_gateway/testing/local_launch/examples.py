"""Built-in example endpoints: small, predictable models for tests, the demo and benchmarks.

Each is a plain module-level function, so it can also be named on a command line, e.g.
`--endpoint my-echo=sync:launch_gateway.testing.local_launch.examples:echo`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from launch_gateway.testing.local_launch.container import ContainerError
from launch_gateway.testing.local_launch.endpoints import EndpointSpec


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the keyword arguments as given."""
    return kwargs


def describe(**kwargs: Any) -> dict[str, dict[str, Any]]:
    """Each argument's Python type and value: shows that ints stay ints end to end."""
    return {name: {"type": type(value).__name__, "value": value} for name, value in kwargs.items()}


def fail(message: str = "model failed", **kwargs: Any) -> NoReturn:
    """Raise ValueError(message): a model failure."""
    raise ValueError(message)


async def sleep(seconds: float = 1.0, **kwargs: Any) -> dict[str, Any]:
    """Sleep, then return the other arguments: for deadline and cancellation tests."""
    await asyncio.sleep(seconds)
    return kwargs


async def echo_async(**kwargs: Any) -> dict[str, Any]:
    """An async task body: wait `delay` seconds (default 0.2), then return all arguments, delay too."""
    await asyncio.sleep(float(kwargs.get("delay", 0.2)))
    return kwargs


async def fail_async(delay: float = 0.2, message: str = "model failed", **kwargs: Any) -> NoReturn:
    """An async task body that raises ValueError(message) after `delay` seconds."""
    await asyncio.sleep(delay)
    raise ValueError(message)


async def count(n: int = 5, interval: float = 0.05, **kwargs: Any) -> AsyncIterator[dict[str, int]]:
    """Stream {"i": 0} .. {"i": n-1}, `interval` seconds apart (0: as fast as possible)."""
    for i in range(n):
        if i and interval > 0:
            await asyncio.sleep(interval)
        yield {"i": i}


def answer_status(status_code: int = 500, body: Any = None, **kwargs: Any) -> NoReturn:
    """Answer as a container that says HTTP `status_code` with `body`: 429 or 503 is a throttled
    endpoint (sync FAILURE at once, without Launch's 10 s of retries), 400 a refused request, and on
    an async endpoint any status is SUCCESS with that status_code (see `container.py`)."""
    raise ContainerError(int(status_code), body)


async def answer_status_async(delay: float = 0.0, status_code: int = 500, body: Any = None, **kwargs: Any) -> NoReturn:
    """`answer_status` as an async task body, after `delay` seconds."""
    await asyncio.sleep(delay)
    raise ContainerError(int(status_code), body)


async def refuse_stream(status_code: int = 400, body: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
    """A streaming container that answers `status_code` before its first event: Launch's stream
    then ends clean and empty."""
    raise ContainerError(int(status_code), body)
    yield  # pragma: no cover - makes this an async generator


def read_url(data: bytes) -> dict[str, Any]:
    """Describe the bytes fetched from the request's `url`."""
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def builtin_endpoints() -> list[EndpointSpec]:
    """The endpoints a server has when none are given."""
    return [
        EndpointSpec("echo", "sync", echo),
        EndpointSpec("describe", "sync", describe),
        EndpointSpec("fail", "sync", fail),
        EndpointSpec("sleep", "sync", sleep),
        EndpointSpec("echo-async", "async", echo_async),
        EndpointSpec("fail-async", "async", fail_async),
        EndpointSpec("count", "streaming", count),
        EndpointSpec("read-url", "sync", read_url),
        EndpointSpec("status", "sync", answer_status),
        EndpointSpec("status-async", "async", answer_status_async),
        EndpointSpec("refuse-stream", "streaming", refuse_stream),
    ]
