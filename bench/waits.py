"""Async waits: many concurrent WaitAsyncTask calls on a few tasks; the polls they cause, how fast they return, memory.

A run submits `wait_tasks` tasks of `bench.endpoints:gated` (they finish when a file appears),
starts the waiters round-robin over the tasks, 1,000 at a time (the first thousand start every
task's poll loop; a burst of thousands at once would meet grpc-core's pending-request limit, see
open_streams), waits until the gateway counts them all in flight, then opens the gate. Each task
stamps the moment it finished; a waiter's delay is its return time minus its task's stamp.

The reference is a run with one waiter per task whose gate opens after the same time since its
first waiter, so both runs' poll loops are equally old when the tasks finish: polls per task
should not grow with the number of waiters. The delays are as one Python client process sees
them, so they include that client's own queueing when thousands of answers arrive at once; the
first waiter of each task to return shows that part least. Each run has its own gateway and
local Launch server, so memory is not inflated by earlier runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2

from bench import drivers
from bench.harness import Harness
from bench.processes import Gateway, gateway_config, handled_codes, start_echo, start_gateway, start_local_launch
from bench.stats import percentile
from launch_gateway.server.settings import PollSettings
from launch_gateway.server.workers import free_port
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

SECTION = "async waits"
POLL_ROUTE = "/v1/async-tasks/{task_id}"
CHANNELS = 10
SUBMITTERS = 64
RAMP = 1_000  # waiters started at once
SETTLE = 0.5  # seconds between the last waiter in flight and the gate at the earliest
MB = 1024 * 1024
CALLBACK_ENV = {"LAUNCH_GATEWAY_HANDLE_SECRETS": "bench-handle-secret-0123456789"}  # the receiver seals with them

Reply = tuple[float, str, pb.WaitAsyncTaskResponse | None]


@dataclass
class WaitRun:
    lead: float  # seconds from the first waiter to the gate opening
    setup_seconds: float  # from the first waiter to all in flight
    polls_per_task: float
    upstream_gets_per_task: float
    setup_polls_per_second: float  # upstream polls per second while the waiters were being started
    delays_ms: list[float]
    first_delays_ms: list[float]  # the first waiter of each task to return
    idle_rss: int
    waiting_rss: int
    peak_rss: int
    errors: Counter[str]


def poll_interval_at(seconds: float, poll: PollSettings) -> float:
    """The interval between a task's polls `seconds` after its poll loop started (the default backoff)."""
    interval, elapsed = poll.initial, 0.0
    while elapsed + interval <= seconds and interval < poll.max:
        elapsed += interval
        interval = min(interval * poll.multiplier, poll.max)
    return interval


async def _in_flight(gateway: Gateway) -> float:
    return (await gateway.metrics()).value("gateway_inflight_calls", kind="wait")


