"""The Launch client's request and response objects, with the same names, parameters and defaults.

`EndpointRequest` and `EndpointResponse` are the seed's classes field for field (plus
`EndpointResponse.status_code`, which the current Launch API returns); conversion to and from the
gRPC messages lives here too, so both SDK flavours (blocking and asyncio) share it.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from google.protobuf import json_format, struct_pb2

from launch_gateway.client.results import CallKind, ResultForm, shape_result
from launch_gateway.v1 import endpoint_service_pb2 as pb

log = logging.getLogger("launch_gateway.client")

STATUS_NAMES: dict[int, str] = {
    pb.TASK_STATUS_UNSPECIFIED: "UNDEFINED",
    pb.TASK_STATUS_PENDING: "PENDING",
    pb.TASK_STATUS_STARTED: "STARTED",
    pb.TASK_STATUS_SUCCESS: "SUCCESS",
    pb.TASK_STATUS_FAILURE: "FAILURE",
    pb.TASK_STATUS_UNDEFINED: "UNDEFINED",
}
KIND_NAMES: dict[int, str] = {
    pb.ENDPOINT_KIND_SYNC: "sync",
    pb.ENDPOINT_KIND_ASYNC: "async",
    pb.ENDPOINT_KIND_STREAMING: "streaming",
}


class EndpointRequest:
    """Represents a single request to either a SyncEndpoint, StreamingEndpoint, or AsyncEndpoint.

    Parameters:
        url: A url to some file that can be read in to a ModelBundle's predict function. The contents
            of the file are passed to the predict function as bytes. Exactly one of url and args must
            be specified.
        args: A dictionary with arguments to a ModelBundle's predict function: for
            ``predict_fn(foo, bar)`` the keys are "foo" and "bar". Values must be native Python objects
            that JSON can carry; they are sent as exact JSON, so ints stay ints at any size. Any other
            JSON value (a list, a string, a number) goes as the whole payload, which runnable-image
            endpoints take.
        callback_url: The callback url to use for this task (async endpoints only).
        callback_auth_kind: "basic" or "mtls"; the callback auth fields must fit it.
        callback_auth_username, callback_auth_password: callback credentials for "basic".
        callback_auth_cert, callback_auth_key: callback client certificate and key (PEM) for "mtls".
        return_pickled: Whether the output should be a pickled python object (behind result_url),
            or directly returned serialized json (in result).
        request_id: (deprecated) A user-specifiable id for requests. If one isn't provided the client
            generates none; the gateway ignores it.
        extra_headers: HTTP headers sent with the request to Launch, as the Launch client sends them.
            The gateway refuses the ones it owns or that change framing or auth (authorization, host,
            content-*, hop-by-hop, x-request-id, traceparent, ...) with INVALID_ARGUMENT (docs/errors.md).
    """

    def __init__(
        self,
        url: str | None = None,
        args: Any = None,
        callback_url: str | None = None,
        callback_auth_kind: Literal["basic", "mtls"] | None = None,
        callback_auth_username: str | None = None,
        callback_auth_password: str | None = None,
        callback_auth_cert: str | None = None,
        callback_auth_key: str | None = None,
        return_pickled: bool | None = False,
        request_id: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        if url is None and args is None:
            raise ValueError("Must specify at least one of url or args")
        if url is not None and args is not None:
            # As the Launch client does: a warning, and url wins.
            log.warning("Passing both url and args to task request; args will be ignored")
        if callback_auth_kind not in (None, "basic", "mtls"):
            raise ValueError(f"callback_auth_kind must be 'basic' or 'mtls', not {callback_auth_kind!r}")
        basic_fields = {
            "callback_auth_username": callback_auth_username,
            "callback_auth_password": callback_auth_password,
        }
        mtls_fields = {"callback_auth_cert": callback_auth_cert, "callback_auth_key": callback_auth_key}
        misplaced = {
            None: {**basic_fields, **mtls_fields},
            "basic": mtls_fields,
            "mtls": basic_fields,
        }[callback_auth_kind]
        for name, value in misplaced.items():
            if value is not None:
                raise ValueError(f"{name} does not apply when callback_auth_kind is {callback_auth_kind!r}")
        if callback_auth_kind == "basic" and not callback_auth_username:
            raise ValueError("callback_auth_username is required when callback_auth_kind is 'basic'")
        if callback_auth_kind == "mtls" and not (callback_auth_cert and callback_auth_key):
            raise ValueError("callback_auth_cert and callback_auth_key are required when callback_auth_kind is 'mtls'")
        if request_id is not None:
            warnings.warn("request_id is deprecated and ignored", DeprecationWarning, stacklevel=2)
        self.url = url
        self.args = args
        self.callback_url = callback_url
        self.callback_auth_kind = callback_auth_kind
        self.callback_auth_username = callback_auth_username
        self.callback_auth_password = callback_auth_password
        self.callback_auth_cert = callback_auth_cert
        self.callback_auth_key = callback_auth_key
        self.return_pickled = return_pickled
        self.request_id = request_id
        for name, value in (extra_headers or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"extra_headers maps header names to values, both str: {name!r}")
        self.extra_headers = extra_headers

    def __repr__(self) -> str:  # secrets stay out of reprs and logs
        if self.url is not None:
            target = f"url={self.url!r}"
        elif isinstance(self.args, dict):
            target = f"args keys={sorted(self.args)}"
        else:
            target = f"args={type(self.args).__name__}"
        headers = f", extra_headers={sorted(self.extra_headers)}" if self.extra_headers else ""  # names only
        return f"EndpointRequest({target}, return_pickled={self.return_pickled}{headers})"

    def to_proto(self) -> pb.EndpointRequest:
        """The gRPC message; args travel as exact JSON (`args_json`)."""
        message = pb.EndpointRequest(return_pickled=bool(self.return_pickled))
        if self.url is not None:
            message.url = self.url
        else:
            try:
                message.args_json = json.dumps(self.args, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"args must be JSON-serialisable native Python objects: {exc}") from None
        if self.callback_url is not None:
            message.callback_url = self.callback_url
        if self.callback_auth_kind == "basic":
            message.callback_auth_basic.username = self.callback_auth_username or ""
            message.callback_auth_basic.password = self.callback_auth_password or ""
        elif self.callback_auth_kind == "mtls":
            message.callback_auth_mtls.cert = self.callback_auth_cert or ""
            message.callback_auth_mtls.key = self.callback_auth_key or ""
        message.extra_headers.update(self.extra_headers or {})
        return message


class EndpointResponse:
    """Represents a response received from an Endpoint.

    Parameters:
        client: The client that made the request.
        status: "SUCCESS", "FAILURE", "PENDING", "STARTED" or "UNDEFINED".
        result_url: A url of the pickled return value (when the request set return_pickled).
        result: The serialized return value in JSON: ``json.loads(result)`` gives the object back;
            with ``GatewayClient(..., results="launch")`` the Launch client's shape for the call
            instead (``launch_gateway.client.results``).
        traceback: The stack trace if the inference endpoint raised an error.
        status_code: The model's own HTTP status code, when Launch reports one.
    """

    def __init__(
        self,
        client: Any,
        status: str,
        result_url: str | None = None,
        result: Any = None,
        traceback: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.client = client
        self.status = status
        self.result_url = result_url
        self.result = result
        self.traceback = traceback
        self.status_code = status_code

    def __str__(self) -> str:
        return (
            f"status: {self.status}, result: {self.result}, result_url: {self.result_url}, traceback: {self.traceback}"
        )

    __repr__ = __str__

    @classmethod
    def from_proto(
        cls, client: Any, message: pb.EndpointResponse, call: CallKind = "sync", form: ResultForm = "json"
    ) -> EndpointResponse:
        """The response to one `call`, its result in `form` (the gateway's JSON text, or Launch's shapes)."""
        status = STATUS_NAMES.get(message.status, "UNDEFINED")
        result, result_url = shape_result(
            form,
            call,
            status,
            message.result if message.HasField("result") else None,
            message.result_url if message.HasField("result_url") else None,
        )
        return cls(
            client,
            status,
            result_url=result_url,
            result=result,
            traceback=message.traceback if message.HasField("traceback") else None,
            status_code=message.status_code if message.HasField("status_code") else None,
        )


def _whole_numbers(value: Any) -> Any:
    """`value` with integral floats as ints: a Struct carries every number as a double, Launch's are ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _state(message: pb.Endpoint, field: Literal["resource_state", "deployment_state"]) -> dict[str, Any] | None:
    if not message.HasField(field):
        return None
    struct: struct_pb2.Struct = getattr(message, field)
    return dict(_whole_numbers(json_format.MessageToDict(struct)))


