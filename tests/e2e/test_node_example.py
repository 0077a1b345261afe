"""examples/node/client.js, a real @grpc/grpc-js client, against a real gateway: sync, stream and async."""

from __future__ import annotations

import json
import shutil

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack
from tests.e2e.test_tools import ROOT, run

EXAMPLE = ROOT / "examples" / "node"


async def test_node_example_makes_a_sync_a_stream_and_an_async_call(stack: Stack) -> None:
    node = shutil.which("node")
    assert node, "the Node example needs Node.js (node) on PATH"
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        assert (EXAMPLE / "node_modules" / package).is_dir(), (
            "examples/node has no node_modules: run `npm ci --prefix examples/node` (make test does)"
        )

    code, out, err = await run(node, str(EXAMPLE / "client.js"), stack.gateway.address)
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == 7, out

    label, status, result = lines[0].split(" ", 2)
    assert (label, status) == ("sync:", "TASK_STATUS_SUCCESS")
    echoed = json.loads(result)
    assert echoed == {"text": "hello from node", "n": 3}
    assert type(echoed["n"]) is int  # a Struct number went upstream as the int 3

    prefix = "stream event: "
    assert all(line.startswith(prefix) for line in lines[1:5]), out
    assert [json.loads(line.removeprefix(prefix)) for line in lines[1:5]] == [{"i": i} for i in range(4)]
    assert lines[5] == "stream end"

    label, task_id, status, result = lines[6].split(" ", 3)
    assert (label, status) == ("async:", "TASK_STATUS_SUCCESS")
    assert json.loads(result) == {"delay": 0.1, "x": 1}
    task = await stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id=task_id), timeout=10)
    assert task.response.status == pb.TASK_STATUS_SUCCESS  # the printed id is the real task's
