"""Open mode is what a file says (`auth.open = true`) or what no file means, never what an empty file means.

A config file that is empty for a moment (`cat new > gateway.toml` truncates before it writes) is valid
TOML with no tenants. Read as open mode, it would let every anonymous caller in with the gateway's own
Launch key; so a file without tenants is refused unless it says `auth.open = true`, and a reload never
changes the mode, whatever the file says.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from launch_gateway.server.access.tenants import hash_key
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import load_settings
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY, StackFactory
from tests.edge.conftest import ENV, KEY_A, LAUNCH_KEY_A, bearer
from tests.serving import ServeFactory, serve_env

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
PORTS = "[server]\nport = 0\n[metrics]\nport = 0\n"
TENANT = f"""
[tenants.team-a]
api_key_hashes = ["{hash_key(KEY_A)}"]
endpoints = ["echo"]
upstream_key_env = "TEAM_A_LAUNCH_KEY"
"""
NO_TENANTS = "auth.open: the file configures no tenants; add [tenants.<name>] tables, or set auth.open = true"


async def serve_exit(*args: str, within: float = 30) -> tuple[int, str]:
    """`launch-gateway serve ARGS` that is expected to exit: its exit code and standard error."""
    process = await asyncio.create_subprocess_exec(
        LAUNCH_GATEWAY, "serve", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=serve_env(ENV),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(f"serve kept running (it should have refused to start):\n{out.decode()}{err.decode()}")
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


@pytest.mark.parametrize(
    "text", ["", "\n", PORTS, "# the new config is being written\n"], ids=["empty", "blank", "ports-only", "comment"]
)
async def test_a_config_file_without_tenants_is_refused_at_start(tmp_path: Path, text: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    code, err = await serve_exit("--config", str(config), "--port", "0", "--metrics.port", "0")
    assert code == 2, err
    assert NO_TENANTS in err
    assert "listening" not in err


@pytest.mark.parametrize(
    ("config", "args"),
    [(None, ()), (PORTS + "[auth]\nopen = true\n", ()), (PORTS, ("--auth.open", "true"))],
    ids=["no-config-file", "auth-open-in-the-file", "auth-open-flag"],
)
async def test_open_mode_is_no_config_file_or_auth_open(
    tmp_path: Path, serve_process: ServeFactory, config: str | None, args: tuple[str, ...]
) -> None:
    path = tmp_path / "gateway.toml"
    if config is not None:
        path.write_text(config)
    async with LocalLaunchServer() as launch:
        given = ("--config", str(path)) if config is not None else ()
        served = await serve_process(*given, *args, "--upstream", launch.url, "--port", "0", "--metrics.port", "0")
        assert served.listening is not None
        assert served.listening.mode == "open mode", served.listening.line
        async with grpc.aio.insecure_channel(served.address) as channel:
            await pb_grpc.EndpointServiceStub(channel).Predict(ECHO, timeout=10)  # anyone, without a key
        assert await served.stop() == 0
    assert "OPEN MODE" in served.logs


def test_auth_open_with_tenants_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[auth]\nopen = true\n" + TENANT)
    with pytest.raises(ConfigError, match=r"auth\.open: open mode accepts every caller, so it cannot have tenants"):
        load_settings(config)


async def test_check_config_refuses_a_file_without_tenants(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("")
    process = await asyncio.create_subprocess_exec(
        LAUNCH_GATEWAY, "check-config", str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert NO_TENANTS in err.decode()


async def test_an_emptied_config_file_is_refused_on_reload_and_the_tenants_stay(
    tmp_path: Path, serve_process: ServeFactory
) -> None:
    config = tmp_path / "gateway.toml"
    watched = PORTS + "[auth]\nreload_interval = 0.05\n"
    config.write_text(watched + TENANT)
    async with LocalLaunchServer(api_keys=[LAUNCH_KEY_A]) as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url, env=ENV)
        assert served.listening is not None
        assert served.listening.mode == "1 tenant"
        config.write_text("")  # `cat new > gateway.toml`: truncated first, written a moment later
        refused = await served.log_line("config reload refused", within=10)
        assert '"level":"error"' in refused
        assert NO_TENANTS in refused
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Predict(ECHO, timeout=10)  # still no anonymous callers
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
            assert served.listening.metrics_url is not None
            scrape = await asyncio.to_thread(_get, served.listening.metrics_url)
            assert 'gateway_config_reloads_total{result="refused"} 1.0' in scrape

            config.write_text(watched + TENANT + "# written in full\n")
            await served.log_line("config reloaded", within=10)
            await stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))
        assert await served.stop() == 0


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_a_reload_never_switches_tenants_to_open_mode(
    make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(PORTS + TENANT)
    tenants = {
        "team-a": {"api_key_hashes": [hash_key(KEY_A)], "endpoints": ["echo"], "upstream_key_env": "TEAM_A_LAUNCH_KEY"}
    }
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants}, gateway_env=ENV, config_path=str(config)
    )
    config.write_text(PORTS + "[auth]\nopen = true\n")  # says open mode explicitly: still not by reload
    with caplog.at_level(logging.ERROR, logger="launch_gateway"):
        assert stack.gateway.reload() is False
    assert "would drop every tenant and switch to open mode; the mode changes only with a restart" in caplog.text
    assert stack.gateway.edges.failed_reloads == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(ECHO, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await stack.stub.Predict(ECHO, timeout=10, metadata=bearer(KEY_A))


async def test_a_reload_never_turns_open_mode_into_tenants(
    make_stack: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(PORTS + "[auth]\nopen = true\n")
    stack = await make_stack(settings={"auth": {"open": True}}, gateway_env=ENV, config_path=str(config))
    config.write_text(PORTS + TENANT)
    with caplog.at_level(logging.ERROR, logger="launch_gateway"):
        assert stack.gateway.reload() is False
    assert "would switch open mode to 1 tenant; the mode changes only with a restart" in caplog.text
    await stack.stub.Predict(ECHO, timeout=10)  # open mode, as started
