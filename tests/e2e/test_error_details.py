"""Every refusal the gateway decides carries google.rpc.ErrorInfo (a stable reason, the DNS-style domain),
INVALID_ARGUMENT carries google.rpc.BadRequest, and RetryInfo comes where waiting helps: one row per
refusal, each provoked on a real gateway in front of the local Launch server, read back as the
standard `grpc-status-details-bin` trailer and through the SDK's exceptions."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.client.errors import from_rpc_error
from launch_gateway.server.statuses import ERROR_DOMAIN
from launch_gateway.testing.local_launch import Faults
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.waiting import wait_for

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
A = bearer(KEY_A)


@dataclass(frozen=True)
class Expected:
    """What the status must say: its code and ErrorInfo reason, and the details that go with them."""

    code: grpc.StatusCode
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # pairs ErrorInfo.metadata must hold
    field: str | None = None  # INVALID_ARGUMENT: the BadRequest violation's field
    retry: bool = False  # RetryInfo and a retry-after trailer


@dataclass(frozen=True)
class Case:
    provoke: Callable[[Stack], Awaitable[Any]]  # the call that is refused
    expected: Expected
    team_a: Mapping[str, Any] | None = field(default_factory=dict)  # None: open mode (no tenants)
    settings: Mapping[str, Any] = field(default_factory=dict)
    faults: Faults | None = None


async def predict_without_key(stack: Stack) -> None:
    await stack.stub.Predict(ECHO, timeout=10)


async def predict_with_unknown_key(stack: Stack) -> None:
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer("gw-key-of-nobody-0000000000"))


async def predict_outside_the_list(stack: Stack) -> None:
    await stack.stub.Predict(pb.PredictRequest(endpoint_name="fail", request=ECHO.request), timeout=10, metadata=A)


async def predict_twice(stack: Stack) -> None:
    await stack.stub.Predict(ECHO, timeout=10, metadata=A)
    await stack.stub.Predict(ECHO, timeout=10, metadata=A)


async def predict_beside_a_held_call(stack: Stack) -> None:
    sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 10}'))
    held = stack.stub.Predict(sleeper, timeout=20, metadata=A)
    try:
        await wait_for(
            lambda: stack.gateway.concurrency.in_flight("team-a", "unary") == 1, within=5, what="the held call"
        )
        await stack.stub.Predict(ECHO, timeout=10, metadata=A)
    finally:
        held.cancel()


async def predict_an_infinite_number(stack: Stack) -> None:
    args = struct_pb2.Struct()
    args.update({"n": math.inf})
    request = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args=args))
    await stack.stub.Predict(request, timeout=10, metadata=A)


async def predict_undecodable_bytes(stack: Stack) -> None:
    predict = stack.channel.unary_unary("/launch_gateway.v1.EndpointService/Predict")
    await predict(b"\x0a\x05\xff\xfe\xfd\xfc\xfb", timeout=10, metadata=A)  # field 1, a string that is not UTF-8


async def predict_with_empty_name(stack: Stack) -> None:
    await stack.stub.Predict(pb.PredictRequest(request=ECHO.request), timeout=10, metadata=A)


async def poll_a_forged_handle(stack: Stack) -> None:
    await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="v1.not-a-handle.at-all"), timeout=10, metadata=A)


async def poll_another_tenants_task(stack: Stack) -> None:
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}"))
    task = await stack.stub.SubmitAsync(submit, timeout=10, metadata=A)
    await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task.task_id), timeout=10, metadata=bearer(KEY_B))


async def predict_a_missing_endpoint(stack: Stack) -> None:
    request = pb.PredictRequest(endpoint_name="missing", request=ECHO.request)
    await stack.stub.Predict(request, timeout=10, metadata=A)


async def stream_a_sync_endpoint(stack: Stack) -> None:
    request = pb.StreamPredictRequest(endpoint_name="echo", request=ECHO.request)
    async for _ in stack.stub.StreamPredict(request, timeout=10, metadata=A):
        pass


def submit_with_callback(url: str) -> Callable[[Stack], Awaitable[Any]]:
    async def submit(stack: Stack) -> None:
        request = pb.SubmitAsyncRequest(
            endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}", callback_url=url)
        )
        await stack.stub.SubmitAsync(request, timeout=10, metadata=A)

    return submit


async def predict_while_draining(stack: Stack) -> None:
    stack.gateway.drain.begin()  # what stop() does first
    await stack.stub.Predict(ECHO, timeout=10, metadata=A)


async def predict_on_a_short_deadline(stack: Stack) -> None:
    await stack.stub.Predict(ECHO, timeout=2, metadata=A)  # less than timeouts.deadline_margin below


async def predict_open(stack: Stack) -> None:
    await stack.stub.Predict(ECHO, timeout=10)


async def predict_open_twice(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError):  # Launch's 503 opens the circuit
        await stack.stub.Predict(ECHO, timeout=10)
    await stack.stub.Predict(ECHO, timeout=10)


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

CASES = [
    pytest.param(Case(predict_without_key, Expected(UNAUTHENTICATED, "API_KEY_MISSING")), id="missing-key"),
    pytest.param(Case(predict_with_unknown_key, Expected(UNAUTHENTICATED, "API_KEY_UNKNOWN")), id="unknown-key"),
    pytest.param(
        Case(predict_outside_the_list, Expected(PERMISSION_DENIED, "ENDPOINT_NOT_ALLOWED")), id="endpoint-not-allowed"
    ),
    pytest.param(
        Case(
            predict_twice,
            Expected(RESOURCE_EXHAUSTED, "RATE_LIMITED", {"scope": "tenant", "burst": "1"}, retry=True),
            team_a={"rate": {"per_second": 0.01, "burst": 1}},
        ),
        id="rate-limited",
    ),
    pytest.param(
        Case(
            predict_twice,
            Expected(RESOURCE_EXHAUSTED, "RATE_LIMITED", {"scope": "endpoint"}, retry=True),
            team_a={"endpoint_rates": {"echo": {"per_second": 0.01, "burst": 1}}},
        ),
        id="endpoint-rate-limited",
    ),
    pytest.param(
        Case(
            predict_beside_a_held_call,
            Expected(RESOURCE_EXHAUSTED, "CONCURRENCY_CAP", {"kind": "unary", "cap": "1"}, retry=True),
            team_a={"max_unary": 1},
        ),
        id="concurrency-cap",
    ),
    pytest.param(
        Case(predict_an_infinite_number, Expected(INVALID_ARGUMENT, "INVALID_FIELD", field="request.args.n")),
        id="invalid-field",
    ),
    pytest.param(
        Case(predict_with_empty_name, Expected(INVALID_ARGUMENT, "INVALID_FIELD", field="endpoint_name")),
        id="empty-field",
    ),
    pytest.param(
        Case(predict_undecodable_bytes, Expected(INVALID_ARGUMENT, "REQUEST_UNDECODABLE", field="request")),
        id="undecodable",
    ),
    pytest.param(
        Case(poll_a_forged_handle, Expected(INVALID_ARGUMENT, "TASK_HANDLE_INVALID", field="task_id")),
        id="task-handle-invalid",
    ),
    pytest.param(Case(poll_another_tenants_task, Expected(NOT_FOUND, "TASK_NOT_FOUND")), id="task-not-found"),
    pytest.param(
        Case(
            predict_a_missing_endpoint,
            Expected(NOT_FOUND, "ENDPOINT_NOT_FOUND"),
            team_a={"endpoints": ["echo", "missing"]},
        ),
        id="endpoint-not-found",
    ),
    pytest.param(
        Case(
            stream_a_sync_endpoint,
            Expected(
                grpc.StatusCode.FAILED_PRECONDITION,
                "WRONG_ENDPOINT_KIND",
                {"endpoint_kind": "sync", "use_rpc": "Predict"},
            ),
        ),
        id="wrong-endpoint-kind",
    ),
    pytest.param(
        Case(submit_with_callback("https://hooks.example.com/done"), Expected(PERMISSION_DENIED, "CALLBACK_REFUSED")),
        id="callback-refused",
    ),
    pytest.param(
        Case(
            submit_with_callback("http://127.0.0.1\\@evil/"),
            Expected(INVALID_ARGUMENT, "INVALID_FIELD", field="request.callback_url"),
        ),
        id="callback-url-invalid",
    ),
    pytest.param(
        Case(
            predict_on_a_short_deadline,
            Expected(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_TOO_SHORT"),
            settings={"timeouts": {"deadline_margin": 5.0}},
        ),
        id="deadline-too-short",
    ),
    pytest.param(Case(predict_while_draining, Expected(UNAVAILABLE, "DRAINING", retry=True)), id="draining"),
    pytest.param(
        Case(
            predict_open_twice,
            Expected(UNAVAILABLE, "CIRCUIT_OPEN", retry=True),
            team_a=None,
            settings={"upstream": {"breaker_failures": 1, "breaker_cooldown": 60, "retry_attempts": 1}},
            faults=Faults(error_rates={503: 1.0}),
        ),
        id="circuit-open",
    ),
    pytest.param(
        Case(
            predict_open,
            Expected(UNAVAILABLE, "UPSTREAM_UNREACHABLE"),
            team_a=None,
            settings={"upstream": {"url": "http://127.0.0.1:1", "retry_attempts": 1}},
        ),
        id="upstream-unreachable",
    ),
    pytest.param(
        Case(
            predict_open,
            Expected(grpc.StatusCode.INTERNAL, "UPSTREAM_HTTP_ERROR", {"http_status": "500"}),
            team_a=None,
            faults=Faults(error_rates={500: 1.0}),
        ),
        id="upstream-http-error",
    ),
]


def details_of(error: grpc.aio.AioRpcError) -> dict[str, list[Any]]:
    """The rich details of a failed call by type; the status in the trailer must agree with the call's."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin: {error}"
    found: dict[str, list[Any]] = {"ErrorInfo": [], "BadRequest": [], "RetryInfo": []}
    for detail in status.details:
        for name, kind in (
            ("ErrorInfo", error_details_pb2.ErrorInfo),
            ("BadRequest", error_details_pb2.BadRequest),
            ("RetryInfo", error_details_pb2.RetryInfo),
        ):
            message = kind()
            if detail.Unpack(message):
                found[name].append(message)
    return found


