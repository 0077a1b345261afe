"""Async tasks: the PENDING -> STARTED -> SUCCESS/FAILURE lifecycle and result callbacks."""
# tests/conformance/test_imitation.py and test_semantics.py compare these shapes with model-engine's.

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer
from launch_gateway.testing.local_launch.examples import echo_async

from .harness import call, serve

ASYNC = "/v1/async-tasks"


async def get_task(client: aiohttp.ClientSession, server: LocalLaunchServer, task_id: str) -> dict[str, Any]:
    async with client.get(f"{server.url}{ASYNC}/{task_id}") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_task_goes_pending_started_success(client: aiohttp.ClientSession) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def gated(**kwargs: Any) -> dict[str, Any]:
        started.set()
        await release.wait()
        return kwargs

    async with LocalLaunchServer([EndpointSpec("gated", "async", gated)], workers=1) as server:
        status, first = await call(client, server, ASYNC, "gated", {"args": {"n": 1}})
        assert status == 200
        assert set(first) == {"task_id"}
        async with asyncio.timeout(5):
            await started.wait()
        assert await get_task(client, server, first["task_id"]) == {
            "task_id": first["task_id"],
            "status": "STARTED",
            "result": None,
            "traceback": None,
            "status_code": None,
        }
        # The only worker is busy, so a second task waits in the queue.
        _, second = await call(client, server, ASYNC, "gated", {"args": {"n": 2}})
        assert await get_task(client, server, second["task_id"]) == {
            "task_id": second["task_id"],
            "status": "PENDING",
            "result": None,
            "traceback": None,
            "status_code": None,
        }
        release.set()
        await server.wait_for_task(first["task_id"])
        assert await get_task(client, server, first["task_id"]) == {
            "task_id": first["task_id"],
            "status": "SUCCESS",
            "result": {"result": json.dumps({"n": 1})},
            "traceback": None,
            "status_code": 200,
        }
        await server.wait_for_task(second["task_id"])
        assert (await get_task(client, server, second["task_id"]))["result"] == {"result": '{"n": 2}'}


