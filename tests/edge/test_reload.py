"""The tenant config reloads without a restart: on SIGHUP and when the file changes; a broken file is refused."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import StackFactory
from tests.edge.conftest import ENV, HANDLE_SECRET, KEY_A, LAUNCH_KEY_A, bearer
from tests.edge.test_handles import submit, wait
from tests.serving import ServeFactory
from tests.waiting import wait_for

KEY_C = "gw-key-team-a-rotated-555"
ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))


def config_text(
    key: str,
    extra: str = "",
    *,
    reload_interval: float = 3600.0,
    auth: str = "",
    endpoints: str = '["echo", "sleep"]',
    tenant: str = 'upstream_key_env = "TEAM_A_LAUNCH_KEY"',
) -> str:
    """team-a, known by `key`, in a file checked every `reload_interval` s, with `auth`, `tenant` and `extra` lines."""
    return f"""
[server]
port = 0
[metrics]
port = 0
[auth]
reload_interval = {reload_interval}
{auth}
[tenants.team-a]
api_key_hashes = ["{hash_key(key)}"]
endpoints = {endpoints}
{tenant}
{extra}
"""


async def test_sighup_reloads_and_calls_in_flight_keep_their_config(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(KEY_A))
    async with LocalLaunchServer(api_keys=[LAUNCH_KEY_A]) as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url, env=ENV)
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
            sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 1}'))
            in_flight = stub.Predict(sleeper, timeout=20, metadata=bearer(KEY_A))
            await launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks" and b"seconds" in r.body)

            config.write_text(config_text(KEY_C))
            served.send_signal(signal.SIGHUP)
            await served.log_line("config reloaded")
            assert (await in_flight).response.status == pb.TASK_STATUS_SUCCESS  # started under the old key
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_C))

            config.write_text("[tenants.team-a\nbroken = ")
            served.send_signal(signal.SIGHUP)
            await served.log_line("config reload refused")
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_C))  # the old config stays
        assert await served.stop() == 0
    assert "not valid TOML" in served.logs
    for secret in (KEY_A, KEY_C, LAUNCH_KEY_A, HANDLE_SECRET):
        assert secret not in served.logs


async def test_a_changed_file_is_picked_up_without_a_signal(make_stack: StackFactory, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(KEY_A))
    tenants: dict[str, Any] = {
        "team-a": {"api_key_hashes": [hash_key(KEY_A)], "endpoints": ["echo"], "upstream_key_env": "TEAM_A_LAUNCH_KEY"}
    }
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": tenants, "auth": {"reload_interval": 0.02}},
        gateway_env=ENV,
        config_path=str(config),
    )
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    config.write_text(config_text(KEY_C, extra="# rotated"))
    await wait_for(lambda: stack.gateway.edges.reloads, within=5, what="the changed file to be reloaded")
    assert stack.gateway.edges.reloads == 1
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_C))
    config.write_text(config_text(KEY_C, extra='endpoints_typo = ["x"]'))
    assert stack.gateway.reload() is False
    assert stack.gateway.edges.failed_reloads >= 1
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_C))


def secrets_config(auth: str, tenant: str = 'upstream_key_env = "TEAM_A_LAUNCH_KEY"') -> str:
    """team-a in a file that is watched every 20 ms, with `auth` and `tenant` lines added."""
    return config_text(KEY_A, reload_interval=0.02, auth=auth, endpoints='["echo", "echo-async"]', tenant=tenant)


async def test_a_handle_secret_removed_from_its_file_stops_verifying_without_sighup(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    compromised, fresh = "a-compromised-secret-0123456789", "a-fresh-handle-secret-0123456789"
    secrets = tmp_path / "handle-secrets"
    secrets.write_text(f"{compromised}\n")
    config = tmp_path / "gateway.toml"
    config.write_text(secrets_config(f'handle_secrets_file = "{secrets}"'))
    tenants = {
        "team-a": {
            "api_key_hashes": [hash_key(KEY_A)],
            "endpoints": ["echo", "echo-async"],
            "upstream_key_env": "TEAM_A_LAUNCH_KEY",
        }
    }
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A],
        settings={"tenants": tenants, "auth": {"handle_secrets_file": str(secrets), "reload_interval": 0.02}},
        gateway_env={"TEAM_A_LAUNCH_KEY": LAUNCH_KEY_A},
        config_path=str(config),
    )
    task_id = await submit(stack)  # signed with the compromised secret
    assert (await wait(stack, task_id)).response.status == pb.TASK_STATUS_SUCCESS

    secrets.write_text(f"{fresh}\n")  # the compromised secret is dropped; the config file is untouched
    await wait_for(lambda: stack.gateway.edges.reloads, within=5, what="the changed secrets file to be reloaded")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await wait(stack, task_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await wait(stack, await submit(stack))).response.status == pb.TASK_STATUS_SUCCESS


async def test_a_tenants_launch_key_file_is_picked_up_without_sighup(make_stack: StackFactory, tmp_path: Path) -> None:
    old_key, new_key = "launch-key-before-rotation", "launch-key-after-rotation"
    key_file = tmp_path / "team-a-launch-key"
    key_file.write_text(old_key + "\n")
    config = tmp_path / "gateway.toml"
    config.write_text(secrets_config("", f'upstream_key_file = "{key_file}"'))
    team = {
        "api_key_hashes": [hash_key(KEY_A)],
        "endpoints": ["echo", "echo-async"],
        "upstream_key_file": str(key_file),
    }
    stack = await make_stack(
        api_keys=[old_key, new_key],
        settings={"tenants": {"team-a": team}, "auth": {"reload_interval": 0.02}},
        gateway_env={"LAUNCH_GATEWAY_HANDLE_SECRETS": HANDLE_SECRET},
        config_path=str(config),
    )
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    key_file.write_text(new_key + "\n")
    await wait_for(lambda: stack.gateway.edges.reloads, within=5, what="the changed key file to be reloaded")
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
    sent = [r.api_key for r in stack.launch.records if r.path == "/v1/sync-tasks"]
    assert sent == [old_key, new_key]


async def test_a_file_that_is_not_utf8_is_refused_and_watching_goes_on(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    def watched(key: str, auth: str = "") -> str:
        return config_text(key).replace("reload_interval = 3600.0", f"reload_interval = 0.02\n{auth}")

    def logged(text: str, times: int) -> bool:
        return served.logs.count(text) >= times

    config = tmp_path / "gateway.toml"
    config.write_text(watched(KEY_A))
    secrets = tmp_path / "handle-secrets"
    async with LocalLaunchServer(api_keys=[LAUNCH_KEY_A]) as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url, env=ENV)
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            config.write_bytes(watched(KEY_C).encode() + b"# caf\xe9 in Latin-1\n")
            await wait_for(lambda: logged("config reload refused", 1), within=10, what="the reload to be refused")
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))  # the old config stays

            secrets.write_bytes(b"\xff" * 32 + b"\n")
            config.write_text(watched(KEY_C, f'handle_secrets_file = "{secrets}"'))
            await wait_for(lambda: logged("config reload refused", 2), within=10, what="the secret file to be refused")
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))

            secrets.write_text(HANDLE_SECRET + "\n")  # fixed: the watcher is still running and picks it up
            await served.log_line("config reloaded")
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_C))
        assert await served.stop() == 0
    assert f"{config}: not valid UTF-8" in served.logs
    assert f"{secrets} is not valid UTF-8" in served.logs
    assert "Traceback" not in served.logs
