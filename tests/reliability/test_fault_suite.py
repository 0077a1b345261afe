"""Injected upstream faults, one at a time, pinned to the exact status each must give; then a short soak
(`bench.soak`) that mixes them under load and checks every invariant."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.soak import SoakReport, default_faults, run_soak
from launch_gateway.server.clock import SystemClock
from launch_gateway.server.errors import UpstreamUnavailable
from launch_gateway.server.settings import UpstreamSettings
from launch_gateway.server.upstream.launch_api import LaunchAPI, UpstreamCall
from launch_gateway.testing.local_launch import Faults, LocalLaunchServer, RequestRecord
from launch_gateway.testing.local_launch.faults import close_connection
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, collect

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"x": 1}'))
SUBMIT = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 0}'))
COUNT = pb.StreamPredictRequest(endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 10, "interval": 0}'))


def seed_for(*hits: bool, rate: float) -> int:
    """A seed whose first draws fall below `rate` exactly where `hits` says: with a single fault rate set,
    the injector draws one number per request, so this picks which requests get the fault."""

    def draws(seed: int) -> list[bool]:
        rng = random.Random(seed)
        return [rng.random() < rate for _ in hits]

    return next(seed for seed in range(1000) if draws(seed) == list(hits))


def requests_to(launch: LocalLaunchServer, method: str, path: str) -> list[RequestRecord]:
    return [r for r in launch.records if r.method == method and r.path == path]


def task_requests(launch: LocalLaunchServer, since: int) -> list[RequestRecord]:
    """Requests to task routes from record `since` on (endpoint lookups and readiness probes left out)."""
    return [r for r in launch.records[since:] if r.path != "/v1/model-endpoints"]


def retry_delays(error: grpc.aio.AioRpcError) -> list[float]:
    """The google.rpc.RetryInfo delays in an error's status details."""
    status = rpc_status.from_call(error)
    assert status is not None
    delays = []
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delays.append(info.retry_delay.ToTimedelta().total_seconds())
    return delays


async def finished_task(stack: Stack) -> str:
    """An async task that has ended, submitted while no fault is injected."""
    reply = await stack.stub.SubmitAsync(SUBMIT, timeout=10)
    await stack.launch.wait_for_task(reply.task_id)
    return reply.task_id


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# --- polls: retried -------------------------------------------------------------------------------------


