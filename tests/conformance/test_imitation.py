"""The imitation against model-engine: the same HTTP request to both, and their answers compared.

Each test sends one request to model-engine's app (through `raw`, Basic `test_user_id:`) and the
same to a `LocalLaunchServer` whose endpoints stand where model-engine's fixtures do, then compares
status, the headers that matter and the JSON bodies (issue 12 §2, last bullet). The callbacks are
compared in test_semantics.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from launch_gateway.testing.local_launch import EndpointSpec, LocalLaunchServer
from launch_gateway.testing.local_launch.examples import answer_status, answer_status_async, count, echo_async
from tests.conformance.conftest import ASYNC, OWNER, STREAMING, SYNC, Control, ModelEngine

OTHER_TEAM = "another_team"


def echo_body(**kwargs: Any) -> Any:
    return kwargs


@dataclass
class Pair:
    """Where to send the same request: model-engine's app and the imitation; endpoint ids by name."""

    session: aiohttp.ClientSession
    me_url: str
    me_ids: dict[str, str]
    imitation: LocalLaunchServer

    def url(self, which: str, path: str, endpoint: str | None) -> str:
        base = self.me_url if which == "me" else self.imitation.url
        if endpoint is None:
            return base + path
        endpoint_id = self.me_ids[endpoint] if which == "me" else self.imitation.endpoint_id(endpoint)
        return f"{base}{path}?model_endpoint_id={endpoint_id}"

    async def both(
        self,
        method: str,
        path: str,
        endpoint: str | None,
        body: bytes | None = None,
        authorization: str | None = None,
    ) -> dict[str, tuple[int, dict[str, str], bytes]]:
        """The answer of each to one request: status, lower-cased headers, body."""
        answers = {}
        for which in ("me", "imitation"):
            headers = {"Content-Type": "application/json"}
            if authorization is not None:
                headers["Authorization"] = authorization
            async with self.session.request(
                method, self.url(which, path, endpoint), data=body, headers=headers
            ) as response:
                answers[which] = (
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    await response.read(),
                )
        return answers


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


OWNER_AUTH = basic(OWNER)


@pytest.fixture
async def pair(model_engine: ModelEngine, control: Control) -> AsyncIterator[Pair]:
    endpoints = [
        # the names of model-engine's fixture records, so the same body means the same thing
        EndpointSpec(SYNC, "sync", echo_body, owner=OWNER),
        EndpointSpec(ASYNC, "async", echo_async, owner=OWNER),
        EndpointSpec(STREAMING, "streaming", count, owner=OWNER),
        EndpointSpec("status", "sync", answer_status, owner=OWNER),
        EndpointSpec("status-async", "async", answer_status_async, owner=OWNER),
    ]
    async with (
        aiohttp.ClientSession() as session,
        LocalLaunchServer(endpoints, api_keys=[OWNER, OTHER_TEAM]) as imitation,
    ):
        async with session.get(model_engine.pod_url + "/control/endpoints") as response:
            me_ids = {e["name"]: e["id"] for e in await response.json()}
        yield Pair(session, model_engine.app_url, me_ids, imitation)


def same_json(answers: dict[str, tuple[int, dict[str, str], bytes]]) -> Any:
    (me_status, _, me_body), (im_status, _, im_body) = answers["me"], answers["imitation"]
    assert (im_status, json.loads(im_body)) == (me_status, json.loads(me_body))
    return json.loads(me_body)


# --- 422 in pydantic 2's shape, and the check order ----------------------------------------

BAD_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"args": 1,', id="cut-json"),
    pytest.param(b"[1]", id="list"),
    pytest.param(b'{"url": 1, "callback_url": 2, "return_pickled": "x"}', id="wrong-types"),
    pytest.param(b'{"return_pickled": [1]}', id="bool-type"),
    pytest.param(b'{"callback_auth": 5}', id="auth-not-an-object"),
    pytest.param(b'{"callback_auth": {}}', id="auth-without-kind"),
    pytest.param(b'{"callback_auth": {"kind": "x"}}', id="auth-unknown-kind"),
    pytest.param(b'{"callback_auth": {"kind": "basic"}}', id="basic-without-fields"),
    pytest.param(b'{"callback_auth": {"kind": "mtls", "cert": 1}}', id="mtls-bad-cert-no-key"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_a_bad_body_gets_the_same_422(pair: Pair, body: bytes) -> None:
    answers = await pair.both("POST", "/v1/sync-tasks", SYNC, body, OWNER_AUTH)
    assert same_json(answers)["detail"]


async def test_a_missing_endpoint_id_and_a_bad_body_are_one_422(pair: Pair) -> None:
    answers = await pair.both("POST", "/v1/sync-tasks", None, b"[1]", OWNER_AUTH)
    assert len(same_json(answers)["detail"]) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [pytest.param(b"not json", 422, id="not-json-before-auth"), pytest.param(b"[1]", 401, id="fields-after-auth")],
)
async def test_json_is_decoded_before_auth_and_validated_after(pair: Pair, body: bytes, status: int) -> None:
    answers = await pair.both("POST", "/v1/sync-tasks", SYNC, body)
    assert same_json(answers)
    assert answers["me"][0] == status


