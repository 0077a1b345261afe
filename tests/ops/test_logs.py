"""One structured line per RPC, and a request id that follows the call across both hops."""

from __future__ import annotations

import io
import json
import logging
import sys

import grpc
import pytest

from launch_gateway.server.observability.logs import JsonFormatter, access, configure_logging, flush_logs
from launch_gateway.testing.local_launch import LocalLaunchServer
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import Stack, StackFactory
from tests.serving import ServeFactory

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "launch_gateway.access"]


async def test_each_rpc_logs_one_json_line(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="launch_gateway.access")
    await stack.stub.Predict(ECHO, timeout=10, metadata=(("x-request-id", "req-42"),))
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="missing", request=ECHO.request), timeout=10)
    ok, missing = access_lines(caplog)
    assert {k: ok[k] for k in ("message", "method", "grpc_code", "upstream_status", "request_id", "tenant")} == {
        "message": "rpc",
        "method": "Predict",
        "grpc_code": "OK",
        "upstream_status": "200",
        "request_id": "req-42",
        "tenant": "",
    }
    assert ok["endpoint"] == "other"  # not a configured name: bounded like the metrics label
    assert isinstance(ok["duration_ms"], float)
    assert missing["grpc_code"] == "NotFound"
    assert len(str(missing["request_id"])) == 32  # generated


async def test_request_id_is_returned_and_sent_upstream(stack: Stack) -> None:
    call = stack.stub.Predict(ECHO, timeout=10, metadata=(("x-request-id", "req-7"),))
    await call
    assert dict(await call.trailing_metadata() or ())["x-request-id"] == "req-7"  # a unary answer's trailers
    record = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert record.headers["x-request-id"] == "req-7"
    generated = stack.stub.Predict(ECHO, timeout=10)
    await generated
    new_id = dict(await generated.trailing_metadata() or ())["x-request-id"]
    assert len(new_id) == 32
    assert stack.launch.records[-1].headers["x-request-id"] == new_id


async def test_errors_carry_the_request_id_in_trailers(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Predict(
            pb.PredictRequest(endpoint_name="", request=ECHO.request), timeout=10, metadata=(("x-request-id", "r-9"),)
        )
    assert dict(caught.value.trailing_metadata() or ())["x-request-id"] == "r-9"


async def test_access_log_off_writes_no_rpc_lines(make_stack: StackFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="launch_gateway.access")
    stack = await make_stack(settings={"log": {"access": False}})
    await stack.stub.Predict(ECHO, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.stub.Predict(pb.PredictRequest(endpoint_name="missing", request=ECHO.request), timeout=10)
    assert access_lines(caplog) == []


async def test_human_log_format_writes_key_value_lines(serve_process: ServeFactory) -> None:
    async with LocalLaunchServer() as launch:
        served = await serve_process(
            *("--upstream", launch.url, "--port", "0", "--metrics.port", "0", "--log.format", "human")
        )
        async with grpc.aio.insecure_channel(served.address) as channel:
            await pb_grpc.EndpointServiceStub(channel).Predict(ECHO, timeout=10, metadata=(("x-request-id", "req-h1"),))
        line = await served.log_line("request_id=req-h1")
    assert " launch_gateway.access: rpc " in line, line
    assert "method=Predict" in line
    assert "grpc_code=OK" in line
    assert not line.lstrip().startswith("{")  # not JSON


@pytest.mark.parametrize("fmt", ["json", "human"])
def test_the_direct_access_line_is_the_line_a_record_would_make(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    fields = {"method": "Predict", "grpc_code": "OK", "duration_ms": 1.5, "tenant": "", "request_id": "a b"}
    records: list[logging.LogRecord] = []
    access_logger = logging.getLogger("launch_gateway.access")
    monkeypatch.setattr(
        access_logger, "handle", lambda record: records.append(record) or logging.Logger.handle(access_logger, record)
    )
    try:
        configure_logging("INFO", fmt)
        access(fields)  # the handler configure_logging made is the only one: formatted at once, no record
        assert records == []
        access_logger.info("rpc", extra={"fields": fields})  # the record path
        assert len(records) == 1
        flush_logs()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    direct, recorded = stream.getvalue().splitlines()
    if fmt == "json":
        direct_fields, recorded_fields = json.loads(direct), json.loads(recorded)
        assert direct_fields.pop("time")[:19] == recorded_fields.pop("time")[:19]
        assert (
            direct_fields
            == recorded_fields
            == {"level": "info", "logger": "launch_gateway.access", "message": "rpc", **fields}
        )
    else:
        assert (
            direct[24:]
            == recorded[24:]
            == 'INFO launch_gateway.access: rpc method=Predict grpc_code=OK duration_ms=1.5 request_id="a b"'
        )
