"""Streaming: events/s through StreamPredict against reading the SSE directly, and the latency added per event.

Throughput: the built-in `count` endpoint with `interval = 0` streams as fast as the local Launch
server can; h2load reads it (one stream, then four at once) as gRPC through the gateway and as
HTTP/1.1 SSE from the local Launch server, so neither side is slowed by a Python client. The same
streams read by Python clients (grpc.aio; aiohttp with a JSON decode per event) are reported too.
The gateway's `gateway_stream_events_total` checks that every event was relayed.

Latency: `bench.endpoints:paced` stamps each event with the machine's monotonic clock when the
model yields it; the client subtracts that stamp on arrival. The gateway's added latency is the
percentile through the gateway minus the same percentile read directly, round by round.
"""

from __future__ import annotations

import json
from collections import Counter

from bench import drivers, h2load
from bench.harness import Harness
from bench.processes import handled_codes
from bench.report import Check
from bench.stats import percentile
from launch_gateway.v1 import endpoint_service_pb2 as pb

SECTION = "streaming"
STREAM_PATH = "/launch_gateway.v1.EndpointService/StreamPredict"
# The bare grpc.aio stream server's events/s is the ceiling: four streams >= 0.9 x it, one stream >= 1 x.
TARGET_OF_BARE = {1: 1.0, 4: 0.9}


def at_least(ratio: float) -> Check:
    """A check that the figure's median ratio to its reference is at least `ratio`."""
    return lambda f: f.ratio is not None and f.ratio.median >= ratio


def stream_request(endpoint: str, args: dict[str, object]) -> pb.StreamPredictRequest:
    return pb.StreamPredictRequest(endpoint_name=endpoint, request=pb.EndpointRequest(args_json=json.dumps(args)))


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    launch, gateway, echo = await harness.launch(), await harness.gateway(), await harness.echo()
    n = sizes.stream_events
    count_args = {"n": n, "interval": 0}
    grpc_body = h2load.grpc_frame(stream_request("count", count_args))
    sse_url = f"{launch.url}/v1/streaming-tasks?model_endpoint_id={launch.endpoint_id('count')}"
    sse_body = drivers.json_body(count_args)
    paced_args = {"n": sizes.paced_events, "interval": sizes.paced_interval}
    paced_url = f"{launch.url}/v1/streaming-tasks?model_endpoint_id={launch.endpoint_id('paced')}"
    rates: dict[str, list[float]] = {}
    delays: dict[str, list[float]] = {}
    problems: Counter[str] = Counter()
    before = await gateway.metrics()

    def rate(key: str, value: float) -> None:
        rates.setdefault(key, []).append(value)

    for _ in range(sizes.rounds):
        for streams in (1, 4):
            relayed = (await gateway.metrics()).value("gateway_stream_events_total")
            r = await h2load.run(
                f"http://{gateway.address}{STREAM_PATH}",
                grpc_body,
                headers=h2load.GRPC_HEADERS,
                clients=1,
                streams=streams,
                requests=streams,
            )
            relayed = (await gateway.metrics()).value("gateway_stream_events_total") - relayed
            if relayed != n * streams:
                problems[f"h2load {streams} streams: {relayed:.0f} of {n * streams} events relayed"] += 1
            rate(f"gateway h2load {streams}", relayed / r.seconds)
            r = await h2load.run(
                sse_url,
                sse_body,
                headers=h2load.JSON_HEADERS,
                clients=streams,
                streams=1,
                requests=streams,
                http1=True,
            )
            rate(f"direct h2load {streams}", n * streams / r.seconds)
            r = await h2load.run(
                f"http://{echo.address}{STREAM_PATH}",
                grpc_body,
                headers=h2load.GRPC_HEADERS,
                clients=1,
                streams=streams,
                requests=streams,
            )
            rate(f"echo h2load {streams}", n * streams / r.seconds)
        count, seconds = await drivers.grpc_stream_throughput(gateway.address, stream_request("count", count_args))
        if count != n:
            problems[f"grpc.aio read {count} of {n} events"] += 1
        rate("gateway python", count / seconds)
        count, seconds = await drivers.sse_throughput(sse_url, sse_body)
        rate("direct python", count / seconds)

        through = await drivers.grpc_event_delays(gateway.address, stream_request("paced", paced_args))
        direct = await drivers.sse_event_delays(paced_url, drivers.json_body(paced_args))
        for key, values in (("gateway", through), ("direct", direct)):
            for q in (50, 99):
                delays.setdefault(f"{key} p{q}", []).append(percentile(values, q))

    codes = handled_codes(before, await gateway.metrics(), "StreamPredict")
    problems.update({f"StreamPredict {code}": count for code, count in codes.items() if code != "OK"})

    add = harness.report.add
    for streams in (1, 4):
        add(
            SECTION,
            f"StreamPredict events/s, {streams} stream{'s' if streams > 1 else ''} (h2load)",
            "events/s",
            rates[f"gateway h2load {streams}"],
            reference_name="bare grpc.aio stream of ready messages (the ceiling)",
            reference=rates[f"echo h2load {streams}"],
            target=f">= {TARGET_OF_BARE[streams]:g} x bare stream server",
            check=at_least(TARGET_OF_BARE[streams]),
        )
        add(
            SECTION,
            f"StreamPredict events/s, {streams} stream{'s' if streams > 1 else ''} (h2load)",
            "events/s",
            rates[f"gateway h2load {streams}"],
            reference_name="SSE read directly (h2load --h1)",
            reference=rates[f"direct h2load {streams}"],
        )
    add(
        SECTION,
        "StreamPredict events/s, 1 stream (Python: grpc.aio vs aiohttp)",
        "events/s",
        rates["gateway python"],
        reference_name="SSE read directly",
        reference=rates["direct python"],
    )
    interval_ms = sizes.paced_interval * 1000
    for q, target in ((50, ""), (99, "<= 1 ms added")):
        add(
            SECTION,
            f"StreamPredict latency added per event, p{q} ({interval_ms:g} ms pacing)",
            "ms",
            delays[f"gateway p{q}"],
            reference_name=f"SSE read directly, p{q}",
            reference=delays[f"direct p{q}"],
            compare="difference",
            target=target,
            check=(lambda f: f.value.median <= 1.0) if target else None,
        )
    add(
        SECTION,
        "errors during the streaming runs",
        "",
        [float(sum(problems.values()))],
        target="0",
        check=lambda f: f.value.median == 0,
        note=", ".join(f"{k} (x{v})" for k, v in problems.items()),
    )
    if problems:
        harness.report.note(f"streaming: {dict(problems)}")
