"""Per-RPC telemetry: metrics, the access log line and the request id, fed from wherever facts arise.

The service boundary opens a `CallRecord` for each RPC and closes it with the final status; the
servicer notes the endpoint and tenant, the upstream client the HTTP status, through the record in
the current context (a ContextVar), so that no layer has to pass it down. Labels are bounded here:
endpoint names not listed in the config count as `other`.

A call whose caller was identified (a tenant, or anyone in open mode, `open`) also counts in its
tenant's usage: the call and, if it failed, its error class when it ends; each upstream request's
seconds as it ends, and a stream's from its upstream answer to its end; the stream events sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from launch_gateway.server.errors import Code, ErrorClass
from launch_gateway.server.headers import Metadata, usable_request_id
from launch_gateway.server.limits.concurrency import Kind
from launch_gateway.server.observability.logs import access
from launch_gateway.server.observability.metrics import GRPC_CODE_NAMES, OTHER, Metrics, RpcMeter, TenantUsage

if TYPE_CHECKING:  # imported only when tracing is on (it needs the tracing extra)
    from launch_gateway.server.observability.tracing import Tracing

_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("gateway_call", default=None)
OPEN = "open"  # the tenant label of open mode's callers


def current_call() -> CallRecord | None:
    """The record of the RPC being handled in this context, if any."""
    return _current.get()


@dataclass
class CallRecord:
    """What one RPC did, for its access log line and metrics."""

    telemetry: Telemetry
    method: str
    kind: Kind  # stated once, where the RPC's boundary is declared; admission reads it here
    meter: RpcMeter
    request_id: str
    endpoint: str = ""
    tenant: str = ""
    upstream_status: str = ""
    identified: bool = False  # the caller is known (a tenant, or open mode): its usage is counted
    error_class: ErrorClass | None = None  # of the error the call ended with, as the boundary saw it
    upstream_answered: float | None = None  # when (seconds into the call) the last upstream answer came
    # What the caller is told besides its answer: the rate-limit headers of its admission (`x-request-id` is
    # always sent too). In the trailers of unary RPCs, success or error; a stream's initial metadata.
    reply_headers: tuple[tuple[str, str], ...] = ()
    # The call's metadata as the boundary read it: grpc.aio builds a new tuple on every invocation_metadata().
    metadata: Metadata | None = field(default=None, repr=False)
    token: contextvars.Token[CallRecord | None] | None = field(default=None, repr=False)

    def usage(self) -> TenantUsage | None:
        """The usage series of the call's tenant and endpoint; None before its caller is known."""
        if not self.identified:
            return None
        return self.telemetry.metrics.usage(self.tenant or OPEN, self.endpoint or OTHER)

    def sent(self, count: int) -> None:
        """Messages a stream sent: each is one event relayed from upstream."""
        self.meter.sent(count)
        usage = self.usage()
        if count and usage is not None:
            usage.stream_events.inc(count)

    def finish(self, code: Code) -> None:
        seconds = self.meter.finish(code)
        usage = self.usage()
        if usage is not None:
            usage.calls.inc()
            if code is not Code.OK:
                usage.errors[self.error_class or ("client" if code is Code.CANCELLED else "gateway")].inc()
            if self.kind == "stream" and self.upstream_answered is not None and self.upstream_status[:1] == "2":
                usage.upstream_seconds.inc(max(seconds - self.upstream_answered, 0.0))  # the stream's body
        if self.token is not None:
            # A stream's generator may be closed from another context (its task was cancelled):
            # there the variable was never set, so there is nothing to reset.
            with contextlib.suppress(ValueError):
                _current.reset(self.token)
            self.token = None
        if self.telemetry.access_log:
            access(
                {
                    "method": self.method,
                    "endpoint": self.endpoint,
                    "tenant": self.tenant,
                    "grpc_code": GRPC_CODE_NAMES[code],
                    "duration_ms": round(seconds * 1000, 3),
                    "upstream_status": self.upstream_status,
                    "request_id": self.request_id,
                }
            )


def request_id_from(value: str | None) -> str:
    """The caller's x-request-id when it is usable (see `headers.usable_request_id`), else a new one."""
    return usable_request_id(value) or uuid.uuid4().hex


class Telemetry:
    """Metrics, access logging and (when configured; None otherwise) tracing for one gateway."""

    def __init__(
        self,
        metrics: Metrics,
        endpoint_labels: Iterable[str] = (),
        access_log: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.metrics = metrics
        self.endpoint_labels = frozenset(endpoint_labels)
        self.access_log = access_log
        self.tracing = tracing

    def endpoint_label(self, name: str) -> str:
        return name if name in self.endpoint_labels else OTHER

    def begin(self, method: str, kind: Kind, request_id: str | None) -> CallRecord:
        record = CallRecord(self, method, kind, self.metrics.rpc(method, kind), request_id_from(request_id))
        record.token = _current.set(record)
        return record

    # --- facts from the layers below --------------------------------------------------------

    def upstream_response(self, route: str, status: str, seconds: float) -> None:
        metrics = self.metrics
        metrics.child(metrics.upstream_requests, route, status).inc()
        metrics.child(metrics.upstream_seconds, route).observe(seconds)
        record = _current.get()
        if record is not None:
            record.upstream_status = status
            record.upstream_answered = record.meter.elapsed()
            usage = record.usage()  # a shared wait loop's polls count for the tenant whose wait began it
            if usage is not None:
                usage.upstream_seconds.inc(seconds)

    def endpoint_lookup(self, hit: bool) -> None:
        self.metrics.child(self.metrics.cache, "hit" if hit else "miss").inc()

    def wait_poll(self) -> None:
        self.metrics.wait_polls.inc()

    def rate_decision(self, tenant: str, result: str) -> None:
        self.metrics.child(self.metrics.ratelimit, tenant, result).inc()

    def auth_failure(self, reason: str) -> None:
        self.metrics.child(self.metrics.auth_failures, reason).inc()
