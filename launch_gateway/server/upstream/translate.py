"""Pure translation between the gRPC messages and Launch's JSON bodies, both ways.

Requests: an `EndpointRequest` becomes the JSON body of a task route, checked field by field (an
error names the field's path, e.g. `request.args.n`). Struct numbers that are integral and within
+/-2^53 go upstream as JSON integers, as Go's, JavaScript's and C++'s JSON printers write them, so a
predict function that wants an int gets one; `args_json` is spliced into the body byte for byte.
Caller input is bounded: `args` and `args_json` nest at most `MAX_JSON_DEPTH` levels (deeper JSON
would exhaust a parser's recursion, here or upstream), endpoint names and task ids have a maximum
length, and a task id sent upstream must look like one (`check_upstream_task_id`: no dot segments,
nothing that leaves its path segment).

Responses: Launch wraps a predict function's value differently per bundle type (launch-http-api.md
§4). `result` in our `EndpointResponse` is always JSON text of the value itself:
- `{"result_url": u}` gives `result_url`;
- `{"result": v}` gives v: for sync and async, a string v is already JSON text (artifact bundles
  and forwarders both serialise) and is passed through when it parses, else quoted; for streaming,
  v is the event's parsed value and is serialised;
- anything else is serialised whole; a FAILURE's `result` (Launch puts `str(exc)` there) too.
Whatever a model returns arrives: a string with a lone surrogate (`"\\udc80"` in Launch's JSON, which
UTF-8 and so protobuf cannot carry) stays in `result` as the JSON escape, so `json.loads` gives the same
string back, and in `traceback` and `result_url` as the text `\\udc80`. A `status_code` that is not an
int32 (no HTTP status is) is left unset rather than failing the call.

A FAILURE is the model's, and data, except when Launch's inference gateway says the endpoint had no
capacity: `status_code` 429 (its pods kept answering 429 through Launch's own retries) or 503 (no
healthy pod in time). `raise_for_capacity` makes those RESOURCE_EXHAUSTED and UNAVAILABLE errors,
so callers' retry policies apply (docs/errors.md, "Capacity is not a model failure").
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, struct_pb2

from launch_gateway.server.access.callbacks import parse_callback_url
from launch_gateway.server.errors import (
    SHOWN_CHARACTERS,
    EndpointOverloaded,
    EndpointUnavailable,
    InvalidArgument,
    UpstreamProtocolError,
    field_key,
    shown,
)
from launch_gateway.v1 import endpoint_service_pb2 as pb

MAX_SAFE_INTEGER = 2**53
MAX_URL_LENGTH = 8192
MAX_JSON_DEPTH = 64  # nested arrays and objects in args and args_json
MAX_ENDPOINT_NAME_LENGTH = 128  # characters (Launch's own names are at most 63)
MAX_TASK_ID_LENGTH = 4096  # characters of a task_id as callers send it: a handle (access.handles.MAX_HANDLE_LENGTH)
MAX_UPSTREAM_TASK_ID_LENGTH = 256  # characters of Launch's own task id (a Celery UUID has 36)
# Letters, digits and ._:-, starting with a letter or a digit: never a dot segment, always one path segment.
_UPSTREAM_TASK_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_UPSTREAM_TASK_ID_LENGTH - 1}}}")
_MAX_PATH_CHARACTERS = 256  # a field path in a message: past it, the innermost parts are left out
MAX_DURATION_SECONDS = 315_576_000_000  # google.protobuf.Duration's range: about 10,000 years either way
_MAX_DURATION_NANOS = 999_999_999

_STATUS_FROM_UPSTREAM: Mapping[str, pb.TaskStatus.ValueType] = {
    "PENDING": pb.TASK_STATUS_PENDING,
    "STARTED": pb.TASK_STATUS_STARTED,
    "SUCCESS": pb.TASK_STATUS_SUCCESS,
    "FAILURE": pb.TASK_STATUS_FAILURE,
    "UNDEFINED": pb.TASK_STATUS_UNDEFINED,
}
TERMINAL_STATUSES = frozenset({pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILURE, pb.TASK_STATUS_UNDEFINED})

_KIND_FROM_UPSTREAM: Mapping[str, pb.EndpointKind.ValueType] = {
    "sync": pb.ENDPOINT_KIND_SYNC,
    "async": pb.ENDPOINT_KIND_ASYNC,
    "streaming": pb.ENDPOINT_KIND_STREAMING,
}
_KIND_NAMES: Mapping[int, str] = {v: k for k, v in _KIND_FROM_UPSTREAM.items()}


def kind_name(kind: pb.EndpointKind.ValueType) -> str:
    """Launch's name for an endpoint kind ("sync", "async", "streaming")."""
    return _KIND_NAMES.get(kind, "unknown")


