"""The gateway process: wires settings, the edge, the upstream client and the servicer into a server.

`GatewayServer` owns the lifecycle: `start()` opens the upstream session and binds the port (0 picks
a free one, read back from `port`); `stop()` refuses new calls, lets calls in flight finish within
the grace period, then closes the upstream session and the rate limiter. The standard health
service reports SERVING while the gateway runs, and reflection (on unless `server.reflection =
false`) lets grpcurl and other tools discover the API without `.proto` files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from gateway._proto.launch_gateway.v1 import endpoint_service_pb2 as pb
from gateway._proto.launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from gateway.clock import Clock, SystemClock
from gateway.concurrency import ConcurrencyLimiter
from gateway.config import Settings
from gateway.edge import Gate
from gateway.endpoints import EndpointDirectory
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.redis_ratelimit import RedisRateLimiter
from gateway.reload import EdgeSource
from gateway.service import EndpointService
from gateway.upstream import LaunchAPI
from gateway.waits import TaskWaits

log = logging.getLogger("gateway")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EndpointService"].full_name


def rate_limiter(settings: Settings, env: Mapping[str, str], clock: Clock) -> RateLimiter:
    limits = settings.limits
    if limits.backend == "memory":
        return MemoryRateLimiter(clock)
    # load_edge has checked that the variable is set.
    return RedisRateLimiter.from_url(env[limits.redis_url_env], prefix=limits.redis_prefix, fail_open=limits.fail_open)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the cert and key files; with a client CA, client certificates are required (mTLS)."""
    server = settings.server
    if not server.tls_cert_file:
        return None
    pair = (Path(server.tls_key_file).read_bytes(), Path(server.tls_cert_file).read_bytes())
    if server.tls_client_ca_file:
        ca = Path(server.tls_client_ca_file).read_bytes()
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)
    return grpc.ssl_server_credentials([pair])


class GatewayServer:
    """One gateway: a gRPC server in front of one Launch API.

    `env` is where secrets come from (the Launch keys, task-handle secrets, the Redis URL); the CLI
    passes the process environment. `config_path` is reloaded on `reload()` and when it changes.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        config_path: str | Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._env = dict(env or {})
        self._clock = clock or SystemClock()
        self.edges = EdgeSource(settings, self._env, config_path)
        upstream_ssl = (
            ssl.create_default_context(cafile=settings.upstream.ca_file) if settings.upstream.ca_file else None
        )
        self.api = LaunchAPI(
            settings.upstream.url,
            max_connections=settings.upstream.max_connections,
            connect_timeout=settings.upstream.connect_timeout,
            ssl_context=upstream_ssl,
        )
        self.directory = EndpointDirectory(self.api, self._clock, settings.upstream.endpoint_cache_ttl)
        self.waits = TaskWaits(self._clock, settings.poll)
        self.limiter = rate_limiter(settings, self._env, self._clock)
        self.concurrency = ConcurrencyLimiter()
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """`host:port` to dial, valid after `start()`."""
        return f"{self.settings.server.host}:{self.port}"

    def reload(self) -> bool:
        """Reload the tenant configuration (SIGHUP)."""
        return self.edges.reload()

    async def start(self) -> None:
        settings = self.settings
        if self.edges().tenants.open:
            log.warning(
                "OPEN MODE: no tenants are configured, so every caller is accepted without an API key "
                "and without limits. Configure [tenants.<name>] for anything but local use."
            )
        await self.api.start()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.server.max_receive_message_bytes),
                ("grpc.max_send_message_length", settings.server.max_send_message_bytes),
            ]
        )
        gate = Gate(self.limiter, self.concurrency)
        service = EndpointService(settings, self.api, gate, self.edges, self.directory, self.waits)
        pb_grpc.add_EndpointServiceServicer_to_server(service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.server.reflection:
            health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
            reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
        address = f"{settings.server.host}:{settings.server.port}"
        credentials = server_credentials(settings)
        self.port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        if self.port == 0:
            await self.api.close()
            raise OSError(f"cannot listen on {address}")
        await server.start()
        self._server = server
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._watcher = asyncio.create_task(self.edges.watch(self._clock, settings.auth.reload_interval))

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give calls in flight `grace` seconds (default: the setting), then close."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        server, self._server = self._server, None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await server.stop(self.settings.server.grace_period if grace is None else grace)
        await self.waits.close()
        await self.api.close()
        await self.limiter.close()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(grace=0)