@pytest.mark.parametrize("case", CASES)
async def test_every_refusal_carries_its_reason_and_details(make_stack: StackFactory, case: Case) -> None:
    settings: dict[str, Any] = {section: dict(table) for section, table in case.settings.items()}
    if case.team_a is not None:
        settings["tenants"] = tenants(**{"team-a": dict(case.team_a)})
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B] if case.team_a is not None else (),
        settings=settings,
        gateway_env=ENV if case.team_a is not None else None,
    )
    if case.faults is not None:
        stack.launch.faults = case.faults
    expected = case.expected
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await case.provoke(stack)
    error = caught.value
    assert error.code() == expected.code, error
    found = details_of(error)
    (info,) = found["ErrorInfo"]
    assert (info.reason, info.domain) == (expected.reason, ERROR_DOMAIN)
    assert dict(info.metadata).items() >= dict(expected.metadata).items(), dict(info.metadata)
    if expected.field is None:
        assert not found["BadRequest"]
    else:
        (bad,) = found["BadRequest"]
        (violation,) = bad.field_violations
        assert violation.field == expected.field
        assert violation.description
        assert violation.description in (error.details() or "")
    trailers = dict(error.trailing_metadata() or ())
    assert bool(found["RetryInfo"]) is expected.retry
    assert ("retry-after" in trailers) is expected.retry
    sdk = from_rpc_error(error)  # the SDK reads the same details
    assert sdk.reason == expected.reason
    assert sdk.domain == ERROR_DOMAIN
    assert [v.field for v in sdk.field_violations] == ([expected.field] if expected.field else [])
    assert (sdk.retry_after is not None) is expected.retry
