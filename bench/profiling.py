"""Where the gateway's time goes: py-spy samples of the gateway process under load.

Two loads on the shared gateway: Predict on `echo` (h2load `-c 4 -m 16`, the unary load) and one
StreamPredict on `count` (h2load, one stream), each recorded twice:

- Python frames (`--nonblocking`, 200 Hz: the process is never paused): the share of samples in
  which each function is on the stack (inclusive) and on top (self), and the top frame's package.
  Time in C (grpc-core, uvloop, syscalls) is charged to the Python frame that called it; samples
  with no Python frame of ours are C code on the event loop or in grpc-core's poller thread,
  running or waiting (this mode cannot tell which).
- native frames (`--native`, 100 Hz; py-spy pauses the process for each sample, so throughput
  drops while it records): the C function on top, with the nearest Python frame that led to it,
  and how much of the time was waiting in epoll.

py-spy is a development tool, not a dependency: `.venv/bin/pip install py-spy`. Without it the
section says so and measures nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import h2load
from bench.harness import Harness
from bench.processes import BIN
from bench.streaming import STREAM_PATH, stream_request
from bench.unary import PREDICT_PATH, predict_request

TOP = 15
# Frames on every stack of an asyncio program: they say nothing about where the time goes.
BOOTSTRAP = re.compile(r"^(<module>|main|run|Runner\.run|run_until_complete|run_forever|_run_once|Thread\.\w+) \(")
IDLE = ("epoll_wait", "epoll_pwait")
STREAM_EVENTS = 400_000  # more than one stream relays while py-spy records; h2load is stopped after


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")


def _function(frame: str) -> str:
    """`name (file:line)` -> `name (file)`."""
    return re.sub(r":\d+\)$", ")", frame)


def _package(frame: str) -> str:
    """The package a frame's code is in: `aiohttp`, `asyncio`, ... and `gateway/<module>.py` for ours."""
    match = re.search(r"\(([^():]+?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    if path.startswith("gateway/"):
        return path
    return path.split("/", 1)[0]


def summarize(raw: str, native: bool) -> dict[str, Any]:
    """Self and inclusive shares (% of samples) from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    c_only: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        if native:
            if leaf.startswith(IDLE):
                idle += n
            caller = next((f for f in reversed(frames[:-1]) if ".py:" in f), "")
            own[f"{_function(leaf)} <- {caller}" if caller else _function(leaf)] += n
        elif all(BOOTSTRAP.match(f) for f in frames):
            where = "grpc-core poller thread" if any(f.startswith("Thread.") for f in frames) else "event loop"
            c_only[f"no Python frame: C code on the {where} (running or waiting)"] += n
        else:
            own[leaf] += n
            packages[_package(leaf)] += n
            for name in {_function(f) for f in frames}:
                if not BOOTSTRAP.match(name):
                    inclusive[name] += n

    def share(count: int) -> float:
        return round(100.0 * count / total, 1) if total else 0.0

    summary: dict[str, Any] = {"samples": total, "self": [[share(c), name] for name, c in own.most_common(TOP)]}
    if native:
        summary["idle_percent"] = share(idle)
    else:
        summary["inclusive"] = [[share(c), name] for name, c in inclusive.most_common(TOP + 5)]
        summary["self_by_package"] = [[share(c), name] for name, c in (packages + c_only).most_common(TOP)]
    return summary


async def record(pid: int, native: bool, seconds: float, scratch: Path) -> dict[str, Any]:
    """Record `seconds` of the process `pid` with py-spy and summarise it."""
    tool = py_spy()
    assert tool is not None
    out = scratch / f"profile-{'native' if native else 'python'}.txt"
    mode = ["--native", "--rate", "100"] if native else ["--nonblocking", "--rate", "200"]
    argv = [tool, "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1)), "--format", "raw"]
    spy = await asyncio.create_subprocess_exec(
        *argv, "-o", str(out), *mode, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await spy.communicate()
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-500:]}")
    return summarize(out.read_text(), native)


async def measure(harness: Harness) -> None:
    if py_spy() is None:
        harness.report.note("profile: py-spy is not installed (.venv/bin/pip install py-spy); no profile taken")
        return
    gateway = await harness.gateway()
    seconds = harness.sizes.profile_seconds
    unary_body = h2load.grpc_frame(predict_request())
    events = STREAM_EVENTS if seconds > 2 else 20_000
    stream_body = h2load.grpc_frame(stream_request("count", {"n": events, "interval": 0}))
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-py-spy-") as directory:
        scratch = Path(directory)
        for native in (False, True):
            load = asyncio.ensure_future(
                h2load.run(
                    f"http://{gateway.address}{PREDICT_PATH}",
                    unary_body,
                    headers=h2load.GRPC_HEADERS,
                    clients=4,
                    streams=16,
                    duration=seconds + 1.5,
                    warmup=0.5,
                )
            )
            await asyncio.sleep(1.0)
            summary = await record(gateway.server.pid, native, seconds, scratch)
            summary["rate_while_recording"] = f"{(await load).requests_per_second:,.0f} calls/s"
            profile.setdefault("unary", {"load": "Predict on echo, h2load -c 4 -m 16"})[
                "native" if native else "python"
            ] = summary

            relayed = (await gateway.metrics()).value("gateway_stream_events_total")
            load = asyncio.ensure_future(
                h2load.run(
                    f"http://{gateway.address}{STREAM_PATH}",
                    stream_body,
                    headers=h2load.GRPC_HEADERS,
                    clients=1,
                    streams=1,
                    requests=1,
                )
            )
            await asyncio.sleep(0.5)
            summary = await record(gateway.server.pid, native, seconds / 2, scratch)
            load.cancel()  # the stream is longer than the recording
            await asyncio.gather(load, return_exceptions=True)
            relayed = (await gateway.metrics()).value("gateway_stream_events_total") - relayed
            summary["rate_while_recording"] = f"{relayed:,.0f} events relayed in all"
            profile.setdefault("stream", {"load": "one StreamPredict on count (interval 0), h2load"})[
                "native" if native else "python"
            ] = summary
    harness.report.extra["profile"] = json.loads(json.dumps(profile))


def describe(profile: dict[str, Any]) -> str:
    """The profiles as text for the terminal."""
    lines = []
    for scenario in profile.values():
        py, native = scenario["python"], scenario["native"]
        lines.append(f"profile of the gateway under {scenario['load']} (py-spy):")
        lines.append(f"  Python frames, {py['samples']} samples ({py['rate_while_recording']}); self by package:")
        lines.extend(f"    {pct:5.1f}%  {name}" for pct, name in py["self_by_package"])
        lines.append("  inclusive (on the stack):")
        lines.extend(f"    {pct:5.1f}%  {name}" for pct, name in py["inclusive"])
        lines.append("  self (on top; C time is charged to the Python frame that called it):")
        lines.extend(f"    {pct:5.1f}%  {name}" for pct, name in py["self"])
        lines.append(
            f"  native frames, {native['samples']} samples, {native['idle_percent']}% waiting in epoll "
            f"({native['rate_while_recording']}; py-spy pauses the process); self:"
        )
        lines.extend(f"    {pct:5.1f}%  {name}" for pct, name in native["self"])
    return "\n".join(lines)
