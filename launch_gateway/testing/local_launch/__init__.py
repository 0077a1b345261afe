"""A local imitation of the Scale Launch HTTP API that runs Python callables as model endpoints.

It is the upstream for the gateway's tests, demo and benchmarks: the same routes, bodies, status
codes and quirks as Launch (see launch-http-api.md), on 127.0.0.1, observable request by request.

    async with LocalLaunchServer() as server:          # the built-in example endpoints
        ...  # point a client at server.url
        record = await server.wait_for_record(lambda r: r.path == "/v1/streaming-tasks")
        assert await record.wait_done() == "disconnected"

Modules: `endpoints` (specs, registry), `examples` (built-in endpoints), `predict_request` (body
validation), `invocation` (running functions), `results`, `tasks` (async queue), `callbacks`,
`event_stream` (SSE), `auth`, `records`, `faults` (fault injection) and `failures` (error bodies),
`app` (routes), `server` (lifecycle). `LocalLaunchServer(faults=Faults(throttle_rate=0.1, seed=1))` fails on purpose.
"""

from __future__ import annotations

from launch_gateway.testing.local_launch.endpoints import EndpointSpec, parse_endpoint_spec
from launch_gateway.testing.local_launch.examples import builtin_endpoints
from launch_gateway.testing.local_launch.faults import Faults, parse_fault
from launch_gateway.testing.local_launch.records import RequestRecord
from launch_gateway.testing.local_launch.server import LocalLaunchServer

__all__ = [
    "EndpointSpec",
    "Faults",
    "LocalLaunchServer",
    "RequestRecord",
    "builtin_endpoints",
    "describe_endpoints",
    "parse_endpoint_spec",
    "parse_fault",
]


def describe_endpoints(server: LocalLaunchServer) -> list[str]:
    """One line per endpoint, e.g. "echo (sync)", for a command line to print."""
    return [f"{spec.name} ({spec.kind})" for spec in server.endpoints]
