"""What one upstream request costs the client: aiohttp as the gateway uses it against leaner HTTP/1.1 clients.

Each client sends `POST /v1/sync-tasks` (the `echo` endpoint) to the local Launch server, in this
process on uvloop as the gateway runs, at 1 and at 64 requests in flight. Per run: this process's
CPU per request (`time.process_time`, every thread: pyreqwest's Tokio thread counts) and requests/s
after a warm-up, beside the Launch server's own CPU per request. Clients take turns, 3 rounds, so a
slow spell of the machine hits all of them; the table shows median [min-max].

    (a) aiohttp-gateway  aiohttp as `launch_gateway.server.upstream.launch_api` uses it
    (b) aiohttp-bare     `session.post`, no per-request timeout, default session
    (c) httptools        the gateway's own client (`upstream.http1`): llhttp parsing, asyncio.Protocol, keep-alive pool
    (d) pyreqwest        Rust reqwest/hyper behind a Tokio thread
    (e) aiosonic         pure-Python client

Before measuring, each client's answers are compared with aiohttp's, and `check_protocol` runs
each against a hand-written HTTP/1.1 server (plain and TLS): chunked bodies, `Connection: close`,
reuse, a connection dropped while idle, bodies delimited by EOF, a cut-off body, a timeout, and a
cancelled call (does the upstream see the hang-up; does the next call get its own answer). A client
that is not installed is skipped.

    PYTHONPATH=/tmp/work/clients/extra .venv/bin/python -m bench.upstream_clients [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import uvloop
from yarl import URL

from bench.processes import LocalLaunch, start_local_launch

CONNECT_TIMEOUT = 5.0  # upstream.connect_timeout's default
SYNC_TIMEOUT = 300.0  # timeouts.sync's default: the budget every Predict's request carries
POOL_LIMIT = 1024 + 256 + 32 + 1  # the gateway's connector limit: the sum of its shares' defaults
BASE_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Authorization": "Basic YmVuY2g6",  # any credentials pass
}
USER_AGENT = "launch-gateway"
BODY = b'{"args": {"x": 1}}'


class Client(Protocol):
    """One HTTP/1.1 client: a request's status, response headers (lower-case names) and raw body, the
    whole exchange within `budget` seconds (the gateway's ClientTimeout total)."""

    name: str

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]: ...

    async def close(self) -> None: ...


# --- (a), (b): aiohttp ------------------------------------------------------------------------


class AiohttpGateway:
    """aiohttp configured and called as `LaunchAPI.start` and `LaunchAPI._json` do (minus the shares)."""

    name = "aiohttp-gateway"

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None = None) -> None:
        connector = aiohttp.TCPConnector(
            limit=POOL_LIMIT, ssl=ssl_context or True, keepalive_timeout=30, enable_cleanup_closed=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            json_serialize=json.dumps,
            skip_auto_headers=("Accept-Encoding",),
        )
        self._base = base
        self._urls: dict[str, URL] = {}

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        url = self._urls.get(target)
        if url is None:
            url = self._urls[target] = URL(self._base + target)
        client_timeout = aiohttp.ClientTimeout(total=budget, connect=min(CONNECT_TIMEOUT, budget))
        async with self._session.request(method, url, data=body, headers=headers, timeout=client_timeout) as response:
            length = response.content_length
            raw = (
                await response.read()
                if length is not None
                else b"".join([chunk async for chunk in response.content.iter_chunked(64 * 1024)])
            )
            response.content_type  # noqa: B018 (the gateway reads it for its error message)
            return response.status, {k.lower(): v for k, v in response.headers.items()}, raw

    async def close(self) -> None:
        await self._session.close()


class AiohttpBare:
    """The least aiohttp: a default session, `session.post`/`get`, no per-request timeout object."""

    name = "aiohttp-bare"
    timeouts = False  # by design: the check does not expect one

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL_LIMIT, ssl=ssl_context or True))
        self._base = base

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self._session.request(method, self._base + target, data=body, headers=headers) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read()

    async def close(self) -> None:
        await self._session.close()


# --- (c): the gateway's own client (launch_gateway.server.upstream.http1, on httptools) -------------


class H1Pool:
    """`launch_gateway.server.upstream.http1.Upstream`, the client the gateway uses since this comparison."""

    name = "httptools"

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None = None) -> None:
        from launch_gateway.server.upstream import http1

        self._pool = http1.Upstream(base, ssl_context=ssl_context, connect_timeout=CONNECT_TIMEOUT)

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with asyncio.timeout(budget):
            response, data = await self._pool.request(method, target, headers, body, 8 * 1024 * 1024)
        return response.status, response.headers, data

    async def close(self) -> None:
        await self._pool.close()


# --- (d), (e): pyreqwest, aiosonic --------------------------------------------------------------