# --- the 401 -------------------------------------------------------------------------------

AUTHS = [
    pytest.param(None, id="none"),
    pytest.param("Token abc", id="other-scheme"),
    pytest.param("Basic !!!", id="basic-not-base64"),
    pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="basic-without-colon"),
]


@pytest.mark.parametrize("authorization", AUTHS)
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/sync-tasks"), ("GET", "/v1/async-tasks/abc")])
async def test_the_401_and_its_www_authenticate(pair: Pair, authorization: str | None, method: str, path: str) -> None:
    endpoint = SYNC if method == "POST" else None
    answers = await pair.both(method, path, endpoint, b"{}" if method == "POST" else None, authorization)
    assert same_json(answers)
    assert answers["me"][0] == 401
    assert answers["imitation"][1]["www-authenticate"] == answers["me"][1]["www-authenticate"]


# --- task bodies ----------------------------------------------------------------------------


async def test_a_pending_task_carries_null_result_traceback_and_status_code(pair: Pair) -> None:
    answers = {}
    for which in ("me", "imitation"):
        async with pair.session.post(
            pair.url(which, "/v1/async-tasks", ASYNC),
            json={"args": {"delay": 5}},
            headers={"Authorization": OWNER_AUTH},
        ) as created:
            task_id = (await created.json())["task_id"]
        async with pair.session.get(
            pair.url(which, f"/v1/async-tasks/{task_id}", None), headers={"Authorization": OWNER_AUTH}
        ) as response:
            body = await response.json()
        answers[which] = {k: v for k, v in body.items() if k not in ("task_id", "status")}
    assert answers["imitation"] == answers["me"] == {"result": None, "traceback": None, "status_code": None}


async def test_an_async_task_whose_container_answered_500_is_success_500(pair: Pair, control: Control) -> None:
    await control.script("predict", status=500, body={"error": "model crashed"})
    async with pair.session.post(
        pair.url("me", "/v1/async-tasks", ASYNC), json={"args": {}}, headers={"Authorization": OWNER_AUTH}
    ) as created:
        me_id = (await created.json())["task_id"]
    await control.task(me_id, "run")
    async with pair.session.get(
        pair.url("me", f"/v1/async-tasks/{me_id}", None), headers={"Authorization": OWNER_AUTH}
    ) as response:
        me_task = await response.json()

    async with pair.session.post(
        pair.url("imitation", "/v1/async-tasks", "status-async"),
        json={"args": {"status_code": 500, "body": {"error": "model crashed"}}},
        headers={"Authorization": OWNER_AUTH},
    ) as created:
        im_id = (await created.json())["task_id"]
    im_task = await pair.imitation.wait_for_task(im_id)
    assert {**im_task, "task_id": None} == {**me_task, "task_id": None}
    assert (me_task["status"], me_task["status_code"]) == ("SUCCESS", 500)


async def test_a_task_need_not_pass_through_started(pair: Pair, control: Control) -> None:
    # model-engine: a task that finished between two polls was never seen STARTED
    async with pair.session.post(
        pair.url("me", "/v1/async-tasks", ASYNC), json={"args": {}}, headers={"Authorization": OWNER_AUTH}
    ) as created:
        me_id = (await created.json())["task_id"]
    me_seen = [(await control.task(me_id, "run"))["status"]]
    async with LocalLaunchServer([EndpointSpec(ASYNC, "async", echo_async)], track_started=False) as untracked:
        async with pair.session.post(
            f"{untracked.url}/v1/async-tasks?model_endpoint_id={untracked.endpoint_id(ASYNC)}",
            json={"args": {"delay": 0.3}},
        ) as created:
            im_id = (await created.json())["task_id"]
        async with pair.session.get(f"{untracked.url}/v1/async-tasks/{im_id}") as response:
            im_seen = [(await response.json())["status"]]
        im_seen.append((await untracked.wait_for_task(im_id))["status"])
    assert me_seen == ["SUCCESS"]
    assert im_seen == ["PENDING", "SUCCESS"]


