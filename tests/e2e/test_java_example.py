"""examples/java, a real grpc-java client, built with the docs' commands and run against a real gateway.

docs/other-languages.md's Java protoc command generates the stubs (with Debian's grpc-java plugin,
`grpc_java_plugin`, for its /path/to/protoc-gen-grpc-java) and its javac command compiles them with
GatewayClient.java against Debian's grpc-java 1.41 jars. Debian packages neither grpc-services (the
health stubs) nor proto-google-common-protos (com.google.rpc), so their classes are generated here from
the same .proto files: grpc.health.v1's from grpcio-health-checking's descriptor, google/rpc/*.proto
from googleapis-common-protos. javac takes a while, so compiled classes are kept in .cache/java
under a hash of everything that goes into them. `make test` installs the packages
(.ci/system-deps).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import google.rpc.error_details_pb2
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from tests.conftest import StackFactory
from tests.e2e.client_tour import (
    LIMITED,
    STALE_KEY,
    TOUR_KEY,
    build,
    check_refused_tour,
    check_stale_key_refusal,
    doc_block,
    run,
    spend_the_limited_call,
    tour_stack,
)
from tests.e2e.test_tools import ROOT

pytestmark = pytest.mark.timeout(120)  # the first test may compile: 15-30 s on a cold cache
JARS = Path("/usr/share/java")
# Debian's names for grpc-java's runtime: grpc-netty (not -shaded) with its netty modules.
RUNTIME_JARS = [
    *(f"grpc-{name}" for name in ("api", "context", "core", "netty", "protobuf", "protobuf-lite", "stub")),
    "protobuf", "guava", "perfmark-api", "gson",
    *(f"netty-{name}" for name in (
        "buffer", "codec", "codec-http", "codec-http2", "codec-socks", "common", "handler", "handler-proxy",
        "resolver", "transport",
    )),
]  # fmt: skip
COMPILE_ONLY_JARS = ["geronimo-annotation-1.3-spec"]  # javax.annotation.Generated, which the stubs carry
JAVA_CACHE = ROOT / ".cache" / "java"
# Every JVM here (javac, the client) is short-lived: the C1 compiler alone makes javac three times faster
# on two busy cores. The JVM notes the variable on stderr.
JAVA_ENV = {**os.environ, "_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
JAVA_ENV.pop("LAUNCH_GATEWAY_API_KEY", None)  # the client would send it
DOC_PLUGIN = "/path/to/protoc-gen-grpc-java"
DOC_ADDRESS = "localhost:50051"


def require_toolchain() -> str:
    """Debian's grpc-java plugin; fails naming what is missing."""
    missing = [tool for tool in ("protoc", "grpc_java_plugin", "javac", "java") if not shutil.which(tool)]
    missing += [f"{JARS}/{jar}.jar" for jar in RUNTIME_JARS + COMPILE_ONLY_JARS if not (JARS / f"{jar}.jar").exists()]
    assert not missing, f"{missing} missing: `make system-deps` installs them from Debian"
    return str(shutil.which("grpc_java_plugin"))


def classpath(*jars: str) -> str:
    return os.pathsep.join(str(JARS / f"{jar}.jar") for jar in jars)


def digest(root: Path, paths: list[Path], *texts: str) -> str:
    """What a compilation depends on: its sources (names under `root`, and bytes), command and classpath."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for text in texts:
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:20]


def compiled(key: str, compile_into: Callable[[Path], None]) -> Path:
    """The cache's classes for `key`, compiled by `compile_into(folder)` when missing."""
    done = JAVA_CACHE / key
    if not done.is_dir():
        scratch = JAVA_CACHE / f"{key}.{os.getpid()}.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        compile_into(scratch)
        try:
            scratch.rename(done)  # atomic: a half-compiled folder is never used
        except OSError:  # another test run compiled the same classes first
            shutil.rmtree(scratch)
            if not done.is_dir():
                raise
    return done


