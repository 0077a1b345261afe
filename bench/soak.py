"""Soak: mixed traffic through a real gateway in front of a failing local Launch server, invariants checked.

    python -m bench.soak --seconds 180 --concurrency 32 [--faults SPEC] [--seed N]

One process runs the local Launch server (injecting `Faults`), a gateway in front of it, and
`concurrency` workers calling the gateway with the grpc.aio stub: Predict (echo, fail), SubmitAsync then
WaitAsyncTask, GetAsyncTask, StreamPredict (count, n=10), GetEndpoint, and some calls the worker cancels
midway. Every call sends its own `x-request-id`, which the gateway passes upstream, so each call is judged
against the faults injected into *its* upstream requests (`RequestRecord.faults`), not the run's totals:

1. statuses: every call ends within its deadline + slack with OK (and the right answer) or a code that its
   faults allow: UNAVAILABLE (502/503, cut bodies and streams), RESOURCE_EXHAUSTED with RetryInfo (429),
   INTERNAL saying what was wrong (bad JSON, wrong content type), DEADLINE_EXCEEDED, CANCELLED (only the
   soak's own cancellations); never UNKNOWN, never a hang;
2. tasks: each SubmitAsync gives a task id or an error; each id given is unique, exists upstream and is
   found by WaitAsyncTask afterwards; no SubmitAsync reached the upstream twice; tasks created without an
   id given are at most the failed submits that may have created one (the documented hard case);
3. streams: events arrive in order and stand before an error; a cut stream ends UNAVAILABLE "truncated"
   after the events sent, a dropped one ends OK, an untouched one has all its events;
4. resources: after the load, in-flight gauges, concurrency leases, wait loops and drain sets are empty,
   sockets and asyncio tasks are back to their level before it and RSS grew little (`check_resources`).

The gateway runs with its circuit breaker disabled (upstream.breaker_failures = 0), so that every call
reaches the upstream and its faults, and with short timeouts, so that stalls end in DEADLINE_EXCEEDED.
Callers are one tenant whose rate limit and concurrency caps are too high to bind, so that every call
takes and gives back a lease, and task ids are signed handles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.server.app import GatewayServer
from launch_gateway.server.settings import build_settings
from launch_gateway.server.upstream.http_errors import code_for_http_status
from launch_gateway.testing.local_launch import Faults, LocalLaunchServer, RequestRecord, parse_fault
from launch_gateway.testing.local_launch.faults import retry_after_header
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

Status = grpc.StatusCode

DEADLINE = 2.0  # every call's deadline, in seconds
SLACK = 1.0  # a call that has no status by DEADLINE + SLACK counts as hung
WAIT_TIMEOUT = 1.5  # WaitAsyncTask's own timeout, inside the deadline
STREAM_EVENTS = 10  # StreamPredict asks count for this many events
CANCEL_RATE = 0.04  # share of calls the soak cancels midway
PHASE_SECONDS = 1.0  # how often the server switches between the faults and their alternate
GATEWAY_SETTINGS: dict[str, Any] = {
    "server": {"port": 0, "grace_period": 1.0},
    "metrics": {"enabled": False},
    "log": {"access": False},
    # No breaker: an open circuit would answer UNAVAILABLE without reaching the upstream and its faults.
    "upstream": {"breaker_failures": 0},
    # Shorter than the callers' deadline, so a stalled upstream ends in the gateway's DEADLINE_EXCEEDED.
    "timeouts": {"sync": 1.0, "submit": 1.0, "poll": 1.0, "stream_idle": 0.5},
}
# One tenant, so that every call passes the whole edge: its key, a rate limit and concurrency caps set too
# high to bind (a RESOURCE_EXHAUSTED of the gateway's own is then a violation), signed task handles.
SOAK_KEY = "soak-gateway-key-0123456789"
LAUNCH_KEY = "soak-launch-key-0123456789"
GATEWAY_ENV = {"SOAK_LAUNCH_KEY": LAUNCH_KEY, "LAUNCH_GATEWAY_HANDLE_SECRETS": "soak-handle-secret-0123456789abcdef"}
TENANT: dict[str, Any] = {
    "api_key_hashes": [hash_key(SOAK_KEY)],
    "endpoints": ["*"],
    "upstream": "service",
    "upstream_key_env": "SOAK_LAUNCH_KEY",
    "rate": {"per_second": 1_000_000, "burst": 1_000_000},
    "max_unary": 100_000,
    "max_streams": 100_000,
    "max_waits": 100_000,
}
AUTHORIZATION = ("authorization", f"Bearer {SOAK_KEY}")
# The default mix: a little of everything Launch and its proxies do wrong; streams are dropped after 5
# events, and in every other phase (the alternate) cut mid-event instead.
DEFAULT_FAULTS = (
    "latency=0.005,latency_jitter=0.005,error=503:0.05,throttle_rate=0.03,retry_after=1,"
    "cut_body_rate=0.02,bad_json_rate=0.01,drop_stream_after=5,stall=1.5,stall_rate=0.01,seed=7"
)

CUT_FAULTS = frozenset({"cut_body", "cut_body_after_create", "cut_stream"})
BAD_OUTPUT_FAULTS = frozenset({"bad_json", "wrong_content_type"})
# What an INTERNAL message must say about bad upstream output (server/upstream/launch_api.py, server/service.py).
BAD_OUTPUT_WORDS = ("invalid JSON", "not text/event-stream", "is not JSON")


def default_faults(seed: int = 7) -> tuple[Faults, Faults]:
    """The default mix and its alternate (the same, but streams cut mid-event rather than dropped)."""
    faults = Faults(**{**parse_fault(DEFAULT_FAULTS), "seed": seed})
    return faults, replace(faults, cut_stream_mid_event=True)


# --- resources -----------------------------------------------------------------------------------------

_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def _tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) for every TCP socket this process can see."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/self/net/{name}") as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                ports = int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)
                table[inode] = (*ports, _TCP_STATES.get(state, state))
    return table


def _socket_inodes() -> list[int]:
    inodes = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.append(int(target[8:-1]))
    return inodes


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Resources:
    """What the process holds at one moment; the upstream's both ends are in this process."""

    sockets: int  # every socket fd (TCP, Unix, grpc-core's own)
    pool: int  # gateway -> Launch connections (client side): aiohttp's keep-alive pool and requests in flight
    upstream_server: int  # the same connections' Launch side (each has an aiohttp handler task)
    other_sockets: int  # sockets - the two above: listeners, the gRPC channel, grpc-core, Unix sockets
    close_wait: int  # TCP sockets whose peer closed and that nobody closed: a leak
    tasks: int  # asyncio.all_tasks()
    inflight: int  # gateway_inflight_calls, all kinds
    leases: int  # ConcurrencyLimiter.total_in_flight()
    wait_loops: int  # TaskWaits.active_loops
    drain: int  # Drain's unary and stream sets
    rss_kib: int  # VmRSS
    max_rss_kib: int  # ru_maxrss

    @property
    def gateway_idle(self) -> bool:
        return self.inflight == 0 and self.leases == 0 and self.wait_loops == 0 and self.drain == 0


