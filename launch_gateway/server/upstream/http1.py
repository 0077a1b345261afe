"""A lean HTTP/1.1 client for the one upstream: keep-alive connections, responses parsed by llhttp.

aiohttp's `ClientSession.request` does per request what the gateway never needs (cookie jars,
redirects, proxies, auto headers, URL objects, trace hooks, a timer handle per request): measured
side by side on this machine (`bench/upstream_clients.py`), it costs 2.5-3x the CPU of this client
per request (~320-390 µs against ~130-145 µs, the same requests and answers). So the gateway speaks
HTTP/1.1 to Launch itself, with httptools (llhttp, the parser Node.js uses) reading the answers.

What it does: one origin (scheme, host, port, a base path); requests with Content-Length bodies;
answers sized, chunked or ended by the connection's close (not HEAD); keep-alive connections reused
newest first, closed after `keepalive` idle seconds or when the answer says `Connection: close`;
TLS through an `ssl.SSLContext`; an idempotent request that finds a reused connection closed
before any byte of its answer is sent once more on a new one (the server closed it while idle), a
POST is not. A request that is cancelled or fails closes its connection, so the upstream sees the
caller leave at once. A streamed body (`open`) is read chunk by chunk with a quiet-time limit per
read, and reading the socket pauses while the reader is behind (backpressure).

What it does not: proxies, redirects, compression, cookies, HTTP/2. Its failures are the
`HTTPFailure` subclasses below; `launch_api` maps them to the gateway's errors in one place.
How many requests run at once is the caller's business (`shares`): the pool only keeps idle ones.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 64 * 1024  # a streamed body's bytes buffered ahead of its reader before reading pauses
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class HTTPFailure(Exception):
    """The exchange failed before a complete answer; the connection is closed."""


class ConnectFailed(HTTPFailure):
    """No connection: refused, unreachable, the name did not resolve (`os_error`), or TLS failed."""

    def __init__(self, message: str, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.os_error = os_error


class ConnectTimeout(HTTPFailure):
    """No connection within the connect timeout."""


class Disconnected(HTTPFailure):
    """The server closed the connection before the answer's headers were complete."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # some bytes of an answer had come: not a stale keep-alive connection


class Truncated(HTTPFailure):
    """The connection closed inside the answer's body."""


class BadResponse(HTTPFailure):
    """Bytes that are not an HTTP/1.1 answer."""


class BodyTooLarge(HTTPFailure):
    """The answer's body is longer than the caller allows."""


class Response:
    """An answer's status and headers (names lower-case; a repeated header keeps its last value)."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters ("" when absent)."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self.used = False
        self.idle_since = 0.0
        self._head: asyncio.Future[Response] | None = None
        self._done: asyncio.Future[None] | None = None
        self._headers: dict[str, str] = {}
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._max_body = 0
        self._received = False
        self._complete = False
        self._paused = False
        self._readable: asyncio.Future[None] | None = None  # a streamed body's reader waits on it

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses
        self.reusable = True

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._complete:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"bad HTTP response ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._done is None or self._complete:
            return
        head = self._head
        if head is not None and not head.done():
            why = "the server closed the connection" + (" inside its answer" if self._received else "")
            self._fail(Disconnected(why, self._received))
        elif "content-length" in self._headers or "chunked" in self._headers.get("transfer-encoding", "").lower():
            self._fail(Truncated("the response was cut off"))
        else:
            self.on_message_complete()  # a body the connection's close ends

    # --- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(Response(self._parser.get_status_code(), self._headers))

    def on_body(self, body: bytes) -> None:
        self._buffered += len(body)
        if self._buffered > self._max_body:
            self._fail(BodyTooLarge(f"more than {self._max_body} bytes"))
            return
        self._chunks.append(body)
        self._wake_reader()
        if self._max_body == _STREAMED and self._buffered > _HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._complete:
            return
        self._complete = True
        self.reusable = self.reusable and self._parser.should_keep_alive()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        self._wake_reader()
        if not self.reusable:
            self.close()

    # --- the exchange ----------------------------------------------------------------------------

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    def _fail(self, exc: HTTPFailure) -> None:
        for waiter in (self._head, self._done):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved here: the one who awaits it re-raises it
        self._complete = True
        self._wake_reader()
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def start(self, data: bytes, max_body: int) -> asyncio.Future[Response]:
        """Send one request; the answer's head arrives in the future returned."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._head, self._done = loop.create_future(), loop.create_future()
        self._headers, self._chunks, self._buffered = {}, collections.deque(), 0
        self._max_body, self._received, self._complete = max_body, False, False
        self.used = True
        self.transport.write(data)
        return self._head

    async def body(self) -> bytes:
        """The whole body (after the head)."""
        assert self._done is not None
        await self._done
        return b"".join(self._chunks)

    async def chunk(self, quiet: float | None) -> bytes:
        """The next bytes of a streamed body, b"" at its end; TimeoutError after `quiet` seconds of nothing
        (None: no limit of its own)."""
        while not self._chunks:
            if self._complete:
                assert self._done is not None
                await self._done  # raises the failure that ended it, if any
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(quiet):
                await self._readable
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def finished(self) -> bool:
        """The answer was read to its end without a failure: the connection may serve the next request."""
        return self._complete and self._done is not None and self._done.done() and not self._done.exception()


