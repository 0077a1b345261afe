"""The upstream HTTP/1.1 client against a scripted raw server: framing, reuse, failures, cancellation, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from launch_gateway.server.upstream import http1

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
PoolFactory = Callable[..., http1.Upstream]


class RawServer:
    """Answers each connection with `script`; counts connections and the request heads it read."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.hung_up = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"{'https://localhost' if self.tls else 'http://127.0.0.1'}:{self.port}/base"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        if length:
            await reader.readexactly(length)
        self.heads.append(head)
        return head


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


@pytest.fixture
async def pool_for() -> AsyncIterator[PoolFactory]:
    pools: list[http1.Upstream] = []

    def make(url: str, **options: object) -> http1.Upstream:
        pools.append(http1.Upstream(url, **options))  # type: ignore[arg-type]  # keyword options, as given
        return pools[-1]

    yield make
    for pool in pools:
        await pool.close()


async def test_requests_reuse_one_connection_and_send_the_base_path_and_host(pool_for: PoolFactory) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_head(reader)
            writer.write(ok(b'{"n": 1}'))

    async with RawServer(script) as server:
        pool = pool_for(server.url)
        for _ in range(3):
            response, body = await pool.request("POST", "/v1/x?a=b", {"X-Extra": "1"}, b"{}", 1024)
            assert (response.status, body, response.content_type) == (200, b'{"n": 1}', "application/json")
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /base/v1/x?a=b HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert "X-Extra: 1\r\n" in head
    assert "Content-Length: 2\r\n" in head


async def test_chunked_and_close_delimited_answers_are_read_whole(pool_for: PoolFactory) -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            await server.read_head(reader)
            writer.write(answers.pop(0))
        writer.write_eof()

    async with RawServer(script) as server:
        pool = pool_for(server.url)
        assert (await pool.request("GET", "/a", {}, None, 1024))[1] == b"abcde"
        assert (await pool.request("GET", "/b", {}, None, 1024))[1] == b"until the end"


async def test_connection_close_is_not_reused(pool_for: PoolFactory) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(ok(b"1", b"Connection: close\r\n"))

    async with RawServer(script) as server:
        pool = pool_for(server.url)
        await pool.request("GET", "/", {}, None, 1024)
        await pool.request("GET", "/", {}, None, 1024)
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_retried_for_a_get_only(pool_for: PoolFactory) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request arrives, and is dropped unanswered
        writer.transport.abort()

    async with RawServer(script) as server:
        pool = pool_for(server.url)
        await pool.request("GET", "/", {}, None, 1024)
        assert (await pool.request("GET", "/", {}, None, 1024))[1] == b"first"  # on a new connection
        assert server.connections == 2
        with pytest.raises(http1.Disconnected):  # a POST may have been acted on: not sent twice
            await pool.request("POST", "/", {}, b"{}", 1024)
        assert server.connections == 2


async def test_a_body_cut_off_is_truncated_and_one_too_long_is_refused(pool_for: PoolFactory) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async with RawServer(cut) as server:
        with pytest.raises(http1.Truncated):
            await pool_for(server.url).request("GET", "/", {}, None, 1024)

    async def long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(ok(b"x" * 100))

    async with RawServer(long) as server:
        with pytest.raises(http1.BodyTooLarge):
            await pool_for(server.url).request("GET", "/", {}, None, 50)


async def test_bytes_that_are_not_http_are_a_bad_response(pool_for: PoolFactory) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async with RawServer(script) as server:
        with pytest.raises(http1.BadResponse):
            await pool_for(server.url).request("GET", "/", {}, None, 1024)


async def test_a_cancelled_request_closes_its_connection_at_once(pool_for: PoolFactory) -> None:
    asked = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        asked.set()
        await reader.read()  # returns when the client hangs up
        server.hung_up.set()

    async with RawServer(script) as server:
        call = asyncio.ensure_future(pool_for(server.url).request("GET", "/", {}, None, 1024))
        await asyncio.wait_for(asked.wait(), 5)
        call.cancel()
        await asyncio.wait_for(server.hung_up.wait(), 5)  # the upstream sees the caller leave


async def test_refused_and_unanswered_connects_fail_as_such(pool_for: PoolFactory) -> None:
    async with RawServer(lambda r, w: asyncio.sleep(0)) as server:
        url = server.url
    with pytest.raises(http1.ConnectFailed) as refused:
        await pool_for(url).request("GET", "/", {}, None, 1024)
    assert "refused" in str(refused.value).lower()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection, never answers the TLS handshake

    async with RawServer(silent) as server:
        with pytest.raises(http1.ConnectTimeout):
            await pool_for(f"https://127.0.0.1:{server.port}", connect_timeout=0.1).request("GET", "/", {}, None, 64)


async def test_a_streamed_body_comes_as_it_is_sent_with_a_quiet_time_limit(pool_for: PoolFactory) -> None:
    more = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await more.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(script) as server:
        response = await pool_for(server.url).open("POST", "/s", {}, b"{}")
        assert (response.status, response.content_type) == (200, "text/event-stream")
        assert await response.chunk(quiet=5) == b"first"
        with pytest.raises(TimeoutError):
            await response.chunk(quiet=0.05)
        more.set()
        assert await response.chunk(quiet=5) == b"second"
        assert await response.chunk(quiet=5) == b""
        response.release()


async def test_tls_with_the_ca_given(pool_for: PoolFactory) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_head(reader)
        writer.write(ok(b"secure"))

    async with RawServer(script, tls=server_context) as server:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        assert (await pool_for(server.url, ssl_context=client_context).request("GET", "/", {}, None, 64))[
            1
        ] == b"secure"
        with pytest.raises(http1.ConnectFailed):  # the system's trust store does not know this CA
            await pool_for(server.url).request("GET", "/", {}, None, 64)
