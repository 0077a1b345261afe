"""Ports as operators meet them: a port in use stops `serve` at start with one line naming the setting.

Without this, a second `serve` on the gRPC port bound it too (grpc-core sets SO_REUSEPORT by default)
and the two silently shared the calls, and a metrics port in use crashed with a long traceback that
never named `metrics.port`. Only `serve --workers N` shares its ports, among its own workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from launch_gateway.server.app import GatewayServer
from launch_gateway.server.errors import ListenError
from launch_gateway.server.limits.buckets import Rate
from launch_gateway.server.settings import MetricsSettings, build_settings
from launch_gateway.testing.local_launch import LocalLaunchServer
from tests.conftest import LAUNCH_GATEWAY
from tests.redis_server import RedisServer
from tests.serving import ServeFactory, serve_env
from tests.waiting import wait_for, wait_for_sync

PROMETHEUS_PORT = 9090  # the Prometheus server's own default port


@contextlib.contextmanager
def listener(port: int = 0) -> Iterator[int]:
    """Another program listening on 127.0.0.1:`port` (without SO_REUSEPORT, as most programs); its port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock.getsockname()[1]


async def serve_exit(*args: str, within: float = 30, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """`launch-gateway serve ARGS` that should refuse to start: its exit code and standard error lines."""
    process = await asyncio.create_subprocess_exec(
        LAUNCH_GATEWAY, "serve", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=serve_env(env), start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # serve and any workers
        out, err = await process.communicate()
        pytest.fail(f"serve kept running on a port in use:\n{out.decode()}{err.decode()}")
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace").splitlines()


def assert_one_line(lines: list[str], expected: str) -> None:
    assert lines == [expected], "\n".join(lines)


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "workers"])
async def test_serve_on_a_grpc_port_another_serve_holds_exits_naming_the_port(
    serve_process: ServeFactory, workers: str
) -> None:
    async with LocalLaunchServer() as launch:
        first = await serve_process("--upstream", launch.url, "--port", "0", "--metrics.port", "0")
        port = first.address.rpartition(":")[2]
        code, lines = await serve_exit(
            "--upstream", launch.url, "--port", port, "--metrics.port", "0", "--workers", workers
        )
        assert code == 1
        assert_one_line(
            lines, f"launch-gateway: server.port: cannot listen on 127.0.0.1:{port} (Address already in use)"
        )
        assert await first.stop() == 0


async def test_serve_on_a_grpc_port_another_program_holds_exits_naming_the_port() -> None:
    with listener() as port:
        code, lines = await serve_exit("--upstream", "http://127.0.0.1:1", "--port", str(port), "--metrics.port", "0")
    assert code == 1
    assert_one_line(lines, f"launch-gateway: server.port: cannot listen on 127.0.0.1:{port} (Address already in use)")


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "workers"])
async def test_a_callback_receiver_port_in_use_is_one_line_naming_it(workers: str) -> None:
    with listener() as port:
        code, lines = await serve_exit(
            "--upstream", "http://127.0.0.1:1", "--port", "0", "--metrics.port", "0", "--workers", workers,
            "--callbacks.public_url", f"http://127.0.0.1:{port}", "--callbacks.receiver_port", str(port),
            env={"LAUNCH_GATEWAY_HANDLE_SECRETS": "a-handle-secret-0123456789"},
        )  # fmt: skip
    assert code == 1
    expected = f"launch-gateway: callbacks.receiver_port: cannot listen on 127.0.0.1:{port} (Address already in use)"
    assert_one_line(lines, expected)


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "workers"])
async def test_a_metrics_port_in_use_is_one_line_naming_metrics_port(workers: str) -> None:
    with listener() as port:
        code, lines = await serve_exit(
            "--upstream", "http://127.0.0.1:1", "--port", "0", "--metrics.port", str(port), "--workers", workers
        )
    assert code == 1
    assert_one_line(lines, f"launch-gateway: metrics.port: cannot listen on 127.0.0.1:{port} (Address already in use)")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def prometheus_on_its_default_port(directory: Path, target: str) -> Iterator[str]:
    """The real Prometheus server on 127.0.0.1:9090, scraping `target` every second; its URL."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus comes from the Debian package prometheus (make test installs it)"
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "gw", "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_sync(
            lambda: not port_is_free(PROMETHEUS_PORT) or process.poll() is not None, within=15, what="prometheus"
        )
        assert process.poll() is None, (directory / "prometheus.log").read_text()
        yield f"http://127.0.0.1:{PROMETHEUS_PORT}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def test_the_default_metrics_port_is_not_prometheus_own(tmp_path: Path, serve_process: ServeFactory) -> None:
    default = MetricsSettings().port
    assert default != PROMETHEUS_PORT
    if not port_is_free(PROMETHEUS_PORT):
        pytest.skip("something else listens on 127.0.0.1:9090 here; the real Prometheus cannot")
    with prometheus_on_its_default_port(tmp_path, f"127.0.0.1:{default}") as prometheus:
        async with LocalLaunchServer() as launch:
            served = await serve_process("--upstream", launch.url, "--port", "0")  # the default metrics port
            assert served.listening is not None
            assert served.listening.metrics_url == f"http://127.0.0.1:{default}/metrics"

            async def scraped() -> bool:
                url = f"{prometheus}/api/v1/query"
                async with aiohttp.ClientSession() as session, session.get(url, params={"query": "up == 1"}) as r:
                    return bool((await r.json())["data"]["result"])

            await wait_for(scraped, within=15, what="Prometheus (on 9090) to scrape the gateway", every=0.2)
            assert await served.stop() == 0


async def test_a_start_refused_for_a_busy_port_closes_the_redis_limiter(redis_server: RedisServer) -> None:
    """The limiter's Redis client (and the tracer) are made with the server; a start that fails closes them."""
    async with aioredis.Redis.from_url(redis_server.url) as observer:

        async def clients() -> int:
            return len(await observer.client_list())

        before = await clients()
        with listener() as port:
            values = {
                "server": {"host": "127.0.0.1", "port": port},
                "metrics": {"port": 0},
                "upstream": {"url": "http://127.0.0.1:9"},
                "limits": {"backend": "redis"},
            }
            gateway = GatewayServer(build_settings(values), env={"LAUNCH_GATEWAY_REDIS_URL": redis_server.url})
            assert (await gateway.limiter.check("warm", Rate(per_second=1.0, burst=1))).allowed  # one connection
            assert await clients() == before + 1
            with pytest.raises(ListenError, match=r"server\.port"):
                await gateway.start()

        async def closed() -> bool:
            return await clients() == before

        await wait_for(closed, within=5, what="the limiter's Redis connection to be closed")