@dataclass(frozen=True)
class ModelEndpoint:
    """An endpoint as the gateway describes it: the Launch client's ModelEndpoint, less its bundle and configs."""

    name: str
    id: str
    endpoint_type: str  # "sync", "async" or "streaming"
    status: str
    resource_state: dict[str, Any] | None = None  # cpus, gpus, memory, gpu_type, storage, ...
    deployment_state: dict[str, Any] | None = None  # min_workers, max_workers, per_worker, ...
    status_reason: str | None = None

    @classmethod
    def from_proto(cls, message: pb.Endpoint) -> ModelEndpoint:
        return cls(
            message.name,
            message.id,
            KIND_NAMES.get(message.kind, "unknown"),
            message.status,
            _state(message, "resource_state"),
            _state(message, "deployment_state"),
            message.status_reason if message.HasField("status_reason") else None,
        )

    def kind(self) -> str:
        """The endpoint's kind; ValueError for one this SDK does not know."""
        if self.endpoint_type not in ("sync", "async", "streaming"):
            raise ValueError(f"endpoint {self.name!r} has an unknown type")
        return self.endpoint_type


LIST_ORDER = ("async", "sync", "streaming")  # the Launch client's list_model_endpoints groups them so


def in_list_order(endpoints: list[ModelEndpoint]) -> list[ModelEndpoint]:
    """The endpoints the Launch client's way: async, then sync, then streaming, each in Launch's order.

    Kinds this SDK does not know are left out, as the Launch client leaves them out.
    """
    return [e for kind in LIST_ORDER for e in endpoints if e.endpoint_type == kind]