def measure(gateway: GatewayServer, launch: LocalLaunchServer) -> Resources:
    tcp = _tcp_sockets()
    inodes = _socket_inodes()
    pool = upstream_server = close_wait = 0
    for inode in inodes:
        local, remote, state = tcp.get(inode, (0, 0, "unix"))
        pool += remote == launch.port
        upstream_server += local == launch.port and state != "LISTEN"
        close_wait += state == "CLOSE_WAIT"
    registry = gateway.metrics.registry
    inflight = sum(
        registry.get_sample_value("gateway_inflight_calls", {"kind": kind}) or 0.0
        for kind in ("unary", "stream", "wait")
    )
    return Resources(
        sockets=len(inodes),
        pool=pool,
        upstream_server=upstream_server,
        other_sockets=len(inodes) - pool - upstream_server,
        close_wait=close_wait,
        tasks=len(asyncio.all_tasks()),
        inflight=int(inflight),
        leases=gateway.concurrency.total_in_flight(),
        wait_loops=gateway.waits.active_loops,
        drain=len(gateway.drain.unary) + len(gateway.drain.streams),
        rss_kib=_rss_kib(),
        max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def rss_allowance_kib(tasks_created: int) -> int:
    """RSS growth allowed: 48 MiB for the allocator's arenas and grpc-core's buffers reaching their working
    size (about 5 MiB in the first seconds), plus 4 KiB per async task, which the local Launch server keeps
    with its result for good (about 1.5 KiB each measured; tracemalloc shows nothing in gateway/ growing)."""
    return 48 * 1024 + 4 * tasks_created


def check_resources(before: Resources, after: Resources, concurrency: int, tasks_created: int) -> list[str]:
    """Why `after` is not back at `before`'s level, with these allowances:

    - gateway state (in-flight gauge, leases, wait loops, drain sets): exactly 0;
    - the upstream pool: at most `concurrency + 4` connections, as a worker has one call in flight and a
      call one upstream request at a time (+ readiness probe and lookups). aiohttp keeps idle connections
      for 30 s, so the pool need not shrink to its level before, but a leak grows past any bound;
    - other sockets: +2 (grpc may have replaced the channel's connection);
    - asyncio tasks: + the Launch-side connections added (aiohttp's server runs a task per connection) + 2;
    - CLOSE_WAIT sockets: 0, a socket its peer closed must be closed here too;
    - RSS: `rss_allowance_kib`.
    """
    problems = []
    for name in ("inflight", "leases", "wait_loops", "drain"):
        if getattr(after, name):
            problems.append(f"{name} is {getattr(after, name)}, not 0")
    if after.pool > concurrency + 4:
        problems.append(f"{after.pool} upstream connections open, more than {concurrency} callers + 4 need")
    if after.other_sockets > before.other_sockets + 2:
        problems.append(f"other sockets {before.other_sockets} -> {after.other_sockets} (+2 allowed)")
    task_allowance = max(after.upstream_server - before.upstream_server, 0) + 2
    if after.tasks > before.tasks + task_allowance:
        problems.append(f"asyncio tasks {before.tasks} -> {after.tasks} (+{task_allowance} allowed)")
    if after.close_wait:
        problems.append(f"{after.close_wait} sockets in CLOSE_WAIT")
    growth, allowed = after.rss_kib - before.rss_kib, rss_allowance_kib(tasks_created)
    if growth > allowed:
        problems.append(f"RSS grew {growth / 1024:.1f} MiB, more than the {allowed / 1024:.1f} MiB allowed")
    return problems


# --- calls and what they may end with ------------------------------------------------------------------


class UpstreamLog:
    """The local server's records by x-request-id; it empties the server's live list as it reads, so a long
    soak keeps no more than the calls in flight."""

    def __init__(self, launch: LocalLaunchServer) -> None:
        self._records = launch.records
        self._by_id: dict[str, list[RequestRecord]] = {}

    def take(self, request_id: str) -> list[RequestRecord]:
        for record in self._records:
            request_id_seen = record.headers.get("x-request-id")
            if request_id_seen:
                self._by_id.setdefault(request_id_seen, []).append(record)
        self._records.clear()
        return self._by_id.pop(request_id, [])

    @property
    def unclaimed(self) -> int:
        """Records of calls that had ended when they arrived (a cancelled call's request, still on its way)."""
        return sum(map(len, self._by_id.values()))


@dataclass
class Call:
    """One RPC as the soak saw it, and the faults injected into the upstream requests it caused."""

    rpc: str
    code: Status | None  # None: no status within DEADLINE + SLACK
    message: str
    elapsed: float
    cancelled: bool  # the soak cancelled it
    faults: frozenset[str]
    upstream: list[RequestRecord]
    retry_delay: float | None = None  # RetryInfo, when the status carried one
    events: list[int] = field(default_factory=list)  # StreamPredict: each event's "i", in arrival order


def allowed_codes(faults: Iterable[str]) -> set[Status]:
    """The error codes the injected faults may cause (DEADLINE_EXCEEDED is always allowed)."""
    codes = {Status.DEADLINE_EXCEEDED}
    for fault in faults:
        if fault.startswith("error_"):
            codes.add(grpc.StatusCode[code_for_http_status(int(fault.removeprefix("error_"))).name])
        elif fault == "throttle":
            codes.add(Status.RESOURCE_EXHAUSTED)
        elif fault in CUT_FAULTS:
            codes.add(Status.UNAVAILABLE)
        elif fault in BAD_OUTPUT_FAULTS:
            codes.add(Status.INTERNAL)
    return codes


def status_problem(call: Call, retry_after: float) -> str | None:
    """Why the way `call` ended breaks invariant 1, or None."""
    if call.code is None:
        return f"{call.rpc}: no status within {DEADLINE + SLACK:g} s"
    if call.elapsed > DEADLINE + SLACK:
        return f"{call.rpc}: {call.code.name} after {call.elapsed:.2f} s, past the deadline + slack"
    code, injected = call.code, sorted(call.faults) or ["nothing"]
    if code in (Status.OK, Status.DEADLINE_EXCEEDED):
        return None
    if code == Status.CANCELLED:
        return None if call.cancelled else f"{call.rpc}: CANCELLED ({call.message!r}) that the soak did not ask for"
    if code not in allowed_codes(call.faults):
        return f"{call.rpc}: {code.name} ({call.message!r}) with {', '.join(injected)} injected"
    if code == Status.RESOURCE_EXHAUSTED and call.retry_delay != float(retry_after_header(retry_after)):
        return f"{call.rpc}: RESOURCE_EXHAUSTED with RetryInfo {call.retry_delay}, not Retry-After's {retry_after:g}"
    if code == Status.INTERNAL and not any(word in call.message for word in BAD_OUTPUT_WORDS):
        return f"{call.rpc}: INTERNAL that does not say what was wrong: {call.message!r}"
    return None


def stream_problem(call: Call, drop_after: int | None) -> str | None:
    """Why a StreamPredict's events and end break invariant 3, or None."""
    got = len(call.events)
    if call.events != list(range(got)):
        return f"events out of order or missing: {call.events}"
    if call.cancelled and call.code == Status.CANCELLED:
        return None
    if "cut_stream" in call.faults:
        if call.code != Status.UNAVAILABLE or "truncated" not in call.message or got != drop_after:
            return f"cut after {drop_after} events, ended {call.code} {call.message!r} with {got} events"
    elif "drop_stream" in call.faults:
        if call.code != Status.OK or got != drop_after:
            return f"dropped after {drop_after} events, ended {call.code} with {got} events"
    elif call.code == Status.OK and got != STREAM_EVENTS:
        return f"ended OK with {got} of {STREAM_EVENTS} events and no drop injected"
    elif call.code not in (Status.OK, Status.DEADLINE_EXCEEDED, None) and got:
        return f"{call.code} after {got} events, with {sorted(call.faults)} injected (refusals come before events)"
    return None


def _event_number(reply: pb.StreamPredictResponse) -> int:
    """count's {"i": i}; -1 for anything else (then the events are out of order)."""
    try:
        number = json.loads(reply.response.result)["i"]
    except (ValueError, KeyError, TypeError):
        return -1
    return number if isinstance(number, int) else -1


def _retry_delay(trailers: Any) -> float | None:
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class Traffic:
    """Runs calls against the gateway, records how each ended, and notes what breaks an invariant."""

    def __init__(self, stub: pb_grpc.EndpointServiceAsyncStub, log: UpstreamLog, faults: Faults) -> None:
        self._stub = stub
        self._log = log
        self._retry_after = faults.retry_after
        self._drop_after = faults.drop_stream_after
        self._ids = itertools.count()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.violations: dict[int, list[str]] = {1: [], 2: [], 3: []}
        self.slowest = 0.0
        self.deadlines_without_stall = 0
        self.given: list[str] = []  # task ids SubmitAsync gave
        self.ambiguous_submits = 0  # failed submits that may have created a task
        self.created_without_id = 0  # failed submits whose task was created for sure (cut_body_after_create)
        self.streams: Counter[str] = Counter()
        self.events_before_errors = 0

    def violate(self, invariant: int, problem: str) -> None:
        self.violations[invariant].append(problem)

    def _metadata(self) -> tuple[str, tuple[tuple[str, str], tuple[str, str]]]:
        request_id = f"soak-{next(self._ids)}"
        return request_id, (AUTHORIZATION, ("x-request-id", request_id))

    def _record(
        self, rpc: str, request_id: str, code: Status | None, message: str, elapsed: float, **extra: Any
    ) -> Call:
        upstream = self._log.take(request_id)
        faults = frozenset(fault for record in upstream for fault in record.faults)
        call = Call(rpc, code, message, elapsed, faults=faults, upstream=upstream, **extra)
        self.calls[(rpc, code.name if code else "HUNG")] += 1
        self.slowest = max(self.slowest, elapsed)
        if code == Status.DEADLINE_EXCEEDED and "stall" not in faults:
            self.deadlines_without_stall += 1
        problem = status_problem(call, self._retry_after)
        if problem:
            self.violate(1, problem)
        return call

    async def unary(self, rpc: str, request: Any, cancel_after: float | None = None) -> tuple[Call, Any]:
        """Call a unary RPC with the soak's deadline; `cancel_after` seconds cancels it."""
        request_id, metadata = self._metadata()
        call = getattr(self._stub, rpc)(request, timeout=DEADLINE, metadata=metadata)
        loop = asyncio.get_running_loop()
        timer = None if cancel_after is None else loop.call_later(cancel_after, call.cancel)
        started = time.perf_counter()
        response, message, trailers = None, "", None
        code: Status | None = Status.OK
        try:
            async with asyncio.timeout(DEADLINE + SLACK):
                response = await call
        except grpc.aio.AioRpcError as exc:
            code, message, trailers = exc.code(), exc.details() or "", exc.trailing_metadata()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if timer is None or (task is not None and task.cancelling()):
                raise
            code = Status.CANCELLED
        except TimeoutError:
            call.cancel()
            code = None
        finally:
            if timer is not None:
                timer.cancel()
        elapsed = time.perf_counter() - started
        extra = {"cancelled": cancel_after is not None, "retry_delay": _retry_delay(trailers)}
        return self._record(rpc, request_id, code, message, elapsed, **extra), response

    async def stream(self, request: pb.StreamPredictRequest, cancel_at: int | None = None) -> Call:
        """StreamPredict with the soak's deadline; `cancel_at` events in, the soak cancels it."""
        request_id, metadata = self._metadata()
        call = self._stub.StreamPredict(request, timeout=DEADLINE, metadata=metadata)
        started = time.perf_counter()
        events: list[int] = []
        code: Status | None = Status.OK
        message, trailers = "", None
        try:
            async with asyncio.timeout(DEADLINE + SLACK):
                async for reply in call:
                    events.append(_event_number(reply))
                    if cancel_at is not None and len(events) >= cancel_at:
                        call.cancel()
                        break
                code = await call.code()
                message = await call.details() or ""
        except grpc.aio.AioRpcError as exc:
            code, message, trailers = exc.code(), exc.details() or "", exc.trailing_metadata()
        except TimeoutError:
            call.cancel()
            code = None
        elapsed = time.perf_counter() - started
        cancelled = cancel_at is not None
        result = self._record(
            "StreamPredict", request_id, code, message, elapsed, cancelled=cancelled, retry_delay=_retry_delay(trailers)
        )
        result.events = events
        problem = stream_problem(result, self._drop_after)
        if problem:
            self.violate(3, f"StreamPredict: {problem}")
        if result.code == Status.OK:
            self.streams["dropped" if "drop_stream" in result.faults else "complete"] += 1
        elif result.code == Status.UNAVAILABLE and "cut_stream" in result.faults:
            self.streams["cut"] += 1
        else:
            self.streams[result.code.name if result.code else "HUNG"] += 1
        if result.code != Status.OK:
            self.events_before_errors += len(events)
        return result

    def check_answer(self, call: Call, ok: bool, what: str) -> None:
        if call.code == Status.OK and not ok:
            self.violate(1, f"{call.rpc}: OK with the wrong answer ({what})")


# --- the workload ---------------------------------------------------------------------------------------


def _request(args: dict[str, Any]) -> pb.EndpointRequest:
    return pb.EndpointRequest(args_json=json.dumps(args))


class Worker:
    """One caller: picks an operation at random (seeded), sometimes cancels it midway."""

    def __init__(self, traffic: Traffic, number: int, seed: int) -> None:
        self.t = traffic
        self.n = number
        self.rng = random.Random(seed * 1_000_003 + number)
        self.k = 0
        self.operations: list[tuple[Callable[[float | None], Awaitable[None]], int]] = [
            (self.predict_echo, 25),
            (self.predict_fail, 5),
            (self.submit_and_wait, 20),
            (self.get_task, 10),
            (self.stream, 25),
            (self.get_endpoint, 5),
        ]

    async def run(self, until: float) -> None:
        operations, weights = zip(*self.operations, strict=True)
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            self.k += 1
            cancel = self.rng.uniform(0.0, 0.03) if self.rng.random() < CANCEL_RATE else None
            await self.rng.choices(operations, weights)[0](cancel)

    async def predict_echo(self, cancel: float | None) -> None:
        args = {"worker": self.n, "k": self.k}
        request = pb.PredictRequest(endpoint_name="echo", request=_request(args))
        call, reply = await self.t.unary("Predict", request, cancel)
        if reply is not None:
            got = reply.response
            self.t.check_answer(call, got.status == pb.TASK_STATUS_SUCCESS and json.loads(got.result) == args, "echo")

    async def predict_fail(self, cancel: float | None) -> None:
        request = pb.PredictRequest(endpoint_name="fail", request=_request({"message": "soak failure"}))
        call, reply = await self.t.unary("Predict", request, cancel)
        if reply is not None:
            got = reply.response
            self.t.check_answer(call, got.status == pb.TASK_STATUS_FAILURE and "soak failure" in got.traceback, "fail")

    async def submit_and_wait(self, cancel: float | None) -> None:
        args = {"worker": self.n, "k": self.k, "delay": 0.01}
        request = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=_request(args))
        call, reply = await self.t.unary("SubmitAsync", request, cancel)
        t = self.t
        posts = sum(r.method == "POST" and r.path == "/v1/async-tasks" for r in call.upstream)
        if posts > 1:
            t.violate(2, f"SubmitAsync reached the upstream {posts} times")
        if call.code != Status.OK:
            if "cut_body_after_create" in call.faults:
                t.created_without_id += 1
            if posts and call.code in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED, None):
                t.ambiguous_submits += 1
            return
        task_id = reply.task_id
        if not task_id:
            t.violate(2, "SubmitAsync answered OK without a task id")
            return
        t.given.append(task_id)
        wait = pb.WaitAsyncTaskRequest(task_id=task_id)
        wait.timeout.FromNanoseconds(round(WAIT_TIMEOUT * 1e9))  # normalised: 1 s and 500,000,000 ns
        call, waited = await t.unary("WaitAsyncTask", wait, self.rng.uniform(0.0, 0.05) if cancel else None)
        if waited is not None:
            got = waited.response
            right = got.task_id == task_id and got.status in (pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED)
            right = right or (got.status == pb.TASK_STATUS_SUCCESS and json.loads(got.result) == args)
            t.check_answer(call, right, f"task {task_id} {pb.TaskStatus.Name(got.status)}")

    async def get_task(self, cancel: float | None) -> None:
        if not self.t.given:
            return await self.predict_echo(cancel)
        task_id = self.rng.choice(self.t.given[-256:])
        call, reply = await self.t.unary("GetAsyncTask", pb.GetAsyncTaskRequest(task_id=task_id), cancel)
        if reply is not None:
            got = reply.response
            right = got.task_id == task_id and got.status != pb.TASK_STATUS_UNDEFINED
            self.t.check_answer(call, right, f"task {task_id} {pb.TaskStatus.Name(got.status)}")
        return None

    async def stream(self, cancel: float | None) -> None:
        request = pb.StreamPredictRequest(
            endpoint_name="count", request=_request({"n": STREAM_EVENTS, "interval": 0.01})
        )
        await self.t.stream(request, self.rng.randint(1, STREAM_EVENTS - 1) if cancel else None)

    async def get_endpoint(self, cancel: float | None) -> None:
        name, kind = self.rng.choice([("echo", pb.ENDPOINT_KIND_SYNC), ("count", pb.ENDPOINT_KIND_STREAMING)])
        call, reply = await self.t.unary("GetEndpoint", pb.GetEndpointRequest(endpoint_name=name), cancel)
        if reply is not None:
            self.t.check_answer(call, reply.endpoint.name == name and reply.endpoint.kind == kind, "endpoint")


