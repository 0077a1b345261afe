"""`serve --workers 2`: two processes on one port, metrics summed over both, a clean shutdown of all."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import grpc

from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY
from tests.ops.conftest import samples

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
OK = 'grpc_code="OK",grpc_method="Predict",grpc_service="launch_gateway.v1.EndpointService",grpc_type="unary"'


async def test_workers_share_the_port_and_sum_their_metrics(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_GATEWAY_", "PROMETHEUS_"))}
    async with LocalLaunchServer() as launch:
        process = await asyncio.create_subprocess_exec(
            LAUNCH_GATEWAY, "serve", "--upstream", launch.url, "--port", "0", "--metrics.port", "0", "--workers", "2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            assert "(2 workers)" in line, line
            address, metrics_url = line.split()[3], line.rsplit(" ", 1)[1].strip()
            children = (
                await asyncio.to_thread(Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text)
            ).split()
            assert len(children) == 2  # two gateway processes behind the one address
            calls = 40
            for _ in range(calls // 10):  # new channels, so connections land on both workers
                async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    stub = pb_grpc.EndpointServiceStub(ch)
                    await asyncio.gather(*(stub.Predict(ECHO, timeout=10) for _ in range(10)))
            async with aiohttp.ClientSession() as session:
                for _ in range(3):  # whichever worker answers, the sum is the same
                    async with session.get(metrics_url) as response:
                        text = await response.text()
                    assert samples(text, "grpc_server_handled_total")["{" + OK + "}"] == calls
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 60) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
