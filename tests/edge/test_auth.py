"""Callers and tenants: keys, endpoint permissions, and the Launch credential each tenant's calls carry."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory, upstream_calls
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants


def predict(endpoint: str = "echo") -> pb.PredictRequest:
    return pb.PredictRequest(endpoint_name=endpoint, request=pb.EndpointRequest(args_json='{"a": 1}'))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing API key"),
        (bearer("not-a-key"), "unknown API key"),
        ((("x-api-key", "not-a-key"),), "unknown API key"),
    ],
    ids=["no-key", "wrong-bearer", "wrong-x-api-key"],
)
async def test_callers_without_a_known_key_are_unauthenticated(
    edge_stack: Stack, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stack.stub.Predict(predict(), timeout=10, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (caught.value.details() or "")
    assert upstream_calls(edge_stack.launch) == []  # nothing went upstream


@pytest.mark.parametrize(("key", "endpoint"), [(KEY_A, "fail"), (KEY_B, "count")], ids=["team-a", "team-b"])
async def test_endpoints_outside_the_tenants_list_are_permission_denied(
    edge_stack: Stack, key: str, endpoint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stack.stub.Predict(predict(endpoint), timeout=10, metadata=bearer(key))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"endpoint {endpoint!r} is not allowed" in (caught.value.details() or "")


async def test_service_mode_sends_the_tenants_launch_key(edge_stack: Stack) -> None:
    reply = await edge_stack.stub.Predict(predict(), timeout=10, metadata=bearer(KEY_A))
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await edge_stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == LAUNCH_KEY_A


async def test_forward_mode_sends_the_callers_own_key(edge_stack: Stack) -> None:
    reply = await edge_stack.stub.Predict(predict("echo"), timeout=10, metadata=(("x-api-key", KEY_B),))
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await edge_stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == KEY_B


async def test_glob_patterns_allow_matching_endpoints(edge_stack: Stack) -> None:
    reply = await edge_stack.stub.GetEndpoint(
        pb.GetEndpointRequest(endpoint_name="echo-async"), timeout=10, metadata=bearer(KEY_B)
    )
    assert reply.endpoint.kind == pb.ENDPOINT_KIND_ASYNC


async def test_auth_comes_before_request_validation(edge_stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stack.stub.Predict(pb.PredictRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_open_mode_without_tenants_accepts_anyone(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_stack()
    assert "OPEN MODE" in caplog.text
    reply = await stack.stub.Predict(predict(), timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


async def test_tenants_need_handle_secrets(make_stack: StackFactory) -> None:
    from launch_gateway.server.settings import ConfigError

    with pytest.raises(ConfigError, match=r"auth\.handle_secrets_env: tenants need task-handle secrets"):
        await make_stack(settings={"tenants": tenants()}, gateway_env={"TEAM_A_LAUNCH_KEY": "k"})
    with pytest.raises(ConfigError, match=r"tenants.team-a.upstream_key_env: \$TEAM_A_LAUNCH_KEY is not set"):
        await make_stack(settings={"tenants": tenants()}, gateway_env={k: v for k, v in ENV.items() if "TEAM" not in k})


async def test_a_tenants_launch_key_can_come_from_a_file(make_stack: StackFactory, tmp_path: Path) -> None:
    key_file = tmp_path / "team-a-launch-key"
    key_file.write_text(LAUNCH_KEY_A + "\n")
    team = tenants(**{"team-a": {"upstream_key_env": "", "upstream_key_file": str(key_file)}})
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": team},
        gateway_env={"LAUNCH_GATEWAY_HANDLE_SECRETS": ENV["LAUNCH_GATEWAY_HANDLE_SECRETS"]},
    )
    reply = await stack.stub.Predict(predict(), timeout=10, metadata=bearer(KEY_A))
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.api_key == LAUNCH_KEY_A