class Pyreqwest:
    name = "pyreqwest"

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None = None, ca_pem: bytes | None = None) -> None:
        from pyreqwest.client import ClientBuilder

        builder = ClientBuilder().user_agent(USER_AGENT).gzip(False).brotli(False).zstd(False).deflate(False)
        builder = builder.follow_redirects(False).connect_timeout(timedelta(seconds=CONNECT_TIMEOUT))
        if ca_pem is not None:
            builder = builder.add_root_certificate_pem(ca_pem)
        self._client = builder.build()
        self._base = base

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        builder = self._client.request(method, self._base + target).headers(headers).timeout(timedelta(seconds=budget))
        if body is not None:
            builder = builder.body_bytes(body)
        response = await builder.build().send()
        raw = (await response.bytes()).to_bytes()
        return response.status, {k.lower(): v for k, v in response.headers.items()}, raw

    async def close(self) -> None:
        await self._client.close()


class Aiosonic:
    name = "aiosonic"

    def __init__(self, base: str, ssl_context: ssl.SSLContext | None = None) -> None:
        from aiosonic.client import HTTPClient
        from aiosonic.connectors import TCPConnector
        from aiosonic.pools import PoolConfig
        from aiosonic.timeout import Timeouts

        # max_conn_requests=None: its default (1000) would reconnect every 1000 requests.
        pools: dict[str, PoolConfig | dict[str, Any]] = {
            ":default": PoolConfig(size=POOL_LIMIT, max_conn_requests=None, max_conn_idle_ms=30_000)
        }
        self._timeouts = Timeouts
        self._client = HTTPClient(connector=TCPConnector(pool_configs=pools))
        self._ssl = ssl_context
        self._base = base

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None, budget: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        timeouts = self._timeouts(sock_connect=CONNECT_TIMEOUT, sock_read=None, request_timeout=budget)
        headers = {"User-Agent": USER_AGENT, **headers}
        response = await self._client.request(
            self._base + target, method, headers=headers, data=body, timeouts=timeouts, ssl=self._ssl
        )
        raw = await response.content()
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, raw

    async def close(self) -> None:
        await self._client.aclose()  # type: ignore[no-untyped-call]


Factory = Callable[..., Client]
FACTORIES: dict[str, Factory] = {
    "aiohttp-gateway": AiohttpGateway,
    "aiohttp-bare": AiohttpBare,
    "httptools": H1Pool,
    "pyreqwest": Pyreqwest,
    "aiosonic": Aiosonic,
}
REFERENCE = "aiohttp-gateway"


def available() -> tuple[dict[str, Factory], list[str]]:
    """The clients whose packages import here, and a note for each that does not."""
    found, notes = {}, []
    needs = {"httptools": "httptools", "pyreqwest": "pyreqwest", "aiosonic": "aiosonic"}
    for name, factory in FACTORIES.items():
        try:
            if name in needs:
                __import__(needs[name])
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc}); install it with pip install --target DIR, then PYTHONPATH=DIR")
            continue
        found[name] = factory
    return found, notes


# --- correctness against a hand-written server --------------------------------------------------


