"""A naive relay: the least a gRPC front for Launch's sync route can do, the reference the gateway must beat.

`EndpointService/Predict` becomes one aiohttp `POST /v1/sync-tasks?model_endpoint_id=<id>` with the
request's args as the body, and the answer's status, result (the text inside Launch's
`{"result": ...}`, as the gateway gives it) and status code come back as the response. Endpoint
ids are looked up once at start; there is nothing else: no auth, metrics, logs, retries, deadlines
or error mapping (any failure is grpc.aio's UNKNOWN). On uvloop, as the gateway runs.
`python -m bench.naive_relay --upstream URL --endpoint echo --port 0` prints
`naive relay listening on HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import uvloop
from google.protobuf import json_format

from bench.echo_server import serve_servicer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

STATUSES = {"SUCCESS": pb.TASK_STATUS_SUCCESS, "FAILURE": pb.TASK_STATUS_FAILURE}


class NaiveRelay(pb_grpc.EndpointServiceServicer):
    def __init__(self, session: aiohttp.ClientSession, upstream: str, endpoint_ids: dict[str, str]) -> None:
        self.session = session
        self.url = f"{upstream}/v1/sync-tasks"
        self.endpoint_ids = endpoint_ids

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:  # noqa: N802
        args = request.request
        raw = args.args_json if args.HasField("args_json") else json.dumps(json_format.MessageToDict(args.args))
        params = {"model_endpoint_id": self.endpoint_ids[request.endpoint_name]}
        body = f'{{"args": {raw}}}'.encode()
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.url, params=params, data=body, headers=headers) as response:
            answer = await response.json()
        result = answer.get("result")
        inner = result.get("result") if isinstance(result, dict) else result  # Launch wraps it: {"result": text}
        return pb.PredictResponse(
            response=pb.EndpointResponse(
                status=STATUSES.get(answer.get("status"), pb.TASK_STATUS_UNSPECIFIED),
                result=inner if isinstance(inner, str) else json.dumps(inner),
                status_code=answer.get("status_code") or response.status,
            )
        )


async def lookup_ids(session: aiohttp.ClientSession, upstream: str, names: Sequence[str]) -> dict[str, str]:
    ids = {}
    for name in names:
        async with session.get(f"{upstream}/v1/model-endpoints", params={"name": name}) as response:
            ids[name] = (await response.json())["model_endpoints"][0]["id"]
    return ids


async def serve(host: str, port: int, upstream: str, names: Sequence[str]) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        relay = NaiveRelay(session, upstream, await lookup_ids(session, upstream, names))
        await serve_servicer(relay, "naive relay", host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="the Launch API's base URL")
    parser.add_argument("--endpoint", action="append", default=[], help="an endpoint name to serve (repeatable)")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port, args.upstream.rstrip("/"), args.endpoint or ["echo"]))


if __name__ == "__main__":
    main()
