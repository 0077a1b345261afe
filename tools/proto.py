"""Generate the Python modules for `protos/` into `launch_gateway/v1/` (`make proto`).

protoc runs with `-Iprotos`, so each descriptor carries its canonical path
(`launch_gateway/v1/endpoint_service.proto`) and the modules land where that path puts them: the
proto package `launch_gateway.v1` is our package's `v1` subpackage. A user's own stubs generated from
`protos/` register the same file under the same name, so both load in one interpreter. `--check`
regenerates into a temporary folder and fails on drift.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "launch_gateway/v1"  # where protoc writes, relative to the output root


def generate(out_root: Path) -> Path:
    """Write the generated package under `out_root` and return its folder."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
            f"--mypy_out={out_root}",
            f"--mypy_grpc_out={out_root}",
            *(f"{PROTOS}/{s}" for s in sources),
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    package = out_root / PACKAGE
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        if folder.name != "__pycache__":
            (folder / "__init__.py").write_text('"""Generated from protos/ by `make proto`; do not edit."""\n')
    return package


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths of generated files that differ between two trees."""
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names |= {p.relative_to(right) for p in right.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return sorted(
        str(n)
        for n in names
        if not ((left / n).exists() and (right / n).exists() and filecmp.cmp(left / n, right / n, shallow=False))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed modules are stale")
    args = parser.parse_args()
    target = ROOT / PACKAGE
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            stale = differences(generate(Path(tmp)), target)
        if stale:
            print("generated code differs from protos/ (run `make proto`):", *stale, sep="\n  ")
            return 1
        print("generated code matches protos/")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(fresh, target, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