class ProtocolServer:
    """HTTP/1.1 written by hand, each route framed its own way; the body is the client's port, so a
    check can tell whether a connection was reused. `hung_up` is set when a client leaves `/hang`."""

    def __init__(self) -> None:
        self.hung_up = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.base = ""

    async def start(self, tls: ssl.SSLContext | None) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"{'https' if tls else 'http'}://localhost:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:  # connections a client left open (pyreqwest's, after close())
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)

    async def _answer(self, path: str, port: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Write the answer for `path`; False when the connection must close after it."""
        if path == "/sized":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(port), port))
        elif path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"port=", port, b"!"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(port), port))
            return False
        elif path == "/drop":  # closed unannounced after the answer, as a server's keep-alive timeout does
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(port), port))
            return False
        elif path == "/eof":  # neither Content-Length nor chunked: the body ends with the connection
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\neof-" + port)
            return False
        elif path == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!")
            return False
        elif path in ("/slow", "/hang"):  # answers after 2 s unless the client leaves first (or sends more)
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(1), 2.0):
                    if path == "/hang":
                        self.hung_up.set()
                    return False
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        port = str(writer.get_extra_info("peername")[1]).encode()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
                await reader.readexactly(int(fields.get("content-length", "0")))
                keep_open = await self._answer(lines[0].split(" ")[1], port, reader, writer)
                await writer.drain()
                if not keep_open:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def check_protocol(factory: Factory, tls: bool) -> tuple[list[str], dict[str, str]]:
    """What the client got wrong on reuse, chunked, `Connection: close`, a connection dropped while idle,
    EOF-delimited, cut-off and slow answers, a cancelled call and a 404; and what it raised for each failure."""
    problems: list[str] = []
    raised: dict[str, str] = {}
    server_ctx = client_ctx = None
    ca_pem = None
    if tls:
        import trustme

        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        ca_pem = ca.cert_pem.bytes()
    server = ProtocolServer()
    await server.start(server_ctx)
    client = (
        factory(server.base, client_ctx, ca_pem=ca_pem) if factory is Pyreqwest else factory(server.base, client_ctx)
    )

    async def get(path: str, budget: float = 5.0) -> tuple[int, bytes]:
        status, _, raw = await client.request("GET", path, {}, None, budget)
        return status, raw

    async def expect(label: str, got: Awaitable[Any], check: Callable[[Any], bool]) -> Any:
        try:
            value = await got
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {exc}"[:160])
            return None
        if not check(value):
            problems.append(f"{label}: got {value!r}"[:160])
        return value

    async def expect_failure(label: str, path: str, budget: float) -> None:
        started = time.perf_counter()
        try:
            got = await get(path, budget)
            problems.append(f"{label}: returned {got!r}"[:160])
        except Exception as exc:
            raised[label] = type(exc).__name__
            if time.perf_counter() - started > budget + 1.0:
                problems.append(f"{label}: took {time.perf_counter() - started:.1f} s")

    try:
        first = await expect("sized", get("/sized"), lambda v: v[0] == 200)
        again = await expect("reuse", get("/sized"), lambda v: first is not None and v == first)
        await expect("chunked", get("/chunked"), lambda v: again is not None and v == (200, b"port=" + again[1] + b"!"))
        await expect("close", get("/close"), lambda v: again is not None and v == (200, again[1]))
        await expect("after close", get("/sized"), lambda v: again is not None and v[0] == 200 and v[1] != again[1])
        await expect("drop", get("/drop"), lambda v: v[0] == 200)
        await asyncio.sleep(0.05)
        await expect("after drop", get("/sized"), lambda v: v[0] == 200)
        await expect("eof body", get("/eof"), lambda v: v[0] == 200 and v[1].startswith(b"eof-"))
        await expect("404", get("/nowhere"), lambda v: v == (404, b"not found"))
        await expect_failure("cut-off body", "/cut", 5.0)
        if getattr(client, "timeouts", True):  # aiohttp-bare carries none, by design
            await expect_failure("timeout", "/slow", 0.3)
        await expect("after timeout", get("/sized"), lambda v: v[0] == 200)
        call = asyncio.ensure_future(get("/hang", 30.0))
        await asyncio.sleep(0.1)
        call.cancel()
        try:
            await asyncio.wait_for(server.hung_up.wait(), 1.0)
        except TimeoutError:
            problems.append("cancelled call: the connection stayed open (the upstream keeps working on it)")
        await asyncio.gather(call, return_exceptions=True)
        # A connection given back with the cancelled call's answer still to come would hand it to the next call.
        await expect("after cancel", get("/sized"), lambda v: v[0] == 200 and v[1].isdigit())
    finally:
        await client.close()
        await server.close()
    return problems, raised


# --- measurement --------------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    seconds: float
    cpu: float  # this process, all threads
    server_cpu: float  # the local Launch server
    errors: int

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class Sizes:
    requests: dict[int, int]  # by concurrency
    warmup: int
    rounds: int
    max_seconds: float


async def drive(client: Client, target: str, concurrency: int, requests: int, max_seconds: float) -> tuple[int, int]:
    """`requests` POSTs from `concurrency` tasks (fewer if `max_seconds` runs out): (done, errors)."""
    sent = done = errors = 0
    deadline = time.perf_counter() + max_seconds

    async def caller() -> None:
        nonlocal sent, done, errors
        while sent < requests and time.perf_counter() < deadline:
            sent += 1
            headers = {**BASE_HEADERS, "x-request-id": f"bench-{sent}"}
            try:
                status, _, raw = await client.request("POST", target, headers, BODY, SYNC_TIMEOUT)
                json.loads(raw)
                errors += status != 200
            except Exception:
                errors += 1
            done += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done, errors


async def measure(client: Client, launch: LocalLaunch, target: str, concurrency: int, sizes: Sizes) -> Run:
    await drive(client, target, concurrency, sizes.warmup, sizes.max_seconds)
    server_before, cpu_before, started = launch.server.cpu_seconds(), time.process_time(), time.perf_counter()
    done, errors = await drive(client, target, concurrency, sizes.requests[concurrency], sizes.max_seconds)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    return Run(done, seconds, cpu, launch.server.cpu_seconds() - server_before, errors)


async def check_against_launch(clients: dict[str, Client], target: str, endpoint_target: str) -> list[str]:
    """Each client's status and parsed body for three requests, against aiohttp-gateway's."""
    problems = []
    cases = [("POST", target, BODY), ("GET", endpoint_target, None), ("POST", target.replace("=end_", "=end_x"), BODY)]
    expected: list[tuple[int, Any]] = []
    for name, client in clients.items():
        for i, (method, where, body) in enumerate(cases):
            try:
                status, _, raw = await client.request(method, where, BASE_HEADERS, body, 10.0)
                got = (status, json.loads(raw))
            except Exception as exc:
                problems.append(f"{name}: {method} {where}: {type(exc).__name__}: {exc}")
                continue
            if name == REFERENCE:
                expected.append(got)
            elif got != expected[i]:
                problems.append(f"{name}: {method} {where}: {got!r} != {expected[i]!r}"[:200])
    return problems


def _cell(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def print_table(runs: dict[tuple[str, int], list[Run]], names: list[str], concurrencies: tuple[int, ...]) -> None:
    sys.stderr.flush()
    print(
        f"\n{'client':<16} {'c':>3} {'client µs/req':>17} {'minus (a)':>18} {'vs (a)':>17} {'req/s':>20}"
        f" {'Launch µs/req':>17} err"
    )
    for concurrency in concurrencies:
        reference = runs[(REFERENCE, concurrency)]
        for name in names:
            these = runs[(name, concurrency)]
            pairs = list(zip(these, reference, strict=True))  # run i of each was in the same round
            ratios = [run.cpu_us / ref.cpu_us for run, ref in pairs]
            saved = [run.cpu_us - ref.cpu_us for run, ref in pairs]
            print(
                f"{name:<16} {concurrency:>3} {_cell([r.cpu_us for r in these], '.0f'):>17} {_cell(saved, '+.0f'):>18}"
                f" {_cell(ratios, '.2f'):>17} {_cell([r.rate for r in these], '.0f'):>20}"
                f" {_cell([r.server_us for r in these], '.0f'):>17} {sum(r.errors for r in these)}"
            )


@dataclass
class Options:
    sizes: Sizes
    logs: Path
    only: list[str] = field(default_factory=list)


async def main(options: Options) -> int:
    factories, notes = available()
    if options.only:
        factories = {k: v for k, v in factories.items() if k in options.only or k == REFERENCE}
    for note in notes:
        print(note)
    for name, factory in factories.items():
        for tls in (False, True):
            problems, raised = await check_protocol(factory, tls)
            failures = ", ".join(f"{label} -> {exc}" for label, exc in raised.items())
            print(f"protocol {'https' if tls else 'http'} {name}: {'; '.join(problems) or 'ok'} ({failures})")

    launch = await start_local_launch(options.logs)
    try:
        clients = {name: factory(launch.url) for name, factory in factories.items()}
        target = f"/v1/sync-tasks?model_endpoint_id={launch.endpoint_id('echo')}"
        problems = await check_against_launch(clients, target, "/v1/model-endpoints?name=echo")
        print("answers vs aiohttp-gateway:", "; ".join(problems) or "all equal")
        names = list(clients)
        concurrencies = tuple(options.sizes.requests)
        runs: dict[tuple[str, int], list[Run]] = {(n, c): [] for n in names for c in concurrencies}
        for round_ in range(options.sizes.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for concurrency in concurrencies:
                for name in order:
                    run = await measure(clients[name], launch, target, concurrency, options.sizes)
                    runs[(name, concurrency)].append(run)
                    print(
                        f"  round {round_ + 1} c={concurrency:<2} {name:<16} {run.requests:>5} req {run.seconds:4.1f} s"
                        f" {run.cpu_us:6.0f} µs/req client {run.server_us:6.0f} µs/req Launch",
                        file=sys.stderr,
                        flush=True,
                    )
        for client in clients.values():
            await client.close()
        print_table(runs, names, concurrencies)
        errors = launch.server.error_lines()
        if errors:
            print(f"local Launch server logged {len(errors)} error lines, e.g. {errors[0][:160]}")
    finally:
        await launch.server.stop()
    return 0


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: checks that it runs")
    parser.add_argument("--requests-1", type=int, default=3000, help="requests per run at concurrency 1")
    parser.add_argument("--requests-64", type=int, default=6000, help="requests per run at concurrency 64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="measure only this client (and the reference)")
    parser.add_argument("--logs", type=Path, help="where the local Launch server's log goes (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        sizes = Sizes({1: 100, 64: 300}, warmup=64, rounds=1, max_seconds=8.0)
    else:
        sizes = Sizes({1: args.requests_1, 64: args.requests_64}, warmup=256, rounds=args.rounds, max_seconds=8.0)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="upstream-clients-"))
    logs.mkdir(parents=True, exist_ok=True)
    return Options(sizes, logs, args.only)


if __name__ == "__main__":
    options = parse_options()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(options)))
