"""A real Prometheus evaluates the shipped alert rules while it scrapes a live gateway.

The Debian `prometheus` server (the package that brings promtool) runs on 127.0.0.1 with a port it picks,
scraping the gateway's metrics port every second as job `launch-gateway` and evaluating
deploy/prometheus/alerts.yml every second. The rules' `for:` windows stay as shipped, so within a test an
alert that should page shows as pending (the state it takes at the first evaluation whose expression holds)
and one that should stay quiet shows nowhere; promtool's cases (alerts_test.yml) cover the firing times.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.waiting import wait_for, wait_for_sync

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
LISTENING = re.compile(r'msg="Listening on" address=(\S+)')
SERVER_CODES = 'grpc_code=~"Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded|Unimplemented"'


class Prometheus:
    """A prometheus server child process scraping `target` (host:port) as job launch-gateway."""

    def __init__(self, directory: Path, target: str) -> None:
        self.directory = directory
        self.log = directory / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "launch-gateway", "static_configs": [{"targets": [target]}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.session: aiohttp.ClientSession | None = None

    def start(self, within: float = 15.0) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus comes from the Debian package prometheus (make test installs it)"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    "--web.listen-address=127.0.0.1:0",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def ready() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{self.log.read_text()}")
            text = self.log.read_text()
            address = LISTENING.search(text)
            return address[1] if address and "Server is ready to receive web requests" in text else None

        self.url = "http://" + wait_for_sync(ready, within=within, what=f"prometheus to listen (see {self.log})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    async def api(self, path: str, **params: str) -> Any:
        assert self.session is not None
        async with self.session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
            assert body["status"] == "success", body
            return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector, at the newest data."""
        data = await self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """Every pending or firing alert."""
        data = await self.api("alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def rule(self, name: str) -> dict[str, Any]:
        data = await self.api("rules", type="alert")
        found: dict[str, Any] = next(r for g in data["groups"] for r in g["rules"] if r["name"] == name)
        return found

    async def evaluated_after(self, moment: float) -> None:
        """Return once every rule group has been evaluated after wall-clock time `moment`."""

        async def evaluated() -> bool:
            groups = (await self.api("rules"))["groups"]
            return bool(groups) and all(timestamp(g["lastEvaluation"]) > moment for g in groups)

        await wait_for(evaluated, within=10, what="a rule evaluation after the data arrived", every=0.1)


def timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


@pytest.fixture
async def limited_stack(make_stack: StackFactory) -> Stack:
    """team-a may make 5 calls a second (burst 5); team-b has no limit. Readiness checked every 0.2 s."""
    return await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B],
        settings={
            "tenants": tenants(**{"team-a": {"rate": {"per_second": 5, "burst": 5}}}),
            "metrics": {"readiness_interval": 0.2},
        },
        gateway_env=ENV,
    )


@pytest.fixture
async def prometheus(limited_stack: Stack, tmp_path: Path) -> AsyncIterator[Prometheus]:
    assert limited_stack.gateway.ops is not None
    server = Prometheus(tmp_path, limited_stack.gateway.ops.url.removeprefix("http://"))
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            server.session = session
            yield server
    finally:
        server.stop()


async def predict(stack: Stack, key: str) -> grpc.StatusCode:
    echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    try:
        await stack.stub.Predict(echo, timeout=10, metadata=bearer(key))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_tenant_over_its_quota_does_not_page_and_an_upstream_outage_does(
    limited_stack: Stack, prometheus: Prometheus
) -> None:
    stack = limited_stack
    await wait_for(
        lambda: prometheus.query('up{job="launch-gateway"} == 1'), within=10, what="a first scrape", every=0.1
    )

    # team-b's ordinary traffic, and team-a far over its quota: its refusals are the only non-OK calls.
    codes = await asyncio.gather(
        *(predict(stack, KEY_B) for _ in range(100)), *(predict(stack, KEY_A) for _ in range(100))
    )
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert refused >= 80

    expr = f'sum(grpc_server_handled_total{{job="launch-gateway", grpc_code="ResourceExhausted"}}) == {refused}'
    await wait_for(lambda: prometheus.query(expr), within=10, what="a scrape with every refusal", every=0.1)
    await prometheus.evaluated_after(time.time())

    assert [a["labels"]["alertname"] for a in await prometheus.alerts() if a["labels"]["severity"] == "page"] == []
    paging = (await prometheus.rule("LaunchGatewayErrorRatioHigh"))["query"]
    assert await prometheus.query(paging) == []
    # Not because the traffic is too thin to judge: count the refusals as errors and the same rule pages.
    assert SERVER_CODES in paging
    as_errors = await prometheus.query(paging.replace(SERVER_CODES, 'grpc_code!="OK"'))
    assert [series["metric"]["grpc_method"] for series in as_errors] == ["Predict"]

    # Launch goes away: the readiness probe fails within 0.2 s and calls fail Unavailable.
    outage = time.time()
    await stack.launch.stop()
    assert {await predict(stack, KEY_B) for _ in range(5)} == {grpc.StatusCode.UNAVAILABLE}

    async def upstream_down() -> dict[str, Any] | None:
        return next(
            (a for a in await prometheus.alerts() if a["labels"]["alertname"] == "LaunchGatewayUpstreamDown"), None
        )

    alert = await wait_for(upstream_down, within=10, what="LaunchGatewayUpstreamDown to be pending", every=0.1)
    assert alert["state"] == "pending"
    assert alert["labels"]["severity"] == "page"
    # It fires `for` after it went pending: within a minute of the outage's start with this scrape interval.
    fires_at = timestamp(alert["activeAt"]) + (await prometheus.rule("LaunchGatewayUpstreamDown"))["duration"]
    assert fires_at - outage < 60
    # The cause pages once: every replica is unready too, and LaunchGatewayNotReady leaves that to this alert.
    await prometheus.evaluated_after(time.time())
    assert await prometheus.query('max(gateway_ready{job="launch-gateway"}) == 0')
    assert "LaunchGatewayNotReady" not in {a["labels"]["alertname"] for a in await prometheus.alerts()}