async def _wait_until_in_flight(gateway: Gateway, count: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await _in_flight(gateway) >= count:
            return True
        await asyncio.sleep(0.05)
    return False


def callback_config(upstream_url: str) -> str:
    """A gateway whose callback receiver Launch calls when a task ends (`callbacks.public_url`)."""
    port = free_port("127.0.0.1")
    receiver = {"public_url": f"http://127.0.0.1:{port}", "receiver_port": port}
    return gateway_config(upstream_url, callbacks=receiver)


async def _wait_for_poll(gateway: Gateway, polls: float, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await gateway.metrics()).value("gateway_async_wait_polls_total") > polls:
            return True
        await asyncio.sleep(0.01)
    return False


async def wait_run(
    harness: Harness, tasks: int, waiters: int, tag: str, lead: float | None = None, callbacks: bool = False
) -> WaitRun:
    """One run with its own servers: `waiters` WaitAsyncTask calls spread over `tasks` tasks.

    The gate opens `lead` seconds after the first waiter started; None: `sizes.wait_lead`, or
    later if the waiters took longer to get in flight. With `callbacks` the gateway runs its callback
    receiver, so Launch's callback (the local server's async endpoints have the hook) wakes the waits.
    """
    launch = await start_local_launch(harness.scratch, name=f"local-launch-{tag}")
    harness.track(launch.server)
    config = callback_config(launch.url) if callbacks else gateway_config(launch.url)
    gateway = await start_gateway(harness.scratch, config, name=f"gateway-{tag}", env=CALLBACK_ENV)
    harness.track(gateway.server)
    gate = harness.scratch / f"gate-{uuid.uuid4().hex}"
    channels = drivers.open_channels(gateway.address, CHANNELS)
    stubs = [pb_grpc.EndpointServiceStub(channel) for channel in channels]
    errors: Counter[str] = Counter()
    try:
        idle_rss = gateway.server.rss()
        before = await gateway.metrics()
        request = pb.EndpointRequest(args_json=json.dumps({"gate": str(gate)}))
        slots = asyncio.Semaphore(SUBMITTERS)

        async def submit(i: int) -> str:
            async with slots:
                reply = await stubs[i % CHANNELS].SubmitAsync(
                    pb.SubmitAsyncRequest(endpoint_name="gated", request=request), timeout=30
                )
                return reply.task_id

        task_ids = await asyncio.gather(*(submit(i) for i in range(tasks)))
        timeout = duration_pb2.Duration(seconds=120)

        async def wait(i: int, task_id: str) -> Reply:
            try:
                reply = await stubs[i % CHANNELS].WaitAsyncTask(
                    pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout), timeout=150
                )
            except grpc.aio.AioRpcError as exc:
                errors[f"WaitAsyncTask {exc.code().name} (client)"] += 1
                return time.monotonic(), task_id, None
            return time.monotonic(), task_id, reply

        first = time.monotonic()
        polls_at_start = (await gateway.metrics()).value("gateway_async_wait_polls_total")
        calls: list[asyncio.Future[Reply]] = []
        for start in range(0, waiters, RAMP):
            end = min(waiters, start + RAMP)
            calls.extend(asyncio.ensure_future(wait(i, task_ids[i % tasks])) for i in range(start, end))
            if not await _wait_until_in_flight(gateway, len(calls), within=60):
                errors[f"fewer than {len(calls)} waiters in flight within 60 s"] += 1
                break
        all_in = time.monotonic()
        polls_in_setup = (await gateway.metrics()).value("gateway_async_wait_polls_total") - polls_at_start
        waiting_rss = gateway.server.rss()
        opens_at = first + lead if lead is not None else max(first + harness.sizes.wait_lead, all_in + SETTLE)
        await asyncio.sleep(max(0.0, opens_at - time.monotonic()))
        gate.touch()
        opened = time.monotonic()
        results = await asyncio.gather(*calls)
        after = await gateway.metrics()
        delays, firsts = [], {}
        for returned, task_id, reply in results:
            if reply is None:
                continue
            if reply.response.status != pb.TASK_STATUS_SUCCESS:
                errors[f"task status {pb.TaskStatus.Name(reply.response.status)}"] += 1
                continue
            delay = (returned - json.loads(reply.response.result)["finished"]) * 1000.0
            delays.append(delay)
            firsts[task_id] = min(delay, firsts.get(task_id, delay))
        for method in ("SubmitAsync", "WaitAsyncTask"):
            errors.update({f"{method} {c}": n for c, n in handled_codes(before, after, method).items() if c != "OK"})

        def per_task(name: str, **labels: str) -> float:
            return (after.value(name, **labels) - before.value(name, **labels)) / tasks

        return WaitRun(
            lead=opened - first,
            setup_seconds=all_in - first,
            polls_per_task=per_task("gateway_async_wait_polls_total"),
            upstream_gets_per_task=per_task("gateway_upstream_requests_total", route=POLL_ROUTE),
            setup_polls_per_second=polls_in_setup / max(all_in - first, 1e-9),
            delays_ms=delays,
            first_delays_ms=list(firsts.values()),
            idle_rss=idle_rss,
            waiting_rss=waiting_rss,
            peak_rss=gateway.server.peak_rss(),
            errors=errors,
        )
    finally:
        await drivers.close_channels(channels)
        await harness.stop(gateway.server)
        await harness.stop(launch.server)
        gate.unlink(missing_ok=True)