_STREAMED = 1 << 62  # max_body of a streamed answer: the reader takes the bytes as they come


class StreamedResponse(Response):
    """An answer whose body is read as it arrives (`chunk`); `release()` when done with it."""

    __slots__ = ("_connection", "_pool")

    def __init__(self, pool: Upstream, connection: _Connection, head: Response) -> None:
        super().__init__(head.status, head.headers)
        self._pool = pool
        self._connection = connection

    async def chunk(self, quiet: float | None) -> bytes:
        return await self._connection.chunk(quiet)

    async def read(self, max_body: int) -> bytes:
        """The rest of the body, refused past `max_body` bytes (for an error answer; bound it outside)."""
        parts, size = [], 0
        while data := await self.chunk(quiet=None):
            size += len(data)
            if size > max_body:
                raise BodyTooLarge(f"more than {max_body} bytes")
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back when the body was read to its end, else close it."""
        self._pool._give_back(self._connection)


class Upstream:
    """Keep-alive HTTP/1.1 connections to one origin; see the module's docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        keepalive: float = 30.0,
        user_agent: str = "launch-gateway",
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.base_path = parts.path.rstrip("/")
        self._host = parts.hostname
        tls = parts.scheme == "https"
        self._port = parts.port or (443 if tls else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if parts.port in (None, 443 if tls else 80) else f"{host}:{self._port}"
        self._fixed = f"Host: {authority}\r\nUser-Agent: {user_agent}\r\n"
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._idle: list[_Connection] = []
        self._closed = False

    def _encode(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        lines = [f"{method} {self.base_path}{target} HTTP/1.1\r\n", self._fixed]
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} holds a line break")  # never reached: headers.py checks
            lines.append(f"{name}: {value}\r\n")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + body if body else head

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self._connect_timeout:.3g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(f"TLS: certificate verify failed: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS failed ({exc.reason or exc})") from exc
        except OSError as exc:  # asyncio's message names the address: say what happened instead
            raise ConnectFailed(os.strerror(exc.errno) if exc.errno else str(exc), exc) from exc
        return connection

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
        if connection.finished and connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def _exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, max_body: int
    ) -> tuple[_Connection, Response]:
        """Send the request and read the answer's head, on a reused connection or a new one."""
        data = self._encode(method, target, headers, body)
        for attempt in (0, 1):
            connection = self._take_idle() or await self._connect()
            reused = connection.used
            try:
                return connection, await connection.start(data, max_body)
            except Disconnected as exc:
                connection.close()
                if attempt == 0 and reused and not exc.answered and method in _IDEMPOTENT:
                    continue  # the server closed it while it was idle: one new connection
                raise
            except BaseException:
                connection.close()  # cancelled or failed mid-exchange: the upstream sees the caller leave
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, max_body: int
    ) -> tuple[Response, bytes]:
        """One exchange, its whole body read (at most `max_body` bytes). Bound it with a timeout outside."""
        connection, response = await self._exchange(method, target, headers, body, max_body)
        try:
            data = await connection.body()
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        return response, data

    async def open(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> StreamedResponse:
        """Send the request and return once the answer's head is in; its body is read as it comes."""
        connection, response = await self._exchange(method, target, headers, body, _STREAMED)
        return StreamedResponse(self, connection, response)

    async def close(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
