"""Raw HTTP/2 abuse: malformed frames, wrong content-type, invalid UTF-8, streams never read. Each gets a
clean status and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import shutil
import struct
from pathlib import Path

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import Stack
from tests.e2e.test_tools import run

PREDICT = "/launch_gateway.v1.EndpointService/Predict"
ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))


async def still_serving(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        reply = await pb_grpc.EndpointServiceStub(channel).Predict(ECHO, timeout=10)
    assert reply.response.status == pb.TASK_STATUS_SUCCESS


async def nghttp(stack: Stack, body: bytes, tmp_path: Path, content_type: str = "application/grpc") -> str:
    """POST raw bytes to Predict over HTTP/2 with nghttp; returns its verbose output (headers, trailers)."""
    tool = shutil.which("nghttp")
    assert tool, "nghttp comes from the Debian package nghttp2-client (make test installs it)"
    data = tmp_path / "body.bin"
    data.write_bytes(body)
    url = f"http://{stack.gateway.address}{PREDICT}"
    headers = (
        "-H",
        ":method: POST",
        "-H",
        f"content-type: {content_type}",
        "-H",
        "te: trailers",
        "-H",
        "grpc-timeout: 2S",
    )
    _code, out, err = await run(tool, "-v", "-t", "5", *headers, "-d", str(data), url, within=20)
    return out + err


def frame(payload: bytes, declared: int | None = None) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload) if declared is None else declared) + payload


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (frame(b"\xff\xff\xff"), "grpc-status: 3"),  # corrupt protobuf: INVALID_ARGUMENT
        (frame(b"\x0a\x03\xff\xfe\xfd"), "grpc-status: 3"),  # invalid UTF-8 in endpoint_name
        (frame(b"\x0a\x04echo", declared=1000), "grpc-status:"),  # the frame says more than is sent
        (b"\x01\x00", "grpc-status:"),  # a truncated frame header
    ],
    ids=["corrupt-protobuf", "invalid-utf8", "short-frame", "truncated-header"],
)
async def test_malformed_frames_get_a_status_and_the_gateway_keeps_serving(
    stack: Stack, tmp_path: Path, body: bytes, expected: str
) -> None:
    output = await nghttp(stack, body, tmp_path)
    assert expected in output
    assert "grpc-status: 2" not in output  # never UNKNOWN
    await still_serving(stack)


async def test_wrong_content_type_is_refused_cleanly(stack: Stack, tmp_path: Path) -> None:
    output = await nghttp(stack, frame(ECHO.SerializeToString()), tmp_path, content_type="text/plain")
    assert ":status: 415" in output or "grpc-status:" in output
    await still_serving(stack)


async def test_invalid_utf8_names_the_request(stack: Stack) -> None:
    raw = stack.channel.unary_unary(PREDICT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\x0a\x03\xff\xfe\xfd", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("request: not a valid launch_gateway.v1.PredictRequest")


async def test_streams_that_are_never_read_do_not_starve_other_callers(stack: Stack) -> None:
    request = pb.StreamPredictRequest(
        endpoint_name="count", request=pb.EndpointRequest(args_json='{"n": 1000000, "interval": 0.01}')
    )
    async with grpc.aio.insecure_channel(stack.gateway.address) as greedy:
        stub = pb_grpc.EndpointServiceStub(greedy)
        calls = [stub.StreamPredict(request, timeout=30) for _ in range(50)]
        await asyncio.gather(*(call.read() for call in calls))  # all open, none read from here on
        await asyncio.sleep(0.5)
        await still_serving(stack)
        for call in calls:
            call.cancel()
