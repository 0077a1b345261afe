"""Property-based bad input: every request ends in OK or a documented client-error code naming the field,
never INTERNAL, UNKNOWN or a crashed handler."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.edge.conftest import KEY_A
from tests.reliability.conftest import ThreadedStack

AUTH = (("authorization", f"Bearer {KEY_A}"),)
FIELD = re.compile(r'^(request(\.\w+|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*|endpoint_name|task_id|timeout|authorization): ')
# What a malformed or refused request may end in, by design (the README's failure semantics).
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,  # the message names the field
    grpc.StatusCode.NOT_FOUND,  # no such endpoint, or another tenant's task
    grpc.StatusCode.PERMISSION_DENIED,  # an endpoint or callback host the tenant may not use
    grpc.StatusCode.FAILED_PRECONDITION,  # the endpoint's kind does not fit the RPC
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message larger than the server accepts
}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["echo", "describe", "echo-async", "count", "fail"]) | st.text(max_size=30)


@pytest.fixture(scope="module")
def stub(threaded_stack: ThreadedStack) -> Iterator[pb_grpc.EndpointServiceStub]:
    with grpc.insecure_channel(threaded_stack.gateway.address) as channel:
        yield pb_grpc.EndpointServiceStub(channel)


def outcome(call: Any, request: Any) -> None:
    """Make the call; a failure must be a client-error code, and INVALID_ARGUMENT must name its field."""
    try:
        call(request, timeout=10, metadata=AUTH)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        assert code in CLIENT_CODES, f"{code}: {details}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert FIELD.match(details), details


@st.composite
def endpoint_requests(draw: st.DrawFn) -> pb.EndpointRequest:
    request = pb.EndpointRequest(return_pickled=draw(st.booleans()))
    which = draw(st.sampled_from(["args", "args_json", "url", "none"]))
    if which == "args":
        request.args.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5)))
    elif which == "args_json":
        request.args_json = draw(st.text(max_size=60) | json_values.map(lambda v: __import__("json").dumps(v)))
    elif which == "url":
        request.url = draw(st.text(max_size=40) | st.from_regex(r"https?://[a-z.]{1,20}/[a-z]{0,10}", fullmatch=True))
    if draw(st.booleans()):
        request.callback_url = draw(st.text(max_size=40) | st.just("https://hooks.example.com/x"))
    auth = draw(st.sampled_from(["none", "basic", "mtls"]))
    if auth == "basic":
        request.callback_auth_basic.username = draw(st.text(max_size=10))
        request.callback_auth_basic.password = draw(st.text(max_size=10))
    elif auth == "mtls":
        request.callback_auth_mtls.cert = draw(st.text(max_size=10))
        request.callback_auth_mtls.key = draw(st.text(max_size=10))
    return request


@FUZZ
@given(name=names, request=endpoint_requests())
def test_predict_bad_input_ends_in_a_client_error(stub: pb_grpc.EndpointServiceStub, name: str, request: Any) -> None:
    outcome(stub.Predict, pb.PredictRequest(endpoint_name=name, request=request))


@FUZZ
@given(name=names, request=endpoint_requests())
def test_submit_bad_input_ends_in_a_client_error(stub: pb_grpc.EndpointServiceStub, name: str, request: Any) -> None:
    outcome(stub.SubmitAsync, pb.SubmitAsyncRequest(endpoint_name=name, request=request))


@FUZZ
@given(name=names, request=endpoint_requests())
def test_stream_bad_input_ends_in_a_client_error(stub: pb_grpc.EndpointServiceStub, name: str, request: Any) -> None:
    outcome(
        lambda r, **kw: list(stub.StreamPredict(r, **kw)), pb.StreamPredictRequest(endpoint_name=name, request=request)
    )


handles = st.text(max_size=80) | st.from_regex(r"t1\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,43}", fullmatch=True)


@FUZZ
@given(task_id=handles, seconds=st.integers(-5, 2), nanos=st.integers(0, 999_999_999))
def test_task_handles_end_in_a_client_error(
    stub: pb_grpc.EndpointServiceStub, task_id: str, seconds: int, nanos: int
) -> None:
    outcome(stub.GetAsyncTask, pb.GetAsyncTaskRequest(task_id=task_id))
    wait = pb.WaitAsyncTaskRequest(task_id=task_id)
    wait.timeout.seconds, wait.timeout.nanos = seconds, nanos if seconds >= 0 else 0
    outcome(stub.WaitAsyncTask, wait)


@FUZZ
@given(payload=st.binary(max_size=200))
def test_arbitrary_bytes_are_invalid_argument_or_ok(threaded_stack: ThreadedStack, payload: bytes) -> None:
    with grpc.insecure_channel(threaded_stack.gateway.address) as channel:
        raw = channel.unary_unary("/launch_gateway.v1.EndpointService/GetEndpoint")
        outcome(raw, payload)
