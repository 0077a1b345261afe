"""Issue 12 §2 in the gateway: Launch's capacity FAILUREs as errors, a stream with no event as an error,
any JSON value as `args`, `extra_headers` on the upstream request, and ListEndpoints with the record's
status, resource_state and deployment_state.

Where the local Launch server cannot play model-engine's answer (a FAILURE with status_code 429 after
its retries, a 200 event stream with no event), an upstream answering as model-engine does plays it
(`raw_upstream`); the rest run against the local Launch server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, answer_lookup, collect, upstream_calls
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ARGS = pb.EndpointRequest(args_json="{}")
# What model-engine's live inference gateways answer once their retries are spent.
THROTTLED = {"status": "FAILURE", "result": None, "traceback": "Too many concurrent requests", "status_code": 429}
NO_PODS = {"status": "FAILURE", "result": None, "traceback": "No healthy upstream", "status_code": 503}
MODEL_FAILED = {"status": "FAILURE", "result": None, "traceback": "ValueError: bad input", "status_code": 500}
RESOURCE_STATE = {"cpus": "1", "gpus": 1, "memory": "4Gi", "gpu_type": "nvidia-ampere-a10", "nodes_per_worker": 1}
DEPLOYMENT_STATE = {"min_workers": 1, "max_workers": 3, "per_worker": 2, "concurrent_requests_per_worker": 4}


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)
    found: dict[str, Any] = {}
    for detail in status.details if status is not None else ():
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def record(kind: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"end_{kind}", "name": kind, "endpoint_type": kind, "status": "READY", **extra}


def launch_like(task: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    """An upstream with one endpoint per kind (named by its kind) whose task routes `task` answers."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, record("sync"), record("async"), record("streaming"))) is not None:
            return lookup
        return await task(request)

    return handle


def json_answer(body: dict[str, Any]) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(body)

    return answer


def event_stream(*events: dict[str, Any]) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
        await response.write_eof()
        return response

    return answer


async def stack_on(make_stack: StackFactory, raw_upstream: RawUpstream, task: Handler) -> Stack:
    return await make_stack(settings={"upstream": {"url": await raw_upstream(launch_like(task))}})


# --- capacity is not a model failure -------------------------------------------------------

CAPACITY = [
    pytest.param(THROTTLED, grpc.StatusCode.RESOURCE_EXHAUSTED, "ENDPOINT_OVERLOADED", id="429"),
    pytest.param(NO_PODS, grpc.StatusCode.UNAVAILABLE, "ENDPOINT_UNAVAILABLE", id="503"),
]


@pytest.mark.parametrize(("answer", "code", "reason"), CAPACITY)
async def test_predict_on_an_endpoint_without_capacity_is_a_capacity_error(
    make_stack: StackFactory, raw_upstream: RawUpstream, answer: dict[str, Any], code: grpc.StatusCode, reason: str
) -> None:
    stack = await stack_on(make_stack, raw_upstream, json_answer(answer))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="sync", request=ARGS), timeout=10)
    assert caught.value.code() == code
    assert answer["traceback"] in (caught.value.details() or "")
    info = details(caught.value)["ErrorInfo"]
    assert info.reason == reason
    assert dict(info.metadata) == {"endpoint_status_code": str(answer["status_code"])}


async def test_a_capacity_errors_message_quotes_a_bounded_traceback(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    stack = await stack_on(make_stack, raw_upstream, json_answer({**THROTTLED, "traceback": "x" * 100_000}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="sync", request=ARGS), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len((caught.value.details() or "").encode()) <= 1024
    assert "(100000 characters)" in (caught.value.details() or "")


async def test_a_model_failure_with_another_status_code_stays_data(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    stack = await stack_on(make_stack, raw_upstream, json_answer(MODEL_FAILED))
    reply = await stack.stub.Predict(pb.PredictRequest(endpoint_name="sync", request=ARGS), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert reply.response.status_code == 500
    assert reply.response.traceback == "ValueError: bad input"


async def test_a_model_failure_of_the_local_launch_server_stays_data(stack: Stack) -> None:
    reply = await stack.stub.Predict(pb.PredictRequest(endpoint_name="fail", request=ARGS), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_FAILURE


@pytest.mark.parametrize(("answer", "code", "reason"), CAPACITY)
@pytest.mark.parametrize("rpc", ["GetAsyncTask", "WaitAsyncTask"])
async def test_an_async_task_that_failed_for_capacity_is_a_capacity_error(
    make_stack: StackFactory,
    raw_upstream: RawUpstream,
    rpc: str,
    answer: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    polls = 0

    async def task(request: web.Request) -> web.StreamResponse:
        nonlocal polls
        if request.path == "/v1/async-tasks":
            return web.json_response({"task_id": "t-1"})
        polls += 1
        return web.json_response({"task_id": "t-1", **answer})

    stack = await stack_on(make_stack, raw_upstream, task)
    submitted = await stack.stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="async", request=ARGS), timeout=10)
    look = (
        stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=submitted.task_id), timeout=10)
        if rpc == "GetAsyncTask"
        else stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=submitted.task_id), timeout=10)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await look
    assert caught.value.code() == code
    assert answer["traceback"] in (caught.value.details() or "")
    assert details(caught.value)["ErrorInfo"].reason == reason
    assert polls == 1  # a terminal task: the wait ends at its first answer, it does not poll on


@pytest.mark.parametrize(("answer", "code", "reason"), CAPACITY)
async def test_a_stream_whose_event_is_a_capacity_failure_ends_with_the_capacity_error(
    make_stack: StackFactory, raw_upstream: RawUpstream, answer: dict[str, Any], code: grpc.StatusCode, reason: str
) -> None:
    stack = await stack_on(make_stack, raw_upstream, event_stream(answer))
    replies: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="streaming", request=ARGS)), replies
        )
    assert caught.value.code() == code
    assert replies == []
    assert details(caught.value)["ErrorInfo"].reason == reason


