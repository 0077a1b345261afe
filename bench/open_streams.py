"""Memory with many open streams: `open_streams` StreamPredict calls held open at once.

Each stream calls `bench.endpoints:hold_stream`, which sends one event and then stays open. A
stream counts as open once its first event has reached the client; the gateway's RSS is read
when all are open, against the same process's RSS before the first one (its reference). The
memory runs open `RAMP` streams at a time, each batch once the one before has its first events.

Every open stream holds one upstream HTTP/1.1 connection, and the gateway pools at most
`upstream.max_stream_connections` (256 by default): streams beyond that fail UNAVAILABLE after the
connect timeout. So the memory runs raise the setting to the stream count; one extra run keeps the
default and reports how many streams open at all, and one opens every stream at once (a burst that
grpc-core's pending-request limits, `server.max_pending_requests`, must make room for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass

import grpc

from bench import drivers
from bench.harness import Harness
from bench.processes import gateway_config, start_gateway, start_local_launch
from launch_gateway.server.settings import UpstreamSettings
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

SECTION = "open streams"
CHANNELS = 10
STALL_SECONDS = 3.0  # no stream opened for this long: stop waiting
RAMP = 500  # streams opened at once in the memory runs
MB = 1024 * 1024


@dataclass
class StreamsRun:
    opened: int
    failed: int
    seconds: float
    idle_rss: int
    open_rss: int
    launch_rss: int
    failures: Counter[str]


async def _first_events(calls: list[grpc.aio.UnaryStreamCall], failures: Counter[str]) -> tuple[int, bool]:
    """Wait for each call's first event: (how many arrived, whether progress stalled first)."""
    pending = {asyncio.ensure_future(call.read()) for call in calls}
    opened = 0
    last_progress = time.monotonic()
    while pending and time.monotonic() - last_progress < STALL_SECONDS:
        done, pending = await asyncio.wait(pending, timeout=0.5)
        if done:
            last_progress = time.monotonic()
        for first in done:
            exc = first.exception()
            if exc is None and first.result() is not grpc.aio.EOF:
                opened += 1
            elif isinstance(exc, grpc.aio.AioRpcError):
                failures[f"{exc.code().name}: {exc.details()}"[:160]] += 1
            else:
                failures[repr(exc)[:160]] += 1
    for first in pending:
        first.cancel()
    return opened, bool(pending)


async def streams_run(harness: Harness, count: int, tag: str, *, max_connections: int | None, batch: int) -> StreamsRun:
    """`count` streams opened `batch` at a time (each batch once the one before has its first events)."""
    launch = await start_local_launch(harness.scratch, name=f"local-launch-{tag}")
    harness.track(launch.server)
    upstream = {"max_stream_connections": max_connections} if max_connections else {}
    config = gateway_config(launch.url, upstream=upstream, timeouts={"stream_idle": 300.0})
    gateway = await start_gateway(harness.scratch, config, name=f"gateway-{tag}")
    harness.track(gateway.server)
    channels = drivers.open_channels(gateway.address, CHANNELS)
    stubs = [pb_grpc.EndpointServiceStub(channel) for channel in channels]
    request = pb.StreamPredictRequest(
        endpoint_name="hold-stream", request=pb.EndpointRequest(args_json=json.dumps({"seconds": 300}))
    )
    calls: list[grpc.aio.UnaryStreamCall] = []
    failures: Counter[str] = Counter()
    try:
        idle_rss = gateway.server.rss()
        started = time.monotonic()
        opened = 0
        for batch_start in range(0, count, batch):
            new = [
                stubs[i % CHANNELS].StreamPredict(request, timeout=600)
                for i in range(batch_start, min(count, batch_start + batch))
            ]
            calls.extend(new)
            got, stalled = await _first_events(new, failures)
            opened += got
            if stalled:
                break
        seconds = time.monotonic() - started
        return StreamsRun(
            opened, sum(failures.values()), seconds, idle_rss, gateway.server.rss(), launch.server.rss(), failures
        )
    finally:
        for call in calls:
            call.cancel()
        with contextlib.suppress(Exception):
            await drivers.close_channels(channels)
        await harness.stop(gateway.server)
        await harness.stop(launch.server)


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    count = sizes.open_streams
    runs = [
        await streams_run(harness, count, f"streams-{r}", max_connections=count, batch=RAMP)
        for r in range(sizes.rounds)
    ]
    default = await streams_run(harness, count, "streams-default-pool", max_connections=None, batch=RAMP)
    burst = await streams_run(harness, count, "streams-burst", max_connections=count, batch=count)

    add = harness.report.add
    label = f"{count:,} open streams"
    add(
        SECTION,
        f"gateway RSS with {label}",
        "MB",
        [r.open_rss / MB for r in runs],
        reference_name="same gateway idle",
        reference=[r.idle_rss / MB for r in runs],
        target="<= 300 MB",
        check=lambda f: f.value.median <= 300,
        note=f"opened {RAMP} at a time; upstream.max_stream_connections = {count}",
    )
    add(
        SECTION,
        "gateway RSS per open stream",
        "KB",
        [(r.open_rss - r.idle_rss) / 1024 / max(r.opened, 1) for r in runs],
    )
    add(SECTION, f"local Launch server RSS with {label}", "MB", [r.launch_rss / MB for r in runs])
    add(
        SECTION,
        f"streams open (first event in hand), {RAMP} at a time",
        "streams",
        [float(r.opened) for r in runs],
        reference_name="asked for",
        reference=[float(count)] * len(runs),
        target=f"{count:,}",
        check=lambda f: f.value.median >= count,
        note="seconds to open all: " + ", ".join(f"{r.seconds:.1f}" for r in runs),
    )
    add(
        SECTION,
        f"streams open, default upstream.max_stream_connections ({UpstreamSettings().max_stream_connections:,})",
        "streams",
        [float(default.opened)],
        reference_name="asked for",
        reference=[float(count)],
        note="by design: each open stream holds an upstream connection, and calls past the pool end UNAVAILABLE "
        "after upstream.connect_timeout",
    )
    add(
        SECTION,
        f"streams open when all {count:,} are opened at once",
        "streams",
        [float(burst.opened)],
        reference_name="asked for",
        reference=[float(count)],
        target=f"{count:,}",
        check=lambda f: f.value.median >= count,
        note="; ".join(f"{k} x{v}" for k, v in burst.failures.items()),
    )
    for run, what in ((r, "memory run") for r in runs):
        if run.failures:
            harness.report.note(f"open streams ({what}): {dict(run.failures)}")
    if burst.failures:
        harness.report.note(
            f"open streams: opening {count:,} StreamPredict calls at once, {sum(burst.failures.values())} ended "
            f"before their first event ({dict(burst.failures)}); the gateway never counted them (a bare grpc.aio "
            "server does the same: grpc-core's pending-request limit, grpc.server.max_pending_requests)"
        )
