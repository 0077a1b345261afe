"""Predict and GetEndpoint through a real gateway and a real local Launch server."""

from __future__ import annotations

import json
import pickle
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, upstream_calls


def predict_request(endpoint: str, **args: object) -> pb.PredictRequest:
    request = pb.PredictRequest(endpoint_name=endpoint, request=pb.EndpointRequest())
    request.request.args.SetInParent()  # args={} is still an input
    request.request.args.update(args)
    return request


async def finish(call: Any) -> None:
    """Await a unary call, or drain a streaming one."""
    if hasattr(call, "__aiter__"):
        async for _ in call:
            pass
    else:
        await call


async def test_predict_returns_the_result_as_json_text(stack: Stack) -> None:
    reply = await stack.stub.Predict(predict_request("echo", text="hi", n=3), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == {"text": "hi", "n": 3}
    assert reply.response.status_code == 200
    assert not reply.response.HasField("traceback")


async def test_model_failure_is_a_successful_rpc_with_status_failure(stack: Stack) -> None:
    reply = await stack.stub.Predict(predict_request("fail", message="bad input"), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert "ValueError: bad input" in reply.response.traceback
    assert reply.response.status_code == 500


async def test_unknown_endpoint_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(predict_request("no-such-endpoint"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-endpoint" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("rpc", "endpoint", "kind", "right_rpc"),
    [
        ("Predict", "echo-async", "async", "SubmitAsync"),
        ("SubmitAsync", "echo", "sync", "Predict"),
        ("StreamPredict", "echo-async", "async", "SubmitAsync"),
        ("StreamPredict", "echo", "sync", "Predict"),
    ],
)
async def test_wrong_kind_is_failed_precondition_naming_the_real_kind(
    stack: Stack, rpc: str, endpoint: str, kind: str, right_rpc: str
) -> None:
    request_type = {
        "Predict": pb.PredictRequest,
        "SubmitAsync": pb.SubmitAsyncRequest,
        "StreamPredict": pb.StreamPredictRequest,
    }[rpc]
    request = request_type(endpoint_name=endpoint, request=pb.EndpointRequest(args_json="{}"))
    before = len([r for r in stack.launch.records if "-tasks" in r.path])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await finish(getattr(stack.stub, rpc)(request, timeout=10))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    article = "an" if kind == "async" else "a"
    assert f"is {article} {kind} endpoint; call it with {right_rpc}" in (caught.value.details() or "")
    assert len([r for r in stack.launch.records if "-tasks" in r.path]) == before  # no task call was made


async def test_predict_is_allowed_on_a_streaming_endpoint_as_launch_allows(stack: Stack) -> None:
    # Launch sends it to the container's predict route; `count` has none, so its container says 404.
    reply = await stack.stub.Predict(predict_request("count", n=3, interval=0), timeout=10)
    assert [r.path for r in stack.launch.records if "-tasks" in r.path] == ["/v1/sync-tasks"]
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert reply.response.status_code == 404


async def test_struct_integers_reach_the_predict_function_as_ints(stack: Stack) -> None:
    reply = await stack.stub.Predict(predict_request("describe", n=3, x=0.5), timeout=10)
    assert json.loads(reply.response.result) == {
        "n": {"type": "int", "value": 3},
        "x": {"type": "float", "value": 0.5},
    }


async def test_args_json_carries_integers_beyond_two_to_the_53_exactly(stack: Stack) -> None:
    request = pb.PredictRequest(endpoint_name="describe", request=pb.EndpointRequest(args_json=f'{{"n": {2**60}}}'))
    reply = await stack.stub.Predict(request, timeout=10)
    assert json.loads(reply.response.result) == {"n": {"type": "int", "value": 2**60}}


async def test_return_pickled_gives_a_url_that_unpickles_to_the_value(stack: Stack) -> None:
    request = predict_request("echo", a=[1, 2])
    request.request.return_pickled = True
    reply = await stack.stub.Predict(request, timeout=10)
    assert not reply.response.HasField("result")
    async with aiohttp.ClientSession() as session, session.get(reply.response.result_url) as download:
        assert download.status == 200
        assert pickle.loads(await download.read()) == {"a": [1, 2]}


async def test_url_input_passes_the_files_bytes(stack: Stack) -> None:
    pickled = predict_request("echo", a=1)
    pickled.request.return_pickled = True
    url = (await stack.stub.Predict(pickled, timeout=10)).response.result_url
    request = pb.PredictRequest(endpoint_name="read-url", request=pb.EndpointRequest(url=url))
    reply = await stack.stub.Predict(request, timeout=10)
    assert json.loads(reply.response.result)["length"] == len(pickle.dumps({"a": 1}))


async def test_bad_request_is_invalid_argument_naming_the_field(stack: Stack) -> None:
    request = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{nope"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("request.args_json: not valid JSON")


async def test_get_endpoint_describes_id_kind_and_status(stack: Stack) -> None:
    reply = await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="count"), timeout=10)
    assert reply.endpoint.name == "count"
    assert reply.endpoint.id == stack.launch.endpoint_id("count")
    assert reply.endpoint.kind == pb.ENDPOINT_KIND_STREAMING
    assert reply.endpoint.status == "READY"


async def test_endpoint_lookups_are_cached(stack: Stack) -> None:
    for _ in range(5):
        await stack.stub.Predict(predict_request("echo", a=1), timeout=10)
    lookups = [r for r in upstream_calls(stack.launch) if r.path == "/v1/model-endpoints"]
    assert len(lookups) == 1


async def test_deadline_bounds_the_upstream_call_and_cancels_it(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(predict_request("sleep", seconds=30), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert await record.wait_done(5) == "disconnected"


async def test_caller_cancel_cancels_the_upstream_request(stack: Stack) -> None:
    call = stack.stub.Predict(predict_request("sleep", seconds=30), timeout=30)
    record = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    call.cancel()
    assert await record.wait_done(5) == "disconnected"


async def test_upstream_throttling_is_resource_exhausted_with_retry_info(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    async def too_many(_: web.Request) -> web.Response:
        return web.json_response({"error": "Too many requests"}, status=429, headers={"Retry-After": "3"})

    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(too_many)}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "answered HTTP 429: Too many requests" in (caught.value.details() or "")
    status = rpc_status.from_call(caught.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.seconds == 3
    assert dict(caught.value.trailing_metadata() or ()).get("retry-after") == "3"


async def test_connection_refused_is_unavailable(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"url": "http://127.0.0.1:9"}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot connect" in (caught.value.details() or "")
