"""The header rules: which gRPC metadata the gateway reads, and which HTTP headers it sends upstream.

- `authorization` (`Bearer <key>`, `Basic <base64(key:)>` or bare) or `x-api-key`: the caller's API
  key. With tenants it names the tenant; in `forward` mode it is also the Launch key, and goes
  upstream as Launch's clients send it: HTTP Basic with the key as user name and no password.
- `x-request-id` and `traceparent` pass through to the upstream unchanged, so one id follows a
  call across both hops (with tracing on, the upstream request's client span replaces `traceparent`
  and `tracestate`: `observability.tracing`); other metadata stays at the gateway. A request id is used only when it is
  plain (`usable_request_id`: letters, digits and `._:-`, at most 128 characters): it goes into log
  lines, where anything else could pass for fields of its own; otherwise the gateway makes one.
- What passes on is checked, not cut: `traceparent` must be W3C Trace Context (lower-case hex
  version-traceid-parentid-flags, no all-zero ids, version `ff` never), `tracestate` a W3C list of at
  most 32 `key=value` members in at most `TRACESTATE_MAX_LENGTH` characters, and an API key at most
  `MAX_API_KEY_LENGTH` characters (forwarded keys are kept, in the credential cache); anything else is
  INVALID_ARGUMENT naming the metadata key, so no control or 8-bit character reaches an HTTP header.
- `EndpointRequest.extra_headers` go upstream on the task request, as the Launch client's do
  (`extra_headers_from`): each name an RFC 9110 token, each value printable ASCII, at most
  `MAX_EXTRA_HEADERS` of them in `MAX_EXTRA_HEADER_BYTES` of names and values; never a name in
  `DENIED_EXTRA_HEADERS` (nor `proxy-*`): the credential, framing and hop-by-hop headers and the ones the
  gateway itself sets. A refusal is INVALID_ARGUMENT naming `request.extra_headers["name"]`.
Pure: no grpc, no aiohttp.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

from launch_gateway.server.errors import InvalidArgument, field_key

PASSED_THROUGH = ("x-request-id", "traceparent", "tracestate")
MAX_API_KEY_LENGTH = 512  # characters of a caller's API key
TRACEPARENT_MAX_LENGTH = 512  # characters: version 00 has 55, a later version may say more
TRACESTATE_MAX_LENGTH = 512  # characters: what W3C asks every vendor to pass on
TRACESTATE_MAX_MEMBERS = 32
_HEX = "[0-9a-f]"
_TRACEPARENT = re.compile(rf"({_HEX}{{2}})-({_HEX}{{32}})-({_HEX}{{16}})-{_HEX}{{2}}(-[\x21-\x7e]*)?")
_KEY_CHARACTER = r"[a-z0-9_\-*/]"
_TRACESTATE_MEMBER = re.compile(
    rf"(?:[a-z]{_KEY_CHARACTER}{{0,255}}|[a-z0-9]{_KEY_CHARACTER}{{0,240}}@[a-z]{_KEY_CHARACTER}{{0,13}})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
REQUEST_ID_MAX = 128
MAX_EXTRA_HEADERS = 32
MAX_EXTRA_HEADER_BYTES = 8192  # names and values of one request's extra_headers together
# Names extra_headers may not set, lower-case: whoever sets these would speak for the gateway (the
# credential and the headers it sets itself), reframe the request, or address a hop, not the upstream.
DENIED_EXTRA_HEADERS = frozenset(
    {
        "authorization",  # the upstream credential is the gateway's to choose (tenants, forward mode)
        "x-api-key",
        "cookie",
        "host",
        "content-length",  # the body is the gateway's: its framing and type too
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "expect",
        "accept",  # JSON or text/event-stream, per route: the gateway reads the answer
        "connection",  # hop-by-hop (RFC 9110 section 7.6.1)
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        *PASSED_THROUGH,  # the gateway's own request id and trace context
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 section 5.6.2
_FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?|")  # printable ASCII, no edge spaces
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
    """The caller's API key: from `authorization`, else from `x-api-key`; INVALID_ARGUMENT naming the
    key when it is longer than `MAX_API_KEY_LENGTH`."""
    for name, key in (
        ("authorization", key_from_authorization(metadata_value(metadata, "authorization"))),
        ("x-api-key", metadata_value(metadata, "x-api-key")),
    ):
        if key and len(key) > MAX_API_KEY_LENGTH:
            raise InvalidArgument(name, f"the API key is longer than {MAX_API_KEY_LENGTH} characters")
        if key:
            return key
    return None


def basic_authorization(api_key: str) -> str:
    """The `Authorization` header Launch expects: Basic with the key as user name."""
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


def passed_through_headers(metadata: Metadata | None) -> Mapping[str, str]:
    """The tracing headers to send upstream, taken from the call's metadata and checked
    (`check_traceparent`, `check_tracestate`; several tracestate values are one list)."""
    headers: dict[str, str] = {}
    for name, value in metadata or ():
        if name not in PASSED_THROUGH or isinstance(value, bytes):
            continue
        if name == "traceparent" and name in headers:
            raise InvalidArgument(name, "given more than once")
        headers[name] = f"{headers[name]},{value}" if name == "tracestate" and name in headers else value
    if "traceparent" in headers:
        check_traceparent(headers["traceparent"])
    if "tracestate" in headers:
        check_tracestate(headers["tracestate"])
    return headers


def check_traceparent(value: str) -> None:
    """INVALID_ARGUMENT unless `value` is a W3C traceparent (Trace Context level 1, section 3.2)."""
    match = _TRACEPARENT.fullmatch(value) if len(value) <= TRACEPARENT_MAX_LENGTH else None
    version, trace_id, parent_id, rest = match.groups() if match else ("", "", "", None)
    if not match or version == "ff" or (version == "00" and rest is not None):
        raise InvalidArgument("traceparent", "not a W3C traceparent (version-traceid-parentid-flags in lower-case hex)")
    if not trace_id.strip("0") or not parent_id.strip("0"):
        raise InvalidArgument("traceparent", "the trace id and the parent id must not be all zeros")


def check_tracestate(value: str) -> None:
    """INVALID_ARGUMENT unless `value` is a W3C tracestate list (section 3.3) within our limits."""
    if len(value) > TRACESTATE_MAX_LENGTH:
        raise InvalidArgument("tracestate", f"longer than {TRACESTATE_MAX_LENGTH} characters")
    members = [member.strip(" \t") for member in value.split(",")]
    members = [member for member in members if member]  # empty members are allowed, and dropped
    if len(members) > TRACESTATE_MAX_MEMBERS:
        raise InvalidArgument("tracestate", f"more than {TRACESTATE_MAX_MEMBERS} list members")
    if not all(_TRACESTATE_MEMBER.fullmatch(member) for member in members):
        raise InvalidArgument("tracestate", "not a W3C tracestate list (key=value members separated by commas)")
    if len({member.partition("=")[0] for member in members}) != len(members):
        raise InvalidArgument("tracestate", "a key is given more than once")


def usable_request_id(value: str | None) -> str | None:
    """The caller's `x-request-id` if it is plain enough to log and pass on, else None."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