async def callback_latency_run(harness: Harness, tasks: int, tag: str) -> list[float]:
    """Delays of single waits, one task at a time: what a wake-up itself costs, with no fan-out to answer.

    Each task gets one waiter on a gateway with the receiver on and the default backoff, and its gate
    opens once the waiter's first poll has been taken; the delay is the waiter's return minus the
    task's finish stamp, in ms.
    """
    launch = await start_local_launch(harness.scratch, name=f"local-launch-{tag}")
    harness.track(launch.server)
    gateway = await start_gateway(harness.scratch, callback_config(launch.url), name=f"gateway-{tag}", env=CALLBACK_ENV)
    harness.track(gateway.server)
    channel = grpc.aio.insecure_channel(gateway.address)
    stub = pb_grpc.EndpointServiceStub(channel)
    delays: list[float] = []
    try:
        for i in range(tasks):
            gate = harness.scratch / f"gate-{uuid.uuid4().hex}"
            request = pb.EndpointRequest(args_json=json.dumps({"gate": str(gate)}))
            task_id = (await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="gated", request=request))).task_id
            polls = (await gateway.metrics()).value("gateway_async_wait_polls_total")
            timeout = duration_pb2.Duration(seconds=30)
            call = stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout), timeout=60)
            reply = asyncio.ensure_future(call)
            if not await _wait_for_poll(gateway, polls, within=10):
                raise RuntimeError("the wait took no poll within 10 s")
            await asyncio.sleep(0.3 + 0.05 * (i % 10))  # into the backoff's longer pauses, at varying phases
            gate.touch()
            answer = await reply
            delays.append((time.monotonic() - json.loads(answer.response.result)["finished"]) * 1000.0)
            gate.unlink(missing_ok=True)
    finally:
        await channel.close()
        await harness.stop(gateway.server)
        await harness.stop(launch.server)
    return delays


async def floor_run(harness: Harness, calls: int) -> tuple[int, int]:
    """RSS of a bare grpc.aio server (bench/echo_server.py) idle and with `calls` calls pending in it,
    opened as the waiters are (same channels, `RAMP` at a time): what grpc.aio holds per call in flight."""
    echo = await start_echo(harness.scratch)
    harness.track(echo.server)
    channels = drivers.open_channels(echo.address, CHANNELS)
    stubs = [pb_grpc.EndpointServiceStub(channel) for channel in channels]
    pending: list[asyncio.Future[object]] = []
    try:
        idle = echo.server.rss()
        for start in range(0, calls, RAMP):
            end = min(calls, start + RAMP)
            request = pb.WaitAsyncTaskRequest(task_id="floor")
            pending.extend(asyncio.ensure_future(stubs[i % CHANNELS].WaitAsyncTask(request)) for i in range(start, end))
            await _settled(echo.server.rss, within=30)
        return idle, echo.server.rss()
    finally:
        for call in pending:
            call.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await drivers.close_channels(channels)
        await harness.stop(echo.server)


