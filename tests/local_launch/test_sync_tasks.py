"""`POST /v1/sync-tasks`: result shapes, model failures, bad requests, pickles, URL inputs, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer

from .harness import call, serve

SYNC = "/v1/sync-tasks"


async def test_success_wraps_the_value_as_json_text(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    status, body = await call(client, server, SYNC, "echo", {"args": {"x": [1, 2], "y": "z"}})
    assert status == 200
    assert body == {
        "status": "SUCCESS",
        "result": {"result": json.dumps({"x": [1, 2], "y": "z"})},
        "traceback": None,
        "status_code": 200,
    }


async def test_argument_types_survive(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    _, body = await call(client, server, SYNC, "describe", {"args": {"n": 3, "f": 1.5, "s": "3", "b": True}})
    assert json.loads(body["result"]["result"]) == {
        "n": {"type": "int", "value": 3},
        "f": {"type": "float", "value": 1.5},
        "s": {"type": "str", "value": "3"},
        "b": {"type": "bool", "value": True},
    }


async def test_no_inputs_calls_the_function_without_arguments(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    _, body = await call(client, server, SYNC, "echo", {"return_pickled": False})
    assert body["result"] == {"result": "{}"}


async def test_model_failure_is_http_200_with_a_traceback(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    status, body = await call(client, server, SYNC, "fail", {"args": {"message": "bad input"}})
    assert status == 200
    assert body["status"] == "FAILURE"
    assert body["result"] is None
    assert body["status_code"] == 500
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert body["traceback"].rstrip().endswith("ValueError: bad input")
    assert "examples.py" in body["traceback"]


async def test_non_object_args_fail_like_launchs_predict_fn_kwargs(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    status, body = await call(client, server, SYNC, "echo", {"args": [1, 2]})
    assert status == 200
    assert body["status"] == "FAILURE"
    assert "TypeError" in body["traceback"]


async def test_a_streaming_endpoint_answers_sync_with_all_its_events(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    _, body = await call(client, server, SYNC, "count", {"args": {"n": 3, "interval": 0}})
    assert body["status"] == "SUCCESS"
    assert json.loads(body["result"]["result"]) == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_return_pickled_gives_a_url_serving_the_pickle_without_auth(
    client: aiohttp.ClientSession,
) -> None:
    async with LocalLaunchServer(api_keys={"key"}) as server:
        status, body = await call(
            client,
            server,
            SYNC,
            "echo",
            {"args": {"a": 1}, "return_pickled": True},
            headers={"Authorization": aiohttp.encode_basic_auth("key", "")},
        )
        assert status == 200
        assert body["status"] == "SUCCESS"
        url = body["result"]["result_url"]
        assert url.startswith(f"{server.url}/v1/results/")
        assert url.endswith(".pkl")
        async with client.get(url) as response:  # no credentials, like a signed URL
            assert response.status == 200
            assert pickle.loads(await response.read()) == {"a": 1}


async def test_url_input_passes_the_fetched_bytes(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    data = b"some file contents\x00\xff"

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/file.bin", file)
    async with serve(app) as base:
        _, body = await call(client, server, SYNC, "read-url", {"url": f"{base}/file.bin"})
    assert body["status"] == "SUCCESS"
    assert json.loads(body["result"]["result"]) == {
        "length": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def test_an_unfetchable_url_is_a_model_failure(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    _, body = await call(client, server, SYNC, "read-url", {"url": f"{server.url}/v1/results/missing.pkl"})
    assert body["status"] == "FAILURE"
    assert "404" in body["traceback"]


@pytest.mark.parametrize(
    ("route", "endpoint", "serves"),
    [
        pytest.param("/v1/sync-tasks", "echo-async", "sync requests", id="sync-on-async"),
        pytest.param("/v1/async-tasks", "echo", "async requests", id="async-on-sync"),
        pytest.param("/v1/async-tasks", "count", "async requests", id="async-on-streaming"),
        pytest.param("/v1/streaming-tasks", "echo", "streaming requests", id="stream-on-sync"),
        pytest.param("/v1/streaming-tasks", "echo-async", "streaming requests", id="stream-on-async"),
    ],
)
async def test_wrong_endpoint_type_is_400(
    server: LocalLaunchServer, client: aiohttp.ClientSession, route: str, endpoint: str, serves: str
) -> None:
    status, body = await call(client, server, route, endpoint, {"args": {}})
    assert status == 400
    endpoint_id = server.endpoint_id(endpoint)
    assert body == {"detail": f"Unsupported inference type: Endpoint {endpoint_id} does not serve {serves}."}


@pytest.mark.parametrize("route", ["/v1/sync-tasks", "/v1/async-tasks", "/v1/streaming-tasks"])
async def test_unknown_endpoint_id_is_404(server: LocalLaunchServer, client: aiohttp.ClientSession, route: str) -> None:
    async with client.post(f"{server.url}{route}", params={"model_endpoint_id": "end_nope"}, json={}) as response:
        assert response.status == 404
        assert await response.json() == {"detail": "The specified endpoint could not be found."}


def _missing(*loc: str | int) -> dict[str, Any]:
    return {"loc": list(loc), "msg": "field required", "type": "value_error.missing"}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            b"not json",
            [
                {
                    "loc": ["body", 0],
                    "msg": "Expecting value: line 1 column 1 (char 0)",
                    "type": "value_error.jsondecode",
                }
            ],
            id="not-json",
        ),
        pytest.param(b"", [_missing("body")], id="empty"),
        pytest.param(
            b"[1, 2]",
            [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}],
            id="list",
        ),
        pytest.param(
            b'{"url": 5, "callback_url": []}',
            [
                {"loc": ["body", "url"], "msg": "str type expected", "type": "type_error.str"},
                {"loc": ["body", "callback_url"], "msg": "str type expected", "type": "type_error.str"},
            ],
            id="wrong-str-types",
        ),
        pytest.param(
            b'{"return_pickled": "maybe"}',
            [
                {
                    "loc": ["body", "return_pickled"],
                    "msg": "value could not be parsed to a boolean",
                    "type": "type_error.bool",
                }
            ],
            id="wrong-bool",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "basic", "username": "u"}}',
            [_missing("body", "callback_auth", "password")],
            id="basic-without-password",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "mtls"}}',
            [_missing("body", "callback_auth", "cert"), _missing("body", "callback_auth", "key")],
            id="mtls-without-cert-and-key",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "oauth"}}',
            [
                {
                    "loc": ["body", "callback_auth"],
                    "msg": ("No match for discriminator 'kind' and value 'oauth' (allowed values: 'basic', 'mtls')"),
                    "type": "value_error.discriminated_union.invalid_discriminator",
                }
            ],
            id="unknown-auth-kind",
        ),
    ],
)
async def test_invalid_body_is_422_in_pydantics_shape(
    server: LocalLaunchServer, client: aiohttp.ClientSession, body: bytes, errors: list[dict[str, Any]]
) -> None:
    async with client.post(
        f"{server.url}{SYNC}",
        params={"model_endpoint_id": server.endpoint_id("echo")},
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 422
        assert await response.json() == {"detail": errors}


async def test_missing_endpoint_id_is_422(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    status, body = await call(client, server, SYNC, None, {"args": {}})
    assert status == 422
    assert body == {"detail": [_missing("query", "model_endpoint_id")]}


async def test_unknown_launch_fields_are_ignored(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    body = {"args": {"a": 1}, "timeout_seconds": 5, "num_retries": 0, "destination_path": "/predict", "x": 1}
    status, answer = await call(client, server, SYNC, "echo", body)
    assert (status, answer["status"]) == (200, "SUCCESS")


async def test_client_disconnect_cancels_the_running_function(client: aiohttp.ClientSession) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with LocalLaunchServer([EndpointSpec("hang", "sync", hang)]) as server:
        request = asyncio.create_task(call(client, server, SYNC, "hang", {}))
        async with asyncio.timeout(5):
            await started.wait()
        request.cancel()  # closes the client's connection
        await asyncio.wait([request])
        async with asyncio.timeout(5):
            await cancelled.wait()
        record = await server.wait_for_record(lambda r: r.path == SYNC)
        assert await record.wait_done() == "disconnected"


async def test_a_stream_collected_by_sync_is_closed_when_the_client_leaves(
    client: aiohttp.ClientSession,
) -> None:
    first = asyncio.Event()
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            yield 0
            first.set()
            await asyncio.Event().wait()
            yield 1
        finally:
            closed.set()

    async with LocalLaunchServer([EndpointSpec("endless", "streaming", endless)]) as server:
        request = asyncio.create_task(call(client, server, SYNC, "endless", {}))
        async with asyncio.timeout(5):
            await first.wait()
        request.cancel()
        await asyncio.wait([request])
        async with asyncio.timeout(5):
            await closed.wait()
