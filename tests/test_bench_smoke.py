"""`make bench` keeps working: a few sections at their quick sizes, with real processes and h2load;
and the naive relay, the unary reference, answers a call through the local Launch server.

Only that the sections run and print their figures is checked, never the numbers: the machine
running the tests is not a benchmark machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bench.processes import start_local_launch, start_naive_relay
from bench.unary import ARGS, predict_request
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (Debian nghttp2-client) is missing")
def test_bench_quick_run_prints_each_figure_with_its_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", "unary", "streaming", "cancellation"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ": failed:" not in done.stdout, done.stdout[-3000:]
    for figure, reference in (
        ("Predict calls/s, 64 callers (h2load)", "naive relay"),
        ("gateway CPU per Predict call (h2load, 64 callers)", "naive relay CPU per call"),
        ("Predict p50 at 1 caller, over the naive relay (h2load)", "naive relay p50"),
        ("naive relay calls/s, 64 callers (h2load)", "bare echo"),
        ("Predict p50 added at 1 caller (h2load)", "Launch HTTP p50 (h2load --h1)"),
        ("StreamPredict events/s, 4 streams (h2load)", "bare grpc.aio stream"),
        ("Predict cancel -> local Launch sees disconnect, p99", "sync task direct"),
    ):
        line = next((row for row in done.stdout.splitlines() if row.startswith(figure)), "")
        assert reference in line, f"{figure!r} not printed with {reference!r}:\n{done.stdout[-3000:]}"


async def test_naive_relay_answers_predict_through_the_local_launch_server(tmp_path: Path) -> None:
    launch = await start_local_launch(tmp_path)
    try:
        relay = await start_naive_relay(tmp_path, launch.url)
        try:
            async with grpc.aio.insecure_channel(relay.address) as channel:
                reply = await pb_grpc.EndpointServiceStub(channel).Predict(predict_request(), timeout=10)
        finally:
            await relay.server.stop()
    finally:
        await launch.server.stop()
    assert reply.response.status == pb.TASK_STATUS_SUCCESS
    assert json.loads(reply.response.result) == ARGS
    assert reply.response.status_code == 200
