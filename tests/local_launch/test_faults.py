"""Fault injection as a client sees it: refusals, latency, stalls, broken bodies and streams, and the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from launch_gateway.cli import build_parser
from launch_gateway.testing.local_launch import Faults, LocalLaunchServer, parse_fault
from launch_gateway.testing.local_launch.failures import BROKER_DOWN
from launch_gateway.testing.local_launch.faults import FaultInjector, retry_after_header

from .harness import dechunk, raw_post

SYNC = "/v1/sync-tasks"
ASYNC = "/v1/async-tasks"
STREAM = "/v1/streaming-tasks"
LOOKUP = "/v1/model-endpoints"
EVENT_END = b"\r\n\r\n"
PACIFIC_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d P[SD]T")
ROUTES = {SYNC: "echo", ASYNC: "echo-async", STREAM: "count"}


@pytest.fixture
async def server() -> AsyncIterator[LocalLaunchServer]:
    async with LocalLaunchServer(faults=Faults(seed=1)) as launch:
        yield launch


def event(i: int) -> bytes:
    body = {"status": "SUCCESS", "result": {"result": {"i": i}}, "traceback": None, "status_code": 200}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + EVENT_END


def post(
    client: aiohttp.ClientSession, server: LocalLaunchServer, route: str, args: dict[str, Any], **kwargs: Any
) -> Any:
    """POST a task route for its example endpoint; use as `async with`."""
    params = {"model_endpoint_id": server.endpoint_id(ROUTES[route])}
    return client.post(f"{server.url}{route}", params=params, json={"args": args}, **kwargs)


async def last_record(server: LocalLaunchServer, path: str) -> Any:
    record = server.records[-1]
    assert record.path == path
    await record.wait_done()
    return record


# -- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "status", "content_type", "expected"),
    [
        pytest.param(ASYNC, 503, "application/json", {"detail": BROKER_DOWN}, id="503-async-create-broker-down"),
        pytest.param(SYNC, 503, "application/json", {"detail": "Service Unavailable"}, id="503-sync"),
        pytest.param(SYNC, 408, "application/json", {"detail": "Request timed out."}, id="408-sync"),
        pytest.param(STREAM, 400, "application/json", {"detail": "Bad Request"}, id="400-stream-before-events"),
        pytest.param(STREAM, 502, "text/plain", "Bad Gateway", id="502-proxy-plain-text"),
        pytest.param(SYNC, 504, "text/plain", "upstream request timeout", id="504-proxy-plain-text"),
    ],
)  # fmt: skip
async def test_injected_error_status_and_body(
    server: LocalLaunchServer, client: aiohttp.ClientSession, route: str, status: int, content_type: str, expected: Any
) -> None:
    server.faults = Faults(error_rates={status: 1.0})
    async with post(client, server, route, {"delay": 0}) as response:
        assert response.status == status
        assert response.content_type == content_type
        body = await (response.json() if content_type == "application/json" else response.text())
    assert body == expected
    record = await last_record(server, route)
    assert (record.status, record.fault) == (status, f"error_{status}")
    assert server.fault_counts == {f"error_{status}": 1}


async def test_injected_500_is_launchs_unhandled_error_body(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(error_rates={500: 1.0})
    async with post(client, server, SYNC, {}) as response:
        assert response.status == 500
        body = await response.json()
    assert body["error"] == "Internal error occurred. Our team has been notified."
    assert PACIFIC_TIMESTAMP.fullmatch(body["timestamp"])
    assert re.fullmatch(r"[0-9a-f-]{36}", body["request_id"])


async def test_throttle_is_launchs_429_with_retry_after_rounded_up(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(throttle_rate=1.0, retry_after=1.2)
    async with post(client, server, SYNC, {}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"
        body = await response.json()
    assert set(body) == {"error", "timestamp"}
    assert body["error"] == "Too many requests"
    assert PACIFIC_TIMESTAMP.fullmatch(body["timestamp"])
    assert (await last_record(server, SYNC)).fault == "throttle"


@pytest.mark.parametrize(("seconds", "header"), [(0, "0"), (0.01, "1"), (1.0, "1"), (2.5, "3")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


async def test_injected_error_on_async_create_creates_no_task(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(error_rates={503: 0.5}, throttle_rate=0.5)  # one draw: every request refused
    for _ in range(6):
        async with post(client, server, ASYNC, {"delay": 0}) as response:
            assert response.status in (429, 503)
    assert server.task_ids == []
    assert server.fault_counts.total() == 6


async def test_lookups_get_faults_only_when_asked(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(throttle_rate=1.0)
    async with client.get(f"{server.url}{LOOKUP}", params={"name": "echo"}) as response:
        assert response.status == 200
    server.faults = Faults(throttle_rate=1.0, lookups=True)
    async with client.get(f"{server.url}{LOOKUP}", params={"name": "echo"}) as response:
        assert response.status == 429
    async with client.get(f"{server.url}{LOOKUP}/{server.endpoint_id('echo')}") as response:
        assert response.status == 200  # find-by-id and unknown routes are never faulted
    async with client.get(f"{server.url}/v1/nowhere") as response:
        assert response.status == 404
    assert server.fault_counts == {"throttle": 1}


# -- time -------------------------------------------------------------------------------------------------


async def test_latency_is_added_before_answering(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(latency=0.05)
    started = time.monotonic()
    async with post(client, server, SYNC, {"v": 1}) as response:
        assert await response.json() == {"status": "SUCCESS", "result": {"result": '{"v": 1}'}, "traceback": None,
                                         "status_code": 200}  # fmt: skip
    assert time.monotonic() - started >= 0.05
    assert (await last_record(server, SYNC)).faults == ["latency"]


async def test_stall_on_a_json_route_sends_nothing_until_the_client_times_out(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(stall=30.0)
    with pytest.raises(aiohttp.ServerTimeoutError):
        async with post(client, server, ASYNC, {"delay": 0}, timeout=aiohttp.ClientTimeout(sock_read=0.1)):
            pass
    record = await last_record(server, ASYNC)
    assert (record.outcome, record.status, record.fault) == ("disconnected", None, "stall")
    assert server.task_ids == []  # the stall came before the task would have been created


async def test_a_stalled_stream_sends_headers_then_nothing(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(stall=30.0)
    async with post(client, server, STREAM, {"n": 2, "interval": 0}, timeout=aiohttp.ClientTimeout(sock_read=0.1)) as r:
        assert r.status == 200
        assert r.content_type == "text/event-stream"
        with pytest.raises(aiohttp.ServerTimeoutError):
            await r.content.readany()
    record = await last_record(server, STREAM)
    assert (record.outcome, record.fault) == ("disconnected", "stall")


async def test_a_short_stall_then_the_normal_answer(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(stall=0.05)
    async with post(client, server, SYNC, {}) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "SUCCESS"
    assert (await last_record(server, SYNC)).faults == ["stall"]


def test_stall_rate_zero_never_stalls() -> None:
    assert not Faults(stall=5.0, stall_rate=0.0).active


# -- broken bodies ----------------------------------------------------------------------------------------


async def test_cut_body_has_a_content_length_and_half_the_body(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(cut_body_rate=1.0)
    async with post(client, server, SYNC, {"v": 1}) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert (await last_record(server, SYNC)).fault == "cut_body"
    head, body = await raw_post(server, SYNC, "echo", {"args": {"v": 1}})
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    whole = b'{"status":"SUCCESS","result":{"result":"{\\"v\\": 1}"},"traceback":null,"status_code":200}'
    assert (length, body) == (len(whole), whole[: len(whole) // 2])
    assert server.fault_counts == {"cut_body": 2}


async def test_cut_body_on_async_create_comes_after_the_task_exists(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(cut_body_rate=1.0)
    async with post(client, server, ASYNC, {"delay": 0, "v": 7}) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    record = await last_record(server, ASYNC)
    assert record.fault == "cut_body_after_create"
    assert server.fault_counts == {"cut_body_after_create": 1}
    [task_id] = server.task_ids  # the client never learnt it
    await server.wait_for_task(task_id)
    server.faults = Faults()
    async with client.get(f"{server.url}{ASYNC}/{task_id}") as response:
        body = await response.json()
    assert body["status"] == "SUCCESS"
    assert json.loads(body["result"]["result"]) == {"delay": 0, "v": 7}


async def test_bad_json_is_a_200_that_does_not_parse(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(bad_json_rate=1.0)
    async with post(client, server, ASYNC, {"delay": 0}) as response:
        assert (response.status, response.content_type) == (200, "application/json")
        with pytest.raises(json.JSONDecodeError):
            await response.json()
    assert (await last_record(server, ASYNC)).fault == "bad_json"
    assert server.task_ids == []  # it stood in for the answer


async def test_wrong_content_type_is_a_200_html_page(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(wrong_content_type_rate=1.0)
    async with post(client, server, STREAM, {"n": 2}) as response:
        assert (response.status, response.content_type) == (200, "text/html")
        with pytest.raises(aiohttp.ContentTypeError):
            await response.json()
        text = await response.text()
    assert re.fullmatch(r"<html>.*</html>", text)
    assert (await last_record(server, STREAM)).fault == "wrong_content_type"


# -- broken streams ---------------------------------------------------------------------------------------


async def test_stream_dropped_after_n_events_ends_like_a_normal_stream(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(drop_stream_after=2)
    async with post(client, server, STREAM, {"n": 5, "interval": 0}) as response:
        assert await response.read() == event(0) + event(1)
    record = await last_record(server, STREAM)
    assert (record.outcome, record.fault) == ("completed", "drop_stream")
    async with post(client, server, STREAM, {"n": 2, "interval": 0}) as response:
        assert await response.read() == event(0) + event(1)
    assert (await last_record(server, STREAM)).fault is None  # nothing was left to drop
    assert server.fault_counts == {"drop_stream": 1}


async def test_stream_cut_mid_event_leaves_half_an_event_and_no_end(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    server.faults = Faults(drop_stream_after=2, cut_stream_mid_event=True)
    _, raw = await raw_post(server, STREAM, "count", {"args": {"n": 5, "interval": 0}})
    body, complete = dechunk(raw)
    third = event(2)
    assert body == event(0) + event(1) + third[: len(third) // 2]
    assert not complete
    async with post(client, server, STREAM, {"n": 5, "interval": 0}) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert (await last_record(server, STREAM)).fault == "cut_stream"
    assert server.fault_counts == {"cut_stream": 2}


# -- control ----------------------------------------------------------------------------------------------


async def test_faults_change_while_the_server_runs(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    assert not server.faults.active
    statuses = []
    for faults in (Faults(), Faults(throttle_rate=1.0), Faults(error_rates={502: 1.0}), Faults()):
        server.faults = faults
        async with post(client, server, SYNC, {}) as response:
            statuses.append(response.status)
    assert statuses == [200, 429, 502, 200]
    assert [record.fault for record in server.records] == [None, "throttle", "error_502", None]
    assert server.fault_counts == {"throttle": 1, "error_502": 1}


async def test_record_waiters_see_faults(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    server.faults = Faults(latency=0.01, throttle_rate=1.0)
    waiter = asyncio.create_task(server.wait_for_record(lambda r: r.fault == "throttle"))
    async with post(client, server, SYNC, {}) as response:
        assert response.status == 429
    assert (await waiter).faults == ["latency", "throttle"]


def test_a_seed_makes_the_draws_repeatable() -> None:
    faults = Faults(latency_jitter=0.1, error_rates={503: 0.2}, throttle_rate=0.2, bad_json_rate=0.3, seed=42)
    first, second = FaultInjector(faults), FaultInjector(faults)
    plans = [first.plan(faults, "sync") for _ in range(50)]
    assert plans == [second.plan(faults, "sync") for _ in range(50)]
    assert {plan.refusal for plan in plans} == {None, 429, 503}
    first.faults = faults  # setting faults again restarts the sequence
    assert [first.plan(faults, "sync") for _ in range(50)] == plans


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"latency": -1.0}, id="negative-latency"),
        pytest.param({"throttle_rate": 1.5}, id="rate-above-1"),
        pytest.param({"error_rates": {200: 0.1}}, id="status-not-an-error"),
        pytest.param({"error_rates": {503: 0.6}, "throttle_rate": 0.6}, id="refusals-above-1"),
        pytest.param({"bad_json_rate": 0.5, "cut_body_rate": 0.6}, id="body-faults-above-1"),
        pytest.param({"cut_stream_mid_event": True}, id="cut-without-drop"),
        pytest.param({"drop_stream_after": -1}, id="negative-drop"),
    ],
)
def test_faults_that_make_no_sense_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        Faults(**kwargs)


def test_parse_fault_spec() -> None:
    spec = "latency=0.05, error=503:0.1,error=502:0.2,throttle_rate=0.2,lookups,drop_stream_after=3,seed=7"
    assert parse_fault(spec) == {
        "latency": 0.05,
        "error_rates": {503: 0.1, 502: 0.2},
        "throttle_rate": 0.2,
        "lookups": True,
        "drop_stream_after": 3,
        "seed": 7,
    }
    assert Faults(**parse_fault(spec)).error_rates == {503: 0.1, 502: 0.2}
    assert parse_fault("") == {}
    for bad in ("nonsense=1", "latency=soon", "error=503", "lookups=maybe"):
        with pytest.raises(ValueError, match=r"fault|STATUS:RATE"):
            parse_fault(bad)


def test_cli_fault_flags() -> None:
    args = build_parser().parse_args(
        ["local-launch", "--fault-latency", "0.1", "--fault-jitter", "0.05", "--fault-error", "503:0.1",
         "--fault-error", "502:0.2", "--fault-throttle", "0.3", "--fault-retry-after", "2.5",
         "--fault-drop-stream-after", "3", "--fault-cut-stream", "--fault-stall", "4", "--fault-stall-rate", "0.5",
         "--fault-cut-body", "0.1", "--fault-bad-json", "0.2", "--fault-wrong-content-type", "0.3",
         "--fault-lookups", "--fault-seed", "9"]
    )  # fmt: skip
    faults = Faults.from_args(args)
    assert faults == Faults(
        latency=0.1,
        latency_jitter=0.05,
        error_rates={503: 0.1, 502: 0.2},
        throttle_rate=0.3,
        retry_after=2.5,
        drop_stream_after=3,
        cut_stream_mid_event=True,
        stall=4.0,
        stall_rate=0.5,
        cut_body_rate=0.1,
        bad_json_rate=0.2,
        wrong_content_type_rate=0.3,
        lookups=True,
        seed=9,
    )
    line = faults.describe()
    for part in ("latency 0.1s", "error 503 0.1", "throttle 0.3 (Retry-After 3s)", "cut mid-event after 3", "seed 9"):
        assert part in line


def test_cli_without_fault_flags_injects_nothing() -> None:
    faults = Faults.from_args(build_parser().parse_args(["local-launch"]))
    assert faults == Faults()
    assert faults.describe() == "none"


@pytest.mark.parametrize(
    "flags",
    [["--fault-error", "503"], ["--fault-error", "503:0.1", "--fault-error", "503:0.2"], ["--fault-cut-stream"]],
    ids=["error-without-rate", "error-twice", "cut-without-drop"],
)
def test_cli_fault_flags_that_make_no_sense(flags: list[str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Faults.from_args(build_parser().parse_args(["local-launch", *flags]))
