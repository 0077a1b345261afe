"""`launch-gateway demo`: a local Launch server, the gateway in front of it, and three calls.

Everything runs in this one process on free ports. The calls go over real gRPC to the gateway,
which calls the local Launch server over real HTTP: a sync Predict, an async SubmitAsync then
WaitAsyncTask, and a StreamPredict whose events are printed as they arrive.
"""

from __future__ import annotations

import json
import time

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from launch_gateway.cli import until_signalled
from launch_gateway.server.app import GatewayServer
from launch_gateway.server.settings import build_settings
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc


def _show(label: str, message: Message) -> None:
    print(f"  {label} {json_format.MessageToJson(message, indent=None)}", flush=True)


async def run_calls(stub: pb_grpc.EndpointServiceAsyncStub) -> None:
    """The three calls, printed as they happen."""
    print("\n1. sync: Predict on 'echo'", flush=True)
    request = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest())
    request.request.args.update({"text": "hello", "n": 3})
    _show("->", request)
    reply = await stub.Predict(request, timeout=10)
    _show("<-", reply)
    print(f"     json.loads(result) = {json.loads(reply.response.result)!r}", flush=True)

    print("\n2. async: SubmitAsync on 'echo-async', then WaitAsyncTask", flush=True)
    submit = pb.SubmitAsyncRequest(endpoint_name="echo-async", request=pb.EndpointRequest())
    submit.request.args.update({"delay": 0.5, "question": "6 x 7"})
    _show("->", submit)
    started = time.monotonic()
    submitted = await stub.SubmitAsync(submit, timeout=10)
    _show("<-", submitted)
    wait = pb.WaitAsyncTaskRequest(task_id=submitted.task_id, timeout=duration_pb2.Duration(seconds=10))
    _show("->", wait)
    done = await stub.WaitAsyncTask(wait, timeout=15)
    _show("<-", done)
    print(f"     finished {time.monotonic() - started:.2f} s after submission", flush=True)

    print("\n3. streaming: StreamPredict on 'count', events as they arrive", flush=True)
    stream_request = pb.StreamPredictRequest(endpoint_name="count", request=pb.EndpointRequest())
    stream_request.request.args.update({"n": 5, "interval": 0.3})
    _show("->", stream_request)
    started = time.monotonic()
    async for event in stub.StreamPredict(stream_request, timeout=30):
        _show(f"<- +{time.monotonic() - started:.2f}s", event)
    print("  (stream ended)", flush=True)


async def demo(once: bool = False) -> int:
    async with LocalLaunchServer() as launch:
        settings = build_settings({"upstream": {"url": launch.url}, "server": {"port": 0}, "metrics": {"port": 0}})
        gateway = GatewayServer(settings, env={})
        await gateway.start()
        try:
            print(f"local Launch server: {launch.url}", flush=True)
            print(f"gateway (gRPC):      {gateway.address}", flush=True)
            if gateway.ops is not None:
                print(f"metrics and probes:  {gateway.ops.url}/metrics /healthz /readyz", flush=True)
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                await run_calls(pb_grpc.EndpointServiceStub(channel))
            if not once:
                print(
                    f'\nServing until Ctrl-C. Try:\n  grpcurl -plaintext -d \'{{"endpoint_name": "echo", '
                    f'"request": {{"args": {{"x": 1}}}}}}\' {gateway.address} '
                    "launch_gateway.v1.EndpointService/Predict",
                    flush=True,
                )
                await until_signalled(gateway.stop)
        finally:
            await gateway.stop(grace=1)
    return 0
