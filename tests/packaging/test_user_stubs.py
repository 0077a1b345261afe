"""A service's own stubs, generated from protos/ as docs/other-languages.md says, load and work beside the SDK.

protoc registers each file in the process-wide descriptor pool under the path it was compiled with, and
the pool accepts a second copy of a file only under the same name with the same content. Our stubs are
compiled with `-Iprotos`, so they and the user's both register `launch_gateway/v1/endpoint_service.proto`,
identically. Compiled under another root (the old `-Igateway/_proto=protos`), ours registered
`gateway/_proto/launch_gateway/v1/endpoint_service.proto`: the same symbols under a second file name, so
whichever loaded second failed with "duplicate symbol 'launch_gateway.v1.TaskStatus'".
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: the user's stubs (package `user_stubs`, from the test's folder), then the
# SDK, then both in one call path against the gateway at argv[1].
USER_PROGRAM = """
import json, sys

import grpc

from user_stubs.launch_gateway.v1 import endpoint_service_pb2 as theirs
from launch_gateway import EndpointRequest, GatewayClient
from launch_gateway.v1 import endpoint_service_pb2 as ours

address = sys.argv[1]
facts = {"files": [theirs.__file__, ours.__file__], "names": [theirs.DESCRIPTOR.name, ours.DESCRIPTOR.name]}

# A message built with their module is read by ours, and back.
request = theirs.PredictRequest(endpoint_name="echo", request=theirs.EndpointRequest(args_json='{"n": 2}'))
read = ours.PredictRequest.FromString(request.SerializeToString())
facts["ours_read"] = [read.endpoint_name, read.request.args_json]
facts["round_trip"] = theirs.PredictRequest.FromString(read.SerializeToString()) == request

# Their messages on the wire to the gateway, then the SDK to the same gateway.
with grpc.insecure_channel(address) as channel:
    predict = channel.unary_unary(
        "/launch_gateway.v1.EndpointService/Predict",
        request_serializer=theirs.PredictRequest.SerializeToString,
        response_deserializer=theirs.PredictResponse.FromString,
    )
    reply = predict(request, timeout=30)
facts["theirs"] = [theirs.TaskStatus.Name(reply.response.status), json.loads(reply.response.result)]
with GatewayClient(address) as client:
    response = client.get_model_endpoint("echo").predict(EndpointRequest(args={"n": 2}))
facts["sdk"] = [response.status, json.loads(response.result)]
print(json.dumps(facts))
"""


async def run(*argv: str, cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"{argv[:3]} failed:\n{err.decode()}"
    return out.decode()


async def test_user_generated_stubs_and_the_sdk_work_in_one_interpreter(stack: Stack, tmp_path: Path) -> None:
    generated = tmp_path / "user_stubs"
    generated.mkdir()
    await run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iprotos",
        f"--python_out={generated}",
        f"--grpc_python_out={generated}",
        "protos/launch_gateway/v1/endpoint_service.proto",
        cwd=ROOT,
    )
    program = tmp_path / "user_program.py"
    program.write_text(USER_PROGRAM)
    facts = json.loads(await run(sys.executable, str(program), stack.gateway.address, cwd=tmp_path))

    theirs, ours = facts["files"]
    assert Path(theirs).is_relative_to(generated)
    assert not Path(ours).is_relative_to(tmp_path)  # two modules, one proto file
    assert facts["names"] == ["launch_gateway/v1/endpoint_service.proto"] * 2
    assert facts["ours_read"] == ["echo", '{"n": 2}']
    assert facts["round_trip"] is True
    assert facts["theirs"] == ["TASK_STATUS_SUCCESS", {"n": 2}]
    assert facts["sdk"] == ["SUCCESS", {"n": 2}]
