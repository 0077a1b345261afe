"""Unary calls: the bare grpc.aio echo server, the naive relay, the local Launch server over HTTP, and the gateway.

Each round drives the servers one after the other with the same load (so a slow spell of the
machine hits them all), first with h2load, then with the Python drivers (the naive relay, a
reference for the gateway's own work, with h2load only). The naive relay (`naive_relay.py`) is
grpc.aio Predict -> one aiohttp POST to the same local Launch server, with nothing else. gRPC loads are
`-c 4 -m 16` (64 calls in flight on 4 connections) and `-c 1 -m 1`; the local Launch server speaks
HTTP/1.1, so its loads are `--h1 -c 64` and `--h1 -c 1` (same tool, same number of calls in flight,
one call per connection as HTTP/1.1 allows). The Python drivers are grpc.aio for the gRPC servers
and aiohttp for the HTTP one: different client libraries, said so in the table.

After every gateway run the gateway's own `grpc_server_handled_total` tells its errors; calls that
h2load leaves in flight when its time is up end as CANCELLED and are counted apart. Under the
64-caller h2load load each server's CPU time (all threads, from /proc) is read after the warm-up
and at the end, giving CPU per call; for the gateway and the naive relay, the local Launch server's too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from google.protobuf import struct_pb2

from bench import drivers, h2load
from bench.harness import Harness
from bench.processes import Gateway, Server, handled_codes
from bench.stats import percentile
from launch_gateway.v1 import endpoint_service_pb2 as pb

SECTION = "unary"
ARGS = {"text": "hello", "n": 1}
PREDICT_PATH = "/launch_gateway.v1.EndpointService/Predict"
LOADS = ((64, 4, 16), (1, 1, 1))  # callers, h2load connections, streams per connection


def predict_request() -> pb.PredictRequest:
    args = struct_pb2.Struct()
    args.update(ARGS)
    return pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args=args))


@dataclass
class Series:
    """One server under one load and driver, over the rounds."""

    rate: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # CPU per call of the server under test
    upstream_cpu_us: list[float] = field(default_factory=list)  # of the local Launch server behind the gateway

    def add(self, rate: float, latencies: list[float]) -> None:
        self.rate.append(rate)
        self.p50.append(percentile(latencies, 50))
        self.p99.append(percentile(latencies, 99))


async def cpu_during(
    load: Awaitable[h2load.H2LoadResult], servers: Sequence[Server], warmup: float
) -> tuple[h2load.H2LoadResult, list[float]]:
    """Run an h2load load; the CPU seconds each server used from the end of the warm-up to the end."""
    running = asyncio.ensure_future(load)
    await asyncio.sleep(warmup)
    before = [server.cpu_seconds() for server in servers]
    result = await running
    return result, [server.cpu_seconds() - b for server, b in zip(servers, before, strict=True)]


class GatewayErrors:
    """The gateway's non-OK Predict statuses, read from its counters around each run."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.errors: Counter[str] = Counter()
        self.cancelled_at_stop = 0

    async def around(self, load: Awaitable[object], h2load_stops: bool) -> object:
        before = await self.gateway.metrics()
        outcome = await load
        codes = handled_codes(before, await self.gateway.metrics(), "Predict")
        if h2load_stops:  # h2load resets the calls still in flight when its time is up
            self.cancelled_at_stop += codes.pop("Canceled", 0)
        self.errors.update({code: n for code, n in codes.items() if code != "OK"})
        return outcome


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    echo, launch, gateway = await harness.echo(), await harness.launch(), await harness.gateway()
    naive = await harness.naive_relay()
    request = predict_request()
    grpc_body = h2load.grpc_frame(request)
    sync_url = f"{launch.url}/v1/sync-tasks?model_endpoint_id={launch.endpoint_id('echo')}"
    json_body = drivers.json_body(ARGS)
    seconds, warmup = sizes.unary_seconds, sizes.unary_warmup
    results: dict[tuple[str, str, int], Series] = {}
    watch = GatewayErrors(gateway)
    driver_errors: Counter[str] = Counter()

    def series(tool: str, target: str, callers: int) -> Series:
        return results.setdefault((tool, target, callers), Series())

    for _ in range(sizes.rounds):
        for callers, c, m in LOADS:
            for target, address, servers in (
                ("echo", echo.address, [echo.server]),
                ("gateway", gateway.address, [gateway.server, launch.server]),
                ("naive", naive.address, [naive.server, launch.server]),
                ("launch", launch.address, [launch.server]),
            ):
                http1 = target == "launch"
                load = h2load.run(
                    sync_url if http1 else f"http://{address}{PREDICT_PATH}",
                    json_body if http1 else grpc_body,
                    headers=h2load.JSON_HEADERS if http1 else h2load.GRPC_HEADERS,
                    clients=callers if http1 else c,
                    streams=1 if http1 else m,
                    duration=seconds,
                    warmup=warmup,
                    http1=http1,
                )
                measured = cpu_during(load, servers, warmup)
                r, cpu = await (watch.around(measured, h2load_stops=True) if target == "gateway" else measured)  # type: ignore[misc]
                if r.status_other:
                    driver_errors[f"h2load {target}: HTTP 3xx/4xx/5xx"] += r.status_other
                s = series("h2load", target, callers)
                s.add(r.requests_per_second, r.latencies_ms)
                calls = r.requests_per_second * seconds
                s.cpu_us.append(cpu[0] / calls * 1e6 if calls else float("nan"))
                if len(cpu) > 1:
                    s.upstream_cpu_us.append(cpu[1] / calls * 1e6 if calls else float("nan"))

        for callers, _, _ in LOADS:
            for target, address in (("echo", echo.address), ("gateway", gateway.address)):
                load = drivers.grpc_predict(address, request, callers=callers, duration=seconds, warmup=warmup)
                run = await (watch.around(load, h2load_stops=False) if target == "gateway" else load)  # type: ignore[misc]
                driver_errors.update({f"grpc.aio {target}: {k}": v for k, v in run.outcomes.items() if k != "OK"})
                series("python", target, callers).add(run.calls_per_second, run.latencies_ms)
            run = await drivers.http_post(sync_url, json_body, callers=callers, duration=seconds, warmup=warmup)
            driver_errors.update({f"aiohttp launch: {k}": v for k, v in run.outcomes.items() if k != "OK"})
            series("python", "launch", callers).add(run.calls_per_second, run.latencies_ms)

    _report(harness, results, watch, driver_errors)