def extra_headers_from(extra: Mapping[str, str]) -> dict[str, str]:
    """`EndpointRequest.extra_headers` as HTTP headers for the upstream request, checked (see the module
    doc); INVALID_ARGUMENT naming `request.extra_headers["name"]` for the first one refused."""
    if len(extra) > MAX_EXTRA_HEADERS:
        raise InvalidArgument("request.extra_headers", f"more than {MAX_EXTRA_HEADERS} headers")
    if sum(len(name.encode()) + len(value.encode()) for name, value in extra.items()) > MAX_EXTRA_HEADER_BYTES:
        raise InvalidArgument(
            "request.extra_headers", f"names and values longer than {MAX_EXTRA_HEADER_BYTES} bytes in all"
        )
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for name in sorted(extra):
        field = f"request.extra_headers[{field_key(name)}]"
        if not _TOKEN.fullmatch(name):
            raise InvalidArgument(
                field, "not an HTTP header name (an RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~)"
            )
        lower = name.lower()
        if lower in DENIED_EXTRA_HEADERS or lower.startswith("proxy-"):
            raise InvalidArgument(field, "the gateway sets this header itself or does not pass it on (docs/errors.md)")
        if lower in seen:
            raise InvalidArgument(field, "given more than once (header names are case-insensitive)")
        seen.add(lower)
        if not _FIELD_VALUE.fullmatch(extra[name]):
            raise InvalidArgument(field, "the value must be printable ASCII without leading or trailing spaces")
        headers[name] = extra[name]
    return headers
