"""The header rules: which gRPC metadata the gateway reads, and which HTTP headers it sends upstream.

- `authorization` (`Bearer <key>`, `Basic <base64(key:)>` or bare) or `x-api-key`: the caller's API
  key. With tenants it names the tenant; in `forward` mode it is also the Launch key, and goes
  upstream as Launch's clients send it: HTTP Basic with the key as user name and no password.
- `x-request-id` and `traceparent` pass through to the upstream unchanged, so one id follows a
  call across both hops (with tracing on, the upstream request's client span replaces `traceparent`
  and `tracestate`: `observability.tracing`); other metadata stays at the gateway. A request id is used only when it is
  plain (`usable_request_id`: letters, digits and `._:-`, at most 128 characters): it goes into log
  lines, where anything else could pass for fields of its own; otherwise the gateway makes one.
Pure: no grpc, no aiohttp.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

PASSED_THROUGH = ("x-request-id", "traceparent", "tracestate")
REQUEST_ID_MAX = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX}}}")

Metadata = Iterable[tuple[str, str | bytes]]


def metadata_value(metadata: Metadata | None, key: str) -> str | None:
    """The first value of `key` in call metadata (keys arrive lower-case), or None."""
    for name, value in metadata or ():
        if name == key:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def key_from_authorization(value: str | None) -> str | None:
    """The API key in an `authorization` value (Bearer, Basic or bare), or None."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return value.strip() if not rest else None


def presented_api_key(metadata: Metadata | None) -> str | None:
    """The caller's API key: from `authorization`, else from `x-api-key`."""
    return key_from_authorization(metadata_value(metadata, "authorization")) or (
        metadata_value(metadata, "x-api-key") or None
    )


def basic_authorization(api_key: str) -> str:
    """The `Authorization` header Launch expects: Basic with the key as user name."""
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


def passed_through_headers(metadata: Metadata | None) -> Mapping[str, str]:
    """The tracing headers to send upstream, taken from the call's metadata."""
    headers: dict[str, str] = {}
    for name, value in metadata or ():
        if name in PASSED_THROUGH and not isinstance(value, bytes):
            headers[name] = value
    return headers


def usable_request_id(value: str | None) -> str | None:
    """The caller's `x-request-id` if it is plain enough to log and pass on, else None."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None