# --- owners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "body"),
    [
        pytest.param("POST", "/v1/sync-tasks", SYNC, b"{}", id="sync"),
        pytest.param("POST", "/v1/async-tasks", ASYNC, b"{}", id="async"),
        pytest.param("POST", "/v1/streaming-tasks", STREAMING, b"{}", id="stream"),
        pytest.param("GET", f"/v1/model-endpoints?name={SYNC}", None, None, id="lookup-by-name"),
        pytest.param("GET", "/v1/model-endpoints", None, None, id="list"),
    ],
)
async def test_another_teams_key_does_not_see_the_endpoint(
    pair: Pair, method: str, path: str, endpoint: str | None, body: bytes | None
) -> None:
    answers = await pair.both(method, path, endpoint, body, basic(OTHER_TEAM))
    same_json(answers)


async def test_another_teams_key_gets_404_for_the_endpoint_by_id(pair: Pair) -> None:
    answers = {}
    for which, endpoint_id in (("me", pair.me_ids[SYNC]), ("imitation", pair.imitation.endpoint_id(SYNC))):
        base = pair.me_url if which == "me" else pair.imitation.url
        async with pair.session.get(
            f"{base}/v1/model-endpoints/{endpoint_id}", headers={"Authorization": basic(OTHER_TEAM)}
        ) as response:
            detail = (await response.json())["detail"]
            answers[which] = (response.status, detail.replace(endpoint_id, "<id>"))
    assert answers["imitation"] == answers["me"]


# --- sync calls that the container answers otherwise -----------------------------------------


async def test_a_sync_call_on_a_streaming_endpoint_goes_to_its_predict_route(pair: Pair, control: Control) -> None:
    # model-engine posts it to the pod's /predict; the imitation's streaming endpoint has no
    # predict function, so it answers as a container without that route: our pod, scripted so.
    await control.script("predict", status=404, body={"detail": "Not Found"})
    answers = await pair.both("POST", "/v1/sync-tasks", STREAMING, b'{"args": {"n": 2}}', OWNER_AUTH)
    body = same_json(answers)
    assert (body["status"], body["status_code"]) == ("FAILURE", 404)


SYNC_STATUSES = [
    pytest.param(400, {"error": "prompt too long"}, id="400-is-launchs-400"),
    pytest.param(500, {"error": "crash"}, id="500-without-a-traceback"),
    pytest.param(500, {"detail": {"traceback": "Trace!"}}, id="500-with-a-traceback"),
    pytest.param(502, ["a"], id="502-not-an-object"),
    pytest.param(504, {"detail": "gone"}, id="504-with-a-text-detail"),
]


@pytest.mark.parametrize(("status", "body"), SYNC_STATUSES)
async def test_a_sync_call_whose_container_answered_non_2xx(
    pair: Pair, control: Control, status: int, body: Any
) -> None:
    await control.script("predict", status=status, body=body)
    answers = {}
    for which, endpoint, args in (
        ("me", SYNC, {}),
        ("imitation", "status", {"status_code": status, "body": body}),
    ):
        async with pair.session.post(
            pair.url(which, "/v1/sync-tasks", endpoint), json={"args": args}, headers={"Authorization": OWNER_AUTH}
        ) as response:
            answers[which] = (response.status, await response.json())
    assert answers["imitation"] == answers["me"]


@pytest.mark.parametrize("status", [429, 503])
async def test_a_throttled_sync_endpoint_is_failure_with_its_status(pair: Pair, control: Control, status: int) -> None:
    # model-engine retries for about 10 s first; the imitation answers at once.
    await control.script("predict", status=status, body={"error": "busy"}, times=None)
    answers = {}
    for which, endpoint, args in (
        ("me", SYNC, {}),
        ("imitation", "status", {"status_code": status, "body": {"error": "busy"}}),
    ):
        async with pair.session.post(
            pair.url(which, "/v1/sync-tasks", endpoint), json={"args": args}, headers={"Authorization": OWNER_AUTH}
        ) as response:
            answers[which] = (response.status, await response.json())
    assert answers["imitation"] == answers["me"]
    assert answers["me"][1]["status"] == "FAILURE"


# --- streams the container refused ----------------------------------------------------------


async def stream_body(session: aiohttp.ClientSession, url: str, args: Any) -> tuple[int, str, bytes]:
    async with session.post(url, json={"args": args}, headers={"Authorization": OWNER_AUTH}) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def test_a_stream_the_model_refused_with_400_is_an_empty_clean_stream(pair: Pair, control: Control) -> None:
    await control.script("stream", status=400, body={"error": "prompt too long"})
    me = await stream_body(pair.session, pair.url("me", "/v1/streaming-tasks", STREAMING), {})
    async with LocalLaunchServer() as imitation:  # its built-in refuse-stream endpoint
        url = f"{imitation.url}/v1/streaming-tasks?model_endpoint_id={imitation.endpoint_id('refuse-stream')}"
        im = await stream_body(pair.session, url, {"status_code": 400, "body": {"error": "prompt too long"}})
    assert me[0] == im[0] == 200
    assert me[1].startswith("text/event-stream")
    assert im[1].startswith("text/event-stream")
    assert me[2] == im[2] == b""
