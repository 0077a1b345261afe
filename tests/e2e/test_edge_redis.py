"""Rate limits on Redis end to end: gateway processes sharing one bucket, and Redis dying mid-run."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.redis_server import RedisServer
from tests.serving import ServeFactory

TEAM_KEY = "gw-key-redis-team-0123456789"
LAUNCH_KEY = "launch-key-of-the-redis-team"
HANDLE_SECRET = "handle-secret-0123456789abcdef"
BEARER = (("authorization", f"Bearer {TEAM_KEY}"),)
REQUEST = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
SECRETS = {"TEAM_LAUNCH_KEY": LAUNCH_KEY, "LAUNCH_GATEWAY_HANDLE_SECRETS": HANDLE_SECRET}


def team(rate: dict[str, Any]) -> dict[str, Any]:
    """One tenant, known by TEAM_KEY, calling `echo` with its own Launch key at `rate`."""
    return {
        "team": {
            "api_key_hashes": [hash_key(TEAM_KEY)],
            "endpoints": ["echo"],
            "upstream": "service",
            "upstream_key_env": "TEAM_LAUNCH_KEY",
            "rate": rate,
        }
    }


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The google.rpc.RetryInfo delay of a refused call, in seconds; fails if there is none."""
    status = rpc_status.from_call(error)
    assert status is not None, error
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details), status
    return retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9


async def predict(stub: pb_grpc.EndpointServiceStub) -> tuple[dict[str, str], grpc.aio.AioRpcError | None]:
    """One Predict of `echo`: its trailing metadata (the rate-limit headers), and its error if it failed."""
    call = stub.Predict(REQUEST, metadata=BEARER, timeout=10)
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        return {}, exc
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    return {k: str(v) for k, v in (await call.trailing_metadata() or ())}, None


async def predict_many(address: str, calls: int) -> list[tuple[dict[str, str], grpc.aio.AioRpcError | None]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EndpointServiceStub(channel)
        return await asyncio.gather(*(predict(stub) for _ in range(calls)))


async def test_two_gateway_processes_share_one_redis_bucket(
    tmp_path: Path, redis_server: RedisServer, serve_process: ServeFactory
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[server]\nport = 0\n[metrics]\nport = 0\n"
        '[limits]\nbackend = "redis"\n'
        "[tenants.team]\n"
        f'api_key_hashes = ["{hash_key(TEAM_KEY)}"]\n'
        'endpoints = ["echo"]\n'
        'upstream = "service"\n'
        'upstream_key_env = "TEAM_LAUNCH_KEY"\n'
        "rate = {per_second = 0.001, burst = 5}\n"
    )
    env = {**SECRETS, "LAUNCH_GATEWAY_REDIS_URL": redis_server.url}
    async with LocalLaunchServer(api_keys=[LAUNCH_KEY]) as launch:
        gateways = [await serve_process("--config", str(config), "--upstream", launch.url, env=env) for _ in range(2)]
        per_gateway = await asyncio.gather(*(predict_many(served.address, 12) for served in gateways))

        outcomes = [outcome for results in per_gateway for outcome in results]
        allowed = [headers for headers, error in outcomes if error is None]
        refused = [error for _, error in outcomes if error is not None]
        assert len(allowed) == 5, [e.details() for e in refused]  # one shared burst, never one per gateway
        assert {headers["ratelimit-limit"] for headers in allowed} == {"5"}
        assert sorted(headers["ratelimit-remaining"] for headers in allowed) == ["0", "1", "2", "3", "4"]
        assert len(refused) == 19
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "rate limit exceeded for tenant 'team'" in (error.details() or "")
            assert retry_delay(error) > 900  # a token every 1000 s
            assert "retry-after" in dict(error.trailing_metadata() or ())
        sync_tasks = [r for r in launch.records if r.path == "/v1/sync-tasks"]
        assert [r.api_key for r in sync_tasks] == [LAUNCH_KEY] * 5  # refused calls never went upstream

        for served in gateways:
            assert await served.stop() == 0, served.logs


@pytest.mark.parametrize("fail_open", [pytest.param(True, id="fail-open"), pytest.param(False, id="fail-closed")])
async def test_redis_outage_follows_the_policy_and_warns_once(
    make_stack: StackFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, fail_open: bool
) -> None:
    caplog.set_level(logging.INFO, logger="launch_gateway")
    stack = await make_stack(
        api_keys=[LAUNCH_KEY],
        settings={
            "limits": {"backend": "redis", "fail_open": fail_open},
            "tenants": team({"per_second": 0.01, "burst": 50}),
        },
        gateway_env={**SECRETS, "LAUNCH_GATEWAY_REDIS_URL": redis_server.url},
    )
    for remaining in ("49", "48", "47"):
        headers, error = await predict(stack.stub)
        assert error is None, error
        assert headers["ratelimit-limit"] == "50"
        assert headers["ratelimit-remaining"] == remaining
        assert int(headers["ratelimit-reset"]) > 0

    redis_server.kill()
    outcomes = await asyncio.gather(*(predict(stack.stub) for _ in range(20)))  # all meet the outage at once

    if fail_open:
        assert [error for _, error in outcomes] == [None] * 20
        assert {headers["ratelimit-limit"] for headers, _ in outcomes} == {"50"}
    else:
        for _, error in outcomes:
            assert error is not None
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert retry_delay(error) > 0
            assert "retry-after" in dict(error.trailing_metadata() or ())
    sync_tasks = [r for r in stack.launch.records if r.path == "/v1/sync-tasks"]
    assert len(sync_tasks) == (23 if fail_open else 3)
    warnings = [r for r in caplog.records if r.name.startswith("launch_gateway") and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith(f"rate-limit Redis at {redis_server.url} failed")
    assert ("failing open" if fail_open else "failing closed") in message
