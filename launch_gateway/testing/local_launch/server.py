"""`LocalLaunchServer`: the local Launch API on a real socket, with its workers and sessions.

It binds 127.0.0.1 (port 0 picks a free port, read back after start, as aiohttp's test servers
do), runs aiohttp with `handler_cancellation=True` so a client that goes away cancels its handler
and the model function behind it, and keeps a `RequestRecord` of every request for tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from launch_gateway.testing.local_launch.app import LaunchApp
from launch_gateway.testing.local_launch.callbacks import CallbackSender
from launch_gateway.testing.local_launch.endpoints import EndpointRegistry, EndpointSpec
from launch_gateway.testing.local_launch.examples import builtin_endpoints
from launch_gateway.testing.local_launch.faults import FaultInjector, Faults
from launch_gateway.testing.local_launch.invocation import ModelRunner
from launch_gateway.testing.local_launch.records import RecordLog, RequestRecord
from launch_gateway.testing.local_launch.results import ResultStore
from launch_gateway.testing.local_launch.tasks import TaskQueue

# How long stop() lets requests finish after cancelling the streaming and running ones.
_SHUTDOWN_TIMEOUT = 2.0


def _utcnow() -> datetime:
    """Naive UTC, as sse-starlette's pings print it."""
    return datetime.now(UTC).replace(tzinfo=None)


class LocalLaunchServer:
    """A Launch-compatible HTTP server running Python callables as model endpoints.

    `endpoints` None serves `builtin_endpoints()`. With `api_keys` empty any credentials (or
    none) pass. `teams` maps an API key to its team (a key not in it is a team of its own, as in
    model-engine's fake auth): an endpoint with an `owner` is seen only by that team's keys.
    `track_started` False leaves tasks PENDING until they end, as a queue that does not report
    STARTED. `callback_ca_file` is the CA bundle that callback servers' certificates are
    checked against (default: the system trust store). `faults` (default none) may be replaced
    while the server runs: `server.faults = Faults(throttle_rate=1.0)`.
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointSpec] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Collection[str] = (),
        teams: Mapping[str, str] | None = None,
        track_started: bool = True,
        ping_interval: float = 15.0,
        workers: int = 4,
        callback_ca_file: str | None = None,
        faults: Faults | None = None,
    ) -> None:
        if ping_interval <= 0:
            raise ValueError(f"ping_interval must be positive, got {ping_interval}")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._registry = EndpointRegistry(
            builtin_endpoints() if endpoints is None else endpoints, created_at=datetime.now(UTC)
        )
        self._log = RecordLog()
        self._faults = FaultInjector(faults)
        self._results = ResultStore()
        self._callbacks = CallbackSender(ca_file=callback_ca_file)
        self._runner = ModelRunner(self._fetch, self._results)
        self._tasks = TaskQueue(self._runner.run, self._callbacks, workers=workers, track_started=track_started)
        self._app = LaunchApp(
            registry=self._registry,
            runner=self._runner,
            tasks=self._tasks,
            results=self._results,
            records=self._log,
            faults=self._faults,
            api_keys=api_keys,
            teams=teams or {},
            ping_interval=ping_interval,
            utcnow=_utcnow,
        )
        self._session: aiohttp.ClientSession | None = None
        self._web_runner: web.AppRunner | None = None
        self._state = "new"

    @property
    def endpoints(self) -> Sequence[EndpointSpec]:
        return self._registry.endpoints

    @property
    def records(self) -> list[RequestRecord]:
        """Every request received, in arrival order (a live list)."""
        return self._log.records

    @property
    def faults(self) -> Faults:
        """The faults injected into requests from now on (see `faults.py`)."""
        return self._faults.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults.faults = faults

    @property
    def fault_counts(self) -> Counter[str]:
        """How many of each fault were injected, e.g. {"throttle": 3, "latency": 5} (a live Counter)."""
        return self._faults.counts

    @property
    def task_ids(self) -> list[str]:
        """The ids of every async task created, oldest first."""
        return self._tasks.ids()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:PORT; valid after start()."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def endpoint_id(self, name: str) -> str:
        """The id of the endpoint called `name`; KeyError if there is none."""
        spec = self._registry.by_name(name)
        if spec is None:
            raise KeyError(f"no endpoint named {name!r}")
        return spec.id

    async def wait_for_record(
        self,
        predicate: Callable[[RequestRecord], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (bounded test wait)
    ) -> RequestRecord:
        """The first record, existing or future, matching `predicate`; TimeoutError otherwise."""
        return await self._log.wait_for(predicate, timeout)

    async def wait_for_task(
        self,
        task_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109 (bounded test wait)
    ) -> dict[str, Any]:
        """The GET body of an async task once it has ended; KeyError for an unknown id."""
        return await self._tasks.wait(task_id, timeout)

    async def start(self) -> None:
        """Bind (port 0: a free port), then start the workers and callback sender."""
        if self._state != "new":
            raise RuntimeError(f"the server cannot start: it is {self._state}")
        self._state = "started"
        try:
            self._session = aiohttp.ClientSession()
            await self._callbacks.start()
            runner = web.AppRunner(
                self._app.application(),
                handler_cancellation=True,
                access_log=None,
                shutdown_timeout=_SHUTDOWN_TIMEOUT,
            )
            self._web_runner = runner
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._results.base_url = self.url
            self._tasks.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Cancel open requests, stop listening, stop the workers, close sessions. Idempotent."""
        if self._state != "started":
            return
        self._state = "stopped"
        for handler in list(self._app.handlers):
            handler.cancel()
        if self._web_runner is not None:
            await self._web_runner.cleanup()
        await self._tasks.stop()
        await self._callbacks.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> LocalLaunchServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _fetch(self, url: str) -> bytes:
        """The bytes at a request's `url` input."""
        if self._session is None:
            raise RuntimeError("the server has not been started")
        async with self._session.get(url, raise_for_status=True) as response:
            return await response.read()
