"""The distribution as users get it: the sdist, the wheel built from it, and that wheel installed bare.

One module fixture copies the checkout (without .venv, node_modules and caches), builds the sdist there
with the build backend pyproject.toml names, unpacks it and builds the wheel from it (as pip does with
an sdist), then installs the wheel into a fresh venv with its dependencies from the index, at
constraints.txt's versions (the pip cache makes that quick after the first run). The tests read what
each step left.
"""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.timeout(600)  # the first run downloads grpcio and protobuf; later ones use the pip cache

ROOT = Path(__file__).resolve().parents[2]
SDK_REQUIREMENTS = {"grpcio", "grpcio-status", "googleapis-common-protos", "protobuf"}
SERVER_DISTRIBUTIONS = {
    "aiohttp",
    "redis",
    "prometheus-client",
    "uvloop",
    "grpcio-health-checking",
    "grpcio-reflection",
}
SERVER_MODULES = ("aiohttp", "redis", "prometheus_client", "uvloop", "grpc_health", "grpc_reflection")
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", "*.pyc", ".*_cache", ".hypothesis", "build", "dist", "*.egg-info"
)


@dataclass(frozen=True)
class Distribution:
    sdist_names: list[str]  # paths inside the sdist, without its top folder
    wheel: Path
    build_output: str  # what building the sdist and the wheel printed
    venv: Path  # a fresh venv with the wheel installed bare
    work: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.venv / "bin" / name


def clean_env() -> dict[str, str]:
    """This environment without what would point a child at the development venv or its sources."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def run(argv: Sequence[str | Path], cwd: Path, within: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a build step; fail with its output when it fails."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=within, check=False
    )
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Distribution:
    work = tmp_path_factory.mktemp("distribution")
    source = work / "checkout"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    # The sdist, by the backend in this venv (setuptools at constraints.txt's version; -W default shows
    # every warning it emits).
    sdist_dir = work / "sdist"
    backend = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    built = run([sys.executable, "-W", "default", "-c", backend, sdist_dir], cwd=source)
    output = built.stdout + built.stderr
    (sdist,) = sdist_dir.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.partition("/")[2] for name in archive.getnames()]
        archive.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    # The wheel, from the unpacked sdist.
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip"]
    built = run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", wheels, unpacked], cwd=work)
    output += built.stdout + built.stderr
    (wheel,) = wheels.glob("*.whl")
    # A fresh venv without pip; this venv's pip installs into it.
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    run([*pip, "--python", venv / "bin" / "python", "install", "-c", ROOT / "constraints.txt", wheel], cwd=work)
    return Distribution(names, wheel, output, venv, work)


def wheel_metadata(distribution: Distribution) -> Message:
    with zipfile.ZipFile(distribution.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(name))


def test_sdist_holds_what_its_tests_and_make_proto_need(distribution: Distribution) -> None:
    names = set(distribution.sdist_names)
    for path in [
        "LICENSE",
        "constraints.txt",
        "Makefile",
        "protos/launch_gateway/v1/endpoint_service.proto",
        "protos/buf.yaml",
        "tools/proto.py",
        "tests/conftest.py",
        "tests/packaging/test_distribution.py",
        "deploy/kubernetes/deployment.yaml",
        "dashboards/launch-gateway.json",
        "Dockerfile",
        "launch_gateway/v1/endpoint_service_pb2.pyi",
        "launch_gateway/py.typed",
    ]:
        assert path in names, f"the sdist lacks {path}"
    assert not [n for n in names if n.startswith((".venv/", "node_modules/", ".git/")) or "/node_modules/" in n]
    assert not [n for n in names if "__pycache__" in n]


def test_building_emits_no_deprecation_warning(distribution: Distribution) -> None:
    warnings = [line for line in distribution.build_output.splitlines() if "deprecat" in line.lower()]
    assert not warnings, "\n".join(warnings)


def test_wheel_declares_the_license_and_ranges_for_the_sdk_only(distribution: Distribution) -> None:
    metadata = wheel_metadata(distribution)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    with zipfile.ZipFile(distribution.wheel) as wheel:
        (license_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert wheel.read(license_name).decode().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    requirements = metadata.get_all("Requires-Dist") or []
    base = [r for r in requirements if "extra ==" not in r]
    assert {r.split("<")[0].split(">")[0].split("=")[0].strip() for r in base} == SDK_REQUIREMENTS
    pinned = [r for r in requirements if "==" in r.split(";")[0]]
    assert not pinned, f"a library pins nothing exactly: {pinned}"


def test_bare_wheel_installs_the_sdk_and_no_server_dependency(distribution: Distribution) -> None:
    listing = run([sys.executable, "-m", "pip", "--python", distribution.python, "list"], cwd=distribution.work)
    installed = {line.split()[0].lower().replace("_", "-") for line in listing.stdout.splitlines()[2:]}
    assert installed >= SDK_REQUIREMENTS
    assert not installed & SERVER_DISTRIBUTIONS, f"the SDK install brought {sorted(installed & SERVER_DISTRIBUTIONS)}"
    check = (
        "import importlib.util, launch_gateway, launch_gateway.client.aio; "
        "from launch_gateway import GatewayClient, EndpointRequest; "
        f"print([m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m)])"
    )
    imported = run([distribution.python, "-c", check], cwd=distribution.work)
    assert imported.stdout.strip() == "[]"


# Ports 0: should a command start after all, it must not take a port that something else uses.
COMMANDS = [["serve", "--port", "0", "--metrics.port", "0"], ["local-launch", "--port", "0"], ["demo", "--once"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_bare_console_script_names_the_server_extra_in_one_line(distribution: Distribution, command: list[str]) -> None:
    done = subprocess.run(
        [distribution.script("launch-gateway"), *command],
        cwd=distribution.work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "pip install 'launch-gateway[server]'" in done.stderr


async def test_bare_health_asks_a_real_gateway(distribution: Distribution, stack: Stack) -> None:
    address = stack.gateway.address
    process = await asyncio.create_subprocess_exec(
        distribution.script("launch-gateway"),
        "health",
        "--liveness",
        "--address",
        address,
        cwd=distribution.work,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, out.decode(), err.decode()) == (0, f"{address}: SERVING\n", "")
