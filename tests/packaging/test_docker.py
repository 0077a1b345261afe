"""The Dockerfile and .dockerignore, read as Docker reads them (no engine runs here to build them).

What they promise: a pinned base image; dependencies from constraints.txt in a layer before the code;
a small build context without the Launch imitation; a numeric user that the Kubernetes manifests run
as; a HEALTHCHECK that asks liveness, not readiness; and the image tag the README and manifests share.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from launch_gateway.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest, continuation lines joined


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions in order, comments dropped and `\\` continuations joined."""
    found: list[Instruction] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        keyword, _, value = text.partition(" ")
        found.append(Instruction(keyword.upper(), value.strip()))
    return found


def exec_form(value: str) -> list[str]:
    """An instruction's JSON (exec) form, e.g. CMD ["serve"]."""
    parsed = json.loads(value)
    assert isinstance(parsed, list), value
    return [str(v) for v in parsed]


def index_of(keyword: str, predicate: str) -> int:
    """The position of the first `keyword` instruction whose value contains `predicate`."""
    for i, instruction in enumerate(instructions()):
        if instruction.keyword == keyword and predicate in instruction.value:
            return i
    pytest.fail(f"the Dockerfile has no {keyword} with {predicate!r}")


def pod_spec() -> dict[str, Any]:
    deployment = next(d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d and d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


class DockerIgnore:
    """.dockerignore's rules as Docker applies them: the last matching rule wins, `!` re-includes, a
    pattern that matches a folder covers what is inside it, `*` stays within one path segment and `**`
    spans any number."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = PurePosixPath(line.lstrip("!").strip()).as_posix().lstrip("/")
            self.rules.append((include, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i : end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out + "(?:/.*)?"  # a folder's rule covers its contents

    def excluded(self, path: str) -> bool:
        excluded = False
        for include, regex in self.rules:
            if regex.fullmatch(path):
                excluded = not include
        return excluded

    def may_include_under(self, folder: str) -> bool:
        """Whether some `!` rule could re-include a file inside an excluded folder."""
        return any(include and regex.pattern.startswith(re.escape(folder)) for include, regex in self.rules)


def docker_ignore() -> DockerIgnore:
    return DockerIgnore((ROOT / ".dockerignore").read_text())


def build_context() -> dict[str, int]:
    """Every file Docker would send as the build context from this checkout, with its size."""
    ignore = docker_ignore()
    sent: dict[str, int] = {}
    for folder, dirs, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if not ignore.excluded(prefix + d) or ignore.may_include_under(prefix + d)]
        for name in files:
            path = prefix + name
            if not ignore.excluded(path):
                sent[path] = (Path(folder) / name).stat().st_size
    return sent


def test_base_image_is_pinned_to_a_full_version() -> None:
    (base,) = [i.value for i in instructions() if i.keyword == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "python"
    assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"{base}: pin the full Python version and the Debian release"


def test_dependencies_come_from_the_constraints_in_a_layer_before_the_code() -> None:
    steps = instructions()
    first_copy = index_of("COPY", "constraints.txt")
    assert set(shlex.split(steps[first_copy].value)[:-1]) == {"pyproject.toml", "constraints.txt"}, (
        "only what the dependency list needs comes before the dependency layer"
    )
    deps = next(
        i for i, s in enumerate(steps) if s.keyword == "RUN" and "-r requirements.txt" in s.value and i > first_copy
    )
    assert "-c constraints.txt" in steps[deps].value
    code = index_of("COPY", "launch_gateway")
    assert first_copy < deps < code, "a code change must not reinstall the dependencies"
    install = next(s for s in steps[code:] if s.keyword == "RUN" and "pip install" in s.value)
    assert "--no-deps" in install.value, "every dependency is in the pinned layer; the package adds none"


def test_the_build_context_is_small_and_leaves_the_imitation_out() -> None:
    ignore = docker_ignore()
    for path in [
        ".venv/bin/python",
        "node_modules/@bufbuild/buf/package.json",
        "examples/node/node_modules/x.js",
        ".git/HEAD",
        ".mypy_cache/3.11/x.json",
        ".pytest_cache/v/x",
        "launch_gateway/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
        "bench/results/latest.json",
        "launch_gateway/testing/demo.py",
        "launch_gateway/testing/local_launch/server.py",
    ]:
        assert ignore.excluded(path), f"{path} would be sent to the Docker daemon"
    sent = build_context()
    copied = ["pyproject.toml", "constraints.txt", "README.md", "LICENSE", "launch_gateway/cli.py"]
    copied += ["launch_gateway/v1/endpoint_service_pb2.py", "launch_gateway/py.typed"]
    missing = [path for path in copied if path not in sent]
    assert not missing, f"the Dockerfile copies {missing}, which .dockerignore leaves out"
    assert not [path for path in sent if path.startswith("launch_gateway/testing/")]
    total = sum(sent.values())
    assert total < 2_000_000, f"the build context is {total} bytes: {sorted(sent, key=sent.__getitem__)[-5:]}"


def test_the_image_checks_that_the_imitation_is_not_installed() -> None:
    install = instructions()[index_of("RUN", "--no-deps")]
    assert "find_spec('launch_gateway.testing') is not None" in install.value


def test_user_is_numeric_and_matches_the_pod_security_context() -> None:
    (user,) = [i.value for i in instructions() if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: runAsNonRoot can only check a numeric user"
    assert gid.isdigit(), f"USER {user}: the group must be numeric too"
    context = pod_spec()["securityContext"]
    assert (int(uid), int(gid)) == (context["runAsUser"], context["runAsGroup"])
    creates = instructions()[index_of("RUN", "useradd")].value
    assert f"--uid {uid}" in creates
    assert f"--gid {gid}" in creates


def test_healthcheck_asks_liveness_not_readiness() -> None:
    (check,) = [i.value for i in instructions() if i.keyword == "HEALTHCHECK"]
    _, _, command = check.partition(" CMD ")
    argv = exec_form(command)
    assert argv[0] == "launch-gateway"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "health"
    assert args.liveness, "a Launch outage must not mark every container unhealthy"
    assert args.address.endswith(":50051")


def test_entrypoint_serves_by_default() -> None:
    steps = {i.keyword: i.value for i in instructions()}
    argv = exec_form(steps["ENTRYPOINT"]) + exec_form(steps["CMD"])
    assert argv == ["launch-gateway", "serve"]
    assert build_parser().parse_args(argv[1:]).command == "serve"


def test_image_tag_is_the_same_in_the_readme_the_dockerfile_and_the_manifest() -> None:
    (container,) = [c for c in pod_spec()["containers"] if c["name"] == "gateway"]
    image = container["image"]
    readme = re.findall(r"docker build -t (\S+) \.", (ROOT / "README.md").read_text())
    dockerfile = re.findall(r"docker build -t (\S+) \.", (ROOT / "Dockerfile").read_text())
    assert readme, "the README shows how to build the image"
    assert set(readme) | set(dockerfile) == {image}, f"README {readme}, Dockerfile {dockerfile}, manifest {image}"
