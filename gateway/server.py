"""The gateway process: wires settings, the upstream client and the servicer into a grpc.aio server.

`GatewayServer` owns the lifecycle: `start()` opens the upstream session and binds the port (0 picks
a free one, read back from `port`); `stop()` refuses new calls, lets calls in flight finish within
the grace period, then closes the upstream session. The standard health service reports SERVING
while the gateway runs, and reflection (on unless `server.reflection = false`) lets grpcurl and
other tools discover the API without `.proto` files.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway._proto.launch_gateway.v1 import endpoint_service_pb2 as pb
from gateway._proto.launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from gateway.clock import Clock, SystemClock
from gateway.config import Settings
from gateway.credentials import UpstreamCredentials
from gateway.endpoints import EndpointDirectory
from gateway.service import EndpointService
from gateway.upstream import LaunchAPI
from gateway.waits import TaskWaits

log = logging.getLogger("gateway")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EndpointService"].full_name


class GatewayServer:
    """One gateway: a gRPC server in front of one Launch API."""

    def __init__(
        self, settings: Settings, *, upstream_api_key: str | None = None, clock: Clock | None = None
    ):
        self.settings = settings
        self._clock = clock or SystemClock()
        self.api = LaunchAPI(
            settings.upstream.url,
            max_connections=settings.upstream.max_connections,
            connect_timeout=settings.upstream.connect_timeout,
        )
        self.directory = EndpointDirectory(self.api, self._clock, settings.upstream.endpoint_cache_ttl)
        self.waits = TaskWaits(self._clock, settings.poll)
        self.health = HealthServicer()
        self._credentials = UpstreamCredentials(settings.upstream.auth, upstream_api_key)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """`host:port` to dial, valid after `start()`."""
        return f"{self.settings.server.host}:{self.port}"

    async def start(self) -> None:
        await self.api.start()
        server = grpc.aio.server()
        service = EndpointService(
            self.settings, self.api, self._credentials, self.directory, self.waits, self._clock
        )
        pb_grpc.add_EndpointServiceServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.settings.server.reflection:
            names = (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
            reflection.enable_server_reflection(names, server)
        self.port = server.add_insecure_port(f"{self.settings.server.host}:{self.settings.server.port}")
        if self.port == 0:
            await self.api.close()
            raise OSError(f"cannot listen on {self.settings.server.host}:{self.settings.server.port}")
        await server.start()
        self._server = server
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give calls in flight `grace` seconds (default: the setting), then close."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        server, self._server = self._server, None
        await server.stop(self.settings.server.grace_period if grace is None else grace)
        await self.waits.close()
        await self.api.close()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(grace=0)
