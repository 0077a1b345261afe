"""The gateway's expected failures: every class, and the tree of them below. (The one table from
upstream HTTP status to gRPC code, and from code to the class, is `upstream.http_errors`.)

Everything a caller can be told is a `GatewayError`, carrying a gRPC code (its class's), a message
and, for throttling, a retry delay. The service boundary turns it into the RPC's status; anything
else that escapes a handler is a bug and becomes INTERNAL there. Callers test the type
(`except NotFound`), never the code: an upstream 404 is a `NotFound` like the gateway's own.

    GatewayError                    the root: code UNKNOWN unless a subclass says otherwise
    ├── Cancelled                   CANCELLED: the upstream says the request was cancelled (HTTP 499)
    ├── Unknown                     UNKNOWN: an upstream answer that is neither success nor error (1xx, 3xx)
    ├── InvalidArgument             INVALID_ARGUMENT: the request names the field and the reason
    │   └── UpstreamRejected        the upstream refused the request as malformed (HTTP 400, 422)
    ├── DeadlineExceeded            DEADLINE_EXCEEDED
    │   └── UpstreamTimeout         the upstream did not answer in time (or said so: HTTP 408, 504)
    ├── NotFound                    NOT_FOUND: unknown endpoint or task
    ├── PermissionDenied            PERMISSION_DENIED: the tenant may not call this endpoint
    │   └── CallbackRefused         the callback URL breaks the tenant's policy
    ├── ResourceExhausted           RESOURCE_EXHAUSTED: too much or too often; `retry_after` says when to retry
    │   ├── LimitExceeded           a tenant's rate limit, concurrency cap or callback host lookups in flight
    │   │                           (CALLBACK_LOOKUPS_BUSY), or the rate limiter down and failing closed
    │   │                           (RATE_LIMITER_UNAVAILABLE)
    │   ├── UpstreamTooLarge        the upstream's answer is past upstream.max_body_bytes
    │   └── EndpointOverloaded      Launch's FAILURE with status_code 429: the endpoint's pods are busy
    ├── FailedPrecondition          FAILED_PRECONDITION: an upstream client error the table does not name
    │   ├── WrongEndpointKind       the RPC does not fit the endpoint's kind
    │   └── EmptyStream             the upstream ended a stream without a single event
    ├── Aborted                     ABORTED: the upstream saw a conflict (HTTP 409)
    ├── Unimplemented               UNIMPLEMENTED: the upstream does not offer this (HTTP 501)
    ├── Internal                    INTERNAL: a bug in the gateway, or the upstream's own (HTTP 500)
    │   └── UpstreamProtocolError   the upstream answered something we cannot read
    │       └── EventTooLarge       a server-sent event (or line) past the parser's size limit
    ├── Unavailable                 UNAVAILABLE: clients retry this at once, on this replica or another
    │   ├── UpstreamUnavailable     the upstream could not be reached or is down (HTTP 502, 503)
    │   │   ├── ConnectFailed       no connection: the request was never sent, so any call may retry
    │   │   └── EndpointUnavailable Launch's FAILURE with status_code 503: the endpoint has no healthy pods
    │   ├── PoolFull                the gateway's own share of upstream connections is in use: not the upstream's fault
    │   └── ShuttingDown            the gateway is draining
    └── Unauthenticated             UNAUTHENTICATED: no credential, or one the upstream refused

    ConfigError (a ValueError)      the configuration has problems: not an RPC's failure but the process's
    ListenError (an OSError)        a port the settings name cannot be listened on (in use, or not this host's)

Messages never carry caller input unbounded: whatever the caller sent (or the upstream said) goes in
through `shown`, a map key in a field's path through `field_key`, and
every message is capped at `MAX_MESSAGE_BYTES` where its error is made, so the boundary never sends
a `grpc-message` (nor a status in the details trailer) that clients refuse for its size. Retry
delays are bounded where every error is made (`bounded_retry_delay`), whatever their source.

Each error names a stable `reason` (google.rpc.ErrorInfo's, UPPER_SNAKE_CASE: its class's, or a more
precise one where it is raised) with `metadata` for it, and an `error_class` for the per-tenant usage
metrics: client, policy, upstream or gateway. An error made from an upstream HTTP answer is always
UPSTREAM_HTTP_ERROR and the upstream's. docs/errors.md has every reason in one table.

This module is pure: it imports neither grpc nor aiohttp. `Code` mirrors grpc.StatusCode by
name and value so the boundary converts with `grpc.StatusCode[code.name]`.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import Literal

ErrorClass = Literal["client", "policy", "upstream", "gateway"]  # whose doing an error is

MAX_RETRY_DELAY = 3600.0  # seconds: a longer Retry-After (Launch's or anyone's) is told as this
MAX_MESSAGE_BYTES = 1024  # a status message's UTF-8 bytes; grpc-message and the details trailer stay small
SHOWN_CHARACTERS = 64  # of a caller's value quoted in a message


def shown(value: str, limit: int = SHOWN_CHARACTERS, *, quote: bool = True) -> str:
    """A value as a message quotes it: cut to `limit` characters with the full length said; a caller's
    value as its repr, the upstream's own words (`quote=False`) as they are."""
    cut = value[:limit]
    said = repr(cut) if quote else cut
    return said if len(value) <= limit else f"{said}... ({len(value)} characters)"