def endpoint_from_record(record: Mapping[str, Any]) -> pb.Endpoint:
    """An `Endpoint` from a record of `GET /v1/model-endpoints`."""
    try:
        endpoint_id, name = record["id"], record["name"]
    except (KeyError, TypeError) as exc:
        raise UpstreamProtocolError(f"upstream endpoint record lacks {exc}") from exc
    kind = _KIND_FROM_UPSTREAM.get(str(record.get("endpoint_type", "")), pb.ENDPOINT_KIND_UNSPECIFIED)
    endpoint = pb.Endpoint(id=str(endpoint_id), name=str(name), kind=kind, status=str(record.get("status") or ""))
    reason = record.get("status_reason")
    if isinstance(reason, str):
        endpoint.status_reason = reason
    for field in ("resource_state", "deployment_state"):
        state = record.get(field)
        if isinstance(state, dict):  # the record's object as Launch sends it; null or absent stays unset
            try:
                getattr(endpoint, field).update(state)
            except (ValueError, TypeError) as exc:
                raise UpstreamProtocolError(f"upstream endpoint record's {field} cannot be read: {exc}") from exc
    return endpoint


# --- requests ---------------------------------------------------------------------------------


def check_endpoint_name(name: str, field: str = "endpoint_name") -> str:
    """`name`, or INVALID_ARGUMENT naming `field` when it is empty or longer than `MAX_ENDPOINT_NAME_LENGTH`."""
    if not name:
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_ENDPOINT_NAME_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_ENDPOINT_NAME_LENGTH} characters")
    return name


def check_task_id(task_id: str, field: str = "task_id") -> str:
    """`task_id` as a caller sent it (a handle, or in open mode Launch's id), or INVALID_ARGUMENT naming
    `field` when it is empty or longer than `MAX_TASK_ID_LENGTH`."""
    if not task_id:
        raise InvalidArgument(field, "must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_TASK_ID_LENGTH} characters")
    return task_id


def is_upstream_task_id(task_id: str) -> bool:
    """Whether `task_id` looks like Launch's: letters, digits and `._:-`, starting with a letter or a digit,
    at most `MAX_UPSTREAM_TASK_ID_LENGTH` characters. So `..` and `.` never become dot segments."""
    return _UPSTREAM_TASK_ID.fullmatch(task_id) is not None


