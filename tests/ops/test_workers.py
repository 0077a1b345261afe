"""`serve --workers 2`: two processes on one port, metrics summed over both (as one process shows them),
a clean shutdown of all."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import grpc

from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.ops.conftest import samples
from tests.serving import ServeFactory

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
OK = 'grpc_code="OK",grpc_method="Predict",grpc_service="launch_gateway.v1.EndpointService",grpc_type="unary"'


async def test_workers_share_the_port_and_sum_their_metrics(serve_process: ServeFactory) -> None:
    async with LocalLaunchServer() as launch:
        served = await serve_process(
            "--upstream", launch.url, "--port", "0", "--metrics.port", "0", "--workers", "2", within=60
        )
        listening = served.listening
        assert listening is not None
        assert listening.mode == "2 workers", listening.line
        assert listening.metrics_url is not None
        pid = served.process.pid
        children = (await asyncio.to_thread(Path(f"/proc/{pid}/task/{pid}/children").read_text)).split()
        assert len(children) == 2  # two gateway processes behind the one address
        calls = 40
        for _ in range(calls // 10):  # new channels, so connections land on both workers
            async with grpc.aio.insecure_channel(served.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = pb_grpc.EndpointServiceStub(ch)
                await asyncio.gather(*(stub.Predict(ECHO, timeout=10) for _ in range(10)))
        async with aiohttp.ClientSession() as session:
            for _ in range(3):  # whichever worker answers, the sum is the same
                async with session.get(listening.metrics_url) as response:
                    text = await response.text()
                assert samples(text, "grpc_server_handled_total")["{" + OK + "}"] == calls
        # The workers' sum is shown as one process's is: no _created series, Go's bucket bounds, every family.
        assert "_created" not in text
        assert 'le="1"' in text
        assert 'le="1.0"' not in text
        assert samples(text, "gateway_tenant_calls_total")['{endpoint="other",tenant="open"}'] == calls
        assert 'grpc_service="grpc.health.v1.Health"' in text
        served.send_signal(signal.SIGTERM)
        assert await served.exit_code(within=60) == 0
