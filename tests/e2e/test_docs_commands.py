"""The shell commands of the README and docs/: each one is run by a test, or says why it cannot be here.

`WHERE` lists every command by its first words; the longest match decides. The commands this file runs
are the local servers' (their fixed ports 5005 and 50051 made 0, since tests run side by side);
docs/other-languages.md's blocks are held by tests/e2e/test_docs_stub_commands.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from launch_gateway.testing.local_launch import builtin_endpoints
from tests.docs import DOCS, ROOT, read, section, shell_commands, table_rows
from tests.serving import LAUNCH_GATEWAY, ServeFactory

HERE = "tests/e2e/test_docs_commands.py"
WHERE = {
    "make demo": "tests/e2e/test_cli.py runs `launch-gateway demo --once`, what make demo runs",
    "make test": "CI: .ci/run calls it",
    "grpcurl": "tests/e2e/test_docs_grpcurl.py",
    "launch-gateway check-config": "tests/test_docs_config.py",
    "echo -n demo-key | launch-gateway hash-key": "tests/test_docs_config.py",
    "export LAUNCH_GATEWAY_HANDLE_SECRETS": "tests/test_docs_config.py",
    "export LAUNCH_API_KEY=any": "tests/test_docs_config.py",
    "export SEARCH_LAUNCH_KEY": "tests/test_docs_config.py",
    "export LAUNCH_GATEWAY_REDIS_URL": "tests/test_docs_config.py",
    "launch-gateway serve --config gateway.toml": "tests/e2e/test_docs_grpcurl.py",
    "launch-gateway local-launch": HERE,
    "launch-gateway serve --upstream http://127.0.0.1:5005": HERE,
    "export LAUNCH_API_KEY=...": "not run: the key of a real Launch deployment",
    "launch-gateway serve --upstream https://api.scale.com/v1/launch": "not run: needs a real Launch deployment",
    "pip install": "not run: it installs into the environment",
    "python3 -m venv .venv": "not run: what make does first (tests/packaging/ installs the wheel in a fresh venv)",
    "docker": "not run: no Docker daemon here",
    ".venv/bin/pytest": "not run: it is this suite",
}


async def run(*argv: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def where(argv: list[str]) -> str | None:
    """What WHERE says about a command: the longest prefix whose words it starts with (the last one may be
    the start of a word: `export SEARCH_LAUNCH_KEY` covers `export SEARCH_LAUNCH_KEY=...`)."""

    def covers(prefix: list[str]) -> bool:
        n = len(prefix)
        return len(argv) >= n and argv[: n - 1] == prefix[:-1] and argv[n - 1].startswith(prefix[-1])

    matches = [prefix for prefix in WHERE if covers(prefix.split())]
    return WHERE[max(matches, key=len)] if matches else None


# Its own test holds each of its blocks to a test that runs it, or to the doc's reason why not.
OTHER_LANGUAGES_RUN_BY = "tests/e2e/test_docs_stub_commands.py"


def commands() -> list[tuple[str, list[str]]]:
    """Every doc's commands, `.venv/bin/launch-gateway` (the README's, after make) read as `launch-gateway`;
    docs/other-languages.md's are `OTHER_LANGUAGES_RUN_BY`'s."""
    found = []
    for doc in DOCS:
        if doc.name == "other-languages.md":
            continue
        for argv in shell_commands(doc.read_text()):
            if argv[0] == ".venv/bin/launch-gateway":
                argv = ["launch-gateway", *argv[1:]]
            found.append((str(doc.relative_to(ROOT)), argv))
    return found


def test_every_doc_command_is_run_or_says_why_not() -> None:
    assert [f"{doc}: {shlex.join(argv)}" for doc, argv in commands() if where(argv) is None] == []


def local_launch_commands() -> list[list[str]]:
    """Every `launch-gateway local-launch` command of the docs, once each."""
    found: list[list[str]] = []
    for _, argv in commands():
        if argv[:2] == ["launch-gateway", "local-launch"] and argv not in found:
            found.append(argv)
    return found


def on_free_ports(argv: list[str]) -> list[str]:
    """The command with this venv's console script, `--port N` made 0, and no trailing `&`."""
    argv = [LAUNCH_GATEWAY, *argv[1:]] if argv[0] == "launch-gateway" else list(argv)
    if argv[-1] == "&":
        argv.pop()
    if "--port" in argv:
        argv[argv.index("--port") + 1] = "0"
    return argv


@contextlib.asynccontextmanager
async def running(argv: list[str]) -> AsyncIterator[list[str]]:
    """Start `local-launch`; yield the lines it prints up to its endpoints; stop it at the end."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, start_new_session=True
    )
    assert process.stdout is not None
    try:
        lines = []
        async with asyncio.timeout(30):
            while len(lines) < 1 + len(builtin_endpoints()):
                line = (await process.stdout.readline()).decode()
                assert line, f"{shlex.join(argv)} exited:\n{(await process.stderr.read()).decode()}"  # type: ignore[union-attr]
                lines.append(line.rstrip("\n"))
                if line.startswith("  my-echo"):  # a single named endpoint
                    break
        yield lines
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize("argv", local_launch_commands(), ids=shlex.join)
async def test_local_launch_command_serves_what_the_doc_says(argv: list[str]) -> None:
    async with running(on_free_ports(argv)) as lines:
        assert lines[0].startswith("local Launch server listening on http://127.0.0.1:")
        served = {line.strip() for line in lines[1:]}
        if "--endpoint" in argv:
            name, _, target = argv[argv.index("--endpoint") + 1].partition("=")
            assert served == {f"{name} ({target.split(':')[0]})"}
        else:
            assert served == {f"{spec.name} ({spec.kind})" for spec in builtin_endpoints()}


def test_the_builtin_endpoints_table_is_what_local_launch_serves() -> None:
    rows = table_rows(section(read("docs/local-launch.md"), "# The local Launch server"))
    listed = {(row[0].strip("`"), row[1]) for row in rows if len(row) == 3}
    assert listed == {(spec.name, spec.kind) for spec in builtin_endpoints()}


async def test_serve_in_front_of_the_local_server_as_the_docs_say(serve_process: ServeFactory) -> None:
    (serve,) = {
        shlex.join(argv)
        for _, argv in commands()
        if argv[:4] == ["launch-gateway", "serve", "--upstream", "http://127.0.0.1:5005"]
    }
    local = ["launch-gateway", "local-launch", "--port", "5005", "&"]
    assert local in local_launch_commands()
    async with running(on_free_ports(local)) as lines:
        url = lines[0].rsplit(" ", 1)[1]
        args = on_free_ports(shlex.split(serve))[2:]
        args[args.index("--upstream") + 1] = url
        served = await serve_process(*args, "--metrics.port", "0")
        assert served.listening is not None
        assert (served.listening.upstream, served.listening.mode) == (url, "open mode")
        code, _, err = await run(LAUNCH_GATEWAY, "health", "--address", served.address)
        assert code == 0, err
