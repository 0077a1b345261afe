"""The README's Python SDK example runs as written against a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

from tests.conftest import Stack

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    return blocks[0]


async def test_readme_sdk_example_runs(stack: Stack) -> None:
    code = sdk_example().replace("localhost:50051", stack.gateway.address)
    output = io.StringIO()

    def execute() -> None:
        with contextlib.redirect_stdout(output):
            exec(compile(code, "README.md", "exec"), {})

    await asyncio.to_thread(execute)
    lines = output.getvalue().splitlines()
    assert lines[0] == 'SUCCESS {"n": 3}'
    assert lines[1] == '{"delay": 0.5}'
    assert lines[2:] == ['{"i":0}', '{"i":1}', '{"i":2}']