# --- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    number: int
    name: str
    problems: tuple[str, ...]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SoakReport:
    seconds: float  # of load
    concurrency: int
    faults: str
    calls: dict[tuple[str, str], int]  # (rpc, code) -> count
    faults_injected: dict[str, int]  # server.fault_counts
    invariants: tuple[Invariant, ...]
    before: Resources
    after: Resources
    settle_seconds: float
    verified_tasks: int

    @property
    def ok(self) -> bool:
        return all(invariant.ok for invariant in self.invariants)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def calls_per_second(self) -> float:
        return self.total_calls / self.seconds if self.seconds else 0.0

    def invariant(self, number: int) -> Invariant:
        return next(i for i in self.invariants if i.number == number)

    def format(self, examples: int = 5) -> str:
        lines = [
            f"soak: {self.seconds:.1f} s, {self.concurrency} workers, {self.total_calls} calls "
            f"({self.calls_per_second:.1f} calls/s)",
            f"faults: {self.faults}",
            f"gateway: breaker disabled (upstream.breaker_failures = 0), timeouts {GATEWAY_SETTINGS['timeouts']}; "
            f"callers' deadline {DEADLINE:g} s (+{SLACK:g} s slack)",
            "",
            "calls by RPC and code:",
        ]
        codes = sorted({code for _, code in self.calls}, key=lambda c: (c != "OK", c))
        rpcs = sorted({rpc for rpc, _ in self.calls})
        lines.append(f"  {'':14}" + "".join(f"{code:>20}" for code in codes))
        for rpc in rpcs:
            lines.append(f"  {rpc:14}" + "".join(f"{self.calls.get((rpc, code), 0):>20}" for code in codes))
        injected = ", ".join(f"{name} {count}" for name, count in sorted(self.faults_injected.items()))
        lines += ["", f"faults injected (server.fault_counts): {injected or 'none'}", "", "invariants:"]
        for inv in self.invariants:
            lines.append(f"  {'PASS' if inv.ok else 'FAIL'} {inv.number}. {inv.name}: {inv.summary}")
            grouped = Counter(inv.problems).most_common()
            lines += [f"       - {count}x {problem}" for problem, count in grouped[:examples]]
            if len(grouped) > examples:
                lines.append(f"       ... and {len(grouped) - examples} more kinds")
        b, a = self.before, self.after
        lines += [
            "",
            f"resources before -> after the load (settled in {self.settle_seconds:.2f} s):",
            f"  sockets {b.sockets} -> {a.sockets}: upstream pool {b.pool} -> {a.pool} connections "
            f"(allowed <= {self.concurrency + 4}), their Launch side {b.upstream_server} -> {a.upstream_server}, "
            f"other {b.other_sockets} -> {a.other_sockets}, CLOSE_WAIT {a.close_wait}",
            f"  asyncio tasks {b.tasks} -> {a.tasks}; in flight {a.inflight}, leases {a.leases}, "
            f"wait loops {a.wait_loops}, drain sets {a.drain}",
            f"  RSS {b.rss_kib / 1024:.1f} -> {a.rss_kib / 1024:.1f} MiB "
            f"({(a.rss_kib - b.rss_kib) / 1024:+.1f} MiB), max RSS {a.max_rss_kib / 1024:.1f} MiB",
        ]
        return "\n".join(lines)


