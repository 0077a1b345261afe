"""A caller's x-request-id cannot forge log fields: ids are checked, and human log values are escaped.

The request id is the one piece of caller input in the access line. With `log.format = "human"` the
line is `key=value` pairs, so an id with spaces could add pairs of its own (`grpc_code=...`,
`tenant=admin`). An id outside `[A-Za-z0-9._:-]{1,128}` is replaced by a generated one, and every
human value that is not plain is written as a JSON string.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import grpc
import pytest

from launch_gateway.server.observability.logs import HumanFormatter
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import Stack
from tests.serving import ServeFactory, serve_process  # noqa: F401 (a fixture)

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
FORGED = "r1 grpc_code=PermissionDenied tenant=admin"
GENERATED = re.compile(r"[0-9a-f]{32}")
# key=value, the value bare or a JSON string (with escapes).
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def access_fields(line: str) -> list[tuple[str, str]]:
    """The key=value pairs after the message of a human access line."""
    _, _, fields = line.rstrip("\n").partition(": rpc ")
    pairs = PAIR.findall(fields)
    assert " ".join(f"{k}={v}" for k, v in pairs) == fields, f"not only key=value pairs: {fields!r}"
    return pairs


async def returned_id(stub: pb_grpc.EndpointServiceStub, request_id: str) -> str:
    call = stub.Predict(ECHO, timeout=10, metadata=(("x-request-id", request_id),))
    await call
    return str(dict(await call.trailing_metadata() or ())["x-request-id"])


async def test_a_request_id_with_spaces_cannot_forge_fields_in_human_logs(
    serve_process: ServeFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nport = 0\n[metrics]\nport = 0\n[log]\nformat = "human"\n[auth]\nopen = true\n')
    async with LocalLaunchServer() as launch:
        served = await serve_process("--config", str(config), "--upstream", launch.url)
        async with grpc.aio.insecure_channel(served.address) as channel:
            replaced = await returned_id(pb_grpc.EndpointServiceStub(channel), FORGED)
        assert await served.stop() == 0
        sent = [r.headers.get("x-request-id") for r in launch.records if r.path == "/v1/sync-tasks"]
    assert GENERATED.fullmatch(replaced), replaced  # the caller's id was not usable: a new one
    assert sent == [replaced]  # and that is the one sent upstream
    lines = [line for line in served.stderr if "launch_gateway.access: rpc " in line]
    assert len(lines) == 1, served.logs
    fields = access_fields(lines[0])
    names = [name for name, _ in fields]
    assert len(names) == len(set(names)), fields
    assert dict(fields)["grpc_code"] == "OK"
    assert dict(fields)["request_id"] == replaced
    assert "tenant" not in dict(fields)  # open mode: no tenant, and none forged
    assert "admin" not in served.logs


@pytest.mark.parametrize(
    "request_id",
    [
        FORGED,
        'r1"x',
        "r1=x",
        "a" * 129,
        "r1\\x",
        "r1/..",
        "",
    ],
    ids=["spaces", "quote", "equals", "too-long", "backslash", "slash", "empty"],
)
async def test_an_unusable_request_id_is_replaced(stack: Stack, request_id: str) -> None:
    assert GENERATED.fullmatch(await returned_id(stack.stub, request_id))


@pytest.mark.parametrize(
    "request_id", ["req-42", "0f8e2c1a-7f0b-4c1e-9a1d-2b3c4d5e6f70", "svc:checkout.v2_7", "a" * 128]
)
async def test_a_plain_request_id_is_kept(stack: Stack, request_id: str) -> None:
    assert await returned_id(stack.stub, request_id) == request_id


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("req-42", "req-42"),
        ("10.0.0.1:443", "10.0.0.1:443"),
        (12.5, "12.5"),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("line\nbreak", '"line\\nbreak"'),
        ("caf\u00e9", '"caf\\u00e9"'),
    ],
    ids=["plain", "address", "number", "space", "equals", "quotes", "newline", "non-ascii"],
)
def test_human_log_values_that_are_not_plain_are_json_strings(value: object, written: str) -> None:
    record = logging.LogRecord("launch_gateway.access", logging.INFO, __file__, 1, "rpc", None, None)
    record.fields = {"method": "Predict", "request_id": value}
    line = HumanFormatter().format(record)
    assert line.endswith(f": rpc method=Predict request_id={written}")
