"""The configuration docs, run as written: docs/settings.md's table and example, docs/tenants.md's configs.

The shell blocks next to each TOML example are run with bash, unchanged, in a folder holding the example
as `gateway.toml`, with this venv's `launch-gateway` first on PATH.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from launch_gateway.server.access.tenants import CallbackPolicy, Tenant
from launch_gateway.server.settings import build_settings, setting_names
from tests.docs import fenced, read, section, table_rows

SETTINGS = read("docs/settings.md")
TENANTS = read("docs/tenants.md")
BIN = str(Path(sys.executable).parent)


def run_shell(script: str, folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bash -e` on the script in `folder`, this venv first on PATH, nothing else inherited but `env`."""
    environment = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(folder), **(env or {})}
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=folder, env=environment, capture_output=True, text=True, timeout=60
    )


# --- settings.md ---------------------------------------------------------------------------------


def test_every_setting_is_in_the_table_with_its_default() -> None:
    defaults = build_settings()
    documented: dict[str, str] = {}
    for row in table_rows(section(SETTINGS, "## Every setting")):
        names, values = re.findall(r"`([^`]+)`", row[0]), re.findall(r"`([^`]*)`", row[1])
        for i, name in enumerate(names):
            documented[name] = values[i] if i < len(values) else ""
    assert sorted(documented) == sorted(setting_names())
    for name in setting_names():
        section_name, key = name.split(".")
        value = getattr(getattr(defaults, section_name), key)
        shown = (
            str(value).lower() if isinstance(value, bool) else str(list(value) if isinstance(value, tuple) else value)
        )
        assert documented[name] == shown, f"{name}: the table says {documented[name]!r}, the code {shown!r}"


def test_the_bad_config_example_names_every_problem(tmp_path: Path) -> None:
    config, command, printed = fenced(section(SETTINGS, "# Settings"))[:3]
    assert (config.language, command.language, printed.language) == ("toml", "sh", "")
    assert config.text.startswith("# bad.toml\n")
    (tmp_path / "bad.toml").write_text(config.text)
    result = run_shell(command.text, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == printed.text.splitlines()


# --- tenants.md ----------------------------------------------------------------------------------


def test_every_tenant_key_is_in_the_table() -> None:
    rows = table_rows(section(TENANTS, "## Tenant keys"))
    documented = {name for row in rows for name in re.findall(r"`([^`]+)`", row[0])}
    keys = {f.name for f in dataclasses.fields(Tenant)} - {"name"}
    assert documented == keys
    (callbacks,) = [row for row in rows if row[0] == "`callbacks`"]
    assert {f.name for f in dataclasses.fields(CallbackPolicy)} <= set(re.findall(r"\w+", callbacks[1]))


def test_the_one_tenant_example_is_accepted_as_printed(tmp_path: Path) -> None:
    config, commands = (b.text for b in fenced(section(TENANTS, "## One tenant, step by step"))[:2])
    (tmp_path / "gateway.toml").write_text(config)
    result = run_shell(commands, tmp_path)
    assert result.returncode == 0, result.stderr
    digest, verdict = result.stdout.splitlines()
    assert f'api_key_hashes = ["{digest}"]' in config  # the hash printed is the one in the file
    assert verdict == "gateway.toml: ok"


def complete_example(tmp_path: Path) -> tuple[str, str]:
    """docs/tenants.md's complete example and its commands, after making what the text says must exist.

    The files it names are made under tmp_path (this test cannot write /etc), and the TOML points
    there; the text must name every file the TOML does.
    """
    toml, sh = fenced(section(TENANTS, "## A complete example"))[:2]
    assert (toml.language, sh.language) == ("toml", "sh")
    config, commands, prose = toml.text, sh.text, sh.before
    named = sorted(set(re.findall(r'"(/[^"]+)"', config)))
    assert named, "the complete example names files"
    assert [path for path in named if f"`{path}`" not in prose] == [], "the text names every file it needs"
    ca = trustme.CA()
    cert = ca.issue_cert("gateway.example.com")
    contents = {
        "server.crt": cert.cert_chain_pems[0].bytes(),
        "server.key": cert.private_key_pem.bytes(),
        "clients-ca.crt": ca.cert_pem.bytes(),
        "ranking-launch-key": b"ranking-launch-key\n",
    }
    assert sorted(Path(path).name for path in named) == sorted(contents)
    for path in named:
        local = tmp_path / Path(path).name
        local.write_bytes(contents[local.name])
        config = config.replace(path, str(local))
    (tmp_path / "gateway.toml").write_text(config)
    return config, commands


def test_the_complete_example_is_accepted_once_what_it_names_exists(tmp_path: Path) -> None:
    _, commands = complete_example(tmp_path)
    result = run_shell(commands, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "gateway.toml: ok"


@pytest.mark.parametrize("missing", ["SEARCH_LAUNCH_KEY", "LAUNCH_GATEWAY_REDIS_URL", "LAUNCH_GATEWAY_HANDLE_SECRETS"])
def test_the_complete_example_names_each_missing_variable(tmp_path: Path, missing: str) -> None:
    _, commands = complete_example(tmp_path)
    assert f"export {missing}=" in commands
    kept = "\n".join(line for line in commands.splitlines() if not line.startswith(f"export {missing}="))
    result = run_shell(kept, tmp_path)
    assert result.returncode == 2
    assert f"${missing}" in result.stderr
