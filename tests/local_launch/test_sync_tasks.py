"""`POST /v1/sync-tasks`: result shapes, model failures, bad requests, pickles, URL inputs, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer
from launch_gateway.testing.local_launch.examples import count, echo

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


async def test_a_sync_call_on_a_streaming_endpoint_without_predict_is_the_containers_404(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    _, body = await call(client, server, SYNC, "count", {"args": {"n": 3, "interval": 0}})
    assert body == {"status": "FAILURE", "result": None, "traceback": '{"detail":"Not Found"}', "status_code": 404}


async def test_a_sync_call_on_a_streaming_endpoint_runs_its_predict(client: aiohttp.ClientSession) -> None:
    spec = EndpointSpec("chat", "streaming", count, predict=echo)
    async with LocalLaunchServer([spec]) as server:
        _, body = await call(client, server, SYNC, "chat", {"args": {"n": 3}})
    assert body["status"] == "SUCCESS"
    assert json.loads(body["result"]["result"]) == {"n": 3}


@pytest.mark.parametrize(
    ("status", "body", "traceback"),
    [
        pytest.param(429, None, "Too many concurrent requests", id="throttled-429"),
        pytest.param(503, None, "No healthy upstream", id="no-healthy-upstream-503"),
        pytest.param(500, {"detail": {"traceback": "Trace!"}}, "Trace!", id="500-with-a-traceback"),
        pytest.param(500, {"error": "x"}, "Failed to parse traceback", id="500-without"),
        pytest.param(502, ["a"], '{"result":"[\\"a\\"]"}', id="502-not-an-object"),
    ],
)
async def test_a_container_status_is_a_sync_failure_at_once(
    server: LocalLaunchServer, client: aiohttp.ClientSession, status: int, body: Any, traceback: str
) -> None:
    http, answer = await call(client, server, SYNC, "status", {"args": {"status_code": status, "body": body}})
    assert http == 200
    assert answer == {"status": "FAILURE", "result": None, "traceback": traceback, "status_code": status}


async def test_a_containers_400_is_launchs_invalid_request(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    http, answer = await call(client, server, SYNC, "status", {"args": {"status_code": 400, "body": {"e": "long"}}})
    assert (http, answer) == (400, {"detail": "Invalid request: {'e': 'long'}"})


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
        pytest.param("/v1/sync-tasks", "echo-async", "does not serve sync tasks", id="sync-on-async"),
        pytest.param("/v1/async-tasks", "echo", "is not an async endpoint", id="async-on-sync"),
        pytest.param("/v1/async-tasks", "count", "is not an async endpoint", id="async-on-streaming"),
        pytest.param("/v1/streaming-tasks", "echo", "is not a streaming endpoint", id="stream-on-sync"),
        pytest.param("/v1/streaming-tasks", "echo-async", "is not a streaming endpoint", id="stream-on-async"),
    ],
)
async def test_wrong_endpoint_type_is_400(
    server: LocalLaunchServer, client: aiohttp.ClientSession, route: str, endpoint: str, serves: str
) -> None:
    status, body = await call(client, server, route, endpoint, {"args": {}})
    assert status == 400
    endpoint_id = server.endpoint_id(endpoint)
    assert body == {"detail": f"Unsupported inference type: Endpoint {endpoint_id} {serves}."}


@pytest.mark.parametrize("route", ["/v1/sync-tasks", "/v1/async-tasks", "/v1/streaming-tasks"])
async def test_unknown_endpoint_id_is_404(server: LocalLaunchServer, client: aiohttp.ClientSession, route: str) -> None:
    async with client.post(f"{server.url}{route}", params={"model_endpoint_id": "end_nope"}, json={}) as response:
        assert response.status == 404
        assert await response.json() == {"detail": "The specified endpoint could not be found."}


def _missing(*loc: str | int, input_: Any = None) -> dict[str, Any]:
    return {"type": "missing", "loc": list(loc), "msg": "Field required", "input": input_}


def _not_a_string(value: Any, *loc: str | int) -> dict[str, Any]:
    return {"type": "string_type", "loc": list(loc), "msg": "Input should be a valid string", "input": value}


# pydantic 2's errors as FastAPI 0.135 writes them (tests/conformance/test_imitation.py compares
# more of them with model-engine's own answers).
@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            b"not json",
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting value"},
                }
            ],
            id="not-json",
        ),
        pytest.param(b"", [_missing("body")], id="empty"),
        pytest.param(
            b"[1, 2]",
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": [1, 2],
                }
            ],
            id="list",
        ),
        pytest.param(
            b'{"url": 5, "callback_url": []}',
            [_not_a_string(5, "body", "url"), _not_a_string([], "body", "callback_url")],
            id="wrong-str-types",
        ),
        pytest.param(
            b'{"return_pickled": "maybe"}',
            [
                {
                    "type": "bool_parsing",
                    "loc": ["body", "return_pickled"],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": "maybe",
                }
            ],
            id="wrong-bool",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "basic", "username": "u"}}',
            [_missing("body", "callback_auth", "basic", "password", input_={"kind": "basic", "username": "u"})],
            id="basic-without-password",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "mtls"}}',
            [
                _missing("body", "callback_auth", "mtls", "cert", input_={"kind": "mtls"}),
                _missing("body", "callback_auth", "mtls", "key", input_={"kind": "mtls"}),
            ],
            id="mtls-without-cert-and-key",
        ),
        pytest.param(
            b'{"callback_auth": {"kind": "oauth"}}',
            [
                {
                    "type": "union_tag_invalid",
                    "loc": ["body", "callback_auth"],
                    "msg": "Input tag 'oauth' found using 'kind' does not match any of the expected tags: "
                    "'basic', 'mtls'",
                    "input": {"kind": "oauth"},
                    "ctx": {"discriminator": "'kind'", "tag": "oauth", "expected_tags": "'basic', 'mtls'"},
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
