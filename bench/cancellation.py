"""Cancellation: the caller cancels a Predict or a StreamPredict; how long until the local Launch server sees it.

The model functions `hold` and `hold_stream` (bench/endpoints.py) send a datagram when they start
and another, stamped with the machine's monotonic clock, when the local Launch server cancels them
because the caller went away. The delay is that stamp minus the moment the client cancelled. The
reference is the same call made directly over HTTP and abandoned by an aiohttp client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import grpc

from bench import drivers
from bench.harness import Harness
from bench.stats import percentile
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

SECTION = "cancellation"
SIGNAL_TIMEOUT = 5.0
TARGET_MS = 100.0


class Signals(asyncio.DatagramProtocol):
    """Datagrams `"<event> <token> <monotonic>"` from the model functions, awaitable by (event, token)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[float]] = {}

    def expect(self, event: str, token: str) -> asyncio.Future[float]:
        return self._waiting.setdefault((event, token), asyncio.get_running_loop().create_future())

    def datagram_received(self, data: bytes, addr: object) -> None:
        event, token, stamp = data.decode().split()
        future = self.expect(event, token)
        if not future.done():
            future.set_result(float(stamp))


Start = Callable[[str, int], Awaitable[Callable[[], None]]]  # (token, port) -> started call's cancel


async def cancel_delay(signals: Signals, port: int, start: Start, errors: Counter[str], kind: str) -> float | None:
    """Start one call, wait until the model runs, cancel it: ms until the model saw the disconnect."""
    token = uuid.uuid4().hex
    started, cancelled = signals.expect("start", token), signals.expect("cancel", token)
    cancel = await start(token, port)
    try:
        await asyncio.wait_for(asyncio.shield(started), SIGNAL_TIMEOUT)
    except TimeoutError:
        errors[f"{kind}: model never started"] += 1
        cancel()
        return None
    await asyncio.sleep(0.005)
    at = time.monotonic()
    cancel()
    try:
        seen = await asyncio.wait_for(asyncio.shield(cancelled), SIGNAL_TIMEOUT)
    except TimeoutError:
        errors[f"{kind}: disconnect not seen within {SIGNAL_TIMEOUT:g} s"] += 1
        return None
    return (seen - at) * 1000.0


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    launch, gateway = await harness.launch(), await harness.gateway()
    loop = asyncio.get_running_loop()
    transport, signals = await loop.create_datagram_endpoint(Signals, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    errors: Counter[str] = Counter()
    delays: dict[str, list[list[float]]] = {}
    background: set[asyncio.Task[object]] = set()

    def spawn(work: Awaitable[object]) -> Callable[[], None]:
        task = asyncio.ensure_future(work)
        background.add(task)
        task.add_done_callback(background.discard)
        return task.cancel

    channel = grpc.aio.insecure_channel(gateway.address)
    stub = pb_grpc.EndpointServiceStub(channel)
    session = aiohttp.ClientSession()

    def args(token: str, port: int) -> dict[str, object]:
        return {"token": token, "port": port, "seconds": 60}

    async def grpc_predict(token: str, port: int) -> Callable[[], None]:
        call = stub.Predict(pb.PredictRequest(endpoint_name="hold", request=_request(args(token, port))), timeout=60)
        spawn(_swallow(call))
        return call.cancel

    async def grpc_stream(token: str, port: int) -> Callable[[], None]:
        request = pb.StreamPredictRequest(endpoint_name="hold-stream", request=_request(args(token, port)))
        call = stub.StreamPredict(request, timeout=60)
        await call.read()  # the first event is in hand: the stream is open end to end
        return call.cancel

    def http(route: str, endpoint: str, stream: bool) -> Start:
        url = f"{launch.url}{route}?model_endpoint_id={launch.endpoint_id(endpoint)}"

        async def start(token: str, port: int) -> Callable[[], None]:
            body = drivers.json_body(args(token, port))
            if not stream:
                return spawn(_post(session, url, body))
            opened: asyncio.Future[None] = loop.create_future()
            cancel = spawn(_read_stream(session, url, body, opened))
            await opened  # the first event is in hand
            return cancel

        return start

    kinds: dict[str, Start] = {
        "Predict via gateway": grpc_predict,
        "sync task direct": http("/v1/sync-tasks", "hold", stream=False),
        "StreamPredict via gateway": grpc_stream,
        "streaming task direct": http("/v1/streaming-tasks", "hold-stream", stream=True),
    }
    try:
        for _ in range(sizes.rounds):
            for kind, start in kinds.items():
                run = []
                for _ in range(sizes.cancels):
                    delay = await cancel_delay(signals, port, start, errors, kind)
                    if delay is not None:
                        run.append(delay)
                delays.setdefault(kind, []).append(run)
    finally:
        for task in list(background):
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await session.close()
        await channel.close()
        transport.close()

    add = harness.report.add
    for through, direct in (
        ("Predict via gateway", "sync task direct"),
        ("StreamPredict via gateway", "streaming task direct"),
    ):
        for q in (50, 99):
            add(
                SECTION,
                f"{through.split()[0]} cancel -> local Launch sees disconnect, p{q}",
                "ms",
                [percentile(run, q) for run in delays[through]],
                reference_name=f"{direct} (aiohttp), p{q}",
                reference=[percentile(run, q) for run in delays[direct]],
                target=f"<= {TARGET_MS:g} ms" if q == 99 else "",
                check=(lambda f: f.value.median <= TARGET_MS) if q == 99 else None,
            )
    add(
        SECTION,
        "cancellations never seen by the local Launch server",
        "calls",
        [float(sum(errors.values()))],
        target="0",
        check=lambda f: f.value.median == 0,
        note=json.dumps(dict(errors)) if errors else "",
    )


def _request(args: dict[str, object]) -> pb.EndpointRequest:
    return pb.EndpointRequest(args_json=json.dumps(args))


async def _swallow(call: Awaitable[object]) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        await call


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()


async def _read_stream(session: aiohttp.ClientSession, url: str, body: bytes, opened: asyncio.Future[None]) -> None:
    async for _ in drivers.sse_events(session, url, body):
        if not opened.done():
            opened.set_result(None)
