"""The gateway process: wires settings, the edge, the upstream client and the servicer into a server.

`GatewayServer` owns the lifecycle: `start()` opens the upstream session and binds the gRPC and
metrics ports (0 picks a free one, read back from `port`) before anything else, so a port in use is
one `ListenError` naming its setting; only the workers of one `serve --workers N` share their ports
(SO_REUSEPORT, which grpc-core would otherwise set for any server). `stop()` closes the listener and
sends GOAWAY (so balancers move new calls to another replica), lets calls in flight finish within the
grace period, then closes the upstream session and the rate limiter. The standard health service's
`liveness` entry is SERVING while the process serves, "" and EndpointService's while it is ready
(see `observability.probes`), and reflection (on unless `server.reflection = false`) lets grpcurl and
other tools discover the API without `.proto` files; both are measured in the grpc_server_* metrics
like EndpointService (`observability.standard_services`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from launch_gateway.client.health import LIVENESS
from launch_gateway.server.access.credentials import credential_for_key
from launch_gateway.server.access.lookups import HostLookups
from launch_gateway.server.access.reload import EdgeSource
from launch_gateway.server.access.tenants import Tenant
from launch_gateway.server.admission import Gate
from launch_gateway.server.clock import Clock, SystemClock
from launch_gateway.server.errors import ListenError
from launch_gateway.server.limits.buckets import MemoryRateLimiter, RateLimiter
from launch_gateway.server.limits.concurrency import ConcurrencyLimiter
from launch_gateway.server.limits.redis_buckets import RedisRateLimiter
from launch_gateway.server.observability.metrics import MethodInfo, Metrics
from launch_gateway.server.observability.probes import OpsServer, Readiness
from launch_gateway.server.observability.standard_services import measured, methods_of
from launch_gateway.server.observability.telemetry import Telemetry
from launch_gateway.server.service import EndpointService
from launch_gateway.server.settings import Settings
from launch_gateway.server.statuses import Drain, tolerant_deserializer
from launch_gateway.server.upstream.endpoints import EndpointDirectory
from launch_gateway.server.upstream.launch_api import LaunchAPI
from launch_gateway.server.upstream.task_callbacks import CallbackReceiver, Wakeups
from launch_gateway.server.upstream.waits import TaskWaits
from launch_gateway.v1 import endpoint_service_pb2 as pb

if TYPE_CHECKING:  # imported only when tracing is on (it needs the tracing extra)
    from launch_gateway.server.observability.tracing import Tracing

log = logging.getLogger("launch_gateway")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EndpointService"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def rate_limiter(settings: Settings, env: Mapping[str, str], clock: Clock) -> RateLimiter:
    limits = settings.limits
    if limits.backend == "memory":
        return MemoryRateLimiter(clock)
    # load_edge has checked that the variable is set.
    return RedisRateLimiter.from_url(env[limits.redis_url_env], limits, clock)


def wakeups_for(settings: Settings, env: Mapping[str, str], waits: TaskWaits) -> Wakeups:
    """Wake-ups for ended tasks: across replicas through Redis when the receiver is on and the limits use
    Redis (the replicas share it already), else on this replica only."""
    limits = settings.limits
    if settings.callbacks.public_url and limits.backend == "redis":
        return Wakeups.from_url(waits, env[limits.redis_url_env], limits.redis_prefix + "task-wakeups")
    return Wakeups(waits)


def tracing_from(settings: Settings) -> Tracing | None:
    """The tracer when `tracing.otlp_endpoint` is set; None otherwise, with no OpenTelemetry module imported.
    Without the tracing extra, ModuleNotFoundError (`serve` names the extra)."""
    if not settings.tracing.otlp_endpoint:
        return None
    from launch_gateway.server.observability.tracing import Tracing

    return Tracing.start(settings.tracing, settings.upstream.url)


def service_methods() -> list[MethodInfo]:
    """Every RPC of EndpointService, for metrics created up front."""
    service = pb.DESCRIPTOR.services_by_name["EndpointService"]
    return [
        MethodInfo(service.full_name, m.name, "server_stream" if m.server_streaming else "unary")
        for m in service.methods
    ]


def service_handlers(service: EndpointService) -> grpc.GenericRpcHandler:
    """EndpointService's handlers, as the generated registration builds them, but with deserializers
    that turn undecodable requests into INVALID_ARGUMENT (see `statuses.Undecodable`)."""
    descriptor = pb.DESCRIPTOR.services_by_name["EndpointService"]
    handlers = {}
    for method in descriptor.methods:
        request_class = getattr(pb, method.input_type.name)
        serializer = getattr(pb, method.output_type.name).SerializeToString
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=tolerant_deserializer(request_class),
            response_serializer=serializer,
        )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


def endpoint_labels(tenants: Iterable[Tenant], listed: Iterable[str]) -> frozenset[str]:
    """Endpoint names that get their own metrics label: the listed ones and tenants' exact names."""
    exact = {name for t in tenants for name in t.endpoints if not any(c in name for c in "*?[")}
    return frozenset(exact | set(listed))


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """grpc-core options: message sizes, keepalive, connection age (so clients rebalance)."""
    s = settings.server
    options = [
        ("grpc.max_receive_message_length", s.max_receive_message_bytes),
        ("grpc.max_send_message_length", s.max_send_message_bytes),
        ("grpc.keepalive_time_ms", int(s.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout * 1000)),
        ("grpc.http2.min_ping_interval_without_data_ms", int(s.keepalive_min_ping_interval * 1000)),
        ("grpc.keepalive_permit_without_calls", int(s.keepalive_permit_without_calls)),
        # grpc-core refuses (CANCELLED) calls beyond these before any handler sees them; the defaults
        # (1000, 3000) drop a burst of thousands of new streams.
        ("grpc.server.max_pending_requests", s.max_pending_requests),
        ("grpc.server.max_pending_requests_hard_limit", s.max_pending_requests * 3),
    ]
    if s.max_connection_age > 0:
        options.append(("grpc.max_connection_age_ms", int(s.max_connection_age * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(s.max_connection_age_grace * 1000)))
    # grpc-core sets SO_REUSEPORT unless told not to: a second gateway on a port in use would bind it too
    # and silently take half the calls. Only `serve --workers N` (its children have a multiprocess_dir) shares.
    options.append(("grpc.so_reuseport", int(bool(settings.metrics.multiprocess_dir))))
    return options


def refuse_busy_port(setting: str, host: str, port: int) -> None:
    """ListenError naming `setting` unless host:port can be bound now (port 0 always can).

    Checked with a plain socket before grpc-core binds, because grpc-core only says "Failed to bind",
    among log lines of its own. Like grpc-core, the check sets SO_REUSEADDR: a port whose old
    connections linger in TIME_WAIT is free, one that another process listens on is not.
    """
    if port == 0:
        return
    address = f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(setting, address, exc.strerror or str(exc)) from exc
    failed: list[OSError] = []
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                failed.append(exc)
    in_use = [exc for exc in failed if exc.errno == errno.EADDRINUSE]
    if in_use or (failed and len(failed) == len(found)):  # one of a name's addresses may be missing (::1)
        first = (in_use or failed)[0]
        raise ListenError(setting, address, os.strerror(first.errno) if first.errno else str(first))


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
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        self.settings = settings
        self._env = dict(env or {})
        self._clock = clock or SystemClock()
        standard = [*methods_of(HEALTH), *(methods_of(REFLECTION) if settings.server.reflection else [])]
        self.metrics = Metrics([*service_methods(), *standard], self._clock)
        self.tracing = tracing_from(settings)
        self.telemetry = Telemetry(
            self.metrics,
            endpoint_labels(settings.tenants, settings.metrics.endpoints),
            access_log=settings.log.access,
            tracing=self.tracing,
        )
        self.edges = EdgeSource(settings, self._env, config_path, on_reload=self._count_reload, overrides=overrides)
        self.metrics.tenants(self.edges().tenants.tenants)
        self.api = LaunchAPI(
            settings.upstream, self._clock, observe=self.telemetry.upstream_response, tracing=self.tracing
        )
        self.directory = EndpointDirectory(
            self.api, self._clock, settings.upstream.endpoint_cache_ttl, on_lookup=self.telemetry.endpoint_lookup
        )
        self.limiter = rate_limiter(settings, self._env, self._clock)
        self.concurrency = ConcurrencyLimiter()
        self.drain = Drain(self._clock)
        self.waits = TaskWaits(self._clock, settings.poll, on_poll=self.telemetry.wait_poll, ending=self.drain.ending)
        self.wakeups = wakeups_for(settings, self._env, self.waits)
        self.receiver: CallbackReceiver | None = None  # made in start(), with the gate its forwarding checks
        self.health = HealthServicer()
        probe_key = credential_for_key(self._env.get(settings.upstream.api_key_env)).authorization
        self.readiness = Readiness(
            lambda: self.api.probe(settings.upstream.connect_timeout, probe_key),
            self.health,
            (SERVICE_NAME, ""),
            self._clock,
            settings.metrics.readiness_interval,
            on_change=self._readiness_changed,
        )
        self.readiness.add_condition("circuit", self.api.breaker.not_ready_reason)
        m = settings.metrics
        exposition = self.metrics.exposition(m.multiprocess_dir)
        shared = bool(m.multiprocess_dir)
        self.ops = OpsServer(exposition, self.readiness, m.host, m.port, reuse_port=shared) if m.enabled else None
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """`host:port` to dial, valid after `start()`."""
        return f"{self.settings.server.host}:{self.port}"

    def _count_reload(self, ok: bool) -> None:
        self.metrics.config_reloads.labels("ok" if ok else "refused").inc()
        if ok:
            tenants = self.edges().tenants.tenants
            self.metrics.tenants(tenants)
            # A reload's tenants bring their endpoints' labels; `metrics.endpoints` itself needs a restart.
            self.telemetry.endpoint_labels = endpoint_labels(tenants.values(), self.settings.metrics.endpoints)

    def _readiness_changed(self, ready: bool, reachable: bool) -> None:
        self.metrics.ready.set(int(ready))
        self.metrics.upstream_reachable.set(int(reachable))

    def reload(self) -> bool:
        """Reload the tenant configuration (SIGHUP)."""
        return self.edges.reload()

    async def start(self) -> None:
        """Open the upstream session, listen, and start readiness checks, metrics and config watching.

        If any step fails, what was started is stopped again, and what `__init__` made (the rate limiter's
        client, the tracer) is closed, before the error propagates.
        """
        settings = self.settings
        try:
            if not settings.metrics.multiprocess_dir:  # workers share their ports, and the parent has checked them
                refuse_busy_port("server.port", settings.server.host, settings.server.port)
            await self.api.start()
        except BaseException:
            await self.api.close()
            await self._close_clients()
            raise
        server = grpc.aio.server(options=server_options(settings))
        try:
            lookups = HostLookups(
                settings.callbacks.lookup_timeout, settings.callbacks.lookups_per_tenant, settings.callbacks.max_lookups
            )
            gate = Gate(self.limiter, self.concurrency, self.telemetry, lookups)
            if settings.callbacks.public_url:
                self.receiver = CallbackReceiver(
                    settings.callbacks,
                    lambda: self.edges().handles,
                    lambda name: self.edges().tenants.tenants.get(name),
                    gate.check_callback,
                    self.wakeups,
                    self._clock,
                    settings.upstream.max_body_bytes,
                    on_result=lambda result: self.metrics.child(self.metrics.task_callbacks, result).inc(),
                )
            service = EndpointService(
                settings,
                self.api,
                gate,
                self.edges,
                self.directory,
                self.waits,
                self.telemetry,
                self.drain,
                self._clock,
                self.receiver,
            )
            server.add_generic_rpc_handlers((service_handlers(service),))
            health_pb2_grpc.add_HealthServicer_to_server(measured(self.health, HEALTH, self.metrics), server)
            if settings.server.reflection:
                names = (SERVICE_NAME, HEALTH.full_name, reflection.SERVICE_NAME)
                reflector = measured(reflection.aio.ReflectionServicer(names), REFLECTION, self.metrics)
                reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, server)
            address = f"{settings.server.host}:{settings.server.port}"
            credentials = server_credentials(settings)
            try:  # grpc-core raises, or returns 0, when it cannot bind (taken since the check above)
                if credentials is not None:
                    self.port = server.add_secure_port(address, credentials)
                else:
                    self.port = server.add_insecure_port(address)
            except RuntimeError:
                self.port = 0
            if self.port == 0:
                raise ListenError("server.port", address, "in use, or not an address of this host")
            if self.ops is not None:
                await self.ops.start()  # every port is ours before the gateway serves or says anything
            if self.receiver is not None:
                await self.receiver.start(reuse_port=bool(settings.metrics.multiprocess_dir))
            await self.wakeups.start()
            if self.edges().open:
                log.warning(
                    "OPEN MODE: every caller is accepted without an API key and without limits (no config file, "
                    "or auth.open = true). Configure [tenants.<name>] for anything but local use."
                )
            for name in (SERVICE_NAME, ""):  # not serving until the first readiness check says so
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            # Liveness (and startup) probes ask this one: SERVING from here until shutdown, whether or not
            # Launch answers, so an upstream outage never restarts the gateway.
            await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
            await server.start()
            self._server = server
            await self.readiness.start()
        except BaseException:
            self._server = None
            await server.stop(0)
            await self.readiness.stop()
            if self.ops is not None:
                await self.ops.stop()
            await self._stop_callbacks()
            await self.api.close()
            await self._close_clients()
            raise
        self._watcher = asyncio.create_task(self.edges.watch(self._clock, settings.auth.reload_interval))

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, give calls in flight `grace` seconds (default: the setting), then close."""
        if self._server is None:
            return
        await self.readiness.drain()
        server, self._server = self._server, None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        grace = self.settings.server.grace_period if grace is None else grace
        # grpc-core's stop closes the listener and sends GOAWAY at once, so a proxy (nginx, Envoy) or a
        # client's balancer sends new calls to another replica: a refused connection it can retry there,
        # where an UNAVAILABLE answered here is a response that a proxy passes back and the SDK never
        # retries for Predict, SubmitAsync or StreamPredict. A call that still reaches a handler is refused
        # with UNAVAILABLE. Calls in flight, streams too, get the grace period; streams still open a little
        # before it runs out end with UNAVAILABLE, so that every call gets a status, and grpc-core cuts
        # only what still has not finished.
        self.drain.begin()  # waits answer their last status now; unary calls and streams go on
        stopped = asyncio.ensure_future(server.stop(grace))
        margin = min(1.0, grace / 4)
        await self.drain.wait_until_idle(max(grace - margin, 0.0))
        self.drain.end_streams()
        await self.drain.wait_until_idle(margin)
        await stopped
        await self.readiness.stop()
        if self.ops is not None:
            await self.ops.stop()
        await self._stop_callbacks()
        await self.waits.close()
        await self.api.close()
        await self._close_clients()
        log.info("launch-gateway stopped")

    async def _stop_callbacks(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
        await self.wakeups.close()

    async def _close_clients(self) -> None:
        """Close the rate limiter (its Redis client) and the tracer, which `__init__` made."""
        await self.limiter.close()
        if self.tracing is not None:
            await self.tracing.close()  # the last spans are sent before stop returns

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(grace=0)
