"""Readiness is logged when it changes, once per change, and at shutdown: a dead upstream is never silent."""

from __future__ import annotations

import json

from launch_gateway.server.workers import free_port
from launch_gateway.testing.local_launch import LocalLaunchServer
from tests.serving import ServeFactory


async def test_readiness_changes_are_logged_once_each_and_so_is_shutdown(serve_process: ServeFactory) -> None:
    port = free_port("127.0.0.1")  # nothing listens there yet: the upstream is down when the gateway starts
    served = await serve_process(
        "--upstream", f"http://127.0.0.1:{port}", "--port", "0", "--metrics.port", "0",
        "--metrics.readiness_interval", "0.05", "--log.access", "false",
    )  # fmt: skip
    line = json.loads(await served.log_line("readiness: not ready", within=10))
    assert line["level"] == "warning"
    assert "upstream: not reachable" in line["message"]

    async with LocalLaunchServer(port=port):
        line = json.loads(await served.log_line("readiness: ready", within=10))
        assert line["level"] == "info"
        # Dozens of checks ran meanwhile (every 50 ms); each change was logged once.
        assert sum("readiness: not ready" in entry for entry in served.stderr) == 1
        assert await served.stop() == 0
    said = [json.loads(entry)["message"] for entry in served.stderr if "readiness" in entry or "stopp" in entry]
    assert sum("readiness: ready" in message for message in said) == 1
    assert any("shutting down" in message for message in said), said
    assert "stopped" in said[-1], said
