"""Reading the docs for the tests that run them: fenced blocks, sections, tables and shell commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


@dataclass(frozen=True)
class Block:
    """One fenced block: its language (may be empty), its text, and the prose since the previous block."""

    language: str
    text: str
    before: str


def read(name: str) -> str:
    """A doc by its path from the repository root (`README.md`, `docs/tenants.md`)."""
    return (ROOT / name).read_text()


def fenced(markdown: str, language: str | None = None) -> list[Block]:
    """The fenced blocks in order, optionally of one language only."""
    found: list[Block] = []
    prose: list[str] = []
    lines = iter(markdown.splitlines(keepends=True))
    for line in lines:
        if not line.startswith("```"):
            prose.append(line)
            continue
        body = []
        for inner in lines:
            if inner.startswith("```"):
                break
            body.append(inner)
        found.append(Block(line[3:].strip(), "".join(body), "".join(prose)))
        prose = []
    return [b for b in found if language is None or b.language == language]


def section(markdown: str, heading: str) -> str:
    """From `heading` (e.g. "## Tenant keys") to the next heading of its level or above, fences skipped."""
    level = len(heading.split()[0])
    kept: list[str] = []
    inside = in_fence = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            depth = len(line) - len(line.lstrip("#"))
            if line.rstrip("\n") == heading:
                inside = True
            elif inside and depth <= level and line[depth : depth + 1] == " ":
                break
        if inside:
            kept.append(line)
    assert kept, f"no heading {heading!r}"
    return "".join(kept)


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of the table rows whose first cell is code (`| `name` | ... |`)."""
    rows = [line.strip().strip("|").split("|") for line in markdown.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


def shell_commands(markdown: str) -> list[list[str]]:
    """Each command of the ```sh blocks as sh splits it: continuation lines joined, comments dropped."""
    commands = []
    for block in fenced(markdown, "sh"):
        for line in re.sub(r"\\\n", " ", block.text).splitlines():
            if words := shlex.split(line, comments=True):
                commands.append(words)
    return commands
