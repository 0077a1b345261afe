"""Upstream credentials as Launch expects them: the gateway's own key, or the caller's forwarded."""

from __future__ import annotations

import base64

import grpc
import pytest

from launch_gateway.server.upstream.launch_api import PROBE_NAME
from launch_gateway.testing.local_launch import RequestRecord
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory, collect, upstream_calls

REQUEST = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"a": 1}'))


async def test_service_mode_sends_the_gateways_key_as_basic_auth(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=["svc-key"], upstream_key="svc-key")
    reply = await stack.stub.Predict(REQUEST, timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == "svc-key"
    assert sync.headers["authorization"].startswith("Basic ")


async def test_service_mode_with_a_key_launch_refuses_is_unauthenticated(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=["svc-key"], upstream_key="wrong")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(REQUEST, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Could not authenticate user" in (caught.value.details() or "")
    assert "wrong" not in (caught.value.details() or "")


@pytest.mark.parametrize("header", ["Bearer caller-key", "caller-key"], ids=["bearer", "bare"])
async def test_forward_mode_sends_the_callers_key(make_stack: StackFactory, header: str) -> None:
    stack = await make_stack(api_keys=["caller-key"], settings={"upstream": {"auth": "forward"}})
    reply = await stack.stub.Predict(REQUEST, timeout=10, metadata=(("authorization", header),))
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == "caller-key"
    assert sync.headers["authorization"] == "Basic " + base64.b64encode(b"caller-key:").decode()  # as Launch's clients


async def test_forward_mode_without_a_key_is_refused_before_the_upstream(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=["caller-key"], settings={"upstream": {"auth": "forward"}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(REQUEST, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert upstream_calls(stack.launch) == []


async def test_service_mode_keeps_the_callers_authorization_at_the_gateway(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=["svc-key"], upstream_key="svc-key")
    await stack.stub.Predict(REQUEST, timeout=10, metadata=(("authorization", "Bearer caller-key"),))
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == "svc-key"
    assert "caller-key" not in str(sync.headers)


async def test_the_gateways_key_comes_from_the_variable_api_key_env_names(make_stack: StackFactory) -> None:
    stack = await make_stack(
        api_keys=["svc-key"],
        settings={"upstream": {"api_key_env": "MY_LAUNCH_KEY"}},
        gateway_env={"MY_LAUNCH_KEY": "svc-key", "LAUNCH_API_KEY": "not-this-one"},
    )
    reply = await stack.stub.Predict(REQUEST, timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == "svc-key"


TRACING = {
    "x-request-id": "req-123",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
}
OTHER = {"x-team": "blue", "x-debug": "1"}  # metadata that must stay at the gateway


async def traced_call(stack: Stack, rpc: str, metadata: tuple[tuple[str, str], ...]) -> RequestRecord:
    """Make `rpc` with `metadata`; the upstream request it caused."""
    stub = stack.stub
    if rpc == "Predict":
        await stub.Predict(REQUEST, timeout=10, metadata=metadata)
        path = "/v1/sync-tasks"
    elif rpc == "SubmitAsync":
        submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}"))
        await stub.SubmitAsync(submit, timeout=10, metadata=metadata)
        path = "/v1/async-tasks"
    elif rpc == "GetAsyncTask":
        submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{}"))
        task = await stub.SubmitAsync(submit, timeout=10)
        await stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task.task_id), timeout=10, metadata=metadata)
        path = f"/v1/async-tasks/{task.task_id}"
    elif rpc == "StreamPredict":
        stream = pb.StreamPredictRequest(endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 1}'))
        await collect(stub.StreamPredict(stream, timeout=10, metadata=metadata), [])
        path = "/v1/streaming-tasks"
    else:
        await stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10, metadata=metadata)
        path = "/v1/model-endpoints"
    return await stack.launch.wait_for_record(lambda r: r.path == path and r.query.get("name") != PROBE_NAME)


@pytest.mark.parametrize("rpc", ["Predict", "SubmitAsync", "GetAsyncTask", "StreamPredict", "GetEndpoint"])
async def test_tracing_metadata_and_nothing_else_passes_through_to_the_upstream(
    make_stack: StackFactory, rpc: str
) -> None:
    stack = await make_stack()
    record = await traced_call(stack, rpc, (*TRACING.items(), *OTHER.items()))
    assert {name: record.headers.get(name) for name in TRACING} == TRACING
    assert not set(OTHER) & set(record.headers)