TERMINAL = frozenset({"SUCCESS", "FAILURE", "UNDEFINED"})


def finished(client: Any, message: pb.EndpointResponse, form: ResultForm = "json") -> EndpointResponse | None:
    """The response when the task is over, None while it runs; UNDEFINED raises, as in Launch."""
    response = EndpointResponse.from_proto(client, message, "async", form)
    if response.status == "UNDEFINED":
        raise ValueError(f"Unrecognized status: {response.status}")
    return response if response.status in TERMINAL else None


LONG_POLL_SECONDS = 60.0  # one WaitAsyncTask at most; `get` chains them until its own timeout
DEADLINE_SLACK = 10.0  # added to a long poll's deadline: the gateway answers at its timeout, not after


def long_polls(timeout: float | None, task_id: str) -> Iterator[float]:
    """The length of each WaitAsyncTask long poll for a future's `get(timeout)`, until it runs out.

    ValueError for a timeout <= 0 and TimeoutError when it passes, as the Launch client raises them.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError("Timeout must be greater than 0.")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
        yield LONG_POLL_SECONDS if remaining is None else min(remaining, LONG_POLL_SECONDS)


def wait_request(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    """A WaitAsyncTask request for one long poll of `seconds`."""
    request = pb.WaitAsyncTaskRequest(task_id=task_id)
    request.timeout.FromTimedelta(timedelta(seconds=seconds))
    return request
