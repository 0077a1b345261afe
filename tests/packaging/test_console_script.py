"""`launch-gateway` on a partial install: each command says in one line what is missing, `health` needs nothing.

The SDK install lacks the server extra; the production image lacks `launch_gateway.testing`. A child
interpreter simulates both: a finder ahead of every other one fails the import of the absent modules
exactly as an uninstalled module fails (ModuleNotFoundError naming it). The real bare install is
`test_distribution.py`'s.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.conftest import Stack

SERVER_MODULES = ("aiohttp", "redis", "prometheus_client", "uvloop", "grpc_health", "grpc_reflection")
TESTING = ("launch_gateway.testing",)
EXTRA_HINT = "pip install 'launch-gateway[server]'"

# The first argument lists the absent modules (comma-separated); the rest is the CLI's command line.
BOOT = """
import sys
absent = set(filter(None, sys.argv.pop(1).split(",")))
class Absent:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent)
from launch_gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def cli(*args: str, absent: tuple[str, ...], cwd: Path) -> tuple[int, str, str]:
    """Run `launch-gateway ARGS` with `absent` modules not installed: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BOOT,
        ",".join(absent),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_importing_the_cli_loads_no_server_module(tmp_path: Path) -> None:
    code = (
        "import sys, launch_gateway.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('launch_gateway.server', 'launch_gateway.testing'))"
        f" or m in {SERVER_MODULES[:4]!r}))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert out.decode().strip() == "[]"


@pytest.mark.parametrize("command", [["serve"], ["local-launch"], ["demo", "--once"]], ids=lambda c: c[0])
async def test_server_commands_without_the_extra_name_it_in_one_line(command: list[str], tmp_path: Path) -> None:
    code, out, err = await cli(*command, absent=SERVER_MODULES, cwd=tmp_path)
    assert code != 0
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert EXTRA_HINT in err


@pytest.mark.parametrize("command", [["local-launch"], ["demo", "--once"]], ids=lambda c: c[0])
async def test_imitation_commands_without_the_testing_package_say_so_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    code, out, err = await cli(*command, absent=TESTING, cwd=tmp_path)
    assert code != 0
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "the testing package (launch_gateway.testing" in err
    assert "not installed" in err


async def test_health_needs_no_server_extra(stack: Stack, tmp_path: Path) -> None:
    address = stack.gateway.address
    live = await cli("health", "--liveness", "--address", address, absent=SERVER_MODULES, cwd=tmp_path)
    assert live == (0, f"{address}: SERVING\n", "")
    ready = await cli("health", "--address", address, absent=SERVER_MODULES, cwd=tmp_path)
    assert ready == (0, f"{address}: SERVING\n", "")
