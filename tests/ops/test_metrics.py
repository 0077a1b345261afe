"""Prometheus metrics over a real scrape: grpc-ecosystem names, streams counted when they end, promtool;
as a Go server exports them; the standard services measured; per-tenant usage."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.server.observability.exposition import go_float
from launch_gateway.testing.local_launch import Faults
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Endless, Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
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
    services = (pb.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)
    methods = sum(len(service.methods) for file in services for service in file.services_by_name.values())
    assert len(handled) == methods * 17  # every code of every method: EndpointService's, health's, reflection's
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


# --- as a Go server exports them: no _created series, Go's bucket labels ---------------------------


async def test_a_scrape_has_no_created_series_and_writes_bucket_bounds_as_go(traffic_stack: Stack) -> None:
    _, text = await http_get(traffic_stack, "/metrics")
    assert "_created" not in text
    bounds = set(re.findall(r'le="([^"]*)"', text))
    assert {"0.001", "0.0025", "1", "10", "300", "+Inf"} <= bounds
    assert all(bound == go_float(float(bound)) for bound in bounds), sorted(bounds)
    assert 'le="1.0"' not in text


# --- the standard services ---------------------------------------------------------------------------

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def series(method: str, service: str, kind: str, **extra: str) -> str:
    pairs = {"grpc_method": method, "grpc_service": service, "grpc_type": kind, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


async def test_health_and_reflection_rpcs_are_measured_with_series_from_the_start(stack: Stack) -> None:
    standard = [("Check", HEALTH, "unary"), ("Watch", HEALTH, "server_stream")]
    standard.append(("ServerReflectionInfo", REFLECTION, "bidi_stream"))
    _, before = await http_get(stack, "/metrics")
    for method, service, kind in standard:
        assert samples(before, "grpc_server_started_total")[series(method, service, kind)] == 0, method
        for code in ("OK", "NotFound", "Canceled", "Unknown"):
            assert samples(before, "grpc_server_handled_total")[series(method, service, kind, grpc_code=code)] == 0
    health = health_pb2_grpc.HealthStub(stack.channel)
    await health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await health.Check(health_pb2.HealthCheckRequest(service="no-such-service"), timeout=5)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
    await watch.read()
    watch.cancel()

    async def asks() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)

    answers = reflection_pb2_grpc.ServerReflectionStub(stack.channel).ServerReflectionInfo(asks(), timeout=5)
    assert len([answer async for answer in answers]) == 2
    watched = series("Watch", HEALTH, "server_stream", grpc_code="Canceled")
    text = await scrape_when(
        stack, lambda t: samples(t, "grpc_server_handled_total").get(watched) == 1, "the cancelled Watch to be counted"
    )
    handled = samples(text, "grpc_server_handled_total")
    assert handled[series("Check", HEALTH, "unary", grpc_code="OK")] == 1
    assert handled[series("Check", HEALTH, "unary", grpc_code="NotFound")] == 1
    assert handled[series("ServerReflectionInfo", REFLECTION, "bidi_stream", grpc_code="OK")] == 1
    reflected = series("ServerReflectionInfo", REFLECTION, "bidi_stream")
    assert samples(text, "grpc_server_msg_received_total")[reflected] == 2  # each request of the stream
    assert samples(text, "grpc_server_msg_sent_total")[reflected] == 2
    assert samples(text, "grpc_server_msg_sent_total")[series("Watch", HEALTH, "server_stream")] == 1
    assert samples(text, "grpc_server_handling_seconds_count")[series("Check", HEALTH, "unary")] == 2
    assert samples(text, "gateway_inflight_calls")['{kind="stream"}'] == 0  # health calls are not the gateway's


async def test_reflection_turned_off_has_no_series(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"reflection": False}})
    _, text = await http_get(stack, "/metrics")
    assert REFLECTION not in text
    assert HEALTH in text


# --- per-tenant usage --------------------------------------------------------------------------------


def usage(tenant: str, endpoint: str, **extra: str) -> str:
    pairs = {"endpoint": endpoint, "tenant": tenant, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


async def test_tenant_usage_counts_calls_errors_by_class_upstream_time_and_stream_events(
    make_stack: StackFactory,
) -> None:
    team_a = {"endpoint_rates": {"describe": {"per_second": 0.01, "burst": 1}}}
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B], settings={"tenants": tenants(**{"team-a": team_a})}, gateway_env=ENV
    )
    _, before = await http_get(stack, "/metrics")
    for tenant in ("team-a", "team-b"):  # every configured tenant's series exist before it calls
        assert samples(before, "gateway_tenant_calls_total")[usage(tenant, "other")] == 0
        for kind in ("client", "policy", "upstream", "gateway"):
            assert samples(before, "gateway_tenant_errors_total")[usage(tenant, "other", **{"class": kind})] == 0
    a = bearer(KEY_A)
    echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    for _ in range(2):
        await stack.stub.Predict(echo, timeout=10, metadata=a)
    refusals = [
        pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest()),  # client: no input
        pb.PredictRequest(endpoint_name="read-url", request=echo.request),  # policy: not team-a's
        pb.PredictRequest(endpoint_name="describe", request=echo.request),  # the rate's one call...
        pb.PredictRequest(endpoint_name="describe", request=echo.request),  # ...policy: then limited
    ]
    for request in refusals:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stack.stub.Predict(request, timeout=10, metadata=a)
    with pytest.raises(grpc.aio.AioRpcError):  # no tenant: not anyone's usage
        await stack.stub.Predict(echo, timeout=10, metadata=bearer("gw-key-of-nobody-0000000000"))
    stack.launch.faults = Faults(error_rates={500: 1.0})
    with pytest.raises(grpc.aio.AioRpcError):  # upstream: Launch's 500
        await stack.stub.Predict(echo, timeout=10, metadata=a)
    stack.launch.faults = Faults()
    count = pb.StreamPredictRequest(
        endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 4, "interval": 0.1}')
    )
    assert len([m async for m in stack.stub.StreamPredict(count, timeout=10, metadata=a)]) == 4
    _, text = await http_get(stack, "/metrics")
    calls = samples(text, "gateway_tenant_calls_total")
    assert calls[usage("team-a", "echo")] == 4
    assert calls[usage("team-a", "describe")] == 2
    assert calls[usage("team-a", "other")] == 1  # read-url: not one of the tenant's names
    assert calls[usage("team-a", "count")] == 1
    assert sum(value for labels, value in calls.items() if 'tenant="team-a"' not in labels) == 0
    errors = samples(text, "gateway_tenant_errors_total")
    assert errors[usage("team-a", "echo", **{"class": "client"})] == 1
    assert errors[usage("team-a", "echo", **{"class": "upstream"})] == 1
    assert errors[usage("team-a", "other", **{"class": "policy"})] == 1
    assert errors[usage("team-a", "describe", **{"class": "policy"})] == 1
    assert sum(errors.values()) == 4
    upstream = samples(text, "gateway_tenant_upstream_seconds_total")
    assert upstream[usage("team-a", "echo")] > 0
    assert upstream[usage("team-a", "count")] >= 0.3  # a stream counts until its end, not until its headers
    assert samples(text, "gateway_tenant_stream_events_total")[usage("team-a", "count")] == 4


async def test_a_tenant_added_by_a_reload_gets_its_endpoints_labels(make_stack: StackFactory, tmp_path: Path) -> None:
    team_a = {"api_key_hashes": [hash_key(KEY_A)], "endpoints": ["echo"], "upstream_key_env": "TEAM_A_LAUNCH_KEY"}
    config = tmp_path / "gateway.toml"
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A], settings={"tenants": {"team-a": team_a}}, gateway_env=ENV, config_path=str(config)
    )
    tenant = 'api_key_hashes = ["{}"]\nendpoints = ["{}"]\nupstream_key_env = "TEAM_A_LAUNCH_KEY"\n'
    team_b = tenant.format(hash_key(KEY_B), "describe")
    config.write_text(f"[tenants.team-a]\n{tenant.format(hash_key(KEY_A), 'echo')}[tenants.team-b]\n{team_b}")
    assert stack.gateway.reload()
    describe = pb.PredictRequest(endpoint_name="describe", request=pb.EndpointRequest(args_json="{}"))
    await stack.stub.Predict(describe, timeout=10, metadata=bearer(KEY_B))
    _, text = await http_get(stack, "/metrics")
    calls = samples(text, "gateway_tenant_calls_total")
    assert calls[usage("team-b", "describe")] == 1, calls  # was "other": the labels were those of the start
    assert calls[usage("team-b", "other")] == 0
