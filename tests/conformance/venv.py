"""The conformance virtual environment: model-engine's pinned requirements in a venv of their own.

model-engine pins ~200 packages (its `model-engine/requirements.txt`) that clash with ours, so they
live in a venv of their own, built once per hash of what goes in (the requirements, our additions,
the interpreter's version) under a machine-wide cache, `CONFORMANCE_CACHE` (default
`~/.cache/launch-gateway/conformance`): every clone on the machine, CI's fresh one included, reuses
it. A stamp file marks a finished build; a lock keeps two builds of one venv apart.
`python -m tests.conformance.venv` builds or checks it and prints its Python; the conformance tests
call `ensure` too. Stdlib only.

Where model-engine's source is: `MODEL_ENGINE_SRC` (a checkout of scaleapi/llm-engine), else
`../shared/vendor/llm-engine` beside the repository, else `/work/shared/vendor/llm-engine`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / ".conformance"  # this clone's logs and scratch files (git-ignored)
STAMP_NAME = ".conformance-stamp"
RECIPE = 1  # bump when the way the venv is built changes

DEFAULT_SOURCES = (REPO.parent / "shared" / "vendor" / "llm-engine", Path("/work/shared/vendor/llm-engine"))

# Left out of model-engine's requirements: pycurl (celery[sqs] only) builds against curl-config.
LEFT_OUT = ("pycurl",)
# What model-engine's tests/unit/conftest.py needs besides (requirements-test.txt's pins where it
# pins; pytest's own dependencies, since everything is installed with --no-deps).
TEST_PACKAGES = (
    "pytest==7.4.4",
    "pluggy==1.7.0",
    "iniconfig==2.3.1",
    "pytest-asyncio==0.20.1",
    "frozendict==2.3.4",
    "aioresponses==0.7.9",
    "requests-mock==1.9.3",
)
# The interpreters tried, best first: model-engine compiles its requirements for 3.13.
PYTHONS = ("python3.13", "python3.12", "python3.11")


class ConformanceSetupError(RuntimeError):
    """model-engine's source or a usable interpreter is missing, or the install failed."""


def model_engine_source(env: Mapping[str, str] = os.environ) -> Path:
    """The llm-engine checkout to run: MODEL_ENGINE_SRC, else the first default that exists."""
    given = env.get("MODEL_ENGINE_SRC")
    candidates = [Path(given).expanduser()] if given else list(DEFAULT_SOURCES)
    for candidate in candidates:
        path = candidate if candidate.is_absolute() else REPO / candidate
        if (path / "model-engine" / "requirements.txt").is_file():
            return path.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ConformanceSetupError(
        f"no llm-engine checkout with model-engine/requirements.txt at {tried}; set MODEL_ENGINE_SRC"
    )


def _runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import venv"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def base_python(env: Mapping[str, str] = os.environ) -> str:
    """CONFORMANCE_PYTHON, else the newest of PYTHONS found (pyenv's versions included)."""
    if env.get("CONFORMANCE_PYTHON"):
        return env["CONFORMANCE_PYTHON"]
    pyenv_root = env.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    for name in PYTHONS:
        found = [shutil.which(name), *sorted(glob.glob(f"{pyenv_root}/versions/{name[6:]}*/bin/{name}"), reverse=True)]
        for python in found:
            if python and _runs(python):  # a pyenv shim of a version not selected fails here
                return python
    return sys.executable


def requirements(source: Path) -> list[str]:
    """model-engine's requirement lines without LEFT_OUT, then TEST_PACKAGES."""
    lines = (source / "model-engine" / "requirements.txt").read_text().splitlines()
    kept = [
        line.strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#") and line.split("==")[0].strip() not in LEFT_OUT
    ]
    return [*kept, *TEST_PACKAGES]


def fingerprint(python: str, wanted: list[str]) -> str:
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
    ).stdout
    return hashlib.sha256((f"{RECIPE}\n{version}\n" + "\n".join(wanted)).encode()).hexdigest()


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where venvs (and model-engine's compiled modules) are kept, shared by every clone."""
    given = env.get("CONFORMANCE_CACHE")
    return Path(given).expanduser() if given else Path.home() / ".cache" / "launch-gateway" / "conformance"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure(env: Mapping[str, str] = os.environ, quiet: bool = False) -> Path:
    """Build the venv for the current source and interpreter unless it is built; returns its Python."""
    source = model_engine_source(env)
    wanted = requirements(source)
    python = base_python(env)
    stamp = fingerprint(python, wanted)
    venv = cache_dir(env) / f"venv-{stamp[:16]}"
    venv_python = venv / "bin" / "python"
    with _locked(venv.with_suffix(".lock")):
        if (venv / STAMP_NAME).is_file() and (venv / STAMP_NAME).read_text().strip() == stamp:
            return venv_python
        say = (lambda _: None) if quiet else (lambda line: print(line, flush=True))
        say(f"conformance: building {venv} with {python} for {source} (a few minutes, once)")
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        listed = venv / "requirements.txt"
        listed.write_text("\n".join(wanted) + "\n")
        steps = [
            [python, "-m", "venv", str(venv)],
            [str(venv_python), "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(listed)],
        ]
        for step in steps:
            if subprocess.run(step).returncode != 0:
                raise ConformanceSetupError(f"failed: {' '.join(step)}")
        (venv / STAMP_NAME).write_text(stamp + "\n")
        say("conformance: venv ready")
    return venv_python


def main() -> int:
    try:
        python = ensure()
    except ConformanceSetupError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 1
    print(f"conformance: model-engine {model_engine_source()} with {python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
