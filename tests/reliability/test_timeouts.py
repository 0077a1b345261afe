"""Time: the caller's deadline, less `timeouts.deadline_margin`, bounds each upstream request; without a
deadline `timeouts.sync`, `submit` and `poll` apply, and WaitAsyncTask waits at most `timeouts.max_wait`."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
import pytest
from aiohttp import web

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, StackFactory, upstream_calls
from tests.ops.conftest import http_get, samples

REQUEST = pb.EndpointRequest(args_json="{}")
SLEEPER = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 30}'))
RECORDS = {
    "sync": {"id": "end_s", "name": "sync", "endpoint_type": "sync", "status": "READY"},
    "async": {"id": "end_a", "name": "async", "endpoint_type": "async", "status": "READY"},
}
LONG = {"sync": 30.0, "submit": 30.0, "poll": 30.0}  # every timeout but the one under test


async def test_a_deadline_within_the_margin_never_reaches_the_upstream(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"timeouts": {"deadline_margin": 5.0}})
    echo = pb.PredictRequest(endpoint_name="echo", request=REQUEST)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(echo, timeout=3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline leaves no time for the upstream request" in (caught.value.details() or "")
    assert upstream_calls(stack.launch) == []
    reply = await stack.stub.Predict(echo, timeout=30)  # a deadline beyond the margin leaves time
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


async def test_the_margin_is_kept_back_so_the_gateway_answers_before_the_deadline(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"timeouts": {"deadline_margin": 0.5}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(SLEEPER, timeout=1.0)
    # The gateway's own answer (not grpc-core's "Deadline Exceeded"), and the upstream request got what
    # was left of the caller's second after the margin: less than half of it.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    match = re.search(r"upstream POST /v1/sync-tasks: no answer within ([0-9.]+) s", caught.value.details() or "")
    assert match is not None, caught.value.details()
    assert float(match[1]) < 0.5
    record = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert await record.wait_done(5) == "disconnected"


async def hang(request: web.Request) -> web.StreamResponse:
    """Endpoint lookups of `sync` and `async` answer at once (`hang` in the name: never); all else hangs."""
    name = request.query.get("name", "")
    if request.path == "/v1/model-endpoints" and name in RECORDS:
        return web.json_response({"model_endpoints": [RECORDS[name]]})
    if request.path == "/v1/model-endpoints" and name != "hang":
        return web.json_response({"model_endpoints": []})  # the readiness probe
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


CALLS: dict[str, Any] = {
    "Predict": lambda stub: stub.Predict(pb.PredictRequest(endpoint_name="sync", request=REQUEST)),
    "SubmitAsync": lambda stub: stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="async", request=REQUEST)),
    "GetAsyncTask": lambda stub: stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t-1")),
    "GetEndpoint": lambda stub: stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="hang")),
}


@pytest.mark.parametrize(
    ("rpc", "setting", "route"),
    [
        ("Predict", "sync", "POST /v1/sync-tasks"),
        ("SubmitAsync", "submit", "POST /v1/async-tasks"),
        ("GetAsyncTask", "poll", "GET /v1/async-tasks/t-1"),
        ("GetEndpoint", "poll", "GET /v1/model-endpoints"),
    ],
    ids=["Predict-sync", "SubmitAsync-submit", "GetAsyncTask-poll", "GetEndpoint-poll"],
)
async def test_without_a_deadline_the_rpcs_own_timeout_applies(
    make_stack: StackFactory, raw_upstream: RawUpstream, rpc: str, setting: str, route: str
) -> None:
    timeouts = {**LONG, setting: 0.2}
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(hang)}, "timeouts": timeouts})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(CALLS[rpc](stack.stub), 10)  # no gRPC deadline; the test's own bound
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert f"upstream {route}: no answer within 0.2 s" in (caught.value.details() or "")


async def test_a_wait_without_timeout_or_deadline_ends_after_max_wait(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"timeouts": {"max_wait": 0.2}})
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 30}'))
    task = await stack.stub.SubmitAsync(submit, timeout=10)
    wait = stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task.task_id))  # no timeout, no deadline
    reply = await asyncio.wait_for(wait, 10)
    assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}  # the last status, no error


async def test_a_waits_first_look_ends_at_the_callers_deadline_with_the_gateways_own_status(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(hang)}, "timeouts": LONG})
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the first poll of t-1 never answers
        await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id="t-1"), timeout=2)
    # The gateway's answer within the deadline, not grpc-core's bare "Deadline Exceeded" after poll's 30 s.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no poll of the task answered within the call's deadline" in (caught.value.details() or ""), (
        caught.value.details()
    )
    _, scrape = await http_get(stack, "/metrics")
    handled = samples(scrape, "grpc_server_handled_total")
    waits = {series: n for series, n in handled.items() if 'grpc_method="WaitAsyncTask"' in series and n}
    assert list(waits.values()) == [1.0], waits
    assert 'grpc_code="DeadlineExceeded"' in next(iter(waits)), waits
