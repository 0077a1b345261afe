"""A raw API key put by mistake where its hash belongs is refused without printing any of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from launch_gateway.server.access.tenants import hash_key
from tests.serving import LAUNCH_GATEWAY, ROOT, serve_env

RAW_KEY = "Zq7rK2vX9mW4pL8sT1nB6yH3"  # what a hash belongs to, pasted by mistake


def config_with(hashes: str) -> str:
    return f"""
[server]
port = 0
[metrics]
port = 0
[tenants.team-a]
api_key_hashes = {hashes}
endpoints = ["echo"]
upstream = "forward"
"""


OTHER = hash_key("some-other-key")
ENTRY = "tenants.team-a.api_key_hashes: entry 2 is not sha256:<64 hex>"
NOT_A_LIST = "tenants.team-a.api_key_hashes: must be a list of strings"


async def run(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env=serve_env({"LAUNCH_GATEWAY_HANDLE_SECRETS": "handle-secret-0123456789abcdef"}),
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


@pytest.mark.parametrize(
    ("hashes", "problem"),
    [
        (f'["{OTHER}", "{RAW_KEY}"]', ENTRY),
        (f'["{OTHER}", "sha256:{RAW_KEY}"]', ENTRY),
        (f'["{OTHER}", "{RAW_KEY}{"0" * 40}"]', ENTRY),
        (f'"{RAW_KEY}"', NOT_A_LIST),
        (f'["{RAW_KEY}", 7]', NOT_A_LIST),
    ],
    ids=["bare", "prefixed", "long", "a-string-not-a-list", "beside-a-number"],
)
@pytest.mark.parametrize("command", ["serve", "check-config"])
async def test_a_raw_key_in_api_key_hashes_is_refused_without_showing_it(
    tmp_path: Path, command: str, hashes: str, problem: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(config_with(hashes))
    argv = ("serve", "--config", str(config)) if command == "serve" else ("check-config", str(config))
    code, output = await run(LAUNCH_GATEWAY, *argv)
    assert code != 0, output
    assert problem in output, output
    shown = [RAW_KEY[i : i + 4] for i in range(len(RAW_KEY) - 3) if RAW_KEY[i : i + 4] in output]
    assert shown == [], output
