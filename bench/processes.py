"""The servers under test, each in its own process: the gateway, the local Launch server, the bare echo
server and the naive relay.

Each binds port 0 and the real address is read from its first line of output, as the README's
commands print it. Output goes to log files in the run's scratch directory (the gateway's access
log included), so a full pipe never stalls a server and its errors can be counted afterwards.
Memory is read from /proc: VmRSS now, VmHWM the peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from launch_gateway.testing.local_launch.endpoints import endpoint_id

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# What the local Launch server serves during a run: the built-in examples the issue names, and the
# bench's own functions (bench/endpoints.py).
BENCH_ENDPOINTS = (
    "echo=sync:launch_gateway.testing.local_launch.examples:echo",
    "echo-async=async:launch_gateway.testing.local_launch.examples:echo_async",
    "count=streaming:launch_gateway.testing.local_launch.examples:count",
    "paced=streaming:bench.endpoints:paced",
    "hold=sync:bench.endpoints:hold",
    "hold-stream=streaming:bench.endpoints:hold_stream",
    "gated=async:bench.endpoints:gated",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a server: ours without LAUNCH_GATEWAY_* overrides, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCH_GATEWAY_") and k != "LAUNCH_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def read_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), in bytes; 0 if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Server:
    """One server process and where its output went."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    first_line: str
    _drain: asyncio.Task[None]

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss(self) -> int:
        return read_status(self.pid, "VmRSS")

    def peak_rss(self) -> int:
        return read_status(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, all threads; 0 if it is gone."""
        return cpu_seconds(self.pid)

    def error_lines(self) -> list[str]:
        """Log lines at ERROR or worse (JSON or human format), and Python tracebacks."""
        found = []
        with contextlib.suppress(OSError), self.log_path.open(errors="replace") as log:
            for line in log:
                levels = ('"level":"error"', '"level":"critical"', " ERROR ", " CRITICAL ")
                if any(level in line for level in levels) or line.startswith("Traceback"):
                    found.append(line.rstrip())
        return found

    async def stop(self, grace: float = 15.0) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        await self._drain


async def _copy(stream: asyncio.StreamReader, log: Any) -> None:
    while line := await stream.readline():
        log.write(line)
        log.flush()


async def start_server(name: str, argv: Sequence[str], logs: Path, env: Mapping[str, str] | None = None) -> Server:
    """Start a server whose first line on stdout says where it listens; stderr goes to its log."""
    log_path = logs / f"{name}.log"
    log = log_path.open("ab")
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        env=clean_env(env),
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{name} did not start within {START_TIMEOUT:.0f} s; see {log_path}") from None
    if not line:
        await process.wait()
        raise RuntimeError(f"{name} exited ({process.returncode}) before listening; see {log_path}")
    log.write(line)
    drain = asyncio.create_task(_copy(process.stdout, log))
    drain.add_done_callback(lambda _: log.close())
    return Server(name, process, log_path, line.decode().strip(), drain)


@dataclass
class EchoServer:
    server: Server
    address: str


async def start_echo(logs: Path) -> EchoServer:
    server = await start_server("echo-server", [sys.executable, "-m", "bench.echo_server", "--port", "0"], logs)
    address = server.first_line.rsplit(" ", 1)[-1]
    return EchoServer(server, address)


async def start_naive_relay(logs: Path, upstream_url: str) -> EchoServer:
    """`bench/naive_relay.py` in front of `upstream_url`, serving `echo` (its id looked up once)."""
    argv = [sys.executable, "-m", "bench.naive_relay", "--port", "0", "--upstream", upstream_url, "--endpoint", "echo"]
    server = await start_server("naive-relay", argv, logs)
    return EchoServer(server, server.first_line.rsplit(" ", 1)[-1])


@dataclass
class LocalLaunch:
    server: Server
    url: str

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    @staticmethod
    def endpoint_id(name: str) -> str:
        return endpoint_id(name)


async def start_local_launch(logs: Path, name: str = "local-launch") -> LocalLaunch:
    argv = [str(BIN / "launch-gateway"), "local-launch", "--port", "0"]
    for spec in BENCH_ENDPOINTS:
        argv += ["--endpoint", spec]
    server = await start_server(name, argv, logs)
    match = re.search(r"(http://\S+)", server.first_line)
    if match is None:
        raise RuntimeError(f"unexpected first line from the local Launch server: {server.first_line!r}")
    return LocalLaunch(server, match.group(1))


@dataclass
class Gateway:
    server: Server
    address: str
    metrics_url: str

    async def metrics(self) -> Metrics:
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as response:
            return Metrics.parse(await response.text())


_LISTENING = re.compile(r"listening on (\S+) .*metrics on (\S+)")


def gateway_config(upstream_url: str, **sections: Mapping[str, Any]) -> str:
    """A TOML config: port 0 for gRPC and metrics, the given upstream, then `sections` merged in.

    Everything else is the default, the access log included (as a user runs it; it goes to the log file).
    """
    values: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "upstream": {"url": upstream_url},
        "metrics": {"port": 0},
    }
    tenants = dict(sections.pop("tenants", {}))
    if not tenants:  # a file without tenants must ask for open mode
        values["auth"] = {"open": True}
    for section, table in sections.items():
        values.setdefault(section, {}).update(table)
    lines: list[str] = []
    for section, table in values.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
    for tenant, table in tenants.items():
        lines.append(f"[tenants.{tenant}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


async def start_gateway(
    logs: Path, config: str, name: str = "gateway", env: Mapping[str, str] | None = None
) -> Gateway:
    """`launch-gateway serve --config FILE` with `config` written to the scratch directory."""
    path = logs / f"{name}.toml"
    path.write_text(config)
    server = await start_server(name, [str(BIN / "launch-gateway"), "serve", "--config", str(path)], logs, env)
    match = _LISTENING.search(server.first_line)
    if match is None:
        await server.stop()
        raise RuntimeError(f"unexpected first line from the gateway: {server.first_line!r}")
    return Gateway(server, match.group(1), match.group(2))


class Metrics:
    """One scrape of a gateway's /metrics: samples by name and labels."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.append((sample.name, dict(sample.labels), float(sample.value)))
        return cls(samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        return sum(v for n, ls, v in self.samples if n == name and all(ls.get(k) == want for k, want in labels.items()))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, ls, v in self.samples:
            if n == name and all(ls.get(k) == want for k, want in labels.items()):
                out[ls.get(label, "")] = out.get(ls.get(label, ""), 0.0) + v
        return out


def handled_codes(before: Metrics, after: Metrics, method: str) -> dict[str, int]:
    """`grpc_server_handled_total` of `method` by code, between two scrapes (zero counts left out)."""
    start = before.by_label("grpc_server_handled_total", "grpc_code", grpc_method=method)
    end = after.by_label("grpc_server_handled_total", "grpc_code", grpc_method=method)
    return {code: int(n - start.get(code, 0.0)) for code, n in end.items() if n - start.get(code, 0.0)}
