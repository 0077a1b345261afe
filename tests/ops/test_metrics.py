"""Prometheus metrics over a real scrape: grpc-ecosystem names, streams counted when they end, promtool."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Endless, Stack, StackFactory
from tests.ops.conftest import http_get, samples
from tests.waiting import wait_for

SERVICE = "launch_gateway.v1.EndpointService"


def labels(method: str, kind: str = "unary", **extra: str) -> str:
    pairs = {"grpc_method": method, "grpc_service": SERVICE, "grpc_type": kind, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


async def mixed_traffic(stack: Stack) -> None:
    """Sync, async, streaming (completed, failed, cancelled) and refused calls."""
    echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    for _ in range(3):
        await stack.stub.Predict(echo, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="missing", request=echo.request), timeout=10)
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest(args_json='{"delay": 0}'))
    task = await stack.stub.SubmitAsync(submit, timeout=10)
    await stack.stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task.task_id), timeout=10)
    count = pb.StreamPredictRequest(
        endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 3, "interval": 0}')
    )
    assert len([m async for m in stack.stub.StreamPredict(count, timeout=10)]) == 3
    endless = pb.StreamPredictRequest(endpoint_name="endless", request=pb.EndpointRequest(args_json="{}"))
    call = stack.stub.StreamPredict(endless, timeout=10)
    await call.read()
    call.cancel()
    await stack.launch.wait_for_record(lambda r: r.path == "/v1/streaming-tasks" and r.outcome == "disconnected")


@pytest.fixture
async def traffic_stack(make_stack: StackFactory) -> Stack:
    stack = await make_stack([Endless().spec()], settings={"metrics": {"endpoints": ["echo", "count"]}})
    await mixed_traffic(stack)
    return stack


async def scrape_when(stack: Stack, predicate: Callable[[str], bool], what: str) -> str:
    """A scrape for which `predicate(text)` holds (a cancelled stream is counted when its handler unwinds)."""

    async def scrape() -> str | None:
        _, text = await http_get(stack, "/metrics")
        return text if predicate(text) else None

    return await wait_for(scrape, within=5, what=what)


async def test_grpc_server_metrics_count_every_rpc_kind(traffic_stack: Stack) -> None:
    cancelled = labels("StreamPredict", "server_stream", grpc_code="Canceled")
    text = await scrape_when(
        traffic_stack,
        lambda t: samples(t, "grpc_server_handled_total").get(cancelled) == 1,
        "the cancelled stream to be counted as handled",
    )
    handled = samples(text, "grpc_server_handled_total")
    assert handled[labels("Predict", grpc_code="OK")] == 3
    assert handled[labels("Predict", grpc_code="NotFound")] == 1
    assert handled[labels("SubmitAsync", grpc_code="OK")] == 1
    assert handled[labels("WaitAsyncTask", grpc_code="OK")] == 1
    assert handled[labels("StreamPredict", "server_stream", grpc_code="OK")] == 1
    assert handled[cancelled] == 1
    assert handled[labels("GetEndpoint", grpc_code="OK")] == 0  # created up front, before any call
    assert len(handled) == 6 * 17
    started = samples(text, "grpc_server_started_total")
    assert started[labels("StreamPredict", "server_stream")] == 2
    sent = samples(text, "grpc_server_msg_sent_total")
    assert sent[labels("StreamPredict", "server_stream")] >= 4
    assert sent[labels("Predict")] == 3
    counts = samples(text, "grpc_server_handling_seconds_count")
    assert counts[labels("StreamPredict", "server_stream")] == 2


async def test_gateway_metrics_have_bounded_labels(traffic_stack: Stack) -> None:
    _, text = await http_get(traffic_stack, "/metrics")
    upstream = samples(text, "gateway_upstream_requests_total")
    assert upstream['{route="/v1/sync-tasks",status="200"}'] == 3
    assert upstream['{route="/v1/async-tasks/{task_id}",status="200"}'] >= 1
    events = samples(text, "gateway_stream_events_total")
    assert events['{endpoint="count"}'] == 3
    assert events['{endpoint="other"}'] >= 1  # "endless" is not a configured name
    assert samples(text, "gateway_stream_first_event_seconds_count")['{endpoint="count"}'] == 1
    assert samples(text, "gateway_endpoint_cache_total")['{result="miss"}'] >= 3
    assert samples(text, "gateway_async_waits_total")[""] == 1
    assert samples(text, "gateway_async_wait_polls_total")[""] >= 1
    assert samples(text, "gateway_inflight_calls")['{kind="unary"}'] == 0
    assert "task_id=" not in text.replace("{task_id}", "")


async def test_promtool_accepts_a_real_scrape(traffic_stack: Stack, tmp_path: object) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes from the Debian package prometheus (make test installs it)"
    _, text = await http_get(traffic_stack, "/metrics")
    process = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(text.encode()), 30)
    assert process.returncode == 0, (out + err).decode()


async def test_every_method_has_its_series_before_any_call(stack: Stack) -> None:
    _, text = await http_get(stack, "/metrics")
    started = samples(text, "grpc_server_started_total")
    handled = samples(text, "grpc_server_handled_total")
    methods = {"Predict", "SubmitAsync", "GetAsyncTask", "WaitAsyncTask", "GetEndpoint"}
    for method in methods:
        assert started[labels(method)] == 0, method
        for code in ("OK", "NotFound", "Canceled", "ResourceExhausted", "Unavailable"):
            assert handled[labels(method, grpc_code=code)] == 0, (method, code)
    assert started[labels("StreamPredict", "server_stream")] == 0
    assert handled[labels("StreamPredict", "server_stream", grpc_code="DeadlineExceeded")] == 0
