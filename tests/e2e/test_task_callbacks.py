"""Launch's callbacks wake WaitAsyncTask at once, pass on to the caller's own URL, and cannot be forged.

The waits here poll every 30 s and wait at most 10 s, so a terminal answer can only come from a
wake-up: polling alone would answer PENDING when the wait's time runs out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2

from launch_gateway.server.access.handles import TaskHandles, TaskRef
from launch_gateway.server.app import GatewayServer
from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import build_settings
from launch_gateway.server.upstream.task_callbacks import CallbackGrant, open_grant, seal_grant
from launch_gateway.server.workers import free_port
from launch_gateway.testing.local_launch import EndpointSpec
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import RawUpstream, Stack, StackFactory
from tests.redis_server import RedisServer
from tests.waiting import wait_for

SECRET = "callback-test-secret-0123456789"
SECRETS = {"LAUNCH_GATEWAY_HANDLE_SECRETS": SECRET}
SLOW_POLLS = {"initial": 30.0, "max": 30.0}


class Gate:
    """An async endpoint whose tasks end when the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def run(self, **args: Any) -> dict[str, Any]:
        await self.open.wait()
        return {"done": True, **args}

    def spec(self) -> EndpointSpec:
        return EndpointSpec("gated", "async", self.run)


def receiver_settings(**callbacks: Any) -> dict[str, Any]:
    port = free_port("127.0.0.1")
    return {
        "callbacks": {"public_url": f"http://127.0.0.1:{port}", "receiver_port": port, **callbacks},
        "poll": SLOW_POLLS,
    }


async def callback_stack(make_stack: StackFactory, gate: Gate, **settings: Any) -> Stack:
    return await make_stack([gate.spec()], settings={**receiver_settings(), **settings}, gateway_env=SECRETS)


async def submit(stub: pb_grpc.EndpointServiceStub, **request: Any) -> str:
    message = pb.SubmitAsyncRequest(endpoint_name="gated", request=pb.EndpointRequest(args_json='{"x": 1}', **request))
    return (await stub.SubmitAsync(message, timeout=10)).task_id


def wait(stub: pb_grpc.EndpointServiceStub, task_id: str, seconds: float = 10.0) -> Any:
    return stub.WaitAsyncTask(
        pb.WaitAsyncTaskRequest(task_id=task_id, timeout=duration_pb2.Duration(seconds=int(seconds))), timeout=30
    )


def submitted(stack: Stack) -> list[dict[str, Any]]:
    """The bodies of the gateway's POST /v1/async-tasks, as Launch got them."""
    return [json.loads(r.body) for r in stack.launch.records if r.method == "POST" and r.path == "/v1/async-tasks"]


def task_polls(stack: Stack) -> list[Any]:
    return [r for r in stack.launch.records if r.method == "GET" and r.path.startswith("/v1/async-tasks/")]


def callbacks_counted(gateway: GatewayServer, result: str) -> float:
    return gateway.metrics.task_callbacks.labels(result)._value.get()


async def test_a_callback_wakes_the_waiter_at_once(make_stack: StackFactory) -> None:
    gate = Gate()
    stack = await callback_stack(make_stack, gate)
    task_id = await submit(stack.stub)
    own = stack.gateway.settings.callbacks.public_url + "/v1/task-callbacks/c1."
    assert submitted(stack)[0]["callback_url"].startswith(own)
    waiter = asyncio.ensure_future(wait(stack.stub, task_id))
    await wait_for(lambda: len(task_polls(stack)) == 1, within=10, what="the wait's first poll")
    gate.open.set()
    response = (await waiter).response
    assert response.status == pb.TASK_STATUS_SUCCESS  # polling alone would still be PENDING: its next poll is 30 s away
    assert json.loads(response.result) == {"done": True, "x": 1}
    assert response.task_id == task_id
    assert len(task_polls(stack)) == 2  # the first look, and the one the callback asked for
    assert callbacks_counted(stack.gateway, "woke") == 1


