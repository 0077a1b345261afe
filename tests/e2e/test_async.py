"""SubmitAsync, GetAsyncTask and WaitAsyncTask end to end, callbacks included."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, upstream_calls

TERMINAL = {pb.TASK_STATUS_SUCCESS, pb.TASK_STATUS_FAILURE, pb.TASK_STATUS_UNDEFINED}


async def submit(stack: Stack, endpoint: str = "echo-async", **args: Any) -> str:
    request = pb.SubmitAsyncRequest(endpoint_name=endpoint, request=pb.EndpointRequest())
    request.request.args.SetInParent()  # args={} is still an input
    request.request.args.update(args)
    return (await stack.stub.SubmitAsync(request, timeout=10)).task_id


def wait_request(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    timeout = duration_pb2.Duration()
    timeout.FromTimedelta(__import__("datetime").timedelta(seconds=seconds))
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout)


async def test_submit_then_wait_gives_the_result(stack: Stack) -> None:
    task_id = await submit(stack, delay=0.2, question="6 x 7")
    assert task_id
    reply = await stack.stub.WaitAsyncTask(wait_request(task_id, 10), timeout=15)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == {"delay": 0.2, "question": "6 x 7"}
    assert reply.response.task_id == task_id


async def test_get_async_task_sees_the_task_before_it_ends(stack: Stack) -> None:
    task_id = await submit(stack, delay=1.0)
    first = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert first.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}
    assert first.response.task_id == task_id
    final = await stack.stub.WaitAsyncTask(wait_request(task_id, 10), timeout=15)
    assert final.response.status == pb.TASK_STATUS_SUCCESS


async def test_wait_with_a_short_timeout_returns_the_non_terminal_status(stack: Stack) -> None:
    task_id = await submit(stack, delay=30)
    started = time.monotonic()
    reply = await stack.stub.WaitAsyncTask(wait_request(task_id, 0.3), timeout=10)
    elapsed = time.monotonic() - started
    assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}
    assert elapsed >= 0.3  # it waited for its timeout; the non-terminal status shows it did not wait for the task


async def test_wait_ends_at_the_callers_deadline_without_failing(stack: Stack) -> None:
    task_id = await submit(stack, delay=30)
    reply = await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task_id), timeout=0.5)
    assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}


async def test_wait_ends_at_a_long_deadline_without_failing(stack: Stack) -> None:
    # grpc-core sends a timeout of 10 s or more rounded up to 100 ms, so the gateway sees a deadline up to
    # 100 ms later than the caller's: the margin it keeps back has to cover that, or the caller's deadline
    # passes before the last status arrives. (Deadlines under 10 s are rounded to 10 ms.)
    task_id = await submit(stack, delay=60)
    reply = await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task_id), timeout=10.5)
    assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}


async def test_an_unknown_task_id_reads_as_pending_as_launch_reports_it(stack: Stack) -> None:
    reply = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="no-such-task"), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_PENDING  # not an error: callers keep their own bound


async def test_a_failing_task_ends_in_failure_with_traceback(stack: Stack) -> None:
    task_id = await submit(stack, "fail-async", delay=0)
    reply = await stack.stub.WaitAsyncTask(wait_request(task_id, 10), timeout=15)
    assert reply.response.status == pb.TASK_STATUS_FAILURE
    assert reply.response.traceback


async def test_waiters_on_one_task_share_one_poll_loop(stack: Stack) -> None:
    task_id = await submit(stack, delay=0.5)
    replies = await asyncio.gather(
        *(stack.stub.WaitAsyncTask(wait_request(task_id, 10), timeout=15) for _ in range(20))
    )
    assert {r.response.status for r in replies} == {pb.TASK_STATUS_SUCCESS}
    polls = [r for r in stack.launch.records if r.path == f"/v1/async-tasks/{task_id}"]
    # Backoff from 50 ms over ~0.5 s is under a dozen polls; twenty separate loops would be far more.
    assert len(polls) < 15


@pytest.mark.parametrize(
    ("seconds", "nanos", "reason"),
    [
        pytest.param(-1, 0, "must not be negative", id="minus-1s"),
        pytest.param(0, -1, "must not be negative", id="minus-1ns"),
        pytest.param(1, -1, "same sign", id="positive-seconds-negative-nanos"),
        pytest.param(-1, 1, "same sign", id="negative-seconds-positive-nanos"),
        pytest.param(0, 1_000_000_000, "nanos must be within", id="nanos-of-a-whole-second"),
        pytest.param(1, -1_000_000_000, "nanos must be within", id="nanos-below-minus-a-second"),
        pytest.param(315_576_000_001, 0, "seconds must be within", id="past-10000-years"),
        pytest.param(-315_576_000_001, 0, "seconds must be within", id="before-minus-10000-years"),
    ],
)
async def test_a_negative_or_non_normalised_timeout_is_invalid_argument(
    stack: Stack, seconds: int, nanos: int, reason: str
) -> None:
    """Checked on the Duration's own fields: -1 ns or a non-normalised Duration is not rounded into a valid one."""
    request = pb.WaitAsyncTaskRequest(task_id="t", timeout=duration_pb2.Duration(seconds=seconds, nanos=nanos))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.WaitAsyncTask(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("timeout: ")
    assert reason in (caught.value.details() or "")


@pytest.mark.parametrize("nanos", [1, 999], ids=["1ns", "999ns"])
async def test_a_sub_microsecond_timeout_answers_after_one_look(make_stack: StackFactory, nanos: int) -> None:
    """Any positive timeout bounds the wait, however small: it is not rounded to zero, which means unset
    (and so `timeouts.max_wait`)."""
    stack = await make_stack(settings={"timeouts": {"max_wait": 30.0}})
    task_id = await submit(stack, delay=30)
    request = pb.WaitAsyncTaskRequest(task_id=task_id, timeout=duration_pb2.Duration(nanos=nanos))
    reply = await stack.stub.WaitAsyncTask(request, timeout=20)
    assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}
    polls = [r for r in upstream_calls(stack.launch) if r.method == "GET" and r.path == f"/v1/async-tasks/{task_id}"]
    assert len(polls) == 1  # one look, not polls until the 20 s deadline or max_wait


async def test_callback_arrives_with_the_basic_auth_given(stack: Stack, raw_upstream: RawUpstream) -> None:
    received: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()

    async def callback(request: web.Request) -> web.Response:
        await received.put((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    url = await raw_upstream(callback)
    request = pb.SubmitAsyncRequest(
        endpoint_name="echo-async",
        request=pb.EndpointRequest(
            args_json='{"delay": 0, "x": 1}',
            callback_url=f"{url}/hook",
            callback_auth_basic=pb.BasicCallbackAuth(username="cb-user", password="cb-pass"),
        ),
    )
    task_id = (await stack.stub.SubmitAsync(request, timeout=10)).task_id
    authorization, body = await asyncio.wait_for(received.get(), 10)
    assert authorization == "Basic " + base64.b64encode(b"cb-user:cb-pass").decode()
    # Launch's callback body: the result and its status code, no `status`
    assert body == {"result": '{"delay": 0, "x": 1}', "status_code": 200, "task_id": task_id}