async def _verify_tasks(traffic: Traffic, given: Sequence[str], concurrency: int) -> list[str]:
    """WaitAsyncTask on every task id given (faults off): each must be found, ended or with its last status."""
    problems: list[str] = []
    ids = iter(given)

    async def verify() -> None:
        for task_id in ids:
            request = pb.WaitAsyncTaskRequest(task_id=task_id, timeout=duration_pb2.Duration(seconds=1))
            call, reply = await traffic.unary("WaitAsyncTask", request)
            if reply is None:
                problems.append(f"task {task_id}: WaitAsyncTask ended {call.code} {call.message!r}")
            elif reply.response.task_id != task_id or reply.response.status == pb.TASK_STATUS_UNDEFINED:
                problems.append(f"task {task_id}: found as {reply.response.task_id} {reply.response.status}")

    await asyncio.gather(*(verify() for _ in range(concurrency)))
    return problems


async def _settle(
    gateway: GatewayServer, launch: LocalLaunchServer, done: Callable[[Resources], bool], within: float
) -> tuple[Resources, float]:
    """Measure until `done` (or `within` seconds): handlers cancelled upstream and idle sockets take a
    moment to go, and nothing signals it, so this polls (every 50 ms)."""
    started = time.perf_counter()
    while True:
        gc.collect()
        now = measure(gateway, launch)
        if done(now) or time.perf_counter() - started >= within:
            return now, time.perf_counter() - started
        await asyncio.sleep(0.05)


