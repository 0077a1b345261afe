"""How the gateway answers a failing upstream: retries where safe, the breaker, bad bodies, timeouts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.server.statuses import ERROR_DOMAIN
from launch_gateway.testing.local_launch import Faults
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, StackFactory, answer_lookup, collect, error_info
from tests.fake_clock import OffsetClock
from tests.ops.conftest import http_get

ENDPOINT = {"id": "end_1", "name": "echo", "endpoint_type": "sync", "status": "READY"}
ASYNC = {"id": "end_2", "name": "later", "endpoint_type": "async", "status": "READY"}
ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
SUBMIT = pb.SubmitAsyncRequest(endpoint_name="later", request=pb.EndpointRequest(args_json="{}"))


class Script:
    """An upstream whose answers per route come from a list (the last one repeats); it counts hits."""

    def __init__(self, **routes: list[web.StreamResponse | str]) -> None:
        self.routes = routes
        self.hits: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("name") == "launch-gateway-readiness-probe":
            return web.json_response({"model_endpoints": []})
        key = request.path.strip("/").replace("/", "_").replace("-", "_")
        if key.startswith("v1_async_tasks_"):
            key = "v1_async_task"
        self.hits[key] += 1
        if key not in self.routes and (lookup := answer_lookup(request, ENDPOINT, ASYNC)) is not None:
            return lookup
        answers = self.routes[key]
        answer = answers[min(self.hits[key] - 1, len(answers) - 1)]
        if isinstance(answer, str):
            return web.Response(text=answer, status=200)
        assert isinstance(answer, web.Response)  # a fresh copy: a response object can be sent only once
        return web.Response(body=answer.body, status=answer.status, content_type=answer.content_type)


def ok(body: object) -> web.Response:
    return web.json_response(body)


def status(code: int, body: str = '{"detail": "down"}') -> web.Response:
    return web.Response(status=code, text=body, content_type="application/json")


SUCCESS = {"status": "SUCCESS", "result": {"result": "1"}, "traceback": None, "status_code": 200}


async def test_polls_are_retried_on_503_and_succeed(make_stack: StackFactory, raw_upstream: RawUpstream) -> None:
    script = Script(v1_async_task=[status(503), status(502), ok({"task_id": "t", **SUCCESS})])
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(script.handle)}})
    reply = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t"), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert script.hits["v1_async_task"] == 3


@pytest.mark.parametrize("attempts", [1, 2])
async def test_retry_attempts_bounds_the_tries_of_a_poll(
    make_stack: StackFactory, raw_upstream: RawUpstream, attempts: int
) -> None:
    script = Script(v1_async_task=[status(503)])
    url = await raw_upstream(script.handle)
    stack = await make_stack(settings={"upstream": {"url": url, "retry_attempts": attempts, "breaker_failures": 0}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert script.hits["v1_async_task"] == attempts  # 1: no retries


async def test_a_poll_is_not_retried_once_its_time_is_used_up(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    clock = OffsetClock()
    script = Script(v1_async_task=[status(503)])

    async def slow_503(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v1/async-tasks/"):
            clock.offset += 60  # this answer took a minute: more than the whole call had
        return await script.handle(request)

    url = await raw_upstream(slow_503)
    stack = await make_stack(settings={"upstream": {"url": url, "retry_attempts": 3}}, clock=clock)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the 503 itself, not a timeout
    assert script.hits["v1_async_task"] == 1  # no second attempt without time for it


async def test_submit_is_not_retried_after_the_request_was_sent(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    script = Script(v1_async_tasks=[status(503), ok({"task_id": "t"})])
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(script.handle)}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.SubmitAsync(SUBMIT, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert script.hits["v1_async_tasks"] == 1  # never submitted twice


async def test_predict_is_retried_when_the_connection_could_not_be_made(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"url": "http://127.0.0.1:9", "retry_attempts": 3}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    _, text = await http_get(stack, "/metrics")
    # The lookup (a GET) was tried three times, each attempt observed as a transport error.
    assert 'gateway_upstream_requests_total{route="/v1/model-endpoints",status="error"} 3.0' in text


async def test_the_breaker_opens_fails_fast_and_readiness_reports_it(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    script = Script(v1_sync_tasks=[status(503)])
    url = await raw_upstream(script.handle)
    stack = await make_stack(settings={"upstream": {"url": url, "breaker_failures": 3, "breaker_cooldown": 60}})
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await stack.stub.Predict(ECHO, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "circuit open after 3 consecutive failures" in (caught.value.details() or "")
    assert script.hits["v1_sync_tasks"] == 3  # the fourth call never left the gateway
    ready = await http_get(stack, "/readyz")
    assert ready[0] == 503
    assert "upstream: circuit open" in ready[1]


async def test_the_breaker_opens_after_requests_the_upstream_never_answers(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    hits: Counter[str] = Counter()

    async def accepts_and_never_answers(request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, ENDPOINT)) is not None:
            return lookup
        hits[request.path] += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    url = await raw_upstream(accepts_and_never_answers)
    settings = {"upstream": {"url": url, "breaker_failures": 2, "breaker_cooldown": 60}, "timeouts": {"sync": 0.2}}
    stack = await make_stack(settings=settings)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.Predict(ECHO, timeout=10)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # no answer in time is a failure, not a success
    assert "circuit open after 2 consecutive failures" in (caught.value.details() or "")
    assert hits["/v1/sync-tasks"] == 2


async def test_callers_in_a_hurry_do_not_open_the_breaker_for_everyone(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    """A deadline shorter than the model takes ends that call, and says nothing about the upstream."""
    slow = asyncio.Event()  # set: answer after a while, as a slow model does

    async def slow_model(request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, ENDPOINT)) is not None:
            return lookup
        if slow.is_set():
            await asyncio.sleep(3600)
        return web.json_response({"status": "SUCCESS", "result": {"result": "1"}})

    url = await raw_upstream(slow_model)
    settings = {"upstream": {"url": url, "breaker_failures": 2, "breaker_cooldown": 60}, "timeouts": {"sync": 60}}
    stack = await make_stack(settings=settings)
    slow.set()
    for _ in range(4):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.Predict(ECHO, timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    slow.clear()
    reply = await stack.stub.Predict(ECHO, timeout=10)  # the breaker stayed closed
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


async def test_an_open_breaker_says_when_to_retry_and_one_probe_closes_it(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    clock = OffsetClock()
    script = Script(v1_sync_tasks=[status(503), status(503), ok(SUCCESS)])
    url = await raw_upstream(script.handle)
    settings = {"upstream": {"url": url, "breaker_failures": 2, "breaker_cooldown": 60}}
    stack = await make_stack(settings=settings, clock=clock)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await stack.stub.Predict(ECHO, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    refusal = rpc_status.from_call(caught.value)
    assert refusal is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in refusal.details)
    assert 59 < retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 <= 60  # the rest of the cooldown
    assert dict(caught.value.trailing_metadata() or ())["retry-after"] == "60"
    clock.offset += 61  # the cooldown is over: the next call is the probe, and it succeeds
    assert (await stack.stub.Predict(ECHO, timeout=10)).response.status == pb.TASK_STATUS_SUCCESS
    assert (await stack.stub.Predict(ECHO, timeout=10)).response.status == pb.TASK_STATUS_SUCCESS
    assert script.hits["v1_sync_tasks"] == 4  # closed again: calls go through


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            web.Response(text="<html>oops</html>", content_type="text/html"),
            grpc.StatusCode.INTERNAL,
            "invalid JSON (text/html)",
        ),
        (web.Response(text="not json", content_type="application/json"), grpc.StatusCode.INTERNAL, "invalid JSON"),
        (ok({"result": 1}), grpc.StatusCode.INTERNAL, "has no status"),
        (ok([1, 2]), grpc.StatusCode.INTERNAL, "is a JSON list, not an object"),
        (ok({"status": "SUCCESS", "result": "x" * 2048}), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_body_bytes"),
        (status(418), grpc.StatusCode.FAILED_PRECONDITION, "answered HTTP 418"),
    ],
    ids=["html", "bad-json", "missing-status", "not-an-object", "too-large", "odd-status"],
)
async def test_bad_upstream_output_gets_a_precise_status(
    make_stack: StackFactory, raw_upstream: RawUpstream, answer: web.Response, code: grpc.StatusCode, message: str
) -> None:
    script = Script(v1_sync_tasks=[answer])
    url = await raw_upstream(script.handle)
    stack = await make_stack(settings={"upstream": {"url": url, "max_body_bytes": 1024}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


async def test_unknown_upstream_status_strings_are_undefined(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    script = Script(v1_async_task=[ok({"task_id": "t", "status": "REVOKED"})])
    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(script.handle)}})
    reply = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t"), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_UNDEFINED


async def test_a_quiet_stream_ends_with_deadline_exceeded(make_stack: StackFactory, raw_upstream: RawUpstream) -> None:
    record = {"id": "s", "name": "quiet", "endpoint_type": "streaming", "status": "READY"}

    async def quiet(request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, record)) is not None:
            return lookup
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"status": "SUCCESS", "result": {"result": 1}}\r\n\r\n')
        await asyncio.sleep(30)
        return response

    stack = await make_stack(
        settings={"upstream": {"url": await raw_upstream(quiet)}, "timeouts": {"stream_idle": 0.3}}
    )
    request = pb.StreamPredictRequest(endpoint_name="quiet", request=pb.EndpointRequest(args_json="{}"))
    received: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stack.stub.StreamPredict(request, timeout=10), received)
    assert [json.loads(m.response.result) for m in received] == [1]
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no event for 0.3 s" in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"data: not json\r\n\r\n", grpc.StatusCode.INTERNAL, "upstream stream sent an event whose data is not JSON"),
        (b'data: {"status": "SUC', grpc.StatusCode.UNAVAILABLE, "upstream stream truncated mid-event"),
    ],
    ids=["non-json-data", "cut-mid-event"],
)
async def test_a_broken_stream_keeps_what_was_relayed_then_ends_precisely(
    make_stack: StackFactory, raw_upstream: RawUpstream, body: bytes, code: grpc.StatusCode, message: str
) -> None:
    record = {"id": "s", "name": "broken", "endpoint_type": "streaming", "status": "READY"}

    async def broken(request: web.Request) -> web.StreamResponse:
        if (lookup := answer_lookup(request, record)) is not None:
            return lookup
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"status": "SUCCESS", "result": {"result": 1}}\r\n\r\n' + body)
        return response

    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(broken)}})
    request = pb.StreamPredictRequest(endpoint_name="broken", request=pb.EndpointRequest(args_json="{}"))
    received: list[pb.StreamPredictResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stack.stub.StreamPredict(request, timeout=10), received)
    assert [json.loads(m.response.result) for m in received] == [1]
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


async def test_a_full_connection_pool_fails_a_call_instead_of_queueing_for_ever(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"upstream": {"max_stream_connections": 1, "connect_timeout": 0.3}})
    endless = pb.StreamPredictRequest(
        endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 100000, "interval": 0.05}')
    )
    holder = stack.stub.StreamPredict(endless, timeout=30)
    await holder.read()  # this stream holds the only upstream connection for streams
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.StreamPredict(endless, timeout=10).read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "all upstream.max_stream_connections (1) are in use" in (caught.value.details() or "")
    holder.cancel()
    await stack.launch.wait_for_record(lambda r: r.path == "/v1/streaming-tasks" and r.outcome == "disconnected")
    again = stack.stub.StreamPredict(endless, timeout=10)
    assert (await again.read()).response.status == pb.TASK_STATUS_SUCCESS
    again.cancel()


@pytest.mark.parametrize(
    ("faults", "http_status", "code"),
    [
        (None, 401, grpc.StatusCode.UNAUTHENTICATED),  # the gateway's key is refused
        (Faults(error_rates={403: 1.0}), 403, grpc.StatusCode.PERMISSION_DENIED),
        (Faults(error_rates={422: 1.0}), 422, grpc.StatusCode.INVALID_ARGUMENT),
        (Faults(throttle_rate=1.0), 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Faults(error_rates={500: 1.0}), 500, grpc.StatusCode.INTERNAL),
    ],
    ids=["401", "403", "422", "429", "500"],
)
async def test_upstream_errors_carry_error_info_naming_the_http_status(
    make_stack: StackFactory, faults: Faults | None, http_status: int, code: grpc.StatusCode
) -> None:
    stack = await make_stack(api_keys=["the-key"], upstream_key="the-key" if faults else "a-refused-key")
    stack.launch.faults = faults or Faults()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="echo", request=ECHO.request), timeout=10)
    assert caught.value.code() == code
    info = error_info(caught.value)
    assert info is not None, caught.value
    assert (info.domain, info.reason, dict(info.metadata)) == (
        ERROR_DOMAIN,
        "UPSTREAM_HTTP_ERROR",
        {"http_status": str(http_status)},
    )


async def test_errors_the_gateway_decides_name_no_upstream_status(make_stack: StackFactory) -> None:
    stack = await make_stack()
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # Launch answered 200 with no such endpoint
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="missing", request=ECHO.request), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is None or info.reason != "UPSTREAM_HTTP_ERROR", info
