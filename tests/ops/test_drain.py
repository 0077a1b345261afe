"""SIGTERM drains: not ready, the listener closed (new calls refused), unary calls finish, open streams get a
status, exit 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import grpc

from launch_gateway.testing.local_launch import LocalLaunchServer, builtin_endpoints
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import Endless
from tests.serving import ServeFactory
from tests.waiting import wait_for


async def test_sigterm_drains_without_dropping_a_call(tmp_path: Path, serve_process: ServeFactory) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 0\ngrace_period = 3.0\n[metrics]\nport = 0\n[auth]\nopen = true\n")
    specs = [*builtin_endpoints(), Endless(interval=0.05).spec()]
    async with LocalLaunchServer(specs) as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url)
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            sleeper = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 1}'))
            unary = stub.Predict(sleeper, timeout=20)
            endless = pb.StreamPredictRequest(endpoint_name="endless", request=pb.EndpointRequest(args_json="{}"))
            stream = stub.StreamPredict(endless, timeout=20)
            await stream.read()
            await launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")

            served.send_signal(signal.SIGTERM)
            # The listener closes and GOAWAY goes out at once, so NOT_SERVING is seen where the ops port
            # still answers: /readyz, until the process exits.
            assert served.listening is not None
            assert served.listening.metrics_url is not None
            readyz = served.listening.metrics_url.replace("/metrics", "/readyz")

            async def not_ready() -> bool:
                async with aiohttp.ClientSession() as session, session.get(readyz) as response:
                    return response.status == 503

            await wait_for(not_ready, within=5, what="/readyz to say 503 after SIGTERM")

            echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))

            async def refused() -> grpc.StatusCode | None:  # the closed listener refuses new calls
                try:
                    await stub.Predict(echo, timeout=5)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return None

            assert await wait_for(refused, within=5, what="a new call to be refused") == grpc.StatusCode.UNAVAILABLE

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
        assert await served.exit_code() == 0


async def test_sigterm_answers_a_wait_with_its_last_status_at_once(tmp_path: Path, serve_process: ServeFactory) -> None:
    """A wait may last `timeouts.max_wait` (900 s): the drain answers it what a wait whose time ran out
    answers, the last status, rather than holding the whole grace period and then cutting it."""
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nport = 0\ngrace_period = 120.0\n[metrics]\nport = 0\n[auth]\nopen = true\n")
    async with LocalLaunchServer() as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url)
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = pb_grpc.EndpointServiceStub(channel)
            never = pb.EndpointRequest(args_json='{"delay": 3600}')
            task = await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="echo-async", request=never), timeout=10)
            polls = len(launch.records)
            wait = stub.WaitAsyncTask(pb.WaitAsyncTaskRequest(task_id=task.task_id), timeout=600)
            await wait_for(
                lambda: any(r.path.startswith("/v1/async-tasks/") for r in launch.records[polls:]),
                within=10,
                what="the wait to poll",
            )
            served.send_signal(signal.SIGTERM)
            reply = await asyncio.wait_for(wait, 30)  # the grace period is 120 s
        assert reply.response.status in {pb.TASK_STATUS_PENDING, pb.TASK_STATUS_STARTED}
        assert await served.exit_code(within=30) == 0