def _report(
    harness: Harness, results: dict[tuple[str, str, int], Series], watch: GatewayErrors, driver_errors: Counter[str]
) -> None:
    add = harness.report.add
    gw, naive, echo, launch = (results[("h2load", t, 64)] for t in ("gateway", "naive", "echo", "launch"))
    gw_one, naive_one, launch_one = (results[("h2load", t, 1)] for t in ("gateway", "naive", "launch"))
    # The targets first, each against the reference it names, all from the same h2load runs.
    add(
        SECTION,
        "Predict calls/s, 64 callers (h2load)",
        "calls/s",
        gw.rate,
        reference_name="naive relay",
        reference=naive.rate,
        target=">= 1.1 x naive relay",
        check=lambda f: f.ratio is not None and f.ratio.median >= 1.1,
    )
    add(
        SECTION,
        "gateway CPU per Predict call (h2load, 64 callers)",
        "µs",
        gw.cpu_us,
        reference_name="naive relay CPU per call",
        reference=naive.cpu_us,
        target="<= 0.9 x naive relay",
        check=lambda f: f.ratio is not None and f.ratio.median <= 0.9,
        note="less sensitive to scheduling noise than calls/s",
    )
    add(
        SECTION,
        "Predict p50 at 1 caller, over the naive relay (h2load)",
        "ms",
        gw_one.p50,
        reference_name="naive relay p50",
        reference=naive_one.p50,
        compare="difference",
        target="<= 0 ms (no higher)",
        check=lambda f: f.value.median <= 0.0,
    )
    for tool, label in (("h2load", "h2load"), ("python", "Python driver")):
        gw64, echo64, launch64 = (results[(tool, t, 64)] for t in ("gateway", "echo", "launch"))
        gw1, echo1, launch1 = (results[(tool, t, 1)] for t in ("gateway", "echo", "launch"))
        http = "aiohttp" if tool == "python" else "h2load --h1"
        same_tool = tool == "h2load"
        add(
            SECTION,
            f"Predict calls/s, 64 callers ({label})",
            "calls/s",
            gw64.rate,
            reference_name="bare echo",
            reference=echo64.rate,
            target=">= 0.5 x bare echo (longer term)" if same_tool else "",
            check=(lambda f: f.ratio is not None and f.ratio.median >= 0.5) if same_tool else None,
        )
        add(
            SECTION,
            f"Predict calls/s, 64 callers ({label})",
            "calls/s",
            gw64.rate,
            reference_name=f"Launch HTTP direct ({http})",
            reference=launch64.rate,
        )
        add(
            SECTION,
            f"bare echo calls/s, 64 callers ({label})",
            "calls/s",
            echo64.rate,
            reference_name=f"Launch HTTP direct ({http})",
            reference=launch64.rate,
        )
        add(
            SECTION,
            f"Predict p50 added at 1 caller ({label})",
            "ms",
            gw1.p50,
            reference_name=f"Launch HTTP p50 ({http})",
            reference=launch1.p50,
            compare="difference",
            target="<= 0.3 ms added",
            check=lambda f: f.value.median <= 0.3,
            note="" if same_tool else "client libraries differ (grpc.aio vs aiohttp)",
        )
        add(
            SECTION,
            f"Predict p99 added at 1 caller ({label})",
            "ms",
            gw1.p99,
            reference_name=f"Launch HTTP p99 ({http})",
            reference=launch1.p99,
            compare="difference",
        )
        add(
            SECTION,
            f"Predict p50 at 1 caller ({label})",
            "ms",
            gw1.p50,
            reference_name="bare echo p50",
            reference=echo1.p50,
        )
        add(
            SECTION,
            f"Predict p99 at 1 caller ({label})",
            "ms",
            gw1.p99,
            reference_name="bare echo p99",
            reference=echo1.p99,
        )
        add(
            SECTION,
            f"Predict p50 at 64 callers ({label})",
            "ms",
            gw64.p50,
            reference_name="bare echo p50",
            reference=echo64.p50,
        )
        add(
            SECTION,
            f"Predict p99 at 64 callers ({label})",
            "ms",
            gw64.p99,
            reference_name="bare echo p99",
            reference=echo64.p99,
        )
    # The naive relay itself, and CPU per call of every server, from the same 64-caller runs.
    add(
        SECTION,
        "naive relay calls/s, 64 callers (h2load)",
        "calls/s",
        naive.rate,
        reference_name="bare echo",
        reference=echo.rate,
    )
    add(
        SECTION,
        "naive relay p50 added at 1 caller (h2load)",
        "ms",
        naive_one.p50,
        reference_name="Launch HTTP p50 (h2load --h1)",
        reference=launch_one.p50,
        compare="difference",
    )
    add(
        SECTION,
        "gateway CPU per Predict call (h2load, 64 callers)",
        "µs",
        gw.cpu_us,
        reference_name="bare echo CPU per call",
        reference=echo.cpu_us,
    )
    add(
        SECTION,
        "naive relay CPU per Predict call (h2load, 64 callers)",
        "µs",
        naive.cpu_us,
        reference_name="bare echo CPU per call",
        reference=echo.cpu_us,
    )
    add(
        SECTION,
        "gateway cores per 10,000 Predict calls/s (CPU per call x 10,000)",
        "cores",
        [us / 100 for us in gw.cpu_us],
        reference_name="naive relay",
        reference=[us / 100 for us in naive.cpu_us],
        note="one process uses at most about one core (the event loop); serve --workers N for more",
    )
    for name, behind in (("gateway", gw), ("naive relay", naive)):
        add(
            SECTION,
            f"local Launch CPU per call behind the {name}",
            "µs",
            behind.upstream_cpu_us,
            reference_name="called directly",
            reference=launch.cpu_us,
        )
    errors = watch.errors + driver_errors
    add(
        SECTION,
        "errors during the unary runs (gateway counters, drivers)",
        "calls",
        [float(sum(errors.values()))],
        target="0",
        check=lambda f: f.value.median == 0,
        note=", ".join(f"{k}: {v}" for k, v in errors.items()),
    )
    harness.report.note(
        f"unary: {watch.cancelled_at_stop} gateway calls ended CANCELLED because h2load reset them when its time "
        "was up (at most 64 per run); not counted as errors"
    )