async def test_the_callback_goes_on_to_the_callers_url_with_its_auth_and_its_task_id(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    received: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()

    async def callers_server(request: web.Request) -> web.Response:
        await received.put((request.headers.get("Authorization"), await request.json()))
        return web.json_response({})

    url = await raw_upstream(callers_server)
    gate = Gate()
    stack = await callback_stack(make_stack, gate)
    basic = pb.BasicCallbackAuth(username="cb-user", password="cb-pass")
    task_id = await submit(stack.stub, callback_url=f"{url}/hook?k=v", callback_auth_basic=basic)
    sent = submitted(stack)[0]
    assert url not in sent["callback_url"]  # Launch calls the gateway; the caller's URL is sealed, not sent
    assert sent["callback_auth"] == {"kind": "basic", "username": "cb-user", "password": "cb-pass"}
    gate.open.set()
    authorization, body = await asyncio.wait_for(received.get(), 10)
    assert authorization == "Basic " + base64.b64encode(b"cb-user:cb-pass").decode()
    # Launch's callback body, with the task_id the caller was given (a handle, not Launch's own id)
    assert body == {"result": json.dumps({"done": True, "x": 1}), "status_code": 200, "task_id": task_id}
    assert callbacks_counted(stack.gateway, "forwarded") == 1


async def test_a_failing_callers_url_is_retried_by_launch(
    make_stack: StackFactory, raw_upstream: RawUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        tries.append(request.path)
        return web.Response(status=503 if len(tries) == 1 else 200)

    url = await raw_upstream(flaky)
    gate = Gate()
    stack = await callback_stack(make_stack, gate)
    await submit(stack.stub, callback_url=f"{url}/hook-path?token=s3cret")
    gate.open.set()
    await wait_for(lambda: len(tries) == 2, within=10, what="Launch's second try, after the gateway answered 502")
    assert callbacks_counted(stack.gateway, "forward_failed") == 1
    assert callbacks_counted(stack.gateway, "forwarded") == 1
    logged = [r.getMessage() for r in caplog.records if "forwarded to" in r.getMessage()]
    assert logged == [f"callback forwarded to {url} answered HTTP 503"]  # scheme, host and port: no path or query


async def test_a_redirect_from_the_callers_url_is_not_followed(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    reached: list[str] = []

    async def inside(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.json_response({})

    hidden = await raw_upstream(inside)
    tries: list[int] = []

    async def redirecting(request: web.Request) -> web.Response:
        tries.append(1)
        raise web.HTTPTemporaryRedirect(f"{hidden}/internal")

    url = await raw_upstream(redirecting)
    gate = Gate()
    stack = await callback_stack(make_stack, gate)
    await submit(stack.stub, callback_url=f"{url}/hook")
    gate.open.set()
    await wait_for(lambda: callbacks_counted(stack.gateway, "forward_failed") == 3, within=10, what="Launch's 3 tries")
    assert len(tries) == 3
    assert reached == []  # the redirect's target was never called


async def post(url: str, body: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, await response.text()


async def test_only_urls_the_gateway_sealed_are_accepted(make_stack: StackFactory) -> None:
    gate = Gate()
    stack = await callback_stack(make_stack, gate)
    task_id = await submit(stack.stub)
    upstream_id = TaskHandles([SECRET.encode()]).verify(task_id).upstream_id
    waiter = asyncio.ensure_future(wait(stack.stub, task_id, seconds=2))
    await wait_for(lambda: len(task_polls(stack)) == 1, within=10, what="the wait's first poll")
    base = stack.gateway.settings.callbacks.public_url + "/v1/task-callbacks/"
    now = time.time()
    good = CallbackGrant("", "gated", "", now + 60)
    forged = [
        "c1.e30.AAAA",  # no valid MAC
        seal_grant(TaskHandles([b"another-secret-0123456789"]), good),  # sealed with a secret the gateway lacks
        seal_grant(TaskHandles([SECRET.encode()]), CallbackGrant("", "gated", "", now - 1)),  # expired
        TaskHandles([SECRET.encode()]).issue(TaskRef("", "gated", upstream_id)),  # a task handle is not one
    ]
    for token in forged:
        status, _ = await post(base + token, {"task_id": upstream_id, "result": "forged", "status_code": 200})
        assert status == 404, token
    valid = seal_grant(TaskHandles([SECRET.encode()]), good)
    assert (await post(base + valid, ["not", "an", "object"]))[0] == 400
    assert (await post(base + valid, {"task_id": "../x"}))[0] == 400
    assert len(task_polls(stack)) == 1  # nothing woke the loop
    assert callbacks_counted(stack.gateway, "refused") == len(forged) + 2
    # A sealed URL only makes the gateway look: the answer is Launch's own (the task still runs), never the body's.
    status, _ = await post(base + valid, {"task_id": upstream_id, "result": "forged", "status_code": 200})
    assert status == 200
    response = (await waiter).response
    assert response.status == pb.TASK_STATUS_STARTED
    assert not response.result
    assert len(task_polls(stack)) == 2
    gate.open.set()


def test_a_sealed_callback_url_opens_to_its_grant_only() -> None:
    handles = TaskHandles([SECRET.encode()])
    grant = CallbackGrant("team", "gated", "https://hooks.example.com/x?y=1", 2_000_000_000.0)
    token = seal_grant(handles, grant)
    assert open_grant(handles, token, now=1_999_999_999.0) == grant
    assert open_grant(handles, token, now=2_000_000_001.0) is None  # expired
    payload = token.split(".")[1]
    assert open_grant(handles, token.replace(payload, payload[:-1] + ("A" if payload[-1] != "A" else "B")), 0) is None


async def test_a_callback_on_one_replica_wakes_a_waiter_on_another(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    gate = Gate()
    env = {**SECRETS, "LAUNCH_GATEWAY_REDIS_URL": redis_server.url}
    limits = {"limits": {"backend": "redis"}}
    stack = await make_stack([gate.spec()], settings={**receiver_settings(), **limits}, gateway_env=env)
    values = {
        "server": {"port": 0},
        "metrics": {"port": 0},
        "upstream": {"url": stack.launch.url},
        **receiver_settings(),
        **limits,
    }
    async with contextlib.AsyncExitStack() as cleanup:
        other = GatewayServer(build_settings(values), env=env)
        await other.start()
        cleanup.push_async_callback(other.stop, 0)
        channel = grpc.aio.insecure_channel(other.address)
        cleanup.push_async_callback(channel.close)
        await asyncio.wait_for(other.wakeups.subscribed.wait(), 10)
        task_id = await submit(stack.stub)  # Launch will call the first gateway's receiver
        waiter = asyncio.ensure_future(wait(pb_grpc.EndpointServiceStub(channel), task_id))
        await wait_for(lambda: len(task_polls(stack)) == 1, within=10, what="the other replica's first poll")
        gate.open.set()
        response = (await waiter).response
        assert response.status == pb.TASK_STATUS_SUCCESS
        assert callbacks_counted(stack.gateway, "woke") == 1
        assert callbacks_counted(other, "woke") == 0  # the callback reached only the first replica


async def test_without_the_callback_hook_launch_gets_the_callers_url(raw_upstream: RawUpstream) -> None:
    submitted: list[dict[str, Any]] = []
    record = {"id": "end_1", "name": "plain", "endpoint_type": "async", "status": "READY", "post_inference_hooks": None}

    async def launch(request: web.Request) -> web.Response:
        if request.path == "/v1/model-endpoints":
            return web.json_response({"model_endpoints": [record]})
        submitted.append(await request.json())
        return web.json_response({"task_id": "task-1"})

    url = await raw_upstream(launch)
    values = {"server": {"port": 0}, "metrics": {"enabled": False}, "upstream": {"url": url}, **receiver_settings()}
    async with (
        GatewayServer(build_settings(values), env=SECRETS) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        stub = pb_grpc.EndpointServiceStub(channel)
        request = pb.EndpointRequest(args_json="{}", callback_url="https://hooks.example.com/x")
        await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="plain", request=request), timeout=10)
        record["post_inference_hooks"] = ["callback"]
        record["default_callback_url"] = "https://owner.example.com/hook"
        gateway.directory.forget("plain")
        await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="plain", request=request), timeout=10)
        gateway.directory.forget("plain")
        bare = pb.EndpointRequest(args_json="{}")
        await stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="plain", request=bare), timeout=10)
    assert submitted[0]["callback_url"] == "https://hooks.example.com/x"  # no hook: Launch sends no callback
    assert "/v1/task-callbacks/c1." in submitted[1]["callback_url"]  # the hook, and the caller's URL to pass on
    assert "callback_url" not in submitted[2]  # the endpoint's own default callback stays the owner's


def test_the_receiver_needs_the_handle_secrets_to_seal_its_urls() -> None:
    values = {"server": {"port": 0}, "metrics": {"port": 0}, **receiver_settings()}
    with pytest.raises(ConfigError) as raised:
        GatewayServer(build_settings(values), env={})
    assert "callbacks.public_url" in str(raised.value)
    assert "LAUNCH_GATEWAY_HANDLE_SECRETS" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        build_settings({"callbacks": {"public_url": "https://gw.example.com/cb?x=1"}})
    assert "callbacks.public_url: must be an http:// or https:// URL with no query" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        build_settings(
            {"server": {"workers": 2}, "callbacks": {"public_url": "https://gw.example.com", "receiver_port": 0}}
        )
    assert "callbacks.receiver_port: must be a fixed port when server.workers > 1" in str(raised.value)