def check_upstream_task_id(task_id: str, field: str = "task_id") -> str:
    """`task_id` if `is_upstream_task_id`, else INVALID_ARGUMENT naming `field`."""
    if not is_upstream_task_id(task_id):
        raise InvalidArgument(
            field,
            "not a task id (letters, digits and ._:-, starting with a letter or a digit, "
            f"at most {MAX_UPSTREAM_TASK_ID_LENGTH} characters)",
        )
    return task_id


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nests_deeper(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep, found without parsing it
    (strings skipped; unclosed brackets count): deep enough JSON exhausts any recursive parser."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return any(depth > limit for depth in itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)))


def struct_to_python(struct: struct_pb2.Struct, path: str, depth: int = 1) -> dict[str, Any]:
    """A Struct as Python values, integral numbers within +/-2^53 as ints; at most `MAX_JSON_DEPTH` deep."""
    if depth > MAX_JSON_DEPTH:
        raise InvalidArgument(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
    return {key: _value_to_python(value, _member(path, key), depth) for key, value in struct.fields.items()}


def _member(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key is not a plain name (empty, dotted, spaced...); a long key
    is cut (`errors.field_key`), and a path past `_MAX_PATH_CHARACTERS` grows no further."""
    if len(path) > _MAX_PATH_CHARACTERS:
        return path if path.endswith("...") else f"{path}..."
    if key.isidentifier() and len(key) <= SHOWN_CHARACTERS:
        return f"{path}.{key}"
    return f"{path}[{field_key(key)}]"


def _value_to_python(value: struct_pb2.Value, path: str, depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            return int(number)
        if math.isfinite(number):
            return number
        raise InvalidArgument(path, f"{number} cannot be sent as JSON; use args_json or a string")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_python(value.struct_value, path, depth + 1)
    if kind == "list_value":
        if depth + 1 > MAX_JSON_DEPTH:
            raise InvalidArgument(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
        return [_value_to_python(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value.list_value.values)]
    return None  # null_value, or a Value with no kind set, which JSON printers write as null


def wait_timeout_from(duration: duration_pb2.Duration | None, field: str = "timeout") -> float | None:
    """The seconds a `timeout` Duration allows, exactly; None when it is unset or exactly zero.

    Read from `seconds` and `nanos` themselves, never rounded (to microseconds, as `ToTimedelta`
    does), so 1 ns is a bound of 1 ns ("answer after one look"), not zero, which means unset.
    INVALID_ARGUMENT naming `field` for a negative Duration, or one that is not a Duration at all:
    `seconds` within +/-315,576,000,000, `nanos` within +/-999,999,999, both of the same sign.
    """
    if duration is None:
        return None
    seconds, nanos = duration.seconds, duration.nanos
    if not -MAX_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        raise InvalidArgument(field, f"seconds must be within +/-{MAX_DURATION_SECONDS} (google.protobuf.Duration)")
    if not -_MAX_DURATION_NANOS <= nanos <= _MAX_DURATION_NANOS:
        raise InvalidArgument(field, f"nanos must be within +/-{_MAX_DURATION_NANOS} (google.protobuf.Duration)")
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        raise InvalidArgument(field, "seconds and nanos must have the same sign (google.protobuf.Duration)")
    if seconds < 0 or nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if seconds == 0 and nanos == 0:
        return None
    return seconds + nanos / 1e9


def _check_url(field: str, url: str) -> None:
    if not url:
        raise InvalidArgument(field, "must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidArgument(field, "must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidArgument(field, f"not a valid URL ({exc})") from exc
    if not parts.scheme or not parts.netloc:
        raise InvalidArgument(field, "must be an absolute URL with a scheme and a host")


def to_upstream_body(
    request: pb.EndpointRequest, kind: pb.EndpointKind.ValueType, callback_url: str | None = None
) -> bytes:
    """The JSON body of a task route for `request`, sent to an endpoint of `kind`.

    Sync and streaming routes get only the input and `return_pickled`, as the Launch client sends;
    async adds the callback. A callback on a sync or streaming call is refused rather than dropped.
    `callback_url` goes to Launch in place of the request's (the gateway's own receiver, which passes
    the callback on: `upstream.task_callbacks`); the request's is still checked.
    """
    body: dict[str, Any] = {}
    raw_args: str | None = None
    which = request.WhichOneof("input")
    if which == "url":
        _check_url("request.url", request.url)
        body["url"] = request.url
    elif which == "args":
        body["args"] = struct_to_python(request.args, "request.args")
    elif which == "args_json":
        raw_args = request.args_json
        if nests_deeper(raw_args):
            raise InvalidArgument("request.args_json", f"nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            json.loads(raw_args)  # any JSON value: a runnable image gets args as its whole payload
        except ValueError as exc:
            raise InvalidArgument("request.args_json", f"not valid JSON ({exc})") from exc
    else:
        raise InvalidArgument("request.input", "exactly one of url, args or args_json must be set")

    wants_callback = request.HasField("callback_url") or request.WhichOneof("callback_auth") is not None
    if wants_callback and kind != pb.ENDPOINT_KIND_ASYNC:
        field = "request.callback_url" if request.HasField("callback_url") else "request.callback_auth"
        raise InvalidArgument(field, f"only async endpoints send callbacks, this one is {kind_name(kind)}")
    if request.HasField("callback_url"):
        # The one reading of a callback URL, in every mode: a tenant's policy (`admission.Gate.check_callback`)
        # then applies to the host this reading found, and open mode refuses the same ambiguous URLs.
        parse_callback_url(request.callback_url)
        body["callback_url"] = request.callback_url
    if callback_url is not None:
        body["callback_url"] = callback_url
    auth = request.WhichOneof("callback_auth")
    if auth == "callback_auth_basic":
        basic = request.callback_auth_basic
        if not basic.username:
            raise InvalidArgument("request.callback_auth_basic.username", "must not be empty")
        body["callback_auth"] = {"kind": "basic", "username": basic.username, "password": basic.password}
    elif auth == "callback_auth_mtls":
        mtls = request.callback_auth_mtls
        for name in ("cert", "key"):
            if not getattr(mtls, name):
                raise InvalidArgument(f"request.callback_auth_mtls.{name}", "must not be empty (PEM text)")
        body["callback_auth"] = {"kind": "mtls", "cert": mtls.cert, "key": mtls.key}
    body["return_pickled"] = request.return_pickled

    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if raw_args is not None:
        # Splice the caller's JSON in untouched: json.loads would turn 2**60 + 1 into a float.
        encoded = '{"args":' + raw_args + "," + encoded[1:]
    return encoded.encode()


# --- responses --------------------------------------------------------------------------------


def _as_json_text(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if _is_utf8(text) else json.dumps(value, separators=(",", ":"))  # ASCII: \udc80 escapes


def _is_utf8(text: str) -> bool:
    if text.isascii():  # known without encoding it (CPython keeps the flag): most results are ASCII
        return True
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON can spell it, UTF-8 (so protobuf) cannot
        return False
    return True


def _as_text(text: str) -> str:
    return text if _is_utf8(text) else text.encode(errors="backslashreplace").decode()


def _is_json_text(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def to_endpoint_response(
    payload: Any, *, streaming: bool = False, task_id: str = "", into: pb.EndpointResponse | None = None
) -> pb.EndpointResponse:
    """An `EndpointResponse` from a sync, async-poll or stream-event body (see the module doc).

    `into`: an empty message to fill (a field of the message to send), so that it is not built apart and copied.
    """
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(f"upstream response is a JSON {type(payload).__name__}, not an object")
    raw_status = payload.get("status")
    if not isinstance(raw_status, str):
        raise UpstreamProtocolError("upstream response has no status")
    status = _STATUS_FROM_UPSTREAM.get(raw_status, pb.TASK_STATUS_UNDEFINED)
    response = pb.EndpointResponse() if into is None else into
    response.status = status
    response.task_id = task_id

    result = payload.get("result")
    if result is not None:
        if status == pb.TASK_STATUS_FAILURE:
            response.result = _as_json_text(result)
        elif isinstance(result, dict) and "result_url" in result and "result" not in result:
            response.result_url = _as_text(str(result["result_url"]))
        elif isinstance(result, dict) and "result" in result:
            inner = result["result"]
            if isinstance(inner, str) and not streaming and _is_json_text(inner):
                response.result = inner if _is_utf8(inner) else _as_json_text(json.loads(inner))
            else:
                response.result = _as_json_text(inner)
        else:
            response.result = _as_json_text(result)

    traceback = payload.get("traceback")
    if traceback is not None:
        response.traceback = _as_text(traceback) if isinstance(traceback, str) else _as_json_text(traceback)
    status_code = payload.get("status_code")
    if isinstance(status_code, int) and not isinstance(status_code, bool) and -(2**31) <= status_code < 2**31:
        response.status_code = status_code
    return response


# Launch's status_code on a FAILURE that means "no capacity", not "the model failed": what its live
# inference gateways answer after their retries (429: "Too many concurrent requests", 503: "No
# healthy upstream"). A FAILURE with any other status_code, or none, is the model's own.
CAPACITY_ERRORS: Mapping[int, type[EndpointOverloaded | EndpointUnavailable]] = {
    429: EndpointOverloaded,
    503: EndpointUnavailable,
}
MAX_TRACEBACK_SHOWN = 512  # characters of Launch's traceback quoted in a capacity error's message


def raise_for_capacity(response: pb.EndpointResponse, endpoint: str = "") -> pb.EndpointResponse:
    """`response`, unless it is Launch's capacity FAILURE (`CAPACITY_ERRORS`): then the error for its
    status_code, whose message quotes the traceback (bounded) and whose ErrorInfo names the code."""
    if response.status != pb.TASK_STATUS_FAILURE or not response.HasField("status_code"):
        return response
    error = CAPACITY_ERRORS.get(response.status_code)
    if error is None:
        return response
    said = response.traceback if response.HasField("traceback") else "(no traceback)"
    said = shown(said, MAX_TRACEBACK_SHOWN, quote=False)  # Launch's own words, bounded
    what = "is overloaded" if response.status_code == 429 else "has no healthy pods"
    subject = f"endpoint {shown(endpoint)}" if endpoint else "the endpoint"
    raise error(
        f"{subject} {what}: Launch answered FAILURE with status_code {response.status_code} "
        f"after its own retries: {said}",
        endpoint_status_code=response.status_code,
    )
