"""Prometheus metrics: the grpc-ecosystem server metrics, and the gateway's own.

The `grpc_server_*` families have go-grpc-prometheus's names and labels, so dashboards built for Go
and Java gRPC servers work unchanged; unlike py-grpc-prometheus they count server-streaming RPCs
too, as handled (with their duration) when the stream ends, however it ends. Every method's series
exist from the start (all codes at zero), as `InitializeMetrics` does, the standard health and
reflection services' included (`observability.standard_services` measures those).

Per-tenant usage, for chargeback and capacity planning: `gateway_tenant_*` count each tenant's calls
by endpoint when they end, its errors by class (client, policy, upstream or gateway: whose doing),
the seconds its calls spent in requests to Launch, and the stream events it was sent.

Labels stay bounded: an endpoint label only for endpoint names the config lists (any other name is
`other`), a tenant label only for configured tenants (`open` in open mode), routes as templates.
Never a task id, key or URL. /metrics shows the families as a Go server does (`observability.exposition`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import Code, ErrorClass
from launch_gateway.server.observability.exposition import GoExposition

# go-grpc-prometheus prints codes as Go's codes.Code String(): "OK", "NotFound", ...
GRPC_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) if code is not Code.OK else "OK" for code in Code
}
GRPC_CODE_NAMES[Code.CANCELLED] = "Canceled"  # Go's spelling, which the dashboards use

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OTHER = "other"
ERROR_CLASSES: tuple[ErrorClass, ...] = ("client", "policy", "upstream", "gateway")
CALLBACK_RESULTS = ("woke", "forwarded", "refused", "forward_refused", "forward_failed")


@dataclass(frozen=True)
class MethodInfo:
    service: str
    method: str
    grpc_type: str  # unary | server_stream | client_stream | bidi_stream, as go-grpc-prometheus says

    @property
    def one_request(self) -> bool:
        """Whether a call carries exactly one request message (counted as it starts)."""
        return self.grpc_type in ("unary", "server_stream")


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
        self.task_callbacks = Counter(
            "gateway_task_callbacks_total",
            "Launch's callbacks to the receiver by result: woke (waiters woken), forwarded (and passed on to the "
            "caller's URL), refused (not a callback URL of this gateway, or a bad body), forward_refused (the "
            "tenant's callback policy refused the caller's URL), forward_failed (the caller's URL did not take it).",
            ("result",),
            registry=r,
        )
        for result in CALLBACK_RESULTS:
            self.task_callbacks.labels(result)
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
        usage = ("tenant", "endpoint")
        self.tenant_calls = Counter(
            "gateway_tenant_calls_total", "EndpointService calls by tenant and endpoint, counted when they end.",
            usage, registry=r,
        )  # fmt: skip
        self.tenant_errors = Counter(
            "gateway_tenant_errors_total",
            "Calls that ended non-OK by tenant, endpoint and class (client, policy, upstream, gateway).",
            (*usage, "class"), registry=r,
        )  # fmt: skip
        self.tenant_upstream_seconds = Counter(
            "gateway_tenant_upstream_seconds_total",
            "Seconds the tenant's calls spent in requests to Launch (a stream's until its end).",
            usage, registry=r,
        )  # fmt: skip
        self.tenant_stream_events = Counter(
            "gateway_tenant_stream_events_total", "Stream events sent to the tenant's callers.", usage, registry=r
        )
        self._usage: dict[tuple[str, str], TenantUsage] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._methods: dict[str, MethodInfo] = {}
        for m in methods:  # series are looked up by method name, so names must not repeat across services
            if m.method in self._methods:
                raise ValueError(f"two services have a method {m.method!r}")
            self._methods[m.method] = m
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
                m.one_request,
            )
        self._inflight = {kind: self.inflight.labels(kind) for kind in ("unary", "stream", "wait")}
        for result in ("hit", "miss"):
            self.cache.labels(result)
        for reason in ("missing_key", "unknown_key", "endpoint_denied"):
            self.auth_failures.labels(reason)
        for result in ("ok", "refused"):
            self.config_reloads.labels(result)

    def exposition(self, multiprocess_dir: str = "") -> CollectorRegistry:
        """What /metrics shows: this process's registry, or the sum over every worker's files, either
        as a Go server writes it (`exposition.GoExposition`)."""
        source: Collector = self.registry
        if multiprocess_dir:
            source = CollectorRegistry()
            MultiProcessCollector(source, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        shown = CollectorRegistry(auto_describe=False)
        shown.register(GoExposition(source))
        return shown

    def tenants(self, names: Iterable[str]) -> None:
        """Create the per-tenant series up front (at start and after a reload)."""
        for name in names:
            for result in ("allowed", "limited", "failed_open", "failed_closed"):
                self.ratelimit.labels(name, result)
            self.usage(name, OTHER)  # every tenant has its usage series, at zero until it calls

    def usage(self, tenant: str, endpoint: str) -> TenantUsage:
        """The usage series of a tenant (label) and an endpoint (label), looked up once."""
        found = self._usage.get((tenant, endpoint))
        if found is None:
            labels = (tenant, endpoint)
            found = self._usage[labels] = TenantUsage(
                self.tenant_calls.labels(*labels),
                {name: self.tenant_errors.labels(*labels, name) for name in ERROR_CLASSES},
                self.tenant_upstream_seconds.labels(*labels),
                self.tenant_stream_events.labels(*labels),
            )
        return found

    def child(self, family: Any, *values: str) -> Any:
        """`family.labels(*values)`, looked up once: `.labels()` costs a lock and a dict on every call, and
        the per-call facts (upstream requests, cache lookups, rate decisions) come on every call. As
        bounded as the labels themselves."""
        key = (family, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*values)
        return found

    def rpc(self, method: str, kind: str | None) -> RpcMeter:
        """Start measuring one RPC of `method`; `kind` (EndpointService's concurrency kind) counts it in
        `gateway_inflight_calls`, None (health, reflection) does not."""
        series = self._series[method]
        series.started.inc()
        if series.one_request:  # unary and server-streaming requests are one message; others count theirs
            series.received.inc()
        inflight = self._inflight[kind] if kind is not None else None
        if inflight is not None:
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
    one_request: bool


@dataclass(frozen=True)
class TenantUsage:
    """One tenant's usage series for one endpoint label."""

    calls: Any
    errors: dict[str, Any]  # by error class
    upstream_seconds: Any
    stream_events: Any


class RpcMeter:
    """One RPC's measurements; `finish` records its status exactly once."""

    __slots__ = ("_clock", "_inflight", "_series", "done", "start")

    def __init__(self, series: _MethodSeries, inflight: Any | None, clock: Clock) -> None:
        self._series = series
        self._inflight = inflight
        self._clock = clock
        self.start = clock.now()
        self.done = False

    def sent(self, count: int = 1) -> None:
        if count:
            self._series.sent.inc(count)

    def received(self, count: int = 1) -> None:
        """Request messages of a client- or bidi-streaming call."""
        if count:
            self._series.received.inc(count)

    def elapsed(self) -> float:
        return self._clock.now() - self.start

    def finish(self, code: Code) -> float:
        """Record the status; returns the RPC's duration in seconds."""
        elapsed = self._clock.now() - self.start
        if not self.done:
            self.done = True
            self._series.handled[code].inc()
            self._series.handling.observe(elapsed)
            if self._inflight is not None:
                self._inflight.dec()
        return elapsed
