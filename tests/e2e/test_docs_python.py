"""Every Python example in the README and docs/ runs as written against a real gateway.

`localhost:50051` in an example becomes the stack's address; an example with top-level `await` (as a
notebook or `python -m asyncio` allows) runs in an event loop of its own. Each example's output is
checked against what its comments promise.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
from collections.abc import Callable

import pytest

from tests.conftest import Stack
from tests.docs import DOCS, ROOT, fenced


def examples() -> dict[str, str]:
    """Every ```python block, by `doc#index`."""
    found = {}
    for doc in DOCS:
        for i, block in enumerate(fenced(doc.read_text(), "python")):
            found[f"{doc.relative_to(ROOT)}#{i}"] = block.text
    return found


def stream_of(n: int) -> list[str]:
    return [f'{{"i":{i}}}' for i in range(n)]


# What each example prints, line by line.
EXPECTED: dict[str, Callable[[list[str]], bool]] = {
    "README.md#0": lambda out: out == ['SUCCESS {"n": 3}', '{"delay": 0.5}', *stream_of(3)],
    "docs/sdk.md#0": lambda out: out == ['{"n": 3}'],
    "docs/sdk.md#1": lambda out: out == ['{"n": 3}', str([f'{{"i": {i}}}' for i in range(3)]), *stream_of(2)],
    "docs/other-languages.md#0": lambda out: out == [],
    "docs/local-launch.md#0": lambda out: (
        len(out) == 1 and re.fullmatch(r"http://127\.0\.0\.1:\d+", out[0]) is not None
    ),
}


def test_every_python_example_has_its_expected_output() -> None:
    assert sorted(examples()) == sorted(EXPECTED)


def execute(name: str, code: str) -> list[str]:
    """Run an example in a fresh namespace (in this thread); the lines it printed."""
    output = io.StringIO()
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    with contextlib.redirect_stdout(output):
        result = eval(compiled, {})  # a coroutine when the example awaits at top level
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return output.getvalue().splitlines()


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_python_example_runs(stack: Stack, name: str) -> None:
    code = examples()[name].replace("localhost:50051", stack.gateway.address)
    lines = await asyncio.to_thread(execute, name, code)  # blocking examples must not block the servers' loop
    assert EXPECTED[name](lines), lines