async def test_a_streams_events_before_a_capacity_failure_are_delivered(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    first = {"status": "SUCCESS", "result": {"token": "a"}, "status_code": 200}
    stack = await stack_on(make_stack, raw_upstream, event_stream(first, THROTTLED))
    replies: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="streaming", request=ARGS)), replies
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [json.loads(r.response.result) for r in replies] == [{"token": "a"}]


async def test_a_stream_failure_of_the_model_stays_an_event(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    stack = await stack_on(make_stack, raw_upstream, event_stream(MODEL_FAILED))
    replies: list[pb.StreamPredictResponse] = []
    await collect(stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="streaming", request=ARGS)), replies)
    assert [r.response.status for r in replies] == [pb.TASK_STATUS_FAILURE]


# --- a stream without an event is not OK ---------------------------------------------------


async def test_a_stream_that_ends_without_an_event_is_failed_precondition(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    # model-engine's answer when the model's pod refuses a streaming request with 400.
    stack = await stack_on(make_stack, raw_upstream, event_stream())
    replies: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="streaming", request=ARGS)), replies
        )
    assert replies == []
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ended the stream without an event" in (caught.value.details() or "")
    assert "refuses the request" in (caught.value.details() or "")
    assert details(caught.value)["ErrorInfo"].reason == "UPSTREAM_STREAM_EMPTY"


# --- args is any JSON value ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[1, "two", {"three": 3}], "a prompt", 42, 2.5, True, None],
    ids=["list", "str", "int", "float", "bool", "null"],
)
async def test_args_json_carries_any_json_value_upstream(stack: Stack, args: Any) -> None:
    request = pb.EndpointRequest(args_json=json.dumps(args))
    await stack.stub.Predict(pb.PredictRequest(endpoint_name="echo", request=request), timeout=10)
    (sent,) = [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]
    assert json.loads(sent.body)["args"] == args


async def test_struct_args_stay_an_object(stack: Stack) -> None:
    request = pb.EndpointRequest()
    request.args.update({"n": 1})
    await stack.stub.Predict(pb.PredictRequest(endpoint_name="echo", request=request), timeout=10)
    (sent,) = [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]
    assert json.loads(sent.body)["args"] == {"n": 1}


# --- extra_headers -------------------------------------------------------------------------


async def test_extra_headers_go_upstream_on_the_task_request_of_each_kind(stack: Stack) -> None:
    headers = {"X-Team-Tag": "search", "x-priority": "low"}
    request = pb.EndpointRequest(args_json="{}", extra_headers=headers)
    await stack.stub.Predict(pb.PredictRequest(endpoint_name="echo", request=request), timeout=10)
    await stack.stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="echo-async", request=request), timeout=10)
    stream_request = pb.EndpointRequest(args_json='{"n": 1}', extra_headers=headers)
    await collect(stack.stub.StreamPredict(pb.StreamPredictRequest(endpoint_name="count", request=stream_request)), [])
    calls = upstream_calls(stack.launch)
    tasks = [r for r in calls if r.path != "/v1/model-endpoints"]
    assert [r.path for r in tasks] == ["/v1/sync-tasks", "/v1/async-tasks", "/v1/streaming-tasks"]
    for sent in tasks:
        assert sent.headers["x-team-tag"] == "search"
        assert sent.headers["x-priority"] == "low"
        assert sent.headers["content-type"] == "application/json"  # the gateway's own stay
    assert all("x-team-tag" not in r.headers for r in calls if r.path == "/v1/model-endpoints")


