"""End to end, against a client that behaves as the Launch Python client does.

`LaunchLikeClient` calls the local Launch server directly, as `launch.LaunchClient` would: a name
lookup (`GET /v1/model-endpoints?name=`) before every call, then the task route, and for async
results a poll of `GET /v1/async-tasks/{id}` every flat 2 s while PENDING or STARTED (launch-http-
api.md §1, §6). The gateway side is this project's asyncio SDK (`launch_gateway.client.aio`) as a user
writes it: one `get_model_endpoint`, then `predict` per call and `future.get()` for async results.

Sync: one caller, `launch_sync_calls` calls per round. Async: `launch_async_tasks` tasks at once
per round (one per local Launch worker, so no task queues behind another), each sleeping a
different time in 0.1-0.9 s, the same times for both clients.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp

from bench.harness import Harness
from bench.stats import percentile
from launch_gateway.client.aio import AsyncEndpoint, GatewayClient, SyncEndpoint
from launch_gateway.client.objects import EndpointRequest

SECTION = "Launch-client comparison"
POLL_SECONDS = 2.0  # the Launch client's flat sleep between polls
ARGS = {"text": "hello", "n": 1}


class LaunchLikeClient:
    """The Launch Python client's request pattern, over aiohttp with keep-alive (as urllib3 pools)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url

    async def _lookup(self, name: str) -> str:
        async with self._session.get(f"{self._base}/v1/model-endpoints", params={"name": name}) as response:
            body = await response.json()
        return str(body["model_endpoints"][0]["id"])

    async def _post(self, route: str, endpoint_id: str, args: dict[str, Any]) -> Any:
        body = {"args": args, "return_pickled": False}
        async with self._session.post(
            f"{self._base}{route}", params={"model_endpoint_id": endpoint_id}, json=body
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def sync_predict(self, name: str, args: dict[str, Any]) -> Any:
        return await self._post("/v1/sync-tasks", await self._lookup(name), args)

    async def async_predict(self, name: str, args: dict[str, Any]) -> Any:
        task = await self._post("/v1/async-tasks", await self._lookup(name), args)
        while True:
            async with self._session.get(f"{self._base}/v1/async-tasks/{task['task_id']}") as response:
                state = await response.json()
            if state["status"] not in ("PENDING", "STARTED"):
                return state
            await asyncio.sleep(POLL_SECONDS)


async def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call
    return (time.perf_counter() - started) * 1000.0, result


async def measure(harness: Harness) -> None:
    sizes = harness.sizes
    launch, gateway = await harness.launch(), await harness.gateway()
    delays = [0.1 + 0.8 * i / max(sizes.launch_async_tasks - 1, 1) for i in range(sizes.launch_async_tasks)]
    sync: dict[str, list[list[float]]] = {"launch": [], "gateway": []}
    asyn: dict[str, list[list[float]]] = {"launch": [], "gateway": []}
    errors: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session, GatewayClient(gateway.address, timeout=60) as client:
        launch_like = LaunchLikeClient(session, launch.url)
        echo = await client.get_model_endpoint("echo")
        echo_async = await client.get_model_endpoint("echo-async")
        assert isinstance(echo, SyncEndpoint)
        assert isinstance(echo_async, AsyncEndpoint)
        for _ in range(sizes.rounds):
            direct, through = [], []
            for _ in range(sizes.launch_sync_calls):
                ms, body = await _timed(launch_like.sync_predict("echo", ARGS))
                direct.append(ms)
                if body.get("status") != "SUCCESS":
                    errors["Launch-like sync not SUCCESS"] += 1
                ms, response = await _timed(echo.predict(EndpointRequest(args=ARGS)))
                through.append(ms)
                if response.status != "SUCCESS":
                    errors["SDK sync not SUCCESS"] += 1
            sync["launch"].append(direct)
            sync["gateway"].append(through)

            results = await asyncio.gather(
                *(_timed(launch_like.async_predict("echo-async", {"delay": d})) for d in delays)
            )
            asyn["launch"].append([ms - d * 1000 for (ms, _), d in zip(results, delays, strict=True)])
            errors.update("Launch-like async not SUCCESS" for _, r in results if r.get("status") != "SUCCESS")

            async def sdk_async(delay: float) -> Any:
                future = await echo_async.predict(EndpointRequest(args={"delay": delay}))
                return await future.get(timeout=30)

            results = await asyncio.gather(*(_timed(sdk_async(d)) for d in delays))
            asyn["gateway"].append([ms - d * 1000 for (ms, _), d in zip(results, delays, strict=True)])
            errors.update("SDK async not SUCCESS" for _, r in results if r.status != "SUCCESS")

    add = harness.report.add
    for q in (50, 99):
        add(
            SECTION,
            f"sync call end to end, p{q}, 1 caller (SDK through gateway)",
            "ms",
            [percentile(run, q) for run in sync["gateway"]],
            reference_name=f"Launch-like client p{q}",
            reference=[percentile(run, q) for run in sync["launch"]],
        )
    for q, name in ((50, "p50"), (100, "max")):
        add(
            SECTION,
            f"async result: task end -> result in hand, {name} (SDK through gateway)",
            "ms",
            [percentile(run, q) for run in asyn["gateway"]],
            reference_name=f"Launch-like client (2 s polls), {name}",
            reference=[percentile(run, q) for run in asyn["launch"]],
            note="end-to-end latency minus the task's own sleep",
        )
    if errors:
        add(
            SECTION,
            "errors in the Launch-client comparison",
            "",
            [float(sum(errors.values()))],
            target="0",
            check=lambda f: False,
            note=json.dumps(dict(errors)),
        )
