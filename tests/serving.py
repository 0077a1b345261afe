"""`launch-gateway serve` as users run it: a real process, its address read back, always cleaned up.

The `serve_process` fixture starts the console script with the given arguments and returns once the
process has printed its listening line, parsed into a `Listening`. Its standard error is read as it
comes (nobody has to drain a pipe) and can be awaited line by line. Whatever the test does, the
process (and any workers it started) is gone after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_GATEWAY = str(Path(sys.executable).parent / "launch-gateway")  # the console script, as users run it

# `launch-gateway listening on HOST:PORT -> UPSTREAM (WHO); metrics on URL`, the metrics part optional.
LISTENING = re.compile(
    r"launch-gateway listening on (?P<address>\S+) -> (?P<upstream>\S+) \((?P<mode>[^)]*)\)"
    r"(?:; metrics on (?P<metrics_url>\S+))?$"
)


@dataclass(frozen=True)
class Listening:
    """What the listening line says: the gRPC address, the upstream, the mode and the metrics URL."""

    line: str
    address: str
    upstream: str
    mode: str  # "open mode", "2 tenants", "2 workers"
    metrics_url: str | None


def parse_listening(line: str) -> Listening:
    """The listening line's parts; AssertionError naming the line when it is not one."""
    match = LISTENING.fullmatch(line.strip())
    assert match is not None, f"not a listening line: {line!r}"
    return Listening(line.strip(), match["address"], match["upstream"], match["mode"], match["metrics_url"])


class Served:
    """A running `serve` process: its listening line, its stderr so far, and ways to signal and end it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read_stderr())
        self.listening: Listening | None = None

    @property
    def address(self) -> str:
        assert self.listening is not None
        return self.listening.address

    @property
    def logs(self) -> str:
        return "".join(self.stderr)

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.stderr.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    async def log_line(self, containing: str, *, within: float = 20) -> str:
        """The first stderr line containing `containing`, once it is written; fails loudly otherwise."""
        try:
            async with asyncio.timeout(within):
                while True:
                    self._changed.clear()
                    for line in self.stderr:
                        if containing in line:
                            return line
                    if self._reader.done():
                        raise AssertionError(f"serve exited before logging {containing!r}:\n{self.logs}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"serve logged no {containing!r} within {within} s:\n{self.logs}") from None

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def exit_code(self, *, within: float = 30) -> int:
        """Wait for the process to exit (and its stderr to be read); its exit code."""
        try:
            code = await asyncio.wait_for(self.process.wait(), within)
            await asyncio.wait_for(self._reader, within)
        except TimeoutError:
            raise AssertionError(f"serve did not exit within {within} s:\n{self.logs}") from None
        return code

    async def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; the exit code."""
        self.send_signal(signal.SIGTERM)
        return await self.exit_code()

    async def kill(self) -> None:
        """SIGKILL the process group (serve and any workers), unless it has exited."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 10)


ServeFactory = Callable[..., Awaitable[Served]]


def serve_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without gateway settings (which would override the test's), plus `extra`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("LAUNCH_GATEWAY_", "PROMETHEUS_"))}
    return {**inherited, **(extra or {})}


@pytest.fixture
async def serve_process() -> AsyncIterator[ServeFactory]:
    """Start `launch-gateway serve ARGS...`; returns once it listens. Killed after the test if still running."""
    started: list[Served] = []

    async def start(*args: str, env: Mapping[str, str] | None = None, within: float = 30) -> Served:
        process = await asyncio.create_subprocess_exec(
            LAUNCH_GATEWAY,
            "serve",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=serve_env(env),
            start_new_session=True,  # its own process group, so cleanup reaches any workers too
        )
        served = Served(process)
        started.append(served)
        assert process.stdout is not None
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), within)).decode()
        except TimeoutError:
            await served.kill()
            pytest.fail(f"serve printed nothing within {within} s:\n{served.logs}")
        if not line:  # stdout closed: it exited without listening
            code = await served.exit_code()
            pytest.fail(f"serve exited with {code} before listening:\n{served.logs}")
        served.listening = parse_listening(line)
        return served

    try:
        yield start
    finally:
        for served in started:
            await served.kill()
