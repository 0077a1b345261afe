"""Endpoint specs (`NAME=KIND:module:function`) and the lookup routes clients call before predicting."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from launch_gateway.testing.local_launch import (
    EndpointSpec,
    LocalLaunchServer,
    builtin_endpoints,
    describe_endpoints,
    examples,
    parse_endpoint_spec,
)

NOT_FOUND = {"detail": "The specified endpoint could not be found."}


@pytest.mark.parametrize(
    ("text", "name", "kind", "function"),
    [
        pytest.param("e=sync:launch_gateway.testing.local_launch.examples:echo", "e", "sync", examples.echo, id="sync"),
        pytest.param(
            "late=async:launch_gateway.testing.local_launch.examples:echo_async",
            "late",
            "async",
            examples.echo_async,
            id="async",
        ),
        pytest.param(
            "n=streaming:launch_gateway.testing.local_launch.examples:count",
            "n",
            "streaming",
            examples.count,
            id="streaming",
        ),
        pytest.param(
            " spaced = sync : launch_gateway.testing.local_launch.examples : fail ",
            "spaced",
            "sync",
            examples.fail,
            id="spaces",
        ),
    ],
)
def test_parse_endpoint_spec_imports_the_function(text: str, name: str, kind: str, function: Any) -> None:
    assert parse_endpoint_spec(text) == EndpointSpec(name, kind, function)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("echo", "must look like NAME=KIND:module.path:function", id="no-equals"),
        pytest.param("echo=sync:launch_gateway.testing.local_launch.examples", "must look like", id="no-function"),
        pytest.param("=sync:launch_gateway.testing.local_launch.examples:echo", "must look like", id="empty-name"),
        pytest.param(
            "e=batch:launch_gateway.testing.local_launch.examples:echo", "unknown kind 'batch'", id="bad-kind"
        ),
        pytest.param("e=sync:no_such_module_xyz:echo", "cannot import module 'no_such_module_xyz'", id="no-module"),
        pytest.param(
            "e=sync:launch_gateway.testing.local_launch.examples:nope", "has no attribute 'nope'", id="no-attribute"
        ),
        pytest.param(
            "e=sync:launch_gateway.testing.local_launch.examples:__doc__", "is not callable", id="not-callable"
        ),
        pytest.param(
            "e=streaming:launch_gateway.testing.local_launch.examples:echo", "needs a generator", id="stream-no-gen"
        ),
        pytest.param(
            "e=sync:launch_gateway.testing.local_launch.examples:count", "declare it as streaming", id="gen-not-stream"
        ),
        pytest.param(
            "bad name=sync:launch_gateway.testing.local_launch.examples:echo", "invalid endpoint name", id="bad-name"
        ),
    ],
)
def test_parse_endpoint_spec_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint_spec(text)


def test_builtin_endpoints_and_their_descriptions(server: LocalLaunchServer) -> None:
    assert [spec.name for spec in builtin_endpoints()] == [
        "echo",
        "describe",
        "fail",
        "sleep",
        "echo-async",
        "fail-async",
        "count",
        "read-url",
        "status",
        "status-async",
        "refuse-stream",
    ]
    assert describe_endpoints(server)[0] == "echo (sync)"
    assert "count (streaming)" in describe_endpoints(server)
    assert "echo-async (async)" in describe_endpoints(server)


async def test_lookup_by_name_returns_the_record(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{server.url}/v1/model-endpoints", params={"name": "count"}) as response:
        assert response.status == 200
        body = await response.json()
    [record] = body["model_endpoints"]
    assert record["id"] == server.endpoint_id("count")
    assert record["id"].startswith("end_")
    assert record["name"] == "count"
    assert record["endpoint_type"] == "streaming"
    assert record["status"] == "READY"


async def test_lookup_of_an_unknown_name_is_an_empty_list(
    server: LocalLaunchServer, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{server.url}/v1/model-endpoints", params={"name": "nope"}) as response:
        assert response.status == 200
        assert await response.json() == {"model_endpoints": []}


async def test_lookup_by_id(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    endpoint_id = server.endpoint_id("echo-async")
    async with client.get(f"{server.url}/v1/model-endpoints/{endpoint_id}") as response:
        assert response.status == 200
        record = await response.json()
    assert (record["id"], record["name"], record["endpoint_type"]) == (endpoint_id, "echo-async", "async")


async def test_lookup_of_an_unknown_id_is_404(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{server.url}/v1/model-endpoints/end_nope") as response:
        assert response.status == 404
        assert await response.json() == {"detail": "Model Endpoint end_nope  was not found."}  # two spaces, as ME


async def test_another_teams_key_does_not_see_an_owned_endpoint(client: aiohttp.ClientSession) -> None:
    specs = [EndpointSpec("mine", "sync", examples.echo, owner="team-a"), EndpointSpec("shared", "sync", examples.echo)]
    async with LocalLaunchServer(specs, api_keys=["key-a", "key-b"], teams={"key-a": "team-a"}) as server:
        for key, names in (("key-a", ["mine", "shared"]), ("key-b", ["shared"])):
            headers = {"Authorization": aiohttp.encode_basic_auth(key, "")}
            async with client.get(f"{server.url}/v1/model-endpoints", headers=headers) as response:
                assert [e["name"] for e in (await response.json())["model_endpoints"]] == names
        headers = {"Authorization": aiohttp.encode_basic_auth("key-b", "")}
        params = {"model_endpoint_id": server.endpoint_id("mine")}
        async with client.post(f"{server.url}/v1/sync-tasks", params=params, json={}, headers=headers) as response:
            assert (response.status, await response.json()) == (404, NOT_FOUND)


async def test_ids_are_stable_across_servers() -> None:
    async with LocalLaunchServer() as first, LocalLaunchServer() as second:
        assert first.endpoint_id("echo") == second.endpoint_id("echo")
        assert first.endpoint_id("echo") != first.endpoint_id("describe")


async def test_unknown_route_is_a_fastapi_style_404(server: LocalLaunchServer, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{server.url}/v1/nothing-here") as response:
        assert response.status == 404
        assert await response.json() == {"detail": "Not Found"}
