"""An upstream's non-2xx answer as a `GatewayError`: the one table from HTTP status to gRPC code
(`HTTP_TO_GRPC`), the one from code to the class that carries it (`UPSTREAM_ERRORS`), the body told
readably and the Retry-After header read.

Pure: it imports neither grpc nor aiohttp; `LaunchAPI` hands it the status, the body and the header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from launch_gateway.server.errors import (
    Aborted,
    Cancelled,
    Code,
    FailedPrecondition,
    GatewayError,
    Internal,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
    Unknown,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    bounded_retry_delay,
    shown,
)

# Upstream HTTP status -> gRPC code. Not grpc's own http-grpc-status-mapping.md, which is meant for
# clients that got no grpc-status at all and sends 429 to UNAVAILABLE and 404 to UNIMPLEMENTED:
# here the status comes from a model API whose 404 means "no such endpoint" and whose 429 means
# "slow down", and clients retry UNAVAILABLE automatically.
HTTP_TO_GRPC: Mapping[int, Code] = MappingProxyType(
    {
        400: Code.INVALID_ARGUMENT,  # Launch: "Invalid request: ..." (wrong kind is caught before the call)
        401: Code.UNAUTHENTICATED,
        403: Code.PERMISSION_DENIED,
        404: Code.NOT_FOUND,  # Launch: the endpoint is unknown or not the caller's
        408: Code.DEADLINE_EXCEEDED,  # Launch: the model did not answer a sync task in time
        409: Code.ABORTED,
        413: Code.RESOURCE_EXHAUSTED,  # the request is too large for the upstream
        422: Code.INVALID_ARGUMENT,  # Launch's body validation (FastAPI)
        429: Code.RESOURCE_EXHAUSTED,  # throttled: not UNAVAILABLE, which clients retry at once
        499: Code.CANCELLED,
        500: Code.INTERNAL,
        501: Code.UNIMPLEMENTED,
        502: Code.UNAVAILABLE,
        503: Code.UNAVAILABLE,  # Launch: "Message broker temporarily unavailable. Please retry."
        504: Code.DEADLINE_EXCEEDED,
    }
)

# The class an upstream answer with each code becomes: exactly one per code that
# `code_for_http_status` can give, so `error_from_http` needs no branches.
UPSTREAM_ERRORS: Mapping[Code, type[GatewayError]] = MappingProxyType(
    {
        Code.CANCELLED: Cancelled,
        Code.UNKNOWN: Unknown,
        Code.INVALID_ARGUMENT: UpstreamRejected,
        Code.DEADLINE_EXCEEDED: UpstreamTimeout,
        Code.NOT_FOUND: NotFound,
        Code.PERMISSION_DENIED: PermissionDenied,
        Code.RESOURCE_EXHAUSTED: ResourceExhausted,  # 429's Retry-After travels as retry_after
        Code.FAILED_PRECONDITION: FailedPrecondition,
        Code.ABORTED: Aborted,
        Code.UNIMPLEMENTED: Unimplemented,
        Code.INTERNAL: Internal,  # the upstream's own failure, not one we could not read
        Code.UNAVAILABLE: UpstreamUnavailable,
        Code.UNAUTHENTICATED: Unauthenticated,
    }
)


def code_for_http_status(status: int) -> Code:
    """The gRPC code for an upstream HTTP error status: the table, then by class."""
    if status in HTTP_TO_GRPC:
        return HTTP_TO_GRPC[status]
    if 500 <= status < 600:
        return Code.INTERNAL
    if 400 <= status < 500:
        return Code.FAILED_PRECONDITION  # a client error the table does not name: not ours to retry
    return Code.UNKNOWN  # 1xx or 3xx where a final answer was expected


def describe_error_body(body: bytes, limit: int = 300) -> str:
    """A short, readable account of an upstream error body.

    Launch errors are `{"detail": "..."}`, validation errors `{"detail": [{"loc", "msg"}]}` and
    throttling `{"error": "..."}`; anything else is shown as (trimmed) text.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return shown(text, limit, quote=False) if text else "(empty body)"
    if isinstance(parsed, dict):
        detail = parsed.get("detail", parsed.get("error"))
        if isinstance(detail, str):
            return shown(detail, limit, quote=False)
        if isinstance(detail, list):
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()))
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            if parts:
                return shown("; ".join(parts), limit, quote=False)
    return shown(json.dumps(parsed), limit, quote=False)


def error_from_http(
    method: str, route: str, status: int, body: bytes, retry_after: float | None = None
) -> GatewayError:
    """The error for an upstream non-2xx answer, of the class for its code (`UPSTREAM_ERRORS`); the
    message names the route and the status."""
    message = f"upstream {method} {route} answered HTTP {status}: {describe_error_body(body)}"
    return UPSTREAM_ERRORS[code_for_http_status(status)](message, retry_after=retry_after, http_status=status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given as delta-seconds, bounded (`bounded_retry_delay`); None
    when absent, a date, negative or not finite."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return bounded_retry_delay(seconds)
