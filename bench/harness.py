"""What every section of the benchmark shares: its sizes, the scratch directory, the report, the servers.

`Sizes.full()` is what `make bench` runs (about six and a half minutes on 2 cores); `Sizes.quick()` is a
smoke run of a few seconds per section for tests. The shared stack (the bare echo server, one local
Launch server, and one gateway and the naive relay in front of it, each its own process) is started
on first use and stopped at the end; sections that measure memory start their own, so no earlier load inflates it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import (
    EchoServer,
    Gateway,
    LocalLaunch,
    Server,
    gateway_config,
    start_echo,
    start_gateway,
    start_local_launch,
    start_naive_relay,
)
from bench.report import Report


@dataclass(frozen=True)
class Sizes:
    """How long and how large each measurement is."""

    rounds: int = 3  # every measurement is repeated this many times, interleaved with its reference
    unary_seconds: float = 2.0
    unary_warmup: float = 0.5
    stream_events: int = 20_000  # per stream, for events/s
    paced_events: int = 300
    paced_interval: float = 0.005
    wait_tasks: int = 1_000
    wait_waiters: int = 10_000
    wait_lead: float = 4.0  # seconds from the first WaitAsyncTask to the tasks finishing
    callback_tasks: int = 40  # tasks waited on one at a time, to time a callback's wake-up alone
    open_streams: int = 5_000
    cancels: int = 20  # per kind and round
    launch_sync_calls: int = 200  # per round
    launch_async_tasks: int = 4  # per round, one per local Launch worker
    features_seconds: float = 3.0
    profile_seconds: float = 8.0

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            rounds=1,
            unary_seconds=0.4,
            unary_warmup=0.1,
            stream_events=2_000,
            paced_events=40,
            wait_tasks=50,
            wait_waiters=200,
            wait_lead=1.0,
            callback_tasks=4,
            open_streams=200,
            cancels=3,
            launch_sync_calls=20,
            launch_async_tasks=2,
            features_seconds=0.4,
            profile_seconds=1.0,
        )

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Harness:
    """One benchmark run: sizes, scratch directory, report, and the shared stack."""

    def __init__(self, sizes: Sizes, report: Report, keep_logs: bool = False) -> None:
        self.sizes = sizes
        self.report = report
        self.scratch = Path(tempfile.mkdtemp(prefix="launch-gateway-bench-"))
        self.keep_logs = keep_logs
        self._servers: list[Server] = []
        self._echo: EchoServer | None = None
        self._launch: LocalLaunch | None = None
        self._gateway: Gateway | None = None
        self._naive: EchoServer | None = None

    def track(self, server: Server) -> None:
        self._servers.append(server)

    async def echo(self) -> EchoServer:
        if self._echo is None:
            self._echo = await start_echo(self.scratch)
            self.track(self._echo.server)
        return self._echo

    async def launch(self) -> LocalLaunch:
        if self._launch is None:
            self._launch = await start_local_launch(self.scratch)
            self.track(self._launch.server)
        return self._launch

    async def naive_relay(self) -> EchoServer:
        """The naive relay (bench/naive_relay.py) in front of the shared local Launch server."""
        if self._naive is None:
            self._naive = await start_naive_relay(self.scratch, (await self.launch()).url)
            self.track(self._naive.server)
        return self._naive

    async def gateway(self) -> Gateway:
        """The shared gateway: open mode, defaults (access log on), in front of the shared local Launch server."""
        if self._gateway is None:
            launch = await self.launch()
            self._gateway = await start_gateway(self.scratch, gateway_config(launch.url))
            self.track(self._gateway.server)
        return self._gateway

    async def stop(self, server: Server) -> None:
        await server.stop()
        self._check_logs(server)

    def _check_logs(self, server: Server) -> None:
        errors = server.error_lines()
        if errors:
            self.report.note(f"{server.name} logged {len(errors)} error lines, e.g. {errors[0][:300]}")
            self.keep_logs = True

    async def close(self) -> None:
        for server in reversed(self._servers):
            if server.process.returncode is None:
                await server.stop()
                self._check_logs(server)
        if self.keep_logs:
            self.report.note(f"server logs kept in {self.scratch}")
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)

    @staticmethod
    def load() -> float:
        return os.getloadavg()[0]
