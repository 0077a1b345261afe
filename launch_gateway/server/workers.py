"""`serve --workers N`: N gateway processes sharing one port, for machines with more than one core.

Python runs one event loop per process, so a gateway process uses one core. The parent picks the
ports (when 0 was asked for) or checks that nobody listens on them (a port in use is one line naming
its setting, as for one process), then starts N children that each run `serve` on the same gRPC and
metrics ports with SO_REUSEPORT, so the kernel spreads connections over them. Metrics are kept in
prometheus-client's multiprocess mode (a shared folder of memory-mapped files), so a scrape of any
child shows the sum over all of them. The parent forwards SIGTERM and SIGINT (each child drains as
one gateway does) and SIGHUP (config reload), cleans up after children that exit, and exits 0 only
when every child did. A child that dies on its own stops the others: the orchestrator restarts the
whole pod, which is simpler to reason about than a half-dead group.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence

from launch_gateway.server.app import refuse_busy_port
from launch_gateway.server.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def free_port(host: str) -> int:
    """A port that is free now (the children bind it with SO_REUSEPORT)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def child_argv(argv: Sequence[str], port: int, metrics_port: int, multiproc_dir: str) -> list[str]:
    """The child's command line: the parent's, with the chosen ports and one worker (later flags win)."""
    return [
        sys.executable, "-m", "launch_gateway.cli", *argv,
        "--port", str(port), "--metrics.port", str(metrics_port),
        "--workers", "1", "--metrics.multiprocess_dir", multiproc_dir,
    ]  # fmt: skip


async def run_workers(settings: Settings, argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Start `settings.server.workers` children and supervise them until they all exit."""
    count = settings.server.workers
    # The children share their ports with each other only: a port another process holds is refused here.
    refuse_busy_port("server.port", settings.server.host, settings.server.port)
    if settings.metrics.enabled:
        refuse_busy_port("metrics.port", settings.metrics.host, settings.metrics.port)
    if settings.callbacks.public_url:
        refuse_busy_port("callbacks.receiver_port", settings.callbacks.receiver_host, settings.callbacks.receiver_port)
    port = settings.server.port or free_port(settings.server.host)
    metrics_port = settings.metrics.port or free_port(settings.metrics.host)
    folder = tempfile.mkdtemp(prefix="launch-gateway-metrics-")
    child_env = {**env, MULTIPROC_ENV: folder}
    children = [
        await asyncio.create_subprocess_exec(
            *child_argv(argv, port, metrics_port, folder), env=child_env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(count)
    ]
    try:
        for child in children:  # each prints its address once it listens
            assert child.stdout is not None
            line = await child.stdout.readline()
            if not line:  # it has said why on standard error (a port taken since the check, say)
                code = await child.wait()
                print(f"launch-gateway: a worker exited before listening (exit code {code})", file=sys.stderr)
                return 1
        metrics = (
            f"; metrics on http://{settings.metrics.host}:{metrics_port}/metrics" if settings.metrics.enabled else ""
        )
        print(
            f"launch-gateway listening on {settings.server.host}:{port} -> {settings.upstream.url} "
            f"({count} workers){metrics}",
            flush=True,
        )
        return await supervise(children, folder)
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        shutil.rmtree(folder, ignore_errors=True)


async def supervise(children: list[asyncio.subprocess.Process], folder: str) -> int:
    from prometheus_client import multiprocess

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def forward(sig: signal.Signals) -> None:
        if sig != signal.SIGHUP:
            stopping.set()
        for child in children:
            if child.returncode is None:
                child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, forward, sig)
    try:
        waits = {asyncio.ensure_future(child.wait()): child for child in children}
        pending = set(waits)
        codes = []
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                child = waits[finished]
                codes.append(finished.result())
                multiprocess.mark_process_dead(child.pid, folder)  # type: ignore[no-untyped-call]
                if not stopping.is_set():  # died on its own: stop the rest
                    print(f"launch-gateway: worker {child.pid} exited with {codes[-1]}; stopping", file=sys.stderr)
                    stopping.set()
                    forward(signal.SIGTERM)
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