async def test_503_on_a_poll_is_retried_then_ok(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(error_rates={503: 0.5}, seed=seed_for(True, False, rate=0.5))
    reply = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    polls = requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")
    assert [p.faults for p in polls] == [["error_503"], []]


async def test_503_on_every_poll_is_unavailable_after_the_retries(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(error_rates={503: 1.0})
    error = await failure(stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "answered HTTP 503" in (error.details() or "")
    assert len(requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")) == 3  # upstream.retry_attempts


async def test_cut_body_on_a_poll_is_retried(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(cut_body_rate=0.5, seed=seed_for(True, False, rate=0.5))
    reply = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    polls = requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")
    assert [p.faults for p in polls] == [["cut_body"], []]


def seed_drawing(*bands: tuple[float, float]) -> int:
    """A seed whose first draws fall in these [low, high) bands, one draw per request (see `seed_for`): with
    throttle_rate t and one error rate e, [0, t) is the 429, [t, t + e) the error and the rest no fault."""

    def fits(seed: int) -> bool:
        rng = random.Random(seed)
        return all(low <= rng.random() < high for low, high in bands)

    return next(seed for seed in range(10_000) if fits(seed))


def waiting(task_id: str, seconds: float) -> pb.WaitAsyncTaskRequest:
    whole = int(seconds)
    timeout = duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
    return pb.WaitAsyncTaskRequest(task_id=task_id, timeout=timeout)


async def test_a_wait_outlasts_a_429_and_a_500_on_its_polls_honouring_retry_after(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    seed = seed_drawing((0.0, 0.3), (0.3, 0.6), (0.6, 1.0))  # a 429, then a 500, then the answer
    stack.launch.faults = Faults(throttle_rate=0.3, error_rates={500: 0.3}, retry_after=1.0, seed=seed)
    started = time.perf_counter()
    reply = await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task_id), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    polls = requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")
    assert [p.faults for p in polls] == [["throttle"], ["error_500"], []]
    assert time.perf_counter() - started >= 1.0  # the next poll waited for Retry-After: 1


async def test_waits_end_with_their_tasks_result_under_launch_throttling_and_errors(make_stack: StackFactory) -> None:
    """The adversarial review's mix, 3 % 429s and 1 % 500s: every wait on a finished task answers SUCCESS
    (a quarter of them failed when one poll's 429 or 500 ended the whole wait)."""
    stack = await make_stack()
    count = 60
    task_ids = [await finished_task(stack) for _ in range(count)]
    seed = next(s for s in range(10_000) if {"throttle", "error_500"} <= first_faults(s, count, 0.03, 0.01))
    stack.launch.faults = Faults(throttle_rate=0.03, error_rates={500: 0.01}, retry_after=1.0, seed=seed)
    replies = await asyncio.gather(
        *(stack.stub.WaitAsyncTask(waiting(task_id, 10), timeout=15) for task_id in task_ids), return_exceptions=True
    )
    assert [r for r in replies if isinstance(r, BaseException)] == []
    assert {r.response.status for r in replies if isinstance(r, pb.WaitAsyncTaskResponse)} == {pb.TASK_STATUS_SUCCESS}
    assert stack.launch.fault_counts["throttle"] >= 1
    assert stack.launch.fault_counts["error_500"] >= 1


def first_faults(seed: int, draws: int, throttle: float, error: float) -> set[str]:
    """The faults the first `draws` requests get with this seed."""
    rng = random.Random(seed)
    faults = set()
    for _ in range(draws):
        draw = rng.random()
        if draw < throttle:
            faults.add("throttle")
        elif draw < throttle + error:
            faults.add("error_500")
    return faults


async def test_a_wait_whose_polls_are_all_throttled_fails_when_its_time_is_spent(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(throttle_rate=1.0, retry_after=0.0)  # "Retry-After: 0": the backoff decides
    started = time.perf_counter()
    error = await failure(stack.stub.WaitAsyncTask(waiting(task_id, 0.5), timeout=10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.perf_counter() - started >= 0.45  # the wait's time, not the first poll's answer
    assert len(requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")) >= 3


async def test_a_wait_ends_at_once_on_a_poll_error_that_is_not_transient(make_stack: StackFactory) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(error_rates={403: 1.0})
    error = await failure(stack.stub.WaitAsyncTask(waiting(task_id, 10), timeout=15))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(requests_to(stack.launch, "GET", f"/v1/async-tasks/{task_id}")) == 1  # at once: no second poll


# --- submits: never repeated ----------------------------------------------------------------------------


async def test_503_on_submit_is_unavailable_and_creates_no_task(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo-async"), timeout=10)  # cache the id
    stack.launch.faults = Faults(error_rates={503: 1.0})
    error = await failure(stack.stub.SubmitAsync(SUBMIT, timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Message broker temporarily unavailable" in (error.details() or "")
    assert len(requests_to(stack.launch, "POST", "/v1/async-tasks")) == 1  # not retried
    assert stack.launch.task_ids == []


async def test_cut_body_on_submit_is_unavailable_though_the_task_exists(make_stack: StackFactory) -> None:
    """The documented hard case: Launch created the task, but its id never reached the gateway."""
    stack = await make_stack()
    await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo-async"), timeout=10)
    stack.launch.faults = Faults(cut_body_rate=1.0)
    error = await failure(stack.stub.SubmitAsync(SUBMIT, timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cut off" in (error.details() or "")
    posts = requests_to(stack.launch, "POST", "/v1/async-tasks")
    assert [p.faults for p in posts] == [["cut_body_after_create"]]  # sent once, never repeated
    [task_id] = stack.launch.task_ids
    assert (await stack.launch.wait_for_task(task_id))["status"] == "SUCCESS"  # it ran anyway


# --- refusals and unreadable answers --------------------------------------------------------------------


CALLS: dict[str, Any] = {
    "Predict": lambda stub, task_id: stub.Predict(ECHO, timeout=10),
    "SubmitAsync": lambda stub, task_id: stub.SubmitAsync(SUBMIT, timeout=10),
    "GetAsyncTask": lambda stub, task_id: stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10),
    "StreamPredict": lambda stub, task_id: collect(stub.StreamPredict(COUNT, timeout=10), []),
}


@pytest.mark.parametrize("rpc", list(CALLS))
async def test_429_is_resource_exhausted_with_retry_info_from_retry_after(make_stack: StackFactory, rpc: str) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(throttle_rate=1.0, retry_after=2.5)  # sent as "Retry-After: 3"
    before = len(stack.launch.records)
    error = await failure(CALLS[rpc](stack.stub, task_id))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_delays(error) == [3.0]
    assert ("retry-after", "3") in list(error.trailing_metadata() or ())
    assert [r.fault for r in task_requests(stack.launch, before)] == ["throttle"]  # a 429 is not retried


@pytest.mark.parametrize("rpc", ["Predict", "SubmitAsync", "GetAsyncTask"])
async def test_bad_json_is_internal_saying_invalid_json(make_stack: StackFactory, rpc: str) -> None:
    stack = await make_stack()
    task_id = await finished_task(stack)
    stack.launch.faults = Faults(bad_json_rate=1.0)
    before = len(stack.launch.records)
    error = await failure(CALLS[rpc](stack.stub, task_id))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "invalid JSON" in (error.details() or "")
    assert [r.fault for r in task_requests(stack.launch, before)] == ["bad_json"]  # not retried
    assert stack.launch.task_ids == [task_id]  # a submit answered with bad JSON created nothing


async def test_wrong_content_type_on_a_stream_is_internal_naming_it(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.launch.faults = Faults(wrong_content_type_rate=1.0)
    received: list[pb.StreamPredictResponse] = []
    error = await failure(collect(stack.stub.StreamPredict(COUNT, timeout=10), received))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "text/html" in (error.details() or "")
    assert "not text/event-stream" in (error.details() or "")
    assert received == []


# --- streams --------------------------------------------------------------------------------------------


def event_numbers(received: list[pb.StreamPredictResponse]) -> list[int]:
    return [json.loads(message.response.result)["i"] for message in received]


async def test_stream_dropped_after_n_events_ends_ok(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.launch.faults = Faults(drop_stream_after=3)
    received: list[pb.StreamPredictResponse] = []
    await collect(stack.stub.StreamPredict(COUNT, timeout=10), received)
    assert event_numbers(received) == [0, 1, 2]
    assert stack.launch.fault_counts["drop_stream"] == 1


async def test_stream_cut_mid_event_ends_unavailable_truncated(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.launch.faults = Faults(drop_stream_after=3, cut_stream_mid_event=True)
    received: list[pb.StreamPredictResponse] = []
    error = await failure(collect(stack.stub.StreamPredict(COUNT, timeout=10), received))
    assert event_numbers(received) == [0, 1, 2]  # what came before the cut stands
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "truncated" in (error.details() or "")  # README: UNAVAILABLE "upstream stream truncated"


async def test_events_sent_before_a_cut_stand_when_the_gateway_reads_them_late(raw_upstream: RawUpstream) -> None:
    """A slow caller holds the gateway's reads back, so a cut can arrive while complete events still wait in
    aiohttp's buffer: they must be relayed before the truncation, as the soak expects under load."""
    first_read, closed = asyncio.Event(), asyncio.Event()

    def event(i: int) -> bytes:
        return b'data: {"status": "SUCCESS", "result": {"result": {"i": %d}}}\r\n\r\n' % i

    async def cut_after_four(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event(0))
        await first_read.wait()
        await response.write(event(1) + event(2) + event(3) + event(4)[:20])
        close_connection(request)  # as the fault injector cuts a stream: no chunked end
        closed.set()
        return response

    api = LaunchAPI(UpstreamSettings(url=await raw_upstream(cut_after_four)), SystemClock())
    await api.start()
    events = api.stream("end_1", b"{}", UpstreamCall(authorization=None, timeout=5.0))
    try:
        received = await anext(events)  # the events of one read
        first_read.set()
        await closed.wait()
        await asyncio.sleep(0.1)  # nothing signals that the gateway's side has read the close: give it time
        batches: list[list[bytes]] = []
        with pytest.raises(UpstreamUnavailable) as caught:
            await collect(events, batches)
        received += [data for batch in batches for data in batch]
    finally:
        await events.aclose()
        await api.close()
    assert [json.loads(data)["result"]["result"]["i"] for data in received] == [0, 1, 2, 3]
    assert "truncated" in caught.value.message


async def test_stall_on_a_stream_is_deadline_exceeded_after_stream_idle(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"timeouts": {"stream_idle": 0.3}})
    stack.launch.faults = Faults(stall=5.0)
    received: list[pb.StreamPredictResponse] = []
    started = time.perf_counter()
    # The caller's 3 s ends before the 5 s stall does: only the idle limit can answer "no event for 0.3 s".
    error = await failure(collect(stack.stub.StreamPredict(COUNT, timeout=3), received))
    elapsed = time.perf_counter() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "no event for 0.3 s" in (error.details() or "")
    assert elapsed >= 0.3  # the idle limit ran out, not an early answer
    assert received == []


# --- the soak -------------------------------------------------------------------------------------------

SOAK_SECONDS = 6.0  # of load; with warm-up, task checks and settling the fixture takes about 8 s
SOAK_CONCURRENCY = 16


@pytest.fixture(scope="module")
def soak_report() -> SoakReport:
    """One short soak for the module, on its own event loop (the invariant tests share it)."""
    faults, alternate = default_faults(seed=11)
    report = asyncio.run(run_soak(SOAK_SECONDS, SOAK_CONCURRENCY, faults, alternate=alternate, seed=11))
    print(report.format())
    return report


def test_soak_drives_every_rpc_and_injects_every_fault(soak_report: SoakReport) -> None:
    rpcs = {rpc for rpc, _ in soak_report.calls}
    assert rpcs == {"Predict", "SubmitAsync", "WaitAsyncTask", "GetAsyncTask", "StreamPredict", "GetEndpoint"}
    assert soak_report.calls_per_second > 50
    injected = {name for name, count in soak_report.faults_injected.items() if count}
    expected = {"latency", "error_503", "throttle", "cut_body", "bad_json", "drop_stream", "cut_stream", "stall"}
    assert expected <= injected
    assert sum(n for (_, code), n in soak_report.calls.items() if code == "CANCELLED") > 0


@pytest.mark.parametrize(
    "number", [1, 2, 3, 4], ids=["statuses-allowed-and-in-time", "task-ids", "streams", "resources-return"]
)
def test_soak_invariant(soak_report: SoakReport, number: int) -> None:
    invariant = soak_report.invariant(number)
    assert invariant.ok, f"{invariant.name}: {invariant.summary}\n" + "\n".join(invariant.problems[:10])
