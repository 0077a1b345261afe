"""Operations: readiness, and the HTTP port for Prometheus and probes.

`Readiness` checks in the background (every `metrics.readiness_interval` seconds, never per scrape)
that the upstream answers HTTP; the gateway is ready when its configuration is loaded, the upstream
answers, and it is not draining. It drives the standard gRPC health service's readiness entries (""
and EndpointService's): SERVING only when ready, NOT_SERVING otherwise and for good once draining
starts. Liveness is apart and never follows the upstream: the `liveness` entry (SERVING from start
until shutdown, set by the app) and `/healthz`. Each change of readiness is logged once: a WARNING
with the reasons when the gateway becomes not ready (the first check included, so a dead upstream
is never silent), INFO when it is ready again, and INFO when draining starts.

`OpsServer` serves, on its own port (aiohttp): `/metrics` (Prometheus text format), `/healthz` (200
while the process runs) and `/readyz` (200 when ready, else 503 with the reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from launch_gateway.server.clock import Clock
from launch_gateway.server.http_sites import listen

log = logging.getLogger("launch_gateway")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    """Whether the gateway should get traffic; kept in the gRPC health service too."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        health: HealthServicer,
        services: tuple[str, ...],
        clock: Clock,
        interval: float,
        on_change: Callable[[bool, bool], None] | None = None,
    ) -> None:
        self._on_change = on_change  # (ready, upstream reachable), after every check
        self._probe = probe
        self._health = health
        self._services = services
        self._clock = clock
        self._interval = interval
        self.upstream_reachable = False
        self.draining = False
        self._extra: dict[str, Callable[[], str | None]] = {}  # more conditions: name -> reason or None
        self._logged: bool | None = None  # the readiness last logged (None: none yet), so each change is logged once
        self._task: asyncio.Task[None] | None = None

    def add_condition(self, name: str, reason: Callable[[], str | None]) -> None:
        """Another condition of readiness: `reason()` says why not ready, or None."""
        self._extra[name] = reason

    def reasons(self) -> list[str]:
        """Why the gateway is not ready; empty when it is."""
        reasons = []
        if self.draining:
            reasons.append("draining: the gateway is shutting down")
        if not self.upstream_reachable:
            reasons.append("upstream: not reachable")
        reasons.extend(r for check in self._extra.values() if (r := check()))
        return reasons

    @property
    def ready(self) -> bool:
        return not self.reasons()

    async def refresh(self) -> None:
        """Probe the upstream once and publish the result to the health service."""
        self.upstream_reachable = await self._probe()
        await self.publish()

    def _log_change(self) -> None:
        reasons = self.reasons()
        if self.draining or (not reasons) == self._logged:
            return  # draining is logged by `drain`, once
        self._logged = not reasons
        if reasons:
            log.warning("readiness: not ready (%s)", "; ".join(reasons))
        else:
            log.info("readiness: ready (the upstream answers)")

    async def publish(self) -> None:
        self._log_change()
        if self._on_change is not None:
            self._on_change(self.ready, self.upstream_reachable)
        if self.draining:
            return  # enter_graceful_shutdown has fixed NOT_SERVING for good
        status = SERVING if self.ready else NOT_SERVING
        for service in self._services:
            await self._health.set(service, status)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            await self.refresh()

    async def drain(self) -> None:
        """Not ready from now on: NOT_SERVING everywhere, so balancers stop sending calls."""
        self.draining = True
        self._logged = False
        log.info("readiness: not ready (%s)", "; ".join(self.reasons()))
        await self._health.enter_graceful_shutdown()
        if self._on_change is not None:
            self._on_change(False, self.upstream_reachable)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class OpsServer:
    """The HTTP side: /metrics, /healthz, /readyz."""

    def __init__(
        self, registry: CollectorRegistry, readiness: Readiness, host: str, port: int, reuse_port: bool = False
    ) -> None:
        self._reuse_port = reuse_port  # workers share the port
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = self._readiness.reasons()
        if reasons:
            return web.Response(status=503, text="not ready\n" + "".join(f"- {r}\n" for r in reasons))
        return web.Response(text="ready\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = await listen(app, self._host, self._port, "metrics.port", self._reuse_port)
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
