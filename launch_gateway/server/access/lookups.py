"""Callback host lookups: bounded in time, on threads of their own, a few at a time per tenant.

`getaddrinfo` blocks a thread until the system resolver answers, and a DNS server that never answers
holds it for as long as the resolver's own retries last (tens of seconds). So callback lookups never
run on the event loop's default executor, where aiohttp's connector resolves the upstream's host: each
runs on a daemon thread of its own. A slot is held until that thread really returns, also after its
caller has stopped waiting, so a tenant whose lookups hang runs out of its own `per_tenant` slots and
gets RESOURCE_EXHAUSTED, while other tenants keep theirs (`total` caps the threads of all tenants). A
caller waits at most `timeout` seconds and then gets UNAVAILABLE: nothing was submitted, so retrying
is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from typing import Protocol

from launch_gateway.server.errors import InvalidArgument, LimitExceeded, Unavailable

FIELD = "request.callback_url"


class Lookup(Protocol):
    """A blocking lookup of a host's addresses (run on a thread): `socket.getaddrinfo` by default."""

    def __call__(self, host: str, port: int) -> list[str]: ...


def system_lookup(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# Answers that mean the name has no address (as opposed to a resolver that failed for now).
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None), socket.EAI_FAIL) if code is not None
)


class HostLookups:
    """Resolves callback hosts within `timeout` seconds, with at most `per_tenant` and `total` in flight."""

    def __init__(self, timeout: float, per_tenant: int, total: int, lookup: Lookup | None = None) -> None:
        self._timeout = timeout
        self._per_tenant = per_tenant
        self._total = total
        self._lookup = lookup or system_lookup
        self._running: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        """Lookup threads that have not returned yet."""
        return self._running.total()

    async def resolve(self, tenant: str, host: str, port: int) -> list[str]:
        """The host's addresses; RESOURCE_EXHAUSTED, UNAVAILABLE or INVALID_ARGUMENT otherwise."""
        if self._running[tenant] >= self._per_tenant:
            raise LimitExceeded(
                f"{FIELD}: tenant {tenant!r} has {self._per_tenant} callback host lookups in progress "
                "(callbacks.lookups_per_tenant); retry later",
                retry_after=self._timeout,
                reason="CALLBACK_LOOKUPS_BUSY",
            )
        if self._running.total() >= self._total:
            raise Unavailable(
                f"{FIELD}: the gateway has {self._total} callback host lookups in progress "
                "(callbacks.max_lookups); retry later",
                reason="CALLBACK_LOOKUP_UNAVAILABLE",
            )
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[str]] = loop.create_future()
        self._running[tenant] += 1

        def done(addresses: list[str] | None, error: BaseException | None) -> None:  # on the loop
            self._running[tenant] -= 1
            if self._running[tenant] <= 0:
                del self._running[tenant]
            if answer.done():  # the caller stopped waiting
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(addresses or [])

        def run() -> None:  # on the lookup's own thread
            addresses: list[str] | None = None
            error: BaseException | None = None
            try:
                addresses = self._lookup(host, port)
            except Exception as exc:  # handed to the loop, which decides what the caller sees
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed while the lookup hung: nobody waits
                loop.call_soon_threadsafe(done, addresses, error)

        threading.Thread(target=run, name="callback-lookup", daemon=True).start()
        try:
            async with asyncio.timeout(self._timeout):
                return await answer
        except TimeoutError:
            raise Unavailable(
                f"{FIELD}: looking up host {host} took longer than {self._timeout:g} s "
                "(callbacks.lookup_timeout); retry later",
                reason="CALLBACK_LOOKUP_UNAVAILABLE",
            ) from None
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                raise InvalidArgument(FIELD, f"cannot resolve host {host}") from None
            raise Unavailable(
                f"{FIELD}: cannot resolve host {host} now ({exc.strerror}); retry later",
                reason="CALLBACK_LOOKUP_UNAVAILABLE",
            ) from None
        except (OSError, UnicodeError):
            raise InvalidArgument(FIELD, f"cannot resolve host {host}") from None
