"""Fault injection: the ways the real Launch (and the proxies before it) fail, on demand.

`Faults` says what to inject (all off by default); `FaultInjector` draws, per request to a task
route (and to `GET /v1/model-endpoints` when `lookups`), a `FaultPlan` from the current `Faults`
and applies it, in this order:

    latency (+ jitter)  ->  throttle 429 or an error status, instead of the answer (handler never runs)
    ->  stall (JSON routes: before anything)  ->  bad JSON or text/html 200, instead of the answer
    ->  the real answer  ->  cut body (JSON routes: headers, half the body, connection closed)

Streams stall after their headers and are dropped (a clean end: Launch sends no end marker) or
cut mid-event after `drop_stream_after` complete events. Refusals (throttle and errors) share one
draw, as do the three body faults, so each rate is exact and each group's rates sum to at most 1.
Every fault injected is counted and noted on the request's record ("throttle", "error_503", ...).
A refusal or a replaced body on `POST /v1/async-tasks` means no task exists; a cut body there
comes after the task was created ("cut_body_after_create"), the case a client cannot recover from.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from aiohttp import web

from launch_gateway.testing.local_launch.failures import bad_json_response, error_response, html_response
from launch_gateway.testing.local_launch.records import RequestRecord

RouteKind = Literal["sync", "async_create", "async_get", "stream", "lookup"]
BodyFault = Literal["cut_body", "bad_json", "wrong_content_type"]
Send = Callable[[bytes], Awaitable[bool]]

_ROUTES: Mapping[tuple[str, str], RouteKind] = {
    ("POST", "/v1/sync-tasks"): "sync",
    ("POST", "/v1/async-tasks"): "async_create",
    ("GET", "/v1/async-tasks/{task_id}"): "async_get",
    ("POST", "/v1/streaming-tasks"): "stream",
    ("GET", "/v1/model-endpoints"): "lookup",
}
_RATE_SLACK = 1e-9  # rates that sum to 1 in decimal may sum to 1.0000000000000002 in binary


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {rate}")


def _check_seconds(name: str, seconds: float) -> None:
    if not (seconds >= 0.0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds}")


@dataclass(frozen=True)
class Faults:
    """What to inject; the default injects nothing. Replace it, never mutate it."""

    latency: float = 0.0  # seconds before answering
    latency_jitter: float = 0.0  # uniform extra seconds, 0 to this
    error_rates: Mapping[int, float] = field(default_factory=dict, hash=False)  # status -> probability
    throttle_rate: float = 0.0  # probability of Launch's 429 with Retry-After
    retry_after: float = 1.0  # seconds; sent as whole seconds, rounded up
    drop_stream_after: int | None = None  # end a stream after this many complete events
    cut_stream_mid_event: bool = False  # ... and then send half the next event and close
    stall: float = 0.0  # seconds without a byte (streams: after the headers)
    stall_rate: float = 1.0  # probability of a stall when stall > 0
    cut_body_rate: float = 0.0  # JSON routes: headers with Content-Length, half the body, close
    bad_json_rate: float = 0.0  # a 200 whose application/json body is not JSON
    wrong_content_type_rate: float = 0.0  # a 200 text/html page
    lookups: bool = False  # GET /v1/model-endpoints gets the faults too
    seed: int | None = None  # a deterministic random.Random

    def __post_init__(self) -> None:
        for name in ("latency", "latency_jitter", "retry_after", "stall"):
            _check_seconds(name, getattr(self, name))
        for name in ("throttle_rate", "stall_rate", "cut_body_rate", "bad_json_rate", "wrong_content_type_rate"):
            _check_rate(name, getattr(self, name))
        errors = dict(self.error_rates)
        for status, rate in errors.items():
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"error_rates keys are HTTP statuses 400-599, got {status!r}")
            _check_rate(f"error rate for {status}", rate)
        if self.throttle_rate + sum(errors.values()) > 1.0 + _RATE_SLACK:
            raise ValueError("throttle_rate and error_rates must sum to at most 1 (one draw picks one)")
        if self.cut_body_rate + self.bad_json_rate + self.wrong_content_type_rate > 1.0 + _RATE_SLACK:
            raise ValueError("cut_body_rate, bad_json_rate and wrong_content_type_rate must sum to at most 1")
        if self.drop_stream_after is not None and self.drop_stream_after < 0:
            raise ValueError(f"drop_stream_after must be >= 0, got {self.drop_stream_after}")
        if self.cut_stream_mid_event and self.drop_stream_after is None:
            raise ValueError("cut_stream_mid_event needs drop_stream_after (the events sent before the cut)")
        object.__setattr__(self, "error_rates", MappingProxyType(errors))

    @property
    def active(self) -> bool:
        """Whether any fault can be injected."""
        return (
            self.latency > 0
            or self.latency_jitter > 0
            or any(self.error_rates.values())
            or any((self.throttle_rate, self.cut_body_rate, self.bad_json_rate, self.wrong_content_type_rate))
            or self.drop_stream_after is not None
            or (self.stall > 0 and self.stall_rate > 0)
        )

    def describe(self) -> str:
        """The active faults in one line, e.g. "latency 0.05s, throttle 0.1 (Retry-After 1s)"."""
        parts: list[str] = []
        if self.latency or self.latency_jitter:
            parts.append(
                f"latency {self.latency:g}s" + (f" +0-{self.latency_jitter:g}s" if self.latency_jitter else "")
            )
        parts += [f"error {status} {rate:g}" for status, rate in self.error_rates.items() if rate]
        if self.throttle_rate:
            parts.append(f"throttle {self.throttle_rate:g} (Retry-After {retry_after_header(self.retry_after)}s)")
        if self.drop_stream_after is not None:
            how = "cut mid-event" if self.cut_stream_mid_event else "dropped"
            parts.append(f"streams {how} after {self.drop_stream_after} events")
        if self.stall and self.stall_rate:
            parts.append(f"stall {self.stall:g}s at {self.stall_rate:g}")
        bodies = {"cut body": self.cut_body_rate, "bad JSON": self.bad_json_rate}
        bodies["text/html"] = self.wrong_content_type_rate
        parts += [f"{name} {rate:g}" for name, rate in bodies.items() if rate]
        if not parts:
            return "none"
        scope = "task routes and lookups" if self.lookups else "task routes"
        seed = "" if self.seed is None else f", seed {self.seed}"
        return f"{', '.join(parts)} (on {scope}{seed})"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Faults:
        """The faults the `local-launch --fault-*` flags ask for; ValueError if they make no sense."""
        errors: dict[int, float] = {}
        for text in args.fault_error:
            status, rate = parse_error_rate(text)
            if status in errors:
                raise ValueError(f"--fault-error {status} is given twice")
            errors[status] = rate
        return cls(
            latency=args.fault_latency,
            latency_jitter=args.fault_jitter,
            error_rates=errors,
            throttle_rate=args.fault_throttle,
            retry_after=args.fault_retry_after,
            drop_stream_after=args.fault_drop_stream_after,
            cut_stream_mid_event=args.fault_cut_stream,
            stall=args.fault_stall,
            stall_rate=args.fault_stall_rate,
            cut_body_rate=args.fault_cut_body,
            bad_json_rate=args.fault_bad_json,
            wrong_content_type_rate=args.fault_wrong_content_type,
            lookups=args.fault_lookups,
            seed=args.fault_seed,
        )


def parse_error_rate(text: str) -> tuple[int, float]:
    """`STATUS:RATE`, e.g. "503:0.1", as (503, 0.1)."""
    status, sep, rate = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(status), float(rate)
    except ValueError:
        raise ValueError(f"expected STATUS:RATE (e.g. 503:0.1), got {text!r}") from None


def parse_fault(text: str) -> dict[str, Any]:
    """`Faults` keyword arguments from a spec like "latency=0.05,error=503:0.1,throttle_rate=0.2,seed=7".

    Keys are `Faults` field names; `error=STATUS:RATE` may repeat and fills `error_rates`; a bool
    field alone ("lookups") means true. For benchmarks and environment variables: `Faults(**parse_fault(s))`.
    """
    types = {f.name: f.type for f in fields(Faults)}
    kwargs: dict[str, Any] = {}
    errors: dict[int, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if key == "error":
            status, rate = parse_error_rate(value)
            errors[status] = rate
            continue
        kind = types.get(key)
        if kind is None or key == "error_rates":
            raise ValueError(f"unknown fault {key!r} in {text!r}")
        try:
            if kind == "bool":
                if sep and value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                kwargs[key] = not sep or value.lower() in ("true", "1")
            elif kind == "float":
                kwargs[key] = float(value)
            else:  # int | None
                kwargs[key] = None if value.lower() == "none" else int(value)
        except ValueError:
            raise ValueError(f"bad value for fault {key!r}: {value!r}") from None
    if errors:
        kwargs["error_rates"] = errors
    return kwargs


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; round up so a client never retries early."""
    return str(math.ceil(seconds))


