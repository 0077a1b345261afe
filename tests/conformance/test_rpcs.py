"""Every RPC, and the SDK for each endpoint kind, through the gateway against model-engine's real app."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import grpc
import pytest
from google.protobuf import duration_pb2

from launch_gateway import AsyncEndpoint, EndpointRequest, GatewayClient, StreamingEndpoint, SyncEndpoint
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conformance.conftest import ASYNC, STREAMING, SYNC, Control, Gateway
from tests.conftest import collect


def request_with(args: dict[str, object]) -> pb.EndpointRequest:
    return pb.EndpointRequest(args_json=json.dumps(args))


def wait_for(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    timeout = duration_pb2.Duration()
    timeout.FromTimedelta(timedelta(seconds=seconds))
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout)


@pytest.mark.parametrize(
    ("name", "endpoint_id", "kind"),
    [
        (SYNC, "test_model_endpoint_id_2", pb.ENDPOINT_KIND_SYNC),
        (ASYNC, "test_model_endpoint_id_1", pb.ENDPOINT_KIND_ASYNC),
        (STREAMING, "test_model_endpoint_id_streaming", pb.ENDPOINT_KIND_STREAMING),
    ],
    ids=["sync", "async", "streaming"],
)
async def test_get_endpoint_describes_each_kind(gateway: Gateway, name: str, endpoint_id: str, kind: int) -> None:
    reply = await gateway.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name=name), timeout=30)
    assert (reply.endpoint.id, reply.endpoint.name, reply.endpoint.kind) == (endpoint_id, name, kind)
    assert reply.endpoint.status == "READY"


async def test_get_endpoint_of_an_unknown_name_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="no-such-endpoint"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_predict_returns_the_models_result(gateway: Gateway, control: Control) -> None:
    args = {"question": "6 x 7", "n": 42, "nested": {"ok": True}}
    reply = await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request_with(args)), timeout=60)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == args
    assert reply.response.status_code == 200
    assert await control.seen() == [{"route": "predict", "body": args}]  # the forwarder unwrapped args


async def test_predict_with_a_struct_sends_the_same_args(gateway: Gateway, control: Control) -> None:
    request = pb.EndpointRequest()
    request.args.update({"text": "hello", "k": 3})
    reply = await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request), timeout=60)
    assert json.loads(reply.response.result) == {"text": "hello", "k": 3}
    assert (await control.seen())[0]["body"] == {"text": "hello", "k": 3}


async def test_predict_a_model_error_is_failure_data_with_its_traceback(gateway: Gateway, control: Control) -> None:
    await control.script("predict", status=500, body={"detail": {"traceback": "Traceback: ZeroDivisionError"}})
    reply = await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request_with({})), timeout=60)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert reply.response.status_code == 500
    assert reply.response.traceback == "Traceback: ZeroDivisionError"


async def test_predict_a_model_refusal_is_invalid_argument(gateway: Gateway, control: Control) -> None:
    await control.script("predict", status=400, body={"error": "prompt too long"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request_with({})), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt too long" in (caught.value.details() or "")


async def test_predict_on_an_async_endpoint_is_refused(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Predict(pb.PredictRequest(endpoint_name=ASYNC, request=request_with({})), timeout=60)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_async_task_goes_pending_started_success(gateway: Gateway, control: Control) -> None:
    args = {"question": "6 x 7"}
    submitted = await gateway.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name=ASYNC, request=request_with(args)), timeout=30
    )
    assert submitted.task_id
    task_id = await control.last_task_id()
    assert (await control.tasks())[-1]["request"]["args"] == args

    first = await gateway.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=submitted.task_id), timeout=30)
    assert first.response.status == pb.TASK_STATUS_PENDING
    assert first.response.task_id == submitted.task_id

    await control.task(task_id, "start")
    started = await gateway.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=submitted.task_id), timeout=30)
    assert started.response.status == pb.TASK_STATUS_STARTED

    await control.task(task_id, "run")  # through the forwarder to the echo model
    done = await gateway.stub.WaitAsyncTask(wait_for(submitted.task_id, 20), timeout=30)
    assert done.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(done.response.result) == args
    assert done.response.status_code == 200
    assert done.response.task_id == submitted.task_id


async def test_wait_async_task_returns_once_the_task_finishes(gateway: Gateway, control: Control) -> None:
    submitted = await gateway.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name=ASYNC, request=request_with({})), timeout=30
    )
    task_id = await control.last_task_id()
    waiting = asyncio.ensure_future(gateway.stub.WaitAsyncTask(wait_for(submitted.task_id, 30), timeout=40))
    await asyncio.sleep(0.5)  # the wait has polled at least once and seen PENDING
    assert not waiting.done()
    await control.task(task_id, "succeed", result={"result": json.dumps({"answer": 42})})
    reply = await waiting
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == {"answer": 42}


async def test_wait_async_task_with_a_short_timeout_returns_pending(gateway: Gateway, control: Control) -> None:
    submitted = await gateway.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name=ASYNC, request=request_with({})), timeout=30
    )
    reply = await gateway.stub.WaitAsyncTask(wait_for(submitted.task_id, 0.5), timeout=30)
    assert reply.response.status == pb.TASK_STATUS_PENDING


async def test_async_task_failure_is_failure_data_with_traceback(gateway: Gateway, control: Control) -> None:
    submitted = await gateway.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name=ASYNC, request=request_with({})), timeout=30
    )
    await control.task(await control.last_task_id(), "fail", message="boom")
    reply = await gateway.stub.WaitAsyncTask(wait_for(submitted.task_id, 20), timeout=30)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert "RuntimeError: boom" in reply.response.traceback
    assert reply.response.HasField("result")
    assert not reply.response.HasField("status_code")


async def test_submit_async_on_a_sync_endpoint_is_refused(gateway: Gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name=SYNC, request=request_with({})), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_stream_predict_relays_each_event_in_order(gateway: Gateway, control: Control) -> None:
    chunks = ["Hello", ", ", {"token": "world", "i": 2}, 3]
    call = gateway.stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name=STREAMING, request=request_with({"chunks": chunks})), timeout=60
    )
    replies: list[pb.StreamPredictResponse] = []
    await collect(call, replies)
    assert await call.code() == grpc.StatusCode.OK
    assert [r.response.status for r in replies] == [pb.TASK_STATUS_SUCCESS] * len(chunks)
    assert [json.loads(r.response.result) for r in replies] == chunks
    assert {r.response.status_code for r in replies} == {200}


async def test_stream_predict_a_model_error_ends_with_a_failure_event(gateway: Gateway, control: Control) -> None:
    # model-engine does not retry a 500: the stream carries one FAILURE event, then ends.
    await control.script("stream", status=500, body={"detail": {"traceback": "Traceback: CUDA OOM"}})
    call = gateway.stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name=STREAMING, request=request_with({})), timeout=60
    )
    replies: list[pb.StreamPredictResponse] = []
    await collect(call, replies)
    assert [(r.response.status, r.response.status_code) for r in replies] == [(pb.TASK_STATUS_FAILURE, 500)]


async def test_predict_on_a_streaming_endpoint_returns_the_stream_as_one_response(
    gateway: Gateway, control: Control
) -> None:
    # Launch's sync-tasks takes streaming endpoints too; the pod's /predict answers.
    reply = await gateway.stub.Predict(
        pb.PredictRequest(endpoint_name=STREAMING, request=request_with({"a": 1})), timeout=60
    )
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == {"a": 1}


# --- the SDK: the Launch client's objects, blocking calls in a thread (the gateway shares this loop)


@pytest.fixture
def client(gateway: Gateway) -> GatewayClient:
    return GatewayClient(gateway.server.address, timeout=60)


async def test_sdk_sync_endpoint_predict(client: GatewayClient, control: Control) -> None:
    def run() -> tuple[object, object]:
        endpoint = client.get_model_endpoint(SYNC)
        assert isinstance(endpoint, SyncEndpoint)
        response = endpoint.predict(EndpointRequest(args={"x": [1, 2, 3]}))
        return response.status, json.loads(response.result or "null")

    try:
        assert await asyncio.to_thread(run) == ("SUCCESS", {"x": [1, 2, 3]})
    finally:
        client.close()


async def test_sdk_async_endpoint_predict_then_get(client: GatewayClient, control: Control) -> None:
    def submit() -> object:
        endpoint = client.get_model_endpoint(ASYNC)
        assert isinstance(endpoint, AsyncEndpoint)
        return endpoint.predict(EndpointRequest(args={"x": 1}))

    try:
        future = await asyncio.to_thread(submit)
        await control.task(await control.last_task_id(), "run")
        response = await asyncio.to_thread(future.get, 30)  # type: ignore[attr-defined]
        assert (response.status, json.loads(response.result)) == ("SUCCESS", {"x": 1})
    finally:
        client.close()


async def test_sdk_streaming_endpoint_predict(client: GatewayClient, control: Control) -> None:
    def run() -> list[object]:
        endpoint = client.get_model_endpoint(STREAMING)
        assert isinstance(endpoint, StreamingEndpoint)
        return [json.loads(r.result or "null") for r in endpoint.predict(EndpointRequest(args={"chunks": ["a", "b"]}))]

    try:
        assert await asyncio.to_thread(run) == ["a", "b"]
    finally:
        client.close()
