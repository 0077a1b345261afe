"""docs/architecture.md stays true: every module has its line, the pure ones are pure, every name exists."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from launch_gateway.server.settings import setting_names
from tests.docs import ROOT, fenced, read

DOC = read("docs/architecture.md")
PACKAGE = ROOT / "launch_gateway"
SERVER = "launch_gateway.server"
IMPURE = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "aiohttp", "httptools", "redis", "yarl")


def drawn_tree() -> dict[str, str]:
    """The package tree's paths (relative to launch_gateway/) and what each line says of it."""
    tree = fenced(DOC)[0].text.splitlines()
    assert tree[0] == "launch_gateway/"
    paths: dict[str, str] = {}
    folders: list[str] = []
    for line in tree[1:]:
        found = re.match(r"^([│ ]*)[├└]── (\S+)\s*(.*)$", line)
        assert found, f"not a tree line: {line!r}"
        depth = len(found[1]) // 4
        folders[depth:] = []
        path = "/".join([*folders, found[2].rstrip("/")])
        paths[path] = found[3]
        if found[2].endswith("/"):
            folders.append(found[2].rstrip("/"))
    return paths


def modules_on_disk() -> set[str]:
    """Every module a newcomer should find in the tree (generated code and the imitation's insides aside)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("v1/", "testing/local_launch/")):
            continue
        if path.name == "__init__.py" and relative != "__init__.py":
            continue
        found.add(relative)
    return found


def test_every_module_has_its_line_in_the_tree() -> None:
    drawn = {path for path in drawn_tree() if path.endswith(".py")}
    assert drawn == modules_on_disk()


def own_imports(path: Path) -> set[str]:
    """The modules a file imports (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_closure(module: str) -> set[str]:
    """What a module imports, with what our own imported modules import in turn."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for imported in own_imports(path):
            seen.add(imported)
            if imported.startswith("launch_gateway."):
                todo.append(imported)
    return seen


PURE = sorted(path for path, says in drawn_tree().items() if "(pure" in says)


@pytest.mark.parametrize("path", PURE)
def test_a_pure_module_imports_no_io_library(path: str) -> None:
    module = "launch_gateway." + path.removesuffix(".py").replace("/", ".")
    io = sorted(name for name in imports_closure(module) if name.split(".")[0] in IMPURE)
    assert io == [], f"{path} is drawn as pure"


def server_modules() -> dict[str, str]:
    """Short module name -> its import path, for the server's modules."""
    short: dict[str, str] = {}
    for path in (PACKAGE / "server").rglob("*.py"):
        if path.name != "__init__.py":
            dotted = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
            assert path.stem not in short, f"two server modules called {path.stem}"
            short[path.stem] = dotted
    return short


def test_every_name_in_the_flows_exists() -> None:
    modules = server_modules()
    settings = set(setting_names())
    checked = 0
    for reference in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)", DOC):
        first, *attributes = reference.split(".")
        if first in modules:
            target: object = importlib.import_module(modules[first])
            for attribute in attributes:
                assert hasattr(target, attribute), f"{reference}: {modules[first]} has no {attribute}"
                target = getattr(target, attribute)
            checked += 1
        else:
            assert reference in settings, f"{reference} is neither a server module's name nor a setting"
    assert checked > 40  # the flows name their functions
