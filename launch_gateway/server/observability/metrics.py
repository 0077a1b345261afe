"""Prometheus metrics: the grpc-ecosystem server metrics, and the gateway's own.

The `grpc_server_*` families have go-grpc-prometheus's names and labels, so dashboards built for Go
and Java gRPC servers work unchanged; unlike py-grpc-prometheus they count server-streaming RPCs
too, as handled (with their duration) when the stream ends, however it ends. Every method's series
exist from the start (all codes at zero), as `InitializeMetrics` does.

Labels stay bounded: an endpoint label only for endpoint names the config lists (any other name is
`other`), a tenant label only for configured tenants (`open` in open mode), routes as templates.
Never a task id, key or URL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import Code

# go-grpc-prometheus prints codes as Go's codes.Code String(): "OK", "NotFound", ...
GRPC_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) if code is not Code.OK else "OK" for code in Code
}
GRPC_CODE_NAMES[Code.CANCELLED] = "Canceled"  # Go's spelling, which the dashboards use

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OTHER = "other"


@dataclass(frozen=True)
class MethodInfo:
    service: str
    method: str
    grpc_type: str  # unary | server_stream


class Metrics:
    """All of the gateway's metric families, in one registry (one per server, so tests can run many)."""

    def __init__(self, methods: Iterable[MethodInfo], clock: Clock, registry: CollectorRegistry | None = None) -> None:
        self._clock = clock
        self.registry = registry or CollectorRegistry()
        r = self.registry
        grpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", grpc_labels, registry=r)
        self.handled = Counter(
            "grpc_server_handled_total", "RPCs completed on the server, whatever their status.",
            (*grpc_labels, "grpc_code"), registry=r,
        )  # fmt: skip
        self.handling = Histogram(
            "grpc_server_handling_seconds", "Time from an RPC's start to its status, streams included.",
            grpc_labels, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.received = Counter(
            "grpc_server_msg_received_total", "RPC stream messages received on the server.", grpc_labels, registry=r
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total", "gRPC stream messages sent by the server.", grpc_labels, registry=r
        )

        self.upstream_requests = Counter(
            "gateway_upstream_requests_total", "Requests to the Launch API by route and HTTP status (or error).",
            ("route", "status"), registry=r,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds", "Launch API request latency by route.",
            ("route",), buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_event = Histogram(
            "gateway_stream_first_event_seconds", "Time from a StreamPredict's start to its first event.",
            ("endpoint",), buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stream_events = Counter(
            "gateway_stream_events_total", "Server-sent events relayed to callers.", ("endpoint",), registry=r
        )
        self.inflight = Gauge(
            "gateway_inflight_calls", "Calls in flight by kind.", ("kind",), registry=r, multiprocess_mode="livesum"
        )
        self.waits = Counter("gateway_async_waits_total", "WaitAsyncTask calls.", registry=r)
        self.wait_seconds = Histogram(
            "gateway_async_wait_seconds", "How long WaitAsyncTask calls waited.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.wait_polls = Counter(
            "gateway_async_wait_polls_total", "Upstream task polls made by the shared WaitAsyncTask loops.", registry=r
        )
        self.cache = Counter(
            "gateway_endpoint_cache_total", "Endpoint name lookups by result (hit or miss).", ("result",), registry=r
        )
        self.ratelimit = Counter(
            "gateway_ratelimit_decisions_total", "Rate-limit decisions by tenant and result.",
            ("tenant", "result"), registry=r,
        )  # fmt: skip
        self.auth_failures = Counter(
            "gateway_auth_failures_total", "Refused callers by reason.", ("reason",), registry=r
        )
        self.ready = Gauge(
            "gateway_ready", "1 when the gateway is ready for traffic (as /readyz says), else 0.", registry=r
        )
        self.upstream_reachable = Gauge(
            "gateway_upstream_reachable", "1 when the last background probe reached the upstream, else 0.", registry=r
        )
        self.config_reloads = Counter(
            "gateway_config_reloads_total", "Config reloads by result.", ("result",), registry=r
        )
        self._methods = {m.method: m for m in methods}
        self._initialize()

    def _initialize(self) -> None:
        self._series: dict[str, _MethodSeries] = {}
        for m in self._methods.values():
            labels = (m.grpc_type, m.service, m.method)
            self._series[m.method] = _MethodSeries(
                self.started.labels(*labels),
                self.received.labels(*labels),
                self.sent.labels(*labels),
                self.handling.labels(*labels),
                {code: self.handled.labels(*labels, name) for code, name in GRPC_CODE_NAMES.items()},
            )
        self._inflight = {kind: self.inflight.labels(kind) for kind in ("unary", "stream", "wait")}
        for result in ("hit", "miss"):
            self.cache.labels(result)
        for reason in ("missing_key", "unknown_key", "endpoint_denied"):
            self.auth_failures.labels(reason)
        for result in ("ok", "refused"):
            self.config_reloads.labels(result)

    def exposition(self, multiprocess_dir: str = "") -> CollectorRegistry:
        """What /metrics shows: this process's registry, or the sum over every worker's files."""
        if not multiprocess_dir:
            return self.registry
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return combined

    def tenants(self, names: Iterable[str]) -> None:
        """Create the per-tenant series up front (at start and after a reload)."""
        for name in names:
            for result in ("allowed", "limited", "failed_open", "failed_closed"):
                self.ratelimit.labels(name, result)

    def rpc(self, method: str, kind: str) -> RpcMeter:
        """Start measuring one RPC of `method`."""
        series = self._series[method]
        series.started.inc()
        series.received.inc()  # unary and server-streaming requests are one message
        inflight = self._inflight[kind]
        inflight.inc()
        return RpcMeter(series, inflight, self._clock)


@dataclass
class _MethodSeries:
    """One method's label children, looked up once (`.labels()` costs a lock and a dict per call)."""

    started: Any
    received: Any
    sent: Any
    handling: Any
    handled: dict[Code, Any]


class RpcMeter:
    """One RPC's measurements; `finish` records its status exactly once."""

    __slots__ = ("_clock", "_inflight", "_series", "done", "start")

    def __init__(self, series: _MethodSeries, inflight: Any, clock: Clock) -> None:
        self._series = series
        self._inflight = inflight
        self._clock = clock
        self.start = clock.now()
        self.done = False

    def sent(self, count: int = 1) -> None:
        if count:
            self._series.sent.inc(count)

    def finish(self, code: Code) -> float:
        """Record the status; returns the RPC's duration in seconds."""
        elapsed = self._clock.now() - self.start
        if not self.done:
            self.done = True
            self._series.handled[code].inc()
            self._series.handling.observe(elapsed)
            self._inflight.dec()
        return elapsed