def close_connection(request: web.Request) -> None:
    """Close the client's connection after what was written is flushed (no chunked end, no full body)."""
    request.protocol.force_close()


@dataclass(frozen=True)
class FaultPlan:
    """What one request gets, drawn once when it arrives."""

    route: RouteKind
    delay: float = 0.0
    refusal: int | None = None  # a status to answer instead
    throttled: bool = False  # the refusal is the throttle (429 with Retry-After)
    retry_after: str = "1"
    stall: float = 0.0
    body: BodyFault | None = None
    drop_stream_after: int | None = None
    cut_stream_mid_event: bool = False


FAULT_PLAN = web.RequestKey("local_launch_fault_plan", FaultPlan)


class FaultInjector:
    """The current `Faults`, a random source, and the count of every fault injected so far."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._now = now
        self._sleep = sleep
        self.counts: Counter[str] = Counter()
        self.faults = Faults() if faults is None else faults

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """Requests that arrive from now on get these; a seed restarts the random sequence."""
        self._faults = faults
        self._random = random.Random(faults.seed)

    def plan(self, faults: Faults, route: RouteKind) -> FaultPlan:
        """Draw what a request on `route` gets; only rates in use consume random numbers."""
        rng = self._random
        delay = faults.latency + (rng.uniform(0.0, faults.latency_jitter) if faults.latency_jitter else 0.0)
        refusal, throttled = None, False
        if faults.throttle_rate or faults.error_rates:
            draw = rng.random()
            if draw < faults.throttle_rate:
                refusal, throttled = 429, True
            else:
                total = faults.throttle_rate
                for status, rate in faults.error_rates.items():
                    total += rate
                    if draw < total:
                        refusal = status
                        break
        stall = 0.0
        if faults.stall and (faults.stall_rate >= 1.0 or rng.random() < faults.stall_rate):
            stall = faults.stall
        body: BodyFault | None = None
        rates: tuple[tuple[BodyFault, float], ...] = (
            ("cut_body", faults.cut_body_rate),
            ("bad_json", faults.bad_json_rate),
            ("wrong_content_type", faults.wrong_content_type_rate),
        )
        if any(rate for _, rate in rates):
            draw, total = rng.random(), 0.0
            for name, rate in rates:
                total += rate
                if draw < total:
                    body = name
                    break
        if body == "cut_body" and route == "stream":
            body = None  # streams are cut by cut_stream_mid_event
        return FaultPlan(
            route=route,
            delay=delay,
            refusal=refusal,
            throttled=throttled,
            retry_after=retry_after_header(faults.retry_after),
            stall=stall,
            body=body,
            drop_stream_after=faults.drop_stream_after if route == "stream" else None,
            cut_stream_mid_event=faults.cut_stream_mid_event,
        )

    def note(self, record: RequestRecord, fault: str) -> None:
        self.counts[fault] += 1
        record.add_fault(fault)

    async def answer(
        self, request: web.Request, record: RequestRecord, respond: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Answer `request` with `respond()`, or in its place, as the current faults say."""
        faults = self._faults
        route = _route_of(request, faults) if faults.active else None
        if route is None:
            return await respond()
        plan = self.plan(faults, route)
        request[FAULT_PLAN] = plan
        if plan.delay > 0:
            self.note(record, "latency")
            await self._sleep(plan.delay)
        if plan.refusal is not None:
            self.note(record, "throttle" if plan.throttled else f"error_{plan.refusal}")
            retry_after = plan.retry_after if plan.throttled else None
            return error_response(
                plan.refusal, self._now(), async_create=route == "async_create", retry_after=retry_after
            )
        if plan.stall > 0 and route != "stream":
            self.note(record, "stall")
            await self._sleep(plan.stall)
        if plan.body in ("bad_json", "wrong_content_type"):
            self.note(record, plan.body)
            return bad_json_response() if plan.body == "bad_json" else html_response()
        response = await respond()
        if plan.body == "cut_body" and isinstance(response, web.Response) and isinstance(response.body, bytes):
            created = route == "async_create" and response.status == 200
            self.note(record, "cut_body_after_create" if created else "cut_body")
            return await self._cut_body(request, record, response, response.body)
        return response

    async def run_stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: RequestRecord,
        write: Callable[[Send | None], Awaitable[None]],
    ) -> None:
        """Run a prepared stream's `write(send)` with this request's stall, drop and cut, if any.

        `send`, when not None, sends one event frame and says whether the stream goes on.
        """
        plan = request.get(FAULT_PLAN)
        if plan is None:
            await write(None)
            return
        if plan.stall > 0:
            self.note(record, "stall")
            await self._sleep(plan.stall)
        if plan.drop_stream_after is None:
            await write(None)
            return
        limit = _EventLimit(self, record, response, plan.drop_stream_after, plan.cut_stream_mid_event)
        await write(limit.send)
        if limit.cut:
            record.finish("completed", 200)
            close_connection(request)

    async def _cut_body(
        self, request: web.Request, record: RequestRecord, response: web.Response, body: bytes
    ) -> web.StreamResponse:
        headers = {name: value for name, value in response.headers.items() if name.lower() != "content-length"}
        cut = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
        cut.content_length = len(body)
        await cut.prepare(request)
        await cut.write(body[: len(body) // 2])
        record.finish("completed", response.status)
        close_connection(request)
        return cut


class _EventLimit:
    """Sends the first `events` event frames; the next one is dropped, or half sent and the stream cut."""

    def __init__(
        self, injector: FaultInjector, record: RequestRecord, response: web.StreamResponse, events: int, cut: bool
    ) -> None:
        self._injector = injector
        self._record = record
        self._response = response
        self._left = events
        self._cut_next = cut
        self.cut = False

    async def send(self, frame: bytes) -> bool:
        response = self._response
        if self._left > 0:
            self._left -= 1
            await response.write(frame)
            return True
        if self._cut_next:
            self._injector.note(self._record, "cut_stream")
            await response.write(frame[: len(frame) // 2])
            self.cut = True
        else:
            self._injector.note(self._record, "drop_stream")
        return False


def _route_of(request: web.Request, faults: Faults) -> RouteKind | None:
    resource = request.match_info.route.resource
    if request.match_info.http_exception is not None or resource is None:
        return None
    route = _ROUTES.get((request.method, resource.canonical))
    if route == "lookup" and not faults.lookups:
        return None
    return route
