"""Caller input is bounded wherever the gateway keeps or repeats it, and dot segments never leave a route.

Task ids, endpoint names and API keys have a maximum length, refused with INVALID_ARGUMENT naming the
field; an upstream task id must look like one (letters, digits and `._:-`, starting with a letter or a
digit), so `..` and `.` cannot turn `GET /v1/async-tasks/{task_id}` into `GET /v1/`; what the gateway
caches is bounded in bytes; and a message quotes a caller's value only cut short, so a client never
refuses the status for the size of its `grpc-message`.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from launch_gateway.server.upstream.translate import MAX_ENDPOINT_NAME_LENGTH, MAX_TASK_ID_LENGTH
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory, upstream_calls

MESSAGE_LIMIT = 1024  # bytes of grpc-message the gateway sends at most (errors.MAX_MESSAGE_BYTES)


def refusal(caught: pytest.ExceptionInfo[grpc.aio.AioRpcError], field: str) -> str:
    """The details of an INVALID_ARGUMENT naming `field`, checked to be short."""
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (caught.value.code(), details[:200])
    assert details.startswith(f"{field}: "), details[:200]
    assert len(details.encode()) <= MESSAGE_LIMIT, len(details)
    return details


@pytest.mark.parametrize("length", [MAX_TASK_ID_LENGTH + 1, 100_000, 1_000_000], ids=["limit+1", "100KB", "1MB"])
@pytest.mark.parametrize("rpc", ["GetAsyncTask", "WaitAsyncTask"])
async def test_a_long_task_id_is_invalid_argument_in_a_short_message(stack: Stack, rpc: str, length: int) -> None:
    request_class = pb.GetAsyncTaskRequest if rpc == "GetAsyncTask" else pb.WaitAsyncTaskRequest
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stack.stub, rpc)(request_class(task_id="a" * length), timeout=10)
    assert f"longer than {MAX_TASK_ID_LENGTH} characters" in refusal(caught, "task_id")
    assert not upstream_calls(stack.launch)


@pytest.mark.parametrize(
    "task_id",
    ["..", ".", "a/..", "../v1", "%2e%2e", "a b", "a\\b", "é", "-x", "a" * 257],
    ids=[
        "dotdot",
        "dot",
        "slash-dotdot",
        "dotdot-slash",
        "encoded-dots",
        "space",
        "backslash",
        "non-ascii",
        "dash",
        "long",
    ],
)
async def test_an_implausible_task_id_never_reaches_the_upstream(stack: Stack, task_id: str) -> None:
    # In open mode a task id is Launch's own: `..` once made the poll GET /v1/ with the gateway's key.
    for call in (
        stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10),
        stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task_id), timeout=10),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert "not a task id" in refusal(caught, "task_id")
    assert not upstream_calls(stack.launch)


async def test_a_plausible_task_id_is_polled_on_its_own_route(stack: Stack) -> None:
    submitted = await stack.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}")), timeout=10
    )
    await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=submitted.task_id), timeout=10)
    assert upstream_calls(stack.launch)[-1].path == f"/v1/async-tasks/{submitted.task_id}"


def endpoint_rpcs(name: str) -> list[tuple[str, object]]:
    request = pb.EndpointRequest(args_json="{}")
    return [
        ("Predict", pb.PredictRequest(endpoint_name=name, request=request)),
        ("SubmitAsync", pb.SubmitAsyncRequest(endpoint_name=name, request=request)),
        ("GetEndpoint", pb.GetEndpointRequest(endpoint_name=name)),
    ]


@pytest.mark.parametrize("length", [MAX_ENDPOINT_NAME_LENGTH + 1, 1_000_000], ids=["limit+1", "1MB"])
async def test_a_long_endpoint_name_is_invalid_argument_in_a_short_message(stack: Stack, length: int) -> None:
    name = "e" * length
    for rpc, request in endpoint_rpcs(name):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stack.stub, rpc)(request, timeout=10)
        assert f"longer than {MAX_ENDPOINT_NAME_LENGTH} characters" in refusal(caught, "endpoint_name"), rpc
    stream = stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name=name), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    refusal(caught, "endpoint_name")
    assert not upstream_calls(stack.launch)


async def test_a_long_api_key_is_invalid_argument(make_stack: StackFactory) -> None:
    from launch_gateway.server.headers import MAX_API_KEY_LENGTH

    # Forwarded keys are kept (each caller's credential is cached): their length is bounded.
    stack = await make_stack(settings={"upstream": {"auth": "forward"}})
    for metadata in ((("authorization", "Bearer " + "k" * (MAX_API_KEY_LENGTH + 1)),), (("x-api-key", "k" * 5000),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10, metadata=metadata)
        assert f"longer than {MAX_API_KEY_LENGTH} characters" in refusal(caught, metadata[0][0])
    assert not upstream_calls(stack.launch)


async def test_a_caller_value_in_a_message_is_cut_short(stack: Stack) -> None:
    # A 100 KB grpc-message made clients report RESOURCE_EXHAUSTED "Stream removed" instead of the refusal.
    args = struct_pb2.Struct()
    args.update({"k" * 100_000: float("nan")})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(
            pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args=args)), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert details.startswith("request.args['" + "k" * 10), details[:200]  # the key, cut, then the reason
    assert "... (100000 characters)]: nan cannot be sent as JSON" in details, details[:200]
    assert len(details) < 200


async def test_task_polls_leave_nothing_in_the_target_cache(stack: Stack) -> None:
    # Every task id makes a poll's request target unique: caching them only held on to caller input.
    cached = len(stack.gateway.api._targets)
    for n in range(20):
        await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=f"task-{n:04d}-" + "x" * 200), timeout=10)
    assert len(stack.gateway.api._targets) == cached
