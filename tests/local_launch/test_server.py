"""The server's lifecycle and what tests observe through it: records and waits on them."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from launch_gateway.testing.local_launch import LocalLaunchServer


async def test_port_zero_binds_a_free_port_and_stop_is_idempotent() -> None:
    server = LocalLaunchServer()
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.start()
    assert server.url.startswith("http://127.0.0.1:")
    assert server.port > 0
    await server.stop()
    await server.stop()


async def test_records_keep_the_request_as_sent(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    endpoint_id = server.endpoint_id("echo")
    async with client.post(
        f"{server.url}/v1/sync-tasks",
        params={"model_endpoint_id": endpoint_id},
        data=b'{"args": {"a": 1}}',
        headers={"Content-Type": "application/json", "X-Request-Id": "r-1"},
    ) as response:
        assert response.status == 200
    [record] = server.records
    assert (record.method, record.path) == ("POST", "/v1/sync-tasks")
    assert record.query == {"model_endpoint_id": endpoint_id}
    assert record.body == b'{"args": {"a": 1}}'
    assert record.headers["x-request-id"] == "r-1"
    assert record.api_key is None
    assert (record.status, record.outcome) == (200, "completed")


async def test_repeated_headers_are_joined(server: LocalLaunchServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v1/model-endpoints HTTP/1.1\r\nHost: x\r\nX-Tag: a\r\nx-tag: b\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    assert server.records[0].headers["x-tag"] == "a, b"


async def test_wait_for_record_sees_future_and_existing_records(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    waiting = asyncio.create_task(server.wait_for_record(lambda r: r.query.get("name") == "later"))
    async with client.get(f"{server.url}/v1/model-endpoints", params={"name": "first"}):
        pass
    async with client.get(f"{server.url}/v1/model-endpoints", params={"name": "later"}):
        pass
    record = await waiting
    assert record is server.records[1]
    assert await server.wait_for_record(lambda r: r.query.get("name") == "first") is server.records[0]


async def test_wait_for_record_wakes_on_a_change_of_outcome(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    request = asyncio.create_task(
        client.post(
            f"{server.url}/v1/sync-tasks",
            params={"model_endpoint_id": server.endpoint_id("sleep")},
            json={"args": {"seconds": 30}},
        )
    )
    open_record = await server.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert open_record.outcome == "open"
    waiting = asyncio.create_task(server.wait_for_record(lambda r: r.outcome == "disconnected"))
    request.cancel()
    await asyncio.wait([request])
    assert await waiting is open_record


async def test_wait_for_record_times_out(server: LocalLaunchServer) -> None:
    with pytest.raises(TimeoutError):
        await server.wait_for_record(lambda r: False, timeout=0.05)


def test_endpoint_id_of_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        LocalLaunchServer().endpoint_id("nope")
