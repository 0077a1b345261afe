"""Upstream credentials as Launch expects them: the gateway's own key, or the caller's forwarded."""

from __future__ import annotations

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import StackFactory, upstream_calls

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


async def test_forward_mode_without_a_key_is_refused_before_the_upstream(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=["caller-key"], settings={"upstream": {"auth": "forward"}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(REQUEST, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert upstream_calls(stack.launch) == []


async def test_tracing_headers_pass_through_to_the_upstream(make_stack: StackFactory) -> None:
    stack = await make_stack()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = (("x-request-id", "req-123"), ("traceparent", traceparent))
    await stack.stub.Predict(REQUEST, timeout=10, metadata=metadata)
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.headers["x-request-id"] == "req-123"
    assert sync.headers["traceparent"] == traceparent