async def _settled(rss: Callable[[], int], within: float) -> None:
    """Until RSS stops growing (two readings 0.5 s apart within 0.5 %): the calls are in, nothing counts them."""
    deadline = time.monotonic() + within
    last = rss()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss()
        if abs(now - last) <= last * 0.005:
            return
        last = now


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    tasks, many = sizes.wait_tasks, sizes.wait_waiters
    one: list[WaitRun] = []
    shared: list[WaitRun] = []
    woken: list[WaitRun] = []
    for r in range(sizes.rounds):
        shared.append(await wait_run(harness, tasks, many, f"waits-{many // tasks}x-{r}"))
        one.append(await wait_run(harness, tasks, tasks, f"waits-1x-{r}", lead=shared[-1].lead))
        lead = shared[-1].lead
        woken.append(await wait_run(harness, tasks, many, f"waits-callback-{r}", lead=lead, callbacks=True))
    single = [await callback_latency_run(harness, sizes.callback_tasks, f"waits-callback-single-{r}") for r in range(2)]
    floors = [await floor_run(harness, many) for _ in range(2)]

    add = harness.report.add
    label = f"{many:,} waiters on {tasks:,} tasks"
    ref = f"{tasks:,} waiters (1 per task)"
    leads = ", ".join(f"{r.lead:.1f}" for r in shared)
    add(
        SECTION,
        f"upstream polls per task, {label}",
        "polls",
        [r.polls_per_task for r in shared],
        reference_name=ref,
        reference=[r.polls_per_task for r in one],
        target="<= 1.1 x (no growth with waiters)",
        check=lambda f: f.ratio is not None and f.ratio.median <= 1.1,
        note=f"tasks finish {leads} s after the first waiter in both; backoff 50 ms x1.5 up to 1 s",
    )
    add(
        SECTION,
        f"upstream GETs per task, {label}",
        "GETs",
        [r.upstream_gets_per_task for r in shared],
        reference_name=ref,
        reference=[r.upstream_gets_per_task for r in one],
    )

    def delays(
        title: str,
        runs: list[list[float]],
        ref_name: str = "",
        refs: list[list[float]] | None = None,
        quantiles: tuple[int, ...] = (50, 99),
        p99_target: bool = False,
        note: str = "",
    ) -> None:
        """Delay percentiles, one row each; `title` and `ref_name` take the percentile's name as `{q}`."""
        for q in quantiles:
            name = "max" if q == 100 else f"p{q}"
            add(
                SECTION,
                "task finished -> " + title.format(q=name),
                "ms",
                [percentile(run, q) for run in runs],
                reference_name=ref_name.format(q=name),
                reference=None if refs is None else [percentile(run, q) for run in refs],
                target="<= 50 ms" if p99_target and q == 99 else "",
                check=(lambda f: f.value.median <= 50) if p99_target and q == 99 else None,
                note=note,
            )

    polled, called = [r.delays_ms for r in shared], [r.delays_ms for r in woken]
    everyone = (50, 99, 100)
    only = "one Python client process receives every answer; polling only"
    delays(f"waiter returned, {{q}}, {label}", polled, f"{ref}, {{q}}", [r.delays_ms for r in one], everyone, note=only)
    woke = "the receiver on (callbacks.public_url): each task's callback wakes its loop"
    title = f"waiter returned, {{q}}, {label}, Launch's callback"
    delays(title, called, "polling only, {q}", polled, everyone, p99_target=True, note=woke)
    alone = f"{sizes.callback_tasks} tasks one after another, each gate opened 0.3-0.75 s into its wait"
    delays("its one waiter returned, {q}, one task at a time, Launch's callback", single, p99_target=True, note=alone)
    firsts_polled = [r.first_delays_ms for r in shared]
    firsts_woken = [r.first_delays_ms for r in woken]
    delays("first of its waiters returned, {q}, Launch's callback", firsts_woken, "polling only, {q}", firsts_polled)
    add(
        SECTION,
        f"upstream polls per task, {label}, Launch's callback",
        "polls",
        [r.polls_per_task for r in woken],
        reference_name="polling only",
        reference=[r.polls_per_task for r in shared],
        target="<= 1.1 x (a wake-up adds at most one poll)",
        check=lambda f: f.ratio is not None and f.ratio.median <= 1.1,
    )
    add(
        SECTION,
        f"task finished -> waiter returned, p99, {label}, in poll intervals",
        "ms",
        [percentile(r.delays_ms, 99) for r in shared],
        reference_name="the poll interval when the task ended",
        reference=[poll_interval_at(r.lead, PollSettings()) * 1000 for r in shared],
        target="<= 1 x poll interval",
        check=lambda f: f.ratio is not None and f.ratio.median <= 1.0,
        note="the loops start with the first waiters; the interval is the default backoff's at the gate",
    )
    delays("first of its waiters returned, {q}", firsts_polled, f"{ref}, {{q}}", [r.first_delays_ms for r in one])
    add(
        SECTION,
        f"gateway RSS with {label} in flight",
        "MB",
        [r.waiting_rss / MB for r in shared],
        reference_name="idle gateway",
        reference=[r.idle_rss / MB for r in shared],
        target="<= 200 MB",
        check=lambda f: f.value.median <= 200,
    )
    add(
        SECTION,
        f"bare grpc.aio server RSS with {many:,} calls pending",
        "MB",
        [busy / MB for _, busy in floors],
        reference_name="the same server idle",
        reference=[idle / MB for idle, _ in floors],
        note="bench/echo_server.py's WaitAsyncTask never answers: grpc.aio's own memory per call in flight",
    )
    add(
        SECTION,
        f"gateway RSS per waiter over idle, {label}",
        "KB",
        [(r.waiting_rss - r.idle_rss) / many / 1024 for r in shared],
        reference_name="bare grpc.aio per pending call over idle",
        reference=[(busy - idle) / many / 1024 for idle, busy in floors],
        note="the 200 MB target would need ~13 KB per waiter: below what grpc.aio itself holds",
    )
    add(
        SECTION,
        f"gateway peak RSS (VmHWM), {label}",
        "MB",
        [r.peak_rss / MB for r in shared],
        reference_name=ref,
        reference=[r.peak_rss / MB for r in one],
    )
    add(
        SECTION,
        f"time to get {label} in flight",
        "s",
        [r.setup_seconds for r in shared],
        reference_name=ref,
        reference=[r.setup_seconds for r in one],
        note=f"started {RAMP:,} at a time",
    )
    add(
        SECTION,
        "upstream polls/s while the waiters were starting",
        "polls/s",
        [r.setup_polls_per_second for r in shared],
        reference_name=ref,
        reference=[r.setup_polls_per_second for r in one],
    )
    errors: Counter[str] = Counter()
    for run in (*one, *shared, *woken):
        errors.update(run.errors)
    add(
        SECTION,
        "errors during the wait runs",
        "",
        [float(sum(errors.values()))],
        target="0",
        check=lambda f: f.value.median == 0,
        note=", ".join(f"{k}: {v}" for k, v in errors.items()),
    )