def standin_classes(work: Path, plugin: str) -> Path:
    """grpc-services' health stubs and proto-google-common-protos' com.google.rpc, compiled."""
    health = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(health.file.add())
    (work / "health.binpb").write_bytes(health.SerializeToString())
    googleapis = Path(google.rpc.error_details_pb2.__file__).parents[2]  # site-packages, which holds google/rpc
    sources = work / "standins"
    sources.mkdir()
    grpc_java = [f"--plugin=protoc-gen-grpc-java={plugin}", f"--grpc-java_out={sources}"]
    build(["protoc", "--descriptor_set_in=health.binpb", f"--java_out={sources}", *grpc_java,
           health_pb2.DESCRIPTOR.name], cwd=work)  # fmt: skip
    rpc = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    build(["protoc", f"-I{googleapis}", f"--java_out={sources}", *rpc], cwd=work)
    java = sorted(sources.rglob("*.java"))
    cp = classpath(*RUNTIME_JARS, *COMPILE_ONLY_JARS)
    key = "standins-" + digest(sources, java, cp)
    javac = ["javac", "-nowarn", "-cp", cp, *map(str, java)]
    return compiled(key, lambda out: build([*javac, "-d", str(out)], cwd=work, env=JAVA_ENV))


@pytest.fixture(scope="module")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The doc's protoc and javac commands, run in a folder that holds protos/ and examples/java/.

    Returns the folder and the doc's `java` line, whose CP is set to the jars and stand-ins.
    """
    plugin = require_toolchain()
    work = tmp_path_factory.mktemp("java")
    (work / "protos").symlink_to(ROOT / "protos")
    (work / "examples" / "java").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "java" / "GatewayClient.java", work / "examples" / "java")
    protoc = doc_block("--grpc-java_out")
    assert DOC_PLUGIN in protoc
    build(["bash", "-euo", "pipefail", "-c", protoc.replace(DOC_PLUGIN, plugin)], cwd=work)

    standins = standin_classes(work, plugin)
    cp = os.pathsep.join([str(standins), classpath(*RUNTIME_JARS, *COMPILE_ONLY_JARS)])
    lines = doc_block("javac ").splitlines()
    (java_line,) = [line for line in lines if line.startswith("java ")]
    compile_lines = "\n".join(line for line in lines if line != java_line)
    sources = [*work.joinpath("gen").rglob("*.java"), work / "examples" / "java" / "GatewayClient.java"]
    key = "client-" + digest(work, sources, compile_lines, cp)

    def compile_into(out: Path) -> None:
        build(["bash", "-euo", "pipefail", "-c", compile_lines], cwd=work, env={**JAVA_ENV, "CP": cp})
        out.rmdir()
        shutil.move(work / "classes", out)  # /tmp and the repository may be different filesystems

    (work / "classes").symlink_to(compiled(key, compile_into))  # where the doc's java line looks
    return work, java_line.replace("$CP", cp)


async def run_java(java_client: tuple[Path, str], *args: str) -> tuple[int, str, str]:
    """The doc's `java` line, with `args` (flags and the gateway's address) for its localhost:50051."""
    work, java_line = java_client
    assert java_line.count(DOC_ADDRESS) == 1, java_line
    command = java_line.replace(DOC_ADDRESS, " ".join(args))
    return await run("bash", "-c", f"cd {shlex.quote(str(work))} && {command}", env=JAVA_ENV, within=60)


async def test_java_example_makes_every_call_with_its_tenant_key(
    java_client: tuple[Path, str], make_stack: StackFactory
) -> None:
    stack = await tour_stack(make_stack)
    spent = await spend_the_limited_call(stack)
    result = await run_java(java_client, "--key", TOUR_KEY, "--refuse", LIMITED, stack.gateway.address)
    await check_refused_tour(stack, result, "java", spent)


async def test_java_example_reads_error_info_when_launch_refuses_the_key(
    java_client: tuple[Path, str], make_stack: StackFactory
) -> None:
    stack = await tour_stack(make_stack)
    # The stale tenant forwards its key to Launch as its Launch key; Launch does not know it (401).
    check_stale_key_refusal(await run_java(java_client, "--key", STALE_KEY, stack.gateway.address))
