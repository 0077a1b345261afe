"""SIGTERM drains: NOT_SERVING, new calls refused, unary calls finish, open streams get a status, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launch_gateway.testing.local_launch import LocalLaunchServer, builtin_endpoints
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY, Endless


async def test_sigterm_drains_without_dropping_a_call(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 0\ngrace_period = 3.0\n[metrics]\nport = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_GATEWAY_")}
    specs = [*builtin_endpoints(), Endless(interval=0.05).spec()]
    async with LocalLaunchServer(specs) as launch:
        process = await asyncio.create_subprocess_exec(
            LAUNCH_GATEWAY, "serve", "--config", str(config), "--upstream", launch.url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            address = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()[3]
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.EndpointServiceStub(channel)
                sleeper = pb.PredictRequest(
                    endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 1}')
                )
                unary = stub.Predict(sleeper, timeout=20)
                stream_request = pb.StreamPredictRequest(
                    endpoint_name="endless", request=pb.EndpointRequest(args_json="{}")
                )
                stream = stub.StreamPredict(stream_request, timeout=20)
                await stream.read()
                await launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")

                process.send_signal(signal.SIGTERM)
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(100):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        break
                    await asyncio.sleep(0.02)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

                echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
                refused = None
                for _ in range(100):  # the server refuses new calls once it has begun to stop
                    try:
                        await stub.Predict(echo, timeout=5)
                    except grpc.aio.AioRpcError as exc:
                        refused = exc.code()
                        break
                    await asyncio.sleep(0.02)
                assert refused == grpc.StatusCode.UNAVAILABLE

                assert (await unary).response.status == pb.TASK_STATUS_SUCCESS  # finished within the grace
                events = 1
                try:
                    while await stream.read() is not grpc.aio.EOF:
                        events += 1
                    final = (grpc.StatusCode.OK, "")
                except grpc.aio.AioRpcError as exc:
                    final = (exc.code(), exc.details() or "")
            assert final[0] == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in final[1]
            assert events > 1
            assert await asyncio.wait_for(process.wait(), 30) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
