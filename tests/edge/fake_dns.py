"""A resolver the test controls, put in place of `socket.getaddrinfo` for names under `.test`.

Every lookup in the process goes through `socket.getaddrinfo` (the gateway's callback lookups, the
event loop's `getaddrinfo` that aiohttp's connector uses for the upstream, the local Launch server's
callback sender), so replacing it is the one seam that reaches all of them without a DNS server of our
own. Names in `answers` get those addresses; names in `hanging` block their thread, as a DNS server
that never answers does, until the test ends (or `release()`); other `.test` names do not exist;
everything else goes to the system resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

_real_getaddrinfo = socket.getaddrinfo

AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]


class FakeDNS:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answers: dict[str, list[str]] = {}
        self.hanging: set[str] = set()
        self.hung = 0  # lookups blocked right now
        self._loop = loop
        self._changed = asyncio.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[AddrInfo]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in self.hanging:
            self._count(+1)
            try:
                self._released.wait(120)
            finally:
                self._count(-1)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name in self.answers:
            number = int(port) if port not in (None, "") else 0
            infos: list[AddrInfo] = []
            for address in self.answers[name]:
                if ipaddress.ip_address(address).version == 6:
                    infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, number, 0, 0)))
                else:
                    infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number)))
            return infos
        if name.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real_getaddrinfo(host, port, *args, **kwargs)

    def _count(self, delta: int) -> None:
        with self._lock:
            self.hung += delta
        with contextlib.suppress(RuntimeError):  # the test's loop is gone
            self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_until_hung(self, count: int, within: float = 10.0) -> None:
        """Return once `count` lookups are blocked; fail loudly after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while self.hung < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.hung} lookups hung after {within} s, expected {count}") from None

    def release(self) -> None:
        self._released.set()


@pytest.fixture(name="fake_dns")
async def fake_dns_fixture(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDNS]:
    """Import this into a test module to have `fake_dns` (the fixture's name) there."""
    dns = FakeDNS(asyncio.get_running_loop())
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    yield dns
    dns.release()
