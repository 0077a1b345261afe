"""The console script as users run it: `serve` as a real process, `demo --once`, `check-config`, `hash-key`."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY, StackFactory
from tests.e2e.test_tools import run
from tests.edge.conftest import ENV
from tests.serving import ServeFactory


async def test_serve_listens_answers_and_exits_cleanly_on_sigterm(tmp_path: Path, serve_process: ServeFactory) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 0\n[metrics]\nport = 0\n[poll]\ninitial = 0.02\n[auth]\nopen = true\n")
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
    config.write_text('[upstream]\nurl = "http://127.0.0.1:1"\n[auth]\nopen = true\n')
    code, out, _ = await run(LAUNCH_GATEWAY, "check-config", str(config))
    assert (code, out.strip()) == (0, f"{config}: ok")


async def test_serve_refuses_a_bad_config_with_the_check_config_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[upstream]\nauth = "magic"\n')
    code, out, err = await run(LAUNCH_GATEWAY, "serve", "--config", str(config), "--port", "0")
    assert (code, out) == (2, "")
    assert "upstream.auth: must be one of service, forward" in err


async def test_ctrl_c_drains_calls_in_flight_like_sigterm(serve_process: ServeFactory) -> None:
    async with LocalLaunchServer() as launch:
        served = await serve_process("--upstream", launch.url, "--port", "0", "--metrics.port", "0")
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 0.5}'))
            in_flight = stub.Predict(sleeper, timeout=10)
            await launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
            served.send_signal(signal.SIGINT)
            assert (await in_flight).response.status == pb.TASK_STATUS_SUCCESS
        assert await served.exit_code() == 0


async def test_serve_without_metrics_opens_no_metrics_port(serve_process: ServeFactory) -> None:
    served = await serve_process("--upstream", "http://127.0.0.1:9", "--port", "0", "--metrics.enabled", "false")
    assert served.listening is not None
    assert served.listening.metrics_url is None, served.listening.line
    assert "metrics" not in served.listening.line
    async with grpc.aio.insecure_channel(served.address) as channel:  # gRPC serves all the same
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # its upstream does not answer


async def test_sigterm_as_soon_as_it_listens_still_exits_cleanly(serve_process: ServeFactory) -> None:
    served = await serve_process("--upstream", "http://127.0.0.1:9", "--port", "0", "--metrics.port", "0")
    # Once it says it listens, a SIGTERM (an orchestrator's, say) must drain and exit 0, not kill it.
    assert await served.stop() == 0, served.logs


def sha256_key(key: bytes) -> str:
    return "sha256:" + hashlib.sha256(key).hexdigest()


async def test_hash_key_prints_the_hash_a_tenant_config_accepts(make_stack: StackFactory) -> None:
    key = b"gw-key-from-hash-key-0123"
    code, out, err = await run(LAUNCH_GATEWAY, "hash-key", stdin=key)  # echo -n "$KEY" | launch-gateway hash-key
    assert code == 0, err
    assert out == sha256_key(key) + "\n"
    team = {"api_key_hashes": [out.strip()], "endpoints": ["echo"], "upstream": "forward"}
    stack = await make_stack(api_keys=[key.decode()], settings={"tenants": {"team": team}}, gateway_env=ENV)
    request = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    reply = await stack.stub.Predict(request, timeout=10, metadata=(("authorization", f"Bearer {key.decode()}"),))
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


async def test_hash_key_without_a_key_says_where_it_reads_it() -> None:
    code, out, err = await run(LAUNCH_GATEWAY, "hash-key", stdin=b"")
    assert (code, out) == (2, "")
    assert "hash-key reads the API key from standard input" in err
