"""Python load drivers: N concurrent grpc.aio callers, N concurrent aiohttp callers, and stream readers.

They run in the bench's own process (uvloop), never in a server's. Each unary driver runs for
`warmup + duration` seconds and counts only the calls that end after the warm-up; every call's
latency and status are kept, so errors are never mistaken for throughput.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

SSE_SEPARATOR = b"\r\n\r\n"


@dataclass
class UnaryRun:
    calls_per_second: float
    latencies_ms: list[float] = field(repr=False)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != "OK")


def open_channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """`count` channels, each with its own connection (a local subchannel pool)."""
    return [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(count)]


async def close_channels(channels: list[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(channel.close() for channel in channels))


async def _drive(call: Callable[[int], Awaitable[str]], callers: int, duration: float, warmup: float) -> UnaryRun:
    """Run `callers` loops of `call(caller)` (which returns an outcome name) and measure them."""
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    start = clock()
    measured_from, stop = start + warmup, start + warmup + duration
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()

    async def caller(index: int) -> None:
        while (now := clock()) < stop:
            outcome = await call(index)
            done = clock()
            if done >= measured_from and now >= measured_from:
                latencies.append((done - now) * 1000.0)
                outcomes[outcome] += 1

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return UnaryRun(len(latencies) / duration, latencies, outcomes)


async def grpc_predict(
    address: str, request: pb.PredictRequest, *, callers: int, duration: float, warmup: float, channels: int = 4
) -> UnaryRun:
    """`callers` concurrent grpc.aio callers of Predict spread over `channels` connections."""
    opened = open_channels(address, min(channels, callers))
    stubs = [pb_grpc.EndpointServiceStub(channel) for channel in opened]

    async def call(index: int) -> str:
        try:
            await stubs[index % len(stubs)].Predict(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    try:
        return await _drive(call, callers, duration, warmup)
    finally:
        await close_channels(opened)


async def http_post(url: str, body: bytes, *, callers: int, duration: float, warmup: float) -> UnaryRun:
    """`callers` concurrent aiohttp callers POSTing JSON on keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=callers)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(index: int) -> str:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return "OK" if response.status == 200 else f"HTTP {response.status}"
            except aiohttp.ClientError as exc:
                return type(exc).__name__

        return await _drive(call, callers, duration, warmup)


# --- streams -------------------------------------------------------------------------------------


async def sse_events(session: aiohttp.ClientSession, url: str, body: bytes) -> AsyncIterator[bytes]:
    """The `data` of each event of an SSE response, as a plain client reads them."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    async with session.post(url, data=body, headers=headers) as response:
        response.raise_for_status()
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *events, buffer = buffer.split(SSE_SEPARATOR)
            for event in events:
                if event.startswith(b"data: "):
                    yield event[6:]


async def sse_throughput(url: str, body: bytes) -> tuple[int, float]:
    """Read one SSE stream to its end, decoding each event: (events, seconds)."""
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        count = 0
        async for data in sse_events(session, url, body):
            json.loads(data)
            count += 1
        return count, time.perf_counter() - started


async def grpc_stream_throughput(address: str, request: pb.StreamPredictRequest) -> tuple[int, float]:
    """Read one StreamPredict to its end: (messages, seconds)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EndpointServiceStub(channel)
        started = time.perf_counter()
        count = 0
        async for _ in stub.StreamPredict(request, timeout=120):
            count += 1
        return count, time.perf_counter() - started


async def sse_event_delays(url: str, body: bytes) -> list[float]:
    """For each event of a `paced` stream: ms from its stamp in the model to its arrival here."""
    delays = []
    async with aiohttp.ClientSession() as session:
        async for data in sse_events(session, url, body):
            now = time.monotonic()
            stamp = json.loads(data)["result"]["result"]["t"]
            delays.append((now - stamp) * 1000.0)
    return delays


async def grpc_event_delays(address: str, request: pb.StreamPredictRequest) -> list[float]:
    """For each message of a `paced` StreamPredict: ms from its stamp in the model to its arrival here."""
    delays = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EndpointServiceStub(channel)
        async for message in stub.StreamPredict(request, timeout=120):
            now = time.monotonic()
            stamp = json.loads(message.response.result)["t"]
            delays.append((now - stamp) * 1000.0)
    return delays


def json_body(args: dict[str, Any]) -> bytes:
    """A Launch task body, as the Launch client sends it."""
    return json.dumps({"args": args, "return_pickled": False}).encode()
