"""Issue 12 §2: what the gateway should do where model-engine's real behaviour differs from our imitation's.

Each test drives model-engine into one of the cases the issue lists under "Why" and asserts the
gateway's behaviour that §2 asks for (or, for callbacks, that our imitation matches model-engine).
They fail until that work lands; they are not marked xfail on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import timedelta
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2

from launch_gateway import EndpointRequest, GatewayClient, SyncEndpoint
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conformance.conftest import ASYNC, OWNER, STREAMING, SYNC, Control, Gateway
from tests.conftest import RawUpstream, StackFactory, collect, error_info


def wait_for(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    timeout = duration_pb2.Duration()
    timeout.FromTimedelta(timedelta(seconds=seconds))
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout)


# --- capacity is not a model failure -------------------------------------------------------
# The pod answers 429 (or 503) on every try; model-engine retries for about 10 s, then answers
# HTTP 200 {"status": "FAILURE", "status_code": 429, "traceback": "Too many concurrent requests"}.

CAPACITY = [
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many concurrent requests"),
    (503, grpc.StatusCode.UNAVAILABLE, "No healthy upstream"),
]


@pytest.mark.parametrize(("pod_status", "code", "text"), CAPACITY, ids=["429", "503"])
async def test_predict_on_a_throttled_endpoint_is_a_capacity_error(
    gateway: Gateway, control: Control, pod_status: int, code: grpc.StatusCode, text: str
) -> None:
    await control.script("predict", status=pod_status, body={"error": "busy"}, times=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Predict(
            pb.PredictRequest(endpoint_name=SYNC, request=pb.EndpointRequest(args_json="{}")), timeout=50
        )
    assert caught.value.code() == code
    assert text in (caught.value.details() or "")
    info = error_info(caught.value)
    assert info is not None
    assert str(pod_status) in dict(info.metadata).values()


async def test_stream_on_a_throttled_endpoint_is_resource_exhausted(gateway: Gateway, control: Control) -> None:
    await control.script("stream", status=429, body={"error": "busy"}, times=None)
    call = gateway.stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name=STREAMING, request=pb.EndpointRequest(args_json="{}")), timeout=50
    )
    replies: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call, replies)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Too many concurrent requests" in (caught.value.details() or "")
    assert replies == []


# --- a stream that ends without an event is not OK ------------------------------------------


async def test_stream_refused_by_the_model_ends_with_an_error_not_an_empty_success(
    gateway: Gateway, control: Control
) -> None:
    # The pod answers 400: model-engine has already sent 200 text/event-stream, and ends it empty.
    await control.script("stream", status=400, body={"error": "prompt too long"})
    call = gateway.stub.StreamPredict(
        pb.StreamPredictRequest(endpoint_name=STREAMING, request=pb.EndpointRequest(args_json="{}")), timeout=50
    )
    replies: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call, replies)
    assert replies == []
    assert caught.value.code() != grpc.StatusCode.OK
    assert re.search(r"without (an|any|a single) event", caught.value.details() or ""), caught.value.details()


# --- args is any JSON value ---------------------------------------------------------------


@pytest.mark.parametrize("args", [[1, "two", {"three": 3}], "a prompt"], ids=["list", "string"])
async def test_args_json_carries_any_json_value(gateway: Gateway, control: Control, args: Any) -> None:
    request = pb.EndpointRequest(args_json=json.dumps(args))
    reply = await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request), timeout=50)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    # model-engine's forwarder sends `args` as the whole payload
    assert await control.seen() == [{"route": "predict", "body": args}]
    assert json.loads(reply.response.result) == args


@pytest.mark.parametrize("args", [42, 2.5, True, None], ids=["int", "float", "bool", "null"])
async def test_scalar_args_reach_launch_and_its_answer_comes_back(
    gateway: Gateway, control: Control, args: Any
) -> None:
    """The gateway passes a scalar on; model-engine's own forwarder then fails on it.

    Its `_get_serialize_results_as_string_value` tests `KEY in payload` on the unwrapped args, a
    TypeError for a number, a bool or null, and Launch answers FAILURE with status_code 500: the
    model's failure, relayed as data, never the gateway's INVALID_ARGUMENT.
    """
    request = pb.EndpointRequest(args_json=json.dumps(args))
    reply = await gateway.stub.Predict(pb.PredictRequest(endpoint_name=SYNC, request=request), timeout=50)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert reply.response.status_code == 500


async def test_sdk_args_accepts_a_list(gateway: Gateway, control: Control) -> None:
    client = GatewayClient(gateway.server.address, timeout=50)

    def run() -> Any:
        endpoint = client.get_model_endpoint(SYNC)
        assert isinstance(endpoint, SyncEndpoint)
        return json.loads(endpoint.predict(EndpointRequest(args=["a", 1])).result or "null")  # type: ignore[arg-type]

    try:
        assert await asyncio.to_thread(run) == ["a", 1]
    finally:
        client.close()


# --- async runnable images: a non-2xx answer is SUCCESS with its status code ------------------


async def test_async_task_whose_container_answered_500_is_success_with_status_code_500(
    gateway: Gateway, control: Control
) -> None:
    await control.script("predict", status=500, body={"error": "model crashed"})
    submitted = await gateway.stub.SubmitAsync(
        pb.SubmitAsyncRequest(endpoint_name=ASYNC, request=pb.EndpointRequest(args_json="{}")), timeout=30
    )
    await control.task(await control.last_task_id(), "run")
    reply = await gateway.stub.WaitAsyncTask(wait_for(submitted.task_id, 20), timeout=30)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert reply.response.status_code == 500
    assert json.loads(reply.response.result) == {"error": "model crashed"}


# --- callbacks: the imitation posts what model-engine posts ---------------------------------


class Callbacks:
    """A callback server: each POST is kept as (path, Authorization, JSON body); `arrived` fires per path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None, Any]] = []
        self.arrived: dict[str, asyncio.Event] = {}

    def event(self, path: str) -> asyncio.Event:
        return self.arrived.setdefault(path, asyncio.Event())

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, request.headers.get("Authorization"), await request.json()))
        self.event(request.path).set()
        return web.json_response({})

    def at(self, path: str) -> list[tuple[str | None, Any]]:
        return [(auth, body) for p, auth, body in self.received if p == path]


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def submit_with_callback(stub: Any, endpoint: str, url: str, args: dict[str, Any]) -> str:
    request = pb.EndpointRequest(args_json=json.dumps(args), callback_url=url)
    reply = await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name=endpoint, request=request), timeout=30)
    return str(reply.task_id)