async def test_failed_task_reports_the_exception(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    _, created = await call(client, server, ASYNC, "fail-async", {"args": {"delay": 0, "message": "boom"}})
    task_id = created["task_id"]
    await server.wait_for_task(task_id)
    body = await get_task(client, server, task_id)
    assert body["task_id"] == task_id
    assert body["status"] == "FAILURE"
    assert body["result"] == "boom"
    assert body["status_code"] is None
    assert body["traceback"].rstrip().endswith("ValueError: boom")


async def test_unknown_task_id_reads_as_pending(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    assert await get_task(client, server, "no-such-task") == {
        "task_id": "no-such-task",
        "status": "PENDING",
        "result": None,
        "traceback": None,
        "status_code": None,
    }


async def test_an_untracked_queue_goes_from_pending_to_success(client: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def gated(**kwargs: Any) -> dict[str, Any]:
        await release.wait()
        return kwargs

    async with LocalLaunchServer([EndpointSpec("gated", "async", gated)], track_started=False) as server:
        _, created = await call(client, server, ASYNC, "gated", {"args": {}})
        await server.wait_for_record(lambda r: r.path == ASYNC and r.done)
        await asyncio.sleep(0)  # let a worker take the task
        assert (await get_task(client, server, created["task_id"]))["status"] == "PENDING"
        release.set()
        assert (await server.wait_for_task(created["task_id"]))["status"] == "SUCCESS"


async def test_a_container_answering_500_is_success_with_status_code_500(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    args = {"status_code": 500, "body": {"error": "model crashed"}}
    _, created = await call(client, server, ASYNC, "status-async", {"args": args})
    assert await server.wait_for_task(created["task_id"]) == {
        "task_id": created["task_id"],
        "status": "SUCCESS",
        "result": {"result": '{"error": "model crashed"}'},
        "traceback": None,
        "status_code": 500,
    }


async def test_pickled_async_result(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    _, created = await call(
        client, server, ASYNC, "echo-async", {"args": {"delay": 0, "v": [1]}, "return_pickled": True}
    )
    body = await server.wait_for_task(created["task_id"])
    async with client.get(body["result"]["result_url"]) as response:
        assert pickle.loads(await response.read()) == {"delay": 0, "v": [1]}


@dataclass
class Receiver:
    """A callback server: answers with `statuses` in turn (then 200) and keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[str | None, Any, str | None]] = field(default_factory=list)  # auth, body, peer cert
    got_success: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = str(peer["subject"]) if peer else None
        self.calls.append((request.headers.get("Authorization"), await request.json(), subject))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.got_success.set()
        return web.Response(status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/callback", self.handle)
        return app


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    async with serve(target.app()) as base:
        yield target, f"{base}/callback"


async def test_callback_posts_the_result_with_basic_auth(
    server: LocalLaunchServer, client: aiohttp.ClientSession, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    body = {
        "args": {"delay": 0, "x": 1},
        "callback_url": url,
        "callback_auth": {"kind": "basic", "username": "hook-user", "password": "hook-pass"},
    }
    _, created = await call(client, server, ASYNC, "echo-async", body)
    async with asyncio.timeout(5):
        await target.got_success.wait()
    [(authorization, payload, _)] = target.calls
    assert authorization == aiohttp.encode_basic_auth("hook-user", "hook-pass")
    # the worker's result with its status code, not the task GET body (no `status`)
    assert payload == {"result": '{"delay": 0, "x": 1}', "status_code": 200, "task_id": created["task_id"]}


async def test_callback_without_auth_comes_from_the_endpoint_owner(
    client: aiohttp.ClientSession, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    async with LocalLaunchServer([EndpointSpec("owned", "async", echo_async, owner="team-a")]) as server:
        await call(client, server, ASYNC, "owned", {"args": {"delay": 0}, "callback_url": url})
        async with asyncio.timeout(5):
            await target.got_success.wait()
    [(authorization, _, _)] = target.calls
    assert authorization == aiohttp.encode_basic_auth("team-a", "")


async def test_no_callback_for_a_failed_task(
    server: LocalLaunchServer, client: aiohttp.ClientSession, receiver: tuple[Receiver, str]
) -> None:
    target, url = receiver
    _, created = await call(client, server, ASYNC, "fail-async", {"args": {"delay": 0}, "callback_url": url})
    # a task that succeeds after it, with a callback to the same server, arrives alone
    await server.wait_for_task(created["task_id"])
    await call(client, server, ASYNC, "echo-async", {"args": {"delay": 0}, "callback_url": url})
    async with asyncio.timeout(5):
        await target.got_success.wait()
    assert [payload["status_code"] for _, payload, _ in target.calls] == [200]


async def test_callback_is_retried_and_failures_logged_without_secrets(
    server: LocalLaunchServer,
    client: aiohttp.ClientSession,
    receiver: tuple[Receiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, url = receiver
    target.statuses = [500, 503]
    body = {
        "args": {"delay": 0},
        "callback_url": url,
        "callback_auth": {"kind": "basic", "username": "hook-user", "password": "s3cret-pass"},
    }
    with caplog.at_level(logging.WARNING, logger="launch_gateway.testing.local_launch"):
        _, created = await call(client, server, ASYNC, "echo-async", body)
        async with asyncio.timeout(5):
            await target.got_success.wait()
    assert len(target.calls) == 3
    assert all(payload["task_id"] == created["task_id"] for _, payload, _ in target.calls)
    assert "HTTP 500" in caplog.text
    assert "HTTP 503" in caplog.text
    assert "s3cret-pass" not in caplog.text


async def test_callback_with_mtls_auth_ignores_it_and_sends_basic_as_the_owner(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    # Launch presents no client certificate, so a server that asked for one would refuse it.
    server_context.verify_mode = ssl.CERT_NONE
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_cert = ca.issue_cert("gateway-callbacks.example", common_name="gateway-callbacks.example")
    auth = {
        "kind": "mtls",
        "cert": client_cert.cert_chain_pems[0].bytes().decode(),
        "key": client_cert.private_key_pem.bytes().decode(),
    }
    target = Receiver()
    async with (
        serve(target.app(), ssl_context=server_context) as base,
        LocalLaunchServer(callback_ca_file=str(ca_file)) as server,
    ):
        body = {"args": {"delay": 0}, "callback_url": f"{base}/callback", "callback_auth": auth}
        _, created = await call(client, server, ASYNC, "echo-async", body)
        async with asyncio.timeout(5):
            await target.got_success.wait()
    [(authorization, payload, _)] = target.calls
    assert authorization == aiohttp.encode_basic_auth("local-launch", "")  # no owner, no key: the server's name
    assert payload["task_id"] == created["task_id"]