REFUSED = [
    pytest.param({"Authorization": "Basic eDo="}, 'request.extra_headers["Authorization"]', id="authorization"),
    pytest.param({"host": "evil"}, 'request.extra_headers["host"]', id="host"),
    pytest.param({"Transfer-Encoding": "chunked"}, 'request.extra_headers["Transfer-Encoding"]', id="hop-by-hop"),
    pytest.param({"Proxy-Authorization": "x"}, 'request.extra_headers["Proxy-Authorization"]', id="proxy-*"),
    pytest.param({"content-length": "1"}, 'request.extra_headers["content-length"]', id="content-length"),
    pytest.param({"x-request-id": "mine"}, 'request.extra_headers["x-request-id"]', id="request-id"),
    pytest.param({"traceparent": "00-x"}, 'request.extra_headers["traceparent"]', id="traceparent"),
    pytest.param({"bad name": "x"}, 'request.extra_headers["bad name"]', id="not-a-token"),
    pytest.param({"x-a": "one\r\nx-b: two"}, 'request.extra_headers["x-a"]', id="crlf-in-value"),
    pytest.param({f"x-{i}": "v" for i in range(33)}, "request.extra_headers", id="too-many"),
    pytest.param({"x-big": "v" * 9000}, "request.extra_headers", id="too-large"),
]


@pytest.mark.parametrize(("headers", "field"), REFUSED)
async def test_extra_headers_the_gateway_does_not_pass_on_are_invalid_argument(
    stack: Stack, headers: dict[str, str], field: str
) -> None:
    request = pb.EndpointRequest(args_json="{}", extra_headers=headers)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="echo", request=request), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(caught.value)["BadRequest"].field_violations
    assert violation.field == field
    assert not [r for r in upstream_calls(stack.launch) if r.path == "/v1/sync-tasks"]


# --- ListEndpoints and the record's states ---------------------------------------------------


async def test_list_endpoints_lists_launchs_endpoints(stack: Stack) -> None:
    reply = await stack.stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=10)
    kinds = {endpoint.name: endpoint.kind for endpoint in reply.endpoints}
    assert kinds["echo"] == pb.ENDPOINT_KIND_SYNC
    assert kinds["echo-async"] == pb.ENDPOINT_KIND_ASYNC
    assert kinds["count"] == pb.ENDPOINT_KIND_STREAMING
    assert all(endpoint.status == "READY" and endpoint.id for endpoint in reply.endpoints)
    listed = [r for r in upstream_calls(stack.launch) if r.path == "/v1/model-endpoints"]
    assert [r.query.get("name") for r in listed] == [None]


async def test_list_endpoints_shows_only_the_tenants_allowed_endpoints(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=[LAUNCH_KEY_A, KEY_B], settings={"tenants": tenants()}, gateway_env=ENV)
    team_a = await stack.stub.ListEndpoints(pb.ListEndpointsRequest(), metadata=bearer(KEY_A), timeout=10)
    assert sorted(e.name for e in team_a.endpoints) == ["count", "describe", "echo", "echo-async", "sleep"]
    team_b = await stack.stub.ListEndpoints(pb.ListEndpointsRequest(), metadata=bearer(KEY_B), timeout=10)
    assert sorted(e.name for e in team_b.endpoints) == ["echo", "echo-async"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_endpoints_carry_the_records_status_resource_state_and_deployment_state(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    states = {
        "status": "UPDATE_FAILED",
        "status_reason": "image pull failed",
        "resource_state": RESOURCE_STATE,
        "deployment_state": DEPLOYMENT_STATE,
    }

    async def handle(request: web.Request) -> web.StreamResponse:
        records = [record("sync", **states), record("async", resource_state=None)]
        name = request.query.get("name")
        return web.json_response({"model_endpoints": [r for r in records if name in (None, r["name"])]})

    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(handle)}})
    described = (await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="sync"), timeout=10)).endpoint
    listed = (await stack.stub.ListEndpoints(pb.ListEndpointsRequest(), timeout=10)).endpoints
    assert listed[0] == described
    assert described.status == "UPDATE_FAILED"
    assert described.status_reason == "image pull failed"
    assert json_format.MessageToDict(described.resource_state) == RESOURCE_STATE
    assert json_format.MessageToDict(described.deployment_state) == DEPLOYMENT_STATE
    bare = listed[1]
    assert bare.name == "async"
    assert not bare.HasField("resource_state")
    assert not bare.HasField("deployment_state")
    assert not bare.HasField("status_reason")
