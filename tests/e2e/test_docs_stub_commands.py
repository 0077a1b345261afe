"""docs/other-languages.md's commands: each ```sh block is run by a test, or the doc says why not.

Go's protoc command (and its buf.gen.yaml) run in test_go_example.py; Java's protoc, javac and java lines
in test_java_example.py; Python's grpcio-tools command here. Node's `grpc_tools_node_protoc` is not run:
grpc-tools fetches its protoc from node-precompiled-binaries.grpc.io when it installs, which this
machine cannot reach, and Debian's protoc 3.21 has no JavaScript generator; examples/node (the
runtime loader) is what test_node_example.py runs instead.
"""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

from tests.docs import ROOT, fenced, read
from tests.e2e.client_tour import OTHER_LANGUAGES, build, doc_block

# What marks each ```sh block, and the test that runs it (None: not runnable here, as the doc says).
RUN_BY = {
    "--go-grpc_out": "tests/e2e/test_go_example.py",
    "--grpc-java_out": "tests/e2e/test_java_example.py",
    "javac ": "tests/e2e/test_java_example.py",
    "grpc_tools.protoc": "tests/e2e/test_docs_stub_commands.py",
    "grpc_tools_node_protoc": None,
}
SDK_STUBS = ROOT / "launch_gateway" / "v1"


def test_every_command_block_is_run_by_a_test_or_says_why_not() -> None:
    blocks = [block.text for block in fenced(read(OTHER_LANGUAGES), "sh")]
    assert sorted(marker for block in blocks for marker in RUN_BY if marker in block) == sorted(RUN_BY)
    assert len(blocks) == len(RUN_BY), blocks
    for marker, test in RUN_BY.items():
        if test is None:
            after = read(OTHER_LANGUAGES).split(doc_block(marker), 1)[1]
            assert "not run by the tests" in after.split("\n\n", 2)[1], f"the doc should say why {marker} is not run"
        else:
            assert f"doc_block({marker!r})" in (ROOT / test).read_text().replace('"', "'"), test


def test_the_python_command_generates_the_sdks_own_stubs(tmp_path: Path) -> None:
    # The SDK's stubs come from the same protoc (tools/proto.py), so the doc's command makes the same
    # files; tests/packaging/test_user_stubs.py shows such stubs load and call beside the SDK's.
    (tmp_path / "protos").symlink_to(ROOT / "protos")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # `python` is this venv's
    build(
        ["bash", "-euo", "pipefail", "-c", doc_block("grpc_tools.protoc")],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
    )
    generated = tmp_path / "gen" / "launch_gateway" / "v1"
    assert (generated / "endpoint_service_pb2.pyi").is_file()
    for name in ("endpoint_service_pb2.py", "endpoint_service_pb2_grpc.py"):
        assert filecmp.cmp(generated / name, SDK_STUBS / name, shallow=False), name
