"""The console script as users run it: `serve` as a real process, `demo --once`, `check-config`."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY
from tests.e2e.test_tools import run
from tests.serving import ServeFactory


async def test_serve_listens_answers_and_exits_cleanly_on_sigterm(tmp_path: Path, serve_process: ServeFactory) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 0\n[metrics]\nport = 0\n[poll]\ninitial = 0.02\n")
    async with LocalLaunchServer(api_keys=["k-1"]) as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url, env={"LAUNCH_API_KEY": "k-1"})
        listening = served.listening
        assert listening is not None
        assert listening.address.startswith("127.0.0.1:"), listening.line
        assert (listening.upstream, listening.mode) == (launch.url, "open mode")
        assert listening.metrics_url is not None
        assert listening.metrics_url.startswith("http://127.0.0.1:")
        assert "k-1" not in listening.line  # the key is never printed
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            request = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"a":1}'))
            reply = await stub.Predict(request, timeout=10)
        assert json.loads(reply.response.result) == {"a": 1}
        code, out, _ = await run(LAUNCH_GATEWAY, "health", "--address", served.address)
        assert (code, out.strip()) == (0, f"{served.address}: SERVING")
        assert await served.stop() == 0


async def test_demo_once_shows_a_sync_an_async_and_a_streaming_call() -> None:
    code, out, err = await run(LAUNCH_GATEWAY, "demo", "--once", within=60)
    assert code == 0, err
    assert "1. sync: Predict" in out
    assert "2. async: SubmitAsync" in out
    assert "3. streaming: StreamPredict" in out
    assert out.count("TASK_STATUS_SUCCESS") >= 7  # sync, async and five stream events
    assert "(stream ended)" in out


async def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[upstream]\nauth = "magic"\n')
    code, _, err = await run(LAUNCH_GATEWAY, "check-config", str(config))
    assert code == 2
    assert "upstream.auth: must be one of service, forward" in err
    config.write_text('[upstream]\nurl = "http://127.0.0.1:1"\n')
    code, out, _ = await run(LAUNCH_GATEWAY, "check-config", str(config))
    assert (code, out.strip()) == (0, f"{config}: ok")