async def test_callbacks_of_the_imitation_match_model_engines(
    gateway: Gateway, control: Control, make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    callbacks = Callbacks()
    base = await raw_upstream(callbacks.handle)

    # model-engine: the worker's callback hook posts the result dict plus task_id, Basic (owner, "")
    await submit_with_callback(gateway.stub, ASYNC, base + "/model-engine", {"x": 1})
    await control.task(await control.last_task_id(), "run")
    await asyncio.wait_for(callbacks.event("/model-engine").wait(), 30)
    [(me_auth, me_body)] = callbacks.at("/model-engine")
    assert me_auth == basic(OWNER)
    assert set(me_body) == {"result", "status_code", "task_id"}

    # the imitation, through a gateway in front of it: the same shape and the same kind of auth
    stack = await make_stack()
    await submit_with_callback(stack.stub, "echo-async", base + "/imitation", {"x": 1, "delay": 0})
    await asyncio.wait_for(callbacks.event("/imitation").wait(), 30)
    [(im_auth, im_body)] = callbacks.at("/imitation")
    assert set(im_body) == set(me_body)
    assert im_body["status_code"] == me_body["status_code"]
    assert im_auth is not None
    assert im_auth.startswith("Basic ")
    assert base64.b64decode(im_auth.split(" ", 1)[1]).decode().endswith(":")  # the owner, no password


async def test_no_callback_is_sent_for_a_failed_task_by_either(
    gateway: Gateway, control: Control, make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    callbacks = Callbacks()
    base = await raw_upstream(callbacks.handle)

    # model-engine: the container's answer is not JSON, the forwarder raises, the task FAILs; the
    # hook is handed the exception and sends nothing (its `response["task_id"] = ...` raises).
    await control.script("predict", status=200, text="not json")
    handle = await submit_with_callback(gateway.stub, ASYNC, base + "/model-engine", {})
    await control.task(await control.last_task_id(), "run")  # returns after the hook has run
    reply = await gateway.stub.WaitAsyncTask(wait_for(handle, 20), timeout=30)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert callbacks.at("/model-engine") == []

    stack = await make_stack()
    handle = await submit_with_callback(stack.stub, "fail-async", base + "/imitation", {"delay": 0})
    reply = await stack.stub.WaitAsyncTask(wait_for(handle, 20), timeout=30)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    # The imitation delivers callbacks in the background: give a callback time to arrive.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(callbacks.event("/imitation").wait(), 2)
    assert callbacks.at("/imitation") == []
