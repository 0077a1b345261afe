"""A bare grpc.aio echo server: the Python gRPC ceiling the gateway's Predict is compared with.

It serves `launch_gateway.v1.EndpointService/Predict` (so one pre-framed h2load body drives both),
parses the request, echoes its `args` as JSON text and does nothing else, on uvloop as the gateway
does. Its StreamPredict sends `args.n` ready-made messages as fast as grpc.aio writes them: the
ceiling for the gateway's streaming relay. Its WaitAsyncTask never answers: the memory grpc.aio
itself holds per call in flight, the floor under the gateway's waiters.
`python -m bench.echo_server --port 0` prints `echo server listening on HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc


class EchoService(pb_grpc.EndpointServiceServicer):
    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:  # noqa: N802
        args = request.request
        result = args.args_json if args.HasField("args_json") else json.dumps(dict(args.args.items()))
        return pb.PredictResponse(
            response=pb.EndpointResponse(status=pb.TASK_STATUS_SUCCESS, result=result, status_code=200)
        )

    async def WaitAsyncTask(  # noqa: N802
        self, request: pb.WaitAsyncTaskRequest, context: Any
    ) -> pb.WaitAsyncTaskResponse:
        """A call that stays pending until its caller leaves: what grpc.aio itself holds per call in flight."""
        await asyncio.Event().wait()
        return pb.WaitAsyncTaskResponse()  # pragma: no cover - never set

    async def StreamPredict(  # noqa: N802
        self, request: pb.StreamPredictRequest, context: Any
    ) -> AsyncIterator[pb.StreamPredictResponse]:
        n = int(json.loads(request.request.args_json or "{}").get("n", 0))
        for i in range(n):
            yield pb.StreamPredictResponse(
                response=pb.EndpointResponse(status=pb.TASK_STATUS_SUCCESS, result=f'{{"i":{i}}}', status_code=200)
            )


async def serve_servicer(servicer: pb_grpc.EndpointServiceServicer, name: str, host: str, port: int) -> None:
    """Serve `servicer` alone on a plain grpc.aio server; its first line says `<name> listening on HOST:PORT`."""
    # The gateway's own pending-request limits (app.server_options), so 10,000 calls at once are all taken.
    server = grpc.aio.server(
        options=[("grpc.server.max_pending_requests", 10000), ("grpc.server.max_pending_requests_hard_limit", 30000)]
    )
    pb_grpc.add_EndpointServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"{name} listening on {host}:{bound}", flush=True)
    await server.wait_for_termination()


async def serve(host: str, port: int) -> None:
    await serve_servicer(EchoService(), "echo server", host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