def field_key(name: str) -> str:
    """A map key as a field path quotes it inside brackets: JSON's quoting, or `shown` when it is long."""
    return json.dumps(name) if len(name) <= SHOWN_CHARACTERS else shown(name)


def bounded_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes (at a character boundary), marked when cut."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return message
    return encoded[: limit - 4].decode("utf-8", "ignore") + " ..."


def bounded_retry_delay(seconds: float | None, cap: float = MAX_RETRY_DELAY) -> float | None:
    """A retry delay at most `cap` (callers are told at most `MAX_RETRY_DELAY`; a wait paces itself by a
    shorter one); negative or non-finite is no delay."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


class Code(enum.IntEnum):
    """gRPC status codes (google.rpc.Code), by the names grpc.StatusCode uses."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GatewayError(Exception):
    """An expected failure: the RPC ends with the class's `code` and `message`.

    `retry_after` (seconds, bounded by `bounded_retry_delay`) becomes a google.rpc.RetryInfo detail;
    `http_status` is the upstream status that caused the error, if any, and is reported in a
    google.rpc.ErrorInfo detail.
    """

    code: Code = Code.UNKNOWN
    reason: str = "UNKNOWN"  # google.rpc.ErrorInfo.reason: a bare class says its code; `reason=` is more precise
    error_class: ErrorClass = "gateway"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = bounded_message(message)  # what the boundary sends, whatever a message quotes
        self.retry_after = bounded_retry_delay(retry_after)
        self.http_status = http_status
        if http_status is not None:  # whatever its code: the upstream said so
            self.reason, self.error_class = "UPSTREAM_HTTP_ERROR", "upstream"
        if reason is not None:
            self.reason = reason
        # ErrorInfo.metadata: facts a client can act on, never keys, task ids or payloads.
        self.metadata: Mapping[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class Cancelled(GatewayError):
    code = Code.CANCELLED
    reason = "CANCELLED"
    error_class: ErrorClass = "client"


class Unknown(GatewayError):
    code = Code.UNKNOWN


class InvalidArgument(GatewayError):
    """The request is malformed: `field` (its path, `request.args.n`) and what is wrong with it,
    which the message starts with and a google.rpc.BadRequest field violation carries."""

    code = Code.INVALID_ARGUMENT
    reason = "INVALID_FIELD"
    error_class: ErrorClass = "client"

    def __init__(self, field: str, description: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {description}", reason=reason)
        self.field = field
        self.description = description


class UpstreamRejected(InvalidArgument):
    """The upstream refused the request as malformed: its own words, about the request as a whole."""

    def __init__(self, message: str, *, retry_after: float | None = None, http_status: int | None = None) -> None:
        GatewayError.__init__(self, message, retry_after=retry_after, http_status=http_status)
        self.field = "request"
        self.description = message


class DeadlineExceeded(GatewayError):
    code = Code.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
    error_class: ErrorClass = "client"


class UpstreamTimeout(DeadlineExceeded):
    reason = "UPSTREAM_TIMEOUT"
    error_class: ErrorClass = "upstream"


class NotFound(GatewayError):
    code = Code.NOT_FOUND
    reason = "NOT_FOUND"
    error_class: ErrorClass = "client"


class PermissionDenied(GatewayError):
    code = Code.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"
    error_class: ErrorClass = "policy"


class CallbackRefused(PermissionDenied):
    """The callback URL breaks the tenant's policy; `why` follows the field's name."""

    reason = "CALLBACK_REFUSED"

    def __init__(self, why: str) -> None:
        super().__init__(f"request.callback_url: {why}")


class ResourceExhausted(GatewayError):
    code = Code.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"
    error_class: ErrorClass = "policy"


class LimitExceeded(ResourceExhausted):
    reason = "RATE_LIMITED"


class UpstreamTooLarge(ResourceExhausted):
    reason = "UPSTREAM_RESPONSE_TOO_LARGE"
    error_class: ErrorClass = "upstream"


class EndpointOverloaded(ResourceExhausted):
    """Launch answered FAILURE with status_code 429: its inference gateway retried the busy pods and gave up."""

    reason = "ENDPOINT_OVERLOADED"
    error_class = "upstream"

    def __init__(self, message: str, *, endpoint_status_code: int = 429) -> None:
        super().__init__(message)
        self.metadata = {"endpoint_status_code": str(endpoint_status_code)}


class FailedPrecondition(GatewayError):
    code = Code.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"
    error_class: ErrorClass = "client"


class WrongEndpointKind(FailedPrecondition):
    reason = "WRONG_ENDPOINT_KIND"


class EmptyStream(FailedPrecondition):
    """The upstream ended a stream cleanly without a single event (Launch's answer when the model's pod
    refused the request: docs/errors.md)."""

    reason = "UPSTREAM_STREAM_EMPTY"
    error_class = "upstream"


class Aborted(GatewayError):
    code = Code.ABORTED
    reason = "ABORTED"


class Unimplemented(GatewayError):
    code = Code.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Internal(GatewayError):
    code = Code.INTERNAL
    reason = "INTERNAL_ERROR"


class UpstreamProtocolError(Internal):
    reason = "UPSTREAM_PROTOCOL_ERROR"
    error_class: ErrorClass = "upstream"


class EventTooLarge(UpstreamProtocolError):
    """Raised by the SSE parser, which knows no route; the upstream client adds it to the message."""

    reason = "UPSTREAM_EVENT_TOO_LARGE"


class Unavailable(GatewayError):
    code = Code.UNAVAILABLE
    reason = "UNAVAILABLE"


class UpstreamUnavailable(Unavailable):
    reason = "UPSTREAM_UNAVAILABLE"
    error_class: ErrorClass = "upstream"


class ConnectFailed(UpstreamUnavailable):
    """The connection could not be made: nothing reached the upstream."""

    reason = "UPSTREAM_UNREACHABLE"


class EndpointUnavailable(UpstreamUnavailable):
    """Launch answered FAILURE with status_code 503: the endpoint had no healthy pods in time."""

    reason = "ENDPOINT_UNAVAILABLE"

    def __init__(self, message: str, *, endpoint_status_code: int = 503) -> None:
        super().__init__(message)
        self.metadata = {"endpoint_status_code": str(endpoint_status_code)}


class PoolFull(Unavailable):
    """Every connection of one of the gateway's upstream shares is in use: our limit, so the breaker
    does not count it, and nothing was sent."""

    reason = "UPSTREAM_POOL_FULL"


class ShuttingDown(Unavailable):
    reason = "DRAINING"

    def __init__(self, message: str = "the gateway is shutting down; retry on another replica") -> None:
        super().__init__(message, retry_after=0.0)  # at once: another replica takes it


class Unauthenticated(GatewayError):
    code = Code.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"
    error_class: ErrorClass = "policy"


class ConfigError(ValueError):
    """The configuration has problems; `problems` lists each as "<dotted.name>: <reason>"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class ListenError(OSError):
    """A port cannot be listened on; the message is one line: "<setting>: cannot listen on <host:port> (<why>)".

    Raised at start, before anything else listens, so a second gateway never shares a port by accident.
    """

    def __init__(self, setting: str, address: str, why: str) -> None:
        super().__init__(f"{setting}: cannot listen on {address} ({why})")
        self.setting = setting
        self.address = address