async def _warm_up(stub: pb_grpc.EndpointServiceAsyncStub, concurrency: int) -> None:
    """Open the channel, fill the endpoint cache and let the pool reach its working size."""
    auth = (AUTHORIZATION,)
    echo = pb.PredictRequest(endpoint_name="echo", request=_request({}))
    await asyncio.gather(*(stub.Predict(echo, timeout=10, metadata=auth) for _ in range(concurrency)))
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=_request({"delay": 0}))
    submitted = await stub.SubmitAsync(submit, timeout=10, metadata=auth)
    await stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=submitted.task_id), timeout=10, metadata=auth)
    await stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="count"), timeout=10, metadata=auth)
    request = pb.StreamPredictRequest(endpoint_name="count", request=_request({"n": 2, "interval": 0}))
    async for _ in stub.StreamPredict(request, timeout=10, metadata=auth):
        pass


async def _switch_faults(launch: LocalLaunchServer, phases: Sequence[Faults], every: float) -> None:
    """Cycle the server through `phases`, each re-seeded so that the random sequence does not repeat."""
    for n in itertools.count(1):
        await asyncio.sleep(every)
        faults = phases[n % len(phases)]
        launch.faults = faults if faults.seed is None else replace(faults, seed=faults.seed + n)


async def run_soak(
    duration: float,
    concurrency: int,
    faults: Faults,
    *,
    alternate: Faults | None = None,
    phase: float = PHASE_SECONDS,
    seed: int = 7,
) -> SoakReport:
    """Run the soak for `duration` seconds of load and check the invariants (see the module docstring).

    `alternate`, if given, replaces `faults` every other `phase` seconds (e.g. streams cut instead of
    dropped). Its stream and throttle settings must match `faults`', which the invariants are judged by.
    """
    launch = LocalLaunchServer(api_keys=[LAUNCH_KEY], workers=max(4, concurrency))
    async with contextlib.AsyncExitStack() as stack:
        await launch.start()
        stack.push_async_callback(launch.stop)
        values = {
            **GATEWAY_SETTINGS,
            "upstream": {**GATEWAY_SETTINGS["upstream"], "url": launch.url},
            "tenants": {"soak": TENANT},
        }
        gateway = GatewayServer(build_settings(values), env=GATEWAY_ENV)
        await gateway.start()
        stack.push_async_callback(gateway.stop, 0)
        channel = grpc.aio.insecure_channel(gateway.address)
        stack.push_async_callback(channel.close)
        stub = pb_grpc.EndpointServiceStub(channel)

        await _warm_up(stub, concurrency)
        log = UpstreamLog(launch)
        log.take("")
        before, _ = await _settle(gateway, launch, lambda r: r.gateway_idle, 2.0)

        launch.faults = faults
        traffic = Traffic(stub, log, faults)
        phases = [faults] if alternate is None else [faults, alternate]
        switcher = asyncio.create_task(_switch_faults(launch, phases, phase))
        started = time.perf_counter()
        until = asyncio.get_running_loop().time() + duration
        try:
            await asyncio.gather(*(Worker(traffic, n, seed).run(until) for n in range(concurrency)))
        finally:
            switcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await switcher
        seconds = time.perf_counter() - started
        fault_counts = dict(launch.fault_counts)
        calls = dict(traffic.calls)

        launch.faults = Faults()
        task_problems = await _verify_tasks(traffic, traffic.given, concurrency)
        created = len(launch.task_ids)
        after, settle = await _settle(
            gateway, launch, lambda r: not check_resources(before, r, concurrency, created), within=5.0
        )
        handles = gateway.edges().handles
        upstream_ids = [handles.verify(handle).upstream_id if handles else handle for handle in traffic.given]
        invariants = _invariants(
            traffic, launch, before, after, concurrency, task_problems, faults, calls, upstream_ids
        )
        description = faults.describe()
        if alternate is not None:
            description += f"; every other {phase:g} s instead: {alternate.describe()}"
        return SoakReport(
            seconds=seconds,
            concurrency=concurrency,
            faults=description,
            calls=calls,
            faults_injected=fault_counts,
            invariants=invariants,
            before=before,
            after=after,
            settle_seconds=settle,
            verified_tasks=len(traffic.given),
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _invariants(
    traffic: Traffic,
    launch: LocalLaunchServer,
    before: Resources,
    after: Resources,
    concurrency: int,
    task_problems: list[str],
    faults: Faults,
    load_calls: dict[tuple[str, str], int],
    upstream_ids: list[str],
) -> tuple[Invariant, ...]:
    calls = sum(load_calls.values())
    codes = Counter[str]()
    for (_, code), count in load_calls.items():
        codes[code] += count
    one = Invariant(
        1,
        "every call ends in time with a result or an allowed status",
        tuple(traffic.violations[1]),
        f"{calls} calls (+{sum(traffic.calls.values()) - calls} WaitAsyncTask checks after), "
        f"slowest {traffic.slowest:.2f} s; "
        + ", ".join(f"{code} {n}" for code, n in codes.most_common())
        + f"; {traffic.deadlines_without_stall} DEADLINE_EXCEEDED without a stall injected",
    )
    given, created = traffic.given, launch.task_ids
    problems = list(traffic.violations[2]) + task_problems
    if len(set(upstream_ids)) != len(given):
        problems.append(f"{len(given) - len(set(upstream_ids))} upstream tasks given out twice")
    missing = set(upstream_ids) - set(created)
    if missing:
        problems.append(f"{len(missing)} task ids given that the upstream never created, e.g. {sorted(missing)[:3]}")
    orphans = len(created) - 1 - len(set(upstream_ids))  # the warm-up created one
    if not traffic.created_without_id <= orphans <= traffic.ambiguous_submits:
        problems.append(
            f"{orphans} tasks created without an id given; expected between {traffic.created_without_id} "
            f"(cut bodies after create) and {traffic.ambiguous_submits} (failed submits that reached the upstream)"
        )
    two = Invariant(
        2,
        "each SubmitAsync gives one task id or an error; every id is found",
        tuple(problems),
        f"{len(given)} ids given, all found by WaitAsyncTask afterwards; {orphans} tasks created upstream "
        f"without an id given ({traffic.created_without_id} cut bodies after create, the documented hard case)",
    )
    streams = traffic.streams
    three = Invariant(
        3,
        "stream events stand before an error; cut ends UNAVAILABLE 'truncated', dropped ends OK",
        tuple(traffic.violations[3]),
        ", ".join(f"{name} {n}" for name, n in streams.most_common())
        + f"; {traffic.events_before_errors} events received before an error"
        + (f" (cut and dropped after {faults.drop_stream_after})" if faults.drop_stream_after is not None else ""),
    )
    resources = check_resources(before, after, concurrency, len(created))
    four = Invariant(
        4,
        "gateway resources return to their level before the load",
        tuple(resources),
        f"sockets {before.sockets} -> {after.sockets}, tasks {before.tasks} -> {after.tasks}, gateway state "
        f"{'0' if after.gateway_idle else 'NOT 0'}; RSS {(after.rss_kib - before.rss_kib) / 1024:+.1f} MiB "
        f"(allowed +{rss_allowance_kib(len(created)) / 1024:.1f} MiB)",
    )
    return one, two, three, four


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent callers (default 16)")
    parser.add_argument("--faults", help="a fault spec (parse_fault), e.g. 'error=503:0.1,seed=3'; default: a mix")
    parser.add_argument("--seed", type=int, default=7, help="seeds the workers and the default faults")
    args = parser.parse_args(argv)
    if args.faults is None:
        faults, alternate = default_faults(args.seed)
    else:
        faults, alternate = Faults(**parse_fault(args.faults)), None
    logging.basicConfig(level=logging.ERROR)  # the gateway's own errors (bugs) still show
    report = asyncio.run(run_soak(args.seconds, args.concurrency, faults, alternate=alternate, seed=args.seed))
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
