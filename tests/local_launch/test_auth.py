"""API keys: Launch's 401 bodies, and Basic (key as user name) or Bearer credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from launch_gateway.testing.local_launch import LocalLaunchServer

KEY = "test-key-1"


@pytest.fixture
async def locked() -> AsyncIterator[LocalLaunchServer]:
    async with LocalLaunchServer(api_keys={KEY, "other-key"}) as server:
        yield server


async def lookup(
    client: aiohttp.ClientSession, server: LocalLaunchServer, headers: dict[str, str]
) -> tuple[int, Any, Mapping[str, str]]:
    async with client.get(f"{server.url}/v1/model-endpoints", params={"name": "echo"}, headers=headers) as response:
        return response.status, await response.json(), response.headers


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        pytest.param({}, "No authentication was passed in", id="none"),
        pytest.param({"Authorization": "Token abc"}, "No authentication was passed in", id="other-scheme"),
        pytest.param(
            {"Authorization": aiohttp.encode_basic_auth("wrong", "")},
            "Could not authenticate user",
            id="bad-basic",
        ),
        pytest.param({"Authorization": "Bearer wrong"}, "Could not authenticate user", id="bad-bearer"),
    ],
)
async def test_refused_credentials_get_launchs_401(
    locked: LocalLaunchServer, client: aiohttp.ClientSession, headers: dict[str, str], detail: str
) -> None:
    status, body, response_headers = await lookup(client, locked, headers)
    assert status == 401
    assert body == {"detail": detail}
    assert "WWW-Authenticate" in response_headers


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(aiohttp.encode_basic_auth(KEY, "ignored"), id="basic"),
        pytest.param(f"Bearer {KEY}", id="bearer"),
    ],
)
async def test_a_known_key_passes_and_is_recorded(
    locked: LocalLaunchServer, client: aiohttp.ClientSession, authorization: str
) -> None:
    status, body, _ = await lookup(client, locked, {"Authorization": authorization, "X-Trace": "t-1"})
    assert status == 200
    assert body["model_endpoints"][0]["name"] == "echo"
    record = locked.records[-1]
    assert record.api_key == KEY
    assert record.headers["authorization"] == authorization
    assert record.headers["x-trace"] == "t-1"
    assert (record.status, record.outcome) == (200, "completed")


async def test_every_task_route_needs_a_key(locked: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    for method, path in [
        ("POST", "/v1/sync-tasks"),
        ("POST", "/v1/async-tasks"),
        ("GET", "/v1/async-tasks/some-id"),
        ("POST", "/v1/streaming-tasks"),
        ("GET", f"/v1/model-endpoints/{locked.endpoint_id('echo')}"),
    ]:
        async with client.request(method, f"{locked.url}{path}", json={}) as response:
            assert response.status == 401, path


async def test_without_api_keys_anything_passes_and_the_key_is_still_recorded(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    status, _, _ = await lookup(client, server, {"Authorization": "Bearer whatever"})
    assert status == 200
    status, _, _ = await lookup(client, server, {})
    assert status == 200
    assert [record.api_key for record in server.records] == ["whatever", None]
