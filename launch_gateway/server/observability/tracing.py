"""OpenTelemetry traces: a SERVER span per RPC, a CLIENT span per upstream HTTP request, sent over OTLP/gRPC.

Only `app.tracing_from` imports this module, and only when `tracing.otlp_endpoint` is set (it needs the
`tracing` extra): with tracing off neither it nor the SDK's tracer is loaded, and no span object is made.

- The RPC's boundary opens its server span (`launch_gateway.v1.EndpointService/Predict`, kind SERVER) and
  ends it with the final status; a stream's lasts until the stream ends. Its parent is the caller's
  `traceparent` (W3C trace context in the call's metadata; `tracestate` is kept), and the caller's
  sampled flag is followed; a trace that starts here is recorded at `tracing.sample_ratio`.
- Every attempt at an upstream HTTP request is a client span of its own (`GET /v1/async-tasks/{task_id}`,
  kind CLIENT), a child of the RPC's server span; a retry carries `http.request.resend_count`. The request
  sends that span's context as `traceparent` (replacing the caller's, which is the server span's parent).
  The span ends when the answer has been read; for a stream, when its response headers arrive, as the
  upstream latency metric does (the events are in the server span, which lasts until the stream ends).
- Attributes are the OpenTelemetry semantic conventions' for RPC servers (`rpc.system`, `rpc.service`,
  `rpc.method`, `rpc.grpc.status_code`) and HTTP clients (`http.request.method`, `url.template`,
  `http.response.status_code`, `server.address`, `server.port`, `error.type`): route templates, never a
  URL, a task id, a key, a payload or an error message (messages can quote a route with a task id).
- Status ERROR on a server span for the codes the server answers for (UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, as the gRPC conventions say), so a refused or invalid
  call is no error of the gateway's; on a client span for a 4xx or 5xx answer or a request that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import MutableMapping
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from launch_gateway.server.errors import Code
from launch_gateway.server.headers import Metadata
from launch_gateway.server.settings import TracingSettings

log = logging.getLogger("launch_gateway")

SERVICE = "launch_gateway.v1.EndpointService"
TRACE_HEADERS = ("traceparent", "tracestate")
# The codes a gRPC server span is in ERROR for (the semantic conventions' list): the server's failures.
SERVER_FAULTS = frozenset(
    {Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNIMPLEMENTED, Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS}
)

# The context of the RPC being handled here (its server span), the parent of its upstream requests' spans.
# A WaitAsyncTask poll loop runs in a task of its own, which copies the context of the waiter that started it.
_rpc: contextvars.ContextVar[Context | None] = contextvars.ContextVar("gateway_rpc_span", default=None)


class ServerSpan:
    """One RPC's span, current for the upstream requests made on its behalf until `end`."""

    def __init__(self, span: trace.Span, token: contextvars.Token[Context | None]) -> None:
        self._span = span
        self._token = token

    def end(self, code: Code) -> None:
        span = self._span
        span.set_attribute("rpc.grpc.status_code", int(code))
        if code in SERVER_FAULTS:
            span.set_attribute("error.type", code.name)
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        # A stream's generator may be closed from another context: there the variable was never set.
        with contextlib.suppress(ValueError):
            _rpc.reset(self._token)


class ClientSpan:
    """One upstream HTTP request attempt's span."""

    def __init__(self, span: trace.Span, propagator: TraceContextTextMapPropagator) -> None:
        self._span = span
        self._propagator = propagator

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put this span's context in the request's headers, in place of the caller's."""
        for name in TRACE_HEADERS:
            headers.pop(name, None)
        self._propagator.inject(headers, context=trace.set_span_in_context(self._span))

    def end(self, status: int | None, error: BaseException | None) -> None:
        """End with the answer's HTTP status (None: none came) and the error the request raised, if any."""
        span = self._span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if isinstance(error, asyncio.CancelledError):
            error = None  # the caller left: the server span says CANCELLED, the request did not fail
        failed = str(status) if status is not None and status >= 400 else type(error).__name__ if error else None
        if failed is not None:
            span.set_attribute("error.type", failed)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class Tracing:
    """The gateway's tracer: spans batched to an OTLP/gRPC collector on a thread of the SDK's own."""

    def __init__(self, provider: TracerProvider, upstream_url: str) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("launch_gateway")
        self._propagator = TraceContextTextMapPropagator()
        upstream = urlsplit(upstream_url)
        self._upstream: dict[str, str | int] = {
            "server.address": upstream.hostname or "",
            "server.port": upstream.port or (443 if upstream.scheme == "https" else 80),
        }

    @classmethod
    def start(cls, settings: TracingSettings, upstream_url: str) -> Tracing:
        """A tracer exporting to `settings.otlp_endpoint`. The SDK reads the OTLP exporter's other
        OTEL_EXPORTER_OTLP_* variables (headers, certificates, timeout, compression) and OTEL_RESOURCE_ATTRIBUTES
        itself (docs/operations.md says which)."""
        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            shutdown_on_exit=False,  # `close` flushes and stops it, when the gateway stops
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
        log.info(
            "tracing: spans to %s over OTLP/gRPC as %s, %.3g of new traces sampled",
            settings.otlp_endpoint,
            settings.service_name,
            settings.sample_ratio,
        )
        return cls(provider, upstream_url)

    def server_span(self, method: str, metadata: Metadata | None) -> ServerSpan:
        """Open the span of RPC `method`, a child of the caller's `traceparent` when it sent one."""
        carrier = {name: value for name, value in metadata or () if name in TRACE_HEADERS and isinstance(value, str)}
        span = self._tracer.start_span(
            f"{SERVICE}/{method}",
            context=self._propagator.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method},
        )
        return ServerSpan(span, _rpc.set(trace.set_span_in_context(span)))

    def client_span(self, method: str, template: str, attempt: int) -> ClientSpan:
        """Open the span of one attempt (0: the first) at an upstream request to the route `template`."""
        attributes: dict[str, str | int] = {"http.request.method": method, "url.template": template, **self._upstream}
        if attempt:
            attributes["http.request.resend_count"] = attempt
        parent = _rpc.get()
        span = self._tracer.start_span(
            f"{method} {template}",
            context=parent if parent is not None else Context(),  # outside an RPC: a trace of its own
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        return ClientSpan(span, self._propagator)

    async def close(self) -> None:
        """Send the spans still queued and stop the exporter (bounded by the exporter's timeout)."""
        await asyncio.to_thread(self._provider.shutdown)
